"""The GEMM under the convolution kernel gradient, by library: XLA:CPU, numpy's BLAS, PyTorch's BLAS.

    python tools/benchmark_wgrad_gemm.py            # -> benchmarks/wgrad_gemm_<backend>.json

`layers.conv2d` computes a kernel gradient on CPU as one `[K, C_in]^T @ [K, C_out]` product per kernel tap
(K = batch x output pixels, docs/performance.md). This times nine such products at the shapes of the
translation step's widest layers, the same arrays in each library, one library after the other in one
process, and reports GFLOP/s: how fast the one op family where the JAX step is behind could be if XLA:CPU
called a faster GEMM. The libraries are not interleaved call by call: a library run right after another
one's call finds that one's thread pool still spinning on the two cores, and measures that instead.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tools.benchmark_report import interleaved_median_ms, write_report  # noqa: E402

# (K, C_in, C_out): ResnetBlock conv at 128 and 256 px (batch 3: G on [x; y; x_p]), the 128-channel
# convolutions next to the full-resolution ones at 128 px.
SHAPES = ((3 * 32 * 32, 256, 256), (3 * 64 * 64, 256, 256), (3 * 128 * 128, 128, 64), (3 * 128 * 128, 64, 128))
TAPS = 9


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7, help="timed calls per shape and library")
    parser.add_argument("--output", default=None, help="JSON path (default: benchmarks/wgrad_gemm_<backend>.json)")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")

    import jax
    import jax.numpy as jnp
    import torch

    # Nine different right-hand sides, as the nine taps have (precomputed, so only the products are timed).
    xla_taps = jax.jit(lambda a, b: jnp.stack([a.T @ b[i] for i in range(TAPS)]))
    rows = []
    for k, c_in, c_out in SHAPES:
        rng = np.random.default_rng(0)
        x = rng.standard_normal((k, c_in), dtype=np.float32)
        dy = rng.standard_normal((TAPS, k, c_out), dtype=np.float32)
        jx, jdy = jnp.asarray(x), jnp.asarray(dy)
        tx, tdy = torch.from_numpy(x), torch.from_numpy(dy)
        gflop = 2.0 * k * c_in * c_out * TAPS / 1e9
        products = {
            "xla": lambda: xla_taps(jx, jdy).block_until_ready(),
            "numpy": lambda: [x.T @ dy[i] for i in range(TAPS)],
            "torch": lambda: [tx.T @ tdy[i] for i in range(TAPS)],
        }
        # One library at a time, warm-up then its timed calls: interleaved, each library ran into the thread
        # pools still spinning from the previous one's call (MKL fell from ~300 to 131 GF/s at K = 3072).
        ms = {}
        for lib, product in products.items():
            product()
            ms[lib] = interleaved_median_ms({lib: product}, args.repeats)[lib]
        row = {"K": k, "c_in": c_in, "c_out": c_out, "taps": TAPS, "gflop": round(gflop, 3)}
        for lib, t in ms.items():
            row[f"{lib}_ms"] = round(t, 2)
            row[f"{lib}_gflop_per_s"] = round(gflop / t * 1e3, 1)
        rows.append(row)
        print(f"K={k:6d} {c_in:3d}->{c_out:3d}: " + "  ".join(
            f"{lib} {t:6.1f} ms {gflop / t * 1e3:5.0f} GF/s" for lib, t in ms.items()), flush=True)

    blas = "unknown"
    try:
        blas = torch.__config__.show().split("BLAS_INFO=")[1].split(",")[0]
    except (IndexError, AttributeError):
        pass
    path = args.output or os.path.join(ROOT, "benchmarks", f"wgrad_gemm_{jax.default_backend()}.json")
    write_report(path, {
        "what": f"{TAPS} products [K, C_in]^T @ [K, C_out] (float32, the tap GEMMs of a 3x3 kernel gradient), "
                "median ms and GFLOP/s per library; each library warmed up and timed in a block, one after the "
                "other in one process (not interleaved: the previous library's spinning threads slow the next)",
        "libraries": {"xla": "jax.jit of jnp matmuls (XLA:CPU's dot)", "numpy": "numpy's BLAS (OpenBLAS wheel)",
                      "torch": f"torch.mm on CPU (BLAS_INFO={blas})"},
        "load_average_at_end": list(os.getloadavg()),
        "results": rows,
    })
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

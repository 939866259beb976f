"""Pseudo-pair candidates per second: the JAX candidate step vs the official PyTorch loop, on this machine.

    python tools/benchmark_pseudo_pairs.py                        # -> benchmarks/pseudo_pairs_<backend>.json
    python tools/benchmark_pseudo_pairs.py --batch-sizes 1,4,8 --repeats 3 --acceptance-rate 0.4

One candidate is what `generate_pair.py` does per loop iteration (docs/reference.md §3.3-3.4): the
source mapping, G_s and G_t at 256 px (the official architecture, docs/reference.md §3.1: style_dim
512, n_mlp 8, channel_multiplier 2) from the same w with truncation 0.7 and per-layer random noise,
Mask2Former Swin-B / ADE20K-150 (`Mask2FormerConfig()`, docs/reference.md §5.2) on both 256x256
images, and the cross-entropy / class count of the selection.

* JAX: `pseudo_pairs.candidates.make_candidate_fn` + `jit_candidate_fn` (what the job runs), one
  jitted program per batch size, outputs fetched to the host as the job does (uint8 images, label
  maps, seg_loss, classes). Compile time is reported separately.
* PyTorch: the official structure at batch 1, `tests/torch_reference/stylegan2.py` twice
  (`randomize_noise=True`) + transformers' `Mask2FormerForUniversalSegmentation` with detectron2's
  semantic inference (`tools/benchmark_segmenter.py`) + `F.cross_entropy` and `torch.unique`.

Both sides use the same random weights (the torch generators converted by
`convert.stylegan2.convert_generator`, the Mask2Former by `convert.mask2former.convert_hf_state_dict`).
Numbers are not compared here (random noise differs by construction); tests/pseudo_pairs/test_parity.py
checks them with fixed noise. Timings: one warm-up, then `repeats` rounds, each running every JAX
batch size and PyTorch once (interleaved, so background load hits all alike); medians. PyTorch runs
with `os.cpu_count()` threads, as XLA's CPU client does. "Projected hours" for 30,000 accepted pairs
divide by an ASSUMED acceptance rate (`--acceptance-rate`): the real rate depends on the checkpoints
and is in the job's summary.json. On a GPU backend a JAX-only sweep over batch sizes in float32 and
bfloat16 (segmenter dtype) is added.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tools.benchmark_report import write_report  # noqa: E402

SIZE, STYLE_DIM, N_MLP = 256, 512, 8  # docs/reference.md §3.1, generate_pair.py
TRUNCATION, TRUNCATION_MEAN = 0.7, 4096  # docs/reference.md §3.3
SEG_LOSS_TH, SEG_CAT_TH = 5.0, 1
TARGET_PAIRS = 30_000  # the released data set
GPU_SWEEP = (1, 4, 8, 16, 32)


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# ----------------------------------------------------------------------------- PyTorch: the official loop

def torch_generators():
    """G_s, G_t: the rosinality reference at the official size, different random weights each."""
    import torch

    from tests.torch_reference import stylegan2 as ref

    out = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        out.append(ref.randomize_(ref.Generator(SIZE, STYLE_DIM, N_MLP), seed=seed).eval())
    return out


def torch_candidate_fn(g_s, g_t, segmenter, w_avg):
    """One iteration of generate_pair.py's loop (batch 1) -> (seg_loss, seg_cnt, accepted)."""
    import torch
    import torch.nn.functional as F

    from tools.benchmark_segmenter import torch_sem_seg

    def segment(img):  # segmentation_net.py: round((x + 1) * 255 / 2), unclamped, HWC float
        return torch_sem_seg(segmenter, torch.round((img + 1) * 255 / 2).permute(0, 2, 3, 1))

    def candidate():
        with torch.no_grad():
            z = torch.randn(1, STYLE_DIM)
            w = g_s.style(z)
            img_s = g_s([w], input_is_latent=True, truncation=TRUNCATION, truncation_latent=w_avg)[0]
            img_t = g_t([w], input_is_latent=True, truncation=TRUNCATION, truncation_latent=w_avg)[0]
            sem_s, sem_t = segment(img_s), segment(img_t)
            label = sem_s.argmax(1)
            seg_loss = F.cross_entropy(sem_t, label).item()
            seg_cnt = len(torch.unique(label))
        return seg_loss, seg_cnt, seg_loss < SEG_LOSS_TH and seg_cnt > SEG_CAT_TH

    return candidate


# ----------------------------------------------------------------------------- JAX: the job's candidate step

def jax_candidate_runner(source, target, seg_config, seg_params, w_avg, batch: int, dtype: str):
    """(compile seconds, a function running one batch of candidates to host numpy)."""
    import jax

    from scenimefy_jax.pseudo_pairs import candidates as cand
    from scenimefy_jax.segmentation.segmenter import DTYPES, sem_seg_function
    from scenimefy_jax.parallel import mesh as mesh_lib

    mesh = mesh_lib.make_mesh()
    options = cand.CandidateOptions(truncation=TRUNCATION, noise="random")  # official: independent noise
    fn = cand.make_candidate_fn(source, target, sem_seg_function(seg_config, DTYPES[dtype]), options)
    step = cand.jit_candidate_fn(fn, mesh)
    host = lambda tree: jax.tree_util.tree_map(np.asarray, tree)  # noqa: E731
    args = [mesh_lib.replicate(host(a), mesh) for a in (source.variables, target.variables, seg_params, w_avg)]
    index = np.arange(batch, dtype=np.int32)
    z = cand.latent_of_index(0, index, STYLE_DIM)
    noise_key_data = np.asarray(jax.random.key_data(jax.random.key(0)))  # as the job passes it
    args += [mesh_lib.shard_batch(z, mesh), mesh_lib.shard_batch(index, mesh), mesh_lib.replicate(noise_key_data, mesh)]
    start = time.perf_counter()
    compiled = step.lower(*args).compile()
    compile_s = time.perf_counter() - start
    return compile_s, lambda: jax.device_get(compiled(*args))


def _jax_models(torch_gs, torch_gt, torch_segmenter):
    import jax

    from scenimefy_jax.convert import mask2former as convert_mask2former
    from scenimefy_jax.convert import stylegan2 as convert_sg
    from scenimefy_jax.models import stylegan2 as sg
    from scenimefy_jax.models.mask2former.model import Mask2FormerConfig
    from scenimefy_jax.sampling import LoadedGenerator

    model = sg.Generator(size=SIZE, style_dim=STYLE_DIM, n_mlp=N_MLP)
    gens = []
    for name, g in (("G_s", torch_gs), ("G_t", torch_gt)):
        sd = {k: v.detach().numpy() for k, v in g.state_dict().items()}
        variables = convert_sg.convert_generator(sd, model, source=f"<random {name}>", name="g_ema")
        gens.append(LoadedGenerator(model, jax.tree_util.tree_map(jax.numpy.asarray, variables), {}, name))
    converted = convert_mask2former.convert_hf_state_dict(
        {k: v.detach().numpy() for k, v in torch_segmenter.state_dict().items()}, "<random Swin-B Mask2Former>")
    config = Mask2FormerConfig.from_dict({k: v for k, v in converted.architecture.items() if k != "model"})
    if config != Mask2FormerConfig():
        raise SystemExit(f"the HF config converted to {config}, not the default Swin-B / ADE20K-150 architecture")
    return gens[0], gens[1], config, converted.params


# ----------------------------------------------------------------------------- reporting

def _hours(candidates_per_s: float, acceptance_rate: float) -> float:
    return round(TARGET_PAIRS / acceptance_rate / candidates_per_s / 3600, 2)


def _batch_sizes(text: str) -> list[int]:
    sizes = [int(v) for v in text.split(",") if v.strip()]
    if not sizes or min(sizes) < 1:
        raise SystemExit(f"--batch-sizes: expected positive integers like '1,4', got {text!r}")
    return sorted(set(sizes))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-sizes", default="1,4", help="JAX batch sizes, comma-separated (default: 1,4)")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds (default: 3)")
    parser.add_argument("--acceptance-rate", type=float, default=0.5,
                        help="ASSUMED share of candidates accepted, for the projected hours (default: 0.5)")
    parser.add_argument("--out", default="", help="JSON path (default: benchmarks/pseudo_pairs_<backend>.json)")
    args = parser.parse_args(argv)
    batch_sizes = _batch_sizes(args.batch_sizes)
    if not 0 < args.acceptance_rate <= 1:
        raise SystemExit(f"--acceptance-rate must be in (0, 1], got {args.acceptance_rate}")
    if args.repeats < 1:
        raise SystemExit(f"--repeats must be >= 1, got {args.repeats}")

    import jax
    import torch

    from tools.benchmark_segmenter import torch_reference

    torch.set_num_threads(os.cpu_count() or 1)
    backend = jax.default_backend()
    load_before = os.getloadavg()
    start = time.perf_counter()
    g_s, g_t = torch_generators()
    torch_segmenter = torch_reference()
    source, target, seg_config, seg_params = _jax_models(g_s, g_t, torch_segmenter)
    seg_params = jax.device_put(seg_params)
    with torch.no_grad():  # w_avg once per run on both sides (generate_pair.py step 1), not timed
        torch_w_avg = g_s.mean_latent(TRUNCATION_MEAN)
    jax_w_avg = jax.jit(lambda v, k: source.model.apply(v, k, TRUNCATION_MEAN, method=source.model.mean_latent))(
        source.variables, jax.random.key(0))
    print(f"built and converted G_s, G_t and the Swin-B Mask2Former in {time.perf_counter() - start:.1f} s", flush=True)

    runners, results = {}, {"jax": {}, "torch": {}}
    for b in batch_sizes:
        compile_s, runner = jax_candidate_runner(source, target, seg_config, seg_params, jax_w_avg, b, "float32")
        runner()  # warm-up
        runners[b] = runner
        results["jax"][str(b)] = {"batch": b, "compile_s": round(compile_s, 2), "times_s": []}
        print(f"jax batch {b}: compiled in {compile_s:.1f} s", flush=True)
    torch_step = torch_candidate_fn(g_s, g_t, torch_segmenter, torch_w_avg)
    torch_step()  # warm-up
    torch_times = []
    for r in range(args.repeats):  # interleaved rounds
        for b, runner in runners.items():
            results["jax"][str(b)]["times_s"].append(round(_timed(runner), 3))
        torch_times.append(round(_timed(torch_step), 3))
        print(f"round {r + 1}/{args.repeats}: jax {[results['jax'][str(b)]['times_s'][-1] for b in runners]} s, "
              f"torch {torch_times[-1]} s", flush=True)

    rate = args.acceptance_rate
    for b in batch_sizes:
        entry = results["jax"][str(b)]
        entry["median_s_per_batch"] = round(statistics.median(entry["times_s"]), 3)
        entry["min_s_per_batch"] = min(entry["times_s"])
        entry["candidates_per_s"] = round(b / entry["median_s_per_batch"], 4)
        entry["projected_hours_30000_pairs"] = _hours(entry["candidates_per_s"], rate)
    torch_median = statistics.median(torch_times)
    results["torch"]["1"] = {"batch": 1, "times_s": torch_times, "median_s_per_batch": round(torch_median, 3),
                             "min_s_per_batch": min(torch_times),
                             "candidates_per_s": round(1 / torch_median, 4),
                             "projected_hours_30000_pairs": _hours(1 / torch_median, rate)}
    best = max(results["jax"].values(), key=lambda e: e["candidates_per_s"])
    torch_rate = results["torch"]["1"]["candidates_per_s"]
    summary = {
        "jax_batch1_candidates_per_s": results["jax"].get("1", {}).get("candidates_per_s"),
        "jax_best_batch": best["batch"],
        "jax_best_candidates_per_s": best["candidates_per_s"],
        "torch_batch1_candidates_per_s": torch_rate,
        "speedup_jax_batch1_vs_torch": round(results["jax"]["1"]["candidates_per_s"] / torch_rate, 3)
        if "1" in results["jax"] else None,
        "speedup_jax_best_vs_torch": round(best["candidates_per_s"] / torch_rate, 3),
        "assumed_acceptance_rate": rate,
        "projected_hours_30000_pairs_jax_best": best["projected_hours_30000_pairs"],
        "projected_hours_30000_pairs_torch": results["torch"]["1"]["projected_hours_30000_pairs"],
    }

    if backend == "gpu":  # JAX-only sweep; the CPU PyTorch numbers above stay as they are
        sweep = []
        for dtype in ("float32", "bfloat16"):
            for b in GPU_SWEEP:
                compile_s, runner = jax_candidate_runner(source, target, seg_config, seg_params, jax_w_avg, b, dtype)
                runner()
                times = [_timed(runner) for _ in range(args.repeats)]
                median = statistics.median(times)
                sweep.append({"batch": b, "segmenter_dtype": dtype, "compile_s": round(compile_s, 2),
                              "median_s_per_batch": round(median, 4), "candidates_per_s": round(b / median, 3),
                              "projected_hours_30000_pairs": _hours(b / median, rate)})
                print(json.dumps(sweep[-1]), flush=True)
        results["jax_gpu_sweep"] = sweep
        for dtype in ("float32", "bfloat16"):
            top = max((s for s in sweep if s["segmenter_dtype"] == dtype), key=lambda s: s["candidates_per_s"])
            summary[f"gpu_best_{dtype}"] = {k: top[k] for k in ("batch", "candidates_per_s", "projected_hours_30000_pairs")}

    report = {
        "benchmark": "pseudo_pair_candidates",
        "settings": {
            "candidate": "G_s mapping; G_s and G_t at 256 px (style_dim 512, n_mlp 8, channel_multiplier 2), "
                         f"truncation {TRUNCATION}, random per-layer noise; Mask2Former Swin-B ADE20K-150 on both "
                         "256x256 images; seg_loss and class count (random weights, same on both sides)",
            "jax": "pseudo_pairs.candidates.make_candidate_fn + jit_candidate_fn, segmenter float32, "
                   "outputs fetched to the host",
            "torch": "batch 1 as generate_pair.py: tests/torch_reference/stylegan2.py x2 + transformers "
                     "Mask2FormerForUniversalSegmentation + detectron2 semantic inference + F.cross_entropy",
            "batch_sizes": batch_sizes,
            "repeats": args.repeats,
            "torch_threads": torch.get_num_threads(),
            "timing": "one warm-up, then interleaved rounds (every JAX batch size, then PyTorch); medians; "
                      "JAX compile separate; w_avg computed once, untimed",
            "projection": f"hours = {TARGET_PAIRS} / acceptance_rate / candidates_per_s / 3600",
            "load_average_1min_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
            "acceptance_rate": f"{rate} (ASSUMED, not measured: depends on the checkpoints; the job's "
                               "summary.json reports the real one)",
        },
        "results": results,
        "summary": summary,
    }
    out = write_report(args.out or os.path.join(ROOT, "benchmarks", f"pseudo_pairs_{backend}.json"), report,
                       packages=("transformers",))
    print(f"wrote {out}: {json.dumps(summary)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

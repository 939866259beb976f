"""Benchmark ADE20K semantic segmentation with Mask2Former (Swin-B): JAX (this port) vs transformers' PyTorch model.

    python tools/benchmark_segmenter.py                    # 256x256, batch 1 and 8 -> benchmarks/segmenter_cpu.json
    python tools/benchmark_segmenter.py --batch-sizes 1 4 --repeats 3
    python tools/benchmark_segmenter.py --size 384 --out /tmp/segmenter_384.json

Both sides compute the same thing from the same weights: transformers' `Mask2FormerForUniversalSegmentation`
is built with the Swin-B / ADE20K-150 sizes (docs/reference.md §5.2, "HF config values") and random
weights, and converted into ours with `convert.mask2former.convert_hf_state_dict`. JAX times the
`Segmenter` path (`segmenter.sem_seg_function`, jitted: normalise, pad, network, semantic inference);
PyTorch times the model's forward plus detectron2's semantic inference written out below (mask logits
upsampled bilinearly, align_corners=False, to the input size; `softmax(class)[..., :-1] · sigmoid(mask)`).
Each case reports the median of `repeats` interleaved runs after a warm-up (background load hits both
alike), JAX compile time separately, `speedup` = PyTorch / JAX, and the largest |difference| of the two
`sem_seg` outputs. PyTorch uses `os.cpu_count()` threads. When JAX runs on a GPU, a JAX-only sweep adds
images/s over batch sizes in float32 and bfloat16.
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

from tools.benchmark_report import parse_batch_sizes, write_report  # noqa: E402

# docs/reference.md §5.2, HF config values (the published Swin-B ADE semantic config).
HF_SWIN_B = dict(embed_dim=128, depths=[2, 2, 18, 2], num_heads=[4, 8, 16, 32], window_size=12, drop_path_rate=0.3,
                 out_features=["stage1", "stage2", "stage3", "stage4"])
HF_MASK2FORMER = dict(feature_size=256, mask_feature_size=256, hidden_dim=256, encoder_layers=6,
                      encoder_feedforward_dim=1024, decoder_layers=10, num_attention_heads=8, dim_feedforward=2048,
                      num_queries=100, num_labels=150, common_stride=4, feature_strides=[4, 8, 16, 32], dropout=0.0)
# detectron2 PIXEL_MEAN / PIXEL_STD on the 0..255 scale (docs/reference.md §5.2).
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)
AGREEMENT = 2e-3  # float32 cases: max |JAX - PyTorch| of sem_seg must be below this fraction of max |sem_seg|
GPU_SWEEP = (1, 8, 16, 32, 64)


def torch_reference(seed: int = 0):
    """transformers' Mask2Former at the Swin-B / ADE sizes, random weights, eval mode.

    transformers initialises biases to 0, norms to 1 and bias tables to 0; those are perturbed too, so
    that every parameter matters to the output (as in tests/convert/test_mask2former_converter.py).
    """
    import torch
    import transformers

    torch.manual_seed(seed)
    config = transformers.Mask2FormerConfig(backbone_config=transformers.SwinConfig(**HF_SWIN_B), **HF_MASK2FORMER)
    model = transformers.Mask2FormerForUniversalSegmentation(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name or "embed" in name or "queries" in name or "table" in name:
                p.add_(0.2 * torch.randn_like(p))
    return model


def torch_sem_seg(model, images):
    """`images [B, H, W, 3]` float 0..255 (torch) -> `sem_seg [B, K, H, W]`, detectron2's semantic inference."""
    import torch
    import torch.nn.functional as F

    mean = torch.tensor(PIXEL_MEAN, dtype=images.dtype, device=images.device)
    std = torch.tensor(PIXEL_STD, dtype=images.dtype, device=images.device)
    x = ((images - mean) / std).permute(0, 3, 1, 2)
    h, w = x.shape[-2:]
    x = F.pad(x, (0, -w % 32, 0, -h % 32))  # normalise, then zero-pad bottom/right to multiples of 32
    with torch.no_grad():
        out = model(pixel_values=x)
        masks = F.interpolate(out.masks_queries_logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
        probs = out.class_queries_logits.softmax(-1)[..., :-1]  # drop "no object"
        return torch.einsum("bqk,bqhw->bkhw", probs, masks.sigmoid())[:, :, :h, :w]


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run_case(size: int, batch: int, dtype: str, repeats: int, params, config, torch_model) -> dict:
    import jax
    import torch

    from scenimefy_jax.segmentation.segmenter import DTYPES, sem_seg_function

    images = np.random.default_rng(batch).uniform(0, 255, (batch, size, size, 3)).astype(np.float32)
    forward = jax.jit(sem_seg_function(config, DTYPES[dtype]))
    x = jax.device_put(images)
    start = time.perf_counter()
    compiled = forward.lower(params, x).compile()
    compile_s = time.perf_counter() - start
    jax_out = compiled(params, x).block_until_ready()  # warm-up
    run_jax = lambda: compiled(params, x).block_until_ready()  # noqa: E731

    result = {"case": f"{size}x{size}x{batch}", "height": size, "width": size, "batch": batch, "dtype": dtype,
              "repeats": repeats, "jax_compile_s": round(compile_s, 2)}
    jax_times, torch_times = [], []
    if torch_model is not None:
        device = next(torch_model.parameters()).device
        tx = torch.from_numpy(images).to(device)

        def run_torch():
            out = torch_sem_seg(torch_model, tx)
            if device.type == "cuda":
                torch.cuda.synchronize()
            return out

        torch_out = run_torch()  # warm-up
        want = torch_out.permute(0, 2, 3, 1).cpu().numpy()
        got = np.asarray(jax_out, np.float32)
        diff = float(np.abs(got - want).max())
        result["max_abs_diff_sem_seg"] = diff
        result["max_abs_sem_seg"] = round(float(np.abs(want).max()), 4)
        result["argmax_agreement"] = round(float((got.argmax(-1) == want.argmax(-1)).mean()), 6)
        if dtype == "float32":
            result["agrees"] = diff <= AGREEMENT * float(np.abs(want).max())
        for _ in range(repeats):  # interleaved: background load hits both alike
            jax_times.append(_timed(run_jax))
            torch_times.append(_timed(run_torch))
    else:
        jax_times = [_timed(run_jax) for _ in range(repeats)]
    jax_ms = statistics.median(jax_times) * 1e3
    result["jax_median_ms"] = round(jax_ms, 1)
    result["jax_times_ms"] = [round(t * 1e3, 1) for t in jax_times]
    result["jax_images_per_s"] = round(batch / (jax_ms / 1e3), 3)
    if torch_times:
        torch_ms = statistics.median(torch_times) * 1e3
        result["torch_median_ms"] = round(torch_ms, 1)
        result["torch_times_ms"] = [round(t * 1e3, 1) for t in torch_times]
        result["torch_images_per_s"] = round(batch / (torch_ms / 1e3), 3)
        result["speedup"] = round(torch_ms / jax_ms, 3)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-sizes", nargs="+", default=["1", "8"],
                        help="batch sizes compared with PyTorch, e.g. '1 8' or '1,8' (default: 1 8)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per case and framework (default: 5)")
    parser.add_argument("--size", type=int, default=256, help="square input side (default: 256, the selection's size)")
    parser.add_argument("--out", "--output", dest="out", default="",
                        help="JSON path (default: benchmarks/segmenter_<backend>.json)")
    args = parser.parse_args(argv)
    batch_sizes = parse_batch_sizes(args.batch_sizes)

    import jax
    import torch

    from scenimefy_jax.convert import mask2former as convert_mask2former
    from scenimefy_jax.models.mask2former.model import Mask2FormerConfig

    torch.set_num_threads(os.cpu_count() or 1)
    backend = jax.default_backend()
    start = time.perf_counter()
    torch_model = torch_reference()
    converted = convert_mask2former.convert_hf_state_dict(
        {k: v.detach().numpy() for k, v in torch_model.state_dict().items()}, "<random Swin-B Mask2Former>")
    arch = {k: v for k, v in converted.architecture.items() if k != "model"}
    config = Mask2FormerConfig.from_dict(arch)
    if config != Mask2FormerConfig():
        raise SystemExit(f"the HF config converted to {config}, not the default Swin-B / ADE20K-150 architecture")
    params = jax.device_put(converted.params)
    setup_s = time.perf_counter() - start
    n_params = sum(int(np.prod(np.shape(a))) for a in jax.tree_util.tree_leaves(converted.params))
    if torch.cuda.is_available():
        torch_model = torch_model.cuda()
    print(f"built and converted the random Swin-B Mask2Former ({n_params:,} parameters) in {setup_s:.1f} s", flush=True)

    plan = [(b, "float32", True) for b in batch_sizes]
    if backend == "gpu":  # against PyTorch on the same GPU where it has one; then a JAX-only sweep
        plan = plan if torch.cuda.is_available() else []
        plan += [(b, dtype, False) for dtype in ("float32", "bfloat16") for b in GPU_SWEEP]
    results = []
    for batch, dtype, with_torch in plan:
        r = run_case(args.size, batch, dtype, args.repeats, params, config, torch_model if with_torch else None)
        print(json.dumps(r), flush=True)
        results.append(r)

    compared = [r for r in results if "speedup" in r]
    summary = {f"speedup_{r['case']}_{r['dtype']}": r["speedup"] for r in compared}
    if compared:
        summary["max_abs_diff_sem_seg"] = max(r["max_abs_diff_sem_seg"] for r in compared)
        summary["all_float32_agree"] = all(r.get("agrees", True) for r in compared)
    for dtype in ("float32", "bfloat16"):
        sweep = [r for r in results if r["dtype"] == dtype and "speedup" not in r]
        if sweep:
            best = max(sweep, key=lambda r: r["jax_images_per_s"])
            summary[f"best_{dtype}_images_per_s"] = best["jax_images_per_s"]
            summary[f"best_{dtype}_batch"] = best["batch"]
    report = {
        "benchmark": "segmenter_sem_seg",
        "settings": {
            "model": f"Mask2Former Swin-B ADE20K-150 (random weights, {n_params:,} parameters)",
            "jax": "segmenter.sem_seg_function, jitted (normalise, pad, network, semantic inference)",
            "torch": "transformers Mask2FormerForUniversalSegmentation forward + semantic inference in this tool",
            "torch_threads": torch.get_num_threads(),
            "torch_device": str(next(torch_model.parameters()).device),
            "timing": "median of interleaved runs after one warm-up; compile time separate",
            "speedup": "torch_median_ms / jax_median_ms",
            "agreement": f"float32: max |jax - torch| of sem_seg <= {AGREEMENT} * max |sem_seg|",
        },
        "results": results,
        "summary": summary,
    }
    out = write_report(args.out or os.path.join(ROOT, "benchmarks", f"segmenter_{backend}.json"), report,
                       packages=("transformers",))
    print(f"wrote {out}: {json.dumps(summary)}")
    return 0 if summary.get("all_float32_agree", True) else 1


if __name__ == "__main__":
    sys.exit(main())

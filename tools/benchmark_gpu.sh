#!/usr/bin/env bash
# The accelerator benchmarks of docs/performance.md in one command (about 8 minutes on one H200):
#
#     bash tools/benchmark_gpu.sh OUT_DIR
#
# writes OUT_DIR/training_gpu.json (the translation training step at 256x256, float32 and bfloat16,
# batch 1, 8, 32 in JAX; the PyTorch reference iteration on CUDA at batch 1; peak device memory) and
# OUT_DIR/translator_gpu.json (the translator: 256x256 over batch sizes, 1920x1080 frames/s in bfloat16).
# Needs jax with CUDA and torch with CUDA; ml_collections, grain, clu and tensorboardX are imported by
# the package and must be installed (on a bare machine: as wheels, see docs/performance.md).
set -euo pipefail
out="${1:?usage: bash tools/benchmark_gpu.sh OUT_DIR}"
cd "$(dirname "$0")/.."
mkdir -p "$out"
export PYTHONUNBUFFERED=1
python3 -c "import jax; assert jax.default_backend() == 'gpu', jax.devices(); print(jax.devices())"
python3 tools/benchmark_training.py --cases 256x256x1 256x256x8 256x256x32 --dtypes float32 bfloat16 \
    --repeats 5 --output "$out/training_gpu.json"
python3 tools/benchmark_translator.py --output "$out/translator_gpu.json"

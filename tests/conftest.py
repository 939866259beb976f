import os

# Tests run on CPU; parity tolerances assume exact float32 convolutions (no TF32/bf16 shortcuts).
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("JAX_DEFAULT_MATMUL_PRECISION", "highest")

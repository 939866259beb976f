import os

# Tests run on CPU; parity tolerances assume exact float32 convolutions (no TF32/bf16 shortcuts).
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("JAX_DEFAULT_MATMUL_PRECISION", "highest")

import pytest  # noqa: E402

# With SCENIMEFY_CI=1 (set by .ci/run) any skipped test fails the run: see tests/ci_plugin.py.
pytest_plugins = ["tests.ci_plugin"]


@pytest.fixture(scope="session", autouse=True)
def _shared_compilation_cache(tmp_path_factory):
    """Tests compile many identical programs (the same tiny networks in several files): XLA's persistent
    cache, for this session only, compiles each once. Tests that use their own cache set and restore it."""
    import jax

    before = (jax.config.jax_compilation_cache_dir, jax.config.jax_persistent_cache_min_compile_time_secs)
    jax.config.update("jax_compilation_cache_dir", str(tmp_path_factory.mktemp("xla_cache_session")))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    yield
    jax.config.update("jax_compilation_cache_dir", before[0])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", before[1])

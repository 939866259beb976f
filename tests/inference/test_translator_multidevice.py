"""The Translator splits batches over every local device (8 fake CPU devices here) with the same results."""
import os
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SCRIPT = textwrap.dedent(
    """
    import jax, numpy as np
    assert jax.local_device_count() == 8, jax.devices()
    from scenimefy_jax.inference import Translator
    from scenimefy_jax.models.translator import ResnetGenerator
    arch = {"ngf": 8, "n_blocks": 2}
    params = ResnetGenerator(**arch).init(jax.random.key(0), np.zeros((1, 16, 16, 3)))["params"]
    params = jax.tree_util.tree_map(lambda a: np.asarray(a) * 40.0, params)  # away from the tiny init
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (24, 32, 3), dtype=np.uint8) for _ in range(5)]
    translator = Translator(params, arch, batch_size=4)
    out = translator(images)
    assert translator.params["model_1"]["kernel"].sharding.is_fully_replicated
    single = ResnetGenerator(**arch)
    for image, got in zip(images, out):
        x = image.astype(np.float32)[None] / 255 * 2 - 1
        want = np.asarray(single.apply({"params": params}, x))[0]
        want = ((np.clip(want, -1, 1) + 1) / 2 * 255).astype(np.uint8)
        assert np.abs(got.astype(int) - want.astype(int)).max() <= 1
        assert want.std() > 5
    y = translator.translate_array(np.zeros((3, 16, 16, 3), np.float32))
    assert y.shape == (3, 16, 16, 3) and len(y.sharding.device_set) == 8
    print("ok")
    """
)


def test_eight_devices_match_one():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]

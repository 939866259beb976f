"""The device mesh: batches sharded on the data axis, parameters replicated, same results on 8 devices."""
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from scenimefy_jax.parallel import mesh as mesh_lib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_single_device_mesh_shards_and_replicates():
    mesh = mesh_lib.make_mesh()
    assert mesh.axis_names == ("data",) and mesh.size == jax.device_count()
    batch = mesh_lib.shard_batch({"x": np.ones((4, 2, 2, 3), np.float32)}, mesh)
    assert batch["x"].shape == (4, 2, 2, 3) and batch["x"].sharding.spec == jax.sharding.PartitionSpec("data")
    params = mesh_lib.replicate({"w": np.arange(3.0)}, mesh)
    assert params["w"].sharding.is_fully_replicated
    np.testing.assert_array_equal(mesh_lib.to_host(params)["w"], np.arange(3.0))
    with pytest.raises(ValueError, match="multiple of"):
        mesh_lib.check_global_batch(3, mesh_lib.make_mesh(jax.devices() * 1) if mesh.size > 1 else _FakeMesh(2))


class _FakeMesh:
    def __init__(self, size):
        self.size = size


def _run_eight_devices(kind, tmp_path):
    out = tmp_path / f"{kind}.npz"
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", PYTHONPATH=ROOT,
               JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-m", "tests.training.multidevice_check", kind, str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    data = np.load(out)
    many = {k[2:]: data[k] for k in data.files if k.startswith("8/")}
    one = {k[2:]: data[k] for k in data.files if k.startswith("1/")}
    metrics = ({k[3:]: float(data[k]) for k in data.files if k.startswith("m8/")},
               {k[3:]: float(data[k]) for k in data.files if k.startswith("m1/")})
    assert many.keys() == one.keys() and len(many) > 3
    return many, one, metrics


def _assert_close(many, one, rtol, atol, bias_atol=0.0):
    """Only the summation order of the cross-device batch mean differs from one device.

    `bias_atol`: biases of convolutions that feed an InstanceNorm have an exactly zero gradient in
    exact arithmetic (the norm subtracts them), so their float32 "gradient" is rounding noise that Adam
    rescales into steps of up to ~lr: they may differ by up to 2 * lr * steps, in either framework.
    """
    assert not any(np.isnan(v).any() for v in one.values() if v.dtype.kind == "f")
    for name in many:
        if name.startswith(".params") and name.endswith("['bias']") and bias_atol:
            np.testing.assert_allclose(many[name], one[name], rtol=0, atol=bias_atol, err_msg=name)
        elif name.startswith(".params"):
            np.testing.assert_allclose(many[name], one[name], rtol=rtol, atol=atol, err_msg=name)


def test_eight_devices_equal_one_device_toy(tmp_path):
    many, one, (m8, m1) = _run_eight_devices("toy", tmp_path)
    _assert_close(many, one, rtol=1e-6, atol=1e-7)
    assert m8["loss"] == pytest.approx(m1["loss"], rel=1e-6)


@pytest.mark.slow  # two compilations of the full step, one for 8 devices: ~3-5 minutes on 2 cores
def test_eight_devices_equal_one_device_i2i(tmp_path):
    """The real translation step (small widths, 32x32), two updates at global batch 8.

    Adam divides each gradient element by its running RMS, so where an element is at rounding level
    (most of all the biases that feed an InstanceNorm, whose exact gradient is zero) a different
    summation order across devices changes its update by up to ~lr. Hence: losses within 1e-5
    relative; parameters within 1e-5 absolute (5% of one lr step) and all but a few elements in
    1e-4 relative; those biases within the Adam bound 2 * lr * steps.
    """
    many, one, (m8, m1) = _run_eight_devices("i2i", tmp_path)
    lr, steps = 2e-4, 2
    for k in m1:
        assert np.isfinite(m1[k]) and m8[k] == pytest.approx(m1[k], rel=1e-5, abs=1e-7), k
    _assert_close(many, one, rtol=1e-4, atol=1e-5, bias_atol=2 * lr * steps * 1.01)
    total = off = 0
    for name in many:
        if name.startswith(".params") and name.endswith("['kernel']"):
            a, b = many[name], one[name]
            total += a.size
            off += int(np.sum(np.abs(a - b) > 1e-6 + 1e-4 * np.abs(b)))
    assert total > 10_000 and off / total < 1e-3, (off, total)

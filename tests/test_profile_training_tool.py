"""tools/profile_training.py: how it attributes time (the profile itself is a tool run, not a test)."""
import jax
import jax.numpy as jnp
import pytest

from tools import profile_training as prof


def test_wall_shares_split_overlapping_thunks_and_add_up_to_the_busy_time():
    thunks = [  # a: 0-10 alone then with b; b: 5-15; c: 20-30 alone (a gap 15-20 is idle)
        {"name": "a", "ts": 0, "dur": 10}, {"name": "b", "ts": 5, "dur": 10}, {"name": "c", "ts": 20, "dur": 10}]
    shares = prof.wall_shares(thunks)
    assert shares == pytest.approx({"a": 5 + 2.5, "b": 2.5 + 5, "c": 10})
    assert sum(shares.values()) == pytest.approx(25)  # busy time, not the 30 of the durations


def test_hlo_index_names_each_instruction_by_its_heaviest_op():
    def f(x, k):
        y = jax.lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return jnp.sum(jnp.tanh(y) @ jnp.ones((4, 2))), jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))

    compiled = jax.jit(f).lower(jnp.ones((1, 8, 8, 3)), jnp.ones((3, 3, 3, 4))).compile()
    index = prof.hlo_index(compiled.as_text())
    families = {fam for fam, *_ in index.values()}
    assert {"convolution", "dot (GEMM)", "reduce"} <= families
    conv = [v for v in index.values() if v[0] == "convolution"]
    assert any("conv_general_dilated" in v[3] for v in conv)  # the JAX op name is kept


@pytest.mark.parametrize("name,family", [
    ("aten::convolution_backward", "convolution"), ("aten::mkldnn_convolution", "convolution"),
    ("aten::bmm", "dot (GEMM)"), ("aten::native_batch_norm", "reduce"),
    ("aten::reflection_pad2d_backward", "pad"), ("aten::index_select", "gather"), ("aten::cat", "concatenate"),
    ("aten::_foreach_addcdiv_", "optimizer (Adam)"), ("aten::mul", "elementwise")])
def test_torch_ops_fall_into_the_same_families(name, family):
    assert prof.torch_family(name) == family


@pytest.mark.parametrize("op_name,scope", [
    ("transpose(jvp(ResnetGenerator))/model_1/conv", "backward ResnetGenerator"),
    ("jvp(PatchGANDiscriminator)/x", "forward (for grad) PatchGANDiscriminator"),
    ("ResnetGenerator/model_4/conv", "forward ResnetGenerator"),
    ("jit(_shuffle)/sort", "shuffle (patch ids)"), ("add", "other"), ("jvp(vmap())/dot", "other")])
def test_scopes_from_jax_op_names(op_name, scope):
    assert prof.scope(op_name) == scope


def test_hlo_index_counts_the_onednn_kernel_gradient_as_a_convolution():
    from scenimefy_jax.kernels import onednn

    if not onednn.available():
        pytest.skip(f"oneDNN kernel: {onednn.status()[1]}")
    f = lambda x, dy: onednn.conv_wgrad(x, dy, (3, 3), ((1, 1), (1, 1)), (1, 1))  # noqa: E731
    compiled = jax.jit(f).lower(jnp.ones((1, 8, 8, 16)), jnp.ones((1, 8, 8, 16))).compile()
    calls = [v for v in prof.hlo_index(compiled.as_text()).values() if v[1] == "custom-call"]
    assert calls and all(v[0] == "convolution" for v in calls), calls

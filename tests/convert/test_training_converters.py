"""Converters of the official training checkpoints (D, D_p, F, F_s) and torchvision VGG19.

Key sets come from the PyTorch reference networks built from docs/reference.md §2.3 (the official module layout),
saved with torch.save and read back through the registry (weights_only). Missing, unexpected and
mis-shaped keys are refused by name; kind detection is unambiguous among all registered kinds.
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from scenimefy_jax import convert  # noqa: E402
from scenimefy_jax.convert import patchgan, projection, vgg  # noqa: E402
from scenimefy_jax.convert.torch_checkpoint import CheckpointError, CheckpointMismatchError  # noqa: E402
from tests.torch_reference import cut_training as tref  # noqa: E402

CHECKPOINTS = {
    "latest_net_D.pth": (lambda: tref.NLayerDiscriminator(3), "patchgan", 13),
    "latest_net_D_p.pth": (lambda: tref.NLayerDiscriminator(6), "patchgan_pair", 13),
    "latest_net_F.pth": (lambda: tref.PatchSampleF(), "projection_head", 20),
    "latest_net_F_s.pth": (lambda: tref.PatchSampleF(), "projection_head", 20),
}


@pytest.mark.parametrize("name", sorted(CHECKPOINTS))
def test_official_training_checkpoints_convert(name, tmp_path):
    build, kind, n_keys = CHECKPOINTS[name]
    sd = build().state_dict()
    assert len(sd) == n_keys
    path = tmp_path / name
    torch.save(sd, path)
    converted = convert.convert_file(path)
    assert converted.kind == kind
    if kind.startswith("patchgan"):
        np.testing.assert_array_equal(
            converted.params["model_11"]["kernel"], np.transpose(sd["model.11.weight"].numpy(), (2, 3, 1, 0))
        )
    else:
        np.testing.assert_array_equal(converted.params["mlp_3_2"]["kernel"], sd["mlp_3.2.weight"].numpy().T)
        assert converted.architecture["channels"] == [3, 128, 256, 256, 256]


def test_expected_key_sets_are_the_spec_lists():
    assert set(patchgan.expected_shapes(3)) == {
        "model.0.weight", "model.0.bias", "model.2.filt", "model.3.weight", "model.3.bias", "model.6.filt",
        "model.7.weight", "model.7.bias", "model.10.filt", "model.11.weight", "model.11.bias",
        "model.14.weight", "model.14.bias",
    }
    assert patchgan.expected_shapes(6)["model.0.weight"] == (64, 6, 4, 4)
    assert len(projection.expected_shapes()) == 20


@pytest.mark.parametrize("kind", ["D", "D_p", "F"])
def test_missing_extra_and_misshaped_keys_are_named(kind):
    model = {"D": lambda: tref.NLayerDiscriminator(3), "D_p": lambda: tref.NLayerDiscriminator(6),
             "F": tref.PatchSampleF}[kind]()
    sd = {k: v.numpy() for k, v in model.state_dict().items()}
    fn = {"D": patchgan.convert_discriminator, "D_p": patchgan.convert_pair_discriminator,
          "F": projection.convert_state_dict}[kind]
    victim = "model.7.bias" if kind != "F" else "mlp_4.2.bias"
    bad = dict(sd)
    del bad[victim]
    bad["extra.weight"] = np.zeros(3, np.float32)
    with pytest.raises(CheckpointMismatchError) as e:
        fn(bad)
    assert victim in e.value.missing and "extra.weight" in e.value.unexpected
    bad = dict(sd)
    bad[victim] = np.zeros(7, np.float32)
    with pytest.raises(CheckpointMismatchError) as e:
        fn(bad)
    assert [k for k, _, _ in e.value.misshaped] == [victim]


def test_blur_buffer_must_be_the_fixed_filter():
    sd = {k: v.numpy().copy() for k, v in tref.NLayerDiscriminator(3).state_dict().items()}
    sd["model.6.filt"][0, 0, 1, 1] += 0.1
    with pytest.raises(CheckpointError, match="model.6.filt"):
        patchgan.convert_discriminator(sd)


def test_detection_is_unambiguous():
    from scenimefy_jax.convert.registry import detect_kind

    for build, kind, _ in CHECKPOINTS.values():
        assert detect_kind({k: v.numpy() for k, v in build().state_dict().items()}, "x") == kind


def test_vgg19_file_with_and_without_classifier(tmp_path):
    model = tref.VGG19()
    full = model.state_dict()
    assert len(full) == 38
    path = tmp_path / "vgg19-dcbb9e9d.pth"
    torch.save(full, path)
    converted = convert.convert_file(path)
    assert converted.kind == "vgg19" and len(converted.params) == 16
    features_only = {k: v for k, v in full.items() if k.startswith("features.")}
    assert len(vgg.convert_state_dict({k: v.numpy() for k, v in features_only.items()}).params) == 16
    # a partial or odd classifier is refused by name
    partial = {k: v.numpy() for k, v in full.items() if k != "classifier.6.bias"}
    with pytest.raises(CheckpointMismatchError) as e:
        vgg.convert_state_dict(partial)
    assert e.value.missing == ["classifier.6.bias"]
    odd = {k: v.numpy() for k, v in full.items()}
    odd["classifier.6.weight"] = np.zeros((10, 4096), np.float32)
    with pytest.raises(CheckpointMismatchError, match="classifier.6.weight"):
        vgg.convert_state_dict(odd)
    no_conv = {k: v.numpy() for k, v in features_only.items() if k != "features.34.weight"}
    with pytest.raises(CheckpointMismatchError, match="features.34.weight"):
        vgg.convert_state_dict(no_conv)

"""The `Segmenter` API: shapes and dtypes, batching with padding equal to one image at a time, the
model on eight (fake CPU) devices equal to its pure function on one, bfloat16 near float32, errors.

Parity with the PyTorch reference is in tests/convert/test_mask2former_converter.py; the eight-device
test compares with `sem_seg_function` applied image by image on one device.
"""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from scenimefy_jax.segmentation import Segmenter, ade20k, random_segmenter

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def segmenter():
    return random_segmenter(seed=1, batch_size=4)


def _images(n, h=40, w=56, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, h, w, 3)).astype(np.float32)


def test_batched_equals_one_by_one(segmenter):
    images = _images(5)  # batches of 4 and 1: two compiled programs
    scores = segmenter.sem_seg(images)
    assert scores.shape == (5, 40, 56, segmenter.num_classes) and scores.dtype == np.float32
    for image, got in zip(images, scores):  # a single [H, W, 3] image: the batch-1 program
        np.testing.assert_allclose(segmenter.sem_seg(image), got, rtol=0, atol=1e-5)
    labels = segmenter.labels(images)
    assert labels.dtype == np.int32 and labels.shape == (5, 40, 56)
    np.testing.assert_array_equal(labels, np.argmax(scores, -1))
    assert scores.std(axis=(1, 2)).max() > 1e-3  # the scores do vary over the image
    # detectron2's sem_seg, sum_q softmax(class)[:, :K] * sigmoid(mask), is non-negative and, summed
    # over the classes, at most the number of queries
    assert scores.min() >= 0 and scores.sum(-1).max() <= segmenter.config.num_queries


def test_bfloat16_close_to_float32():
    f32 = random_segmenter(seed=2)
    bf16 = random_segmenter(seed=2, dtype="bfloat16")
    images = _images(2, 32, 48, seed=4)
    a, b = f32.sem_seg(images), bf16.sem_seg(images)
    assert b.dtype == np.float32
    assert np.abs(a - b).max() < 0.05 * np.abs(a).max()


def test_bad_arguments_are_named(segmenter):
    with pytest.raises(ValueError, match="dtype"):
        Segmenter(segmenter.params, segmenter.config, dtype="float16")
    with pytest.raises(ValueError, match="batch_size"):
        Segmenter(segmenter.params, segmenter.config, batch_size=0)
    with pytest.raises(ValueError, match=r"\[B, H, W, 3\]"):
        segmenter.sem_seg(np.zeros((2, 32, 32), np.float32))


def test_ade20k_tables():
    assert len(ade20k.CLASS_NAMES) == 150 and ade20k.PALETTE.shape == (150, 3)
    # the classes the official visualisation meant to show (docs/reference.md §3.4)
    assert [ade20k.CLASS_NAMES[i] for i in (1, 2, 4, 9, 12, 13, 16, 17, 21, 25, 26)] == [
        "building", "sky", "tree", "grass", "person", "earth", "mountain", "plant", "water", "house", "sea"]
    assert len({tuple(c) for c in ade20k.PALETTE}) == 149  # the published palette repeats one colour


SCRIPT = textwrap.dedent(
    """
    import jax, numpy as np
    assert jax.local_device_count() == 8, jax.devices()
    from scenimefy_jax.segmentation import random_segmenter, sem_seg_function
    seg = random_segmenter(seed=1, batch_size=8)
    images = np.random.default_rng(0).uniform(0, 255, (5, 32, 40, 3)).astype(np.float32)
    got = seg.sem_seg(images)
    leaf = jax.tree_util.tree_leaves(seg.params)[0]
    assert leaf.sharding.is_fully_replicated and len(leaf.sharding.device_set) == 8
    fn = jax.jit(sem_seg_function(seg.config))
    params = jax.device_put(jax.tree_util.tree_map(np.asarray, seg.params), jax.devices()[0])
    want = np.concatenate([np.asarray(fn(params, im[None])) for im in images])
    assert np.abs(got - want).max() < 1e-5, np.abs(got - want).max()
    print("ok")
    """
)


def test_eight_devices_match_one():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]

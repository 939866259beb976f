"""The pseudo-pair job's numbers against the official pipeline written out in PyTorch (docs/reference.md §3.3-3.4).

Networks, built here with random weights and saved in the forms the job reads:
* G_s and G_t: two rosinality StyleGAN2 generators of one small architecture (64 px, style_dim 32,
  `tests/torch_reference/stylegan2.py`) with different weights, saved as `.pt` checkpoints;
* the segmenter: a tiny transformers `Mask2FormerForUniversalSegmentation` with ADE20K's 150 labels,
  saved with `save_pretrained` (a Hugging Face folder). Its class head is sharpened (weights x40,
  biases 0) and its masks too (last mask-MLP layer x5), so that scores depend on the image and photos
  show one, two or three classes: with the plain random head every pixel of every photo gets the same
  class, seg_loss is ~4.99 for every pair, and the official rule rejects everything.

The job runs from `configs/pseudo_pairs.py` with a `.npy` of latents, the checkpoints' stored noise
(`noise="fixed"`: the only noise both sides can share) and `selection="none"`, so every candidate is
recorded; `num_pairs = N` because the job stops once that many are accepted. Independently, for each
z, one at a time as `generate_pair.py` loops: `w = G_s.style(z)`, both images from that w with
`randomize_noise=False`, segmenter input `round((img + 1) * 255 / 2)` unclamped, transformers' forward
plus detectron2's semantic inference -> `sem_seg [150, H, W]`,
`seg_loss = F.cross_entropy(sem_t[None], sem_s.argmax(0)[None])`, `seg_cnt = len(unique(argmax))`.

Truncation: 1.0 needs no w_avg. For 0.7 the official code averages `G_s.style` over 4096 unseeded
`torch.randn` draws, which no test can reproduce; the job draws its z's as
`jax.random.normal(key(truncation_seed), (truncation_mean, style_dim))` (its documented convention,
the one `Generator.mean_latent` uses). The test takes only those random numbers from JAX and computes
the mapping and the mean in PyTorch, so the job's w_avg is checked, not copied.

Tolerances (float32; measured on a 2-core CPU):
* `seg_loss` (~2.5-4.5 here) within 1e-3 absolute; measured 3.3e-4 (truncation 1.0) and 3.5e-5
  (0.7). On identical segmenter inputs the two sides agree to ~1e-5; the rest is the official
  `round`: the generators' float32 outputs differ by up to 2e-5 (these images reach +-10), so 0-5 of
  the 24,576 segmenter inputs of a pair round to the neighbouring integer, and this sharpened random
  segmenter moves seg_loss by up to ~3e-4 for such a one-level change.
* written PNGs within 1 intensity level of the official writer applied to the PyTorch images
  (measured: 1-2 pixels of a few images differ by 1, a value on either side of a rounding boundary).
* `seg_classes` (and the class list) exact, except that a photo pixel whose two best scores are within
  `MARGIN` (5e-3; the scores differ by up to 2.4e-3 after a rounding flip) may take either of the two
  classes. The test also requires that for most candidates those pixels cannot change the class set,
  so that the exact comparison is not vacuous (measured: 7 of 10 at both truncations).
* accept decisions: equal, for the official thresholds and for a threshold placed in the widest
  mid-range gap between two candidates' losses (so that the loss test decides something too).
"""
import json

import jax
import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from configs import pseudo_pairs as pseudo_pairs_config  # noqa: E402
from scenimefy_jax import main as entry  # noqa: E402
from scenimefy_jax.pseudo_pairs import selection  # noqa: E402
from tests.convert.test_mask2former_converter import TINY, torch_model, torch_sem_seg  # noqa: E402
from tests.torch_reference import stylegan2 as ref  # noqa: E402

SIZE, STYLE_DIM, N_MLP = 64, 32, 2  # 64 px: at 32 the stride-32 level is 1x1, where torch's GroupNorm refuses batch 1
CHANNELS = {4: 32, 8: 32, 16: 16, 32: 16, 64: 8}
N, BATCH = 10, 4  # 10 candidates in batches of 4: the last batch is padded
TRUNCATION_MEAN, TRUNCATION_SEED = 256, 3
SEGMENTER = {"backbone": TINY["backbone"], "model": dict(TINY["model"], num_labels=150)}
LOSS_ATOL = 1e-3
MARGIN = 5e-3  # photo pixels whose two best scores are closer than this may take either class


# -- the official pipeline, in PyTorch ------------------------------------------------------------

def _generator(seed):
    torch.manual_seed(seed)
    return ref.randomize_(ref.Generator(SIZE, STYLE_DIM, N_MLP, channels=CHANNELS), seed=seed).eval()


def _segmenter():
    model = torch_model(SEGMENTER, seed=0)
    with torch.no_grad():
        model.class_predictor.weight.mul_(40.0)
        model.class_predictor.bias.zero_()
        for name, p in model.named_parameters():
            if ".mask_embedder.2." in name:  # the last layer of the mask MLP: sharper masks
                p.mul_(5.0)
    return model


def official_sem_seg(model, img):
    """segmentation_net.py: img [1, 3, H, W] generator output -> sem_seg [150, H, W] (no clamp, no resize)."""
    x = torch.round((img[0] + 1) * 255 / 2)
    _, _, sem = torch_sem_seg(model, x.permute(1, 2, 0)[None].numpy())  # detectron2 semantic inference
    return torch.from_numpy(sem[0]).permute(2, 0, 1)


def official_writer(img):
    """generate_pair.py's save_image(normalize=True, range=(-1, 1)) of img [1, 3, H, W] -> uint8 [H, W, 3]."""
    x = img[0].clamp(-1, 1).add(1).div(2)
    return x.mul(255).add(0.5).clamp(0, 255).permute(1, 2, 0).to(torch.uint8).numpy()


def official_candidate(g_s, g_t, segmenter, z, truncation, w_avg):
    """generate_pair.py for one z [1, D] -> (seg_loss, seg_cnt, photo png, anime png, sem_photo)."""
    with torch.no_grad():
        w = g_s.style(z)  # both generators take the SOURCE mapping and the source w_avg
        img_s = g_s([w], input_is_latent=True, truncation=truncation, truncation_latent=w_avg,
                    randomize_noise=False)[0]
        img_t = g_t([w], input_is_latent=True, truncation=truncation, truncation_latent=w_avg,
                    randomize_noise=False)[0]
        sem_s, sem_t = official_sem_seg(segmenter, img_s), official_sem_seg(segmenter, img_t)
        label = sem_s.argmax(0)
        seg_loss = torch.nn.functional.cross_entropy(sem_t[None], label[None]).item()
        seg_cnt = len(torch.unique(label))
    return seg_loss, seg_cnt, official_writer(img_s), official_writer(img_t), sem_s.numpy()


# -- fixtures -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def networks(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny networks: one thread avoids spin-waiting beside XLA's pool on a small CPU
    d = tmp_path_factory.mktemp("pseudo_pairs_parity")
    g_s, g_t = _generator(1), _generator(2)
    for name, g in (("source.pt", g_s), ("target.pt", g_t)):
        torch.save({"g_ema": g.state_dict()}, str(d / name))
    segmenter = _segmenter()
    segmenter.save_pretrained(d / "segmenter")
    z = np.random.default_rng(0).standard_normal((N, STYLE_DIM)).astype(np.float32)
    np.save(d / "z.npy", z)
    yield d, g_s, g_t, segmenter, z
    torch.set_num_threads(threads)


def _run_job(d, output, truncation):
    config = pseudo_pairs_config.get_config()
    config.update(source=str(d / "source.pt"), target=str(d / "target.pt"), segmenter=str(d / "segmenter"),
                  latents=str(d / "z.npy"), noise="fixed", selection="none", num_pairs=N, batch_size=BATCH,
                  truncation=truncation, truncation_mean=TRUNCATION_MEAN, truncation_seed=TRUNCATION_SEED,
                  output=str(output), progress=False, write_workers=1)
    assert entry.run_job(config) == 0
    with open(output / "pairs.jsonl") as f:
        return [json.loads(line) for line in f]


def _w_avg(g_s, truncation):
    if truncation >= 1:
        return None
    z = np.array(jax.random.normal(jax.random.key(TRUNCATION_SEED), (TRUNCATION_MEAN, STYLE_DIM)))
    with torch.no_grad():
        return g_s.style(torch.from_numpy(z)).mean(0, keepdim=True)


# -- tests ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("truncation", [pytest.param(1.0, marks=pytest.mark.slow), 0.7])  # 0.7: the official one
def test_job_matches_official_pipeline(networks, tmp_path, truncation):
    d, g_s, g_t, segmenter, z = networks
    records = _run_job(d, tmp_path / "out", truncation)
    assert [r["candidate"] for r in records] == [r["latent_row"] for r in records] == list(range(N))
    w_avg = _w_avg(g_s, truncation)
    want = [official_candidate(g_s, g_t, segmenter, torch.from_numpy(z[i:i + 1]), truncation, w_avg)
            for i in range(N)]
    loss_t = np.array([w[0] for w in want])
    cnt_t = np.array([w[1] for w in want])
    loss_j = np.array([r["seg_loss"] for r in records])
    cnt_j = np.array([r["seg_classes"] for r in records])

    np.testing.assert_allclose(loss_j, loss_t, rtol=0, atol=LOSS_ATOL)
    exact = 0
    for i, (r, (_, cnt, png_s, png_t, sem_s)) in enumerate(zip(records, want)):
        order, top = np.argsort(sem_s, axis=0), np.sort(sem_s, axis=0)
        best, runner_up, borderline = order[-1], order[-2], top[-1] - top[-2] < MARGIN
        # an argmax may take the runner-up class on borderline pixels only
        sure = set(best[~borderline].tolist())
        possible = sure | set(best[borderline].tolist()) | set(runner_up[borderline].tolist())
        assert sure <= set(r["classes"]) <= possible, i
        assert r["seg_classes"] == len(r["classes"])
        if sure == possible:  # then the class set is fixed: exact equality with torch
            exact += 1
            assert r["seg_classes"] == cnt and r["classes"] == sorted(np.unique(sem_s.argmax(0)).tolist()), i
        # the written pair is the official writer's output for the PyTorch images (same name for A and B)
        assert r["name"] == f"{N - 1 - i}.png"
        for folder, png in (("trainA", png_s), ("trainB", png_t)):
            got = np.asarray(Image.open(tmp_path / "out" / folder / r["name"])).astype(int)
            assert got.shape == (SIZE, SIZE, 3)
            assert np.abs(got - png.astype(int)).max() <= 1, (folder, i)
    assert exact >= N // 2, f"near-tied pixels leave the class set open for {N - exact} of {N} candidates"
    assert len(set(cnt_t.tolist())) > 1, "the class rule should see photos with one and with more classes"

    # The official rule on the PyTorch numbers = selection.accept on the job's; also at a threshold
    # between two candidates' losses, so that the loss test decides something too.
    official = (loss_t < 5.0) & (cnt_t > 1)
    np.testing.assert_array_equal(selection.accept(loss_j, cnt_j, mode="official"), official)
    assert 0 < official.sum() < N
    ordered = np.sort(loss_t)
    k = int(np.argmax(np.diff(ordered[N // 4: 3 * N // 4]))) + N // 4  # the widest gap mid-range
    assert ordered[k + 1] - ordered[k] > 4 * LOSS_ATOL
    threshold = float(ordered[k] + ordered[k + 1]) / 2
    np.testing.assert_array_equal(
        selection.accept(loss_j, cnt_j, mode="official", seg_loss_th=threshold),
        (loss_t < threshold) & (cnt_t > 1))


def test_seg_statistics_matches_torch():
    """Scores with many exact ties in the photo (argmax takes the first maximum, as torch.argmax), one
    photo with all scores equal (class 0 everywhere: one class), negative and large anime scores."""
    rng = np.random.default_rng(0)
    b, h, w, k = 4, 5, 7, 150
    sem_photo = rng.integers(0, 3, (b, h, w, k)).astype(np.float32)
    sem_photo[:, :, :, 7:] = 0.0  # ties among classes 0..6 only
    sem_photo[1] = 0.5
    sem_anime = (rng.standard_normal((b, h, w, k)) * 3).astype(np.float32)
    sem_anime[2] = rng.uniform(0, 1, (h, w, k))
    loss, classes, present = jax.jit(selection.seg_statistics)(sem_anime, sem_photo)
    for i in range(b):
        photo = torch.from_numpy(sem_photo[i]).permute(2, 0, 1)
        anime = torch.from_numpy(sem_anime[i]).permute(2, 0, 1)
        label = photo.argmax(0)
        np.testing.assert_array_equal(label.numpy(), np.argmax(sem_photo[i], -1))  # first maximum
        want = torch.nn.functional.cross_entropy(anime[None], label[None]).item()
        np.testing.assert_allclose(float(loss[i]), want, rtol=1e-6)
        unique = torch.unique(label).numpy()
        assert int(classes[i]) == len(unique)
        np.testing.assert_array_equal(np.flatnonzero(np.asarray(present[i])), unique)
    assert int(classes[1]) == 1 and np.flatnonzero(np.asarray(present[1])).tolist() == [0]


def test_accept_modes():
    # a NaN seg_loss is never accepted, by either rule
    for mode in ("official", "top_fraction"):
        assert selection.accept(np.array([np.nan, 1.0]), np.array([2, 2]), mode=mode, top_fraction=1.0).tolist() == [
            False, True]
    loss = np.array([4.0, 5.0, 4.999, 3.0, 3.0, 6.0])
    classes = np.array([2, 2, 2, 1, 3, 5])
    # official: seg_loss < 5.0 (strict) and more than seg_cat_th classes
    np.testing.assert_array_equal(selection.accept(loss, classes, mode="official"),
                                  [True, False, True, False, True, False])
    np.testing.assert_array_equal(selection.accept(loss, classes, mode="official", seg_cat_th=2),
                                  [False, False, False, False, True, False])
    np.testing.assert_array_equal(selection.accept(loss, classes, mode="official", seg_loss_th=6.5),
                                  [True, True, True, False, True, True])
    np.testing.assert_array_equal(selection.accept(loss, classes, mode="none"), [True] * 6)
    # top_fraction keeps ceil(q * B) = 3 of the best losses among those with enough classes: candidate 3
    # has the best loss but one class, so 4 (3.0), 0 (4.0), 2 (4.999) are kept
    np.testing.assert_array_equal(selection.accept(loss, classes, mode="top_fraction", top_fraction=0.5),
                                  [True, False, True, False, True, False])
    # ceil: 0.4 * 6 = 2.4 -> 3
    np.testing.assert_array_equal(selection.accept(loss, classes, mode="top_fraction", top_fraction=0.4),
                                  [True, False, True, False, True, False])
    # with seg_cat_th=2 only candidates 4 and 5 have enough classes: fewer than ceil(q * B) are kept,
    # and 5 is kept despite the worst loss (the rule ranks within a batch, it has no threshold)
    np.testing.assert_array_equal(
        selection.accept(loss, classes, mode="top_fraction", top_fraction=0.5, seg_cat_th=2),
        [False, False, False, False, True, True])
    # ties in seg_loss: the lower candidate index wins, whatever the input order
    tied = np.array([2.0, 1.0, 2.0, 2.0])
    two = np.full(4, 2)
    np.testing.assert_array_equal(selection.accept(tied, two, mode="top_fraction", top_fraction=0.5),
                                  [True, True, False, False])
    np.testing.assert_array_equal(selection.accept(tied, two, mode="top_fraction", top_fraction=0.75),
                                  [True, True, True, False])
    np.testing.assert_array_equal(selection.accept(tied[::-1], two, mode="top_fraction", top_fraction=0.5),
                                  [True, False, True, False])
    np.testing.assert_array_equal(selection.accept(tied, two, mode="top_fraction", top_fraction=1.0), [True] * 4)
    with pytest.raises(ValueError, match="selection mode"):
        selection.accept(loss, classes, mode="best")

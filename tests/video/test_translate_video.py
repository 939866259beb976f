"""The translate_video job on short synthetic clips with audio, at sizes that are not multiples of 4.

Frames are compared with independent computations after a lossless round trip (libx264rgb, crf 0:
x264's lossless mode on RGB planes, so a decoded frame is exactly the array that was encoded):

  * without smoothing, each output frame against that frame translated alone by `Translator`
    (pad to a multiple of 4, translate, crop; docs/video.md). Batching changes float rounding only
    (XLA picks other convolution loops for another batch size), which can move a truncated uint8
    value by one level: at most 1, on under 1 % of the values;
  * with smoothing, each frame against a PyTorch generator (the reference of the parity tests) whose
    InstanceNorm layers are replaced by an EMA written here, run frame after frame: at most 1 level,
    the tolerance of the photo job's parity test;
  * the default H.264 yuv420p output against the lossless one: lossy, so each frame must be nearest to
    its own lossless frame (not a neighbour), with a loose mean bound of 10 levels: 4:2:0 chroma and
    crf 18 on a random translator's busy, noise-like 70x42 pictures measured 7.9 (5.4 with yuv444p),
    against 16 between consecutive frames.
"""
import os
import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest

av = pytest.importorskip("av")
torch = pytest.importorskip("torch")

from configs import translate_video as video_config  # noqa: E402
from scenimefy_jax import main as entry  # noqa: E402
from scenimefy_jax import model_io  # noqa: E402
from scenimefy_jax.convert.translator import convert_state_dict  # noqa: E402
from scenimefy_jax.inference import Translator  # noqa: E402
from scenimefy_jax.video import translate_video as tv  # noqa: E402
from scenimefy_jax.video.reader import VideoReader, VideoReadError  # noqa: E402
from tests.torch_reference import cut_networks as ref  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
W, H, FRAMES, RATE = 70, 42, 10, Fraction(30000, 1001)  # 70 and 42 are 2 mod 4; 10 frames = batches 4, 4, 2
LOSSLESS = {"codec": "libx264rgb", "pix_fmt": "rgb24", "crf": 0}


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("clip") / "clip.mp4")
    tv.write_clip(path, tv.pan_frames(W, H, FRAMES, speed=1.5), RATE, options={"crf": "10"})
    return path


@pytest.fixture(scope="module")
def source_frames(clip):
    return [rgb for _, rgb in VideoReader(clip).frames()]


@pytest.fixture(scope="module")
def torch_generator():
    return ref.randomize_(ref.ResnetGenerator(ngf=8, n_blocks=2), seed=3, scale=0.5).eval()


@pytest.fixture(scope="module")
def translator(torch_generator):
    state = {k: v.numpy() for k, v in torch_generator.state_dict().items()}
    converted = convert_state_dict(state, ngf=8, n_blocks=2)
    return Translator(converted.params, converted.architecture, batch_size=4)


def _config(clip, output, **overrides):
    config = video_config.get_config()
    config.checkpoint, config.input, config.output, config.progress = "random", clip, str(output), False
    config.batch_size = 4
    for key, value in overrides.items():
        config[key] = value
    return config


def _run(config, translator) -> None:
    """The job with a given translator (the torch-converted one, so the EMA reference can share it)."""
    tv.translate_video(config, translator, tv.plan_video(config))


def _decoded(path):
    return [rgb for _, rgb in VideoReader(path).frames()]


def _packets(path, kind):
    with av.open(path) as container:
        stream = getattr(container.streams, kind)[0]
        return [bytes(p) for p in container.demux(stream) if p.size]


def test_clip_keeps_size_rate_and_audio_and_each_frame_is_translated_alone(clip, source_frames, translator, tmp_path):
    out = tmp_path / "anime.mp4"
    _run(_config(clip, out, **LOSSLESS), translator)
    assert sorted(os.listdir(tmp_path)) == ["anime.mp4"]  # no temporary file left beside it
    with av.open(str(out)) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        assert (video.width, video.height, video.average_rate) == (W, H, RATE)
        assert video.codec_context.name == "h264" and audio.codec_context.name == "aac"
    assert _packets(str(out), "audio") == _packets(clip, "audio")  # remuxed, not re-encoded
    frames = _decoded(str(out))
    assert len(frames) == FRAMES
    for source, anime in zip(source_frames, frames):
        alone = tv.translate_frame_alone(translator, source)
        assert anime.shape == source.shape == alone.shape == (H, W, 3)
        diff = np.abs(anime.astype(int) - alone.astype(int))
        assert diff.max() <= 1 and np.mean(diff > 0) < 0.01


def test_frames_whose_sides_are_multiples_of_4_get_the_official_processing(translator):
    frame = next(tv.pan_frames(64, 48, 1))
    np.testing.assert_array_equal(tv.translate_frame_alone(translator, frame), translator(frame))
    padded = tv.pad_to_base4(np.arange(5 * 6 * 3, dtype=np.uint8).reshape(5, 6, 3))
    assert padded.shape == (8, 8, 3)
    np.testing.assert_array_equal(padded[5], padded[3])  # mirrored without repeating the edge row
    np.testing.assert_array_equal(padded[:, 7], padded[:, 3])


def test_default_codec_is_h264_yuv420p_close_to_the_lossless_frames(clip, translator, tmp_path):
    lossless, lossy = tmp_path / "lossless.mkv", tmp_path / "lossy.mp4"
    _run(_config(clip, lossless, **LOSSLESS), translator)
    _run(_config(clip, lossy), translator)
    with av.open(str(lossy)) as container:
        assert container.streams.video[0].codec_context.pix_fmt == "yuv420p"
    a, b = _decoded(str(lossless)), _decoded(str(lossy))
    assert len(a) == len(b) == FRAMES
    a, b = np.stack(a).astype(int), np.stack(b).astype(int)
    errors = np.abs(a[:, None] - b[None]).mean(axis=(2, 3, 4))  # [lossless t, lossy s]
    np.testing.assert_array_equal(errors.argmin(axis=0), np.arange(FRAMES))
    assert np.mean(np.abs(a - b)) < 10


class EMAInstanceNorm(torch.nn.Module):
    """InstanceNorm2d(affine=False) normalising with an EMA of its statistics over successive calls."""

    def __init__(self, smoothing):
        super().__init__()
        self.smoothing, self.state = smoothing, None

    def forward(self, x):
        mean = x.mean(dim=(2, 3), keepdim=True)
        var = x.var(dim=(2, 3), unbiased=False, keepdim=True)
        if self.state is not None:
            a = self.smoothing
            mean, var = a * self.state[0] + (1 - a) * mean, a * self.state[1] + (1 - a) * var
        self.state = (mean, var)
        return (x - mean) / torch.sqrt(var + 1e-5)


def _with_ema_norms(generator, smoothing):
    import copy

    generator = copy.deepcopy(generator)
    for module in list(generator.modules()):
        for name, child in module.named_children():
            if isinstance(child, torch.nn.InstanceNorm2d):
                setattr(module, name, EMAInstanceNorm(smoothing))
    return generator


def _torch_frames(generator, frames):
    outputs = []
    for frame in frames:
        padded = np.pad(frame, ((0, -H % 4), (0, -W % 4), (0, 0)), mode="reflect")
        x = torch.from_numpy(padded.astype(np.float32) / 255).permute(2, 0, 1)[None] * 2 - 1
        with torch.no_grad():
            y = generator(x)[0].clamp(-1, 1).permute(1, 2, 0).numpy()
        outputs.append(((y + 1) / 2 * 255).astype(np.uint8)[:H, :W])
    return outputs


def test_smoothing_equals_an_independent_ema_and_changes_the_frames(clip, source_frames, translator,
                                                                   torch_generator, tmp_path):
    out = tmp_path / "smooth.mkv"
    _run(_config(clip, out, smoothing=0.8, batch_size=3, **LOSSLESS), translator)  # batches 3, 3, 3, 1
    smoothed = _decoded(str(out))
    expected = _torch_frames(_with_ema_norms(torch_generator, 0.8), source_frames)
    plain = _torch_frames(torch_generator, source_frames)
    assert len(smoothed) == FRAMES
    for t, (got, want) in enumerate(zip(smoothed, expected)):
        assert np.abs(got.astype(int) - want.astype(int)).max() <= 1, f"frame {t}"
    assert np.abs(smoothed[0].astype(int) - plain[0].astype(int)).max() <= 1  # the first frame: own statistics
    assert np.mean(np.abs(np.stack(expected[1:]).astype(int) - np.stack(plain[1:]).astype(int))) > 0.5


def test_model_with_zero_smoothing_equals_the_plain_forward(translator, source_frames):
    import jax.numpy as jnp

    from scenimefy_jax.data import images as image_ops

    x = jnp.asarray(image_ops.to_model_input(np.stack([tv.pad_to_base4(f) for f in source_frames[:2]])))
    variables = {"params": translator.params}
    plain = translator.model.apply(variables, x)
    first, stats = translator.model.apply(variables, x, norm_stats=())
    again, _ = translator.model.apply(variables, x, norm_stats=stats, smoothing=0.0)
    assert len(stats) == 5 + 2 * 2 and stats[0][0].shape == (2, 1, 1, 8)
    np.testing.assert_array_equal(first, plain)
    np.testing.assert_allclose(again, plain, atol=1e-5)


class _Interrupt(BaseException):
    pass


def test_a_failure_mid_run_leaves_no_output(clip, translator, tmp_path, monkeypatch):
    out = tmp_path / "anime.mp4"
    real_call, calls = tv.FrameTranslator.__call__, []

    def interrupted(self, frames):
        calls.append(len(frames))
        if len(calls) == 2:  # after one batch has been encoded
            raise _Interrupt
        return real_call(self, frames)

    monkeypatch.setattr(tv.FrameTranslator, "__call__", interrupted)
    with pytest.raises(_Interrupt):
        _run(_config(clip, out), translator)
    assert os.listdir(tmp_path) == []
    monkeypatch.undo()

    # A decoding error in the reader thread reaches the job: exit status 1, nothing written.
    real_rgb = VideoReader.to_rgb
    decoded = []

    def broken(self, frame):
        decoded.append(1)
        if len(decoded) == 6:
            raise VideoReadError(f"{clip}: decoding failed after 5 frame(s) (injected)")
        return real_rgb(self, frame)

    monkeypatch.setattr(VideoReader, "to_rgb", broken)
    assert entry.run_job(_config(clip, out)) == 1
    assert os.listdir(tmp_path) == []


def test_pcm_audio_that_mp4_refuses_is_reencoded_to_aac(tmp_path, translator):
    source = str(tmp_path / "pcm.mkv")
    with av.open(source, "w") as container:
        video = container.add_stream("libx264", rate=15)
        video.width, video.height, video.pix_fmt = 38, 30, "yuv420p"
        audio = container.add_stream("pcm_u8", rate=8000, layout="mono")
        for frame in tv.pan_frames(38, 30, 6):
            container.mux(video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(video.encode(None))
        tone = (128 + 60 * np.sin(np.arange(3200) / 4)).astype(np.uint8)[None]
        samples = av.AudioFrame.from_ndarray(tone, format="u8", layout="mono")
        samples.sample_rate, samples.pts = 8000, 0
        container.mux(audio.encode(samples))
        container.mux(audio.encode(None))
    out = tmp_path / "anime.mp4"
    config = _config(source, out)
    assert tv.plan_video(config).audio == "aac"
    _run(config, translator)
    with av.open(str(out)) as container:
        audio = container.streams.audio[0]
        assert audio.codec_context.name == "aac" and audio.rate == 8000
        assert sum(f.samples for f in container.decode(audio=0)) >= 3200  # the encoder pads its last frame
    assert len(_decoded(str(out))) == 6


def test_bad_options_and_inputs_exit_2(clip, tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_text("not a video")
    existing = tmp_path / "exists.mp4"
    existing.write_bytes(b"")
    wrong_kind = model_io.save_model(tmp_path / "sg2", kind="stylegan2", params={"w": np.zeros(2, np.float32)},
                                     architecture={})
    for config in (
        _config(str(text), tmp_path / "a.mp4"),  # not a video
        _config(clip, existing),  # exists, no overwrite
        _config(clip, tmp_path / "a.mp4", checkpoint=wrong_kind),
        _config(clip, tmp_path / "a.mp4", smoothing=1.0),
        _config(clip, tmp_path / "a.xyz"),
    ):
        assert entry.run_job(config) == 2
    assert sorted(os.listdir(tmp_path)) == ["exists.mp4", "notes.mp4", "sg2"]


def test_a_missing_input_exits_2_with_one_line_naming_it(tmp_path):
    missing = tmp_path / "nope.mp4"
    result = subprocess.run(
        [sys.executable, "-m", "scenimefy_jax.main", "--config=configs/translate_video.py",
         "--config.checkpoint=random", f"--config.input={missing}", f"--config.output={tmp_path / 'out.mp4'}"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("E")]
    assert len(errors) == 1 and "--config.input" in errors[0] and "nope.mp4" in errors[0]

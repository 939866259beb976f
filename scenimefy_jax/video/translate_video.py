"""The video translation job: `python -m scenimefy_jax.main --config=configs/translate_video.py ...`.

A clip is decoded in a background thread (`FramePrefetcher`, a bounded queue; an error there is
re-raised in the main thread), translated in batches by the photo `Translator` on the device mesh,
and encoded with PyAV at the source size, frame rate and timestamps (H.264 yuv420p by default). The
first audio stream is copied packet for packet where the output container accepts its codec, else
re-encoded to AAC. Everything is written to a temporary file beside the output and renamed at the end,
so an interrupted or failed run leaves no broken video. docs/video.md describes the options.

Sizes: the network needs sides that are multiples of 4 (docs/reference.md §1.7). Where the official test
script resizes (to `round(side / 4) * 4`), this job reflect-pads each frame at the bottom and right to
the next multiple of 4 and crops the translation back, so the video keeps its exact size (`pad_to_base4`).
A frame whose sides are already multiples of 4 goes through exactly the official processing.

Temporal smoothing (`smoothing > 0`, off by default): every InstanceNorm layer normalises frame t with
`m_t = a m_{t-1} + (1 - a) mean_t` and `v_t = a v_{t-1} + (1 - a) var_t` instead of the frame's own
mean and variance (`models.translator.SmoothedInstanceNorm`), which damps the colour pumping that
per-frame statistics cause. Frames then depend on their predecessors, so each batch runs as a
`lax.scan` over its frames in order (one frame at a time), carrying the statistics to the next batch.
"""
from __future__ import annotations

import dataclasses
import io
import os
import queue
import threading
import time
from fractions import Fraction
from typing import Iterator

import numpy as np
from absl import logging
from tqdm import tqdm

from scenimefy_jax.data import images as image_ops
from scenimefy_jax.data.image_files import ConfigError

AUDIO_MODES = ("auto", "aac", "none")
CHROMA_SUBSAMPLED = ("yuv420p", "yuvj420p", "nv12", "nv21", "yuv422p", "yuvj422p")
BT709 = 1  # AVColorSpace / AVColorPrimaries / AVColorTransferCharacteristic value of ITU-R BT.709


# ----------------------------------------------------------------------------- sizes

def pad_to_base4(frame: np.ndarray) -> np.ndarray:
    """`[H, W, 3]` -> `[H', W', 3]` with H', W' the next multiples of 4, reflect-padded at the bottom
    and right (at most 3 rows / columns, mirrored without repeating the edge, as ReflectionPad2d does)."""
    h, w = frame.shape[:2]
    ph, pw = -h % 4, -w % 4
    if not (ph or pw):
        return frame
    if h <= ph or w <= pw:
        raise ValueError(f"a {w}x{h} frame is too small to reflect-pad to a multiple of 4")
    return np.pad(frame, ((0, ph), (0, pw), (0, 0)), mode="reflect")


def translate_frame_alone(translator, frame: np.ndarray) -> np.ndarray:
    """What the job writes for one frame without smoothing: pad, translate alone, crop back."""
    h, w = frame.shape[:2]
    return translator.translate_prepared([pad_to_base4(frame)])[0][:h, :w]


# ----------------------------------------------------------------------------- random translators

def random_translator_params(ngf: int = 8, n_blocks: int = 2, seed: int = 0):
    """A random `ResnetGenerator` parameter tree of any size (weights N(0, 0.02^2), CUT's initial scale;
    biases 0), drawn with numpy from the shapes so nothing compiles. The demo, tests and
    tools/measure_flicker.py use it; its translations mean nothing."""
    import jax

    from scenimefy_jax.models.translator import ResnetGenerator

    shapes = jax.eval_shape(ResnetGenerator(ngf=ngf, n_blocks=n_blocks).init, jax.random.key(0),
                            jax.ShapeDtypeStruct((1, 16, 16, 3), np.float32))["params"]
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map_with_path(
        lambda path, s: (np.zeros(s.shape, np.float32) if str(path[-1].key) == "bias"
                         else (0.02 * rng.standard_normal(s.shape)).astype(np.float32)), shapes)


# ----------------------------------------------------------------------------- decoding thread

_END = object()


class FramePrefetcher:
    """Decodes `reader`'s frames to RGB in a daemon thread, at most `depth` ahead of the consumer.

    Iterating yields `(index, pts, [H, W, 3] uint8)` in order. An exception in the thread is re-raised
    by the iterator in the caller's thread; `close()` (also on leaving a `with` block) stops the thread.
    """

    def __init__(self, reader, depth: int):
        self._reader = reader
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, name="video-decode", daemon=True)
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _work(self) -> None:
        decoding = self._reader.decoded()
        try:
            for index, frame in decoding:
                if not self._put((index, frame.pts, self._reader.to_rgb(frame))):
                    return
            self._put(_END)
        except BaseException as e:  # noqa: BLE001  (handed to the consumer, which re-raises it)
            self._put(e)
        finally:
            decoding.close()

    def __iter__(self) -> Iterator[tuple[int, int | None, np.ndarray]]:
        while True:
            item = self._queue.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ----------------------------------------------------------------------------- translation

class FrameTranslator:
    """Translates batches of equal-sized uint8 frames in order, keeping the source size.

    `smoothing == 0`: each frame alone through `Translator.translate_prepared` (batched on the mesh).
    `smoothing > 0`: a jitted `lax.scan` over the batch, one frame at a time, carrying the EMA of the
    InstanceNorm statistics across frames and batches; the first frame of the clip uses its own
    statistics. Batches are padded to `translator.batch_size` so one program serves the whole clip.
    """

    def __init__(self, translator, smoothing: float = 0.0):
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
        self.translator = translator
        self.smoothing = float(smoothing)
        self._stats = None  # the EMA state after the last frame translated (smoothing only)
        if self.smoothing:
            self._scan = self._build_scan()

    def _build_scan(self):
        import jax
        import jax.numpy as jnp

        from scenimefy_jax.parallel import mesh as mesh_lib

        model = self.translator.model
        replicated = mesh_lib.replicated(self.translator.mesh)

        def frame_step(params, stats, x, a):
            image, used = model.apply({"params": params}, x[None], norm_stats=stats, smoothing=a)
            return used, image[0]

        def scan(params, stats, frames, alphas):
            return jax.lax.scan(lambda s, xa: frame_step(params, s, *xa), stats, (frames, alphas))

        self._initial_stats = lambda x: jax.tree_util.tree_map(
            lambda s: jnp.zeros(s.shape, s.dtype),
            jax.eval_shape(lambda p, x: model.apply({"params": p}, x[:1], norm_stats=())[1], self.translator.params, x))
        # Every device runs the same sequential scan: frames depend on their predecessors, so there is
        # no batch to split (docs/video.md).
        return jax.jit(scan, in_shardings=replicated, out_shardings=replicated)

    def __call__(self, frames: list[np.ndarray]) -> list[np.ndarray]:
        h, w = frames[0].shape[:2]
        padded = [pad_to_base4(f) for f in frames]
        if not self.smoothing:
            return [y[:h, :w] for y in self.translator.translate_prepared(padded)]
        import jax.numpy as jnp

        n, size = len(padded), self.translator.batch_size
        x = image_ops.to_model_input(np.stack(padded))
        if n < size:  # only the last batch: the padding frames come after every real one
            x = np.concatenate([x, np.zeros((size - n,) + x.shape[1:], x.dtype)])
        alphas = np.full(len(x), self.smoothing, np.float32)
        if self._stats is None:
            self._stats = self._initial_stats(jnp.asarray(x))
            alphas[0] = 0.0  # the clip's first frame: its own statistics, exactly
        stats, y = self._scan(self.translator.params, self._stats, jnp.asarray(x), jnp.asarray(alphas))
        if n == size:
            self._stats = stats
        return [f[:h, :w] for f in image_ops.to_uint8(np.asarray(y)[:n])]


# ----------------------------------------------------------------------------- audio

def _audio_can_be_copied(format_name: str, stream) -> bool:
    """Whether an output container of `format_name` takes `stream`'s codec as it is (header written to
    memory; FFmpeg refuses there what it cannot mux, e.g. PCM in MP4)."""
    import av

    try:
        with av.open(io.BytesIO(), "w", format=format_name) as probe:
            probe.add_stream_from_template(stream)
            probe.start_encoding()
        return True
    except (av.error.FFmpegError, ValueError, NotImplementedError):
        return False


class AudioTrack:
    """The source's first audio stream, written into `output` interleaved with the video.

    `mode`: "copy" remuxes the packets unchanged; "aac" decodes and re-encodes at the source rate and
    layout. `write_until(t)` writes everything up to presentation time `t` seconds; `finish()` the rest.
    """

    def __init__(self, path: str, output, mode: str):
        import av

        self.mode = mode
        self._input = av.open(path)
        self._source = self._input.streams.audio[0]
        if mode == "copy":
            self.stream = output.add_stream_from_template(self._source)
        else:
            # The default layout for the channel count: a source may carry an unnamed order ("1 channels"),
            # which the AAC encoder refuses. FFmpeg's AAC encoder takes planar float.
            layout = {1: "mono", 2: "stereo"}.get(self._source.channels, self._source.layout.name)
            self.stream = output.add_stream("aac", rate=self._source.rate, layout=layout)
            self.stream.format = "fltp"
            self.stream.time_base = Fraction(1, self._source.rate)
            self._resampler = av.AudioResampler(format="fltp", layout=layout, rate=self._source.rate)
        self._output = output
        self._packets = self._input.demux(self._source)
        self._pending = None  # a packet read ahead of the time written so far

    def _next(self):
        for packet in self._packets:
            if packet.dts is not None or packet.size:  # skip the demuxer's empty flush packet
                return packet
        return None

    def _write(self, packet) -> None:
        if self.mode == "copy":
            packet.stream = self.stream
            self._output.mux(packet)
            return
        for frame in packet.decode():
            for resampled in self._resampler.resample(frame):
                self._output.mux(self.stream.encode(resampled))

    def write_until(self, seconds: float | None) -> None:
        while True:
            packet = self._pending or self._next()
            self._pending = None
            if packet is None:
                return
            if seconds is not None and packet.pts is not None and float(packet.pts * packet.time_base) > seconds:
                self._pending = packet
                return
            self._write(packet)

    def finish(self) -> None:
        self.write_until(None)
        if self.mode == "aac":
            for resampled in self._resampler.resample(None):
                self._output.mux(self.stream.encode(resampled))
            self._output.mux(self.stream.encode(None))
        self.close()

    def close(self) -> None:
        self._input.close()


# ----------------------------------------------------------------------------- the job

@dataclasses.dataclass
class Plan:
    info: object  # VideoInfo of the input
    reader: object
    pix_fmt: str
    audio: str  # "copy", "aac" or "none"
    colorspace: int  # AVColorSpace of the source video stream


def _open_input(config):
    from scenimefy_jax.video.reader import VideoReader, VideoReadError

    if not config.input:
        raise ConfigError("--config.input is required: a video file (e.g. clip.mp4)")
    if not os.path.isfile(config.input):
        raise ConfigError(f"--config.input={config.input!r}: no such file")
    try:
        reader = VideoReader(config.input, threads=config.decode_threads)
    except VideoReadError as e:
        raise ConfigError(f"--config.input={config.input!r}: {e}") from None
    return reader


def plan_video(config) -> Plan:
    """Checks the options and the input; raises `ConfigError` naming the option or file."""
    import av

    if not config.checkpoint:
        raise ConfigError("--config.checkpoint is required: an official *_net_G.pth, a converted model "
                          "directory, or 'random' (a random-weight translator, for trying the job)")
    if config.checkpoint != "random" and not os.path.exists(config.checkpoint):
        raise ConfigError(f"--config.checkpoint={config.checkpoint!r}: no such file or directory")
    if not config.output:
        raise ConfigError("--config.output is required: the video file to write (e.g. anime.mp4)")
    if os.path.isdir(config.output):
        raise ConfigError(f"--config.output={config.output!r} is a folder; give a file name such as anime.mp4")
    if os.path.exists(config.output) and not config.overwrite:
        raise ConfigError(f"--config.output={config.output!r} exists; --config.overwrite=True replaces it")
    if os.path.abspath(config.output) == os.path.abspath(config.input or ""):
        raise ConfigError("--config.output must differ from --config.input")
    if config.dtype not in ("float32", "bfloat16"):
        raise ConfigError(f"--config.dtype must be 'float32' or 'bfloat16', got {config.dtype!r}")
    if config.batch_size < 1:
        raise ConfigError(f"--config.batch_size must be >= 1, got {config.batch_size}")
    if not 0.0 <= config.smoothing < 1.0:
        raise ConfigError(f"--config.smoothing must be in [0, 1) (0: off), got {config.smoothing}")
    if not 0 <= config.crf <= 63:
        raise ConfigError(f"--config.crf must be in 0..63 (0 lossless, 18 visually lossless, 23 x264's default), "
                          f"got {config.crf}")
    if config.audio not in AUDIO_MODES:
        raise ConfigError(f"--config.audio must be one of {', '.join(AUDIO_MODES)}, got {config.audio!r}")
    try:
        codec = av.codec.Codec(config.codec, "w")
    except (av.error.FFmpegError, ValueError) as e:
        raise ConfigError(f"--config.codec={config.codec!r}: no such encoder in this FFmpeg ({e})") from None
    if codec.type != "video":
        raise ConfigError(f"--config.codec={config.codec!r} is not a video encoder")
    formats = [f.name for f in codec.video_formats or ()]
    if formats and config.pix_fmt not in formats:
        raise ConfigError(f"--config.pix_fmt={config.pix_fmt!r} is not supported by {config.codec} "
                          f"(it takes {', '.join(formats)})")
    out_format = _output_format(config.output)
    reader = _open_input(config)
    info = reader.info
    if min(info.width, info.height) < image_ops.MIN_SIDE:
        raise ConfigError(f"--config.input={config.input!r}: {info.width}x{info.height} is too small to translate")
    pix_fmt = config.pix_fmt
    if pix_fmt in CHROMA_SUBSAMPLED and (info.width % 2 or info.height % 2):
        if "yuv444p" not in formats:
            raise ConfigError(f"--config.input={config.input!r}: {info.width}x{info.height} has an odd side, which "
                              f"{pix_fmt} cannot store; choose --config.pix_fmt without chroma subsampling")
        logging.warning("%dx%d has an odd side, which %s cannot store: writing yuv444p to keep the exact size "
                        "(--config.pix_fmt to choose)", info.width, info.height, pix_fmt)
        pix_fmt = "yuv444p"
    with av.open(config.input) as container:
        colorspace = int(container.streams.video[0].codec_context.colorspace or 2)
        audio = "none"
        if config.audio != "none" and container.streams.audio:
            source = container.streams.audio[0]
            if config.audio == "auto" and _audio_can_be_copied(out_format, source):
                audio = "copy"
            else:
                audio = "aac"
    return Plan(info=info, reader=reader, pix_fmt=pix_fmt, audio=audio, colorspace=colorspace)


def _output_format(path: str) -> str:
    """The FFmpeg muxer the output's extension selects; ConfigError if none does."""
    import av

    try:
        with av.open(io.BytesIO(), "w", format=_format_by_extension(path)) as probe:
            return probe.format.name.split(",")[0]
    except (av.error.FFmpegError, ValueError) as e:
        raise ConfigError(f"--config.output={path!r}: no video container for this extension ({e})") from None


def _format_by_extension(path: str) -> str:
    ext = os.path.splitext(path)[1].lower().lstrip(".")
    return {"mkv": "matroska", "m4v": "mp4", "ts": "mpegts", "mts": "mpegts"}.get(ext, ext or "?")


def load_translator(config):
    from scenimefy_jax.inference.translator import Translator

    kwargs = {"dtype": config.dtype, "batch_size": config.batch_size}
    if config.checkpoint == "random":
        logging.warning("--config.checkpoint=random: a random translator (ngf %d, %d blocks); the video shows "
                        "the job, not the model", config.random_ngf, config.random_blocks)
        params = random_translator_params(config.random_ngf, config.random_blocks)
        return Translator(params, {"ngf": config.random_ngf, "n_blocks": config.random_blocks}, **kwargs)
    from scenimefy_jax.convert.torch_checkpoint import CheckpointError

    try:
        return Translator.from_checkpoint(config.checkpoint, **kwargs)
    except (CheckpointError, ValueError, OSError) as e:  # unreadable, another kind, another architecture
        raise ConfigError(f"--config.checkpoint={config.checkpoint!r}: cannot be loaded as a translator: {e}") from e


def _temporary_path(output: str) -> str:
    """Beside the output, hidden, with the output's extension (FFmpeg picks the container from it)."""
    folder, name = os.path.split(os.path.abspath(output))
    stem, ext = os.path.splitext(name)
    return os.path.join(folder, f".{stem}.partial-{os.getpid()}{ext}")


def _open_output(path: str, config, plan: Plan):
    import av

    info = plan.info
    container = av.open(path, "w", format=_format_by_extension(config.output))
    stream = container.add_stream(config.codec, rate=info.frame_rate or Fraction(25))
    stream.width, stream.height, stream.pix_fmt = info.width, info.height, plan.pix_fmt
    # Timestamps are the source's, in its time base: variable frame rates and the audio offset survive.
    stream.codec_context.time_base = info.time_base
    stream.time_base = info.time_base
    options = {"crf": str(config.crf)}
    if config.codec.startswith("libx26"):
        options["preset"] = config.preset
    stream.options = options
    if plan.colorspace == BT709 and plan.pix_fmt.startswith("yuv"):
        cc = stream.codec_context
        cc.colorspace = cc.color_primaries = cc.color_trc = BT709
    return container, stream


def _encode_frame(stream, rgb: np.ndarray, pts: int, plan: Plan):
    import av

    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
    if plan.pix_fmt != "rgb24":
        # The matrix the source was decoded with (BT.709 if tagged so, else BT.601), so colours round-trip.
        space = "ITU709" if plan.colorspace == BT709 else "ITU601"
        frame = frame.reformat(format=plan.pix_fmt, src_colorspace=space, dst_colorspace=space)
    frame.pts = pts
    return stream.encode(frame)


def translate_video(config, translator, plan: Plan) -> int:
    """Translates `config.input` into `config.output` (atomically); returns the number of frames written.
    Raises `VideoReadError` if decoding fails, and whatever interrupts it; no output is left then."""
    info = plan.info
    frames_translator = FrameTranslator(translator, config.smoothing)
    tmp = _temporary_path(config.output)
    written, last_pts = 0, None
    container = audio = None
    bar = tqdm(total=info.frame_count, unit="frame", desc="translate video", disable=not config.progress)
    try:
        container, stream = _open_output(tmp, config, plan)
        if plan.audio != "none":
            audio = AudioTrack(config.input, container, "copy" if plan.audio == "copy" else "aac")

        def emit(batch):
            nonlocal written, last_pts
            for (index, pts, _), anime in zip(batch, frames_translator([rgb for _, _, rgb in batch])):
                if pts is None or (last_pts is not None and pts <= last_pts):
                    pts = index if last_pts is None else last_pts + 1  # untimed or non-monotonic source
                last_pts = pts
                container.mux(_encode_frame(stream, anime, pts, plan))
                if audio is not None:
                    audio.write_until(float(pts * info.time_base))
                written += 1
            bar.update(len(batch))

        with FramePrefetcher(plan.reader, depth=2 * translator.batch_size) as frames:
            batch = []
            for item in frames:
                batch.append(item)
                if len(batch) == translator.batch_size:
                    emit(batch)
                    batch = []
            if batch:
                emit(batch)
        container.mux(stream.encode(None))
        if audio is not None:
            audio.finish()
            audio = None
        container.close()
        container = None
        if not written:
            from scenimefy_jax.video.reader import VideoReadError

            raise VideoReadError(f"{config.input}: no frames could be decoded")
        os.replace(tmp, config.output)
        return written
    finally:
        bar.close()
        if audio is not None:
            audio.close()
        if container is not None:
            try:
                container.close()
            except Exception:  # noqa: BLE001  (already failing; the partial file is removed below)
                pass
        if os.path.exists(tmp):
            os.remove(tmp)


def run(config) -> int:
    import jax

    from scenimefy_jax.video.reader import VideoReadError

    try:
        if config.get("demo_frames"):
            write_demo_clip(config.input, frames=config.demo_frames)
        if jax.process_count() > 1:
            raise ConfigError("the translate_video job runs on one host; start it without config.distributed")
        plan = plan_video(config)
        translator = load_translator(config)
    except ConfigError as e:
        logging.error("%s", e)
        return 2
    info = plan.info
    logging.info("%s: %dx%d, %s frames/s, %s frames, audio: %s", config.input, info.width, info.height,
                 info.frame_rate, info.frame_count or "?", plan.audio)
    start = time.perf_counter()
    try:
        written = translate_video(config, translator, plan)
    except VideoReadError as e:
        logging.error("%s; nothing written", e)
        return 1
    except (OSError, ValueError) as e:  # FFmpeg errors are OSError / ValueError subclasses
        logging.error("%s -> %s failed: %s; nothing written", config.input, config.output, e)
        return 1
    elapsed = time.perf_counter() - start
    logging.info("translated %d frames into %s in %.1f s (%.2f frames/s); size %dx%d %s, audio %s%s", written,
                 config.output, elapsed, written / elapsed, info.width, info.height, plan.pix_fmt,
                 {"copy": "copied", "aac": "re-encoded to AAC", "none": "none"}[plan.audio],
                 f", smoothing {config.smoothing}" if config.smoothing else "")
    return 0


# ----------------------------------------------------------------------------- synthetic clips

def pan_frames(width: int, height: int, frames: int, speed: float = 1.0, seed: int = 0) -> Iterator[np.ndarray]:
    """`[H, W, 3] uint8` frames of a slow horizontal pan (`speed` px per frame) across a procedural
    landscape (`data.demo.render_scene`), for the demo, the tests and the flicker measurement."""
    from PIL import Image

    from scenimefy_jax.data import demo

    span = int(np.ceil(speed * max(frames - 1, 0))) + width + 1
    side = max(height, span)
    scene, _ = demo.render_scene(seed, 0, 256)
    panorama = np.asarray(Image.fromarray(scene).resize((side, side), Image.Resampling.BICUBIC), np.float32)
    panorama = panorama[(side - height) // 2:(side - height) // 2 + height]
    for t in range(frames):
        x = speed * t
        x0, frac = int(np.floor(x)), np.float32(x - np.floor(x))
        view = (1 - frac) * panorama[:, x0:x0 + width] + frac * panorama[:, x0 + 1:x0 + 1 + width]
        yield np.clip(np.rint(view), 0, 255).astype(np.uint8)


def write_clip(path: str, frames, rate: Fraction | int = 15, *, codec: str = "libx264", pix_fmt: str = "yuv420p",
               options: dict | None = None, audio_hz: float | None = 440.0, sample_rate: int = 44100) -> None:
    """Encodes `frames` (`[H, W, 3] uint8`) at `rate`, with an AAC sine tone of `audio_hz` (None: no
    audio) lasting as long as the video."""
    import av

    frames = list(frames)
    h, w = frames[0].shape[:2]
    with av.open(path, "w") as container:
        video = container.add_stream(codec, rate=Fraction(rate))
        video.width, video.height, video.pix_fmt = w, h, pix_fmt
        video.options = dict(options or {})
        tone = None
        if audio_hz:
            tone = container.add_stream("aac", rate=sample_rate, layout="mono")
        for rgb in frames:
            container.mux(video.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(video.encode(None))
        if tone is not None:
            n = int(round(len(frames) / Fraction(rate) * sample_rate))
            t = np.arange(n) / sample_rate
            wave = (0.3 * np.sin(2 * np.pi * audio_hz * t)).astype(np.float32)
            for start in range(0, n, 1024):
                chunk = wave[None, start:start + 1024]
                frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format="flt", layout="mono")
                frame.sample_rate, frame.pts = sample_rate, start
                container.mux(tone.encode(frame))
            container.mux(tone.encode(None))


def write_demo_clip(path: str, frames: int = 48, width: int = 190, height: int = 106) -> None:
    """The `:demo` clip: a pan at 15 frames/s with a tone, at a size that is not a multiple of 4."""
    if os.path.exists(path):
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = _temporary_path(path)
    try:
        write_clip(tmp, pan_frames(width, height, frames), 15)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)

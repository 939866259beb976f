"""Watching a training run: metric writers, loss averages, progress reports, the parameter overview.

The writers follow CLU's `MetricWriter` interface (`write_scalars`, `write_images`, `write_texts`,
`write_hparams`, `flush`, `close`), but `clu.metric_writers` itself imports TensorFlow, which the
default install deliberately does not contain. So the writers are here:

* `LoggingWriter`: the console (absl logging), one line per report;
* `JsonlWriter`: `<workdir>/metrics.jsonl`, one JSON object per `write_scalars` call;
* `ImageFileWriter`: `<workdir>/images/<name>_<step>.png` image grids;
* `TensorBoardWriter`: event files for TensorBoard through `tensorboardX` (a pure-Python event
  writer; no TensorFlow). Watch with `tensorboard --logdir <workdir>/tensorboard` (`pip install
  tensorboard`, which does not need TensorFlow either).

`clu.metrics.Average` (which does not import TensorFlow) averages the loss terms between reports;
`clu.parameter_overview` prints the parameter table at start.
"""
from __future__ import annotations

import json
import logging as py_logging
import math
import os
import time
from typing import Any, Mapping, Sequence

import jax
import numpy as np
from clu import metrics as clu_metrics
from clu import parameter_overview
from PIL import Image

_log = py_logging.getLogger(__name__)
Scalars = Mapping[str, float]


class MetricWriter:
    """CLU-style writer interface; every method is optional for a subclass."""

    def write_scalars(self, step: int, scalars: Scalars) -> None:
        pass

    def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
        """`images`: name -> `[H, W, 3]` uint8."""

    def write_texts(self, step: int, texts: Mapping[str, str]) -> None:
        pass

    def write_hparams(self, hparams: Mapping[str, Any]) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.flush()


def _fmt(value: float) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


class LoggingWriter(MetricWriter):
    def write_scalars(self, step, scalars):
        _log.info("[%d] %s", step, ", ".join(f"{k}={_fmt(v)}" for k, v in sorted(scalars.items())))

    def write_texts(self, step, texts):
        for name, text in texts.items():
            _log.info("[%d] %s: %s", step, name, text)

    def write_hparams(self, hparams):
        _log.info("hyperparameters: %s", json.dumps(hparams, sort_keys=True, default=str))


class JsonlWriter(MetricWriter):
    """Appends `{"step": s, "time": t, **scalars}` lines to `path` (resumed runs keep appending)."""

    def __init__(self, path: str):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.path = path
        self._file = open(path, "a", buffering=1)

    def write_scalars(self, step, scalars):
        record = {"step": int(step), "time": round(time.time(), 3)}
        record.update({k: float(v) for k, v in scalars.items()})
        self._file.write(json.dumps(record) + "\n")

    def write_hparams(self, hparams):
        self._file.write(json.dumps({"hparams": hparams, "time": round(time.time(), 3)}, default=str) + "\n")

    def flush(self):
        self._file.flush()

    def close(self):
        if not self._file.closed:
            self._file.close()


class ImageFileWriter(MetricWriter):
    """Writes each image as `<directory>/<name>_<step:08d>.png` (names with '/' become '_')."""

    def __init__(self, directory: str):
        self.directory = directory
        os.makedirs(directory, exist_ok=True)

    def write_images(self, step, images):
        for name, image in images.items():
            path = os.path.join(self.directory, f"{name.replace('/', '_')}_{int(step):08d}.png")
            Image.fromarray(np.asarray(image, np.uint8)).save(path)


class TensorBoardWriter(MetricWriter):
    """TensorBoard event files through tensorboardX (no TensorFlow needed to write or to view)."""

    def __init__(self, logdir: str):
        from tensorboardX import SummaryWriter

        self._writer = SummaryWriter(logdir=logdir, flush_secs=30)

    def write_scalars(self, step, scalars):
        for name, value in scalars.items():
            self._writer.add_scalar(name, float(value), global_step=int(step))

    def write_images(self, step, images):
        for name, image in images.items():
            self._writer.add_image(name, np.asarray(image, np.uint8), global_step=int(step), dataformats="HWC")

    def write_texts(self, step, texts):
        for name, text in texts.items():
            self._writer.add_text(name, text, global_step=int(step))

    def write_hparams(self, hparams):
        text = "\n".join(f"    {k} = {v}" for k, v in sorted(hparams.items()))  # markdown code block
        self._writer.add_text("hparams", text, global_step=0)

    def flush(self):
        self._writer.flush()

    def close(self):
        self._writer.close()


class MultiWriter(MetricWriter):
    def __init__(self, writers: Sequence[MetricWriter]):
        self.writers = list(writers)

    def write_scalars(self, step, scalars):
        for w in self.writers:
            w.write_scalars(step, scalars)

    def write_images(self, step, images):
        for w in self.writers:
            w.write_images(step, images)

    def write_texts(self, step, texts):
        for w in self.writers:
            w.write_texts(step, texts)

    def write_hparams(self, hparams):
        for w in self.writers:
            w.write_hparams(hparams)

    def flush(self):
        for w in self.writers:
            w.flush()

    def close(self):
        for w in self.writers:
            w.close()


def create_default_writer(workdir: str, *, tensorboard: bool = True) -> MultiWriter:
    """Console + `metrics.jsonl` + `images/` + (optionally) `tensorboard/` under `workdir`.

    Only the first host writes files; the others log to their console.
    """
    writers: list[MetricWriter] = [LoggingWriter()]
    if jax.process_index() == 0:
        writers += [JsonlWriter(os.path.join(workdir, "metrics.jsonl")), ImageFileWriter(os.path.join(workdir, "images"))]
        if tensorboard:
            try:
                writers.append(TensorBoardWriter(os.path.join(workdir, "tensorboard")))
            except ImportError:
                _log.warning("tensorboardX is not installed: no TensorBoard event files (pip install tensorboardX)")
    return MultiWriter(writers)


class LossAverages:
    """Running means of a step's scalar metrics between reports (`clu.metrics.Average` per name).

    Merging happens on device, so updating does not wait for the step to finish.
    """

    def __init__(self):
        self._averages: dict[str, clu_metrics.Average] = {}

    def update(self, metrics: Mapping[str, jax.Array]) -> None:
        for name, value in metrics.items():
            new = clu_metrics.Average.from_model_output(value)
            self._averages[name] = self._averages[name].merge(new) if name in self._averages else new

    def peek(self) -> dict[str, float]:
        """The current averages, without resetting them."""
        return {name: float(avg.compute()) for name, avg in self._averages.items()}

    def compute_and_reset(self) -> dict[str, float]:
        out = {name: float(avg.compute()) for name, avg in self._averages.items()}
        self._averages = {}
        return out

    def __bool__(self) -> bool:
        return bool(self._averages)


class ProgressReporter:
    """Steps/s, images/s and the ETA since the previous report, as scalars and a console line."""

    def __init__(self, *, total_steps: int, global_batch: int, start_step: int):
        self.total_steps, self.global_batch = total_steps, global_batch
        self._last_step, self._last_time = start_step, time.perf_counter()

    def restart_clock(self, step: int) -> None:
        """Excludes time spent outside training steps (compilation, checkpoints, image grids)."""
        self._last_step, self._last_time = step, time.perf_counter()

    def report(self, step: int) -> dict[str, float]:
        now = time.perf_counter()
        steps = step - self._last_step
        elapsed = max(now - self._last_time, 1e-9)
        self._last_step, self._last_time = step, now
        if steps <= 0:
            return {}
        steps_per_sec = steps / elapsed
        eta = (self.total_steps - step) / steps_per_sec
        _log.info(
            "step %d/%d (%.1f%%): %.3g steps/s, %.3g images/s, ETA %s",
            step, self.total_steps, 100.0 * step / self.total_steps, steps_per_sec,
            steps_per_sec * self.global_batch, format_duration(eta),
        )
        return {"steps_per_sec": steps_per_sec, "images_per_sec": steps_per_sec * self.global_batch,
                "eta_seconds": eta}


def format_duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def log_parameter_overview(params: Any, name: str) -> str:
    """Logs (and returns) CLU's table of parameter names, shapes, sizes and statistics."""
    table = parameter_overview.get_parameter_overview(jax.device_get(params), include_stats=True)
    _log.info("parameters of %s:\n%s", name, table)
    return table


def image_grid(rows: Sequence[np.ndarray], *, max_images: int = 4) -> np.ndarray:
    """Tiles `[B, H, W, 3]` arrays in [-1, 1]: one column per array, one row per image (up to `max_images`).

    Returns `[rows*H, cols*W, 3]` uint8, with [-1, 1] mapped as the official `tensor2im`.
    """
    from scenimefy_jax.data.images import to_uint8

    cols = [to_uint8(np.asarray(r, np.float32)[:max_images]) for r in rows]
    return np.concatenate([np.concatenate(list(col), axis=0) for col in cols], axis=1)

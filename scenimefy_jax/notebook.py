"""What the notebooks in notebooks/ need beyond the jobs: finding the checkout's configs and tools, a device
report, device-dependent defaults, inputs from Colab uploads or Google Drive, and pictures shown inline.

The notebooks run the jobs exactly as the command line does: `load_config("i2i", "demo")` is
`--config=configs/i2i.py:demo` (the same `get_config`, locked, so a misspelt option raises), and
`main.run_job(config)` runs it. Nothing here trains or translates; running on a Colab TPU is described
in docs/colab_tpu.md.

    from scenimefy_jax import main, notebook
    print(notebook.format_device_report(notebook.device_report()))
    config = notebook.load_config("translate", overrides={"checkpoint": "models/shinkai", "input": "photos"})
    notebook.check_exit(main.run_job(config), config)
    notebook.show(notebook.side_by_side(["photos/a.jpg", "anime/a.png"]))

Images are shown through IPython's display (PIL images render as PNG); outside IPython `show` does
nothing, and the functions that build pictures return PIL images. No matplotlib is needed: loss curves
are drawn with PIL.
"""
from __future__ import annotations

import glob
import importlib.util
import json
import math
import os
import shutil
import sys
import time
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

DRIVE_ROOT = "/content/drive"  # where google.colab.drive mounts "My Drive" (as /content/drive/MyDrive)
_PER_DEVICE_BATCH = {"cpu": 1, "gpu": 8, "tpu": 8}  # translation batch per device (see choose_batch_size)


# ----------------------------------------------------------------------------- where things are

def in_colab() -> bool:
    """True inside a Google Colab runtime (its `google.colab` module is imported before any cell runs)."""
    return "google.colab" in sys.modules


def find_checkout(start: str | os.PathLike | None = None) -> str:
    """The repository folder holding `configs/` and `tools/`.

    Looked for beside the imported package (an editable install or a clone on `sys.path`), then in
    `start` (default: the working directory) and its parents. The configs are not part of the installed
    package: a wheel install alone cannot run the notebooks.
    """
    import scenimefy_jax

    candidates = [os.path.dirname(os.path.dirname(os.path.abspath(scenimefy_jax.__file__)))]
    here = os.path.abspath(os.fspath(start) if start is not None else os.getcwd())
    while True:
        candidates.append(here)
        parent = os.path.dirname(here)
        if parent == here:
            break
        here = parent
    for folder in candidates:
        if os.path.isfile(os.path.join(folder, "configs", "i2i.py")):
            return folder
    raise FileNotFoundError("no scenimefy-jax checkout (a folder with configs/i2i.py) beside the package or above "
                            f"{start or os.getcwd()}; clone the repository and install it with pip install -e")


def _load_module(path: str, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_config(job: str, variant: str = "", *, overrides: Mapping[str, object] | None = None,
                checkout: str | None = None):
    """`configs/<job>.py`'s `get_config(variant)` with dotted `overrides` applied, then locked.

    The same as `--config=configs/<job>.py:<variant> --config.<key>=<value> ...`: an override naming no
    option raises (KeyError / AttributeError) instead of adding a field the job never reads.
    """
    path = os.path.join(checkout or find_checkout(), "configs", f"{job}.py")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such job config")
    module = _load_module(path, f"scenimefy_config_{job}")
    config = module.get_config(variant) if variant else module.get_config()
    config.lock()
    for key, value in (overrides or {}).items():
        parent = config
        *head, last = key.split(".")
        for part in head:
            parent = parent[part]
        if last not in parent:
            raise KeyError(f"{key} is not an option of configs/{job}.py")
        parent[last] = value
    return config


def check_exit(status: int, config) -> None:
    """Raises when a job's exit status (`main.run_job`) is not 0, so "run all" stops at the failing stage.

    Status 1: some inputs failed or training stopped on a non-finite value; 2: a bad option. The job has
    already logged why, in one line.
    """
    if status != 0:
        meaning = {1: "some inputs failed or training diverged", 2: "a bad option"}.get(status, "an error")
        raise RuntimeError(f"the {config.job} job exited with status {status} ({meaning}); see the log above")


def run_tool(name: str, argv: Sequence[str], *, checkout: str | None = None) -> None:
    """Runs `tools/<name>.py`'s `main(argv)` (e.g. convert_checkpoint) in this process; raises on a non-zero status."""
    module = _load_module(os.path.join(checkout or find_checkout(), "tools", f"{name}.py"), f"scenimefy_tool_{name}")
    status = module.main(list(argv))
    if status:
        raise RuntimeError(f"tools/{name}.py {' '.join(argv)} exited with status {status}")


def setup_logging() -> None:
    """The jobs' INFO log lines in the notebook, as `main` shows them on the command line."""
    import logging as py_logging

    from absl import logging

    logging.use_absl_handler()  # app.run installs it on the command line
    logging.set_verbosity(logging.INFO)
    py_logging.getLogger().setLevel(py_logging.INFO)  # the jobs' module loggers inherit the root level
    py_logging.getLogger("jax._src.xla_bridge").setLevel(py_logging.WARNING)


def compilation_cache(directory: str | None):
    """XLA's persistent compilation cache in `directory` while the `with` block runs (for jobs without
    their own `compilation_cache` option, such as translate). On Drive it survives a Colab disconnect."""
    from scenimefy_jax.training import loop

    return loop.compilation_cache(directory)


# ----------------------------------------------------------------------------- devices

def device_report() -> dict:
    """The devices JAX sees: platform, counts, kinds, memory per device where the backend reports it."""
    import jax

    devices = jax.devices()
    memory = []
    for d in jax.local_devices():
        try:
            stats = d.memory_stats() or {}
        except Exception:  # CPU backends raise or return None: no figure to report
            stats = {}
        memory.append(stats.get("bytes_limit"))
    return {
        "jax": jax.__version__,
        "platform": jax.default_backend(),
        "device_count": jax.device_count(),
        "local_device_count": jax.local_device_count(),
        "process_count": jax.process_count(),
        "kinds": sorted({d.device_kind for d in devices}),
        "memory_bytes": memory,
        "colab": in_colab(),
    }


def format_device_report(report: Mapping) -> str:
    mem = [m for m in report["memory_bytes"] if m]
    lines = [
        f"JAX {report['jax']} on {report['platform']}: {report['device_count']} device(s) "
        f"({', '.join(report['kinds'])}), {report['local_device_count']} on this host, "
        f"{report['process_count']} process(es){'; Colab runtime' if report['colab'] else ''}",
        f"memory per device: {mem[0] / 2**30:.1f} GiB" if mem else "memory per device: not reported by this backend",
        f"defaults chosen here: dtype {choose_dtype(report['platform'])}, translation batch "
        f"{choose_batch_size(platform=report['platform'], devices=report['local_device_count'])}",
    ]
    return "\n".join(lines)


def choose_dtype(platform: str | None = None) -> str:
    """"bfloat16" on TPU and GPU (their matrix units run it at full rate), "float32" on CPU (no gain there,
    benchmarks/translator_cpu.json) and when the official outputs must be matched."""
    if platform is None:
        import jax

        platform = jax.default_backend()
    return "float32" if platform == "cpu" else "bfloat16"


def round_to_devices(batch: int, devices: int | None = None) -> int:
    """The smallest multiple of the device count that is >= `batch` (>= 1): every global batch is split
    evenly over the mesh's data axis (docs/training.md, Devices)."""
    if devices is None:
        import jax

        devices = jax.device_count()
    return max(1, math.ceil(max(batch, 1) / devices)) * devices


def choose_batch_size(per_device: int = 0, *, platform: str | None = None, devices: int | None = None) -> int:
    """A translation batch for this host: `per_device` (0: 8 on TPU/GPU, 1 on CPU, where one image per call
    is fastest) times the local device count, so each device gets an equal share."""
    import jax

    platform = platform or jax.default_backend()
    devices = devices or jax.local_device_count()
    return (per_device or _PER_DEVICE_BATCH.get(platform, 1)) * devices


def images_per_second(fn: Callable[[], object], n_images: int, *, repeats: int = 3) -> dict:
    """Times `fn()` (a jitted call on `n_images` images): the first call (compilation included) apart,
    then the best of `repeats` calls. Waits for the device (`block_until_ready`) each time."""
    import jax

    start = time.perf_counter()
    jax.block_until_ready(fn())
    first = time.perf_counter() - start
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    best = min(times)
    return {"first_call_s": first, "seconds_per_call": best, "images_per_s": n_images / best, "images": n_images}


# ----------------------------------------------------------------------------- inputs on Colab

def mount_drive(path: str) -> bool:
    """Mounts Google Drive when `path` lies under /content/drive and this is Colab; True if it mounted."""
    if not (in_colab() and os.path.abspath(path).startswith(DRIVE_ROOT + os.sep)):
        return False
    if not os.path.isdir(os.path.join(DRIVE_ROOT, "MyDrive")):
        from google.colab import drive

        drive.mount(DRIVE_ROOT)
    return True


def locate_input(path: str, *, what: str, upload_dir: str, single_file: bool = False) -> str:
    """The file or folder a notebook works on: `path` if given (mounting Drive first when it is there),
    else, on Colab, files uploaded from the browser into `upload_dir` (the one file if `single_file`).

    Raises FileNotFoundError naming `what` when the path does not exist, or when nothing was given
    outside Colab (there is no upload dialog to fall back on).
    """
    if path:
        mount_drive(path)
        if not (os.path.exists(path) or glob.glob(path)):
            raise FileNotFoundError(f"{what}: {path} does not exist")
        return path
    if not in_colab():
        raise FileNotFoundError(f"{what}: no path given; set it in the parameters cell (uploads need Colab)")
    from google.colab import files

    print(f"Choose {what} to upload")
    uploaded = files.upload()  # {file name: bytes}
    if not uploaded:
        raise FileNotFoundError(f"{what}: nothing was uploaded")
    os.makedirs(upload_dir, exist_ok=True)
    written = []
    for name, data in uploaded.items():
        target = os.path.join(upload_dir, os.path.basename(name))
        with open(target, "wb") as f:
            f.write(data)
        written.append(target)
        if os.path.exists(name) and os.path.abspath(name) != os.path.abspath(target):
            os.remove(name)  # files.upload also leaves a copy in the working directory
    return written[0] if single_file else upload_dir


# ----------------------------------------------------------------------------- pictures

def as_image(item) -> Image.Image:
    """A PIL RGB image from a path, a PIL image or a `[H, W, 3]` / `[H, W]` uint8 array."""
    if isinstance(item, Image.Image):
        return item.convert("RGB")
    if isinstance(item, (str, os.PathLike)):
        with Image.open(item) as im:
            return im.convert("RGB")
    return Image.fromarray(np.asarray(item, np.uint8)).convert("RGB")


def side_by_side(items: Sequence, *, height: int | None = None, gap: int = 4,
                 labels: Sequence[str] | None = None) -> Image.Image:
    """Images in one row on white, each scaled to `height` (default: the tallest), labelled if given."""
    images = [as_image(i) for i in items]
    if not images:
        raise ValueError("side_by_side needs at least one image")
    height = height or max(im.height for im in images)
    images = [im if im.height == height else
              im.resize((max(1, round(im.width * height / im.height)), height), Image.Resampling.LANCZOS)
              for im in images]
    top = 14 if labels else 0
    canvas = Image.new("RGB", (sum(im.width for im in images) + gap * (len(images) - 1), height + top), "white")
    draw, font, x = ImageDraw.Draw(canvas), ImageFont.load_default(), 0
    for k, im in enumerate(images):
        canvas.paste(im, (x, top))
        if labels and k < len(labels):
            draw.text((x + 2, 1), str(labels[k]), fill=(0, 0, 0), font=font)
        x += im.width + gap
    return canvas


def stack_rows(rows: Sequence[Image.Image], *, gap: int = 4) -> Image.Image:
    """Images one above the other on white (rows of `side_by_side`, say)."""
    rows = [as_image(r) for r in rows]
    size = (max(r.width for r in rows), sum(r.height for r in rows) + gap * (len(rows) - 1))
    canvas = Image.new("RGB", size, "white")
    y = 0
    for r in rows:
        canvas.paste(r, (0, y))
        y += r.height + gap
    return canvas


def show(item, *, max_width: int = 1200) -> None:
    """Displays an image (path, PIL image or array) inline when running under IPython, shrunk to
    `max_width` if wider. Returns nothing, so a `show(...)` ending a cell is not displayed twice."""
    image = as_image(item)
    if image.width > max_width:
        image = image.resize((max_width, max(1, round(image.height * max_width / image.width))),
                             Image.Resampling.LANCZOS)
    if "IPython" in sys.modules:
        from IPython import get_ipython
        from IPython.display import display

        if get_ipython() is not None:
            display(image)


def image_files(folder: str, limit: int | None = None) -> list[str]:
    """The image files directly in `folder`, sorted by name (at most `limit`)."""
    from scenimefy_jax.data.image_files import find_inputs

    paths, _ = find_inputs(folder)
    return paths[:limit] if limit else paths


def latest(pattern: str) -> str:
    """The last path (in name order) matching a glob, e.g. the newest `images/grid_*.png` of a run."""
    paths = sorted(glob.glob(pattern))
    if not paths:
        raise FileNotFoundError(f"nothing matches {pattern}")
    return paths[-1]


def read_metrics(path: str) -> list[dict]:
    """The records of a run's `metrics.jsonl` (one JSON object per report, each with its `step`)."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def loss_curves(records: str | Iterable[Mapping], keys: Sequence[str], *, columns: int = 3,
                panel: tuple[int, int] = (260, 150)) -> Image.Image:
    """One small line chart per metric in `keys` (each on its own scale) against `step`, drawn with PIL.

    `records` is a `metrics.jsonl` path or its records; records without a key are skipped for it.
    """
    if isinstance(records, (str, os.PathLike)):
        records = read_metrics(records)
    records = list(records)
    keys = [k for k in keys if any(k in r for r in records)]
    if not keys:
        raise ValueError("none of the keys appears in the records")
    width, height = panel
    rows = math.ceil(len(keys) / columns)
    canvas = Image.new("RGB", (width * min(columns, len(keys)), height * rows), "white")
    draw, font = ImageDraw.Draw(canvas), ImageFont.load_default()
    left, right, top, bottom = 8, 8, 16, 16
    for k, key in enumerate(keys):
        points = [(r["step"], float(r[key])) for r in records if key in r and np.isfinite(float(r[key]))]
        x0, y0 = (k % columns) * width, (k // columns) * height
        draw.rectangle([x0 + left, y0 + top, x0 + width - right, y0 + height - bottom], outline=(200, 200, 200))
        if points:
            steps, values = np.array([p[0] for p in points], float), np.array([p[1] for p in points], float)
            s_lo, s_hi = steps.min(), steps.max() if steps.max() > steps.min() else steps.min() + 1
            v_lo, v_hi = values.min(), values.max() if values.max() > values.min() else values.min() + 1e-9
            xy = [(x0 + left + (s - s_lo) / (s_hi - s_lo) * (width - left - right),
                   y0 + height - bottom - (v - v_lo) / (v_hi - v_lo) * (height - top - bottom))
                  for s, v in zip(steps, values)]
            if len(xy) > 1:
                draw.line(xy, fill=(30, 90, 200), width=2)
            for x, y in xy:
                draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=(30, 90, 200))
            caption = f"{values.min():.4g} .. {values.max():.4g}, steps {int(s_lo)}-{int(steps.max())}"
            draw.text((x0 + left, y0 + height - bottom + 2), caption, fill=(90, 90, 90), font=font)
        draw.text((x0 + left, y0 + 2), key, fill=(0, 0, 0), font=font)
    return canvas


def tensorboard(logdir: str) -> bool:
    """TensorBoard inline (Colab and Jupyter, with the `tensorboard` package); else prints the command.
    True when the inline board was started."""
    ipython = None
    if "IPython" in sys.modules:  # imported by every kernel; not a dependency of the package
        from IPython import get_ipython

        ipython = get_ipython()
    installed = importlib.util.find_spec("tensorboard") is not None and (in_colab() or shutil.which("tensorboard"))
    if ipython is None or not installed:
        print(f"TensorBoard: pip install tensorboard && tensorboard --logdir {logdir}")
        return False
    ipython.run_line_magic("load_ext", "tensorboard")
    ipython.run_line_magic("tensorboard", f"--logdir {logdir}")
    return True

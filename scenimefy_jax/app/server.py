"""The app job: a local page where a photo is dropped and its anime translation shown beside it (docs/app.md).

    python -m scenimefy_jax.main --config=configs/app.py --config.checkpoint=models/shinkai --config.port=8000
    python -m scenimefy_jax.main --config=configs/app.py:demo      # a small random translator, no downloads

Built on the standard library's `http.server` (docs/app.md says why not Gradio or FastAPI). Three routes:

    GET  /           the page (static/index.html): file input and drop zone, photo | anime, download link
    GET  /health     JSON: the model's architecture, dtype and max_side
    POST /translate  body: the image file's bytes (any format Pillow reads) -> image/png, the translation;
                     a non-image, corrupt, empty, too small or too large upload -> 4xx and {"error": "..."}

The translator is loaded once, before the first request; each request runs `Translator.preprocess` and
`translate_prepared` (the translate job's processing: max_side shrink, sides rounded to multiples of 4),
so XLA compiles once per distinct rounded size and reuses it. Requests are served by threads; the
translations themselves run one at a time (a lock), which is what a CPU or one accelerator can do anyway.
A failing request is answered with a message and logged; it never stops the server.
"""
from __future__ import annotations

import errno
import http.server
import importlib.resources
import io
import json
import os
import socket
import socketserver
import tempfile
import threading
import time
import urllib.parse

import numpy as np
from absl import logging
from PIL import Image

from scenimefy_jax.data import images as image_ops
from scenimefy_jax.data.image_files import ConfigError

MAX_UPLOAD_BYTES = 64 * 2**20
"""Uploads above this are refused (413) before being read; a 64 MB file is far beyond any photo."""

RANDOM_CHECKPOINT = "random"
"""`--config.checkpoint=random`: the demo's small random translator (ngf 8, 2 blocks; see configs/app.py:demo)."""


class UploadError(Exception):
    """A request the service refuses; `status` is the HTTP status, the message is shown on the page."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class TranslationService:
    """Uploaded bytes -> PNG bytes of the translation, with the `Translator`'s processing. Thread-safe."""

    def __init__(self, translator):
        self.translator = translator
        self._lock = threading.Lock()

    def describe(self) -> dict:
        t = self.translator
        return {"architecture": dict(t.architecture), "dtype": t.dtype, "max_side": t.max_side or 0}

    def decode(self, data: bytes, name: str) -> np.ndarray:
        """The upload as `[H, W, 3] uint8`, read by `images.load_image` (EXIF orientation, 16-bit, palettes
        and alpha handled as in the translate job); raises `UploadError` with a message naming `name`."""
        if not data:
            raise UploadError(400, f"{name}: the upload is empty")
        # load_image reads paths; a temporary file keeps its decoding (and its checks) in one place.
        fd, tmp = tempfile.mkstemp(prefix="scenimefy-upload-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            return image_ops.load_image(tmp)
        except image_ops.ImageReadError as e:
            cause = e.__cause__
            if isinstance(cause, Image.UnidentifiedImageError):
                raise UploadError(415, f"{name} is not an image file that can be read "
                                       "(JPEG, PNG, WebP, BMP, TIFF, ... are)") from None
            if isinstance(cause, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
                raise UploadError(413, f"{name} has too many pixels to translate ({cause})") from None
            detail = f"{type(cause).__name__}: {cause}" if cause else str(e)
            raise UploadError(422, f"{name} could not be decoded; the file may be truncated or corrupt "
                                   f"({detail.replace(tmp, name)})") from None
        finally:
            os.remove(tmp)

    def translate(self, data: bytes, name: str = "upload") -> tuple[bytes, dict]:
        """Returns `(png, info)`: the translation as PNG and `{"width", "height", "seconds"}`."""
        image = self.decode(data, name)
        with self._lock:
            start = time.perf_counter()
            try:
                prepared = self.translator.preprocess(image, name)
            except ValueError as e:  # too small to translate (each side must round to >= 8)
                raise UploadError(400, str(e)) from None
            anime = self.translator.translate_prepared([prepared])[0]
            seconds = time.perf_counter() - start
        buffer = io.BytesIO()
        Image.fromarray(anime).save(buffer, format="PNG")
        return buffer.getvalue(), {"width": anime.shape[1], "height": anime.shape[0], "seconds": seconds}


def _page() -> bytes:
    return importlib.resources.files("scenimefy_jax.app").joinpath("static", "index.html").read_bytes()


class _Handler(http.server.BaseHTTPRequestHandler):
    service: TranslationService  # set on the subclass `make_server` builds
    server_version = "scenimefy-app"

    def log_message(self, format, *args):  # noqa: A002 (http.server's signature)
        logging.info("%s %s", self.address_string(), format % args)

    def _send(self, status: int, body: bytes, content_type: str, headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_json(self, status: int, record: dict) -> None:
        self._send(status, json.dumps(record).encode(), "application/json")

    def do_GET(self):  # noqa: N802 (http.server's naming)
        path = urllib.parse.urlsplit(self.path).path
        if path in ("/", "/index.html"):
            self._send(200, _page(), "text/html; charset=utf-8")
        elif path == "/health":
            self._send_json(200, {"status": "ok", **self.service.describe()})
        else:
            self._send_json(404, {"error": f"no page {path}; the app is at /"})

    do_HEAD = do_GET

    def do_POST(self):  # noqa: N802
        path = urllib.parse.urlsplit(self.path).path
        if path != "/translate":
            self._send_json(404, {"error": f"no endpoint {path}; POST the image to /translate"})
            return
        name = urllib.parse.unquote(self.headers.get("X-Filename", "")).strip()[:200] or "the upload"
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self._send_json(411, {"error": "the request needs a Content-Length"})
            return
        if length > MAX_UPLOAD_BYTES:
            # Read and drop the body (up to a bound): a browser that is still sending when the
            # connection closes reports a network error instead of this message.
            remaining = min(length, 16 * MAX_UPLOAD_BYTES)
            while remaining > 0:
                chunk = self.rfile.read(min(2**20, remaining))
                if not chunk:
                    break
                remaining -= len(chunk)
            self.close_connection = True
            self._send_json(413, {"error": f"{name} is {length / 2**20:.1f} MB; uploads up to "
                                           f"{MAX_UPLOAD_BYTES / 2**20:.0f} MB are accepted"})
            return
        data = self.rfile.read(length)
        if self.headers.get("Content-Type", "").startswith("multipart/form-data"):
            self._send_json(415, {"error": "send the image file's bytes as the request body "
                                           "(curl --data-binary @photo.jpg), not as a form"})
            return
        try:
            png, info = self.service.translate(data, name)
        except UploadError as e:
            logging.warning("refused %s: %s", name, e)
            self._send_json(e.status, {"error": str(e)})
            return
        except Exception as e:  # noqa: BLE001 -- one bad request must not stop the server
            logging.exception("translating %s failed", name)
            self._send_json(500, {"error": f"translating {name} failed ({type(e).__name__}: {e}); "
                                           "the server log has the details"})
            return
        logging.info("translated %s to %dx%d in %.2f s", name, info["width"], info["height"], info["seconds"])
        self._send(200, png, "image/png", {"X-Image-Size": f"{info['width']}x{info['height']}",
                                           "X-Translate-Seconds": f"{info['seconds']:.3f}"})


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def server_bind(self):
        # HTTPServer.server_bind also looks up the host's FQDN, which can stall without DNS.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]


def make_server(service: TranslationService, host: str = "127.0.0.1", port: int = 0) -> http.server.HTTPServer:
    """Binds `host:port` (0: a free port; the chosen one is `server.server_port`); `serve_forever()` serves.
    Raises OSError when the address cannot be bound."""
    handler = type("Handler", (_Handler,), {"service": service})
    server_class = type("Server", (_Server,), {"address_family": socket.AF_INET6 if ":" in host else socket.AF_INET})
    return server_class((host, port), handler)


def url_of(server: http.server.HTTPServer) -> str:
    host, port = server.server_address[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def _validate(config) -> None:
    if not config.checkpoint:
        raise ConfigError("--config.checkpoint is required: an official *_net_G.pth, a directory written by "
                          "tools/convert_checkpoint.py, or 'random' (configs/app.py:demo)")
    if config.checkpoint != RANDOM_CHECKPOINT and not os.path.exists(config.checkpoint):
        raise ConfigError(f"--config.checkpoint={config.checkpoint!r}: no such file or directory")
    if config.dtype not in ("float32", "bfloat16"):
        raise ConfigError(f"--config.dtype must be 'float32' or 'bfloat16', got {config.dtype!r}")
    if config.max_side < 0:
        raise ConfigError(f"--config.max_side must be >= 0 (0: off), got {config.max_side}")
    if not 0 <= config.port <= 65535:
        raise ConfigError(f"--config.port must be in 0..65535 (0: any free port), got {config.port}")
    if not config.host:
        raise ConfigError("--config.host is required, e.g. 127.0.0.1 (this machine only) or 0.0.0.0 (all interfaces)")


def _bind(config) -> http.server.HTTPServer:
    # The page is only bound to a real service once the translator is loaded (see `run`).
    try:
        return make_server(None, config.host, config.port)
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise ConfigError(f"--config.port={config.port}: {config.host}:{config.port} is already in use; "
                              "choose another port (0: any free one)") from None
        if e.errno == errno.EACCES:
            raise ConfigError(f"--config.port={config.port}: permission denied on {config.host} "
                              "(ports below 1024 need privileges)") from None
        raise ConfigError(f"--config.host={config.host!r}: cannot listen on {config.host}:{config.port} "
                          f"({e.strerror or e})") from None


def load_translator(config):
    """The config's `Translator` (batch size 1: one upload at a time); raises ConfigError naming the checkpoint."""
    from scenimefy_jax.convert.torch_checkpoint import CheckpointError
    from scenimefy_jax.inference.translator import Translator

    kwargs = {"dtype": config.dtype, "batch_size": 1, "max_side": config.max_side or None}
    if config.checkpoint == RANDOM_CHECKPOINT:
        from scenimefy_jax.evaluation.job import random_translator_params

        logging.warning("--config.checkpoint=random: a small random translator (demo); its outputs are noise")
        return Translator(random_translator_params(), {"ngf": 8, "n_blocks": 2}, **kwargs)
    try:
        return Translator.from_checkpoint(config.checkpoint, **kwargs)
    except (CheckpointError, ValueError, OSError) as e:  # unreadable, another kind, another architecture
        raise ConfigError(f"--config.checkpoint={config.checkpoint!r}: cannot be loaded as a translator: {e}") from e


def run(config) -> int:
    _validate(config)
    server = _bind(config)  # before the (slow) load, so a port in use is reported at once
    try:
        service = TranslationService(load_translator(config))
        server.RequestHandlerClass.service = service
        logging.info("serving %s on %s (Ctrl-C stops)", config.checkpoint, url_of(server))
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            logging.info("stopped")
    finally:
        server.server_close()
    return 0

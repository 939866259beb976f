"""The app job (scenimefy_jax/app, docs/app.md): HTTP tests against a server in a thread, the command line, and
a real headless Chromium driven by Selenium through the page's file input.

The expected sizes are worked by hand from the translate job's rules (README "Processing"): a photo whose
longer side exceeds max_side is first shrunk to it (aspect kept, Python `round`), then each side is rounded
to a multiple of 4 with Python's `round`, which rounds halves to even: 74x45 -> 18.5*4, 11.25*4 -> 72x44,
and 250x170 -> 62.5*4, 42.5*4 -> 248x168 (a half-up rounding would give 76 and 252).
"""
import base64
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import numpy as np
import pytest
from PIL import Image

from configs import app as app_config
from scenimefy_jax import main as entry
from scenimefy_jax import model_io
from scenimefy_jax.app import server as app_server
from scenimefy_jax.data import demo
from scenimefy_jax.evaluation.job import random_translator_params
from scenimefy_jax.inference import Translator

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def noise_photo(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def bicubic(image: np.ndarray, width: int, height: int) -> np.ndarray:
    return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BICUBIC))


def post(url: str, data: bytes, name: str | None = None, content_type: str = "application/octet-stream"):
    """POST `data` as the body; returns `(status, headers, body)` for 2xx and error statuses alike."""
    headers = {"Content-Type": content_type}
    if name is not None:
        headers["X-Filename"] = urllib.parse.quote(name)
    request = urllib.request.Request(url, data=data, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def get(url: str):
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


@pytest.fixture(scope="module")
def translator():
    """The demo's translator (configs/app.py:demo): ngf 8, 2 blocks, random_translator_params(seed 0)."""
    return Translator(random_translator_params(), {"ngf": 8, "n_blocks": 2}, batch_size=1)


@pytest.fixture(scope="module")
def served(translator):
    """`(url, service)`: the app on a free port, served by a thread of this process."""
    service = app_server.TranslationService(translator)
    server = app_server.make_server(service, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield app_server.url_of(server), service
    server.shutdown()
    server.server_close()


# -- HTTP, server in a thread ----------------------------------------------------------------------

def test_a_png_upload_returns_its_translation_at_the_rounded_size(served, translator):
    url, _ = served
    photo = noise_photo(45, 74)
    status, headers, body = post(url + "translate", png_bytes(photo), "street.png")
    assert status == 200, body[:500]
    assert headers["Content-Type"] == "image/png"
    anime = np.asarray(Image.open(io.BytesIO(body)))
    assert anime.shape == (44, 72, 3)
    assert headers["X-Image-Size"] == "72x44"
    # Exactly the Translator's output (the app adds no processing of its own) ...
    np.testing.assert_array_equal(anime, translator(photo))
    # ... which is not the photo.
    assert np.abs(anime.astype(int) - bicubic(photo, 72, 44).astype(int)).mean() > 10


def test_a_jpeg_is_read_as_the_translate_job_reads_it(served):
    """EXIF orientation 6 (rotate 90 degrees clockwise) is applied: a stored 40x24 JPEG is a 24x40 photo."""
    url, _ = served
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    Image.fromarray(noise_photo(24, 40, seed=1)).save(buffer, format="JPEG", quality=90, exif=exif)
    status, _, body = post(url + "translate", buffer.getvalue(), "phone.jpg")
    assert status == 200, body[:500]
    assert Image.open(io.BytesIO(body)).size == (24, 40)


def test_max_side_shrinks_first(translator):
    """100x60 with max_side 32: shrunk to 32x19 (round(19.2)), then 19 -> round(4.75)*4 = 20."""
    shrinking = Translator(translator.params, translator.architecture, batch_size=1, max_side=32)
    png, info = app_server.TranslationService(shrinking).translate(png_bytes(noise_photo(60, 100)), "wide.png")
    assert Image.open(io.BytesIO(png)).size == (32, 20)
    assert (info["width"], info["height"]) == (32, 20)


def _error(body: bytes) -> str:
    return json.loads(body)["error"]


def test_a_text_file_gets_a_clear_message_and_the_server_keeps_serving(served):
    url, _ = served
    status, headers, body = post(url + "translate", b"just some notes\n", "notes.txt", "text/plain")
    assert status == 415
    assert headers["Content-Type"] == "application/json"
    message = _error(body)
    assert "notes.txt" in message and "not an image" in message, message
    assert "Traceback" not in message
    assert get(url + "health")[0] == 200
    status, _, body = post(url + "translate", png_bytes(noise_photo(45, 74)), "again.png")
    assert status == 200 and Image.open(io.BytesIO(body)).size == (72, 44)


@pytest.mark.parametrize("data, status, words", [
    (png_bytes(noise_photo(45, 74))[:120], 422, ["broken.png", "truncated or corrupt"]),
    (b"", 400, ["broken.png", "empty"]),
    (png_bytes(noise_photo(4, 4)), 400, ["broken.png", "too small"]),
], ids=["truncated-png", "empty", "too-small"])
def test_unusable_images_get_a_message_naming_the_file(served, data, status, words):
    got, _, body = post(served[0] + "translate", data, "broken.png")
    assert got == status, body[:500]
    message = _error(body)
    assert all(w in message for w in words), message


def test_an_oversized_upload_is_refused_with_a_message(served, monkeypatch):
    monkeypatch.setattr(app_server, "MAX_UPLOAD_BYTES", 2**20)
    status, _, body = post(served[0] + "translate", b"\0" * (3 * 2**20), "huge.tif")
    assert status == 413 and "huge.tif is 3.0 MB; uploads up to 1 MB" in _error(body)
    monkeypatch.undo()
    assert post(served[0] + "translate", png_bytes(noise_photo(8, 8)), "small.png")[0] == 200


def test_a_form_upload_is_explained(served):
    body = b"--x\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a.png\"\r\n\r\n" + png_bytes(noise_photo(8, 8)) + b"\r\n--x--\r\n"
    status, _, answer = post(served[0] + "translate", body, "a.png", "multipart/form-data; boundary=x")
    assert status == 415 and "--data-binary" in _error(answer)


def test_an_internal_failure_is_a_500_with_a_message_and_not_the_end(served, monkeypatch):
    url, service = served

    def fail(images):
        raise RuntimeError("out of device memory")

    monkeypatch.setattr(service.translator, "translate_prepared", fail)
    status, _, body = post(url + "translate", png_bytes(noise_photo(8, 8)), "big.png")
    assert status == 500 and "out of device memory" in _error(body)
    monkeypatch.undo()
    assert post(url + "translate", png_bytes(noise_photo(8, 8)), "big.png")[0] == 200


def test_the_page_and_the_other_routes(served):
    url, _ = served
    status, headers, page = get(url)
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    for element in (b'type="file"', b'id="photo"', b'id="anime"', b'id="download"', b'id="error"'):
        assert element in page
    status, _, body = get(url + "health")
    assert status == 200 and json.loads(body) == {"status": "ok", "architecture": {"ngf": 8, "n_blocks": 2},
                                                  "dtype": "float32", "max_side": 0}
    assert get(url + "nothing")[0] == 404
    assert post(url + "elsewhere", b"x")[0] == 404


# -- the job: start-up errors ----------------------------------------------------------------------

def _config(**overrides):
    config = app_config.get_config()
    for key, value in overrides.items():
        setattr(config, key, value)
    return config


@pytest.fixture(scope="module")
def wrong_kind_checkpoint(tmp_path_factory):
    return model_io.save_model(tmp_path_factory.mktemp("models") / "patchgan", kind="patchgan",
                               params={"w": np.zeros((2,), np.float32)}, architecture={})


def _listening_socket():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    return sock


@pytest.mark.parametrize("overrides, words", [
    ({}, ["--config.checkpoint is required"]),
    ({"checkpoint": "/no/such/Shinkai_net_G.pth"}, ["--config.checkpoint='/no/such/Shinkai_net_G.pth'", "no such file"]),
    ({"checkpoint": "WRONG_KIND"}, ["--config.checkpoint=", "cannot be loaded as a translator", "'patchgan'"]),
    ({"checkpoint": "random", "port": 70000}, ["--config.port must be in 0..65535"]),
    ({"checkpoint": "random", "port": "IN_USE"}, ["--config.port=", "already in use"]),
    ({"checkpoint": "random", "host": "no.such.host.invalid"}, ["--config.host='no.such.host.invalid'"]),
    ({"checkpoint": "random", "dtype": "float16"}, ["--config.dtype"]),
    ({"checkpoint": "random", "max_side": -1}, ["--config.max_side"]),
], ids=["no-checkpoint", "missing-checkpoint", "wrong-kind", "bad-port", "port-in-use", "bad-host", "dtype", "max-side"])
def test_start_up_errors_are_one_line_naming_the_option(overrides, words, wrong_kind_checkpoint, caplog):
    sock = None
    if overrides.get("checkpoint") == "WRONG_KIND":
        overrides = dict(overrides, checkpoint=wrong_kind_checkpoint)
    if overrides.get("port") == "IN_USE":
        sock = _listening_socket()
        overrides = dict(overrides, port=sock.getsockname()[1])
        words = [w.replace("--config.port=", f"--config.port={overrides['port']}") for w in words]
    try:
        assert entry.run_job(_config(**overrides)) == 2
    finally:
        if sock is not None:
            sock.close()
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "\n" not in errors[0].getMessage(), caplog.text
    assert all(w in errors[0].getMessage() for w in words), errors[0].getMessage()


def test_unknown_variant_is_refused():
    with pytest.raises(ValueError, match="known: demo"):
        app_config.get_config("tiny")


# -- the command line ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def demo_app(tmp_path_factory):
    """`python -m scenimefy_jax.main --config=configs/app.py:demo --config.port=0`, as a user starts it;
    yields its URL (read from the log) and stops it at the end."""
    log_path = tmp_path_factory.mktemp("app") / "server.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "scenimefy_jax.main", "--config=configs/app.py:demo", "--config.port=0"],
            cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu"), stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline, url = time.monotonic() + 300, None
        while url is None:
            text = log_path.read_text()
            if " on http://" in text:
                url = text.split(" on http://", 1)[1].split()[0]
            elif proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the app did not start (exit status {proc.poll()}):\n{text[-3000:]}")
            else:
                time.sleep(0.2)
        yield "http://" + url, proc, log_path
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_command_line_demo_serves_and_survives_a_bad_upload(demo_app):
    url, proc, log_path = demo_app
    assert post(url + "translate", b"%PDF-1.4 not a photo", "paper.pdf")[0] == 415
    status, _, body = post(url + "translate", png_bytes(noise_photo(45, 74)), "street.png")
    assert status == 200 and Image.open(io.BytesIO(body)).size == (72, 44)
    assert proc.poll() is None
    log = log_path.read_text()
    assert "Traceback" not in log and "refused paper.pdf" in log


# -- a real browser ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser():
    """Headless Chromium through chromedriver (Debian: apt-get install chromium chromium-driver). Under
    SCENIMEFY_CI=1 a skip here fails the run (tests/ci_plugin.py)."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium (the test extra) is not installed")
    from selenium.webdriver.chrome.service import Service

    chromium = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
    chromedriver = shutil.which("chromedriver")
    if chromium is None or chromedriver is None:
        pytest.skip("no chromium/chromedriver on PATH: apt-get install -y chromium chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1000,800", "--hide-scrollbars"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)
    driver.set_script_timeout(60)
    yield driver
    driver.quit()


def _upload_in_page(driver, path) -> str:
    """Picks `path` in the page's file input; waits for the page's outcome ("done" or "error")."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.execute_script("document.body.dataset.state = 'idle'")
    driver.find_element(By.ID, "file").send_keys(str(path))
    return WebDriverWait(driver, 180).until(
        lambda d: d.execute_script("const s = document.body.dataset.state; return s === 'done' || s === 'error' ? s : null"))


def test_browser_uploads_a_photo_and_shows_the_anime_beside_it(demo_app, browser, translator, tmp_path):
    from selenium.webdriver.common.by import By

    url = demo_app[0]
    photo = demo.render_scene(seed=3, index=2, size=256)[0][43:213, :250]  # a 250x170 landscape
    photo_path = tmp_path / "landscape.png"
    Image.fromarray(photo).save(photo_path)
    browser.get(url)
    assert _upload_in_page(browser, photo_path) == "done", browser.find_element(By.ID, "error").text

    anime_img = browser.find_element(By.ID, "anime")
    assert browser.execute_script("return [arguments[0].naturalWidth, arguments[0].naturalHeight]", anime_img) == [248, 168]
    assert browser.execute_script("return [arguments[0].naturalWidth, arguments[0].naturalHeight]",
                                  browser.find_element(By.ID, "photo")) == [250, 170]
    # The bytes the page shows (and offers for download), read back from the page's blob URL.
    data_url = browser.execute_async_script("""
        const done = arguments[arguments.length - 1];
        fetch(arguments[0].src).then(r => r.blob()).then(b => {
            const reader = new FileReader(); reader.onload = () => done(reader.result); reader.readAsDataURL(b); });
        """, anime_img)
    anime = np.asarray(Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1]))).convert("RGB"))
    assert anime.shape == (168, 248, 3)
    np.testing.assert_array_equal(anime, translator(photo))  # the demo's translator, the same weights
    assert np.abs(anime.astype(int) - bicubic(photo, 248, 168).astype(int)).mean() > 10
    download = browser.find_element(By.ID, "download")
    assert download.is_displayed()
    assert download.get_attribute("href") == anime_img.get_attribute("src")
    assert download.get_attribute("download") == "landscape_anime.png"
    assert not browser.find_element(By.ID, "error").is_displayed()

    screenshot = tmp_path / "app.png"
    assert browser.save_screenshot(str(screenshot))
    assert Image.open(screenshot).size[0] > 0
    if os.environ.get("SCENIMEFY_APP_SCREENSHOT"):  # docs/images/app.png was taken this way (docs/app.md)
        # A 256-colour palette keeps the committed PNG small.
        Image.open(screenshot).convert("RGB").quantize(256).save(os.environ["SCENIMEFY_APP_SCREENSHOT"], optimize=True)

    # A non-image: a message on the page, no stack trace, and the server still translates afterwards.
    notes = tmp_path / "notes.txt"
    notes.write_text("not a photo\n")
    assert _upload_in_page(browser, notes) == "error"
    error = browser.find_element(By.ID, "error")
    assert error.is_displayed() and "notes.txt" in error.text and "not an image" in error.text, error.text
    assert "Traceback" not in browser.page_source
    assert not browser.find_element(By.ID, "result").is_displayed()
    assert _upload_in_page(browser, photo_path) == "done"
    assert demo_app[1].poll() is None

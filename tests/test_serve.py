"""`mlp-backend serve`: MNIST-style preprocessing, the HTTP server, and the page in a real browser.

The browser tests (names contain ``browser``) drive Debian's chromium through Playwright;
they skip with the reason where either is missing, unless MLP_BACKEND_REQUIRE_BROWSER=1
(``.ci/browser`` sets it) turns a missing browser into a failure.
"""
import base64
import http.client
import io
import json
import os
import shutil
import socket
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from mlp_backend import MLP

from mlp_backend.apps import cli
from mlp_backend.training.checkpoint import load_checkpoint, save_checkpoint
from mlp_backend.data.images import mnist_normalize
from mlp_backend.apps.serve import MAX_BODY, make_server, static_files

CHROMIUM = os.environ.get("MLP_BACKEND_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]


# ----- fixtures ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mnist():
    """Real MNIST from the cache (fetched only where network tests are allowed)."""
    from mlp_backend.data import DataError, load_dataset
    try:
        return load_dataset("mnist", log=None, download=os.environ.get("MLP_BACKEND_TEST_NETWORK") == "1")
    except DataError as exc:
        pytest.skip(f"real MNIST is not cached here ({str(exc).splitlines()[0]}); "
                    "run `mlp-backend data fetch mnist` or set MLP_BACKEND_TEST_NETWORK=1")


@pytest.fixture(scope="module")
def run_dir(mnist, tmp_path_factory):
    """A small model trained on real MNIST in about a second: 784-64-32-10, 1 epoch."""
    from mlp_backend.training.config import resolve_config
    from mlp_backend.training.run import train_run
    out = tmp_path_factory.mktemp("serve-run")
    cfg = resolve_config(hidden=[64, 32], epochs=1, batch_size=128, seed=0)
    train_run(cfg, out, device="cpu", quiet=True)
    return out


@pytest.fixture(scope="module")
def random_model(tmp_path_factory):
    """An untrained 784-16-10 checkpoint with nothing next to it (no history.csv)."""
    d = tmp_path_factory.mktemp("bare")
    model = MLP([784, 16, 10], activations="tanh", device="cpu", seed=0)
    save_checkpoint(d / "model.npz", model)
    (d.parent / "secret.txt").write_text("top secret")
    (d / "secret.txt").write_text("top secret")
    return d / "model.npz"


class Running:
    """A server in a background thread; ``request`` speaks raw HTTP to it."""

    def __init__(self, model_path, **kw):
        self.server = make_server(model_path, port=0, device="cpu", **kw)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def request(self, method, path, body=None, headers=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            r = conn.getresponse()
            return r.status, dict(r.getheaders()), r.read()
        finally:
            conn.close()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def bare_server(random_model):
    s = Running(random_model)
    yield s
    s.close()


def png(a) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.asarray(a, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def drawn_seven(size=280, box=(60, 40, 220, 250)) -> np.ndarray:
    """A '7' drawn as a thick white polyline on black, like the page's pad."""
    im = Image.new("L", (size, size), 0)
    x0, y0, x1, y1 = box
    ImageDraw.Draw(im).line([(x0, y0), (x1, y0), ((x0 + x1) // 2, y1)], fill=255, width=18, joint="curve")
    return np.asarray(im)


# ----- preprocessing ----------------------------------------------------------------------

def test_normalize_box_and_centre_of_mass():
    img = np.zeros((300, 400), np.uint8)
    img[30:230, 300:350] = 255  # a 200x50 bar near the right edge: aspect 4:1
    out = mnist_normalize(img).astype(float)
    rows, cols = np.nonzero(out)
    assert rows.max() - rows.min() + 1 == 20 and cols.max() - cols.min() + 1 == 5  # 20x20 box, aspect kept
    m = out.sum()
    cy, cx = (out.sum(1) * np.arange(28)).sum() / m, (out.sum(0) * np.arange(28)).sum() / m
    assert abs(cy - 14) <= 0.5 and abs(cx - 14) <= 0.5
    # float input in [0, 1] and a PIL image give the same result
    assert np.array_equal(mnist_normalize(img / 255.0), mnist_normalize(img))
    assert np.array_equal(mnist_normalize(Image.fromarray(img)), mnist_normalize(img))


def test_normalize_blank_and_bad_input():
    assert not mnist_normalize(np.zeros((50, 50))).any()
    with pytest.raises(ValueError, match="2-D"):
        mnist_normalize(np.zeros((3, 4, 4)))
    with pytest.raises(ValueError, match="NaN"):
        mnist_normalize(np.full((5, 5), np.nan))


def test_normalize_is_identity_on_mnist_digits(mnist):
    """MNIST digits already are normalised: pasted anywhere in a bigger black image, they come back unchanged."""
    x = mnist.x_test[:300].reshape(-1, 28, 28)
    rng = np.random.default_rng(0)
    for d in x:
        canvas = np.zeros((120, 90), np.uint8)
        oy, ox = rng.integers(0, 120 - 28), rng.integers(0, 90 - 28)
        canvas[oy:oy + 28, ox:ox + 28] = d
        np.testing.assert_array_equal(mnist_normalize(canvas, threshold=0), d)


def test_normalize_undoes_scale_and_shift(mnist, run_dir):
    """Real test digits enlarged 2-8x and drawn off-centre return close to the original and get the
    same prediction; merely resizing the whole canvas (no MNIST normalisation) does not."""
    ckpt = load_checkpoint(run_dir / "model.npz", device="cpu")
    model = ckpt.model
    x = mnist.x_test[:400].reshape(-1, 28, 28)
    rng = np.random.default_rng(1)
    ours, naive, corr = [], [], []
    for d in x:
        n = int(28 * rng.uniform(2, 8))
        big = np.asarray(Image.fromarray(d).resize((n, n), Image.Resampling.BILINEAR))
        canvas = np.zeros((400, 360), np.uint8)
        oy, ox = rng.integers(0, 400 - n), rng.integers(0, 360 - n)
        canvas[oy:oy + n, ox:ox + n] = big
        out = mnist_normalize(canvas)
        ours.append(out.reshape(784))
        naive.append(np.asarray(Image.fromarray(canvas).resize((28, 28), Image.Resampling.LANCZOS)).reshape(784))
        corr.append(np.corrcoef(out.ravel(), d.ravel())[0, 1])
    def predict(rows):
        return np.asarray(model.predict(np.stack(rows).astype(np.float32) / 255))
    truth = predict(list(x.reshape(-1, 784)))
    agree, agree_naive = (predict(ours) == truth).mean(), (predict(naive) == truth).mean()
    print(f"same prediction as the original: {agree:.2%} after mnist_normalize, {agree_naive:.2%} after "
          f"resizing the canvas; median correlation with the original {np.median(corr):.3f}")
    assert np.median(corr) > 0.9, np.median(corr)
    assert agree >= 0.92, agree
    assert agree_naive < agree - 0.3, (agree_naive, agree)


# ----- the server -------------------------------------------------------------------------

def test_page_and_assets_are_packaged():
    files = static_files()
    for name in ("/", "/static/index.html", "/static/app.js", "/static/style.css"):
        assert name in files and files[name][0], name
    html = files["/"][0].decode()
    assert "http://" not in html and "https://" not in html  # nothing from elsewhere: works offline
    for name, (body, _) in files.items():
        assert b"https://" not in body and b"cdn" not in body.lower(), name


def test_serves_page_with_strict_headers(bare_server):
    status, headers, body = bare_server.request("GET", "/")
    assert status == 200 and b"<canvas id=\"pad\"" in body
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    assert headers["X-Content-Type-Options"] == "nosniff"
    status, headers, body = bare_server.request("GET", "/static/app.js")
    assert status == 200 and headers["Content-Type"].startswith("text/javascript")


@pytest.mark.parametrize("path", [
    "/model.npz", "/secret.txt", "/static/../model.npz", "/static/../secret.txt", "/../secret.txt",
    "/static/%2e%2e/secret.txt", "/static/..%2f..%2fsecret.txt", "/static/%2e%2e%2f%2e%2e%2fsecret.txt",
    "//etc/passwd", "/static//etc/passwd", "/static/../../../../etc/passwd", "/etc/passwd",
    "/static/", "/static/index.html/..", "/static\\..\\secret.txt", "/static/app.js%00.html",
])
def test_no_path_traversal(bare_server, path):
    status, _, body = bare_server.request("GET", path)
    assert status == 404, (path, status)
    assert b"top secret" not in body and b"root:" not in body and b"PK" not in body[:2]
    assert json.loads(body)["error"].startswith("no such page")


def test_predict_answers_with_the_image_and_the_models_output(bare_server, random_model):
    img = drawn_seven()
    status, headers, body = bare_server.request("POST", "/api/predict", png(img), {"Content-Type": "image/png"})
    assert status == 200, body
    a = json.loads(body)
    pixels = np.array(a["pixels"], np.uint8)
    np.testing.assert_array_equal(pixels, mnist_normalize(img).reshape(784))
    model = load_checkpoint(random_model, device="cpu").model
    cache = model.forward(pixels[None].astype(np.float32) / 255)
    np.testing.assert_allclose(a["probabilities"], cache.output[0], rtol=1e-5, atol=1e-7)
    assert a["index"] == int(np.argmax(cache.output[0])) and a["label"] == str(a["index"]) and a["ink"]
    assert [len(h["values"]) for h in a["hidden"]] == [16] and a["hidden"][0]["activation"] == "tanh"
    np.testing.assert_allclose(a["hidden"][0]["values"], cache.a[1][0], atol=1e-5)


def _predict_json(model_path, image_path, *options):
    """`mlp-backend predict MODEL IMAGE --json`, run through cli.main: its one JSON record."""
    import contextlib
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(["predict", str(model_path), str(image_path), "--json", *options]) == 0
    (line,) = out.getvalue().splitlines()
    return json.loads(line)


def _served(server, body: bytes) -> dict:
    status, _, answer = server.request("POST", "/api/predict", body, {"Content-Type": "image/png"})
    assert status == 200, answer
    return json.loads(answer)


def _same_answer(rec, served):
    assert str(rec["label"]) == served["label"]
    assert list(rec["probabilities"]) == [str(c) for c in range(10)]
    assert list(rec["probabilities"].values()) == served["probabilities"]  # exactly: one preprocessing, one model


def test_predict_and_serve_give_one_answer_for_one_image(bare_server, random_model, tmp_path):
    """`mlp-backend predict FILE` and POSTing FILE's bytes to /api/predict preprocess alike (one
    function, image_row) and so give the same class and the same probabilities; a dark digit on
    light paper is inverted by predict (its border is light) and answered as the light-on-dark
    one, while `--no-invert` answers exactly what serve does with those bytes."""
    light_on_dark, dark_on_light = tmp_path / "seven.png", tmp_path / "seven-on-paper.png"
    light_on_dark.write_bytes(png(drawn_seven()))
    dark_on_light.write_bytes(png(255 - drawn_seven()))
    served = _served(bare_server, light_on_dark.read_bytes())
    _same_answer(_predict_json(random_model, light_on_dark), served)
    _same_answer(_predict_json(random_model, dark_on_light), served)
    served_paper = _served(bare_server, dark_on_light.read_bytes())
    _same_answer(_predict_json(random_model, dark_on_light, "--no-invert"), served_paper)
    assert served_paper["probabilities"] != served["probabilities"]  # the inversion mattered


def test_predict_and_serve_agree_on_a_real_digit(run_dir, mnist, tmp_path):
    """A real test digit, enlarged and off-centre on a larger canvas, saved as PNG: predict and serve
    give the same answer, and it is the model's answer for the original 28x28 digit."""
    d = mnist.x_test[0].reshape(28, 28)
    canvas = np.zeros((200, 160), np.uint8)
    canvas[30:142, 20:132] = np.asarray(Image.fromarray(d).resize((112, 112), Image.Resampling.BILINEAR))
    f = tmp_path / "digit.png"
    f.write_bytes(png(canvas))
    s = Running(run_dir / "model.npz")
    try:
        served = _served(s, f.read_bytes())
    finally:
        s.close()
    rec = _predict_json(run_dir / "model.npz", f)
    _same_answer(rec, served)
    model = load_checkpoint(run_dir / "model.npz", device="cpu").model
    assert rec["label"] == int(np.asarray(model.predict(d.reshape(1, 784).astype(np.float32) / 255))[0])


def test_blank_drawing_is_no_ink(bare_server):
    status, _, body = bare_server.request("POST", "/api/predict", png(np.zeros((280, 280))))
    assert status == 200 and json.loads(body)["ink"] is False


@pytest.mark.parametrize("body, headers, status, message", [
    (b"not an image", {}, 400, "not an image"),
    (b"\x89PNG\r\n\x1a\n" + b"\0" * 40, {}, 400, "image"),
    (b"", {}, 400, "empty body"),
    (None, {"Content-Length": "abc"}, 400, "Content-Length"),
    (None, {"Content-Length": "-5"}, 400, "Content-Length"),
    (None, {"Content-Length": str(MAX_BODY + 1)}, 413, "at most"),
])
def test_bad_requests_get_a_message_not_a_traceback(bare_server, body, headers, status, message):
    got, hdrs, raw = bare_server.request("POST", "/api/predict", body, headers)
    assert got == status, raw
    assert hdrs["Content-Type"] == "application/json"
    err = json.loads(raw)["error"]
    assert message in err and "Traceback" not in err and "File \"" not in err


def test_huge_image_dimensions_are_refused(bare_server):
    big = png(np.zeros((5000, 4000), np.uint8))  # small file, 20 megapixels
    assert len(big) < MAX_BODY
    status, _, raw = bare_server.request("POST", "/api/predict", big)
    assert status == 413 and "pixels" in json.loads(raw)["error"]


def test_body_limit_does_not_read_the_body(bare_server):
    """A too-large Content-Length is answered 413 at once, without waiting for the body."""
    with socket.create_connection(("127.0.0.1", bare_server.port), timeout=10) as s:
        s.sendall(f"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {10**9}\r\n\r\n".encode())
        reply = s.recv(65536).decode()
    assert reply.startswith("HTTP/1.1 413") and "Connection: close" in reply


def test_missing_length_methods_and_malformed_requests(bare_server):
    with socket.create_connection(("127.0.0.1", bare_server.port), timeout=10) as s:
        s.sendall(b"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert s.recv(65536).startswith(b"HTTP/1.1 411")
    with socket.create_connection(("127.0.0.1", bare_server.port), timeout=10) as s:
        s.sendall(b"GET / extra HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        reply = s.recv(65536)
        assert reply.startswith(b"HTTP/1.") and b" 400 " in reply.split(b"\r\n")[0] and b"Traceback" not in reply
    assert bare_server.request("GET", "/api/predict")[0] == 405
    assert bare_server.request("PUT", "/")[0] == 405
    assert bare_server.request("POST", "/static/app.js", b"x")[0] == 405


def test_other_host_names_are_refused_on_loopback(bare_server):
    """DNS rebinding: a page from evil.example resolving to 127.0.0.1 sends Host: evil.example."""
    status, _, raw = bare_server.request("GET", "/api/run", headers={"Host": "evil.example:80"})
    assert status == 400 and "Host" in json.loads(raw)["error"]
    assert bare_server.request("GET", "/api/run", headers={"Host": f"localhost:{bare_server.port}"})[0] == 200


def test_run_info_says_when_history_is_missing(bare_server):
    status, _, raw = bare_server.request("GET", "/api/run")
    info = json.loads(raw)
    assert status == 200 and info["history"] is None and info["sizes"] == [784, 16, 10]
    assert any("no history.csv" in n for n in info["notes"])


def test_run_info_and_errors_of_a_trained_run(run_dir, mnist):
    s = Running(run_dir / "model.npz")
    try:
        info = json.loads(s.request("GET", "/api/run")[2])
        assert [r["epoch"] for r in info["history"]] == [1] and info["notes"] == []
        assert info["metrics"]["test_accuracy"] > 0.9
        e = json.loads(s.request("GET", "/api/errors")[2])
    finally:
        s.close()
    model = load_checkpoint(run_dir / "model.npz", device="cpu").model
    pred = np.asarray(model.predict(mnist.x_test.astype(np.float32) / 255))
    cm = np.array(e["confusion"])
    assert cm.sum() == 10_000 and np.trace(cm) == (pred == mnist.y_test).sum()
    assert e["accuracy"] == pytest.approx(info["metrics"]["test_accuracy"])
    assert e["n_wrong"] == (pred != mnist.y_test).sum() and len(e["mistakes"]) == min(60, e["n_wrong"])
    for m in e["mistakes"]:
        i = m["index"]
        assert m["true"] == str(mnist.y_test[i]) and m["predicted"] == str(pred[i]) != m["true"]
        assert m["pixels"] == mnist.x_test[i].tolist()


def test_cli_registers_serve_and_reports_errors(capsys, tmp_path):
    args = cli.build_parser().parse_args(["serve", "m.npz", "--port", "8123", "--host", "::1"])
    assert args.func.__name__ == "cmd_serve" and args.port == 8123 and args.device == "cpu"
    assert cli.main(["serve", str(tmp_path / "missing.npz")]) == 1
    assert "no such checkpoint" in capsys.readouterr().err
    assert cli.main(["serve", str(tmp_path / "m.npz"), "--port", "70000"]) == 1
    assert "0..65535" in capsys.readouterr().err


def test_port_in_use_is_a_clear_error(random_model):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        with pytest.raises(OSError, match="pick another --port"):
            make_server(random_model, port=s.getsockname()[1])


# ----- in a real browser ------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser():
    why = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        why = "playwright is not installed (pip install -e '.[serve-test]')"
    if why is None and not Path(CHROMIUM).is_file():
        why = f"no chromium at {CHROMIUM} (apt-get install chromium, or set MLP_BACKEND_CHROMIUM)"
    if why:
        if os.environ.get("MLP_BACKEND_REQUIRE_BROWSER") == "1":
            pytest.fail(why)
        pytest.skip(why)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def draw(page, points, steps=6, release=True):
    """Drag the mouse through ``points`` given in the pad's own 280x280 coordinates."""
    box = page.locator("#pad").bounding_box()
    at = lambda p: (box["x"] + p[0] * box["width"] / 280, box["y"] + p[1] * box["height"] / 280)  # noqa: E731
    page.mouse.move(*at(points[0]))
    page.mouse.down()
    for p in points[1:]:
        page.mouse.move(*at(p), steps=steps)
    if release:
        page.mouse.up()


def settled(page):
    # selectors, not wait_for_function: the page's Content-Security-Policy forbids eval
    page.wait_for_selector("body[data-state=idle][data-answered]", state="attached", timeout=20_000)
    return page.evaluate("window.mlpLast")


def test_browser_draw_a_digit_and_see_the_models_answer(browser, run_dir, mnist, tmp_path):
    s = Running(run_dir / "model.npz")
    model = load_checkpoint(run_dir / "model.npz", device="cpu").model
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: m.type == "error" and errors.append(m.text))
    try:
        page.goto(s.url)
        page.wait_for_selector("body[data-state=idle]", state="attached")
        assert page.locator("#prediction").inner_text() == "–"
        for digit, stroke in (("7", [(60, 50), (215, 50), (175, 120), (120, 240)]),
                              ("1", [(150, 35), (142, 140), (135, 245)])):
            page.click("#clear")
            # the answer appears while the stroke is still being drawn
            draw(page, stroke[:2], release=False)
            early = settled(page)
            assert early["ink"]
            draw(page, stroke[1:])
            a = settled(page)
            shown = page.locator("#prediction").inner_text()
            pixels = np.array(a["pixels"], np.uint8)
            # the 28x28 the server worked on is the MNIST normalisation of what the page's pad shows
            url = page.evaluate("document.getElementById('pad').toDataURL('image/png')")
            pad = np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("L"))
            np.testing.assert_array_equal(pixels, mnist_normalize(pad).reshape(784))
            # the page shows the model's own answer for that image, with its probabilities
            proba = np.asarray(model.predict_proba(pixels[None].astype(np.float32) / 255))[0]
            assert shown == str(int(np.argmax(proba))), (shown, proba)
            assert shown == digit, f"drew a {digit}, the model says {shown} ({proba.round(3)})"
            pcts = [float(t.rstrip("%")) for t in page.locator(".barrow .pct").all_inner_texts()]
            np.testing.assert_allclose(pcts, 100 * proba, atol=0.051)
            assert page.locator(".barrow.top .lbl").inner_text() == digit
            # the 28x28 view shows those pixels
            seen = page.evaluate("Array.from(document.getElementById('seen').getContext('2d')"
                                 ".getImageData(0, 0, 28, 28).data.filter((_, i) => i % 4 === 0))")
            np.testing.assert_array_equal(np.array(seen, np.uint8), pixels)
        assert page.locator("#layers canvas").count() == 2
        page.screenshot(path=str(tmp_path / "draw.png"))
        # the training run: curves, confusion matrix, misclassified digits
        page.click("#tab-run")
        page.wait_for_selector("body[data-errors=shown]", state="attached", timeout=60_000)
        assert page.locator("#chart-loss svg path").count() == 2 and page.locator("#chart-accuracy").count() == 1
        cells = page.locator("#cm-table tr").all_inner_texts()
        cm = np.array([[int(v) for v in row.split()[1:]] for row in cells[1:]])
        pred = np.asarray(model.predict(mnist.x_test.astype(np.float32) / 255))
        y = mnist.y_test
        assert cm.shape == (10, 10) and cm.sum() == 10_000 and np.trace(cm) == (pred == y).sum()
        assert page.locator(".mistake").count() == min(60, int((pred != y).sum()))
        page.screenshot(path=str(tmp_path / "run.png"), full_page=True)
        assert not errors, errors
    finally:
        page.close()
        s.close()



def test_pyproject_ships_every_static_file():
    """Each file of mlp_backend/apps/static matches a package-data pattern, so wheels include it."""
    import fnmatch
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    root = Path(__file__).resolve().parents[1]
    patterns = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["mlp_backend.apps"]
    files = [p.relative_to(root / "mlp_backend" / "apps").as_posix() for p in (root / "mlp_backend" / "apps" / "static").iterdir()]
    assert files and all(any(fnmatch.fnmatch(f, pat) for pat in patterns) for f in files), (files, patterns)
    assert {f"/static/{Path(f).name}" for f in files} <= set(static_files())  # and the server serves each


def test_errors_view_says_when_the_test_set_is_missing(tmp_path):
    model = MLP([784, 8, 10], device="cpu", seed=0)
    save_checkpoint(tmp_path / "m.npz", model, run_config={"dataset": str(tmp_path / "gone.npz")})
    s = Running(tmp_path / "m.npz")
    try:
        status, _, raw = s.request("GET", "/api/errors")
    finally:
        s.close()
    assert status == 200 and "not available here" in json.loads(raw)["error"]


def test_cli_serves_until_ctrl_c(random_model):
    """`mlp-backend serve` prints its address, answers there, and stops cleanly on Ctrl-C."""
    import re
    import signal
    import subprocess
    import sys
    import urllib.request
    code = "import sys; from mlp_backend.apps.cli import main; sys.exit(main(sys.argv[1:]))"
    p = subprocess.Popen([sys.executable, "-c", code, "serve", str(random_model)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env={**os.environ, "MPLBACKEND": "Agg"},
                         # a shell's background jobs ignore SIGINT, and children inherit that: restore it
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        line = p.stdout.readline()
        url = re.search(r"at (http://127\.0\.0\.1:\d+/)$", line.strip()).group(1)
        with urllib.request.urlopen(url + "api/run", timeout=30) as r:
            assert json.loads(r.read())["sizes"] == [784, 16, 10]
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=30)
    finally:
        p.kill()
    assert p.returncode == 0 and "stopped" in out and "Traceback" not in err


def test_a_refused_requests_body_is_never_read_as_a_request(bare_server):
    """The connection closes after an error, so an unread body cannot smuggle a second request."""
    inner = b"GET /static/app.js HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    with socket.create_connection(("127.0.0.1", bare_server.port), timeout=10) as s:
        s.sendall(b"POST /api/run HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n\r\n" % len(inner) + inner)
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 405") and reply.count(b"HTTP/1.1 ") == 1


def test_keep_alive_serves_several_drawings_on_one_connection(bare_server):
    conn = http.client.HTTPConnection("127.0.0.1", bare_server.port, timeout=30)
    try:
        for img in (drawn_seven(), np.zeros((280, 280))):
            conn.request("POST", "/api/predict", body=png(img))
            r = conn.getresponse()
            assert r.status == 200 and len(json.loads(r.read())["pixels"]) == 784
    finally:
        conn.close()


def test_browser_draw_with_a_finger(browser, run_dir):
    """Touch input (Pointer Events with pointerType 'touch') draws too, and does not scroll the page."""
    s = Running(run_dir / "model.npz")
    model = load_checkpoint(run_dir / "model.npz", device="cpu").model
    context = browser.new_context(has_touch=True, is_mobile=True, viewport={"width": 420, "height": 900})
    page = context.new_page()
    try:
        page.goto(s.url)
        page.wait_for_selector("body[data-state=idle]", state="attached")
        box = page.locator("#pad").bounding_box()
        cdp = context.new_cdp_session(page)
        pts = [(150, 35 + 10 * i) for i in range(22)]  # a '1', top to bottom, in pad coordinates
        at = lambda p: {"x": box["x"] + p[0] * box["width"] / 280, "y": box["y"] + p[1] * box["height"] / 280}  # noqa: E731
        cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [at(pts[0])]})
        for p in pts[1:]:
            cdp.send("Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": [at(p)]})
        cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
        a = settled(page)
        pixels = np.array(a["pixels"], np.uint8)
        proba = np.asarray(model.predict_proba(pixels[None].astype(np.float32) / 255))[0]
        assert page.locator("#prediction").inner_text() == str(int(np.argmax(proba))) == "1"
        assert page.evaluate("window.scrollY") == 0
    finally:
        context.close()
        s.close()

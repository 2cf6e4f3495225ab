"""``mlp-backend serve MODEL``: a local web page to draw digits on and watch the model answer.

The page (plain HTML/JS/CSS shipped in ``mlp_backend/apps/static``, nothing fetched from
elsewhere) sends the drawing as a PNG to ``POST /api/predict``; the server normalises it
the way MNIST was made (:func:`mlp_backend.data.images.image_row`, as ``mlp-backend predict``), runs the model and
answers with the 28x28 image, the ten probabilities, the predicted class and every hidden
layer's activations. ``GET /api/run`` describes the model and the run that trained it
(``history.csv`` and ``metrics.json`` next to the checkpoint); ``GET /api/errors`` computes,
once, the confusion matrix and the misclassified digits on the data set's test split.

The server is the standard library's :class:`~http.server.ThreadingHTTPServer`. Only the
packaged static files (looked up by exact name, never joined to a path) and the JSON answers
above are served; request bodies are limited to :data:`MAX_BODY` bytes (413), malformed
requests get a 400 with a one-line message and no traceback. It binds to 127.0.0.1 unless
``--host`` says otherwise, and while bound to loopback it answers only requests addressed to
it by a loopback name (a guard against DNS rebinding).
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import socket
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

__all__ = ["DigitApp", "make_server", "register", "MAX_BODY", "MAX_PIXELS"]

MAX_BODY = 2 * 1024 * 1024       # bytes in a request body
MAX_PIXELS = 4096 * 4096         # pixels in an uploaded drawing
N_MISTAKES = 60                  # misclassified test digits shown
TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
         ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml", ".png": "image/png",
         ".ico": "image/x-icon"}
CSP = ("default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1", "[::1]")


class RequestError(Exception):
    """A request the server refuses: ``status`` and a message for the client."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def static_files() -> dict:
    """``{url path: (bytes, content type)}`` for every file shipped in ``mlp_backend/apps/static``."""
    root = resources.files("mlp_backend.apps") / "static"
    files = {}
    for entry in root.iterdir():
        suffix = Path(entry.name).suffix
        if entry.is_file() and suffix in TYPES:
            files[f"/static/{entry.name}"] = (entry.read_bytes(), TYPES[suffix])
    if "/static/index.html" not in files:
        raise OSError(f"the page's files are missing from the installed package ({root}); reinstall mlp-backend")
    files["/"] = files["/static/index.html"]
    return files


def _read_history(path: Path):
    """history.csv rows as dicts of floats (None for empty cells)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    def num(v):
        try:
            x = float(v)
        except (TypeError, ValueError):
            return None
        return x if math.isfinite(x) else None
    return [{k: num(v) for k, v in r.items()} for r in rows]


class DigitApp:
    """The model and everything the page asks of it; thread-safe (one model call at a time)."""

    def __init__(self, model_path, device="cpu", log=None):
        from mlp_backend.training.checkpoint import load_checkpoint
        self.path = Path(model_path)
        self.ckpt = load_checkpoint(self.path, device=device)
        self.model = self.ckpt.model
        if self.model.sizes[0] != 28 * 28:
            raise ValueError(f"{self.path}: the model takes {self.model.sizes[0]} features, not 28x28 images; "
                             "serve needs a model trained on 28x28 digits")
        self.classes = [str(c) for c in self.ckpt.class_labels]
        self.log = log or (lambda msg: None)
        self._lock = threading.Lock()
        self._errors = None

    # ----- the model ------------------------------------------------------------------
    def forward(self, x):
        """Every layer's output for uint8 rows ``x`` (n, 784), as host arrays: [hidden..., output]."""
        from mlp_backend.training.trainer import prepare_inputs
        m = self.model
        with self._lock:
            cache = m.forward(prepare_inputs(m.backend.asarray(x), m))
            return [m.backend.to_numpy(a) for a in cache.a[1:]]

    def predict_image(self, png: bytes) -> dict:
        """The page's drawing (PNG/any image PIL reads, white ink on black) -> the answer JSON."""
        from PIL import Image, UnidentifiedImageError
        from mlp_backend.data.images import ImageTooLarge, image_row
        try:
            pixels = image_row(png, invert=False, max_pixels=MAX_PIXELS)  # as `mlp-backend predict --no-invert`
        except ImageTooLarge as exc:
            raise RequestError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, str(exc)) from None
        except UnidentifiedImageError:
            raise RequestError(HTTPStatus.BAD_REQUEST, "the body is not an image: POST the drawing as a PNG") from None
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise RequestError(HTTPStatus.BAD_REQUEST, f"the image cannot be decoded ({exc})") from None
        return self.answer(pixels.reshape(1, 784))

    def answer(self, pixels: np.ndarray) -> dict:
        outs = self.forward(pixels)
        proba = outs[-1][0].astype(float)
        best = int(np.argmax(proba))
        acts = self.model.activations
        return {"pixels": pixels.reshape(-1).astype(int).tolist(),
                "probabilities": [float(p) for p in proba],
                "label": self.classes[best], "index": best, "ink": bool(pixels.any()),
                "hidden": [{"activation": acts[i], "values": [round(float(v), 5) for v in a[0]]}
                           for i, a in enumerate(outs[:-1])]}

    # ----- the run that trained it ---------------------------------------------------
    def run_info(self) -> dict:
        d = self.path.parent
        m = self.model
        info = {"model": self.path.name, "dir": str(d), "sizes": list(m.sizes), "activations": list(m.activations),
                "output": m.output, "dtype": m.config()["dtype"],
                "device": m.backend.label, "classes": self.classes, "epoch": self.ckpt.epoch,
                "dataset": self.ckpt.run_config.get("dataset") or "mnist",
                "history": None, "metrics": None, "notes": []}
        hist = d / "history.csv"
        if hist.is_file():
            try:
                info["history"] = _read_history(hist)
            except (OSError, csv.Error, UnicodeDecodeError) as exc:
                info["notes"].append(f"history.csv next to the model cannot be read: {exc}")
        else:
            info["notes"].append(f"no history.csv next to {self.path.name} in {d}: the curves of the run that "
                                 "trained it are unknown (`mlp-backend train --out DIR` writes DIR/history.csv)")
        met = d / "metrics.json"
        if met.is_file():
            try:
                raw = json.loads(met.read_text())
                info["metrics"] = {k: raw.get(k) for k in ("status", "test_accuracy", "val_accuracy",
                                                            "train_accuracy", "epochs_run", "seconds_per_epoch",
                                                            "device")}
            except (OSError, ValueError) as exc:
                info["notes"].append(f"metrics.json next to the model cannot be read: {exc}")
        return info

    def errors(self) -> dict:
        """Confusion matrix and the first misclassified digits on the test split (computed once)."""
        with self._lock:
            cached = self._errors
        if cached is not None:
            return cached
        from mlp_backend.data import DataError, load_dataset
        name = self.ckpt.run_config.get("dataset") or "mnist"
        try:
            ds = load_dataset(name, log=None, download=False)
        except (DataError, OSError) as exc:
            return {"error": f"the test set of {name!r} is not available here: {exc}"}
        x, y = ds.x_test, ds.y_test
        if len(y) == 0:
            return {"error": f"{name!r} has no test split"}
        k = self.model.sizes[-1]
        if x.shape[1] != self.model.sizes[0] or int(y.max()) >= k:
            return {"error": f"the test split of {name!r} does not fit this model ({x.shape[1]} pixels, labels up to "
                             f"{int(y.max())}; the model takes {self.model.sizes[0]} inputs and has {k} classes)"}
        proba = np.concatenate([self.forward(x[i:i + 5000])[-1] for i in range(0, len(x), 5000)])
        pred = proba.argmax(1)
        cm = np.bincount(y.astype(np.int64) * k + pred, minlength=k * k).reshape(k, k)
        wrong = np.flatnonzero(pred != y)[:N_MISTAKES]
        result = {"dataset": name, "n": int(len(y)), "accuracy": float((pred == y).mean()),
                  "confusion": cm.tolist(), "n_wrong": int((pred != y).sum()),
                  "mistakes": [{"index": int(i), "true": self.classes[int(y[i])], "predicted": self.classes[int(pred[i])],
                                "probability": float(proba[i, pred[i]]), "pixels": x[i].astype(int).tolist()}
                               for i in wrong]}
        with self._lock:
            self._errors = result
        return result


class Handler(BaseHTTPRequestHandler):
    """Routes: static files by exact name, ``/api/run``, ``/api/errors``, ``POST /api/predict``."""

    server_version = "mlp-backend-serve"
    protocol_version = "HTTP/1.1"
    timeout = 60  # seconds a connection may stay silent (a stalled upload, an idle keep-alive)
    app: DigitApp
    files: dict
    quiet = True

    # ----- plumbing -------------------------------------------------------------------
    def _send(self, status, body: bytes, ctype: str, close: bool = False):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("Referrer-Policy", "no-referrer")
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, obj, status=HTTPStatus.OK, close=False):
        self._send(status, json.dumps(obj).encode(), "application/json", close)

    def _fail(self, status, message: str):
        # close after every error: a refused request's body may be unread on the connection
        self._json({"error": message}, status, close=True)

    def log_message(self, fmt, *args):  # one line per error; nothing per ordinary request
        if not self.quiet:
            sys.stderr.write("%s - %s\n" % (self.address_string(), fmt % args))

    def log_error(self, fmt, *args):
        sys.stderr.write("serve: %s\n" % (fmt % args))

    def _check_host(self):
        """While bound to loopback, only loopback names may address us (DNS rebinding)."""
        if not self.server.loopback_only:
            return
        host = (self.headers.get("Host") or "").strip()
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        if name.lower() not in LOOPBACK_NAMES:
            raise RequestError(HTTPStatus.BAD_REQUEST, f"Host {host!r} is not this loopback server's address")

    def _route(self, method):
        try:
            self._check_host()
            path = urlsplit(self.path).path
            if method in ("GET", "HEAD"):
                if path in self.files:
                    body, ctype = self.files[path]
                    return self._send(HTTPStatus.OK, body, ctype)
                if path == "/api/run":
                    return self._json(self.app.run_info())
                if path == "/api/errors":
                    return self._json(self.app.errors())
                if path == "/api/predict":
                    raise RequestError(HTTPStatus.METHOD_NOT_ALLOWED, "POST a PNG of the drawing to /api/predict")
                raise RequestError(HTTPStatus.NOT_FOUND, f"no such page: {path[:200]}")
            if path != "/api/predict":
                raise RequestError(HTTPStatus.NOT_FOUND if path not in self.files and not path.startswith("/api/")
                                   else HTTPStatus.METHOD_NOT_ALLOWED, f"cannot {method} {path[:200]}")
            return self._json(self.app.predict_image(self._body()))
        except RequestError as exc:
            self._fail(exc.status, str(exc))
        except Exception as exc:  # never a traceback to the client
            self.log_error("%s %s failed: %s: %s", method, self.path[:200], type(exc).__name__, exc)
            self._fail(HTTPStatus.INTERNAL_SERVER_ERROR, f"internal error ({type(exc).__name__}); see the server's log")

    def _body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            raise RequestError(HTTPStatus.LENGTH_REQUIRED, "send the body with a Content-Length, not chunked")
        raw = self.headers.get("Content-Length")
        if raw is None:
            raise RequestError(HTTPStatus.LENGTH_REQUIRED, "a Content-Length header is required")
        try:
            n = int(raw)
            if n < 0:
                raise ValueError
        except ValueError:
            raise RequestError(HTTPStatus.BAD_REQUEST, f"bad Content-Length {raw[:40]!r}") from None
        if n > MAX_BODY:
            raise RequestError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                               f"the body is {n} bytes; at most {MAX_BODY} are accepted")
        if n == 0:
            raise RequestError(HTTPStatus.BAD_REQUEST, "empty body: POST a PNG of the drawing")
        body = self.rfile.read(n)
        if len(body) != n:
            raise RequestError(HTTPStatus.BAD_REQUEST, "the body ended before Content-Length bytes")
        return body

    def do_GET(self):
        self._route("GET")

    def do_HEAD(self):
        self._route("HEAD")

    def do_POST(self):
        self._route("POST")

    def _not_allowed(self):
        self._fail(HTTPStatus.METHOD_NOT_ALLOWED, f"method {self.command} is not supported")

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _not_allowed


class DigitServer(ThreadingHTTPServer):
    daemon_threads = True
    loopback_only = True

    def handle_error(self, request, client_address):  # a dropped connection: one line, no traceback
        exc = sys.exc_info()[1]
        sys.stderr.write(f"serve: connection from {client_address[0]} failed: {type(exc).__name__}: {exc}\n")


def make_server(model_path, host="127.0.0.1", port=0, device="cpu", quiet=True) -> DigitServer:
    """A ready (bound, not yet serving) server for ``model_path``; ``port=0`` picks a free port.

    Call ``serve_forever()`` on it (in a thread, for tests) and ``shutdown()``/``server_close()``.
    """
    import ipaddress
    app = DigitApp(model_path, device=device)
    handler = type("BoundHandler", (Handler,), {"app": app, "files": static_files(), "quiet": quiet})
    cls = DigitServer
    try:
        addr = ipaddress.ip_address(host)
        loopback = addr.is_loopback
        if addr.version == 6:
            cls = type("DigitServer6", (DigitServer,), {"address_family": socket.AF_INET6})
    except ValueError:  # a name
        loopback = host == "localhost"
    try:
        server = cls((host, port), handler)
    except OSError as exc:
        raise OSError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); "
                      "pick another --port, or --port 0 for a free one") from None
    server.loopback_only = loopback
    server.app = app
    return server


def _url(server) -> str:
    host, port = server.server_address[:2]
    return f"http://{'[' + host + ']' if ':' in host else host}:{port}/"


def cmd_serve(args) -> int:
    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port {args.port}: a port is 0..65535 (0 picks a free one)")
    server = make_server(args.model, args.host, args.port, args.device, quiet=not args.log)
    url = _url(server)
    m = server.app.model
    print(f"serving {args.model} ({'-'.join(map(str, m.sizes))}, on {m.backend.label}) at {url}", flush=True)
    if not server.loopback_only:
        print(f"warning: listening on {args.host}, not loopback: anyone who can reach this machine can use the page",
              file=sys.stderr, flush=True)
    print("open it in a browser; Ctrl-C stops the server", flush=True)
    if args.open:
        import webbrowser
        webbrowser.open(url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped", flush=True)
    finally:
        server.server_close()
    return 0


def register(subparsers) -> None:
    """Add the ``serve`` subcommand to the CLI's subparsers."""
    p = subparsers.add_parser(
        "serve", help="a local web page to draw digits on and see the model's answer as you draw",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Start a web server for a trained model and print its address. The page shows, as you "
                    "draw with mouse, pen or finger, the 28x28 image the network receives (normalised as MNIST "
                    "was: the ink's box scaled to 20x20, centred by its centre of mass), the predicted class, "
                    "the ten probabilities and the hidden layers' activations; a second view shows the run "
                    "that trained the model (history.csv next to it), its confusion matrix and misclassified "
                    "test digits. Everything is served from the package: it works offline.",
        epilog="example:\n  mlp-backend train --epochs 3 --out runs/x\n  mlp-backend serve runs/x/model.npz")
    p.add_argument("model", metavar="MODEL", help="a checkpoint, e.g. runs/x/model.npz")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: 127.0.0.1, this machine only; 0.0.0.0 opens it to the network)")
    p.add_argument("--port", type=int, default=0, help="port (default: 0, a free one, printed)")
    p.add_argument("--device", default="cpu", help="where the model runs (default: cpu); see `mlp-backend train --help`")
    p.add_argument("--open", action="store_true", help="also open the page in the default browser")
    p.add_argument("--log", action="store_true", help="log every request to stderr (default: errors only)")
    p.set_defaults(func=cmd_serve)

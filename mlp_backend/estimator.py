"""A scikit-learn-style classifier around :class:`~mlp_backend.model.MLP`.

>>> from mlp_backend.estimator import MLPClassifier
>>> clf = MLPClassifier(hidden=(256, 128), epochs=10).fit(x_train, y_train)  # doctest: +SKIP
>>> clf.score(x_test, y_test)                                                # doctest: +SKIP

Inputs may be NumPy, CuPy, PyTorch or array_api_strict arrays. Results come back in the
input's array type and on its device (``predict`` on a CUDA tensor gives a CUDA tensor).
With ``device=None`` the model trains where the training data lives; give ``device`` to
train elsewhere (e.g. NumPy input, ``device="cuda"``).

``uint8`` inputs are pixels and are scaled by 1/255 on the device; float (and other
integer) inputs are used as given. Labels may be any integers or strings: ``classes_``
holds the sorted unique labels, as in scikit-learn. String labels cannot live in a
tensor, so ``predict`` returns them as a NumPy array.
"""
from __future__ import annotations

import inspect

import numpy as np  # host side: label encoding and the validation split

from .backends import BackendError, array_backend, get_backend, to_numpy
from .checkpoint import load_checkpoint, save_checkpoint
from .data import train_val_split
from .run import build_optimizer, build_trainer, validate_config, EXTRA_DEFAULTS
from .train import prepare_inputs

__all__ = ["MLPClassifier", "NotFittedError"]


class NotFittedError(ValueError, AttributeError):
    """``predict``/``score``/``save`` before ``fit`` (the same bases as scikit-learn's)."""


class MLPClassifier:
    """A multilayer-perceptron classifier with the scikit-learn estimator API.

    Parameters
    ----------
    hidden : hidden layer widths.
    activation : one name for every hidden layer or one per layer.
    output, loss, init : see :class:`~mlp_backend.model.MLP`.
    optimizer, lr, momentum, weight_decay, schedule : see :mod:`mlp_backend.optim`.
    batch_size : an int, or ``"full"`` for full-batch gradient descent.
    epochs : training epochs (fewer with early stopping).
    seed : the one seed for the split, the weights and the shuffling.
    device : ``None`` trains where the input lives; else a device string (``"cuda:1"``).
    dtype : ``"float32"`` or ``"float64"``.
    val_fraction : share of the training rows held out for validation (0: none).
    patience : early stopping on the validation loss (needs ``val_fraction > 0``).
    verbose : print one line per epoch.
    cuda_graphs : ``auto``, ``on`` or ``off``: replay each epoch as a captured CUDA graph on
        ``device='cuda'`` (see :class:`~mlp_backend.train.Trainer`).

    Attributes after ``fit``: ``classes_``, ``n_features_in_``, ``model_`` (the MLP),
    ``history_`` (one dict per epoch), ``n_epochs_``.
    """

    def __init__(self, hidden=(256, 128), activation="relu", output="softmax", loss="cross_entropy",
                 init="he", optimizer="adam", lr=1e-3, batch_size=128, epochs=10, seed=0, device=None,
                 dtype="float32", val_fraction=0.0, patience=None, schedule="cosine", momentum=0.9,
                 weight_decay=0.0, verbose=False, cuda_graphs="auto"):
        self.hidden, self.activation, self.output, self.loss = hidden, activation, output, loss
        self.init, self.optimizer, self.lr, self.batch_size = init, optimizer, lr, batch_size
        self.epochs, self.seed, self.device, self.dtype = epochs, seed, device, dtype
        self.val_fraction, self.patience, self.schedule = val_fraction, patience, schedule
        self.momentum, self.weight_decay, self.verbose = momentum, weight_decay, verbose
        self.cuda_graphs = cuda_graphs

    # ----- scikit-learn protocol -----------------------------------------------------------
    @classmethod
    def _param_names(cls):
        return [p for p in inspect.signature(cls.__init__).parameters if p != "self"]

    def get_params(self, deep: bool = True) -> dict:
        return {k: getattr(self, k) for k in self._param_names()}

    def set_params(self, **params) -> "MLPClassifier":
        valid = self._param_names()
        for k, v in params.items():
            if k not in valid:
                raise ValueError(f"invalid parameter {k!r} for MLPClassifier; valid: {', '.join(valid)}")
            setattr(self, k, v)
        return self

    def __repr__(self) -> str:
        defaults = type(self)().get_params()
        changed = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items() if v != defaults[k])
        return f"MLPClassifier({changed})"

    def _config(self) -> dict:
        cfg = {**EXTRA_DEFAULTS, "dataset": "<arrays>"}
        cfg.update({k: getattr(self, k) for k in ("hidden", "activation", "output", "loss", "init",
                                                  "optimizer", "lr", "batch_size", "epochs", "seed",
                                                  "dtype", "val_fraction", "patience", "schedule",
                                                  "momentum", "weight_decay", "cuda_graphs")})
        return validate_config(cfg)

    # ----- data handling ---------------------------------------------------------------------
    @staticmethod
    def _host_x(x):
        """Host rows: uint8 stays uint8 (scaled on the device), anything else becomes float64."""
        h = np.asarray(to_numpy(x))
        if h.ndim != 2:
            raise ValueError(f"X must be 2-D (n_samples, n_features), got shape {h.shape}")
        return h if h.dtype == np.uint8 else h.astype(np.float64)

    @staticmethod
    def _host_y(y):
        try:
            return np.asarray(to_numpy(y)).reshape(-1)
        except Exception:  # a list of strings, etc.
            return np.asarray(y).reshape(-1)

    def _device_x(self, host):
        b = self.model_.backend
        return prepare_inputs(b.asarray(host, None if host.dtype == np.uint8 else self.model_.dtype_name), self.model_)

    def _check_fitted(self):
        if not hasattr(self, "model_"):
            raise NotFittedError("this MLPClassifier is not fitted yet; call fit(X, y) first")

    def _check_x(self, x):
        self._check_fitted()
        h = self._host_x(x)
        if h.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {h.shape[1]} features, but MLPClassifier was fitted with {self.n_features_in_}")
        return h

    # ----- fitting and predicting ---------------------------------------------------------
    def fit(self, X, y) -> "MLPClassifier":
        """Train from scratch on ``X`` (n_samples, n_features) and labels ``y``."""
        from .model import MLP
        cfg = self._config()
        backend = get_backend(self.device) if self.device is not None else self._where(X)
        xh, yh = self._host_x(X), self._host_y(y)
        if len(xh) != len(yh):
            raise ValueError(f"X has {len(xh)} rows but y has {len(yh)} labels")
        self.classes_, y_enc = np.unique(yh, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(f"y needs at least 2 classes, got {len(self.classes_)}")
        self.n_features_in_ = xh.shape[1]
        x_tr, y_tr, x_val, y_val = train_val_split(xh, y_enc, cfg["val_fraction"], cfg["seed"])
        self.model_ = MLP([xh.shape[1], *cfg["hidden"], len(self.classes_)], cfg["activation"],
                          output=cfg["output"], loss=cfg["loss"], init=cfg["init"], dtype=cfg["dtype"],
                          device=backend, seed=cfg["seed"])
        self.optimizer_ = build_optimizer(cfg)
        self.trainer_ = build_trainer(cfg, self.model_, self.optimizer_,
                                      progress="lines" if self.verbose else "none",
                                      log=print if self.verbose else (lambda *_: None))
        dev = lambda h: backend.asarray(h, None if h.dtype == np.uint8 else cfg["dtype"])  # noqa: E731
        self.trainer_.fit(dev(x_tr), backend.asarray(y_tr, "int64"), cfg["epochs"],
                          dev(x_val), backend.asarray(y_val, "int64"))
        self.history_ = list(self.trainer_.history.rows)
        self.n_epochs_ = self.trainer_.epoch
        return self

    def predict_proba(self, X):
        """Class probabilities (n_samples, n_classes), columns in ``classes_`` order, in X's
        array type and on X's device."""
        h = self._check_x(X)
        proba = self.model_.backend.to_numpy(self.model_.predict_proba(self._device_x(h)))
        return self._like(X, proba)

    def predict(self, X):
        """Predicted labels (values of ``classes_``) in X's array type and device."""
        h = self._check_x(X)
        idx = self.model_.backend.to_numpy(self.model_.predict(self._device_x(h)))
        labels = self.classes_[idx]
        if labels.dtype.kind not in "biuf":
            return labels  # strings cannot live in a tensor
        return self._like(X, labels)

    def score(self, X, y) -> float:
        """Mean accuracy on ``(X, y)``."""
        pred = np.asarray(to_numpy(self.predict(X)))
        return float(np.mean(pred == self._host_y(y)))

    @staticmethod
    def _where(x):
        """The backend ``x`` lives on (the default device for lists and the like)."""
        try:
            return array_backend(x)
        except (TypeError, BackendError):
            return get_backend(None)

    @staticmethod
    def _like(x, host):
        """``host`` as an array of ``x``'s type and device."""
        try:
            return array_backend(x).asarray(host)
        except Exception:  # lists, pandas frames ...: NumPy
            return host

    # ----- persistence ------------------------------------------------------------------------
    def save(self, path):
        """Write the fitted classifier (weights, classes, parameters) as a checkpoint."""
        self._check_fitted()
        params = {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.get_params().items()}
        extra = {"estimator": {"params": params, "classes": self.classes_.tolist(),
                               "classes_dtype": self.classes_.dtype.str, "n_epochs": self.n_epochs_}}
        return save_checkpoint(path, self.model_, self.optimizer_, self.trainer_, extra=extra)

    @classmethod
    def load(cls, path, device=None) -> "MLPClassifier":
        """A fitted classifier from :meth:`save`; ``device`` as in ``load_checkpoint``."""
        ckpt = load_checkpoint(path, device=device)
        est = ckpt.extra.get("estimator")
        if est is None:
            raise ValueError(f"{path}: not an MLPClassifier checkpoint (use mlp_backend.checkpoint.load_checkpoint)")
        params = dict(est["params"])
        if isinstance(params.get("hidden"), list):
            params["hidden"] = tuple(params["hidden"])
        self = cls(**params)
        self.model_, self.optimizer_ = ckpt.model, ckpt.optimizer
        self.classes_ = np.asarray(est["classes"], dtype=np.dtype(est["classes_dtype"]))
        self.n_features_in_ = ckpt.model.sizes[0]
        self.history_ = list((ckpt.trainer_state or {}).get("history", []))
        self.n_epochs_ = int(est.get("n_epochs", len(self.history_)))
        self.trainer_ = build_trainer(self._config(), self.model_, self.optimizer_, progress="none",
                                      log=lambda *_: None)
        ckpt.restore(self.trainer_)
        return self

"""A scikit-learn classifier around :class:`~mlp_backend.model.MLP` (needs scikit-learn >= 1.6:
``pip install 'mlp-backend[sklearn]'``).

>>> from mlp_backend.interop.estimator import MLPClassifier
>>> clf = MLPClassifier(hidden=(256, 128), epochs=10).fit(x_train, y_train)  # doctest: +SKIP
>>> clf.score(x_test, y_test)                                                # doctest: +SKIP

``MLPClassifier`` is a real scikit-learn estimator (``BaseEstimator`` + ``ClassifierMixin``):
it passes ``sklearn.utils.estimator_checks.check_estimator`` and works in ``Pipeline``,
``GridSearchCV``, ``cross_val_score``, ``clone`` and ``pickle``. Every constructor argument,
``device`` included, is an ordinary hyper-parameter.

Inputs may be NumPy, CuPy, PyTorch or array_api_strict arrays (or anything scikit-learn
accepts: lists, pandas frames). Results come back in the input's array type and on its device
(``predict`` on a CUDA tensor gives a CUDA tensor). With ``device=None`` the model trains
where the training data lives; give ``device`` to train elsewhere (e.g. NumPy input,
``device="cuda"``): ``fit``, ``predict``, ``predict_proba`` and ``score`` copy their inputs
to the model's device once per call.

``uint8`` inputs are pixels and are scaled by 1/255 on the device; float (and other
integer) inputs are used as given. Labels may be any integers or strings: ``classes_``
holds the sorted unique labels, as in scikit-learn. String labels cannot live in a
tensor, so ``predict`` returns them as a NumPy array.

Importing this module works without scikit-learn; creating an ``MLPClassifier`` then
raises ImportError saying what to install.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np  # host side: label encoding and the validation split

from mlp_backend.backends import BackendError, array_backend, get_backend, to_numpy
from mlp_backend.training.checkpoint import load_checkpoint, save_checkpoint
from mlp_backend.data import train_val_split
from mlp_backend.training.config import EXTRA_DEFAULTS, validate_config
from mlp_backend.training.run import build_model, build_optimizer, build_trainer
from mlp_backend.training.trainer import prepare_inputs

__all__ = ["MLPClassifier", "NotFittedError", "SKLEARN_MISSING", "EXPECTED_FAILED_CHECKS"]

# check_estimator's checks that this estimator is known to fail, {check name: why}, for
# ``check_estimator(est, expected_failed_checks=EXPECTED_FAILED_CHECKS)``. None: all of
# scikit-learn 1.9's checks pass (tests/test_sklearn_api.py runs them).
EXPECTED_FAILED_CHECKS: dict[str, str] = {}

SKLEARN_HINT = "pip install 'mlp-backend[sklearn]' (scikit-learn >= 1.6.1)"

try:  # validate_data and __sklearn_tags__ are scikit-learn >= 1.6
    from sklearn.base import BaseEstimator, ClassifierMixin
    from sklearn.exceptions import NotFittedError
    from sklearn.metrics import accuracy_score
    from sklearn.utils.multiclass import check_classification_targets
    from sklearn.utils.validation import check_is_fitted, validate_data
    SKLEARN_MISSING = None
except ImportError as _exc:
    SKLEARN_MISSING = f"MLPClassifier needs scikit-learn >= 1.6 ({_exc}): {SKLEARN_HINT}"

    class NotFittedError(ValueError, AttributeError):
        """``predict`` before ``fit`` (scikit-learn's bases)."""

    class BaseEstimator:
        """Stands in for scikit-learn's: creating an estimator says what to install."""

        def __new__(cls, *args, **kwargs):
            raise ImportError(SKLEARN_MISSING)

    class ClassifierMixin:
        pass


class MLPClassifier(ClassifierMixin, BaseEstimator):
    """A multilayer-perceptron classifier, a scikit-learn estimator.

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
        ``device='cuda'`` (see :class:`~mlp_backend.training.trainer.Trainer`).

    Attributes after ``fit``: ``classes_``, ``n_features_in_`` (and ``feature_names_in_``
    for a DataFrame), ``model_`` (the MLP), ``history_`` (one dict per epoch), ``n_epochs_``.
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

    def _config(self) -> dict:
        cfg = {**EXTRA_DEFAULTS, "dataset": "<arrays>"}
        cfg.update({k: getattr(self, k) for k in ("hidden", "activation", "output", "loss", "init",
                                                  "optimizer", "lr", "batch_size", "epochs", "seed",
                                                  "dtype", "val_fraction", "patience", "schedule",
                                                  "momentum", "weight_decay", "cuda_graphs")})
        return validate_config(cfg)

    # ----- data handling ---------------------------------------------------------------------
    @staticmethod
    def _host(a):
        """Device arrays (CuPy, torch, array_api_strict) as host NumPy; anything else as given,
        for scikit-learn's validation (lists, pandas frames, memmaps ...)."""
        if isinstance(a, np.ndarray):
            return a
        try:
            array_backend(a)
        except (TypeError, BackendError):
            return a
        return to_numpy(a)

    def _check_x(self, X):
        """Validated host rows for predict: uint8 stays uint8 (scaled on the device)."""
        check_is_fitted(self)
        return validate_data(self, self._host(X), reset=False, dtype="numeric")

    def _to_device(self, host, labels: bool = False):
        """Host rows (or ``labels``) on the model's device in one transfer: uint8 pixels stay
        uint8 (scaled there), labels become int64, anything else the model's dtype."""
        kind = "int64" if labels else None if host.dtype == np.uint8 else self.model_.dtype_name
        return self.model_.backend.asarray(host, kind)

    # ----- fitting and predicting ---------------------------------------------------------
    def fit(self, X, y) -> "MLPClassifier":
        """Train from scratch on ``X`` (n_samples, n_features) and labels ``y``."""
        cfg = self._config()
        backend = get_backend(self.device) if self.device is not None else self._where(X)
        xh, yh = validate_data(self, self._host(X), self._host(y), dtype="numeric")
        check_classification_targets(yh)
        self.classes_, y_enc = np.unique(yh, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(f"y has 1 class ({self.classes_[0]!r}); a classifier needs at least 2 classes")
        x_tr, y_tr, x_val, y_val = train_val_split(xh, y_enc, cfg["val_fraction"], cfg["seed"])
        self.model_ = build_model(cfg, xh.shape[1], len(self.classes_), backend)
        self.optimizer_ = build_optimizer(cfg)
        self.trainer_ = build_trainer(cfg, self.model_, self.optimizer_,
                                      progress="lines" if self.verbose else "none",
                                      log=print if self.verbose else (lambda *_: None))
        dev = self._to_device
        self.trainer_.fit(dev(x_tr), dev(y_tr, labels=True), cfg["epochs"], dev(x_val), dev(y_val, labels=True))
        self.trainer_.close()  # the runner would keep this fit's device copy of x alive (and a CUDA graph)
        self.history_ = list(self.trainer_.history.rows)
        self.n_epochs_ = self.trainer_.epoch
        return self

    def predict_proba(self, X):
        """Class probabilities (n_samples, n_classes), columns in ``classes_`` order, in X's
        array type and on X's device."""
        h = self._check_x(X)
        m = self.model_
        proba = m.backend.to_numpy(m.predict_proba(prepare_inputs(self._to_device(h), m)))
        return self._like(X, proba)

    def predict(self, X):
        """Predicted labels (values of ``classes_``) in X's array type and device."""
        h = self._check_x(X)
        m = self.model_
        idx = m.backend.to_numpy(m.predict(prepare_inputs(self._to_device(h), m)))
        labels = self.classes_[idx]
        if labels.dtype.kind not in "biuf":
            return labels  # strings cannot live in a tensor
        return self._like(X, labels)

    def score(self, X, y, sample_weight=None) -> float:
        """Mean accuracy on ``(X, y)`` (weighted by ``sample_weight`` if given)."""
        pred = np.asarray(to_numpy(self.predict(X)))
        return float(accuracy_score(np.asarray(self._host(y)), pred,
                                    sample_weight=None if sample_weight is None else self._host(sample_weight)))

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
        check_is_fitted(self)
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
            raise ValueError(f"{path}: not an MLPClassifier checkpoint (use mlp_backend.training.checkpoint.load_checkpoint)")
        params = dict(est["params"])
        if isinstance(params.get("hidden"), list):
            params["hidden"] = tuple(params["hidden"])
        self = cls(**params)
        self._restore(ckpt)
        return self

    def _restore(self, ckpt):
        """The fitted state (model, optimizer, trainer, classes) from a loaded checkpoint."""
        est = ckpt.extra["estimator"]
        self.model_, self.optimizer_ = ckpt.model, ckpt.optimizer
        self.classes_ = np.asarray(est["classes"], dtype=np.dtype(est["classes_dtype"]))
        self.n_features_in_ = ckpt.model.sizes[0]
        self.history_ = list((ckpt.trainer_state or {}).get("history", []))
        self.n_epochs_ = int(est.get("n_epochs", len(self.history_)))
        self.trainer_ = build_trainer(self._config(), self.model_, self.optimizer_, progress="none",
                                      log=lambda *_: None)
        ckpt.restore(self.trainer_)

    # pickle (clone, deepcopy, joblib, multiprocessing): the model, optimizer and trainer hold
    # device arrays and array modules, so a fitted estimator travels as its checkpoint bytes
    # (the same file :meth:`save` writes, read back without unpickling anything) and comes
    # back on the device it was on.
    _PICKLE_KEY = "_mlp_backend_checkpoint"

    def __getstate__(self):
        state = super().__getstate__()
        if "model_" in state:
            with tempfile.TemporaryDirectory() as d:
                path = self.save(Path(d) / "estimator.npz")
                data = path.read_bytes()
            state = {k: v for k, v in state.items() if k not in ("model_", "optimizer_", "trainer_", "history_")}
            state[self._PICKLE_KEY] = (data, self.model_.backend.label)
        return state

    def __setstate__(self, state):
        state = dict(state)
        packed = state.pop(self._PICKLE_KEY, None)
        super().__setstate__(state)
        if packed is not None:
            data, device = packed
            with tempfile.TemporaryDirectory() as d:
                path = Path(d) / "estimator.npz"
                path.write_bytes(data)
                self._restore(load_checkpoint(path, device=device))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False  # NaN/inf rows are refused by validate_data
        return tags

"""Figures: loss and accuracy per epoch (train vs validation, as the paper's Figures 5-10)
and confusion matrices. Matplotlib with the Agg backend; every figure is written
atomically (temp file in the same directory, then ``os.replace``)."""
from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window; safe on headless machines
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from mlp_backend.data.atomic import atomic_write_bytes  # noqa: E402

__all__ = ["save_figure", "plot_curves", "plot_history", "plot_confusion"]


def save_figure(fig, path, dpi: int = 120) -> Path:
    """Render ``fig`` to PNG in memory, then write it atomically to ``path``; closes ``fig``."""
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    finally:
        plt.close(fig)
    return atomic_write_bytes(path, lambda f: f.write(buf.getvalue()))


def plot_curves(rows, metric: str, path, title: str = "", ylabel: "str | None" = None) -> Path:
    """``train_<metric>`` and ``val_<metric>`` (when present) against the epoch."""
    epochs = [r["epoch"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    for split, style in (("train", "-"), ("val", "--")):
        key = f"{split}_{metric}"
        ys = [r.get(key) for r in rows]
        if any(v is not None for v in ys):
            ys = [np.nan if v is None else v for v in ys]
            ax.plot(epochs, ys, style, marker="o" if len(epochs) <= 30 else None, markersize=3,
                    label="training" if split == "train" else "validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel or metric)
    if title:
        ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    return save_figure(fig, path)


def plot_history(rows, out_dir, title: str = "", loss_label: str = "loss") -> dict:
    """``loss.png`` and ``accuracy.png`` in ``out_dir``; returns ``{name: path}``."""
    out = Path(out_dir)
    return {"loss.png": plot_curves(rows, "loss", out / "loss.png", title, loss_label),
            "accuracy.png": plot_curves(rows, "accuracy", out / "accuracy.png", title, "accuracy")}


def plot_confusion(matrix, labels, path, title: str = "confusion matrix") -> Path:
    """A confusion matrix (rows: true class, columns: predicted) with counts in the cells."""
    m = np.asarray(matrix)
    fig, ax = plt.subplots(figsize=(1.2 + 0.55 * len(labels), 1.0 + 0.5 * len(labels)))
    im = ax.imshow(m, cmap="Blues")
    ax.set_xticks(range(len(labels)), [str(c) for c in labels])
    ax.set_yticks(range(len(labels)), [str(c) for c in labels])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    top = m.max() if m.size else 0
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            ax.text(j, i, str(int(m[i, j])), ha="center", va="center", fontsize=7,
                    color="white" if m[i, j] > top / 2 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    return save_figure(fig, path)

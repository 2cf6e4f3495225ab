"""The reproduction's figures: the paper's Figures 5-10 from the runs' curves, the
ablation's validation accuracy per epoch, and the sweep's per width, each written as a
PNG through :func:`mlp_backend.apps.plots.save_figure`."""
from __future__ import annotations

from pathlib import Path

from mlp_backend.apps.plots import save_figure  # imported first: it selects matplotlib's Agg backend
import matplotlib.pyplot as plt  # noqa: E402

# The paper's figure numbers (loss, accuracy) for each faithful preset.
PAPER_FIGS = {"paper-random": (5, 6), "paper-he": (7, 8), "paper-lecun": (9, 10)}
DPI = 72  # small files: the report's figures live in the repository


def _n_seeds(d) -> str:
    k = d["seed"].nunique()
    return f"{k} seed" + ("s" if k > 1 else "")


def plot_paper_figures(curves, out: Path) -> list[str]:
    """Figures 5-10 of the paper: per init, epoch vs loss and epoch vs accuracy, train (blue)
    and validation (orange); the line is the mean over seeds, the band the min-max."""
    names = []
    for preset, (fig_loss, fig_acc) in PAPER_FIGS.items():
        d = curves[curves["preset"] == preset]
        if d.empty:
            continue
        g = d.groupby("epoch")
        for fig_no, metric, ylabel in ((fig_loss, "loss", "Loss"), (fig_acc, "accuracy", "Accuracy")):
            fig, ax = plt.subplots(figsize=(6, 4))
            for split_name, label, color in (("train", "Train", "blue"), ("val", "Validation", "orange")):
                col = f"{split_name}_{metric}"
                m = g[col].agg(["mean", "min", "max"])
                ax.plot(m.index, m["mean"], label=label, color=color)
                ax.fill_between(m.index, m["min"], m["max"], color=color, alpha=0.2, linewidth=0)
            ax.set_xlabel("Epoch")
            ax.set_ylabel(ylabel)
            ax.set_title(f"Figure {fig_no}: epoch vs. {ylabel.lower()}, {preset} ({_n_seeds(d)})")
            ax.legend()
            name = f"fig{fig_no:02d}_{preset}_{metric}.png"
            save_figure(fig, out / name, dpi=DPI)
            names.append(name)
    return names


def plot_ablation(curves, out: Path) -> str:
    """``ablation.png``: the mean validation accuracy per epoch of each ablation row."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (key, d) in enumerate(curves.groupby("key", sort=False)):
        m = d.groupby("epoch")["val_accuracy"].mean()
        # dashed every other line: '-feature_divisor' lies exactly on 'faithful'
        ax.plot(m.index, m.values * 100, label=key, linestyle="--" if i % 2 else "-")
    ax.set_xlabel("Epoch")
    ax.set_ylabel("Validation accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title("Ablation: one quirk removed at a time")
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    save_figure(fig, out / "ablation.png", dpi=DPI)
    return "ablation.png"


def plot_sweep(df, path: Path) -> Path:
    """One panel per init: the mean validation accuracy per recorded epoch of each width pair."""
    inits = list(dict.fromkeys(df["init"]))
    fig, axes = plt.subplots(1, len(inits), figsize=(4.5 * len(inits), 3.8), squeeze=False, sharey=True)
    for ax, init in zip(axes[0], inits):
        for (h1, h2), d in df[df["init"] == init].groupby(["hidden1", "hidden2"]):
            m = d.groupby("epoch")["val_accuracy"].mean()
            ax.plot(m.index, m.values * 100, marker=".", label=f"{h1}-{h2}")
        ax.set_title(init)
        ax.set_xlabel("Epoch")
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel("Validation accuracy (%)")
    return save_figure(fig, path, dpi=DPI)

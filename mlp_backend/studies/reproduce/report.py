"""The text of docs/reproduction.md: the run's numbers, tables and conclusions, filled into
the prose of the template ``report.md`` shipped beside this module.

Every number is computed here from the run's results; every sentence is in the template.
A template block (``<!-- name -->`` up to the next marker) is filled with ``str.format``.
"""
from __future__ import annotations

import functools
import json
import math
import os
import platform
import re
from importlib import resources
from pathlib import Path

import numpy as np  # host-side: statistics of the runs

from mlp_backend.studies.reproduce.experiments import EXPERIMENTS, FAITHFUL
from mlp_backend.training.presets import PRESETS, QUIRKS

# Where the report's data and figures live, relative to the report.
IMG = Path("img") / "reproduction"
TEMPLATE = "report.md"
# The paper's reported (train, validation) accuracy in percent (its Section IV). The printed
# variant is the paper's random experiment too, so it is compared with the same figures.
PAPER_TABLE = {"paper-random": (79.47, 78.71), "paper-he": (27.83, 27.61), "paper-lecun": (24.01, 22.88),
               "paper-random-printed": (79.47, 78.71)}
# The targets for the speed-up over the printed code: issue 4's on the CPU, issue 8's on a GPU.
SPEED_TARGET = {"cpu": 3.0, "gpu": 30.0}
_MARKER = re.compile(r"<!-- (\w+) -->")


# ----- the template --------------------------------------------------------------------

@functools.cache
def blocks() -> dict[str, str]:
    """The template's blocks by name (the lines before the first marker are its comment)."""
    text = resources.files(__package__).joinpath(TEMPLATE).read_text(encoding="utf-8")
    found, name = {}, None
    for line in text.split("\n")[:-1]:  # the file's last newline ends its last line
        marker = _MARKER.fullmatch(line)
        if marker:
            name = marker[1]
            found[name] = []
        elif name is not None:
            found[name].append(line)
    return {k: "\n".join(v) for k, v in found.items()}


def fill(block: str, /, **values) -> str:
    """Template block ``block`` with its placeholders filled from ``values``."""
    return blocks()[block].format(**values)


def lines(block: str, /, **values) -> list[str]:
    """:func:`fill` as the report's lines."""
    return fill(block, **values).split("\n")


def image(name: str, file: str) -> str:
    """A Markdown image of ``file`` in the report's figure folder."""
    return fill("image", name=name, folder=IMG.as_posix(), file=file)


# ----- numbers -------------------------------------------------------------------------

def _stats(values) -> dict:
    v = np.asarray(values, dtype=float) * 100
    return {"mean": v.mean(), "sd": v.std(ddof=1) if len(v) > 1 else float("nan"), "min": v.min(),
            "max": v.max(), "n": len(v)}


def _fmt(s: dict) -> str:
    sd = "n/a" if math.isnan(s["sd"]) else f"{s['sd']:.2f}"
    return f"{s['mean']:.2f} ± {sd} ({s['min']:.2f}–{s['max']:.2f})"


def _relation(values, paper: float) -> str:
    """Where the paper's figure lies against our seed range, with a 1-point margin."""
    if min(values) - 1 <= paper <= max(values) + 1:
        return "within"
    return "below" if paper < min(values) else "above"


def _plural(n: int) -> str:
    return "s" if n > 1 else ""


def _abl(ctx, key):
    rs = [r for r in ctx["ablation"] if r["key"] == key]
    return np.mean([r["last"]["val_accuracy"] for r in rs]) * 100 if rs else float("nan")


def machine() -> str:
    """This machine in the report's words (cores, architecture, Python and NumPy versions)."""
    return fill("machine", cores=os.cpu_count(), arch=platform.machine(), python=platform.python_version(),
                numpy=np.__version__)


# ----- the report ----------------------------------------------------------------------

def build_report(ctx: dict) -> str:
    """The Markdown of docs/reproduction.md from the run's results (all numbers computed here)."""
    runs, abl = ctx["runs"], ctx["ablation"]
    L = lines("header", command=ctx["command"], minutes=ctx["total_seconds"] / 60, machine=ctx["machine"],
              device=ctx["device"], started=ctx["started"], pool=ctx["pool"])
    if ctx["quick"]:
        L += lines("quick")
    L += table_section(runs)
    if ctx.get("seed_note"):
        L += [ctx["seed_note"], ""]
    if ctx["figures"]:
        L += lines("curves")
        for i in range(0, len(ctx["figures"]), 2):
            L += [" ".join(image(p, p) for p in ctx["figures"][i:i + 2]), ""]
    if abl:
        L += ablation_section(abl, ctx["ablation_preset"])
    L += sweep_section(ctx.get("sweep"))
    L += speed_section(ctx.get("speed"))
    L += ctx.get("findings", [])
    L += lines("printed_code")
    return "\n".join(L) + "\n"


def table_section(runs) -> list[str]:
    """The paper's table beside ours, and a verdict per experiment."""
    L, verdicts = lines("table"), []
    for name in EXPERIMENTS:
        rs = [r for r in runs if r["preset"] == name]
        if not rs:
            continue
        cfg = PRESETS[name]
        tr = _stats([r["last"]["train_accuracy"] for r in rs])
        va = _stats([r["last"]["val_accuracy"] for r in rs])
        pt, pv = PAPER_TABLE[name]
        L.append(fill("table_row", name=name, h1=cfg["hidden"][0], h2=cfg["hidden"][1], epochs=rs[0]["epochs"],
                      paper_train=pt, paper_val=pv, train=_fmt(tr), val=_fmt(va), seeds=len(rs),
                      seconds=np.mean([r["seconds"] for r in rs])))
        verdicts.append((name, pv, va))
    L.append("")
    if any(r["preset"] == "paper-random-printed" for r in runs):
        L += lines("printed_row")
    elif runs:
        L += lines("printed_row_missing")
    for name, pv, va in verdicts:
        inside = va["min"] - 1.0 <= pv <= va["max"] + 1.0
        L.append(fill("verdict_reproduced" if inside else "verdict_not_reproduced", name=name, paper_val=pv,
                      lo=va["min"], hi=va["max"], where="above" if va["min"] > pv else "below"))
    return L + lines("seeds")


def ablation_section(abl, base: str) -> list[str]:
    """The ablation's table (one row per removed quirk) and the quirks' descriptions."""
    L = lines("ablation", base=base, epochs=abl[0]["epochs"], seeds=sorted({r["seed"] for r in abl}))
    for key in dict.fromkeys(r["key"] for r in abl):
        rs = [r for r in abl if r["key"] == key]
        L.append(fill("ablation_row", key=key, description=rs[0]["description"], epochs=rs[0]["epochs"],
                      lr=rs[0]["lr"], train=_stats([r["last"]["train_accuracy"] for r in rs])["mean"],
                      val=_stats([r["last"]["val_accuracy"] for r in rs])["mean"],
                      val_loss=np.mean([r["last"]["val_loss"] for r in rs]),
                      seconds=np.mean([r["seconds"] for r in rs])))
    L += lines("quirks")
    L += [fill("quirk", name=q, text=text) for q, text in QUIRKS.items()]
    return L + lines("ablation_end") + [image("ablation", "ablation.png"), ""]


def load_sweep(img: Path) -> dict | None:
    """The last ``mlp-backend sweep`` written next to the report: its final-epoch table and
    how it was run, or None when there is none."""
    if not (img / "sweep.csv").exists() or not (img / "sweep.json").exists():
        return None
    import pandas as pd  # loaded on use: the CLI imports this module at every start
    df = pd.read_csv(img / "sweep.csv")
    last = df[df["epoch"] == df["epoch"].max()]
    table = (last.groupby(["init", "hidden1", "hidden2"])["val_accuracy"].agg(["mean", "min", "max", "count"])
             .reset_index().to_dict("records"))
    return {**json.loads((img / "sweep.json").read_text()), "epochs": int(df["epoch"].max()), "table": table}


def sweep_section(sweep) -> list[str]:
    """The sweep's final-epoch table (no section without a sweep)."""
    if not sweep:
        return []
    L = lines("sweep", command=sweep["command"], minutes=sweep["minutes"], machine=sweep["machine"],
              started=sweep["started"], epochs=sweep["epochs"])
    L += [fill("sweep_row", init=r["init"], h1=r["hidden1"], h2=r["hidden2"], mean=100 * r["mean"],
               min=100 * r["min"], max=100 * r["max"], count=r["count"]) for r in sweep["table"]]
    return L + ["", image("sweep", "sweep.png"), ""]


# ----- speed ---------------------------------------------------------------------------

def speed_devices(speed) -> tuple[str, str]:
    """(ours, printed) device labels of a speed result; runs saved before the labels existed
    timed both on the CPU."""
    return speed.get("ours_device", "cpu"), speed.get("paper_device", "cpu")


def speed_section(speed) -> list[str]:
    """The printed code's epoch time against ours, the speed-up and its notes."""
    L = lines("speed_heading")
    if not speed:
        return L + lines("speed_not_measured")
    ours_dev, paper_dev = speed_devices(speed)
    L += lines("speed", n_train=speed["n_train"], n_val=speed["n_val"], sizes=speed["sizes"], reps=speed["reps"],
               paper_device=paper_dev, ours_device=ours_dev, paper=speed["paper"], ours=speed["ours"],
               ratio=speed["ratio"], verdict=speed_verdict(speed))
    return L + speed.get("notes", []) + [""]


def speed_verdict(speed) -> str:
    """Whether the speed-up meets the target of the device ours ran on."""
    kind = "cpu" if speed_devices(speed)[0] == "cpu" else "gpu"
    target = SPEED_TARGET[kind]
    return fill(f"speed_{'met' if speed['ratio'] >= target else 'unmet'}_{kind}", target=target)


def _epoch_gflop(speed) -> float:
    """Float64 GFLOP of one timed epoch's matrix products (forward and backward on the
    training rows, forward on the validation rows)."""
    h1, h2 = (int(v) for v in speed["sizes"].split("-")[1:3])
    n, m = speed["n_train"], speed["n_val"]
    return (2 * n * 784 * h1 * 2 + 2 * m * 784 * h1 + 2 * n * (h1 * h2 + h2 * 10) * 3 + 2 * m * (h1 * h2 + h2 * 10)) / 1e9


def speed_notes(speed) -> list[str]:
    """Why the ratio is what it is (the FLOP count is computed; the rest is the argument)."""
    gf = _epoch_gflop(speed)
    ours_dev, paper_dev = speed_devices(speed)
    rates = dict(gflop=gf, ours_gflops=gf / speed["ours"]["median"], paper_gflops=gf / speed["paper"]["median"])
    if ours_dev != "cpu":
        return lines("speed_notes_gpu", **rates, ours_device=ours_dev, paper_device=paper_dev,
                     device=ours_dev.split(":")[0])
    h1, n = int(speed["sizes"].split("-")[1]), speed["n_train"]
    return lines("speed_notes_cpu", **rates, n_train=n, layer1_gflop=2 * 2 * n * 784 * h1 / 1e9)


# ----- conclusions ---------------------------------------------------------------------

def seed_note(ctx) -> str:
    """How many seeds each experiment got and why, with the run's own per-epoch times."""
    runs = ctx["runs"]
    counts = {n: c for n in EXPERIMENTS if (c := sum(r["preset"] == n for r in runs))}
    if ctx["quick"] or not counts or len(set(counts.values())) <= 1 and min(counts.values()) >= 5:
        return ""
    per_epoch = {n: np.mean([r["seconds"] / r["epochs"] for r in runs if r["preset"] == n]) for n in counts}
    full = sum(per_epoch[n] * PRESETS[n]["epochs"] for n in per_epoch)
    return fill("seed_note", counts=", ".join(f"{n}: {c}" for n, c in counts.items()),
                per_epoch=", ".join(f"{per_epoch[n]:.2f} s ({n})" for n in per_epoch),
                one_seed_minutes=full / 60, five_seeds_minutes=5 * full / 60)


def findings(ctx) -> list[str]:
    """The report's conclusions: every number is computed from the run's results."""
    L = []
    rand = [r["last"]["val_accuracy"] * 100 for r in ctx["runs"] if r["preset"] == "paper-random"]
    if rand and not ctx["quick"]:
        L += reproduction_findings(ctx, rand)
    sat = ctx.get("saturation") or []
    if sat:
        L += lines("saturation")
        for r in sat:
            tanh = (fill("saturation_no_tanh") if r["tanh_saturated"] is None
                    else fill("saturation_tanh", share=100 * r["tanh_saturated"]))
            L.append(fill("saturation_row", network=r["network"], hidden2=r["hidden2"], z2_sd=r["z2_sd"], tanh=tanh,
                          sigmoid_saturated=100 * r["sigmoid_saturated"], sigmoid_slope=r["sigmoid_slope"]))
        L += lines("saturation_end")
    if ctx["ablation"]:
        L += ablation_findings(ctx)
    return L


def reproduction_findings(ctx, rand) -> list[str]:
    """Where we do and do not reproduce the paper (a full run with paper-random runs)."""
    pv = PAPER_TABLE["paper-random"][1]
    printed = [r["last"]["val_accuracy"] * 100 for r in ctx["runs"] if r["preset"] == "paper-random-printed"]
    if printed:
        layer2 = fill("layer2_printed", lo=min(printed), hi=max(printed), n=len(printed), s=_plural(len(printed)),
                      paper_val=pv, rel=_relation(printed, pv))
    else:
        layer2 = fill("layer2_not_run")
    verdict = (fill("random_above", paper_val=pv, layer2=layer2) if max(rand) + 1 < pv
               else fill("random_within", paper_val=pv))
    L = lines("where", lo=min(rand), hi=max(rand), n=len(rand), s=_plural(len(rand)), verdict=verdict)
    rng_of = {n: [r["last"]["val_accuracy"] * 100 for r in ctx["runs"] if r["preset"] == n] for n in FAITHFUL}
    for n in ("paper-he", "paper-lecun"):
        v = rng_of[n]
        if not v:
            continue
        pv = PAPER_TABLE[n][1]
        rel = _relation(v, pv)
        L.append(fill("unscaled_init", name=n, lo=min(v), hi=max(v), n=len(v), s=_plural(len(v)), paper_val=pv,
                      rel=rel, margin=fill("margin_within" if rel == "within" else "margin_outside")))
    have = [n for n in FAITHFUL if rng_of[n]]
    overlaps = [(a, b) for i, a in enumerate(have) for b in have[i + 1:]
                if min(rng_of[a]) <= max(rng_of[b]) and min(rng_of[b]) <= max(rng_of[a])]
    if overlaps:
        L.append(fill("ranking", pairs="; ".join(fill("pair", a=a, b=b) for a, b in overlaps)))
    return L + [""]


def ablation_findings(ctx) -> list[str]:
    """What the ablation shows, in its own numbers."""
    base, first = ctx["ablation_preset"], ctx["ablation"][0]
    return lines("ablation_findings", base=base, epochs=first["epochs"], faithful=_abl(ctx, "faithful"),
                 scaled_init=_abl(ctx, "-unscaled_init"), mean_gradient=_abl(ctx, "-feature_divisor"),
                 mean_gradient_lr001=_abl(ctx, "-feature_divisor@lr0.01"), softmax_ce=_abl(ctx, "-sigmoid_mse"),
                 minibatch=_abl(ctx, "-full_batch"), modern=_abl(ctx, "modern"), lr_factor=first["n_train"] / 784,
                 hidden="-".join(str(h) for h in PRESETS[base]["hidden"]))

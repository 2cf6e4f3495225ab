"""The ``mlp-backend reproduce`` and ``sweep`` subcommands: their options, and the steps
that run the experiments and write the report with its data and figures."""
from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path

from mlp_backend.data.atomic import write_bytes_atomic
from mlp_backend.studies.reproduce.experiments import (EXPERIMENTS, FAITHFUL, QUICK, curves_frame, load_pool,
                                                       run_ablation, run_faithful, run_speed, run_sweep, saturation)
from mlp_backend.studies.reproduce.report import (IMG, build_report, findings, load_sweep, machine, seed_note,
                                                  speed_notes)
from mlp_backend.training.presets import QUIRKS


def write_table(path: Path, df) -> Path:
    """A pandas table as CSV (6 significant digits), written atomically."""
    return write_bytes_atomic(path, df.to_csv(index=False, float_format="%.6g").encode())


def regenerate_command(argv) -> str:
    """The command line a reader runs to regenerate the report: ``--out`` (where this copy
    was written) and ``--report-only`` are left out, the rest kept as given."""
    argv, keep, skip = list(argv), [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--out":
            skip = True
        elif not (a.startswith("--out=") or a == "--report-only"):
            keep.append(a)
    return "mlp-backend " + (" ".join(shlex.quote(a) for a in keep) or "reproduce")


def _light(runs):
    return [{k: v for k, v in r.items() if k not in ("rows",)} for r in runs]


def _log(s: str) -> None:
    print(s, flush=True)


def cmd_reproduce(args) -> int:
    """Run the experiments, the ablation and the speed comparison (or, with --report-only,
    reload the last run's results) and write reproduction.md, its data and its figures."""
    import pandas as pd  # loaded on use, with the figures: the CLI imports this module at every start
    from mlp_backend.studies.reproduce.figures import plot_ablation, plot_paper_figures
    out = Path(args.out)
    img = out / IMG
    if args.report_only:  # same numbers, same run: only the text and figures are rebuilt
        ctx = json.loads((img / "results.json").read_text())
        ctx["command"] = regenerate_command(shlex.split(ctx["command"].partition("mlp-backend ")[2]))
        ctx["figures"] = plot_paper_figures(pd.read_csv(img / "curves.csv"), img)
        if ctx["ablation"]:
            plot_ablation(pd.read_csv(img / "ablation.csv"), img)
        if "saturation" not in ctx:  # deterministic (seed 0), so recomputing it gives the run's numbers
            pool = load_pool(ctx.get("dataset", "mnist"), ctx.get("data_path"), log=None)
            ctx["saturation"] = saturation(pool, ctx["quick"], ctx["device"])
        ctx.update(findings=findings(ctx), seed_note=seed_note(ctx), sweep=load_sweep(img))
        if ctx["speed"]:
            ctx["speed"]["notes"] = speed_notes(ctx["speed"])
        write_bytes_atomic(out / "reproduction.md", build_report(ctx).encode())
        _log(f"rebuilt {out / 'reproduction.md'} from {img / 'results.json'}")
        return 0
    t_start, started = time.perf_counter(), time.strftime("%Y-%m-%d %H:%M %Z")
    pool = load_pool(args.dataset, args.data_path, log=None)
    speed = None if args.no_speed else run_speed(args, _log)
    runs = run_faithful(pool, args, _log)
    curves = curves_frame(runs)
    write_table(img / "curves.csv", curves)
    summary = [{"preset": r["preset"], "seed": r["seed"], "epochs": r["epochs"], "seconds": r["seconds"],
                "lr": r["lr"], "n_train": r["n_train"], "n_val": r["n_val"],
                **{k: v for k, v in r["last"].items() if k != "epoch"}} for r in runs]
    write_table(img / "runs.csv", pd.DataFrame(summary))
    figures = plot_paper_figures(curves, img)
    abl = []
    if not args.no_ablation:
        abl = run_ablation(pool, args, _log)
        ac = curves_frame(abl, key="key")
        write_table(img / "ablation.csv", ac)
        plot_ablation(ac, img)
    ctx = {"runs": _light(runs), "ablation": _light(abl), "speed": speed, "figures": figures,
           "quick": args.quick, "command": regenerate_command(getattr(args, "argv", None) or sys.argv[1:]),
           "machine": machine(), "device": args.device, "started": started, "pool": pool[2],
           "ablation_preset": args.ablation_preset, "total_seconds": time.perf_counter() - t_start,
           "dataset": args.dataset, "data_path": args.data_path,
           "saturation": saturation(pool, args.quick, args.device)}
    write_bytes_atomic(img / "results.json", json.dumps(ctx, indent=1, default=float).encode())
    ctx["findings"], ctx["seed_note"], ctx["sweep"] = findings(ctx), seed_note(ctx), load_sweep(img)
    if speed is not None:
        speed["notes"] = speed_notes(speed)
    write_bytes_atomic(out / "reproduction.md", build_report(ctx).encode())
    _log(f"wrote {out / 'reproduction.md'} in {ctx['total_seconds'] / 60:.1f} min")
    return 0


def cmd_sweep(args) -> int:
    """Hidden widths x epochs for the given inits: a CSV (via pandas) and a plot."""
    import pandas as pd  # loaded on use, with the figures: the CLI imports this module at every start
    from mlp_backend.studies.reproduce.figures import plot_sweep
    img = Path(args.out) / IMG
    pool = load_pool(args.dataset, args.data_path, log=None)
    t_start = time.perf_counter()
    df = pd.DataFrame(run_sweep(pool, args, _log))
    write_table(img / "sweep.csv", df)
    plot_sweep(df, img / "sweep.png")
    meta = {"command": regenerate_command(getattr(args, "argv", None) or sys.argv[1:]), "machine": machine(),
            "minutes": (time.perf_counter() - t_start) / 60, "started": time.strftime("%Y-%m-%d %H:%M %Z")}
    write_bytes_atomic(img / "sweep.json", json.dumps(meta, indent=1).encode())
    print(f"wrote {img / 'sweep.csv'} and {img / 'sweep.png'}")
    return 0


def register(subparsers) -> None:
    """Add the ``reproduce`` and ``sweep`` subcommands to an argparse subparsers object."""
    def common(p):
        p.add_argument("--quick", action="store_true", help="the CI size: a 5,000-row pool, fewer epochs")
        p.add_argument("--out", default="docs", help="output folder (default docs/)")
        p.add_argument("--dataset", default="mnist", help="data set name when no --data-path (default mnist)")
        p.add_argument("--data-path", default=None, help="the paper's digit_data.csv (label first, 42,000 rows)")
        p.add_argument("--device", default="cpu", help="cpu, cuda, torch:cpu, ... (default cpu)")

    p = subparsers.add_parser("reproduce", help="re-run the seed paper's experiments; write docs/reproduction.md")
    common(p)
    p.add_argument("--seeds", type=int, default=None, help="seeds per experiment (default 5; --quick 2)")
    p.add_argument("--seeds-for", action="append", metavar="PRESET=N",
                   help=f"override --seeds for one preset ({', '.join(EXPERIMENTS)})")
    p.add_argument("--off", action="append", choices=list(QUIRKS), help="turn a quirk off in the faithful runs")
    p.add_argument("--ablation-preset", default="paper-he", choices=list(FAITHFUL))
    p.add_argument("--ablation-epochs", type=int, default=100)
    p.add_argument("--ablation-seeds", type=int, default=1)
    p.add_argument("--minibatch-epochs", type=int, default=20,
                   help="epochs for the ablation's minibatch rows (289 steps each at full size; default 20)")
    p.add_argument("--report-only", action="store_true",
                   help="rebuild reproduction.md and the figures from the saved results of the last run")
    p.add_argument("--no-ablation", action="store_true")
    p.add_argument("--no-speed", action="store_true", help="skip the printed-code timing")
    p.add_argument("--speed-preset", default="paper-he", choices=list(FAITHFUL))
    p.set_defaults(func=_with_seeds(cmd_reproduce))

    s = subparsers.add_parser("sweep", help="the paper's other dimensions: hidden widths x epochs")
    common(s)
    s.add_argument("--widths", default="50x20,100x40,150x90,400x200", help="comma list of H1xH2")
    s.add_argument("--inits", default="paper-random,paper-he,he", help="comma list of initialisers")
    s.add_argument("--epochs", type=int, default=100)
    s.add_argument("--every", type=int, default=5, help="record every N epochs")
    s.add_argument("--seeds", type=int, default=1)
    s.set_defaults(func=cmd_sweep)


def _with_seeds(fn):
    def run(args):
        if args.seeds is None:
            args.seeds = QUICK["seeds"] if args.quick else 5
        return fn(args)
    return run

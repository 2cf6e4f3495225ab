"""`mlp-backend bench` of two versions of the code, interleaved: is a refactor free?

Runs ``mlp-backend bench --no-peers`` (our epoch and the bare-GEMM floor per net, on one core)
with the code of a base commit and with the working tree, alternately, ``--rounds`` times, so
that load from other processes hits both alike; prints each version's median epoch and its
ratio to the floor measured in the same run, and the head/base ratio of the medians.

    python benchmarks/before_after.py --base 4458ae9 --rounds 5       # from the project root

The base runs from a temporary git worktree, through the CLI entry point its pyproject names.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def entry_point(tree: Path) -> str:
    return tomllib.loads((tree / "pyproject.toml").read_text())["project"]["scripts"]["mlp-backend"]


def bench(tree: Path, args, out: Path) -> dict:
    """{net: (ours median, floor median)} of one `mlp-backend bench` run of ``tree``'s code."""
    module, func = entry_point(tree).split(":")
    code = (f"import sys; sys.path.insert(0, {str(tree)!r}); import importlib; "
            f"sys.argv = ['mlp-backend'] + sys.argv[1:]; sys.exit(getattr(importlib.import_module({module!r}), {func!r})())")
    cmd = [sys.executable, "-c", code, "bench", "--no-peers", "--nets", args.nets, "--repeats", str(args.repeats),
           "--threads", "1", "--json", str(out)]
    if args.rows:
        cmd += ["--rows", str(args.rows)]
    env = {**os.environ, "PYTHONPATH": str(tree), "MLP_BACKEND_DEVICE": "cpu"}
    subprocess.run(cmd, cwd=tree, env=env, check=True, stdout=subprocess.DEVNULL)
    res = json.loads(out.read_text())["results"]
    return {r["net"]: (r["median"]["mlp-backend"], r["median"]["floor"]) for r in res}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", required=True, help="the commit to compare the working tree with")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--repeats", type=int, default=3, help="epochs timed per bench run")
    p.add_argument("--nets", default="784-100-40-10,784-512-256-10")
    p.add_argument("--rows", type=int, default=0, help="use the first ROWS training images (default: all)")
    args = p.parse_args(argv)
    runs = {"base": [], "head": []}
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", str(base), args.base], check=True)
        try:
            for i in range(args.rounds):
                for name, tree in (("base", base), ("head", ROOT)) if i % 2 == 0 else (("head", ROOT), ("base", base)):
                    runs[name].append(bench(tree, args, Path(tmp) / f"{name}{i}.json"))
                    print(f"round {i + 1}/{args.rounds} {name}: "
                          + ", ".join(f"{net} {t:.3f} s" for net, (t, _) in runs[name][-1].items()), flush=True)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)], check=False)
    print(f"\nmedian of {args.rounds} interleaved runs (each the median of {args.repeats} epochs), one core:")
    print("| net | base epoch | base/floor | head epoch | head/floor | head/base |")
    print("|---|---|---|---|---|---|")
    for net in runs["head"][0]:
        b = statistics.median(r[net][0] for r in runs["base"])
        h = statistics.median(r[net][0] for r in runs["head"])
        bf = statistics.median(r[net][0] / r[net][1] for r in runs["base"])
        hf = statistics.median(r[net][0] / r[net][1] for r in runs["head"])
        print(f"| {net} | {b:.3f} s | {bf:.2f} | {h:.3f} s | {hf:.2f} | {h / b:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

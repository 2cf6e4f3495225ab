"""Plot epoch time vs hidden width from a benchmark JSON (benchmarks/bench.py --json).

    python benchmarks/plot.py docs/img/benchmarks/cpu.json docs/img/benchmarks/cpu_width.png
"""
import json
import sys

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(src, dst):
    data = json.load(open(src))
    rows = [r for r in data["results"] if len(r["net"].split("-")) == 3]
    rows.sort(key=lambda r: int(r["net"].split("-")[1]))
    widths = [int(r["net"].split("-")[1]) for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    for k in rows[0]["median"]:
        med = [r["median"][k] for r in rows]
        lo = [r["median"][k] - r["min"][k] for r in rows]
        hi = [r["max"][k] - r["median"][k] for r in rows]
        ax.errorbar(widths, med, yerr=[lo, hi], marker="o", capsize=3, label=k)
    env = data["environment"]
    ax.set(xscale="log", yscale="log", xlabel="hidden width W (net 784-W-10)", ylabel="seconds per epoch (median)",
           title=f"{rows[0]['device']}, batch {rows[0]['batch']}, {env['threads']} thread(s), "
                 f"OpenBLAS {env['blas'][0]['architecture'] if isinstance(env['blas'], list) and env['blas'] else '?'}")
    ax.set_xticks(widths, [str(w) for w in widths])
    ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(dst, dpi=110)


if __name__ == "__main__":
    main(*sys.argv[1:3])

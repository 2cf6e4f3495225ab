"""One interleaved comparison of the candidates on one net: every repeat times each
candidate once, in turn, so load from other processes hits all of them alike; then the
medians, min-max and mlp-backend's ratios, and the Markdown table of such comparisons."""
from __future__ import annotations

import statistics

from mlp_backend.studies.bench.candidates import LR, candidates, graph_status
from mlp_backend.studies.bench.environment import net_sizes

DEFAULT_NETS = ("784-100-40-10", "784-512-256-10")


def interleave(cands: dict, repeats: int, warmup: int = 1) -> dict:
    """{name: [seconds per repeat]}: ``warmup`` untimed rounds (caches, buffers, kernels,
    captures), then ``repeats`` rounds, each running every candidate once, in turn."""
    for _ in range(warmup):
        for run in cands.values():
            run()
    times = {k: [] for k in cands}
    for _ in range(repeats):
        for k, run in cands.items():
            times[k].append(run())
    return times


def summarise(times: dict, **meta) -> dict:
    """Medians, min, max and mlp-backend's ratio to every other candidate (its median over
    theirs: below 1, mlp-backend is faster)."""
    res = {**meta, "times": times,
           "median": {k: statistics.median(v) for k, v in times.items()},
           "min": {k: min(v) for k, v in times.items()}, "max": {k: max(v) for k, v in times.items()}}
    ours = res["median"]["mlp-backend"]
    res["ratios"] = {f"mlp-backend/{k}": ours / v for k, v in res["median"].items() if k != "mlp-backend"}
    return res


def compare(net: str, x, y, *, batch: int, device: str, repeats: int, peers: bool = True,
            log=print, optimizer: str = "sgd", cuda_graphs: "str | None" = None) -> dict:
    """One interleaved comparison of :func:`~mlp_backend.studies.bench.candidates.candidates`
    for ``net`` at ``batch`` with ``optimizer``."""
    cands = candidates(net_sizes(net), x, y, batch=batch, device=device, optimizer=optimizer,
                       cuda_graphs=cuda_graphs, peers=peers, log=log)
    times = interleave(cands, repeats)
    meta = {"net": net, "rows": x.shape[0], "batch": batch, "device": device, "repeats": repeats}
    if device != "cpu" or optimizer != "sgd":
        meta.update(optimizer=optimizer, lr=LR[optimizer])
    if device != "cpu":
        meta.update(cuda_graphs=cuda_graphs or "auto", graph_status=graph_status(cands["mlp-backend"].trainer))
    return summarise(times, **meta)


def format_table(results: list[dict]) -> str:
    """The Markdown table of :func:`compare` results; batch and optimizer columns where the
    results carry an optimizer (the GPU run, or a CPU run with --optimizers)."""
    long = any("optimizer" in r for r in results)
    lines = ["| net | " + ("batch | optimizer | " if long else "") + "candidate | median s/epoch | min–max | "
             "mlp-backend ÷ this |", "|---|---|---|---|---|" + ("---|---|" if long else "")]
    for res in results:
        key = f"| {res['net']} | " + (f"{res['batch']} | {res.get('optimizer', 'sgd')} | " if long else "")
        for k, med in res["median"].items():
            ratio = "—" if k == "mlp-backend" else f"{res['ratios'][f'mlp-backend/{k}']:.2f}×"
            lines.append(f"{key}{k} | {med:.4f} | {res['min'][k]:.4f}–{res['max'][k]:.4f} | {ratio} |" if long else
                         f"{key}{k} | {med:.3f} | {res['min'][k]:.3f}–{res['max'][k]:.3f} | {ratio} |")
    return "\n".join(lines)

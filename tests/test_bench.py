"""The benchmark (mlp-backend bench): its arguments, the candidate plan, the interleaved
timing protocol, the ratios, tables and JSON, on the CPU; the CUDA-only measurements (the
GPU run, PyTorch's whole-epoch CUDA graph) under ``pytest -m gpu``. No timed assertions."""
import argparse
import inspect
import json
import subprocess
import sys

import numpy as np
import pytest

from mlp_backend.studies.bench import candidates, command, comparison, environment, gpu, memory
from mlp_backend.apps import cli
from mlp_backend.training.trainer import Trainer

from conftest import GPU_OK, HAVE_TORCH, blobs, needs_gpu, needs_torch

HAS_GRAPHS = "cuda_graphs" in inspect.signature(Trainer).parameters


def _args(*argv):
    p = argparse.ArgumentParser()
    command.add_arguments(p)
    return p.parse_args(list(argv))


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """A small MNIST-shaped data set file (uint8 784-pixel rows, 10 classes)."""
    x, y = blobs(1_200, n_features=784, n_classes=10, seed=5)
    path = tmp_path_factory.mktemp("bench") / "digits.npz"
    np.savez(path, x_train=x[:1_000], y_train=y[:1_000], x_test=x[1_000:], y_test=y[1_000:])
    return path


def test_plan_fills_in_each_devices_defaults():
    cpu = command.plan(_args())
    assert cpu == {"nets": ["784-100-40-10", "784-512-256-10"], "batches": [128], "optimizers": ["sgd"],
                   "cuda_graphs": None, "default_run": False}
    cuda = command.plan(_args("--device", "cuda"))
    assert cuda == {"nets": ["784-100-40-10", "784-512-256-10"], "batches": [128, 1024],
                   "optimizers": ["sgd", "adam"], "cuda_graphs": "auto", "default_run": True}
    g = command.plan(_args("--device", "cuda", "--cuda-graphs", "on", "--batch", "256, 64", "--optimizers", "adam",
                           "--no-default-run", "--nets", "784-32-10", "--widths", "64"))
    assert g == {"nets": ["784-32-10", "784-64-10"], "batches": [256, 64], "optimizers": ["adam"],
                 "cuda_graphs": "on", "default_run": False}
    assert command.plan(_args("--default-run", "--skip-compare"))["default_run"] is True
    assert command.plan(_args("--skip-compare"))["nets"] == []
    # the CPU run has no graph mode, whatever --cuda-graphs says
    assert command.plan(_args("--cuda-graphs", "on"))["cuda_graphs"] is None


@pytest.mark.parametrize("argv,match", [(["--batch", "12x"], "--batch wants positive integers"),
                                        (["--batch", "0"], "--batch wants positive integers"),
                                        (["--optimizers", "sgd,lbfgs"], "lbfgs; choose from sgd, adam")])
def test_plan_rejects_bad_input(argv, match):
    with pytest.raises(ValueError, match=match):
        command.plan(_args(*argv))
    with pytest.raises(SystemExit, match=match):  # the command says the same, before loading anything
        command.main([*argv, "--data", "synthetic"])


def test_cli_bench_takes_cuda_graphs(capsys):
    args = cli.build_parser().parse_args(["bench", "--device", "cuda", "--cuda-graphs", "off"])
    assert args.cuda_graphs == "off" and args.device == "cuda"
    assert cli.build_parser().parse_args(["bench"]).cuda_graphs == "auto"
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["bench", "--cuda-graphs", "maybe"])
    assert "invalid choice: 'maybe'" in capsys.readouterr().err


def test_candidate_names_per_device():
    assert candidates.candidate_names("cpu", None) == ["floor", "mlp-backend", "torch", "sklearn"]
    assert candidates.candidate_names("cpu", None, optimizer="adam") == ["floor", "mlp-backend", "torch"]
    assert candidates.candidate_names("cpu", None, peers=False) == ["floor", "mlp-backend"]
    assert candidates.candidate_names("cuda", "auto") == ["floor", "mlp-backend", "mlp-backend graphs off",
                                                          "torch", "torch graph-epoch"]
    assert candidates.candidate_names("cuda", "on", peers=False) == ["floor", "mlp-backend", "mlp-backend graphs off"]
    assert candidates.candidate_names("cuda", "off") == ["floor", "mlp-backend", "torch", "torch graph-epoch"]


def test_interleave_then_summarise():
    """Every repeat runs each candidate once, in turn, after an untimed warm-up round; the
    summary's medians, ranges and ratios (mlp-backend's median over each peer's) follow."""
    calls = []

    def fake(name, seconds):
        it = iter(seconds)

        def run():
            calls.append(name)
            return next(it)
        return run
    cands = {"floor": fake("floor", [99, 1, 3, 2]), "mlp-backend": fake("mlp-backend", [99, 2, 6, 4]),
             "torch": fake("torch", [99, 8, 9, 7])}
    times = comparison.interleave(cands, repeats=3)
    assert calls == ["floor", "mlp-backend", "torch"] * 4
    assert times == {"floor": [1, 3, 2], "mlp-backend": [2, 6, 4], "torch": [8, 9, 7]}
    res = comparison.summarise(times, net="784-8-10", batch=128)
    assert res["net"] == "784-8-10" and res["times"] is times
    assert res["median"] == {"floor": 2, "mlp-backend": 4, "torch": 8}
    assert res["min"] == {"floor": 1, "mlp-backend": 2, "torch": 7}
    assert res["max"] == {"floor": 3, "mlp-backend": 6, "torch": 9}
    assert res["ratios"] == {"mlp-backend/floor": 2.0, "mlp-backend/torch": 0.5}


def test_format_table_cpu_layout_unchanged_and_gpu_columns():
    cpu = comparison.summarise({"floor": [0.1], "mlp-backend": [0.2]}, net="784-8-10", batch=128, device="cpu")
    assert comparison.format_table([cpu]).splitlines() == [
        "| net | candidate | median s/epoch | min–max | mlp-backend ÷ this |", "|---|---|---|---|---|",
        "| 784-8-10 | floor | 0.100 | 0.100–0.100 | 2.00× |", "| 784-8-10 | mlp-backend | 0.200 | 0.200–0.200 | — |"]
    cuda = comparison.summarise({"floor": [0.01, 0.03], "mlp-backend": [0.02, 0.02],
                                 "torch graph-epoch": [0.05, 0.03]},
                                net="784-8-10", batch=1024, device="cuda", optimizer="adam")
    lines = comparison.format_table([cuda]).splitlines()
    assert lines[0] == ("| net | batch | optimizer | candidate | median s/epoch | min–max | mlp-backend ÷ this |")
    assert lines[1].count("---") == 7
    assert lines[2:] == ["| 784-8-10 | 1024 | adam | floor | 0.0200 | 0.0100–0.0300 | 1.00× |",
                         "| 784-8-10 | 1024 | adam | mlp-backend | 0.0200 | 0.0200–0.0200 | — |",
                         "| 784-8-10 | 1024 | adam | torch graph-epoch | 0.0400 | 0.0300–0.0500 | 0.50× |"]


def test_cpu_compare_keeps_its_result_shape():
    """The CPU comparison has the keys and candidates it always had; other optimizers add
    their name and learning rate (and leave scikit-learn's SGD out)."""
    x, y = blobs(600, n_features=784, n_classes=10, seed=1)
    res = comparison.compare("784-16-10", x, y, batch=128, device="cpu", repeats=1, log=lambda s: None)
    assert list(res) == ["net", "rows", "batch", "device", "repeats", "times", "median", "min", "max", "ratios"]
    expect = ["floor", "mlp-backend"] + (["torch"] if HAVE_TORCH else []) + ["sklearn"]
    assert list(res["median"]) == expect
    assert set(res["ratios"]) == {f"mlp-backend/{k}" for k in expect if k != "mlp-backend"}
    assert all(len(v) == 1 and v[0] > 0 for v in res["times"].values())
    adam = comparison.compare("784-16-10", x, y, batch=128, device="cpu", repeats=1, peers=False, optimizer="adam")
    assert adam["optimizer"] == "adam" and adam["lr"] == 1e-3 and list(adam["median"]) == ["floor", "mlp-backend"]


def test_graph_kwargs():
    assert candidates.graph_kwargs(None) == {}
    with pytest.raises(ValueError, match="auto, on, off"):
        candidates.graph_kwargs("yes")
    if HAS_GRAPHS:
        assert candidates.graph_kwargs("on") == {"cuda_graphs": "on"}
        assert candidates.graph_kwargs("off") == {"cuda_graphs": "off"}
    else:  # a Trainer without the option runs eager: fine for off and auto, an error for on
        assert candidates.graph_kwargs("off") == {} and candidates.graph_kwargs("auto") == {}
        with pytest.raises(RuntimeError, match="cannot capture"):
            candidates.graph_kwargs("on")


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_ours_epoch_fit_path_trains_as_train_epoch(optimizer):
    """The GPU run times mlp-backend through Trainer.fit (where graphs are captured); on the
    CPU that path takes bitwise the same steps as the CPU run's train_epoch, graphs off or auto."""
    x, y = blobs(500, n_features=784, n_classes=10, seed=2)
    lr = candidates.LR[optimizer]
    runs = {mode: candidates.ours_epoch([784, 16, 10], x, y, 64, "cpu", lr, optimizer, mode)
            for mode in (None, "off", "auto")}
    for run in runs.values():
        run(), run()
    ref = runs[None].trainer.model.host_params()
    for mode in ("off", "auto"):
        tr = runs[mode].trainer
        assert tr.epoch == 2
        for k, v in tr.model.host_params().items():
            np.testing.assert_array_equal(v, ref[k])
        assert candidates.graph_status(tr).startswith("eager")  # nothing is captured on the CPU


@needs_torch
def test_torch_epoch_adam_learns_on_cpu():
    x, y = blobs(800, n_features=784, n_classes=10, seed=3)
    run = candidates.torch_epoch([784, 32, 10], x, y, 64, "cpu", candidates.LR["adam"], "adam")
    for _ in range(3):
        assert run() > 0
    import torch
    with torch.no_grad():
        pred = run.net(torch.from_numpy(x).float() / 255).argmax(1).numpy()
    assert (pred == y).mean() > 0.9, (pred == y).mean()  # well-separated blobs: three Adam epochs learn them


@needs_torch
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_graph_epochs_step_is_the_eager_step(optimizer):
    """The step PyTorch's whole-epoch graph captures (autograd.grad, then a foreach SGD or
    Adam on the gradients) takes the eager peer's steps (zero_grad, backward, step): run on
    the CPU, where the maths is the same, from the same weights on the same rows."""
    import torch
    x, y = blobs(640, n_features=784, n_classes=10, seed=7)
    lr = candidates.LR[optimizer]
    nets = [candidates.torch_net([784, 24, 10], x, y, "cpu") for _ in range(2)]
    (eager, xt, yt), (static, _, _) = nets
    for a, b in zip(eager.parameters(), static.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)  # the seeded init: the same draw
    opt_e = candidates.torch_optimizer(optimizer, eager.parameters(), lr)
    opt_s = None if optimizer == "sgd" else candidates.torch_optimizer(optimizer, static.parameters(), lr)
    step = candidates.static_step(static, xt, yt, 128, lr, opt_s)
    lossf = torch.nn.CrossEntropyLoss()
    for i in range(5):
        rows = slice(i * 128, (i + 1) * 128)
        opt_e.zero_grad(set_to_none=True)
        lossf(eager(xt[rows]), yt[rows]).backward()
        opt_e.step()
        step(i)
    for a, b in zip(eager.parameters(), static.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-7)
    start = candidates.torch_net([784, 24, 10], x, y, "cpu")[0]
    assert not torch.equal(start[0].weight, static[0].weight)  # it trained


def test_main_writes_every_result_to_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    res = command.main(["--data", "synthetic", "--rows", "600", "--repeats", "1", "--nets", "784-16-10", "--no-peers",
                        "--optimizers", "sgd,adam", "--batch", "100,300", "--json", str(out)])
    assert res == 0
    data = json.loads(out.read_text())
    assert [(r["batch"], r["optimizer"]) for r in data["results"]] == [(100, "sgd"), (100, "adam"),
                                                                         (300, "sgd"), (300, "adam")]
    assert data["environment"]["threads"] == 1 and "default_run" not in data
    printed = capsys.readouterr().out
    assert "784-16-10 batch 300 adam: 1 interleaved repeats" in printed
    assert "| 784-16-10 | 300 | adam | mlp-backend |" in printed
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # atomic writes leave no temp file


def test_default_run_and_time_to_accuracy_on_cpu(digits, tmp_path):
    """The default train run (here on a small data set file, 2 epochs) and the default
    configuration's time to accuracy report what the GPU run records."""
    run = gpu.default_run(str(digits), "cpu", None, epochs=2, log=lambda s: None)
    assert run["epochs"] == 2 and len(run["epoch_seconds"]) == 2
    assert run["total_train_seconds"] == pytest.approx(sum(run["epoch_seconds"]))
    assert 0.5 < run["test_accuracy"] <= 1 and run["device"] == "cpu"
    assert run["command"] == f"mlp-backend train --device cpu --dataset {digits} --epochs 2"
    assert run["graph_status"].startswith("eager")
    x, y, xt, yt = environment.load_data(str(digits), None)
    tta = gpu.default_time_to_accuracy(x, y, xt, yt, "cpu", None, target=0.9, log=lambda s: None)
    assert (tta["net"], tta["optimizer"], tta["lr"], tta["schedule"], tta["epochs"], tta["batch"]) == \
        ("784-256-128-10", "adam", 1e-3, "cosine", 10, 128)
    first = next(i for i, a in enumerate(tta["accuracy_per_epoch"]) if a >= 0.9)
    assert tta["reached"]["epoch"] == first + 1 and tta["reached"]["accuracy"] >= 0.9
    # through the command: --default-run on the CPU, results in the JSON
    out = tmp_path / "b.json"
    assert command.main(["--data", str(digits), "--skip-compare", "--default-run", "--target", "0.9",
                         "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["default_run"]["epochs"] == 10 and data["default_time_to_accuracy"]["target"] == 0.9


def test_python_m_runs_the_command():
    """``python -m mlp_backend.studies.bench`` (what --coretype-both's child and the docs run)
    is the command: its options, and its errors with the command's exit status."""
    run = subprocess.run([sys.executable, "-m", "mlp_backend.studies.bench", "--help"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "--coretype-both" in run.stdout and "--ranks 1,2" in run.stdout
    bad = subprocess.run([sys.executable, "-m", "mlp_backend.studies.bench", "--batch", "0", "--data", "synthetic"],
                         capture_output=True, text=True)
    assert bad.returncode == 1 and "mlp-backend bench: --batch wants positive integers" in bad.stderr


def test_peak_memory_children_report_both_peaks():
    """The two children (``python -m mlp_backend.studies.bench.memory_child``, the second with
    ``-X tracemalloc``) train and report; the budget is 2 x the float32 training set plus
    the float32 parameters."""
    mem = memory.peak_memory("784-8-10", epochs=1, batch=512, optimizer="sgd", lr=0.1, data="synthetic")
    assert "error" not in mem, mem.get("error")
    assert (mem["train_rows"], mem["features"], mem["test_rows"]) == (60_000, 784, 10_000)
    assert mem["params"] == 784 * 8 + 8 + 8 * 10 + 10
    assert mem["maxrss_bytes"] > mem["train_rows"] * mem["features"]  # the uint8 training set at least
    assert 0 < mem["tracemalloc_peak_bytes"] < mem["maxrss_bytes"]  # traced: the child ran under -X tracemalloc
    assert mem["dataset_float32_bytes"] == 60_000 * 784 * 4
    assert mem["budget_bytes"] == 2 * mem["dataset_float32_bytes"] + 4 * mem["params"]
    assert (mem["net"], mem["epochs"], mem["batch"], mem["optimizer"]) == ("784-8-10", 1, 512, "sgd")


def test_gpu_environment_without_a_gpu_is_recorded_not_raised():
    env = gpu.gpu_environment()
    assert {"cupy", "torch", "nvmath", "nvidia_smi"} <= set(env)
    if GPU_OK:  # a GPU is here: the card and the CUDA versions are read
        assert env["gpu"] and env["cuda_runtime"].count(".") == 1


# ----- on a GPU ----------------------------------------------------------------------------

def on_gpu(test):
    for mark in needs_gpu:
        test = mark(test)
    return test


@on_gpu
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_torch_graph_epoch_replays_the_eager_steps(optimizer):
    """PyTorch's whole-epoch graph does the eager steps' work: replayed from the same start
    on the same gathered rows, the eager steps give the graph's parameters."""
    import torch
    x, y = blobs(1_000, n_features=784, n_classes=10, seed=6)
    run = candidates.torch_graph_epoch([784, 32, 10], x, y, 128, candidates.LR[optimizer], optimizer)
    assert run.steps == 1_000 // 128
    start = [p.detach().clone() for p in run.params]
    opt_state = None if run.optimizer is None else {
        id(p): {k: v.clone() if torch.is_tensor(v) else v for k, v in st.items()}
        for p, st in run.optimizer.state.items()}
    assert run() > 0
    graph = [p.detach().clone() for p in run.params]
    assert any(not torch.equal(a, b) for a, b in zip(start, graph))  # it trained
    with torch.no_grad():
        for p, s in zip(run.params, start):
            p.copy_(s)
        if opt_state is not None:
            for p, st in run.optimizer.state.items():
                for k, v in opt_state[id(p)].items():
                    st[k].copy_(v) if torch.is_tensor(v) else st.__setitem__(k, v)
    for i in range(run.steps):
        run.step(i)
    torch.cuda.synchronize()
    for a, b in zip(graph, run.params):
        torch.testing.assert_close(b.detach(), a)


@on_gpu
def test_gpu_bench_measures_every_candidate(digits, tmp_path):
    """`mlp-backend bench --device cuda` on a small data set: each net x batch x optimizer
    has all five candidates timed, the graph status, the GPU's versions, the default run
    and the time to accuracy."""
    out = tmp_path / "gpu.json"
    assert command.main(["--device", "cuda", "--data", str(digits), "--nets", "784-32-10", "--repeats", "2",
                         "--batch", "128,512", "--target", "0.9", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["environment"]["cuda"]["gpu"]
    assert [(r["batch"], r["optimizer"]) for r in data["results"]] == [(128, "sgd"), (128, "adam"),
                                                                         (512, "sgd"), (512, "adam")]
    for r in data["results"]:
        assert list(r["median"]) == ["floor", "mlp-backend", "mlp-backend graphs off", "torch", "torch graph-epoch"]
        assert all(len(v) == 2 and min(v) > 0 for v in r["times"].values())
        assert r["cuda_graphs"] == "auto" and r["graph_status"].startswith(("captured", "eager: "))
    assert data["default_run"]["epochs"] == 10 and data["default_run"]["device"].startswith("cuda")
    assert data["default_time_to_accuracy"]["device"] == "cuda"

"""Never lose a user's work: no silent overwrite of a run, SIGTERM saves a checkpoint like
Ctrl-C, and every name-valued option takes hyphens or underscores."""
import argparse
import json
import os
import signal
import subprocess
import sys

import pytest

from mlp_backend.apps import cli
from mlp_backend.training.checkpoint import load_checkpoint
from mlp_backend.training.run import RUN_FILES, unused_dir
from test_cli import tiny  # noqa: F401  (the module-scoped synthetic data set fixture)

FAST = ["--hidden", "16", "--batch-size", "64", "--device", "cpu"]


def _snapshot(d):
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(d.iterdir())}


# ----- no silent overwrite ------------------------------------------------------------------

def test_second_train_into_a_run_is_refused_and_touches_nothing(tiny, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--dataset", str(tiny), "--epochs", "1", "--quiet", *FAST]
    assert cli.main([*args, "--out", str(out)]) == 0
    before = _snapshot(out)
    assert {"model.npz", "history.csv", "metrics.json", "loss.png"} <= set(before)
    capsys.readouterr()
    assert cli.main([*args, "--out", str(out), "--seed", "1"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"error: {out} already holds a training run (model.npz")
    assert "nothing was changed" in err[-1] and "--overwrite" in err[-1]
    assert f"--resume {out / 'model.npz'}" in err[-1]
    assert _snapshot(out) == before  # same files, same bytes, same modification times
    # --overwrite replaces it
    assert cli.main([*args, "--out", str(out), "--seed", "1", "--overwrite"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["config"]["seed"] == 1
    assert (out / "model.npz").read_bytes() != before["model.npz"][0]


def test_resume_from_the_same_directory_is_allowed_another_is_not(tiny, tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    args = ["train", "--dataset", str(tiny), "--epochs", "1", "--quiet", *FAST]
    assert cli.main([*args, "--out", str(a)]) == 0
    assert cli.main([*args, "--out", str(b)]) == 0
    # continuing a's run in a: what its checkpoint is for
    assert cli.main(["train", "--resume", str(a / "model.npz"), "--epochs", "2", "--quiet"]) == 0
    assert load_checkpoint(a / "model.npz", device="cpu").epoch == 2
    assert cli.main(["train", "--resume", str(a / "model.npz"), "--out", str(a), "--epochs", "3", "--quiet"]) == 0
    # continuing a's run into b, which holds another run: refused, b untouched
    before = _snapshot(b)
    capsys.readouterr()
    assert cli.main(["train", "--resume", str(a / "model.npz"), "--out", str(b), "--epochs", "4", "--quiet"]) == 1
    assert "already holds a training run" in capsys.readouterr().err
    assert _snapshot(b) == before


@pytest.mark.parametrize("name", RUN_FILES)
def test_any_run_file_counts(tiny, tmp_path, name):
    """An interrupted run (interrupted.npz only), a diverged one (history.csv, metrics.json) ..."""
    (tmp_path / name).write_bytes(b"user's work")
    assert cli.main(["train", "--dataset", str(tiny), "--epochs", "1", "--quiet", "--out", str(tmp_path), *FAST]) == 1
    assert (tmp_path / name).read_bytes() == b"user's work"
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


def test_a_directory_with_other_files_is_fine(tiny, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    assert cli.main(["train", "--dataset", str(tiny), "--epochs", "1", "--quiet", "--out", str(tmp_path), *FAST]) == 0
    assert (tmp_path / "notes.txt").read_text() == "mine" and (tmp_path / "model.npz").is_file()


def test_default_output_directories_never_collide(tmp_path):
    first = tmp_path / "mnist-20261126-101010"
    assert unused_dir(first) == first
    first.mkdir()
    assert unused_dir(first) == tmp_path / "mnist-20261126-101010-2"
    (tmp_path / "mnist-20261126-101010-2").mkdir()
    assert unused_dir(first) == tmp_path / "mnist-20261126-101010-3"


# ----- SIGTERM --------------------------------------------------------------------------------

@pytest.mark.skipif(not hasattr(signal, "SIGTERM") or os.name != "posix", reason="POSIX signals")
def test_sigterm_saves_a_loadable_checkpoint_and_exits_143(tiny, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "mlp_backend.apps.cli", "train", "--dataset", str(tiny), "--out", str(out),
           "--epochs", "100000", "--schedule", "constant", *FAST]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        seen = []
        for line in proc.stderr:  # progress lines (not a terminal): once epoch 2's line is out,
            seen.append(line)     # epoch 1's end-of-epoch snapshot has certainly been taken
            if line.startswith("epoch 2/"):
                break
        else:
            pytest.fail("training ended before its second epoch:\n" + "".join(seen))
        proc.send_signal(signal.SIGTERM)
        rest_out, rest_err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = "".join(seen) + rest_err
    assert proc.returncode == 143, err
    assert "Traceback" not in err
    ckpt = out / "interrupted.npz"
    assert f"interrupted by SIGTERM: saved the state after the last completed epoch to {ckpt}" in err
    assert f"resume with: mlp-backend train --resume {ckpt} --out {out}" in err
    state = load_checkpoint(ckpt, device="cpu")
    assert state.epoch >= 1 and state.model.sizes == (784, 16, 10)
    rows = (out / "history.csv").read_text().splitlines()
    assert len(rows) - 1 >= state.epoch
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]  # atomic: no temporary file left
    # the printed command resumes it
    assert cli.main(["train", "--resume", str(ckpt), "--out", str(out), "--epochs", str(state.epoch + 1),
                     "--quiet"]) == 0
    assert load_checkpoint(out / "model.npz", device="cpu").epoch == state.epoch + 1


def test_sigterm_handler_is_restored(tiny, tmp_path):
    before = signal.getsignal(signal.SIGTERM)
    assert cli.main(["train", "--dataset", str(tiny), "--epochs", "1", "--quiet", "--out", str(tmp_path), *FAST]) == 0
    assert signal.getsignal(signal.SIGTERM) is before


# ----- hyphens and underscores ----------------------------------------------------------------

SPELLINGS = [
    (["train", "--loss", "cross-entropy"], "loss", "cross_entropy"),
    (["train", "--loss", "cross_entropy"], "loss", "cross_entropy"),
    (["train", "--activation", "leaky-relu", "tanh"], "activation", ["leaky_relu", "tanh"]),
    (["train", "--output", "Softmax"], "output", "softmax"),
    (["train", "--init", "paper_he"], "init", "paper-he"),
    (["train", "--init", "paper-random"], "init", "paper-random"),
    (["train", "--optimizer", "AdamW"], "optimizer", "adamw"),
    (["train", "--preset", "paper_lecun"], "preset", "paper-lecun"),
    (["train", "--grad-divisor", "Samples"], "grad_divisor", "samples"),
    (["train", "--loss-report", "paper"], "loss_report", "paper"),
    (["evaluate", "m.npz", "--split", "Train"], "split", "train"),
    (["reproduce", "--ablation-preset", "paper_he"], "ablation_preset", "paper-he"),
    (["sweep", "--inits", "paper_random,paper_he,he"], "inits", "paper-random,paper-he,he"),
    (["train", "--device", "array-api-strict:no-float64"], "device", "array_api_strict:no_float64"),
    (["predict", "m.npz", "x.png", "--device", "strict:cpu-device"], "device", "strict:CPU_DEVICE"),
    (["evaluate", "m.npz", "--device", "torch:cuda:1"], "device", "torch:cuda:1"),
]


@pytest.mark.parametrize("argv, dest, expected", SPELLINGS, ids=[" ".join(s[0][:1] + s[0][-2:]) for s in SPELLINGS])
def test_name_options_take_both_spellings(argv, dest, expected):
    args = cli.build_parser().parse_args(argv)
    assert getattr(args, dest) == expected


def _choice_actions(parser, path=()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _choice_actions(sub, (*path, name))
        elif action.choices and all(isinstance(c, str) for c in action.choices):
            yield path, action


def test_every_choice_option_takes_both_spellings():
    parser = cli.build_parser()
    checked = 0
    for path, action in _choice_actions(parser):
        for choice in action.choices:
            for spelling in {choice.replace("-", "_"), choice.replace("_", "-"), choice.upper()}:
                assert action.type(spelling) == choice, (path, action.dest, spelling)
                checked += 1
    assert checked > 20


def test_unknown_names_keep_the_usual_errors(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["train", "--preset", "paper_nope"])
    assert e.value.code == 2 and "invalid choice: 'paper_nope'" in capsys.readouterr().err
    assert cli.main(["train", "--loss", "hinge", "--dataset", "/nonexistent.npz"]) == 1


def test_train_with_hyphenated_names(tiny, tmp_path):
    assert cli.main(["train", "--dataset", str(tiny), "--epochs", "1", "--quiet", "--out", str(tmp_path),
                     "--loss", "cross-entropy", "--activation", "leaky-relu", "--init", "paper_he", *FAST]) == 0
    cfg = json.loads((tmp_path / "metrics.json").read_text())["config"]
    assert cfg["loss"] == "cross_entropy" and cfg["activation"] == ["leaky_relu"] and cfg["init"] == "paper-he"


# ----- the default device (the suite pins cpu; these set it explicitly) ------------------------

@pytest.mark.parametrize("env, label", [("array_api_strict:device1", "array_api_strict:device1"), ("cpu", "cpu")])
def test_environment_variable_picks_the_default_device(tiny, tmp_path, monkeypatch, env, label):
    from mlp_backend.backends import ENV_DEVICE
    monkeypatch.setenv(ENV_DEVICE, env)
    assert cli.main(["train", "--dataset", str(tiny), "--epochs", "1", "--quiet", "--out", str(tmp_path),
                     "--hidden", "16", "--batch-size", "64"]) == 0
    assert json.loads((tmp_path / "metrics.json").read_text())["device"] == label


def test_auto_without_a_usable_gpu_is_cpu(tiny, tmp_path, monkeypatch):
    from mlp_backend.backends import ENV_DEVICE, devices
    monkeypatch.setattr(devices, "cuda_available", lambda: (False, "no GPU (test)"))
    monkeypatch.setenv(ENV_DEVICE, "auto")
    assert cli.main(["train", "--dataset", str(tiny), "--epochs", "1", "--quiet", "--out", str(tmp_path),
                     "--hidden", "16", "--batch-size", "64"]) == 0
    assert json.loads((tmp_path / "metrics.json").read_text())["device"] == "cpu"

"""The `mlp-backend` command line on tiny synthetic data written as an NPZ data set."""
import json
import subprocess
import sys
import types

import numpy as np
import pytest
from PIL import Image

from mlp_backend.apps import cli
from mlp_backend.data.images import mnist_normalize
from mlp_backend.training.checkpoint import load_checkpoint

FAST = ["--hidden", "16", "--batch-size", "64", "--quiet"]


def _digits(n, rng):
    """Ten fixed random 'digit' patterns plus noise, as uint8 rows of 784 pixels."""
    protos = np.random.default_rng(1).integers(0, 256, (10, 784))
    y = rng.integers(0, 10, n)
    x = np.clip(protos[y] + rng.normal(0, 20, (n, 784)), 0, 255).astype(np.uint8)
    return x, y.astype(np.uint8)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """1,100 train + 200 test rows: enough for the paper split (1,000 test rows)."""
    rng = np.random.default_rng(0)
    (xt, yt), (xs, ys) = _digits(1100, rng), _digits(200, rng)
    path = tmp_path_factory.mktemp("data") / "tiny.npz"
    np.savez(path, x_train=xt, y_train=yt, x_test=xs, y_test=ys)
    return path


@pytest.fixture(scope="module")
def trained(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    assert cli.main(["train", "--dataset", str(tiny), "--epochs", "3", "--out", str(out), "--device", "cpu",
                     *FAST]) == 0
    return out


def _params(path):
    return load_checkpoint(path, device="cpu").model.host_params()


def test_train_writes_every_output(trained):
    names = {p.name for p in trained.iterdir()}
    assert {"history.csv", "metrics.json", "model.npz", "model.json", "loss.png", "accuracy.png"} <= names
    assert "interrupted.npz" not in names
    lines = (trained / "history.csv").read_text().splitlines()
    assert lines[0] == "epoch,seconds,lr,train_loss,train_accuracy,val_loss,val_accuracy"
    assert len(lines) == 4
    m = json.loads((trained / "metrics.json").read_text())
    assert m["status"] == "completed" and m["epochs_run"] == 3 and m["device"] == "cpu"
    for split in ("train", "val", "test"):
        assert 0 <= m[f"{split}_accuracy"] <= 1 and m[f"{split}_loss"] > 0
    assert m["test_accuracy"] > 0.9  # the synthetic classes are easy
    assert m["config"]["hidden"] == [16] and m["config"]["activation"] == ["relu"]
    assert m["config"]["optimizer"] == "adam" and m["config"]["schedule"] == "cosine"
    assert m["backend"] == "numpy" and "numpy" in m["versions"] and m["seconds_per_epoch"] > 0
    assert m["dataset"]["n_train"] + m["dataset"]["n_val"] == 1100 and m["dataset"]["n_test"] == 200
    for png in ("loss.png", "accuracy.png"):
        with Image.open(trained / png) as im:
            assert im.format == "PNG" and im.size[0] > 100
    ck = load_checkpoint(trained / "model.npz")
    assert ck.model.sizes == (784, 16, 10) and ck.epoch == 3 and ck.run_config["epochs"] == 3


def test_progress_lines_when_not_a_terminal(tiny, tmp_path, capsys):
    assert cli.main(["train", "--dataset", str(tiny), "--epochs", "2", "--out", str(tmp_path), "--hidden", "8"]) == 0
    cap = capsys.readouterr()
    assert "epoch 1/2" in cap.err and "epoch 2/2" in cap.err
    assert "test accuracy" in cap.out and str(tmp_path) in cap.out


def test_preset_quirks_and_overrides(tiny, tmp_path):
    common = ["train", "--dataset", str(tiny), "--preset", "paper-random", "--epochs", "2", "--hidden", "8", "4",
              "--dtype", "float32", "--quiet"]
    assert cli.main([*common, "--out", str(tmp_path / "p")]) == 0
    assert cli.main([*common, "--out", str(tmp_path / "o"), "--loss-report", "ours"]) == 0
    m = json.loads((tmp_path / "p" / "metrics.json").read_text())
    c = m["config"]
    assert (c["batch_size"], c["grad_divisor"], c["split"], c["loss_report"]) == ("full", "features", "paper", "paper")
    assert c["hidden"] == [8, 4] and c["dtype"] == "float32" and c["init"] == "paper-random"  # overrides win
    assert m["dataset"]["n_test"] == 1000 and m["dataset"]["n_val"] == 30  # paper split of 1,300 rows
    assert m["loss_report"].startswith("paper")
    paper = np.genfromtxt(tmp_path / "p" / "history.csv", delimiter=",", names=True)
    ours = np.genfromtxt(tmp_path / "o" / "history.csv", delimiter=",", names=True)
    np.testing.assert_allclose(paper["train_loss"], 2 * ours["train_loss"], rtol=1e-6)
    np.testing.assert_array_equal(paper["train_accuracy"], ours["train_accuracy"])


def test_divergence_exits_3_with_one_line(tiny, tmp_path):
    cmd = [sys.executable, "-m", "mlp_backend.apps.cli", "train", "--dataset", str(tiny), "--out", str(tmp_path),
           "--activation", "identity", "--output", "identity", "--loss", "mse", "--optimizer", "sgd",
           "--lr", "10", "--schedule", "constant", "--epochs", "5", *FAST]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 3, r.stderr
    assert "Traceback" not in r.stderr
    assert "error: training diverged at epoch 1" in r.stderr
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["status"] == "diverged" and "diverged" in m["error"]


def test_ctrl_c_saves_checkpoint_and_resume_matches(tiny, tmp_path, monkeypatch, capsys):
    args = ["train", "--dataset", str(tiny), "--epochs", "4", *FAST]
    assert cli.main([*args, "--out", str(tmp_path / "straight")]) == 0

    from mlp_backend.training.trainer import Trainer
    real = Trainer.train_epoch
    calls = []

    def interrupted_in_epoch_3(self, *a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(self, *a, **k)

    monkeypatch.setattr(Trainer, "train_epoch", interrupted_in_epoch_3)
    out = tmp_path / "stopped"
    assert cli.main([*args, "--out", str(out)]) == 130
    err = capsys.readouterr().err
    ckpt = out / "interrupted.npz"
    assert ckpt.is_file() and f"--resume {ckpt}" in err
    assert load_checkpoint(ckpt).epoch == 2  # the last completed epoch, not a half one
    monkeypatch.undo()
    assert cli.main(["train", "--resume", str(ckpt), "--quiet"]) == 0  # --out defaults to the checkpoint's dir
    assert not ckpt.exists()
    straight, resumed = _params(tmp_path / "straight" / "model.npz"), _params(out / "model.npz")
    for k in straight:
        assert np.array_equal(straight[k], resumed[k]), k
    assert len((out / "history.csv").read_text().splitlines()) == 5


def test_resume_refuses_architecture_change(trained):
    assert cli.main(["train", "--resume", str(trained / "model.npz"), "--hidden", "32", "--quiet"]) == 1


@pytest.mark.parametrize("argv,needle", [
    (["train", "--dataset", "/nonexistent/data.npz"], "no such file"),
    (["train", "--device", "nonsense"], "unknown device"),
    (["train", "--batch-size", "lots"], "--batch-size"),
    (["train", "--lr", "-1"], "--lr"),
    (["train", "--activation", "softmax"], "softmax"),
    (["evaluate", "/nonexistent/model.npz"], "no such checkpoint"),
])
def test_errors_are_one_line(argv, needle, capsys):
    assert cli.main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and needle in err[-1]


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["train", "--no-such-option"])
    assert e.value.code == 2
    assert cli.main([]) == 2


def test_help_explains_the_options(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    out = capsys.readouterr().out
    for opt in ("--dataset", "--hidden", "--activation", "--output", "--loss", "--init", "--optimizer", "--lr",
                "--batch-size", "--epochs", "--seed", "--device", "--dtype", "--val-fraction", "--preset",
                "--resume", "--out", "--quiet", "--schedule", "--weight-decay", "--momentum", "--patience",
                "--grad-divisor", "--split", "paper-he", "exit codes"):
        assert opt in out, opt


def test_evaluate_writes_report(trained, tiny, tmp_path, capsys):
    assert cli.main(["evaluate", str(trained / "model.npz"), "--dataset", str(tiny), "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "accuracy" in out and "precision" in out and "confusion matrix" in out
    ev = json.loads((tmp_path / "evaluation.json").read_text())
    cm = np.array(ev["confusion_matrix"])
    assert cm.shape == (10, 10) and cm.sum() == 200 and ev["n"] == 200
    assert ev["accuracy"] == pytest.approx(np.trace(cm) / 200)
    assert len(ev["per_class"]) == 10
    rows = (tmp_path / "confusion.csv").read_text().splitlines()
    assert len(rows) == 11 and rows[0].startswith("true\\predicted,0,1")
    assert (tmp_path / "per_class.csv").read_text().startswith("class,precision,recall,f1,support")
    with Image.open(tmp_path / "confusion.png") as im:
        assert im.format == "PNG"
    # the dataset defaults to the one the model was trained on
    assert cli.main(["evaluate", str(trained / "model.npz"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == ev["accuracy"]


def test_predict_images_and_csv(trained, tiny, tmp_path, capsys):
    with np.load(tiny) as z:
        x, y = z["x_test"][:4], z["y_test"][:4]
    # dark digit on white paper: inverted automatically; light on black: used as is
    img_a, img_b = tmp_path / "a.png", tmp_path / "b.jpg"
    a = x[0].reshape(28, 28).copy()
    a[0, :] = a[-1, :] = a[:, 0] = a[:, -1] = 0  # a black border, as in MNIST
    Image.fromarray(255 - a).resize((56, 56)).save(img_a)
    Image.fromarray(a).save(img_b, quality=95)
    csv = tmp_path / "rows.csv"
    np.savetxt(csv, np.c_[y, x], fmt="%d", delimiter=",")
    # images reach the model as MNIST digits were made (mnist_normalize), as in `serve`: the rows
    # predict must get for a.png (inverted) and b.jpg, written as a CSV file of their own
    expected = tmp_path / "normalised.csv"
    gray = lambda p: np.asarray(Image.open(p).convert("L"))  # noqa: E731
    np.savetxt(expected, [mnist_normalize(255 - gray(img_a)).ravel(), mnist_normalize(gray(img_b)).ravel()],
               fmt="%d", delimiter=",")
    assert cli.main(["predict", str(trained / "model.npz"), str(img_a), str(img_b), str(csv), str(expected),
                     "--json"]) == 0
    recs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(recs) == 2 + 4 + 2
    for image, row in zip(recs[:2], recs[6:]):
        assert image["label"] == row["label"]
        assert list(image["probabilities"].values()) == pytest.approx(list(row["probabilities"].values()), abs=1e-6)
    for r, t in zip(recs[2:6], y):
        assert r["true_label"] == int(t) and r["label"] == int(t)
        assert sum(r["probabilities"].values()) == pytest.approx(1, abs=1e-5)
    assert cli.main(["predict", str(trained / "model.npz"), str(csv)]) == 0
    assert f"rows.csv[0]: {y[0]}" in capsys.readouterr().out
    (tmp_path / "bad.csv").write_text("1,2,3\n")
    assert cli.main(["predict", str(trained / "model.npz"), str(tmp_path / "bad.csv")]) == 1


def test_predict_input_errors_are_one_line(trained, tmp_path, capsys):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    for name, message in [("broken.png", "broken.png: cannot read as an image"), ("missing.png", "no such file")]:
        assert cli.main(["predict", str(trained / "model.npz"), str(tmp_path / name)]) == 1
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and "Traceback" not in err


def test_class_labels_come_from_the_checkpoint(tmp_path, capsys):
    """A checkpoint with an estimator's classes labels predict's (and serve's) answers with them;
    one without has the output indices."""
    from mlp_backend import MLP
    from mlp_backend.apps.serve import DigitApp
    from mlp_backend.training.checkpoint import save_checkpoint
    model = MLP([784, 8, 3], device="cpu", seed=0)
    names = ["cat", "dog", "emu"]
    save_checkpoint(tmp_path / "named.npz", model, extra={"estimator": {"classes": names}})
    save_checkpoint(tmp_path / "plain.npz", model)
    assert load_checkpoint(tmp_path / "named.npz", device="cpu").class_labels == names
    assert load_checkpoint(tmp_path / "plain.npz", device="cpu").class_labels == [0, 1, 2]
    assert DigitApp(tmp_path / "named.npz").classes == names
    assert DigitApp(tmp_path / "plain.npz").classes == ["0", "1", "2"]
    rows = tmp_path / "rows.csv"
    np.savetxt(rows, np.random.default_rng(0).integers(0, 256, (2, 784)), fmt="%d", delimiter=",")
    assert cli.main(["predict", str(tmp_path / "named.npz"), str(rows), "--json"]) == 0
    recs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [list(r["probabilities"]) for r in recs] == [names, names] and all(r["label"] in names for r in recs)


def test_data_and_info(tiny, tmp_path, monkeypatch, capsys):
    import shutil
    monkeypatch.setenv("MLP_BACKEND_DATA_DIR", str(tmp_path))
    shutil.copy(tiny, tmp_path / "mnist.npz")
    assert cli.main(["data", "info", "mnist"]) == 0
    assert "present" in capsys.readouterr().out
    assert cli.main(["data", "fetch", "mnist"]) == 0  # from the cache: no network
    assert str(tmp_path / "mnist.npz") in capsys.readouterr().out
    assert cli.main(["data", "info"]) == 0
    assert "fashion-mnist" in capsys.readouterr().out
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert "cpu" in out and "usable" in out and "BLAS" in out
    assert cli.main(["info", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["backends"]
    assert any(r["device"] == "cpu" and r["usable"] for r in rows)


def test_plugin_subcommands(monkeypatch, capsys):
    fake = types.ModuleType("mlp_backend.studies.reproduce")

    def register(sub):
        p = sub.add_parser("reproduce", help="fake")
        p.set_defaults(func=lambda args: print("reproduced") or 0)

    fake.register = register
    monkeypatch.setitem(sys.modules, "mlp_backend.studies.reproduce", fake)
    assert cli.main(["reproduce"]) == 0
    assert "reproduced" in capsys.readouterr().out
    # a missing module is skipped; an ImportError *inside* a plugin is not swallowed
    real = cli.importlib.import_module

    def fake_import(name):
        if name == "mlp_backend.studies.bench":
            raise ModuleNotFoundError("No module named 'somedep'", name="somedep")
        return real(name)

    monkeypatch.setattr(cli.importlib, "import_module", fake_import)
    with pytest.raises(ModuleNotFoundError, match="somedep"):
        cli.build_parser()

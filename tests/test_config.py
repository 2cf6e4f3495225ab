"""The run configuration (mlp_backend.training.config): how a preset and options resolve,
what validation normalises and refuses, what a resumed run may change, and the paper's
loss-report rule (mlp_backend.training.presets.loss_report_factor)."""
import pytest

from mlp_backend import MLP, make_optimizer
from mlp_backend.training.checkpoint import save_checkpoint
from mlp_backend.training.config import (CHOICES, DEFAULTS, EXTRA_DEFAULTS, RESUME_FIXED, load_run_config,
                                         resolve_config, validate_config)
from mlp_backend.training.presets import PRESETS, loss_report_factor, remove_quirks, step_lr
from mlp_backend.training.runner import MODES


def test_preset_then_options_and_unset_options_keep_the_preset():
    cfg = resolve_config("paper-he", epochs=5, lr=None, hidden=[32, "16"])
    assert cfg["preset"] == "paper-he" and cfg["epochs"] == 5 and cfg["hidden"] == [32, 16]
    assert cfg["lr"] == PRESETS["paper-he"]["lr"] and cfg["batch_size"] == "full"  # None: the preset's
    assert cfg["seed"] == EXTRA_DEFAULTS["seed"] and cfg["cuda_graphs"] == "auto"  # options no preset has
    assert resolve_config()["preset"] == "default"
    assert {k: resolve_config()[k] for k in DEFAULTS} == validate_config(DEFAULTS)
    with pytest.raises(ValueError, match="unknown preset 'nope'; choose from paper-random, "):
        resolve_config("nope")


def test_validation_normalises_and_names_the_option():
    cfg = validate_config({**DEFAULTS, "hidden": 64, "activation": "tanh", "batch_size": "32"})
    assert cfg["hidden"] == [64] and cfg["activation"] == ["tanh"] and cfg["batch_size"] == 32
    assert validate_config({**DEFAULTS, "activation": "relu"})["activation"] == ["relu", "relu"]
    for bad, message in (({"batch_size": "lots"}, "--batch-size must be a positive integer or 'full'"),
                         ({"batch_size": 0}, "--batch-size must be >= 1"), ({"lr": 0}, "--lr must be > 0"),
                         ({"hidden": [8, 0]}, "--hidden widths must be >= 1"), ({"epochs": 0}, "--epochs must be >= 1"),
                         ({"val_fraction": 1.0}, r"--val-fraction must be in \[0, 1\)"),
                         ({"patience": 0}, "--patience must be >= 1"),
                         ({"grad_divisor": "n"}, "--grad-divisor must be one of samples, features, got 'n'"),
                         ({"split": "x"}, "--split must be one of standard, paper"),
                         ({"loss_report": "x"}, "--loss-report must be one of ours, paper")):
        with pytest.raises(ValueError, match=message):
            validate_config({**DEFAULTS, **bad})


def test_cuda_graphs_modes_are_the_runners():
    assert CHOICES["cuda_graphs"] is MODES
    for mode in MODES:
        assert resolve_config(cuda_graphs=mode)["cuda_graphs"] == mode
    with pytest.raises(ValueError, match="--cuda-graphs must be one of auto, on, off, got 'yes'"):
        resolve_config(cuda_graphs="yes")


def test_resume_keeps_the_checkpoints_config_and_refuses_a_new_architecture(tmp_path):
    cfg = resolve_config(hidden=[8], epochs=2)
    model = MLP([784, 8, 10], device="cpu")
    path = save_checkpoint(tmp_path / "model.npz", model, make_optimizer("adam", 1e-3), run_config=cfg)
    resumed = load_run_config(path, {"epochs": 5, "lr": None, "hidden": [8]})  # the same width is no change
    assert resumed["epochs"] == 5 and resumed["lr"] == cfg["lr"] and resumed["hidden"] == [8]
    assert "hidden" in RESUME_FIXED and "optimizer" in RESUME_FIXED
    with pytest.raises(ValueError, match="cannot change --hidden when resuming"):
        load_run_config(path, {"hidden": [16]})
    with pytest.raises(ValueError, match="cannot change --optimizer when resuming"):
        load_run_config(path, {"optimizer": "sgd"})
    bare = save_checkpoint(tmp_path / "bare.npz", model)
    with pytest.raises(ValueError, match="this checkpoint has no run config"):
        load_run_config(bare, {})


def test_paper_loss_report_doubles_an_mse_only():
    """The printed mean_squared_loss is twice our mse (eq. 15's 1/2n); the printed
    categorical_cross_entropy has our cross-entropy's scale."""
    paper = PRESETS["paper-he"]
    assert paper["loss_report"] == "paper" and loss_report_factor(paper) == 2.0
    assert loss_report_factor({**paper, "loss": "cross_entropy"}) == 1.0
    assert loss_report_factor({**paper, "loss_report": "ours"}) == 1.0
    assert loss_report_factor(remove_quirks(paper, ["sigmoid_mse"])) == 1.0
    assert loss_report_factor(PRESETS["default"]) == 1.0


def test_step_lr_scales_only_under_lr_scale():
    paper = PRESETS["paper-he"]
    assert step_lr(paper, 36_900, 784) == 0.01
    fixed = remove_quirks(paper, ["feature_divisor"])
    assert step_lr(fixed, 36_900, 784) == pytest.approx(0.01 * 36_900 / 784)
    assert step_lr({**fixed, "batch_size": 128}, 36_900, 784) == pytest.approx(0.01 * 128 / 784)

"""Checkpoints: round trips across backends and dtypes, resume equivalence, atomic writes,
never unpickling."""
import os
import pickle

import numpy as np
import pytest

from conftest import MATRIX, blobs
from mlp_backend.backends import get_backend
from mlp_backend.training.checkpoint import CheckpointError, load_checkpoint, read_metadata, save_checkpoint
from mlp_backend.model import MLP
from mlp_backend.optim import make_optimizer, make_schedule
from mlp_backend.training.trainer import Trainer

SIZES = [8, 7, 5, 3]


def _trained(device, dtype, optimizer="adam", epochs=1, patience=None, **kw):
    b = get_backend(device)
    x, y = blobs(120, n_features=8)
    model = MLP(SIZES, ["relu", "tanh"], device=b, dtype=dtype, seed=1)
    opt = make_optimizer(optimizer, 0.01, **kw)
    tr = Trainer(model, opt, batch_size=32, schedule=make_schedule("cosine", 0.01, 4), seed=3,
                 progress="none", patience=patience)
    data = (b.asarray(x[:96]), b.asarray(y[:96], "int64"), b.asarray(x[96:]), b.asarray(y[96:], "int64"))
    tr.fit(data[0], data[1], epochs, data[2], data[3])
    return model, opt, tr, data


@pytest.mark.parametrize("device,dtype", MATRIX)
def test_round_trip_same_device(tmp_path, device, dtype):
    model, opt, tr, _ = _trained(device, dtype)
    path = save_checkpoint(tmp_path / "m.npz", model, opt, tr, run_config={"lr": 0.01})
    ck = load_checkpoint(path, device=device)
    assert ck.model.backend.label == model.backend.label and ck.model.dtype_name == dtype
    assert ck.model.config() == model.config()
    for k, v in model.host_params().items():
        got = ck.model.backend.to_numpy(ck.model.params[k])
        assert got.dtype == v.dtype and np.array_equal(got, v), k
        assert ck.model.backend.owns(ck.model.params[k])
    assert ck.optimizer.t == opt.t and ck.optimizer.config() == opt.config()
    a, b = opt.state_dict(model.backend), ck.optimizer.state_dict(ck.model.backend)
    assert a.keys() == b.keys()
    for k in a:
        assert np.array_equal(np.asarray(a[k]), np.asarray(b[k])), k
    assert ck.trainer_state == tr.state() and ck.epoch == 1
    assert ck.run_config == {"lr": 0.01}
    assert read_metadata(path)["saved_from"]["device"] == model.backend.label
    assert (tmp_path / "m.json").is_file()  # the human-readable metadata copy


@pytest.mark.parametrize("device,dtype", [p for p in MATRIX if "cupy" not in p.id and "numpy" not in p.id])
def test_any_device_loads_on_cpu_and_back(tmp_path, device, dtype):
    """What a CUDA-trained model does on a CPU-only machine, with the GPU stand-ins."""
    model, opt, tr, _ = _trained(device, dtype)
    path = save_checkpoint(tmp_path / "m.npz", model, opt, tr)
    cpu = load_checkpoint(path, device="cpu")
    assert cpu.model.backend.name == "numpy"
    for k, v in model.host_params().items():
        assert np.array_equal(cpu.model.params[k], v)
    back = load_checkpoint(save_checkpoint(tmp_path / "c.npz", cpu.model, cpu.optimizer), device=device)
    for k, v in model.host_params().items():
        assert np.array_equal(back.model.backend.to_numpy(back.model.params[k]), v)


def test_float64_checkpoint_on_device_without_float64(tmp_path):
    model, opt, tr, _ = _trained("cpu", "float64")
    path = save_checkpoint(tmp_path / "m.npz", model, opt, tr)
    with pytest.raises(CheckpointError, match="no float64"):
        load_checkpoint(path, device="array_api_strict:no_float64")
    ck = load_checkpoint(path, device="array_api_strict:no_float64", dtype="float32")
    assert ck.model.dtype_name == "float32"
    np.testing.assert_allclose(ck.model.backend.to_numpy(ck.model.params["w1"]), model.params["w1"], rtol=1e-6)


@pytest.mark.parametrize("device", ["cpu", pytest.param("torch:cpu", marks=MATRIX[5].marks)])
@pytest.mark.parametrize("optimizer,patience", [("adam", None), ("momentum", None), ("adam", 1)])
def test_resume_is_bit_identical(tmp_path, device, optimizer, patience):
    """4 epochs straight == 2 epochs, save, load into a fresh trainer, 2 more."""
    straight, _, tr_s, _ = _trained(device, "float32", optimizer, epochs=4, patience=patience)
    model, opt, tr, data = _trained(device, "float32", optimizer, epochs=2, patience=patience)
    path = save_checkpoint(tmp_path / "half.npz", model, opt, tr)
    del model, opt, tr
    ck = load_checkpoint(path, device=device)
    tr2 = Trainer(ck.model, ck.optimizer, batch_size=32, schedule=make_schedule("cosine", 0.01, 4), seed=999,
                  progress="none", patience=patience)  # the seed is overwritten by the saved RNG state
    ck.restore(tr2)
    tr2.fit(*data[:2], 4, *data[2:])
    for k, v in straight.host_params().items():
        assert np.array_equal(ck.model.host_params()[k], v), k
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert strip(tr2.history.rows) == strip(tr_s.history.rows)


def test_write_is_atomic(tmp_path, monkeypatch):
    model, opt, tr, _ = _trained("cpu", "float32")
    path = save_checkpoint(tmp_path / "m.npz", model, opt, tr)
    before = path.read_bytes()

    def broken_savez(f, **arrays):
        f.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, model, opt, tr)
    with pytest.raises(OSError):
        save_checkpoint(tmp_path / "new.npz", model, opt, tr)
    assert path.read_bytes() == before  # the good checkpoint is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "m.npz"]  # no temp files, no new.npz


def test_never_unpickles(tmp_path, monkeypatch):
    model, opt, tr, _ = _trained("cpu", "float32")
    path = save_checkpoint(tmp_path / "m.npz", model, opt, tr)
    seen = []
    real_load = np.load
    monkeypatch.setattr(np, "load", lambda *a, **k: seen.append(k.get("allow_pickle")) or real_load(*a, **k))
    load_checkpoint(path)
    assert seen == [False]
    monkeypatch.undo()

    # An .npz with an object array (which needs pickle) is refused.
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["param/w1"] = np.array([{"evil": 1}], dtype=object)
    np.savez(tmp_path / "obj.npz", **arrays)
    with pytest.raises(CheckpointError, match="pickle"):
        load_checkpoint(tmp_path / "obj.npz")

    # A raw pickle whose loading would run code is refused, and the code never runs.
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (tmp_path / "evil.npz").write_bytes(pickle.dumps(Evil()))
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "evil.npz")
    assert not marker.exists()


def test_bad_files_give_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "missing.npz")
    np.savez(tmp_path / "plain.npz", a=np.zeros(3))
    with pytest.raises(CheckpointError, match="metadata"):
        load_checkpoint(tmp_path / "plain.npz")
    (tmp_path / "trunc.npz").write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(CheckpointError, match="not a readable"):
        load_checkpoint(tmp_path / "trunc.npz")


def test_non_zip_files_are_named_as_such(tmp_path):
    # np.load reads any non-zip, non-.npy bytes as a pickle: the error must say what the
    # file is, not that it "holds pickled objects"
    for name, data in (("text.npz", b"hello, not a checkpoint\n"), ("empty.npz", b"")):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(CheckpointError, match="not a zip archive") as err:
            load_checkpoint(tmp_path / name, device="cpu")
        assert "pickle" not in str(err.value)

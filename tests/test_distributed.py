"""Data-parallel training (mlp_backend.training.distributed; ``--ranks N`` launched by
mlp_backend.apps.launch): sharding, launching and failures without MPI; with ``mpiexec -n 2``
(``mpi`` marker, skipped where mpi4py or mpiexec is missing), 2 ranks x B/2 rows against
1 process x B, resume across rank counts, and a failing, hanging or dying rank ending the job.

CI runs the ``mpi`` tests once, from .ci/mpi (after installing the [mpi] extra); the main
test run has no mpi4py and skips them.
"""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import mpi_worker
from conftest import needs_gpu, needs_torch
from mlp_backend.apps import cli, launch
from mlp_backend.training import distributed
from mlp_backend.training.checkpoint import load_checkpoint
from mlp_backend.training.distributed import Distributed, shard_bounds
from mlp_backend.training.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
WORKER = str(Path(mpi_worker.__file__).resolve())
LAUNCH_VARS = distributed.SIZE_VARS + ("PMI_RANK", "OMPI_COMM_WORLD_RANK")


def _mpi_usable():
    if not distributed.have_mpi4py():
        return False, "mpi4py is not installed (pip install 'mlp-backend[mpi]')"
    if distributed.find_mpiexec() is None:
        return False, "no mpiexec next to python or on PATH (pip install mpich)"
    r = subprocess.run([sys.executable, "-c", "from mpi4py import MPI"], capture_output=True, text=True)
    if r.returncode:
        return False, f"mpi4py cannot load an MPI library: {r.stderr.strip().splitlines()[-1]}"
    return True, ""


MPI_OK, MPI_WHY = _mpi_usable()
mpi_usable = pytest.mark.skipif(not MPI_OK, reason=MPI_WHY or "MPI is usable")
# Relative to the largest entry: float64 to 1e-9 (as the issue asks); float32 fitted:
# the 2-rank sums differ from one process's only in rounding order, 2e-7 measured after
# 4 epochs of SGD, momentum and Adam on this problem, so 2e-5 leaves a 100x margin.
TOL = {"float64": 1e-9, "float32": 2e-5}


def _env(**extra):
    """This environment without a launcher's rank variables (a test never runs as a rank)."""
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARS}
    env.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MLP_BACKEND_DEVICE="cpu",
               PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]), **extra)
    return env


def _mpiexec(n, *args, timeout=120, **env):
    cmd = [distributed.find_mpiexec(), "-n", str(n), *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=_env(**env), cwd=ROOT)


def _close(a, b, tol):
    return np.max(np.abs(a - b)) <= tol * max(np.max(np.abs(b)), 1e-30)


@pytest.fixture(autouse=True)
def _not_a_rank(monkeypatch):
    for var in LAUNCH_VARS:
        monkeypatch.delenv(var, raising=False)


# ----- sharding (no MPI) ------------------------------------------------------------------

class FakeComm:
    """Rank and size only: enough for the sharding arithmetic."""

    def __init__(self, rank, size):
        self.rank, self.size = rank, size

    def Get_rank(self):
        return self.rank

    def Get_size(self):
        return self.size


@pytest.mark.parametrize("rows,size", [(41, 2), (40, 2), (7, 3), (1, 2), (0, 2), (100, 7)])
def test_shards_partition_every_batch_in_order(rows, size):
    parts = [shard_bounds(10, 10 + rows, r, size) for r in range(size)]
    assert parts[0][0] == 10 and parts[-1][1] == 10 + rows
    assert all(a[1] == b[0] for a, b in zip(parts, parts[1:]))  # contiguous, in rank order
    sizes = [hi - lo for lo, hi in parts]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)


@pytest.mark.parametrize("batch,n,size", [(41, 206, 2), (40, 200, 2), (5, 23, 3), (None, 23, 2), (64, 23, 2)])
def test_ranks_together_train_on_the_single_process_batches(batch, n, size):
    """Gluing the ranks' shares of each batch back together gives exactly the batches one
    process trains on: the same rows, in the same order, from the same seed."""
    from mlp_backend.model import MLP
    from mlp_backend.optim import make_optimizer
    single = Trainer(MLP([2, 3, 2], device="cpu"), make_optimizer("sgd", 0.1), batch_size=batch, seed=7)
    plan, order = single.plan(n), single.epoch_order(n)
    order = np.arange(n) if order is None else np.asarray(order)
    expected = [order[b.start:b.start + b.rows] for b in plan.batches]
    shards = []
    for r in range(size):
        d = Distributed(FakeComm(r, size), timeout=0)
        order, bounds, rows = d.shard_epoch(n, batch, np.random.default_rng(7), True)
        assert rows == [len(e) for e in expected]
        shards.append([order[a:b] for a, b in bounds])
        # the rank's trainer plans exactly these steps, each scaled by its global batch's rows
        ranked = Trainer(MLP([2, 3, 2], device="cpu"), make_optimizer("sgd", 0.1), batch_size=batch, seed=7, dist=d)
        assert [(b.start, b.start + b.rows, b.normalizer) for b in ranked.plan(n).batches] == \
            [(a, b, r_) for (a, b), r_ in zip(bounds, rows)]
    for k, e in enumerate(expected):
        assert np.array_equal(np.concatenate([s[k] for s in shards]), e)


def test_batch_smaller_than_ranks_is_refused():
    d = Distributed(FakeComm(0, 4), timeout=0)
    with pytest.raises(ValueError, match="batch size 3 is smaller than the 4 ranks"):
        d.shard_epoch(10, 3, np.random.default_rng(0), True)


# ----- launching (no MPI) -----------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """600 train + 100 test rows of 784 'pixels' as an NPZ data set."""
    rng = np.random.default_rng(0)
    protos = np.random.default_rng(1).integers(0, 256, (10, 784))

    def digits(n):
        y = rng.integers(0, 10, n)
        return np.clip(protos[y] + rng.normal(0, 20, (n, 784)), 0, 255).astype(np.uint8), y.astype(np.uint8)
    (xt, yt), (xs, ys) = digits(600), digits(100)
    path = tmp_path_factory.mktemp("data") / "tiny.npz"
    np.savez(path, x_train=xt, y_train=yt, x_test=xs, y_test=ys)
    return path


FAST = ["--hidden", "12", "--batch-size", "49", "--dtype", "float64", "--schedule", "constant", "--quiet"]


@pytest.mark.parametrize("ranks", [[], ["--ranks", "1"]])
def test_one_process_never_imports_mpi(tiny, tmp_path, ranks):
    code = ("import sys; from mlp_backend.apps.cli import main; "
            f"rc = main(['train', '--dataset', {str(tiny)!r}, '--epochs', '1', '--out', {str(tmp_path)!r}, "
            f"*{FAST!r}, *{ranks!r}]); "
            "assert rc == 0, rc; bad = [m for m in sys.modules if m.startswith('mpi4py')]; "
            "assert not bad, bad; print('ok')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), timeout=120)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr


def test_ranks_without_mpi4py_names_the_extra(tiny, tmp_path):
    code = ("import sys; sys.modules['mpi4py'] = None; from mlp_backend.apps.cli import main; "
            f"sys.exit(main(['train', '--dataset', {str(tiny)!r}, '--ranks', '2', '--out', {str(tmp_path)!r}]))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), timeout=60)
    assert r.returncode == 1
    assert "error: --ranks 2 needs MPI" in r.stderr and "pip install 'mlp-backend[mpi]'" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_ranks_without_mpiexec_says_so(tiny, monkeypatch, capsys):
    monkeypatch.setattr(launch, "have_mpi4py", lambda: True)
    monkeypatch.setattr(launch, "find_mpiexec", lambda: None)
    assert cli.main(["train", "--dataset", str(tiny), "--ranks", "2", "--quiet"]) == 1
    assert "no mpiexec was found" in capsys.readouterr().err


@pytest.mark.parametrize("argv,env,needle", [
    (["--ranks", "0"], {}, "--ranks must be >= 1"),
    (["--ranks", "4", "--batch-size", "2"], {}, "--batch-size 2 is smaller than the 4 ranks"),
    (["--batch-size", "2"], {"PMI_SIZE": "3"}, "--batch-size 2 is smaller than the 3 ranks"),
    (["--ranks", "3"], {"PMI_SIZE": "2"}, "--ranks 3 given inside an mpiexec job of 2 ranks"),
])
def test_bad_rank_options_fail_before_any_work(tiny, tmp_path, monkeypatch, capsys, argv, env, needle):
    """Checked from the options and the launcher's environment alone: every rank refuses
    the same way, before MPI starts or data loads."""
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(distributed, "_mpi", lambda: pytest.fail("MPI was initialised"))
    assert cli.main(["train", "--dataset", str(tiny), "--out", str(tmp_path), *argv]) == 1
    assert needle in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("job_code", [0, 9])
def test_ranks_reruns_the_command_under_mpiexec(tiny, monkeypatch, capsys, job_code):
    seen = {}

    class Proc:
        def __init__(self, cmd, env):
            seen.update(cmd=cmd, env=env)

        def wait(self):
            return job_code
    monkeypatch.setattr(launch, "have_mpi4py", lambda: True)
    monkeypatch.setattr(launch, "find_mpiexec", lambda: "/opt/mpi/bin/mpiexec")
    monkeypatch.setattr(launch.subprocess, "Popen", Proc)
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    argv = ["train", "--dataset", str(tiny), "--ranks", "2", "--epochs", "1", "--ranks=2"]
    assert cli.main(argv) == job_code
    assert seen["cmd"] == ["/opt/mpi/bin/mpiexec", "-n", "2", sys.executable, "-m", "mlp_backend",
                           "train", "--dataset", str(tiny), "--epochs", "1"]
    assert seen["env"]["OPENBLAS_NUM_THREADS"] == str(max(1, (os.cpu_count() or 1) // 2))
    err = capsys.readouterr().err
    assert "running 2 ranks" in err
    assert ("ended with exit code 9: a rank exited or was killed" in err) == (job_code == 9)


# ----- aborting: the message reaches the launcher first (no MPI) --------------------------

posix_only = pytest.mark.skipif(os.name != "posix", reason="FIONREAD on a pipe is POSIX")


@posix_only
def test_an_abort_waits_until_its_message_is_read():
    """A rank's stderr is a pipe to mpiexec; MPI_Abort ends the job at once, so abort()
    waits until the reader has taken every byte (here: a reader that starts 0.2 s late)."""
    import threading
    r, w = os.pipe()
    with os.fdopen(r, "rb") as reader, os.fdopen(w, "w") as writer:
        writer.write("error on rank 1 of 2: boom\n")
        writer.flush()
        got = []
        late = threading.Timer(0.2, lambda: got.append((os.read(reader.fileno(), 1 << 16), time.monotonic())))
        late.start()
        assert distributed._wait_until_read([writer], timeout=30) < 30  # not at the limit
        returned = time.monotonic()
        late.join()
        [(data, read_at)] = got
        assert data == b"error on rank 1 of 2: boom\n"
        assert returned >= read_at  # not before the reader had it


@posix_only
def test_an_abort_waits_at_most_its_limit_and_never_for_a_file(tmp_path):
    r, w = os.pipe()
    with os.fdopen(r, "rb"), os.fdopen(w, "w") as writer:
        writer.write("nobody reads this\n")
        writer.flush()
        assert 0.3 <= distributed._wait_until_read([writer], timeout=0.3) < 30
    with open(tmp_path / "log", "w") as f:  # a file (or a terminal) is written when written
        f.write("x\n")
        f.flush()
        assert distributed._wait_until_read([f, object()], timeout=30) < 30


# ----- mpiexec -n 2 -----------------------------------------------------------------------

_two_ranks = {}


def two_ranks(device, tmp_path_factory):
    """Every case of mpi_worker.CASES trained by 2 ranks on ``device`` (one mpiexec job)."""
    if device not in _two_ranks:
        out = tmp_path_factory.mktemp("mpi") / "eq.npz"
        r = _mpiexec(2, sys.executable, WORKER, "equivalence", out, device)
        assert r.returncode == 0, r.stderr
        _two_ranks[device] = np.load(out)
    return _two_ranks[device]


@pytest.mark.mpi
@mpi_usable
@pytest.mark.parametrize("case", mpi_worker.CASES, ids=[c[0] for c in mpi_worker.CASES])
@pytest.mark.parametrize("device,transport", [
    ("cpu", "mpi"),                                  # NumPy: the flat buffers, reduced in place
    ("array_api_strict:device1", "mpi-host"),        # the GPU stand-in: device arrays via the host
    pytest.param("torch:cpu", "mpi-host", marks=needs_torch),
])
def test_two_ranks_take_the_steps_of_one_process(tmp_path_factory, device, transport, case):
    """SGD, momentum (with weight decay), Adam; float64 and float32; minibatches that split
    unevenly, a last batch of one row (rank 1 gets none), the full batch."""
    name, dtype = case[0], case[3]
    got_all = two_ranks(device, tmp_path_factory)
    single = mpi_worker.state(mpi_worker.train_case(case, device))
    for key, want in single.items():
        got = got_all[f"{name}/{key}"]
        assert got.dtype == want.dtype and _close(got, want, TOL[dtype]), (key, np.max(np.abs(got - want)))
    meta = json.loads(str(got_all["meta"]))
    assert meta["identical"][name], "weights or optimizer state differ between the ranks"
    assert meta["ranks"] == 2 and meta["transport"] == transport



def _train(tiny, out, *extra, epochs):
    return ["train", "--dataset", str(tiny), "--epochs", str(epochs), "--out", str(out), *FAST, *extra]


def _weights(path):
    ck = load_checkpoint(path, device="cpu")
    sd = ck.optimizer.state_dict(ck.model.backend)
    return {**ck.model.host_params(), **{k: v for k, v in sd.items() if "/" in k}}, ck


@pytest.mark.mpi
@mpi_usable
def test_resume_across_rank_counts(tiny, tmp_path):
    """4 epochs in one process == 2 epochs on 2 ranks + 2 more on 1 == 2 on 1 + 2 more on 2
    (``--ranks 2``, which runs mpiexec itself), with Adam and a partial last batch."""
    assert cli.main(_train(tiny, tmp_path / "straight", epochs=4)) == 0
    straight, _ = _weights(tmp_path / "straight" / "model.npz")

    loud = [a for a in _train(tiny, tmp_path / "a", epochs=2) if a != "--quiet"]
    r = _mpiexec(2, sys.executable, "-m", "mlp_backend.apps.cli", *loud)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("test accuracy") == 1 and r.stderr.count("epoch 2/2") == 1  # rank 0 alone prints
    assert "data-parallel over 2 ranks: mpi" in r.stderr
    meta = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert meta["distributed"]["ranks"] == 2 and meta["epochs_run"] == 2
    assert cli.main(["train", "--resume", str(tmp_path / "a" / "model.npz"), "--epochs", "4", "--quiet"]) == 0

    assert cli.main(_train(tiny, tmp_path / "b", epochs=2)) == 0
    r = subprocess.run([sys.executable, "-m", "mlp_backend.apps.cli", "train", "--resume", str(tmp_path / "b" / "model.npz"),
                        "--epochs", "4", "--ranks", "2", "--quiet"], capture_output=True, text=True, env=_env(),
                       timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    for run in ("a", "b"):
        resumed, ck = _weights(tmp_path / run / "model.npz")
        assert ck.epoch == 4
        for k in straight:
            assert _close(resumed[k], straight[k], TOL["float64"]), (run, k)
    rows = (tmp_path / "b" / "history.csv").read_text().splitlines()
    assert len(rows) == 5  # header + 4 epochs, rank 0 alone wrote it



@pytest.mark.mpi
@mpi_usable
@pytest.mark.parametrize("scenario,needle", [
    ("raise", "error on rank 1 of 2: uncaught exception"),
    ("die", None),  # mpiexec ends the other rank; MPICH passes the dead rank's status on
    ("hang", "error on rank 0 of 2: the gradients' all-reduce got no answer from the other ranks within 3 s"),
])
def test_a_failing_rank_ends_the_job(tmp_path, scenario, needle):
    """A rank that raises, exits or hangs mid-training: the job ends non-zero, with a
    message, in bounded time (the subprocess timeout fails the test on a hang)."""
    r = _mpiexec(2, sys.executable, WORKER, scenario, tmp_path / "x.npz", timeout=90, MLP_BACKEND_DIST_TIMEOUT="3")
    assert r.returncode != 0
    assert needle is None or needle in r.stderr, r.stderr
    if scenario == "raise":
        assert "RuntimeError: rank 1 fails on purpose in epoch 2" in r.stderr


@pytest.mark.mpi
@mpi_usable
def test_a_rank_error_in_the_cli_aborts_with_its_message(tiny, tmp_path):
    """An exception on one rank of `mpiexec -n 2 mlp-backend train` (here: rank 1 cannot
    write, injected) prints `error on rank 1 of 2: ...` and ends every rank."""
    code = ("import os, sys\n"
            "from mlp_backend.training import trainer as train\n"
            "real = train.Trainer.train_epoch\n"
            "def broken(self, *a, **k):\n"
            "    if self.epoch == 1 and os.environ.get('PMI_RANK') == '1':\n"
            "        raise OSError('disk full (injected)')\n"
            "    return real(self, *a, **k)\n"
            "train.Trainer.train_epoch = broken\n"
            "from mlp_backend.apps.cli import main\n"
            f"sys.exit(main({_train(tiny, tmp_path / 'x', epochs=3)!r}))\n")
    r = _mpiexec(2, sys.executable, "-c", code, timeout=90)
    assert r.returncode != 0
    assert "error on rank 1 of 2: disk full (injected)" in r.stderr
    assert not (tmp_path / "x" / "model.npz").exists()



@pytest.mark.mpi
@mpi_usable
def test_the_python_example_runs_on_two_ranks(tiny, tmp_path):
    """`mpiexec -n 2 python examples/train_mnist.py`: one model, rank 0 alone prints and saves."""
    out = tmp_path / "example.npz"
    r = _mpiexec(2, sys.executable, ROOT / "examples" / "train_mnist.py", "--dataset", tiny, "--epochs", "1",
                 "--device", "cpu", "--out", out)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("test accuracy") == 1 and "2 ranks" in r.stdout
    assert load_checkpoint(out).epoch == 1


# ----- GPUs: NCCL, or host buffers where ranks share one --------------------------------------

def _on_gpu(f):
    for mark in needs_gpu:
        f = mark(f)
    return f


@pytest.mark.mpi
@mpi_usable
@_on_gpu
@pytest.mark.parametrize("ranks", [1, 2])
def test_gpu_ranks_take_the_steps_of_one_gpu_process(tmp_path, ranks):
    """CuPy ranks: one rank always gets its own GPU, so NCCL runs (a one-rank NCCL
    communicator); two ranks use NCCL with two GPUs and fall back to host buffers over MPI,
    saying so, where they share one. Either way: the steps of one CuPy process."""
    import cupy
    out = tmp_path / "eq.npz"
    r = _mpiexec(ranks, sys.executable, WORKER, "equivalence", out, "cuda", timeout=300)
    assert r.returncode == 0, r.stderr
    got = np.load(out)
    meta = json.loads(str(got["meta"]))
    if ranks == 1 or cupy.cuda.runtime.getDeviceCount() >= ranks:
        assert meta["transport"] == "nccl", meta
    else:
        assert meta["transport"] == "mpi-host" and "share a GPU" in meta["reason"], meta
    assert meta["graph_status"].startswith("eager: distributed training"), meta  # no CUDA graph with ranks
    for case in mpi_worker.CASES:
        single = mpi_worker.state(mpi_worker.train_case(case, "cuda"))
        for key, want in single.items():
            assert _close(got[f"{case[0]}/{key}"], want, TOL[case[3]]), (case[0], key)
        assert meta["identical"][case[0]]


@pytest.mark.mpi
@mpi_usable
def test_bench_ranks_reports_scaling_and_the_allreduce(tmp_path):
    """`mlp-backend bench --ranks 1,2` on a tiny synthetic run: every configuration timed,
    speed-up against 1 rank x 1 thread, the all-reduce's cost beside the step's."""
    out = tmp_path / "scaling.json"
    r = subprocess.run([sys.executable, "-m", "mlp_backend.apps.cli", "bench", "--ranks", "1,2", "--nets", "784-16-10",
                        "--data", "synthetic", "--rows", "2048", "--repeats", "1", "--batch", "256", "--json", out],
                       capture_output=True, text=True, env=_env(), timeout=180, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    rows = {(x["ranks"], x["threads"]): x for x in json.loads(out.read_text())["results"]}
    assert set(rows) == {(1, 1), (2, 1), (1, 2)}
    assert rows[(1, 1)]["speedup"] == 1.0 and rows[(2, 1)]["epochs_timed"] == 2
    two = rows[(2, 1)]
    assert two["transport"] == "mpi" and two["allreduce_bytes"] == 4 * (784 * 16 + 16 + 16 * 10 + 10)
    assert 0 < two["allreduce_s"] and two["allreduce_share"] == pytest.approx(two["allreduce_s"] / two["step_s"])
    assert "| 784-16-10 | 2 × 1 |" in r.stdout

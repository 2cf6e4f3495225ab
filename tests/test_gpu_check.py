"""benchmarks/gpu_check.sh and fetch_gpu_wheels.sh: valid shell, and where there is no GPU,
the check stops at once, before running anything, with a message that says why (and the
reason in summary.json); on a fake GPU the whole flow runs to its summary. The GPU parts
themselves only do their work on a GPU machine."""
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHECK = ROOT / "benchmarks" / "gpu_check.sh"
FETCH = ROOT / "benchmarks" / "fetch_gpu_wheels.sh"


def _exe(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def _check(tmp_path, env_path, python=sys.executable):
    out = tmp_path / "out"
    env = {**os.environ, "PATH": env_path, "OUT": str(out), "PYTHON": str(python),
           "GPU_CHECK_SITE": str(tmp_path / "site")}
    r = subprocess.run([shutil.which("bash"), str(CHECK)], env=env, capture_output=True, text=True, timeout=120)
    return r, out


@pytest.mark.parametrize("script", [CHECK, FETCH], ids=["gpu_check", "fetch_gpu_wheels"])
def test_scripts_are_valid_shell(script):
    subprocess.run(["bash", "-n", str(script)], check=True)
    if shutil.which("shellcheck"):
        r = subprocess.run(["shellcheck", str(script)], capture_output=True, text=True)
        assert r.returncode == 0, r.stdout


def test_no_nvidia_smi_stops_at_once(tmp_path):
    """A PATH with the basic tools and no nvidia-smi: exit 2, the reason, nothing run."""
    tools = tmp_path / "bin"
    tools.mkdir()
    for tool in ("dirname", "date", "mktemp", "mkdir", "rm"):
        (tools / tool).symlink_to(shutil.which(tool))
    r, out = _check(tmp_path, str(tools))
    assert r.returncode == 2, r.stderr
    assert "nvidia-smi not found" in r.stderr and "stopped before running anything" in r.stderr
    assert json.loads((out / "summary.json").read_text())["error"].startswith("nvidia-smi not found")
    assert sorted(p.name for p in out.iterdir()) == ["summary.json"]


def test_failing_nvidia_smi_stops_at_once(tmp_path):
    fake = tmp_path / "fake"
    fake.mkdir()
    _exe(fake / "nvidia-smi", "#!/bin/sh\necho 'NVIDIA-SMI has failed because it could not communicate with the driver'\nexit 9\n")
    r, out = _check(tmp_path, f"{fake}:{os.environ['PATH']}")
    assert r.returncode == 2 and "nvidia-smi failed" in r.stderr
    assert "could not communicate" in (out / "nvidia-smi.txt").read_text()


def test_no_cupy_stops_at_once(tmp_path):
    """nvidia-smi answers but CuPy does not import (a python whose `import cupy` fails)."""
    fake = tmp_path / "fake"
    fake.mkdir()
    _exe(fake / "nvidia-smi", "#!/bin/sh\necho 'fake GPU'\n")
    python = _exe(fake / "python", f"#!/bin/sh\ncase \"$2\" in *'import cupy'*) echo 'No module named cupy' >&2; exit 1;; esac\n"
                                   f"exec {sys.executable} \"$@\"\n")
    r, out = _check(tmp_path, f"{fake}:{os.environ['PATH']}", python)
    assert r.returncode == 2 and "CuPy is missing or sees no GPU" in r.stderr
    assert "No module named cupy" in (out / "setup.log").read_text()
    assert not (out / "pytest.log").exists()


def test_the_whole_flow_on_a_fake_gpu(tmp_path):
    """Past the checks, on a machine that only pretends to have a GPU (an nvidia-smi that
    answers, a CuPy that imports and counts one device): every part runs under its limit
    and fails or finds nothing to test, as it must here, and the summary still comes out
    -- each part's status, pytest's counts from its JUnit report, the versions -- with the
    logs, at most 8 files (what the device tool brings back), and exit 1."""
    fake = tmp_path / "fake"
    (fake / "cupy" / "cuda").mkdir(parents=True)
    _exe(fake / "nvidia-smi", "#!/bin/sh\necho 'NVIDIA H100 80GB HBM3, 580.159.04, 81559 MiB'\n")
    (fake / "cupy" / "__init__.py").write_text("__version__ = '0.0-fake'\nfrom . import cuda\n")
    (fake / "cupy" / "cuda" / "__init__.py").write_text(
        "class runtime:\n    @staticmethod\n    def getDeviceCount():\n        return 1\n")
    python = _exe(fake / "python", f"#!/bin/sh\nexport PYTHONPATH=\"{fake}${{PYTHONPATH:+:$PYTHONPATH}}\"\n"
                                   f"exec {sys.executable} \"$@\"\n")
    r, out = _check(tmp_path, f"{fake}:{os.environ['PATH']}", python)
    assert r.returncode == 1, r.stdout + r.stderr
    files = {p.name for p in out.iterdir()}
    assert {"summary.json", "nvidia-smi.txt", "setup.log", "pytest.log", "train.log", "bench.log"} <= files
    assert len(files) <= 8
    summary = json.loads((out / "summary.json").read_text())
    parts = summary["parts"]
    assert list(parts) == ["pytest", "train", "bench"]
    assert parts["pytest"]["status"].startswith(("failed: no GPU test ran", "timed out")), parts
    assert parts["train"]["status"] == parts["bench"]["status"] == "failed", parts
    assert all(p["seconds"] <= p["limit_seconds"] + 3 for p in parts.values()), parts
    assert summary["versions"]["cupy"] == "0.0-fake"
    if summary["pytest_gpu"]["source"] == "junit":
        assert summary["pytest_gpu"]["passed"] == 0 and summary["pytest_gpu"]["skipped"] > 100
    assert "all results in" in r.stdout and "pytest -m gpu:" in r.stdout

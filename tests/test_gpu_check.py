"""benchmarks/gpu_check.sh and fetch_gpu_wheels.sh: valid shell, and where there is no GPU,
the check stops at once, before running anything, with a message that says why (and the
reason in summary.json). The GPU parts themselves only run on a GPU machine."""
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

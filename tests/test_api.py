"""The public API of ``import mlp_backend as mb`` stays put: every name in ``__all__`` is
the same object on every access, before and after every submodule is imported, and no
submodule shares a public name (the old bug: ``mb.train`` was the function on first access
and the ``mlp_backend.train`` submodule once something had imported it)."""
import importlib
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import mlp_backend as mb

ROOT = Path(__file__).resolve().parents[1]

# Run in a fresh interpreter, so that no other test has imported a submodule first.
ACCESS_CHECK = r"""
import importlib, json, pkgutil, sys, types
import mlp_backend as mb
first = {name: getattr(mb, name) for name in mb.__all__}
again = [name for name in mb.__all__ if getattr(mb, name) is not first[name]]
imported, skipped = [], {}
for info in pkgutil.walk_packages(mb.__path__, "mlp_backend."):
    if info.name.rpartition(".")[2] == "__main__":  # importing one runs its command line
        continue
    try:
        importlib.import_module(info.name)
    except ModuleNotFoundError as exc:  # an optional package this machine lacks (cupy ...)
        if (exc.name or "").partition(".")[0] == "mlp_backend":
            raise
        skipped[info.name] = exc.name
    else:
        imported.append(info.name)
print(json.dumps({
    "again": again,
    "changed": [name for name in mb.__all__ if getattr(mb, name) is not first[name]],
    "modules": [name for name in mb.__all__ if isinstance(getattr(mb, name), types.ModuleType)],
    "imported": imported, "skipped": skipped,
}))
"""


def _run(*args, timeout=120):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT, timeout=timeout)


def test_every_public_name_is_one_object_before_and_after_importing_every_submodule():
    r = _run("-c", ACCESS_CHECK)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["again"] == [], f"a second access gave another object: {got['again']}"
    assert got["changed"] == [], f"importing the submodules changed: {got['changed']}"
    assert got["modules"] == [], f"public names that are modules: {got['modules']}"
    # The walk went through the packages (what it skipped needs a package this machine lacks).
    reached = {"mlp_backend.training.trainer", "mlp_backend.apps.cli", "mlp_backend.data.dataset",
               "mlp_backend.backends.devices", "mlp_backend.interop.estimator", "mlp_backend.studies.bench"}
    assert reached <= set(got["imported"]), (reached - set(got["imported"]), got["skipped"])


def test_every_lazy_name_resolves_and_no_submodule_shadows_it():
    """A submodule ``mlp_backend.X`` (or ``P.X`` in the package ``P`` a lazy name comes
    from) would replace the public ``X`` as soon as anything imported it."""
    assert set(mb._LAZY) <= set(mb.__all__)
    shadowed = {m.name for m in pkgutil.iter_modules(mb.__path__)} & set(mb.__all__)
    assert not shadowed, f"submodules named like public names: {shadowed}"
    for name, source in mb._LAZY.items():
        module = importlib.import_module(source)
        assert getattr(mb, name) is getattr(module, name), name
        if hasattr(module, "__path__"):  # a package: its submodules are attributes too once imported
            assert name not in {m.name for m in pkgutil.iter_modules(module.__path__)}, (name, source)


def test_train_is_the_training_function():
    from mlp_backend.training import trainer
    assert mb.train is trainer.train and callable(mb.train)
    assert mb.fit is trainer.fit


def test_python_dash_m_mlp_backend_help_exits_0():
    r = _run("-m", "mlp_backend", "--help")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("usage: mlp-backend")

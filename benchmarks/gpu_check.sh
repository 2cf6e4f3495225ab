#!/usr/bin/env bash
# The whole GPU story in one command, in under 4 minutes, on a machine with an NVIDIA GPU,
# CuPy and PyTorch, with or without network:
#   1. checks that there is a GPU (nvidia-smi) and that CuPy sees it, else stops at once;
#   2. installs what else it needs offline from .whl/ (benchmarks/fetch_gpu_wheels.sh fills
#      it where there is network) into a private folder on PYTHONPATH, and uses .gl/mnist.npz
#      as the MNIST cache when it is there;
#   3. runs `pytest -m gpu`, `mlp-backend train --device cuda` (the default run) and
#      `mlp-backend bench --device cuda` (benchmarks/bench.py), each under its own time limit;
#   4. writes every result into ONE folder: $OUT if set, else runs/gpu_check-DATE:
#        summary.json        date, card, driver, CUDA, CuPy, PyTorch, NumPy, nvmath versions;
#                            each part's exit status, seconds, limit; pytest's pass/fail counts;
#                            the train run's time and accuracy; the benchmark's medians
#        nvidia-smi.txt      `nvidia-smi` as the run found the card
#        setup.log           the offline install and the import check
#        pytest.log          `pytest -m gpu -v`
#        train.log           `mlp-backend train --device cuda`
#        train_metrics.json  that run's metrics.json
#        bench.log           the benchmark's table and its default-run lines
#        bench.json          the benchmark's full results (written as it goes)
#      (8 files: the device tool brings back at most 8.)
#
#   bash benchmarks/gpu_check.sh                 # from anywhere; it works in the repository root
#
# Exit status: 0 every part passed; 1 a part failed or ran out of time (summary.json says
# which); 2 no usable GPU, CuPy or dependency (nothing was run).
# Knobs: PYTHON (default python3), GPU_CHECK_SECONDS (whole budget, default 215),
# BENCH_REPEATS (default 5), GPU_CHECK_SITE (install folder, default /tmp/gpu_check_site).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
T0=$SECONDS
PYTHON=${PYTHON:-python3}
DEADLINE=${GPU_CHECK_SECONDS:-215}
RESULTS=${OUT:-runs/gpu_check-$(date -u +%Y%m%d-%H%M%S)}
SITE=${GPU_CHECK_SITE:-/tmp/gpu_check_site}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX") || exit 2
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$RESULTS" || exit 2
RESULTS=$(cd "$RESULTS" && pwd)
STARTED=$(date -u +%Y-%m-%dT%H:%M:%SZ)

die() {
    local why=${*//\\/\\\\}
    printf '{"started": "%s", "error": "%s"}\n' "$STARTED" "${why//\"/\\\"}" >"$RESULTS/summary.json"
    echo "gpu_check: $*" >&2
    echo "gpu_check: stopped before running anything; see $RESULTS" >&2
    exit 2
}

# Seconds for the next part: at most WANT, leaving RESERVE for the parts after it.
slot() {
    local left=$((DEADLINE - (SECONDS - T0) - $2))
    ((left > $1)) && left=$1
    ((left < 5)) && left=5
    echo "$left"
}

# run_part NAME LIMIT LOG COMMAND...: run under `timeout`, record status, seconds and limit.
declare -A RC SECS LIMIT
run_part() {
    local name=$1 limit=$2 log=$3 t=$SECONDS
    shift 3
    echo "== $name (limit ${limit}s): $*" | tee -a "$log" >&2
    timeout -k 3 "$limit" "$@" >>"$log" 2>&1
    RC[$name]=$?
    SECS[$name]=$((SECONDS - t))
    LIMIT[$name]=$limit
    echo "   exit ${RC[$name]} after ${SECS[$name]}s" >&2
}

# ----- 1. a GPU, CuPy, PyTorch ------------------------------------------------------------
command -v nvidia-smi >/dev/null 2>&1 ||
    die "nvidia-smi not found: no NVIDIA GPU driver on this machine. Run this check on a machine with an NVIDIA GPU."
nvidia-smi >"$RESULTS/nvidia-smi.txt" 2>&1 ||
    die "nvidia-smi failed (see nvidia-smi.txt): no usable NVIDIA GPU here."
command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found; set PYTHON=/path/to/python3"
"$PYTHON" -c 'import cupy, sys; sys.exit(0 if cupy.cuda.runtime.getDeviceCount() > 0 else 1)' >>"$RESULTS/setup.log" 2>&1 ||
    die "CuPy is missing or sees no GPU (see setup.log). Install it: pip install -e '.[cuda13]' (or cuda12, matching the driver)."
"$PYTHON" -c 'import torch' >>"$RESULTS/setup.log" 2>&1 ||
    echo "gpu_check: PyTorch is not installed: its tests skip and the benchmark runs without the PyTorch peers" >&2

# ----- 2. what else is needed, offline ------------------------------------------------------
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if compgen -G ".whl/*.whl" >/dev/null; then
    echo "== offline install from .whl/ into $SITE" >>"$RESULTS/setup.log"
    pip_offline=("$PYTHON" -m pip install --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE")
    mapfile -t pure < <(compgen -G ".whl/*-none-any.whl")
    if [ "${#pure[@]}" -gt 0 ]; then
        "${pip_offline[@]}" "${pure[@]}" >>"$RESULTS/setup.log" 2>&1 ||
            die "the offline install of ${pure[*]} failed (see setup.log)"
    fi
    # nvmath-python is built per Python version: a wheel for another one is reported, not fatal.
    for w in .whl/nvmath_python-*.whl; do
        [ -e "$w" ] || continue
        "${pip_offline[@]}" "$w" >>"$RESULTS/setup.log" 2>&1 ||
            echo "gpu_check: $w does not install for this Python (see setup.log); fetch the wheel for $("$PYTHON" -c 'import sys; print("cp%d%d" % sys.version_info[:2])')" | tee -a "$RESULTS/setup.log" >&2
    done
    export PYTHONPATH="$PWD:$SITE${PYTHONPATH#"$PWD"}"
else
    echo "== no .whl/ folder: using the packages already installed" >>"$RESULTS/setup.log"
fi
"$PYTHON" -c 'import mlp_backend, array_api_compat, array_api_strict; print("imports ok:", mlp_backend.__file__)' \
    >>"$RESULTS/setup.log" 2>&1 ||
    die "mlp_backend or its test dependencies do not import (see setup.log). Without network, run benchmarks/fetch_gpu_wheels.sh where there is network and bring .whl/ along; with network, pip install -e '.[test,cuda13]'."
"$PYTHON" -c 'import nvmath.bindings.cublas' >>"$RESULTS/setup.log" 2>&1 ||
    echo "gpu_check: nvmath-python does not import (see setup.log): training cannot capture CUDA graphs" | tee -a "$RESULTS/setup.log" >&2
if [ -f .gl/mnist.npz ]; then
    export MLP_BACKEND_DATA_DIR="$PWD/.gl"
fi
"$PYTHON" -c 'from mlp_backend.data import cache_path; import sys; p = cache_path("mnist"); print("MNIST:", p, p.exists()); sys.exit(0 if p.exists() else 1)' \
    >>"$RESULTS/setup.log" 2>&1 ||
    echo "gpu_check: MNIST is not cached (see setup.log) and may not be fetchable here: bring .gl/mnist.npz along" | tee -a "$RESULTS/setup.log" >&2
"$PYTHON" -c 'import json, platform, numpy
from mlp_backend.studies.bench.gpu import gpu_environment
env = {"python": platform.python_version(), "numpy": numpy.__version__, **gpu_environment()}
for mod in ("array_api_compat", "array_api_strict"):
    env[mod] = __import__(mod).__version__
print(json.dumps(env))' >"$WORK/versions.json" 2>>"$RESULTS/setup.log" || echo '{}' >"$WORK/versions.json"
export MPLBACKEND=Agg PYTHONUNBUFFERED=1
unset MLP_BACKEND_DEVICE  # each test names its device

# ----- 3. the checks -----------------------------------------------------------------------
run_part pytest "$(slot 90 120)" "$RESULTS/pytest.log" \
    "$PYTHON" -m pytest -m gpu -v -p no:cacheprovider -o addopts="" -rfEs --junitxml="$WORK/junit.xml"
run_part train "$(slot 40 100)" "$RESULTS/train.log" \
    "$PYTHON" -m mlp_backend.apps.cli train --device cuda --out "$WORK/train"
cp "$WORK/train/metrics.json" "$RESULTS/train_metrics.json" 2>/dev/null
run_part bench "$(slot 600 5)" "$RESULTS/bench.log" \
    "$PYTHON" -m mlp_backend.studies.bench --device cuda --repeats "${BENCH_REPEATS:-5}" --json "$RESULTS/bench.json"

# ----- 4. the summary ----------------------------------------------------------------------
parts=$(for k in pytest train bench; do printf '%s %s %s %s\n' "$k" "${RC[$k]}" "${SECS[$k]}" "${LIMIT[$k]}"; done)
"$PYTHON" - "$RESULTS" "$WORK" "$STARTED" "$((SECONDS - T0))" "$parts" <<'EOF'
import json, os, re, sys
import xml.etree.ElementTree as ET

results, work, started, seconds, parts = sys.argv[1:6]
summary = {"started": started, "seconds": int(seconds), "results": results,
           "versions": json.load(open(os.path.join(work, "versions.json")))}
summary["parts"] = {}
for line in parts.splitlines():
    name, rc, secs, limit = line.split()
    rc = int(rc)
    summary["parts"][name] = {"exit": rc, "seconds": int(secs), "limit_seconds": int(limit),
                              "status": "passed" if rc == 0 else ("timed out" if rc in (124, 137) else "failed")}
# pytest's counts: from its JUnit XML, or (when it was cut off) from the -v lines
counts = None
try:
    suite = ET.parse(os.path.join(work, "junit.xml")).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    n = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    counts = {"passed": n["tests"] - n["failures"] - n["errors"] - n["skipped"], "failed": n["failures"],
              "errors": n["errors"], "skipped": n["skipped"], "source": "junit"}
except (OSError, ET.ParseError, AttributeError):
    text = open(os.path.join(results, "pytest.log"), errors="replace").read()
    counts = {k.lower(): len(re.findall(rf"::\S+ {k}\b", text)) for k in ("PASSED", "FAILED", "ERROR", "SKIPPED")}
    counts["source"] = "pytest -v lines (no JUnit report: cut off?)"
summary["pytest_gpu"] = counts
if summary["parts"]["pytest"]["exit"] == 0 and counts.get("passed", 0) == 0:  # every GPU test skipped
    summary["parts"]["pytest"]["status"] = "failed: no GPU test ran (all skipped: see pytest.log for why)"
try:
    m = json.load(open(os.path.join(results, "train_metrics.json")))
    summary["train"] = {k: m.get(k) for k in ("status", "device", "epochs_run", "total_train_seconds",
                                              "seconds_per_epoch", "epoch_seconds", "val_accuracy", "test_accuracy")}
except (OSError, ValueError):
    summary["train"] = None
try:
    b = json.load(open(os.path.join(results, "bench.json")))
    summary["bench"] = [{"net": r["net"], "batch": r["batch"], "optimizer": r.get("optimizer"),
                         "graph_status": r.get("graph_status"), "median": r["median"], "ratios": r["ratios"]}
                        for r in b.get("results", [])]
    for key in ("default_run", "default_time_to_accuracy"):
        d = b.get(key)
        if d:
            summary[key] = {k: d.get(k) for k in ("total_train_seconds", "total_seconds", "reached", "epoch_seconds",
                                                   "test_accuracy", "best_accuracy", "graph_status") if k in d}
except (OSError, ValueError):
    summary["bench"] = None
with open(os.path.join(results, "summary.json"), "w") as f:
    json.dump(summary, f, indent=1)
v = summary["versions"]
smi = (v.get("nvidia_smi") or "").split(", ")
print(f"\ngpu_check {started}: {v.get('gpu')} (driver {smi[1] if len(smi) > 1 else '?'}, "
      f"CUDA {v.get('cuda_runtime')}), CuPy {v.get('cupy')}, PyTorch {v.get('torch')}, NumPy {v.get('numpy')}, "
      f"nvmath {v.get('nvmath')}")
for name, p in summary["parts"].items():
    print(f"  {name:6s} {p['seconds']:4d}s (limit {p['limit_seconds']}s) {p['status']}")
print(f"  pytest -m gpu: {counts}")
if summary["train"]:
    t = summary["train"]
    print(f"  train --device cuda: {t['epochs_run']} epochs, {t['total_train_seconds']} s, test accuracy "
          f"{t['test_accuracy']}")
for r in summary["bench"] or []:
    print(f"  bench {r['net']} batch {r['batch']} {r['optimizer']}: "
          + ", ".join(f"{k} {v:.4f}" for k, v in r["median"].items()))
for key in ("default_run", "default_time_to_accuracy"):
    if key in summary:
        print(f"  {key}: {summary[key]}")
print(f"  all results in {results}")
sys.exit(0 if all(p["status"] == "passed" for p in summary["parts"].values()) else 1)
EOF
exit $?  # 0: every part passed (with at least one GPU test run); 1: see summary.json

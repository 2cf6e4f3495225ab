#!/usr/bin/env bash
# Gather, on a machine WITH network, what benchmarks/gpu_check.sh needs on a GPU machine
# WITHOUT one: the pure-Python wheels array-api-compat and array-api-strict, the CPython 3.12
# manylinux x86_64 wheel of nvmath-python (CuPy cannot call cuBLAS during CUDA-graph capture;
# nvmath's cuBLAS bindings can), all into .whl/, and the MNIST .npz from the local cache into
# .gl/. Both folders are git-ignored; carry them to the GPU machine (the device tool: carry
# [".whl", ".gl"]). See docs/gpu.md.
#
#   bash benchmarks/fetch_gpu_wheels.sh            # from the repository root
#
# Versions: override with ARRAY_API_COMPAT=... ARRAY_API_STRICT=... NVMATH=... (pins below).
# The GPU machine's Python is 3.12 (PY_VERSION=3.12 to change it).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
PY_VERSION=${PY_VERSION:-3.12}
ARRAY_API_COMPAT=${ARRAY_API_COMPAT:-1.16.0}
ARRAY_API_STRICT=${ARRAY_API_STRICT:-2.6.1}
NVMATH=${NVMATH:-1.0.0}
WHL=.whl
DATA=.gl

mkdir -p "$WHL" "$DATA"
# One version of each: two of the same package stop the offline install.
rm -f "$WHL"/array_api_compat-*.whl "$WHL"/array_api_strict-*.whl "$WHL"/nvmath_python-*.whl

"$PYTHON" -m pip download -q --no-deps --only-binary=:all: -d "$WHL" \
    "array-api-compat==$ARRAY_API_COMPAT" "array-api-strict==$ARRAY_API_STRICT"

platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 \
         manylinux2014_x86_64 manylinux1_x86_64; do
    platforms+=(--platform "$p")
done
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version "$PY_VERSION" \
    --implementation cp "${platforms[@]}" -d "$WHL" "nvmath-python==$NVMATH"

# MNIST: from $MLP_BACKEND_DATA_DIR, else the library's cache, else fetch it once.
src=$("$PYTHON" -c 'from mlp_backend.data import cache_path; print(cache_path("mnist"))' 2>/dev/null || true)
if [ -z "$src" ] || [ ! -f "$src" ]; then
    echo "MNIST is not cached; fetching it once (mlp-backend data fetch mnist) ..."
    "$PYTHON" -m mlp_backend.apps.cli data fetch mnist
    src=$("$PYTHON" -c 'from mlp_backend.data import cache_path; print(cache_path("mnist"))')
fi
cp "$src" "$DATA/mnist.npz"

echo "ready to carry:"
ls -l "$WHL" "$DATA"
du -shc "$WHL" "$DATA" | tail -1
echo "nvmath-python needs (installed on the GPU image, not carried):"
unzip -p "$WHL"/nvmath_python-*.whl '*/METADATA' | grep '^Requires-Dist' | grep -v 'extra ==' || true

#!/usr/bin/env bash
# Build and install mmcv 2.1.0 *with compiled ops* against the torch already
# installed in the given Python environment.
#
# Why this script exists:
#   * mmsegmentation 1.2.2 imports mmcv.ops, so mmcv-lite is not enough, and it
#     refuses mmcv >= 2.2; PyPI only has mmcv 2.1.0 as source.
#   * torch 2.14's headers need C++20 but mmcv 2.1.0's setup.py hard-codes
#     -std=c++17 (extra flags do not override it), so we patch that one flag.
#   * The extension must be compiled against the installed torch
#     (--no-build-isolation), and pip's wheel cache is not keyed by the torch
#     version, so we keep our own wheel cache keyed by it.
set -euo pipefail

PY=$(command -v "${1:?usage: build_mmcv.sh PYTHON}")
PY=$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")
MMCV_VERSION=2.1.0
TORCH_VERSION=$("$PY" -c 'import torch; print(torch.__version__)')
PY_TAG=$("$PY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
CACHE_ROOT=${REPVGG_SEG_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/repvgg-seg}
CACHE="$CACHE_ROOT/mmcv-$MMCV_VERSION-torch-$TORCH_VERSION-$PY_TAG"
HERE=$(cd "$(dirname "$0")" && pwd)

wheel=$(ls "$CACHE"/mmcv-"$MMCV_VERSION"-*.whl 2>/dev/null | head -n 1 || true)
if [ -z "$wheel" ]; then
    echo "[build_mmcv] no cached wheel for torch $TORCH_VERSION; building mmcv $MMCV_VERSION (about 7 minutes on 2 cores)"
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    # --no-build-isolation: pip prepares metadata even to download, and an
    # isolated build env would get a setuptools without pkg_resources.
    "$PY" -m pip download --no-deps --no-build-isolation --no-binary :all: "mmcv==$MMCV_VERSION" -d "$work"
    tar -xzf "$work"/mmcv-"$MMCV_VERSION".tar.gz -C "$work"
    src="$work/mmcv-$MMCV_VERSION"
    grep -q -- '-std=c++17' "$src/setup.py" || { echo "[build_mmcv] setup.py no longer has -std=c++17; review the patch" >&2; exit 1; }
    sed -i 's/-std=c++17/-std=c++20/g' "$src/setup.py"
    mkdir -p "$CACHE"
    (cd "$src" && MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-2} "$PY" -m pip wheel --no-build-isolation --no-deps . -w "$work/dist")
    # Atomic publish into the cache: a killed build leaves no half wheel behind.
    built=$(ls "$work"/dist/mmcv-*.whl)
    cp "$built" "$CACHE/.partial.whl"
    mv "$CACHE/.partial.whl" "$CACHE/$(basename "$built")"
    wheel="$CACHE/$(basename "$built")"
fi
echo "[build_mmcv] installing $wheel"
"$PY" -m pip install -c "$HERE/constraints.txt" "$wheel"
"$PY" -c 'import mmcv, mmcv.ops; print("[build_mmcv] mmcv", mmcv.__version__, "with ops OK")'

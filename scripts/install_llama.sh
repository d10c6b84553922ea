#!/usr/bin/env bash
# Install llama-cpp-python 0.3.36 (with its OpenAI-compatible [server] extra) into an existing venv.
#
# Usage: scripts/install_llama.sh <venv-python> <constraints-file>
#
# Why each step:
#   * llama-cpp-python ships source only; pip compiles llama.cpp (~3.5 min on 2 cores).
#   * A default build uses -march=native (GGML_NATIVE=ON), whose AMX kernels crash at the
#     first decode on these CPUs; CMAKE_ARGS="-DGGML_NATIVE=OFF" builds portable kernels.
#   * --no-cache-dir: pip would otherwise reuse a wheel cached from an earlier (native) build,
#     ignoring CMAKE_ARGS.
#   * The [server] extra gives `python -m llama_cpp.server`, the real OpenAI-compatible server
#     the tests point the "openai" LLM backend at.
# Idempotent: skips the build when the pinned version already imports and decodes.
set -euo pipefail

if [[ $# -ne 2 ]]; then
    echo "usage: $0 <venv-python> <constraints-file>" >&2
    exit 2
fi
PY=$1
CONSTRAINTS=$2
VERSION=0.3.36

log() { echo "[install_llama] $*"; }

[[ -x "$PY" ]] || { echo "not an executable python: $PY" >&2; exit 2; }
[[ -f "$CONSTRAINTS" ]] || { echo "constraints file not found: $CONSTRAINTS" >&2; exit 2; }

if "$PY" -c "import llama_cpp, llama_cpp.server, sys; sys.exit(llama_cpp.__version__ != '$VERSION')" 2>/dev/null; then
    log "llama-cpp-python $VERSION already installed"
    exit 0
fi

# The compiled wheel is kept under ~/.cache/chorus/wheels (keyed by version and build flags), so
# a rebuilt environment reuses it instead of compiling again. pip's own cache stays off
# (--no-cache-dir): a wheel built natively elsewhere must never be picked up from it.
FLAGS="-DGGML_NATIVE=OFF"
WHEELS="${CHORUS_CACHE:-$HOME/.cache/chorus}/wheels/llama-cpp-python-$VERSION-$(echo "$FLAGS" | sha256sum | cut -c1-12)"
if ! ls "$WHEELS"/llama_cpp_python-*.whl >/dev/null 2>&1; then
    log "building llama-cpp-python==$VERSION with $FLAGS (several minutes, once per machine)"
    mkdir -p "$WHEELS.tmp.$$"
    CMAKE_ARGS="$FLAGS" FORCE_CMAKE=1 "$PY" -m pip wheel --disable-pip-version-check --no-cache-dir \
        --no-deps -w "$WHEELS.tmp.$$" "llama-cpp-python==$VERSION"
    rm -rf "$WHEELS" && mv "$WHEELS.tmp.$$" "$WHEELS"
fi
log "installing llama-cpp-python[server]==$VERSION from $WHEELS"
"$PY" -m pip install --disable-pip-version-check --no-cache-dir -c "$CONSTRAINTS" \
    --find-links "$WHEELS" "llama-cpp-python[server]==$VERSION"

"$PY" -c "import llama_cpp, llama_cpp.server; print(f'[install_llama] ok: llama-cpp-python {llama_cpp.__version__}')"

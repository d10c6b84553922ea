#!/usr/bin/env bash
# Install coqui-tts 0.28.0 into an existing venv next to CPU-only torch 2.13.0.
#
# Usage: scripts/install_coqui.sh <venv-python> <constraints-file>
#   The constraints file must pin torch==2.13.0 (pip's find-links serves the
#   +cpu wheel); without it pip would pull a multi-GB CUDA torch.
#
# Why each step:
#   * coqui-tts itself does not depend on torch/torchaudio (only its [cpu]
#     extra does), but `import TTS` refuses to run unless torchaudio is
#     importable and, for torch>=2.9, torchcodec is *findable* (find_spec only).
#   * PyPI's torchaudio/torchcodec wheels link CUDA (libc10_cuda, libtorch_cuda,
#     libcudart.so.13, libnvrtc) and match other torch versions, so they are
#     installed with --no-deps (keeps torch at 2.13.0 CPU).
#   * torchaudio's native libs cannot load against CPU torch. Only
#     lib/_torchaudio.abi3.so is loaded at import (its presence also triggers
#     loading libtorchaudio.abi3.so); torchaudio_prefixctc.abi3.so is loaded only
#     by the CUDA CTC decoder. All three are deleted: torchaudio then runs its
#     pure-Python paths (functional, transforms) which is all Coqui inference uses.
#   * torchcodec stays as installed; `import torchcodec` fails (CUDA-linked),
#     but nothing on our path imports it and transformers falls back cleanly.
#   * six: imported by TTS/tts/utils/text/punctuation.py, not declared.
# Idempotent: pip skips satisfied requirements; removal uses rm -f.
set -euo pipefail

if [[ $# -ne 2 ]]; then
    echo "usage: $0 <venv-python> <constraints-file>" >&2
    exit 2
fi
PY=$1
CONSTRAINTS=$2

log() { echo "[install_coqui] $*"; }
pip_install() {
    log "pip install $*"
    "$PY" -m pip install --disable-pip-version-check -c "$CONSTRAINTS" "$@"
}

[[ -x "$PY" ]] || { echo "not an executable python: $PY" >&2; exit 2; }
[[ -f "$CONSTRAINTS" ]] || { echo "constraints file not found: $CONSTRAINTS" >&2; exit 2; }
if ! grep -Eq '^[[:space:]]*torch[[:space:]]*==[[:space:]]*2\.13\.0' "$CONSTRAINTS"; then
    echo "constraints file must pin torch==2.13.0: $CONSTRAINTS" >&2
    exit 2
fi

pip_install "torch==2.13.0"
"$PY" -c 'import sys, torch; sys.exit(f"torch {torch.__version__} is a CUDA build; expected CPU" if torch.version.cuda else 0)'

pip_install "coqui-tts==0.28.0"
pip_install --no-deps "torchaudio==2.11.0" "torchcodec==0.17.0" "six==1.17.0"

SITE=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
log "removing CUDA-linked torchaudio native libs under $SITE/torchaudio/lib"
for so in _torchaudio.abi3.so libtorchaudio.abi3.so torchaudio_prefixctc.abi3.so; do
    if [[ -e "$SITE/torchaudio/lib/$so" ]]; then
        rm -f "$SITE/torchaudio/lib/$so"
        log "  removed $so"
    fi
done

log "checking: from TTS.api import TTS"
"$PY" -c 'import torch, torchaudio, TTS; from TTS.api import TTS as _; print(f"[install_coqui] ok: coqui-tts {TTS.__version__}, torch {torch.__version__}, torchaudio {torchaudio.__version__}")'

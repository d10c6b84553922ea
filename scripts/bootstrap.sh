#!/usr/bin/env bash
# Build the Chorus virtual environment at $1: every extra of pyproject.toml, installed from
# requirements/lock.txt by scripts/install_deps.py (the same installer every image uses).
# The .ready marker is written last: an interrupted install leaves a folder without it, which
# the next run wipes and builds again instead of trusting.
set -euo pipefail
venv="$1"
root="$(cd "$(dirname "$0")/.." && pwd)"
[ -f "$venv/.ready" ] && exit 0
mkdir -p "$(dirname "$venv")"
# One build per environment at a time: a second `make` waits for the first instead of wiping it.
exec 9>"$venv.lock"
flock 9
[ -f "$venv/.ready" ] && exit 0

python="${PYTHON:-python3}"
rm -rf "$venv"
echo "==> building environment $venv (first run on this machine: several minutes)"
"$python" -m venv "$venv"
# /opt/wheels holds the CPU build of torch on these machines; elsewhere set CHORUS_WHEELS to a
# folder holding torch-2.13.0+cpu (the lock pins its hash), e.g. from PyTorch's CPU index.
links=()
for dir in ${CHORUS_WHEELS:-/opt/wheels}; do links+=(--find-links "$dir"); done
"$venv/bin/python" "$root/scripts/install_deps.py" "$venv" --all-extras "${links[@]}"
touch "$venv/.ready"
echo "==> environment ready: $venv"

#!/usr/bin/env bash
# Build the Chorus virtual environment at $1 from pyproject.toml and requirements/lock.txt.
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
tmp="$venv"
rm -rf "$tmp"
echo "==> building environment $venv (first run on this machine: several minutes)"
"$python" -m venv "$tmp"
pip=("$tmp/bin/python" -m pip --disable-pip-version-check)
# /opt/wheels holds the CPU build of torch on these machines; torch==2.13.0 in the lock file
# makes pip take it, and nothing may ever pull an unpinned (CUDA) torch.
[ -d /opt/wheels ] && export PIP_FIND_LINKS=/opt/wheels
"${pip[@]}" install -q --upgrade pip==26.3 wheel setuptools
reqs="$tmp/requirements.txt"
"$tmp/bin/python" - "$root/pyproject.toml" > "$reqs" <<'PY'
import sys, tomllib
project = tomllib.load(open(sys.argv[1], "rb"))["project"]
deps = list(project["dependencies"])
for extra in project.get("optional-dependencies", {}).values():
    deps.extend(extra)
print("\n".join(deps))
PY
"${pip[@]}" install -q -c "$root/requirements/lock.txt" -r "$reqs"
nodeps="$("$tmp/bin/python" -c "import tomllib,sys; print(' '.join(tomllib.load(open(sys.argv[1],'rb'))['tool']['chorus']['no-deps']))" "$root/pyproject.toml")"
"${pip[@]}" install -q --no-deps $nodeps
for script in "$root"/scripts/install_*.sh; do
    [ -e "$script" ] || continue
    echo "==> $(basename "$script")"
    bash "$script" "$tmp/bin/python" "$root/requirements/lock.txt"
done
"${pip[@]}" check || true
touch "$venv/.ready"
echo "==> environment ready: $venv"

#!/usr/bin/env bash
# Debian packages the tests and benchmarks need: espeak-ng speaks the multilingual test sentences;
# chromium is the browser Playwright drives in tests/test_browser.py (never `playwright install`);
# docker.io (dockerd, containerd, runc) and debootstrap serve tests/test_compose.py: a private
# daemon, and a local Debian base image where the registry's cannot be pulled; postgresql's
# initdb and postgres run the private cluster of tests/test_conversations_pg.py.
set -euo pipefail
missing=()
command -v espeak-ng >/dev/null || missing+=(espeak-ng)
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v dockerd >/dev/null || missing+=(docker.io)
command -v debootstrap >/dev/null || missing+=(debootstrap)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
[ ${#missing[@]} -eq 0 ] && exit 0
echo "==> installing Debian packages: ${missing[*]}"
sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null

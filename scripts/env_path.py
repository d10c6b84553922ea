"""Print the path of the Chorus virtual environment for this checkout's dependency files.

The environment lives outside the clone, under ~/.cache/chorus/, keyed by a hash of every file
that decides its contents, so a rerun on the same machine reuses it and any change to the
pins builds a new one from nothing.
"""

import hashlib
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
INPUTS = [
    "pyproject.toml",
    "requirements/lock.txt",
    "requirements/overrides.txt",
    "scripts/bootstrap.sh",
    "scripts/install_deps.py",
]


def env_hash() -> str:
    digest = hashlib.sha256(sys.version.encode())
    for name in INPUTS:
        digest.update(name.encode())
        digest.update((ROOT / name).read_bytes())
    return digest.hexdigest()[:16]


if __name__ == "__main__":
    cache = Path(os.environ.get("CHORUS_CACHE", Path.home() / ".cache" / "chorus"))
    print(cache / f"venv-{env_hash()}")

"""Artifacts in a local folder: the embedded default, and a volume that replicas may share.

Each blob is one file, ``<root>/<tenant key>/<id>`` (``.json`` for its record). A write goes to
a temporary file in the same folder, is flushed to disk, and is renamed over the name
(``os.replace``, atomic on POSIX), so a reader, or another replica on the same volume, sees the
old file or the whole new one, never part of one, even after a crash.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from services.common.artifacts.store import KEY_PATTERN

__all__ = ["LocalBlobs"]

_TEMP_PREFIX = ".tmp-"


class LocalBlobs:
    """``Blobs`` in the folder ``root`` (made on first write)."""

    name = "local"

    def __init__(self, root: Path) -> None:
        self.root = root.expanduser()

    def write(self, key: str, data: bytes, media_type: str) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=_TEMP_PREFIX)
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
            raise

    def read(self, key: str, start: int = 0, end: int | None = None) -> bytes | None:
        try:
            with self._path(key).open("rb") as file:
                file.seek(start)
                return file.read() if end is None else file.read(max(0, end - start))
        except (FileNotFoundError, NotADirectoryError):
            return None

    def remove(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(key).unlink()

    def keys(self, folder: str | None = None) -> list[str]:
        folders = [folder] if folder is not None else _names(self.root)
        return [
            f"{name}/{child}"
            for name in folders
            for child in _names(self.root / name)
            if KEY_PATTERN.fullmatch(f"{name}/{child}")
        ]

    def _path(self, key: str) -> Path:
        # Keys are built by the store from validated hex only; refuse anything else outright.
        if not KEY_PATTERN.fullmatch(key):
            raise ValueError(f"not an artifact key: {key!r}")
        return self.root / key


def _names(folder: Path) -> list[str]:
    try:
        return sorted(entry.name for entry in os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return []

"""Every secret the test session configures, and every log its services wrote, for the check that
runs after all other tests (tests/test_secrets_in_logs.py): no secret in any service's log.

Secrets are found by convention, so a new test's key is checked without anyone remembering to
list it: a module-level string of a ``tests`` module whose name says it is a secret
(``API_KEY``, ``SECRET_KEY``, ``VALID_TOKEN``, ``CANARY_KEY``, ...). A secret made at run time
(a generated password) is added with ``register``. A log that its fixture deletes (PostgreSQL's,
in a temporary folder) is handed to ``keep_log`` first.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

__all__ = ["Leak", "configured_secrets", "keep_log", "kept_logs", "leaks", "register"]

SECRET_NAME = re.compile(r"(^|_)(API_KEY|SECRET(_KEY)?|TOKEN|PASSWORD|ACCESS_KEY|CANARY_KEY)$")
"""Names of module-level constants that hold a secret."""
MIN_SECRET_CHARS = 8
"""Shorter values (``"k"``, ``"none"``) are placeholders: they would match by chance."""
MAX_LOG_BYTES = 256 * 1024 * 1024
"""A log larger than this is read only up to it (no test writes one near it)."""

_registered: dict[str, str] = {}
_kept: dict[str, bytes] = {}


def register(name: str, value: str) -> str:
    """Add a secret made at run time; returns it, so ``password = register("pg", make())``."""
    _registered[name] = value
    return value


def keep_log(name: str, path: Path) -> None:
    """Keep a log that is about to be deleted, so the final check still reads it."""
    if path.is_file():
        with path.open("rb") as log:
            _kept[name] = log.read(MAX_LOG_BYTES)


def kept_logs() -> dict[str, bytes]:
    return dict(_kept)


def configured_secrets() -> dict[str, str]:
    """Name -> value of every secret of the loaded test modules and every registered one."""
    found: dict[str, str] = {}
    for module_name, module in list(sys.modules.items()):
        if not (module_name == "tests" or module_name.startswith("tests.")) or module is None:
            continue
        for name, value in vars(module).items():
            if (
                SECRET_NAME.search(name)
                and isinstance(value, str)
                and len(value) >= MIN_SECRET_CHARS
            ):
                found[f"{module_name}.{name}"] = value
    return found | _registered


@dataclass(frozen=True)
class Leak:
    log: str
    secret: str
    """The secret's name (never its value: the report of a leak must not leak it again)."""


def _forms(value: str) -> set[bytes]:
    """The ways a secret can appear in a log: as is, and URL-encoded (inside a logged URL)."""
    return {value.encode(), quote(value, safe="").encode()}


def log_files(roots: Iterable[Path]) -> Iterator[Path]:
    """Every log under ``roots``: files named ``*.log`` (services, Envoy, gunicorn, dockerd,
    Compose's saved container logs), however deep."""
    for root in roots:
        if root.is_dir():
            yield from (p for p in root.rglob("*.log") if p.is_file())


def leaks(secrets: dict[str, str], roots: Iterable[Path], kept: dict[str, bytes]) -> list[Leak]:
    """Each (log, secret name) where the secret appears in the log."""
    patterns = {name: _forms(value) for name, value in secrets.items()}
    texts: list[tuple[str, bytes]] = list(kept.items())
    for path in log_files(roots):
        with path.open("rb") as log:
            texts.append((str(path), log.read(MAX_LOG_BYTES)))
    return [
        Leak(log, name)
        for log, text in texts
        for name, forms in patterns.items()
        if any(form in text for form in forms)
    ]

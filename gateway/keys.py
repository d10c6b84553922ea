"""API keys and the tenants they belong to.

A gateway has no key (every caller is the ``default`` tenant), one static key
(``CHORUS_GATEWAY_API_KEY``, tenant ``CHORUS_GATEWAY_API_KEY_TENANT``), a keys file
(``CHORUS_GATEWAY_API_KEYS_FILE``), or both. The file is TOML, one table per key::

    [[keys]]
    name = "alice-laptop"        # logged with each request: who called, never the key
    tenant = "acme"              # whose conversations and artifacts the caller reaches
    key_sha256 = "9f86d08..."    # hex SHA-256 of the key (or ``key = "..."``, in clear)
    rate_limit_rps = 50          # optional: this key's own rate limit (0: none), and
    rate_limit_burst = 100       # its bucket (defaults: CHORUS_GATEWAY_RATE_LIMIT_*)

It is read again when it changes (checked at most every ``api_keys_reload_seconds``), so keys
are added and revoked without a restart. A file that cannot be read or does not validate keeps
the keys already in force and logs why (never a key: pydantic's messages are logged without
their input values). Keys are looked up by their SHA-256, so the time a lookup takes says
nothing about the key.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from gateway.settings import GatewaySettings

__all__ = ["ANONYMOUS", "KeyEntry", "KeyRing", "KeysFile", "Principal", "digest", "read_keys"]

log = logging.getLogger(__name__)

NAME = r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$"
"""Names and tenants: short, printable, safe in logs, paths and URLs."""
MAX_KEYS = 10_000


@dataclass(frozen=True)
class Principal:
    """Who a request comes from: the key's name and its tenant, and its own rate limit where
    the keys file gives one (None: the gateway's)."""

    name: str
    tenant: str
    rate_limit_rps: float | None = None
    rate_limit_burst: int | None = None


ANONYMOUS = Principal("anonymous", "default")
"""Every caller of a gateway that has no key."""


class KeyEntry(BaseModel):
    """One key of the keys file; exactly one of ``key`` and ``key_sha256``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=NAME)
    tenant: str = Field(pattern=NAME)
    key: SecretStr | None = Field(default=None, min_length=16, max_length=512)
    key_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    rate_limit_rps: float | None = Field(default=None, ge=0, le=1_000_000)
    """This key's requests per second (``gateway/ratelimit.py``); 0 is no limit."""
    rate_limit_burst: int | None = Field(default=None, ge=1, le=1_000_000)

    @model_validator(mode="after")
    def _one_key(self) -> KeyEntry:
        if (self.key is None) == (self.key_sha256 is None):
            raise ValueError("give exactly one of key and key_sha256")
        return self

    def sha256(self) -> str:
        if self.key_sha256 is not None:
            return self.key_sha256
        assert self.key is not None
        return digest(self.key.get_secret_value())


class KeysFile(BaseModel):
    """The keys file: names unique, keys unique."""

    model_config = ConfigDict(extra="forbid")

    keys: list[KeyEntry] = Field(default_factory=list, max_length=MAX_KEYS)

    @model_validator(mode="after")
    def _unique(self) -> KeysFile:
        names = [k.name for k in self.keys]
        if len(set(names)) != len(names):
            raise ValueError("key names must be unique")
        if len({k.sha256() for k in self.keys}) != len(self.keys):
            raise ValueError("the same key is listed twice")
        return self


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def read_keys(path: Path) -> dict[str, Principal]:
    """The keys of ``path`` by their SHA-256. Raises ``ValueError`` with a message that holds
    no key."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"cannot read {path}: {error.__class__.__name__}") from None
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"{path} is not valid TOML: {error}") from None
    try:
        parsed = KeysFile.model_validate(data)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'file'}: {e['msg']}"
            for e in error.errors(include_input=False, include_url=False)
        )
        raise ValueError(f"{path} is not a valid keys file: {problems}") from None
    return {
        k.sha256(): Principal(k.name, k.tenant, k.rate_limit_rps, k.rate_limit_burst)
        for k in parsed.keys
    }


class KeyRing:
    """The keys in force in one gateway process: the static key and the keys file's."""

    def __init__(
        self, settings: GatewaySettings, clock: Callable[[], float] = time.monotonic
    ) -> None:
        """Reads the keys file now: a gateway whose file is missing or invalid does not start."""
        self._static: dict[str, Principal] = {}
        if settings.api_key is not None:
            self._static[digest(settings.api_key.get_secret_value())] = Principal(
                "static-key", settings.api_key_tenant
            )
        self._path = settings.api_keys_file
        self._interval = settings.api_keys_reload_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._file: dict[str, Principal] = {}
        self._seen: tuple[int, int, int] | None = None
        self._checked = clock()
        if self._path is not None:
            self._seen = self._stamp()
            self._file = read_keys(self._path)
            log.info("keys file %s: %d keys", self._path, len(self._file))

    @property
    def open(self) -> bool:
        """Whether the gateway has no key at all (every caller is ``ANONYMOUS``)."""
        return not self._static and self._path is None

    def authenticate(self, token: str | None) -> Principal | None:
        """The principal ``token`` is the key of, ``ANONYMOUS`` on an open gateway, else None."""
        if self.open:
            return ANONYMOUS
        self._maybe_reload()
        if token is None:
            return None
        key = digest(token)
        return self._static.get(key) or self._file.get(key)

    def _stamp(self) -> tuple[int, int, int] | None:
        assert self._path is not None
        try:
            st = os.stat(self._path)
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size, st.st_ino

    def _maybe_reload(self) -> None:
        if self._path is None or self._clock() - self._checked < self._interval:
            return
        with self._lock:
            if self._clock() - self._checked < self._interval:
                return
            self._checked = self._clock()
            stamp = self._stamp()
            if stamp == self._seen:
                return
            self._seen = stamp
            try:
                self._file = read_keys(self._path)
            except ValueError as error:
                log.error("keeping the %d keys in force: %s", len(self._file), error)
                return
            log.info("keys file %s reloaded: %d keys", self._path, len(self._file))

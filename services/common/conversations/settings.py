"""Conversation store settings, read from ``CHORUS_CONVERSATIONS_*``, and the factory that
opens the store.

An SQLite file is the default, so one machine needs nothing set up; several orchestrator
replicas share one PostgreSQL instead, e.g.::

    CHORUS_CONVERSATIONS_URL=postgresql://chorus:secret@db:5432/chorus
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.common.conversations.engine import check_url, make_engine, migrate, safe_url
from services.common.conversations.repository import ConversationLimits, ConversationRepository

__all__ = ["ConversationSettings", "open_repository"]

log = logging.getLogger(__name__)


def _default_url() -> SecretStr:
    return SecretStr(f"sqlite:///{Path.home() / '.cache' / 'chorus' / 'conversations.sqlite3'}")


class ConversationSettings(BaseSettings):
    """The conversation store's knobs, e.g. ``CHORUS_CONVERSATIONS_MAX_LIST_LIMIT=50``."""

    model_config = SettingsConfigDict(env_prefix="CHORUS_CONVERSATIONS_", extra="ignore")

    url: SecretStr = Field(default_factory=_default_url)
    """An SQLAlchemy URL: ``sqlite:////path/file.sqlite3`` (one machine; its folder is made) or
    ``postgresql://user:password@host/db`` (several replicas; psycopg 3). Secret: it may hold a
    password, so it is masked in reprs and logs."""
    pool_size: int = Field(default=5, ge=1, le=100)
    """Connections each process keeps open."""
    max_overflow: int = Field(default=10, ge=0, le=1000)
    """Connections opened beyond ``pool_size`` under load, closed when returned."""
    pool_timeout_seconds: float = Field(default=30.0, gt=0, le=600)
    """How long a call waits for a free connection before UNAVAILABLE."""
    busy_timeout_seconds: float = Field(default=30.0, gt=0, le=600)
    """SQLite: how long a write waits for another process's write before UNAVAILABLE."""
    migrate: bool = True
    """Run the migrations to head when the store opens; off where the database user may not
    change the schema and migrations run separately."""
    max_items_per_conversation: int = Field(default=10_000, ge=1, le=1_000_000)
    """An append past it gets RESOURCE_EXHAUSTED."""
    max_text_chars: int = Field(default=100_000, ge=1, le=10_000_000)
    """Longest text (and transcript) of one item."""
    max_list_limit: int = Field(default=100, ge=1, le=10_000)
    """Most conversations one ``list`` page may ask for."""
    max_artifacts_per_item: int = Field(default=16, ge=0, le=1024)

    @field_validator("url")
    @classmethod
    def _supported(cls, url: SecretStr) -> SecretStr:
        check_url(url.get_secret_value())
        return url

    def limits(self) -> ConversationLimits:
        return ConversationLimits(
            max_items_per_conversation=self.max_items_per_conversation,
            max_text_chars=self.max_text_chars,
            max_list_limit=self.max_list_limit,
            max_artifacts_per_item=self.max_artifacts_per_item,
        )


def open_repository(
    settings: ConversationSettings, clock: Callable[[], float] = time.time
) -> ConversationRepository:
    """The repository ``settings`` name, its database migrated to head (unless ``migrate`` is
    off). Call it once per process and share the result across threads."""
    url = settings.url.get_secret_value()
    engine = make_engine(
        url,
        pool_size=settings.pool_size,
        max_overflow=settings.max_overflow,
        pool_timeout_seconds=settings.pool_timeout_seconds,
        busy_timeout_seconds=settings.busy_timeout_seconds,
    )
    log.info("conversation store: %s", safe_url(engine.url))
    try:
        if settings.migrate:
            migrate(engine)
    except BaseException:
        engine.dispose()
        raise
    return ConversationRepository(engine, settings.limits(), clock)

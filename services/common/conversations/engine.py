"""The engine for a database URL (SQLite set up for several threads and processes,
PostgreSQL through psycopg 3) and the migrations, run to head programmatically."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import URL, Connection, Engine

from services.common.conversations.repository import WRITE

__all__ = ["MIGRATIONS", "BACKENDS", "check_url", "make_engine", "migrate", "safe_url"]

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
BACKENDS = ("sqlite", "postgresql")
_MIGRATION_LOCK = 0x43484F5255530001
"""PostgreSQL advisory lock key ("CHORUS" + 1): replicas starting together migrate one by one."""


def check_url(url: str) -> URL:
    """The parsed URL of a supported, shareable database, or ValueError (with no password)."""
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError:
        raise ValueError("not an SQLAlchemy database URL") from None
    backend = parsed.get_backend_name()
    if backend not in BACKENDS:
        raise ValueError(f"database {backend!r} is not supported; use one of {BACKENDS}")
    if backend == "sqlite":
        database = parsed.database or ""
        if database in ("", ":memory:") or parsed.query.get("mode") == "memory":
            # Every pooled connection would get its own empty database.
            raise ValueError("SQLite needs a file (sqlite:////path/to/conversations.sqlite3)")
    elif parsed.drivername == "postgresql":
        # SQLAlchemy's default PostgreSQL driver is psycopg2; Chorus ships psycopg 3.
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def safe_url(url: URL) -> str:
    """The URL for logs: the password masked."""
    return url.render_as_string(hide_password=True)


def make_engine(
    url: str,
    *,
    pool_size: int = 5,
    max_overflow: int = 10,
    pool_timeout_seconds: float = 30.0,
    busy_timeout_seconds: float = 30.0,
) -> Engine:
    """An engine for ``url``: one per process, shared by its threads.

    SQLite gets foreign keys (else ON DELETE CASCADE does nothing), WAL (readers never wait for
    the writer, and several processes can share the file) and ``BEGIN IMMEDIATE`` for writing
    transactions: a deferred BEGIN that reads first and writes later can fail at once with
    "database is locked" when another connection wrote meanwhile, whatever the busy timeout;
    an immediate one waits its turn (up to ``busy_timeout_seconds``).
    """
    parsed = check_url(url)
    pool: dict[str, Any] = {
        "pool_size": pool_size,
        "max_overflow": max_overflow,
        "pool_timeout": pool_timeout_seconds,
    }
    if parsed.get_backend_name() == "postgresql":
        return sa.create_engine(parsed, pool_pre_ping=True, **pool)
    assert parsed.database is not None  # check_url refuses SQLite without a file
    Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(parsed, connect_args={"timeout": busy_timeout_seconds}, **pool)

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # The driver's own transaction handling off: BEGIN comes from on_begin below.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA journal_mode = WAL")
        # In WAL mode NORMAL never corrupts the file; a power cut may lose the last commits.
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.close()

    def on_begin(conn: Connection) -> None:
        writing = conn.get_execution_options().get(WRITE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if writing else "BEGIN")

    sa.event.listen(engine, "connect", on_connect)
    sa.event.listen(engine, "begin", on_begin)
    return engine


def migrate(engine: Engine) -> None:
    """Bring the database to the newest migration; a database already there is untouched.
    Runs in one transaction (both databases have transactional DDL): all of it, or none."""
    config = Config()
    # A ConfigParser value: a literal % must be doubled.
    config.set_main_option("script_location", str(MIGRATIONS).replace("%", "%%"))
    with engine.connect() as conn:
        conn.execution_options(**{WRITE: True})
        with conn.begin():
            if engine.dialect.name == "postgresql":
                conn.execute(
                    sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK}
                )
            config.attributes["connection"] = conn
            command.upgrade(config, "head")

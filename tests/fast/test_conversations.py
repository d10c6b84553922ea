"""The conversation store on its default database, an SQLite file (the shared contract), and
what only SQLite and the settings do: the default file, WAL and foreign keys, a writer that
waits past the busy timeout."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from pydantic import ValidationError

from services.common.conversations import ConversationSettings, NewItem, open_repository
from services.common.errors import Unavailable
from tests.support.conversation_contract import ConversationRepositoryContract


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'nested' / 'conversations.sqlite3'}"


class TestSqliteRepository(ConversationRepositoryContract):
    """The whole contract on an SQLite file."""


def test_settings_default_to_a_file_under_the_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = ConversationSettings()
    expected = Path.home() / ".cache" / "chorus" / "conversations.sqlite3"
    assert settings.url.get_secret_value() == f"sqlite:///{expected}"
    monkeypatch.setenv("CHORUS_CONVERSATIONS_URL", "postgresql://u:hunter2@db/chorus")
    monkeypatch.setenv("CHORUS_CONVERSATIONS_MAX_LIST_LIMIT", "7")
    settings = ConversationSettings()
    assert settings.limits().max_list_limit == 7
    assert "hunter2" not in repr(settings) and "hunter2" not in str(settings.model_dump())


@pytest.mark.parametrize(
    "url",
    [
        "sqlite://",
        "sqlite:///:memory:",
        "sqlite:///file:x?mode=memory&uri=true",
        "mysql://u:p@h/db",
        "not a url",
    ],
)
def test_unsupported_urls_are_refused(url: str) -> None:
    with pytest.raises(ValidationError):
        ConversationSettings(url=url)


@pytest.mark.parametrize(
    "setting", ["pool_size", "max_items_per_conversation", "max_text_chars", "max_list_limit"]
)
def test_limits_are_bounded(setting: str) -> None:
    for value in (0, 10**12):
        with pytest.raises(ValidationError):
            ConversationSettings.model_validate({setting: value})


def test_sqlite_is_set_up_for_several_processes(database_url: str, tmp_path: Path) -> None:
    with open_repository(ConversationSettings(url=database_url)) as repository:
        with repository.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    assert (tmp_path / "nested" / "conversations.sqlite3").exists()


def test_a_write_that_waits_too_long_is_unavailable(database_url: str, tmp_path: Path) -> None:
    settings = ConversationSettings(url=database_url, busy_timeout_seconds=0.2)
    with open_repository(settings) as repository:
        conversation = repository.create("tenant-a")
        other = sqlite3.connect(tmp_path / "nested" / "conversations.sqlite3", isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
            with pytest.raises(Unavailable):
                repository.append("tenant-a", conversation.id, [NewItem(role="user", text="x")])
            # Reads go on meanwhile (WAL).
            assert repository.get("tenant-a", conversation.id).items == ()
        finally:
            other.execute("ROLLBACK")
            other.close()
        repository.append("tenant-a", conversation.id, [NewItem(role="user", text="x")])

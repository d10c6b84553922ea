"""The conversation store on PostgreSQL: the shared contract against a real PostgreSQL 15
cluster (``tests/support/postgres.py``: initdb in a temporary folder, the server on loopback,
one empty database per test), and what only PostgreSQL does here: the psycopg 3 driver chosen
for a plain ``postgresql://`` URL, a password that never reaches the logs, replicas that start
and migrate at once."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from services.common.conversations import (
    ConversationRepository,
    ConversationSettings,
    open_repository,
)
from tests.support.conversation_contract import ConversationRepositoryContract
from tests.support.postgres import PostgresCluster, find_bin, postgres_cluster
from tests.support.secrets import register


@pytest.fixture(scope="module")
def cluster() -> Iterator[PostgresCluster]:
    bin_dir = find_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL's initdb and postgres are not installed (apt: postgresql)")
    with postgres_cluster(bin_dir) as running:
        yield running


@pytest.fixture
def database_url(cluster: PostgresCluster) -> str:
    return cluster.url(cluster.create_database())


class TestPostgresRepository(ConversationRepositoryContract):
    """The whole contract on PostgreSQL."""


def test_the_password_is_never_logged(
    cluster: PostgresCluster, caplog: pytest.LogCaptureFixture
) -> None:
    """The cluster trusts loopback, so any password connects: the URL holds one, the logs not."""
    password = register("the PostgreSQL password", "s3cret-5d0c2a7e91f3")
    url = cluster.url(cluster.create_database(), password=password)
    caplog.set_level(logging.DEBUG)
    settings = ConversationSettings(url=url)
    assert password not in repr(settings)
    with open_repository(settings) as repository:
        assert repository.engine.dialect.driver == "psycopg"
        repository.create("tenant-a")
        assert password not in repr(repository.engine)
    assert "conversation store: postgresql+psycopg://chorus:***@127.0.0.1" in caplog.text
    assert password not in caplog.text


def test_replicas_starting_together_migrate_once(cluster: PostgresCluster) -> None:
    """Every replica runs the migrations at start; the advisory lock makes them take turns."""
    url = cluster.url(cluster.create_database())
    barrier = threading.Barrier(4)

    def start(_: int) -> ConversationRepository:
        barrier.wait()
        return open_repository(ConversationSettings(url=url))

    with ThreadPoolExecutor(4) as pool:
        replicas = list(pool.map(start, range(4)))
    try:
        made = replicas[0].create("tenant-a")
        assert all(r.get("tenant-a", made.id) == made for r in replicas)
    finally:
        for replica in replicas:
            replica.close()

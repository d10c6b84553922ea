"""The conversation store's contract, written once and run on every database.

A test file subclasses ``ConversationRepositoryContract`` (pytest collects the subclass, named
``Test...``) and provides the fixture ``database_url``: the URL of an empty database for the
test. ``tests/fast/test_conversations.py`` runs it on an SQLite file, and
``tests/test_conversations_pg.py`` on a real PostgreSQL cluster. ``make_repository`` opens the
store again on the same database, as another replica would (its own engine and pool).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from services.common.conversations import (
    ConversationRepository,
    ConversationSettings,
    Item,
    NewItem,
    metadata,
    open_repository,
)
from services.common.conversations.engine import MIGRATIONS
from services.common.conversations.schema import items
from services.common.errors import InvalidArgument, NotFound, ResourceExhausted
from tests.support.artifact_contract import FakeClock

__all__ = ["MALFORMED_IDS", "ConversationRepositoryContract", "MakeRepository", "artifact"]

MakeRepository = Callable[..., ConversationRepository]
"""``make_repository(clock=None, **settings) -> ConversationRepository`` on the test's database."""

_VALID = "conv_" + "0" * 32
MALFORMED_IDS = [
    "",
    "conv_",
    "../x",
    "conv_" + "0" * 31,
    _VALID + "0",
    "conv_" + "A" * 32,
    "conv_" + "g" * 32,
    "item_" + "0" * 32,
    _VALID + "\n",
    " " + _VALID,
    "conv_" + "0" * 31 + "'",
    "' OR 1=1 --",
]
UNKNOWN_ID = "conv_" + "f" * 32


def artifact(n: int) -> str:
    return f"{n:064x}"


def say(text: str, role: Any = "user", **fields: Any) -> NewItem:
    return NewItem(role=role, text=text, **fields)


def texts(found: list[Item] | tuple[Item, ...]) -> list[str]:
    return [item.text for item in found]


class ConversationRepositoryContract:
    @pytest.fixture
    def clock(self) -> FakeClock:
        return FakeClock()

    @pytest.fixture
    def make_repository(self, database_url: str, clock: FakeClock) -> Iterator[MakeRepository]:
        opened: list[ConversationRepository] = []

        def make(clock_: FakeClock | None = None, **settings: Any) -> ConversationRepository:
            repository = open_repository(
                ConversationSettings(url=database_url, **settings), clock_ or clock
            )
            opened.append(repository)
            return repository

        yield make
        for repository in opened:
            repository.close()

    @pytest.fixture
    def repository(self, make_repository: MakeRepository) -> ConversationRepository:
        return make_repository()

    # create / get / list

    def test_create_then_get(self, repository: ConversationRepository, clock: FakeClock) -> None:
        made = repository.create("tenant-a", "Trip to Lisbon")
        assert made.id.startswith("conv_") and made.tenant == "tenant-a"
        assert (made.title, made.created, made.updated, made.items) == (
            "Trip to Lisbon",
            clock.now,
            clock.now,
            (),
        )
        assert repository.get("tenant-a", made.id) == made
        untitled = repository.create("tenant-a")
        assert untitled.title is None and untitled.id != made.id

    def test_list_is_newest_first_in_pages(
        self, repository: ConversationRepository, clock: FakeClock
    ) -> None:
        made = []
        for _ in range(5):
            clock.now += 1
            made.append(repository.create("tenant-a").id)
        newest_first = made[::-1]
        page = [c.id for c in repository.list("tenant-a", 2)]
        assert page == newest_first[:2]
        page2 = [c.id for c in repository.list("tenant-a", 2, before=page[-1])]
        assert page2 == newest_first[2:4]
        page3 = [c.id for c in repository.list("tenant-a", 2, before=page2[-1])]
        assert page3 == newest_first[4:]
        assert repository.list("tenant-a", 2, before=page3[-1]) == []
        assert all(c.items == () for c in repository.list("tenant-a", 10))
        # An append makes a conversation the most recent.
        clock.now += 1
        repository.append("tenant-a", made[0], [say("again")])
        assert [c.id for c in repository.list("tenant-a", 1)] == [made[0]]
        assert repository.list("tenant-b", 10) == []

    def test_list_pages_through_equal_times_once(self, repository: ConversationRepository) -> None:
        made = {repository.create("tenant-a").id for _ in range(7)}
        seen: list[str] = []
        before = None
        while page := repository.list("tenant-a", 3, before=before):
            seen += [c.id for c in page]
            before = page[-1].id
        assert sorted(seen) == sorted(made)

    # append

    def test_append_keeps_order_and_fields(
        self, repository: ConversationRepository, clock: FakeClock
    ) -> None:
        conversation = repository.create("tenant-a")
        clock.now += 5
        first = repository.append(
            "tenant-a",
            conversation.id,
            [
                say("What is in the picture?"),
                say(
                    "A red bicycle.",
                    "assistant",
                    transcript="A red",
                    status="incomplete",
                    artifact_ids=(artifact(1), artifact(2)),
                    timings={"llm.first_token": 120.5, "tts": 80},
                ),
            ],
            request_key="turn-1",
        )
        second = repository.append("tenant-a", conversation.id, [say("Thanks", "system")])
        assert [i.position for i in first + second] == [0, 1, 2]
        reply = first[1]
        assert (reply.role, reply.transcript, reply.status) == ("assistant", "A red", "incomplete")
        assert reply.artifact_ids == (artifact(1), artifact(2))
        assert reply.timings == {"llm.first_token": 120.5, "tts": 80}
        assert reply.request_key == "turn-1" and second[0].request_key is None
        assert reply.created == clock.now and reply.conversation_id == conversation.id
        got = repository.get("tenant-a", conversation.id)
        assert got.items == tuple(first + second)
        assert got.updated == clock.now and got.created == conversation.created
        assert texts(got.items) == ["What is in the picture?", "A red bicycle.", "Thanks"]

    def test_append_with_the_same_key_stores_once(self, repository: ConversationRepository) -> None:
        conversation = repository.create("tenant-a")
        stored = repository.append("tenant-a", conversation.id, [say("a"), say("b")], "key-1")
        again = repository.append("tenant-a", conversation.id, [say("a"), say("b")], "key-1")
        assert again == stored
        other = repository.append("tenant-a", conversation.id, [say("c")], "key-2")
        assert other[0].position == 2
        # No key: every call appends.
        repository.append("tenant-a", conversation.id, [say("d")])
        repository.append("tenant-a", conversation.id, [say("d")])
        assert texts(repository.get("tenant-a", conversation.id).items) == list("abcdd")
        # A key is per conversation.
        elsewhere = repository.create("tenant-a")
        assert repository.append("tenant-a", elsewhere.id, [say("x")], "key-1")[0].text == "x"

    def test_a_retry_is_answered_even_at_the_item_limit(
        self, make_repository: MakeRepository
    ) -> None:
        repository = make_repository(max_items_per_conversation=2)
        conversation = repository.create("tenant-a")
        stored = repository.append("tenant-a", conversation.id, [say("a"), say("b")], "k")
        assert repository.append("tenant-a", conversation.id, [say("a"), say("b")], "k") == stored
        with pytest.raises(ResourceExhausted):
            repository.append("tenant-a", conversation.id, [say("c")], "k2")

    def test_the_same_key_from_two_replicas_at_once_stores_once(
        self, make_repository: MakeRepository
    ) -> None:
        replicas = [make_repository(), make_repository()]
        for round_ in range(5):
            conversation = replicas[0].create("tenant-a")
            barrier = threading.Barrier(2)

            def append(
                replica: ConversationRepository,
                cid: str = conversation.id,
                barrier: threading.Barrier = barrier,
            ) -> list[Item]:
                barrier.wait()
                return replica.append("tenant-a", cid, [say("hi"), say("hello", "assistant")], "k")

            with ThreadPoolExecutor(2) as pool:
                one, two = pool.map(append, replicas)
            assert one == two, f"round {round_}"
            assert len(replicas[1].get("tenant-a", conversation.id).items) == 2

    def test_appends_from_two_replicas_get_distinct_positions(
        self, make_repository: MakeRepository
    ) -> None:
        replicas = [make_repository(), make_repository()]
        conversation = replicas[0].create("tenant-a")
        workers, turns = 4, 10
        barrier = threading.Barrier(workers)

        def talk(worker: int) -> None:
            replica = replicas[worker % 2]
            barrier.wait()
            for turn in range(turns):
                replica.append(
                    "tenant-a",
                    conversation.id,
                    [say(f"{worker}.{turn}.q"), say(f"{worker}.{turn}.a", "assistant")],
                    request_key=f"{worker}-{turn}",
                )

        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(talk, range(workers)))
        stored = replicas[1].get("tenant-a", conversation.id).items
        assert [i.position for i in stored] == list(range(workers * turns * 2))
        # One append's items stay together, and each worker's turns keep their order.
        for question, answer in zip(stored[::2], stored[1::2], strict=True):
            assert answer.text == question.text[:-1] + "a"
        for worker in range(workers):
            mine = [i.text for i in stored if i.text.startswith(f"{worker}.")]
            assert mine == [f"{worker}.{t}.{x}" for t in range(turns) for x in "qa"]

    # history

    def test_history_keeps_the_newest_that_fit(self, repository: ConversationRepository) -> None:
        conversation = repository.create("tenant-a")
        repository.append(
            "tenant-a", conversation.id, [say("a" * 10), say("b" * 20), say("c" * 5), say("d")]
        )
        history = repository.history
        assert texts(history("tenant-a", conversation.id, 10, 1000)) == [
            "a" * 10,
            "b" * 20,
            "c" * 5,
            "d",
        ]
        assert texts(history("tenant-a", conversation.id, 2, 1000)) == ["c" * 5, "d"]
        assert texts(history("tenant-a", conversation.id, 10, 26)) == ["b" * 20, "c" * 5, "d"]
        assert texts(history("tenant-a", conversation.id, 10, 25)) == ["c" * 5, "d"]
        assert history("tenant-a", conversation.id, 0, 1000) == []
        assert history("tenant-a", conversation.id, 10, 0) == []
        assert [i.position for i in history("tenant-a", conversation.id, 10**9, 10**9)] == [
            0,
            1,
            2,
            3,
        ]
        with pytest.raises(InvalidArgument):
            history("tenant-a", conversation.id, -1, 10)
        with pytest.raises(InvalidArgument):
            history("tenant-a", conversation.id, 1, -10)
        empty = repository.create("tenant-a")
        assert history("tenant-a", empty.id, 10, 10) == []

    # delete and artifacts

    def test_delete_returns_artifacts_and_removes_items(
        self, repository: ConversationRepository
    ) -> None:
        conversation = repository.create("tenant-a")
        keep = repository.create("tenant-a")
        repository.append(
            "tenant-a",
            conversation.id,
            [
                say("q", artifact_ids=(artifact(3),)),
                say("a", "assistant", artifact_ids=(artifact(1), artifact(3))),
                say("r"),
            ],
        )
        repository.append("tenant-a", keep.id, [say("kept", artifact_ids=(artifact(9),))])
        assert repository.referenced_artifacts() == {artifact(1), artifact(3), artifact(9)}
        assert repository.delete("tenant-a", conversation.id) == [artifact(3), artifact(1)]
        with pytest.raises(NotFound):
            repository.get("tenant-a", conversation.id)
        with pytest.raises(NotFound):
            repository.delete("tenant-a", conversation.id)
        with repository.engine.connect() as conn:
            left = conn.execute(sa.select(items.c.conversation_id)).scalars().all()
        assert left == [keep.id]  # cascaded
        assert repository.referenced_artifacts() == {artifact(9)}
        assert [c.id for c in repository.list("tenant-a", 10)] == [keep.id]

    def test_referenced_artifacts_per_tenant(self, repository: ConversationRepository) -> None:
        for tenant, n in (("tenant-a", 1), ("tenant-b", 2)):
            conversation = repository.create(tenant)
            repository.append(tenant, conversation.id, [say("x", artifact_ids=(artifact(n),))])
        assert repository.referenced_artifacts("tenant-a") == {artifact(1)}
        assert repository.referenced_artifacts("tenant-b") == {artifact(2)}
        assert repository.referenced_artifacts("nobody") == set()
        assert repository.referenced_artifacts("") == set()
        assert repository.referenced_artifacts() == {artifact(1), artifact(2)}

    # what no caller may learn

    def test_another_tenants_conversation_is_not_found(
        self, repository: ConversationRepository
    ) -> None:
        theirs = repository.create("tenant-b")
        repository.append("tenant-b", theirs.id, [say("secret", artifact_ids=(artifact(7),))])
        for tenant in ("tenant-a", "", "x" * 300):
            for call in self._lookups(repository, theirs.id, tenant):
                with pytest.raises(NotFound) as caught:
                    call()
                assert caught.value.message == "no such conversation"
        assert texts(repository.get("tenant-b", theirs.id).items) == ["secret"]
        assert repository.list("tenant-a", 10) == []

    def test_unknown_and_malformed_ids_are_not_found(
        self, repository: ConversationRepository
    ) -> None:
        repository.create("tenant-a")
        for bad in [*MALFORMED_IDS, UNKNOWN_ID]:
            for call in self._lookups(repository, bad, "tenant-a"):
                with pytest.raises(NotFound):
                    call()

    @staticmethod
    def _lookups(
        repository: ConversationRepository, cid: str, tenant: str
    ) -> list[Callable[[], object]]:
        return [
            lambda: repository.get(tenant, cid),
            lambda: repository.append(tenant, cid, [say("x")], "k"),
            lambda: repository.history(tenant, cid, 10, 100),
            lambda: repository.delete(tenant, cid),
            lambda: repository.list(tenant, 10, before=cid),
        ]

    # limits and checks

    def test_limits(self, make_repository: MakeRepository) -> None:
        repository = make_repository(
            max_items_per_conversation=3,
            max_text_chars=10,
            max_list_limit=5,
            max_artifacts_per_item=1,
        )
        conversation = repository.create("tenant-a")
        cid = conversation.id
        repository.append("tenant-a", cid, [say("x" * 10, transcript="y" * 10)])
        oversized = [
            [say("x" * 11)],
            [say("x", transcript="y" * 11)],
            [say("x", artifact_ids=(artifact(1), artifact(2)))],
            [say("a"), say("b"), say("c")],  # 1 + 3 items > 3
            [say("a")] * 4,
        ]
        for new in oversized:
            with pytest.raises(ResourceExhausted):
                repository.append("tenant-a", cid, new, "over")
        repository.append("tenant-a", cid, [say("a"), say("b")])
        with pytest.raises(ResourceExhausted) as caught:
            repository.append("tenant-a", cid, [say("c")])
        assert caught.value.field == "items"
        assert len(repository.get("tenant-a", cid).items) == 3
        assert repository.list("tenant-a", 5)
        with pytest.raises(ResourceExhausted):
            repository.list("tenant-a", 6)

    def test_bad_inputs_are_invalid_arguments(self, repository: ConversationRepository) -> None:
        cid = repository.create("tenant-a").id
        bad_calls: list[Callable[[], object]] = [
            lambda: repository.create(""),
            lambda: repository.create("x" * 257),
            lambda: repository.create("tenant-a", "t" * 257),
            lambda: repository.append("tenant-a", cid, []),
            lambda: repository.append("tenant-a", cid, [say("x", role="robot")]),
            lambda: repository.append("tenant-a", cid, [say("x", status="done")]),
            lambda: repository.append("tenant-a", cid, [say("x", artifact_ids=("../a",))]),
            lambda: repository.append("tenant-a", cid, [say("x", artifact_ids=artifact(1))]),
            lambda: repository.append("tenant-a", cid, [say("x", timings={"tts": -1.0})]),
            lambda: repository.append("tenant-a", cid, [say("x", timings={"Bad Name": 1.0})]),
            lambda: repository.append("tenant-a", cid, [say("x", timings={"t": float("nan")})]),
            lambda: repository.append("tenant-a", cid, [say("x")], ""),
            lambda: repository.append("tenant-a", cid, [say("x")], "k" * 257),
            lambda: repository.list("tenant-a", 0),
        ]
        for call in bad_calls:
            with pytest.raises(InvalidArgument):
                call()
        assert repository.get("tenant-a", cid).items == ()

    # migrations

    def test_migrations_twice_are_a_no_op(
        self, repository: ConversationRepository, make_repository: MakeRepository
    ) -> None:
        made = repository.create("tenant-a")
        repository.append("tenant-a", made.id, [say("kept")])
        again = make_repository()
        assert texts(again.get("tenant-a", made.id).items) == ["kept"]
        head = ScriptDirectory(str(MIGRATIONS)).get_current_head()
        with again.engine.connect() as conn:
            assert MigrationContext.configure(conn).get_current_revision() == head
            rows = conn.execute(sa.text("SELECT version_num FROM alembic_version")).all()
        assert [tuple(r) for r in rows] == [(head,)]

    def test_the_migrated_schema_matches_the_models(
        self, repository: ConversationRepository
    ) -> None:
        with repository.engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), metadata)
        assert diff == []

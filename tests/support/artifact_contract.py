"""The artifact store's contract, written once and run on every backend.

A test file subclasses ``ArtifactStoreContract`` (pytest collects the subclass, named
``Test...``) and provides the fixture ``make_store``: a factory that takes ``clock`` (the
injected time, so no test sleeps) and ``max_artifact_bytes`` and returns an empty store of its
backend. ``tests/fast/test_artifacts.py`` runs it on a folder, ``tests/test_artifacts_s3.py``
on a real S3 server on loopback.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from services.common.artifacts import Artifact, ArtifactMeta, ArtifactStore, artifact_id
from services.common.errors import InvalidArgument, NotFound, ResourceExhausted

__all__ = [
    "AUDIO",
    "MALFORMED_IDS",
    "START",
    "ArtifactStoreContract",
    "FakeClock",
    "MakeStore",
    "meta",
]

START = 1_700_000_000.0
AUDIO = bytes(range(256)) * 4  # 1 KiB, every byte value


class FakeClock:
    """Unix time that moves only when a test says so."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


MakeStore = Callable[..., ArtifactStore]
"""``make_store(clock=FakeClock(), max_artifact_bytes=1 MiB) -> ArtifactStore``."""

_VALID = "0" * 64
MALFORMED_IDS = [
    "",
    "../x",
    "a/b",
    "..",
    ".",
    "/etc/passwd",
    "../" + _VALID[3:],
    _VALID[:63],
    _VALID + "0",
    "g" * 64,
    "A" * 64,
    _VALID + ".json",
    _VALID + "\n",
    _VALID[:32] + "/" + _VALID[:31],
    "\0" * 64,
]


def meta(tenant: str = "tenant-a", **fields: object) -> ArtifactMeta:
    values: dict[str, object] = {
        "tenant": tenant,
        "media_type": "audio/wav",
        "model": "en_US-joe-medium",
        "backend": "piper",
        "turn_id": "turn-1",
        "conversation_id": "conv-1",
        "duration_seconds": 1.5,
    }
    values.update(fields)
    return ArtifactMeta(**values)  # type: ignore[arg-type]


class ArtifactStoreContract:
    """What every ``ArtifactStore`` does; subclasses supply ``make_store``."""

    @pytest.fixture
    def clock(self) -> FakeClock:
        return FakeClock()

    @pytest.fixture
    def store(self, make_store: MakeStore, clock: FakeClock) -> ArtifactStore:
        return make_store(clock=clock)

    # -- put, get, stat ------------------------------------------------------------------------

    def test_put_then_get_stat_and_list(self, store: ArtifactStore) -> None:
        made = store.put(AUDIO, meta())
        assert made.id == artifact_id("tenant-a", AUDIO)
        assert len(made.id) == 64
        assert (made.size, made.created, made.backend) == (len(AUDIO), START, store.backend)
        assert made.meta == meta()
        assert store.get(made.id, "tenant-a") == AUDIO
        assert store.stat(made.id, "tenant-a") == made
        assert store.list("tenant-a") == [made]

    def test_image_metadata_round_trips(self, store: ArtifactStore) -> None:
        image = meta(media_type="image/png", width=64, height=48, duration_seconds=None)
        made = store.put(b"\x89PNG fake", image)
        assert store.stat(made.id, "tenant-a").meta == image

    def test_empty_artifact(self, store: ArtifactStore) -> None:
        made = store.put(b"", meta())
        assert store.get(made.id, "tenant-a") == b""
        assert store.get(made.id, "tenant-a", 0, 10) == b""
        assert store.stat(made.id, "tenant-a").size == 0

    @pytest.mark.parametrize(
        ("start", "end"),
        [(0, 3), (3, None), (None, 4), (10, 20), (1000, 1024), (1000, 5000), (5, 5), (1024, None)],
    )
    def test_byte_ranges_follow_slice_rules(
        self, store: ArtifactStore, start: int | None, end: int | None
    ) -> None:
        """``[start, end)``: end exclusive and clamped, a start at or past the end gives b""."""
        made = store.put(AUDIO, meta())
        assert store.get(made.id, "tenant-a", start, end) == AUDIO[start:end]

    def test_start_past_the_end_is_empty(self, store: ArtifactStore) -> None:
        made = store.put(AUDIO, meta())
        assert store.get(made.id, "tenant-a", 5000) == b""
        assert store.get(made.id, "tenant-a", 5000, 6000) == b""

    @pytest.mark.parametrize(("start", "end"), [(-1, None), (0, -1), (10, 5)])
    def test_bad_ranges_are_invalid_arguments(
        self, store: ArtifactStore, start: int, end: int | None
    ) -> None:
        made = store.put(AUDIO, meta())
        with pytest.raises(InvalidArgument):
            store.get(made.id, "tenant-a", start, end)

    def test_range_of_an_unknown_artifact_is_not_found(self, store: ArtifactStore) -> None:
        missing = artifact_id("tenant-a", b"never stored")
        for start, end in [(0, 10), (5, 5), (None, None)]:
            with pytest.raises(NotFound):
                store.get(missing, "tenant-a", start, end)

    # -- idempotence ---------------------------------------------------------------------------

    def test_same_bytes_twice_is_one_artifact(self, store: ArtifactStore, clock: FakeClock) -> None:
        first = store.put(AUDIO, meta())
        clock.now += 60
        again = store.put(AUDIO, meta(turn_id="turn-2", conversation_id="conv-2"))
        assert again.id == first.id
        assert again.meta == first.meta  # one copy: the first producer's record
        assert again.created == START + 60  # a re-put renews the age retention counts
        assert store.list("tenant-a") == [again]
        assert store.stat(first.id, "tenant-a") == again
        assert store.get(first.id, "tenant-a") == AUDIO

    # -- tenants -------------------------------------------------------------------------------

    def test_tenants_are_isolated(self, store: ArtifactStore) -> None:
        a = store.put(AUDIO, meta("tenant-a"))
        b = store.put(AUDIO, meta("tenant-b"))
        assert a.id != b.id  # the same bytes, two artifacts
        for artifact, other in ((a, "tenant-b"), (b, "tenant-a"), (a, "tenant-c")):
            with pytest.raises(NotFound):
                store.get(artifact.id, other)
            with pytest.raises(NotFound):
                store.get(artifact.id, other, 0, 4)
            with pytest.raises(NotFound):
                store.stat(artifact.id, other)
            assert store.delete(artifact.id, other) is False
        assert store.list("tenant-a") == [a]
        assert store.list("tenant-b") == [b]
        assert store.list("tenant-c") == []
        assert store.delete(a.id, "tenant-a") is True
        assert store.get(b.id, "tenant-b") == AUDIO  # the other tenant's copy stays

    @pytest.mark.parametrize("tenant", ["../tenant-a", "tenant-a/..", "x" * 257, ""])
    def test_odd_tenants_find_nothing(self, store: ArtifactStore, tenant: str) -> None:
        made = store.put(AUDIO, meta())
        with pytest.raises(NotFound):
            store.get(made.id, tenant)
        with pytest.raises(NotFound):
            store.stat(made.id, tenant)
        assert store.list(tenant) == []

    def test_tenant_names_with_slashes_are_just_names(self, store: ArtifactStore) -> None:
        made = store.put(AUDIO, meta("../org/team"))
        assert store.get(made.id, "../org/team") == AUDIO
        assert store.list("../org/team") == [made]

    # -- malformed ids -------------------------------------------------------------------------

    @pytest.mark.parametrize("bad", MALFORMED_IDS, ids=repr)
    def test_malformed_ids_are_not_found(self, store: ArtifactStore, bad: str) -> None:
        store.put(AUDIO, meta())
        with pytest.raises(NotFound):
            store.get(bad, "tenant-a")
        with pytest.raises(NotFound):
            store.get(bad, "tenant-a", 0, 4)
        with pytest.raises(NotFound):
            store.stat(bad, "tenant-a")
        with pytest.raises(NotFound):
            store.delete(bad, "tenant-a")

    def test_unknown_id_is_not_found(self, store: ArtifactStore) -> None:
        missing = artifact_id("tenant-a", b"never stored")
        with pytest.raises(NotFound):
            store.get(missing, "tenant-a")
        with pytest.raises(NotFound):
            store.stat(missing, "tenant-a")
        assert store.delete(missing, "tenant-a") is False

    # -- delete and list -----------------------------------------------------------------------

    def test_delete(self, store: ArtifactStore) -> None:
        made = store.put(AUDIO, meta())
        assert store.delete(made.id, "tenant-a") is True
        assert store.delete(made.id, "tenant-a") is False
        with pytest.raises(NotFound):
            store.get(made.id, "tenant-a")
        with pytest.raises(NotFound):
            store.stat(made.id, "tenant-a")
        assert store.list("tenant-a") == []
        assert store.put(AUDIO, meta()).id == made.id  # and it can be stored again

    def test_list_by_conversation_oldest_first(
        self, store: ArtifactStore, clock: FakeClock
    ) -> None:
        made: list[Artifact] = []
        for i, conversation in enumerate(["c1", "c2", "c1", None]):
            clock.now = START + i
            made.append(store.put(f"item {i}".encode(), meta(conversation_id=conversation)))
        assert store.list("tenant-a") == made
        assert store.list("tenant-a", conversation_id="c1") == [made[0], made[2]]
        assert store.list("tenant-a", conversation_id="c3") == []
        assert store.scan() == made

    # -- limits --------------------------------------------------------------------------------

    def test_size_limit(self, make_store: MakeStore, clock: FakeClock) -> None:
        store = make_store(clock=clock, max_artifact_bytes=16)
        assert store.max_artifact_bytes == 16
        assert store.get(store.put(b"x" * 16, meta()).id, "tenant-a") == b"x" * 16
        with pytest.raises(ResourceExhausted) as refused:
            store.put(b"y" * 17, meta())
        assert refused.value.field == "data"
        assert [a.size for a in store.list("tenant-a")] == [16]

    @pytest.mark.parametrize(
        "fields",
        [
            {"tenant": ""},
            {"media_type": ""},
            {"media_type": "wav"},
            {"model": "m" * 257},
            {"duration_seconds": -1.0},
            {"duration_seconds": float("nan")},
            {"width": 0},
        ],
        ids=repr,
    )
    def test_bad_metadata_is_invalid(self, fields: dict[str, object]) -> None:
        with pytest.raises(InvalidArgument):
            meta(**fields)

    # -- retention -----------------------------------------------------------------------------

    def _three(
        self, store: ArtifactStore, clock: FakeClock, tenants: tuple[str, ...] = ()
    ) -> list[Artifact]:
        """Three 100-byte artifacts made at START, START+10 and START+20."""
        made = []
        for i in range(3):
            clock.now = START + 10 * i
            tenant = tenants[i] if tenants else "tenant-a"
            made.append(store.put(bytes([i]) * 100, meta(tenant)))
        return made

    def test_sweep_by_age_removes_even_referenced(
        self, store: ArtifactStore, clock: FakeClock
    ) -> None:
        old, middle, young = self._three(store, clock)
        removed = store.sweep(
            now=START + 20,
            max_age_seconds=10,
            max_total_bytes=10**9,
            referenced={old.id, middle.id, young.id},
        )
        assert removed == [old.id]  # 20 s old; the middle one is exactly 10 s old: kept
        assert store.list("tenant-a") == [middle, young]
        removed = store.sweep(
            now=START + 31, max_age_seconds=10, max_total_bytes=10**9, referenced={young.id}
        )
        assert removed == [middle.id, young.id]
        assert store.scan() == []

    def test_sweep_by_total_removes_oldest_unreferenced(
        self, store: ArtifactStore, clock: FakeClock
    ) -> None:
        old, middle, young = self._three(store, clock)
        removed = store.sweep(
            now=START + 30, max_age_seconds=3600, max_total_bytes=150, referenced=[]
        )
        assert removed == [old.id, middle.id]
        assert store.list("tenant-a") == [young]

    def test_sweep_by_total_skips_referenced(self, store: ArtifactStore, clock: FakeClock) -> None:
        old, middle, young = self._three(store, clock)
        removed = store.sweep(
            now=START + 30, max_age_seconds=3600, max_total_bytes=150, referenced=[old.id]
        )
        assert removed == [middle.id, young.id]
        assert store.list("tenant-a") == [old]

    def test_sweep_never_removes_a_young_referenced_one(
        self, store: ArtifactStore, clock: FakeClock
    ) -> None:
        made = self._three(store, clock)
        removed = store.sweep(
            now=START + 30,
            max_age_seconds=3600,
            max_total_bytes=0,
            referenced=[a.id for a in made],
        )
        assert removed == []
        assert store.list("tenant-a") == made

    def test_sweep_within_limits_removes_nothing(
        self, store: ArtifactStore, clock: FakeClock
    ) -> None:
        made = self._three(store, clock)
        assert (
            store.sweep(now=START + 30, max_age_seconds=3600, max_total_bytes=300, referenced=())
            == []
        )
        assert store.list("tenant-a") == made

    def test_sweep_spans_tenants(self, store: ArtifactStore, clock: FakeClock) -> None:
        a, b, c = self._three(store, clock, ("tenant-a", "tenant-b", "tenant-c"))
        removed = store.sweep(
            now=START + 30, max_age_seconds=3600, max_total_bytes=100, referenced=[b.id]
        )
        assert removed == [a.id, c.id]
        assert store.scan() == [b]

    def test_a_re_put_renews_the_age(self, store: ArtifactStore, clock: FakeClock) -> None:
        made = store.put(AUDIO, meta())
        clock.now = START + 100
        store.put(AUDIO, meta())
        removed = store.sweep(
            now=START + 150, max_age_seconds=60, max_total_bytes=10**9, referenced=()
        )
        assert removed == []
        assert store.get(made.id, "tenant-a") == AUDIO

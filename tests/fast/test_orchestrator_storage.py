"""``services/orchestrator/storage.py`` in-process: the caller's tenant, the whole-reply WAV
(chunks end to end, sample for sample), live input as WAV, the media type of a recording,
the lazily opened stores, and one turn's record over a real local store and SQLite."""

from __future__ import annotations

import io
import time
import wave
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from chorus.v1 import common_pb2, llm_pb2
from chorus.v1 import orchestrator_pb2 as pb
from pydantic import SecretStr

from services.common.artifacts import ArtifactSettings
from services.common.audio import wav_bytes
from services.common.conversations import ConversationSettings, NewItem
from services.common.errors import InvalidArgument, NotFound, ResourceExhausted, Unavailable
from services.orchestrator import storage
from services.orchestrator.inputs import TurnInput
from services.orchestrator.settings import OrchestratorSettings
from services.orchestrator.stages import TurnContext
from services.orchestrator.storage import (
    DEFAULT_TENANT,
    TENANT_KEY,
    Stores,
    TurnRecord,
    blocking,
    live_input_wav,
    stored_history,
    tenant_of,
)

PCM = common_pb2.AUDIO_ENCODING_PCM_S16LE
WAV = common_pb2.AUDIO_ENCODING_WAV
TENANT = "tenant-a"


class Metadata:
    """The one method ``tenant_of`` calls on a servicer context."""

    def __init__(self, pairs: Any) -> None:
        self.pairs = pairs

    def invocation_metadata(self) -> Any:
        return self.pairs


def frames(data: bytes) -> tuple[np.ndarray, int, int]:
    with wave.open(io.BytesIO(data)) as reader:
        pcm = np.frombuffer(reader.readframes(reader.getnframes()), "<i2")
        return pcm, reader.getframerate(), reader.getnchannels()


def ramp(start: int, count: int) -> np.ndarray:
    return np.arange(start, start + count, dtype=np.int16)


# -- the tenant -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pairs", "tenant"),
    [
        ((("x-request-id", "r"), (TENANT_KEY, TENANT)), TENANT),
        (((TENANT_KEY, TENANT.encode()),), TENANT),
        (((TENANT_KEY, "t" * 256),), "t" * 256),
        ((("x-request-id", "r"),), DEFAULT_TENANT),
        ((), DEFAULT_TENANT),
        (None, DEFAULT_TENANT),
    ],
)
def test_the_tenant_is_the_metadata_or_the_default(pairs: Any, tenant: str) -> None:
    assert tenant_of(Metadata(pairs)) == tenant  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["", "t" * 257])
def test_a_tenant_the_stores_cannot_hold_is_invalid(value: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        tenant_of(Metadata(((TENANT_KEY, value),)))  # type: ignore[arg-type]
    assert raised.value.field == f"metadata.{TENANT_KEY}"


# -- the whole reply as one WAV ---------------------------------------------------------------


def chunk(encoding: int, samples: np.ndarray, rate: int) -> pb.AudioChunkEvent:
    audio = wav_bytes(samples, rate) if encoding == WAV else samples.astype("<i2").tobytes()
    return pb.AudioChunkEvent(audio=audio, encoding=encoding, sample_rate_hz=rate)


@pytest.mark.parametrize("encodings", [(PCM, PCM, PCM), (WAV, WAV, WAV), (WAV, PCM, WAV)])
def test_reply_chunks_are_joined_sample_for_sample(encodings: tuple[int, ...]) -> None:
    parts = [ramp(-3000, 1000), ramp(100, 7), ramp(20000, 4001)]
    joined, rate = storage._joined_pcm(
        [chunk(e, p, 22050) for e, p in zip(encodings, parts, strict=True)]
    )
    assert rate == 22050
    assert joined.dtype == np.int16
    np.testing.assert_array_equal(joined, np.concatenate(parts))


def test_a_wav_chunk_without_encoding_is_read_as_wav() -> None:
    samples = ramp(0, 321)
    event = pb.AudioChunkEvent(audio=wav_bytes(samples, 16000), sample_rate_hz=16000)
    joined, rate = storage._joined_pcm([event])
    assert rate == 16000
    np.testing.assert_array_equal(joined, samples)


def test_chunks_at_another_rate_are_resampled_to_the_first_chunks() -> None:
    first = ramp(0, 2400)  # 0.1 s at 24 kHz
    second = np.zeros(1600, np.int16)  # 0.1 s at 16 kHz
    joined, rate = storage._joined_pcm([chunk(PCM, first, 24000), chunk(WAV, second, 16000)])
    assert rate == 24000
    np.testing.assert_array_equal(joined[:2400], first)
    assert abs(len(joined) - 4800) <= 2  # the second tenth of a second, at 24 kHz


def test_a_pcm_chunk_without_a_rate_is_taken_as_24_khz() -> None:
    """It failed in the resampler (rate 0), an error that failed the whole turn."""
    samples = ramp(0, 10)
    joined, rate = storage._joined_pcm(
        [pb.AudioChunkEvent(audio=samples.tobytes(), encoding=PCM)] * 2
    )
    assert rate == 24000
    np.testing.assert_array_equal(joined, np.concatenate([samples, samples]))


def test_a_pcm_chunk_with_an_odd_byte_loses_only_that_byte() -> None:
    """numpy refused it (not a whole number of samples), an error that failed the turn."""
    samples = ramp(7, 10)
    event = pb.AudioChunkEvent(audio=samples.tobytes() + b"\x01", encoding=PCM, sample_rate_hz=8000)
    joined, _ = storage._joined_pcm([event])
    np.testing.assert_array_equal(joined, samples)


def test_a_wav_that_is_not_16_bit_mono_is_decoded() -> None:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(2)
        writer.setsampwidth(2)
        writer.setframerate(8000)
        writer.writeframes(np.full(2 * 800, 1000, np.int16).tobytes())
    joined, rate = storage._joined_pcm(
        [pb.AudioChunkEvent(audio=buffer.getvalue(), encoding=WAV, sample_rate_hz=8000)]
    )
    assert rate == 8000
    assert len(joined) == 800
    assert len(set(joined.tolist())) == 1 and joined[0] > 1000  # FFmpeg's downmix: L+R, -3 dB


def test_an_undecodable_chunk_is_a_chorus_error() -> None:
    event = pb.AudioChunkEvent(
        audio=b"not audio", encoding=common_pb2.AUDIO_ENCODING_MP3, sample_rate_hz=24000
    )
    with pytest.raises(InvalidArgument):
        storage._joined_pcm([event])


# -- live input, media types ------------------------------------------------------------------


def test_live_mono_input_becomes_a_wav_of_the_same_samples() -> None:
    samples = ramp(-50, 100)
    pcm, rate, channels = frames(live_input_wav(samples.tobytes() + b"\x01", 16000, 1))
    assert (rate, channels) == (16000, 1)
    np.testing.assert_array_equal(pcm, samples)  # the odd trailing byte is dropped


def test_live_stereo_input_keeps_its_channels_and_whole_frames() -> None:
    interleaved = ramp(0, 200).tobytes()
    pcm, rate, channels = frames(live_input_wav(interleaved + b"\0\0", 48000, 2))
    assert (rate, channels) == (48000, 2)
    assert pcm.tobytes() == interleaved  # the half frame at the end is dropped


@pytest.mark.parametrize(
    ("head", "media_type"),
    [
        (wav_bytes(np.zeros(4, np.int16), 8000), "audio/wav"),
        (b"OggS\0\2", "audio/ogg"),
        (b"\x1aE\xdf\xa3\x01", "audio/webm"),
        (b"fLaC\0", "audio/flac"),
        (b"ID3\4\0", "audio/mpeg"),
        (b"\xff\xfb\x90\x00", "audio/mpeg"),
        (b"\0\0\0\x20ftypM4A ", "audio/mp4"),
        (b"RIFF\0\0\0\0AVI ", "application/octet-stream"),
        (b"", "application/octet-stream"),
    ],
)
def test_a_recordings_media_type_is_sniffed(head: bytes, media_type: str) -> None:
    assert storage._sniff(head) == media_type


def test_a_storage_error_keeps_its_code_and_says_storage() -> None:
    error = storage._storage_error(ResourceExhausted("too big"))
    assert error.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error.message == "storage: too big"


# -- the stores ------------------------------------------------------------------------------


@pytest.fixture
def artifact_settings(tmp_path: Path) -> ArtifactSettings:
    return ArtifactSettings(folder=tmp_path / "artifacts")


async def test_stores_open_once_on_first_use(tmp_path: Path, stores: Stores) -> None:
    assert not (tmp_path / "conversations.sqlite3").exists()
    repository = await stores.conversations()
    assert (tmp_path / "conversations.sqlite3").exists()
    assert await stores.conversations() is repository
    assert await stores.artifacts() is await stores.artifacts()


async def test_a_store_that_cannot_open_is_unavailable_and_tried_again(
    tmp_path: Path, artifact_settings: ArtifactSettings
) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    settings = ConversationSettings(url=SecretStr(f"sqlite:///{blocker / 'c.sqlite3'}"))
    stores = Stores(artifact_settings, settings)
    with pytest.raises(Unavailable):
        await stores.conversations()
    blocker.unlink()
    blocker.mkdir()
    try:
        assert await stores.conversations() is not None
    finally:
        await stores.close()


async def test_blocking_maps_unexpected_failures_to_unavailable() -> None:
    def broken() -> None:
        raise OSError("secret path /srv/x")

    with pytest.raises(Unavailable) as raised:
        await blocking("artifact", broken)
    assert "/srv/x" not in raised.value.message
    with pytest.raises(NotFound):
        await blocking("artifact", _not_found)
    assert await blocking("artifact", lambda x: x + 1, 1) == 2


def _not_found() -> None:
    raise NotFound("gone")


async def test_stored_history_skips_empty_items_and_names_the_field(stores: Stores) -> None:
    repository = await stores.conversations()
    conversation = repository.create(TENANT)
    repository.append(
        TENANT,
        conversation.id,
        [
            NewItem(role="user", text="hello"),
            NewItem(role="assistant", text="  ", status="incomplete"),
            NewItem(role="assistant", text="hi there"),
        ],
    )
    history = await stored_history(stores, TENANT, conversation.id, 10, 1000)
    assert [(m.role, m.content) for m in history] == [
        (llm_pb2.CHAT_ROLE_USER, "hello"),
        (llm_pb2.CHAT_ROLE_ASSISTANT, "hi there"),
    ]
    with pytest.raises(NotFound) as raised:
        await stored_history(stores, "tenant-b", conversation.id, 10, 1000)
    assert raised.value.field == "config.conversation_id"


# -- one turn's record ------------------------------------------------------------------------


def turn_context(turn_id: str, events: list[pb.TurnEvent]) -> TurnContext:
    return TurnContext(
        config=pb.TurnConfig(voice="v"),
        settings=OrchestratorSettings(),
        services=None,  # type: ignore[arg-type]  # the record calls no model
        turn_id=turn_id,
        deadline=time.monotonic() + 600,
        emit=events.append,
    )


async def record_turn(
    stores: Stores, conversation_id: str, turn_id: str, parts: list[np.ndarray], **kwargs: Any
) -> tuple[list[pb.TurnEvent], list[pb.AudioChunkEvent]]:
    """A text turn whose reply is ``parts`` as PCM chunks; (events emitted, chunk events)."""
    events: list[pb.TurnEvent] = []
    context = turn_context(turn_id, events)
    record = TurnRecord(
        stores=stores,
        artifacts=kwargs.pop("artifacts", await stores.artifacts()),
        tenant=TENANT,
        conversation_id=conversation_id,
        turn_id=turn_id,
        artifacts_only=kwargs.pop("artifacts_only", False),
        store_input_audio=False,
    )
    sent = [await record.audio_chunk(context, chunk(PCM, p, 16000)) for p in parts]
    record.reply_text = "the reply"
    await record.finish(context, "the question", TurnInput(text="the question"))
    return events, sent


async def test_a_turn_stores_its_chunks_the_whole_reply_and_its_items(stores: Stores) -> None:
    repository = await stores.conversations()
    artifacts = await stores.artifacts()
    conversation = repository.create(TENANT)
    parts = [ramp(0, 160), ramp(1000, 320)]
    events, sent = await record_turn(stores, conversation.id, "turn-1", parts)

    assert all(event.artifact_id and event.audio for event in sent)
    [stored] = [e.stored for e in events if e.HasField("stored")]
    assert not [e for e in events if e.HasField("error")]
    reply = artifacts.get(stored.reply_audio_artifact_id, TENANT)
    pcm, rate, _ = frames(reply)
    assert rate == 16000
    np.testing.assert_array_equal(pcm, np.concatenate(parts))
    user, assistant = repository.get(TENANT, conversation.id).items
    assert (user.text, assistant.text) == ("the question", "the reply")
    assert assistant.artifact_ids == (stored.reply_audio_artifact_id,)
    assert (stored.user_item_id, stored.assistant_item_id) == (user.id, assistant.id)

    # The same turn id again (a retried call): nothing appended twice, the first try reported.
    again, _ = await record_turn(stores, conversation.id, "turn-1", parts)
    [second] = [e.stored for e in again if e.HasField("stored")]
    assert second == stored
    assert len(repository.get(TENANT, conversation.id).items) == 2


async def test_artifacts_only_leaves_the_bytes_out_unless_the_put_failed(stores: Stores) -> None:
    repository = await stores.conversations()
    conversation = repository.create(TENANT)
    _, sent = await record_turn(
        stores, conversation.id, "turn-2", [ramp(0, 160)], artifacts_only=True
    )
    assert sent[0].artifact_id and not sent[0].audio

    events, sent = await record_turn(
        stores,
        conversation.id,
        "turn-3",
        [ramp(0, 160), ramp(5, 160)],
        artifacts=None,
        artifacts_only=True,
    )
    assert all(event.audio and not event.artifact_id for event in sent)
    errors = [e.error for e in events if e.HasField("error")]
    assert len(errors) == 1  # one storage error per turn, not one per chunk
    assert not errors[0].fatal and errors[0].message.startswith("storage: ")
    assert errors[0].stage == pb.STAGE_STORAGE
    [stored] = [e.stored for e in events if e.HasField("stored")]
    assert not stored.reply_audio_artifact_id  # the items are still appended

"""Stored conversations through the orchestrator (issue 15): the Conversations service, turns that
name a conversation (history read from the store, media put in the artifact store, items
appended once per request id), tenants, deletion, and two replicas sharing PostgreSQL and S3.

Real servers on loopback: the model services of the suite, orchestrators started here with
their stores in this module's temporary folders (nothing goes to ~/.cache).
"""

from __future__ import annotations

import io
import time
import uuid
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import schemathesis
from chorus.v1 import llm_pb2, orchestrator_pb2_grpc
from chorus.v1 import orchestrator_pb2 as pb
from pydantic import SecretStr

from devtools.processes import ServiceProcess
from gateway.app import create_app
from gateway.openapi import document
from services.common.artifacts import ArtifactSettings, ArtifactStore, open_store
from services.common.conversations import (
    ConversationRepository,
    ConversationSettings,
    open_repository,
)
from tests.conftest import orchestrator_env
from tests.support.gateway import conforms, schema_settings
from tests.support.postgres import PostgresCluster, find_bin, postgres_cluster
from tests.support.services import running
from tests.test_artifacts_s3 import (  # noqa: F401 (fixtures)
    ACCESS_KEY,
    BUCKET,
    REGION,
    SECRET_KEY,
    aws_environment,
    s3_endpoint,
)

TENANT = "tenant-a"
OTHER = "tenant-b"
OPTIONS = pb.TurnOptions(max_tokens=24, temperature=0.0, seed=7)


def md(tenant: str = TENANT, request_id: str | None = None) -> list[tuple[str, str]]:
    return [
        ("x-chorus-tenant", tenant),
        ("x-request-id", request_id or uuid.uuid4().hex),
    ]


def stubs(
    proc: ServiceProcess,
) -> tuple[orchestrator_pb2_grpc.OrchestratorStub, orchestrator_pb2_grpc.ConversationsStub]:
    channel = grpc.insecure_channel(proc.address)
    return (
        orchestrator_pb2_grpc.OrchestratorStub(channel),
        orchestrator_pb2_grpc.ConversationsStub(channel),
    )


def converse(
    stub: orchestrator_pb2_grpc.OrchestratorStub, text: str, **config: Any
) -> list[pb.TurnEvent]:
    requests = [
        pb.ConverseRequest(config=pb.TurnConfig(input_mode=pb.INPUT_MODE_TEXT, **config)),
        pb.ConverseRequest(text=text),
        pb.ConverseRequest(end_of_input=pb.EndOfInput()),
    ]
    return list(stub.Converse(iter(requests), timeout=180, metadata=md()))


def frames(wav: bytes) -> tuple[bytes, int]:
    with wave.open(io.BytesIO(wav)) as reader:
        return reader.readframes(reader.getnframes()), reader.getframerate()


@pytest.fixture(scope="module")
def local_stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("stored")
    return {
        "CHORUS_ARTIFACTS_FOLDER": str(root / "artifacts"),
        "CHORUS_CONVERSATIONS_URL": f"sqlite:///{root / 'conversations.sqlite3'}",
    }


@pytest.fixture(scope="module")
def orch(
    logs: Path,
    local_stores: dict[str, str],
    stt_faster_whisper: ServiceProcess,
    tts_piper: ServiceProcess,
    llm_llama_cpp: ServiceProcess,
    image_diffusers: ServiceProcess,
) -> Iterator[ServiceProcess]:
    env = orchestrator_env(stt_faster_whisper, tts_piper, llm_llama_cpp, image_diffusers)
    with running("orchestrator", {**env, **local_stores}, logs, "stored") as proc:
        yield proc


@pytest.fixture(scope="module")
def artifacts(local_stores: dict[str, str]) -> ArtifactStore:
    return open_store(ArtifactSettings(folder=Path(local_stores["CHORUS_ARTIFACTS_FOLDER"])))


@pytest.fixture(scope="module")
def repository(
    local_stores: dict[str, str], orch: ServiceProcess
) -> Iterator[ConversationRepository]:
    """The orchestrator's database, opened here too (SQLite in WAL mode: both may read)."""
    url = SecretStr(local_stores["CHORUS_CONVERSATIONS_URL"])
    with open_repository(ConversationSettings(url=url)) as repo:
        yield repo


def test_turns_are_stored_with_their_media(
    orch: ServiceProcess, artifacts: ArtifactStore, repository: ConversationRepository
) -> None:
    turns, conversations = stubs(orch)
    created = conversations.CreateConversation(
        pb.CreateConversationRequest(title="stored"), metadata=md(), timeout=30
    )
    assert created.id.startswith("conv_") and created.title == "stored" and not created.items

    # Turn 1 (Converse): spoken reply and an image, bytes inline and ids beside them.
    first = converse(
        turns,
        "My name is Ada. Please say hello to me.",
        conversation_id=created.id,
        image_mode=pb.IMAGE_MODE_ON,
        options=OPTIONS,
    )
    kinds = [e.WhichOneof("event") for e in first]
    assert kinds[-1] == "stored", kinds
    assert "error" not in kinds, [e.error for e in first if e.HasField("error")]
    chunks = [e.audio_chunk for e in first if e.HasField("audio_chunk")]
    assert chunks
    last_audio = max(i for i, k in enumerate(kinds) if k == "audio_chunk")
    assert last_audio < kinds.index("stored")
    for chunk in chunks:
        assert chunk.audio and chunk.artifact_id
        assert artifacts.get(chunk.artifact_id, TENANT) == chunk.audio
        record = artifacts.stat(chunk.artifact_id, TENANT)
        assert record.meta.conversation_id == created.id and record.meta.media_type == "audio/wav"
        assert record.meta.turn_id == first[0].turn_id
    (image,) = [e.image_result for e in first if e.HasField("image_result")]
    assert image.png and artifacts.get(image.artifact_id, TENANT) == image.png
    assert artifacts.stat(image.artifact_id, TENANT).meta.width == image.width

    stored = first[-1].stored
    assert stored.conversation_id == created.id
    assert list(stored.image_artifact_ids) == [image.artifact_id]
    # The whole reply as one WAV: exactly the chunks' samples, end to end.
    whole, rate = frames(artifacts.get(stored.reply_audio_artifact_id, TENANT))
    parts = [frames(c.audio) for c in chunks]
    assert {r for _, r in parts} == {rate}
    assert whole == b"".join(p for p, _ in parts)
    duration = artifacts.stat(stored.reply_audio_artifact_id, TENANT).meta.duration_seconds
    assert duration == pytest.approx(sum(c.duration_seconds for c in chunks), abs=0.01)

    # Turn 2 (RunTurn), artifacts only: ids without bytes; its history is the stored turn.
    second_text = "What is my name?"
    response = turns.RunTurn(
        pb.RunTurnRequest(
            config=pb.TurnConfig(conversation_id=created.id, artifacts_only=True, options=OPTIONS),
            text=second_text,
        ),
        metadata=md(),
        timeout=180,
    )
    assert not response.errors, response.errors
    assert response.audio and response.stored.assistant_item_id
    for chunk in response.audio:
        assert not chunk.audio and chunk.artifact_id
        assert frames(artifacts.get(chunk.artifact_id, TENANT))[1] == chunk.sample_rate_hz

    got = conversations.GetConversation(
        pb.GetConversationRequest(id=created.id), metadata=md(), timeout=30
    )
    user, assistant = llm_pb2.CHAT_ROLE_USER, llm_pb2.CHAT_ROLE_ASSISTANT
    assert [i.role for i in got.items] == [user, assistant, user, assistant]
    first_reply = next(e.reply_final.text for e in first if e.HasField("reply_final"))
    assert [i.text for i in got.items] == [
        "My name is Ada. Please say hello to me.",
        first_reply,
        second_text,
        response.reply.text,
    ]
    assert got.items[1].id == stored.assistant_item_id
    assert list(got.items[1].artifact_ids) == [stored.reply_audio_artifact_id, image.artifact_id]
    assert got.items[1].timings_ms["total"] > 0
    assert got.items[3].id == response.stored.assistant_item_id
    # The repository holds the same, and the second reply was given the first turn: the same
    # turn with that history sent explicitly reads exactly as many prompt tokens.
    held = repository.get(TENANT, created.id)
    assert [i.text for i in held.items] == [i.text for i in got.items]
    explicit = turns.RunTurn(
        pb.RunTurnRequest(
            config=pb.TurnConfig(
                history=[
                    llm_pb2.ChatMessage(role=user, content=got.items[0].text),
                    llm_pb2.ChatMessage(role=assistant, content=got.items[1].text),
                ],
                options=pb.TurnOptions(max_tokens=24, temperature=0.0, seed=7, text_only=True),
            ),
            text=second_text,
        ),
        metadata=md(),
        timeout=180,
    )
    alone = turns.RunTurn(
        pb.RunTurnRequest(
            config=pb.TurnConfig(
                options=pb.TurnOptions(max_tokens=24, temperature=0.0, seed=7, text_only=True)
            ),
            text=second_text,
        ),
        metadata=md(),
        timeout=180,
    )
    prompt = response.reply.usage.prompt_tokens
    assert prompt == explicit.reply.usage.prompt_tokens > alone.reply.usage.prompt_tokens

    listed = conversations.ListConversations(
        pb.ListConversationsRequest(page_size=1), metadata=md(), timeout=30
    )
    assert [c.id for c in listed.conversations] == [created.id] and not listed.conversations[
        0
    ].items


def test_a_retried_turn_is_stored_once(orch: ServiceProcess) -> None:
    turns, conversations = stubs(orch)
    conversation = conversations.CreateConversation(
        pb.CreateConversationRequest(), metadata=md(), timeout=30
    )
    request = pb.RunTurnRequest(
        config=pb.TurnConfig(
            conversation_id=conversation.id,
            options=pb.TurnOptions(max_tokens=8, text_only=True),
        ),
        text="Hello there.",
    )
    request_id = uuid.uuid4().hex
    once = turns.RunTurn(request, metadata=md(request_id=request_id), timeout=180)
    again = turns.RunTurn(request, metadata=md(request_id=request_id), timeout=180)
    assert once.turn_id == again.turn_id == request_id
    assert once.stored.user_item_id == again.stored.user_item_id
    assert once.stored.assistant_item_id == again.stored.assistant_item_id
    got = conversations.GetConversation(
        pb.GetConversationRequest(id=conversation.id), metadata=md(), timeout=30
    )
    assert len(got.items) == 2


def test_tenants_and_bad_requests(orch: ServiceProcess) -> None:
    turns, conversations = stubs(orch)
    mine = conversations.CreateConversation(
        pb.CreateConversationRequest(), metadata=md(), timeout=30
    )
    text_turn = pb.RunTurnRequest(
        config=pb.TurnConfig(conversation_id=mine.id, options=OPTIONS), text="Hi."
    )
    with pytest.raises(grpc.RpcError) as caught:
        turns.RunTurn(text_turn, metadata=md(OTHER), timeout=60)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as caught:
        list(
            turns.Converse(
                iter(
                    [
                        pb.ConverseRequest(
                            config=pb.TurnConfig(conversation_id=mine.id, options=OPTIONS)
                        ),
                        pb.ConverseRequest(text="Hi."),
                        pb.ConverseRequest(end_of_input=pb.EndOfInput()),
                    ]
                ),
                metadata=md(OTHER),
                timeout=60,
            )
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as caught:
        conversations.GetConversation(
            pb.GetConversationRequest(id=mine.id), metadata=md(OTHER), timeout=30
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    listed = conversations.ListConversations(
        pb.ListConversationsRequest(), metadata=md(OTHER), timeout=30
    )
    assert mine.id not in [c.id for c in listed.conversations]

    both = pb.RunTurnRequest(
        config=pb.TurnConfig(
            conversation_id=mine.id,
            history=[llm_pb2.ChatMessage(role=llm_pb2.CHAT_ROLE_USER, content="Earlier.")],
            options=OPTIONS,
        ),
        text="Hi.",
    )
    with pytest.raises(grpc.RpcError) as caught:
        turns.RunTurn(both, metadata=md(), timeout=60)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    nowhere = pb.RunTurnRequest(config=pb.TurnConfig(artifacts_only=True), text="Hi.")
    with pytest.raises(grpc.RpcError) as caught:
        turns.RunTurn(nowhere, metadata=md(), timeout=60)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as caught:
        conversations.CreateConversation(
            pb.CreateConversationRequest(), metadata=md("x" * 300), timeout=30
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # Nothing was stored by the refused turns.
    got = conversations.GetConversation(
        pb.GetConversationRequest(id=mine.id), metadata=md(), timeout=30
    )
    assert not got.items


def test_delete_removes_items_and_artifacts(
    orch: ServiceProcess, artifacts: ArtifactStore, question_wav: bytes
) -> None:
    turns, conversations = stubs(orch)
    conversation = conversations.CreateConversation(
        pb.CreateConversationRequest(), metadata=md(), timeout=30
    )
    response = turns.RunTurn(
        pb.RunTurnRequest(
            config=pb.TurnConfig(
                input_mode=pb.INPUT_MODE_SPEECH,
                conversation_id=conversation.id,
                store_input_audio=True,
                options=pb.TurnOptions(max_tokens=12),
            ),
            audio=question_wav,
        ),
        metadata=md(),
        timeout=180,
    )
    assert not response.errors, response.errors
    stored = response.stored
    assert artifacts.get(stored.input_audio_artifact_id, TENANT) == question_wav
    got = conversations.GetConversation(
        pb.GetConversationRequest(id=conversation.id), metadata=md(), timeout=30
    )
    assert list(got.items[0].artifact_ids) == [stored.input_audio_artifact_id]
    assert got.items[0].transcript == response.transcript.text
    kept = artifacts.list(TENANT, conversation.id)
    assert len(kept) >= 2  # the input, the reply (its chunks and the whole: one when alike)

    deleted = conversations.DeleteConversation(
        pb.DeleteConversationRequest(id=conversation.id), metadata=md(), timeout=30
    )
    assert deleted.items_deleted == 2 and deleted.artifacts_deleted == len(kept)
    assert artifacts.list(TENANT, conversation.id) == []
    with pytest.raises(grpc.RpcError) as caught:
        conversations.GetConversation(
            pb.GetConversationRequest(id=conversation.id), metadata=md(), timeout=30
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.fixture(scope="module")
def question_wav(tts_piper: ServiceProcess) -> bytes:
    from chorus.v1 import tts_pb2

    from tests.conftest import tts_stub

    return (
        tts_stub(tts_piper)
        .Synthesize(tts_pb2.SynthesizeRequest(text="What is the capital of France?"), timeout=60)
        .audio
    )


# -- two replicas, one PostgreSQL and one S3 ------------------------------------------------


@pytest.fixture(scope="module")
def cluster() -> Iterator[PostgresCluster]:
    bin_dir = find_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL's initdb and postgres are not installed (apt: postgresql)")
    with postgres_cluster(bin_dir) as started:
        yield started


def test_two_replicas_continue_one_conversation(
    logs: Path,
    tmp_path: Path,
    cluster: PostgresCluster,
    s3_endpoint: str,  # noqa: F811 (the fixture)
    stt_faster_whisper: ServiceProcess,
    tts_piper: ServiceProcess,
    llm_llama_cpp: ServiceProcess,
) -> None:
    env = {
        **orchestrator_env(stt_faster_whisper, tts_piper, llm_llama_cpp, "127.0.0.1:9"),
        "CHORUS_CONVERSATIONS_URL": cluster.url(cluster.create_database()),
        "CHORUS_ARTIFACTS_BACKEND": "s3",
        "CHORUS_ARTIFACTS_S3__BUCKET": BUCKET,
        "CHORUS_ARTIFACTS_S3__ENDPOINT_URL": s3_endpoint,
        "CHORUS_ARTIFACTS_S3__REGION": REGION,
        "CHORUS_ARTIFACTS_S3__ADDRESSING_STYLE": "path",
        "CHORUS_ARTIFACTS_FOLDER": str(tmp_path / "unused-artifacts"),
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    with (
        running("orchestrator", env, logs, "replica-a") as a,
        running("orchestrator", env, logs, "replica-b") as b,
    ):
        replicas = [stubs(a), stubs(b)]
        conversation = replicas[0][1].CreateConversation(
            pb.CreateConversationRequest(title="shared"), metadata=md(), timeout=30
        )
        texts = ["Hello, I am Ada.", "I like tea.", "What do I like?", "Goodbye."]
        replies = []
        for n, text in enumerate(texts):
            turns, _ = replicas[n % 2]
            response = turns.RunTurn(
                pb.RunTurnRequest(
                    config=pb.TurnConfig(
                        conversation_id=conversation.id,
                        options=pb.TurnOptions(max_tokens=16),
                    ),
                    text=text,
                ),
                metadata=md(),
                timeout=180,
            )
            assert not response.errors, response.errors
            assert response.stored.reply_audio_artifact_id
            replies.append(response.reply.text)
            # The other replica serves the artifacts this one stored (one S3 bucket).
            store_env = ArtifactSettings(
                backend="s3",
                s3={  # type: ignore[arg-type]
                    "bucket": BUCKET,
                    "endpoint_url": s3_endpoint,
                    "region": REGION,
                    "addressing_style": "path",
                },
            )
            shared = open_store(store_env)
            assert frames(shared.get(response.stored.reply_audio_artifact_id, TENANT))[0]
        got = replicas[1][1].GetConversation(
            pb.GetConversationRequest(id=conversation.id), metadata=md(), timeout=30
        )
        expected = [t for pair in zip(texts, replies, strict=True) for t in pair]
        assert [i.text for i in got.items] == expected
        assert [i.role for i in got.items] == [
            llm_pb2.CHAT_ROLE_USER,
            llm_pb2.CHAT_ROLE_ASSISTANT,
        ] * len(texts)


def test_a_storage_failure_does_not_fail_the_turn(
    orch: ServiceProcess, local_stores: dict[str, str]
) -> None:
    """The artifact folder replaced by a file: every put fails, the reply still arrives."""
    turns, conversations = stubs(orch)
    conversation = conversations.CreateConversation(
        pb.CreateConversationRequest(), metadata=md(), timeout=30
    )
    folder = Path(local_stores["CHORUS_ARTIFACTS_FOLDER"])
    aside = folder.with_name("artifacts-aside")
    folder.rename(aside)
    try:
        folder.write_bytes(b"not a folder")
        response = turns.RunTurn(
            pb.RunTurnRequest(
                config=pb.TurnConfig(
                    conversation_id=conversation.id, options=pb.TurnOptions(max_tokens=8)
                ),
                text="Hello.",
            ),
            metadata=md(),
            timeout=180,
        )
    finally:
        folder.unlink()
        aside.rename(folder)
    assert response.reply.text and response.audio and all(c.audio for c in response.audio)
    (error,) = response.errors
    assert error.code == "UNAVAILABLE" and not error.fatal and error.message.startswith("storage")
    # The items are stored all the same, without the media that could not be.
    assert response.stored.assistant_item_id and not response.stored.reply_audio_artifact_id
    got = conversations.GetConversation(
        pb.GetConversationRequest(id=conversation.id), metadata=md(), timeout=30
    )
    assert [i.text for i in got.items] == ["Hello.", response.reply.text]
    assert not got.items[1].artifact_ids


def test_a_live_session_keeps_its_conversation(
    orch: ServiceProcess, artifacts: ArtifactStore
) -> None:
    """A session naming a conversation starts from its stored items (announced as items) and
    appends its own as they settle: a spoken reply with the audio that was sent of it, cut
    where the client truncated it. The next session, on the same conversation, starts there."""
    from tests.support.session import SessionClient

    _, conversations = stubs(orch)
    conversation = conversations.CreateConversation(
        pb.CreateConversationRequest(title="live"), timeout=30, metadata=md()
    )
    first = SessionClient(orch.address, None, metadata=md())
    try:
        first.send(config=pb.SessionConfig(max_output_tokens=24, temperature=0.0))
        first.send(config=pb.SessionConfig(conversation_id="conv_" + "f" * 32))  # not theirs
        refused = first.wait_for("error", reason="invalid_session_config").error
        assert "conversation" in refused.message.lower()
        first.send(
            config=pb.SessionConfig(
                conversation_id=conversation.id, max_output_tokens=24, temperature=0.0
            )
        )
        deadline = time.monotonic() + 60
        while not any(
            e.HasField("session_updated")
            and e.session_updated.config.conversation_id == conversation.id
            for e in list(first.events)
        ):
            assert time.monotonic() < deadline, first.kinds()
            time.sleep(0.05)
        first.send(
            create_item=pb.ItemCreate(
                item=pb.ConversationItem(
                    role=llm_pb2.CHAT_ROLE_USER, text="What is the capital of France?"
                )
            )
        )
        first.send(create_response=pb.ResponseCreate())
        done = first.wait_for("response_done", timeout=180).response_done
        sent = b"".join(
            e.audio_delta.audio
            for e in first.events
            if e.HasField("audio_delta") and e.audio_delta.item_id == done.item.id
        )
        assert sent, "the reply was not spoken"
        first.send(truncate_item=pb.ItemTruncate(item_id=done.item.id, audio_end_ms=500))
        cut = first.wait_for("item_truncated").item_truncated
    finally:
        first.close()
    stored = conversations.GetConversation(
        pb.GetConversationRequest(id=conversation.id), timeout=30, metadata=md()
    )
    user, assistant = stored.items
    assert (user.role, user.text) == (llm_pb2.CHAT_ROLE_USER, "What is the capital of France?")
    assert assistant.role == llm_pb2.CHAT_ROLE_ASSISTANT and assistant.text == cut.text
    assert assistant.status == "incomplete"
    (audio_id,) = assistant.artifact_ids
    pcm, rate = frames(artifacts.get(audio_id, TENANT))
    assert rate == 24000 and pcm == sent[: 12000 * 2]  # 500 ms of what was sent

    second = SessionClient(orch.address, None, metadata=md())
    try:
        second.send(
            config=pb.SessionConfig(
                conversation_id=conversation.id, max_output_tokens=24, temperature=0.0
            )
        )
        one = second.wait_for("item_added")
        two = second.wait_for("item_added", after=second.events.index(one) + 1)
        loaded = [one.item_added.item, two.item_added.item]
        assert [i.text for i in loaded] == [user.text, assistant.text]
        second.send(
            create_item=pb.ItemCreate(
                item=pb.ConversationItem(role=llm_pb2.CHAT_ROLE_USER, text="And of Spain?")
            )
        )
        second.send(create_response=pb.ResponseCreate(options=pb.ResponseOptions(text_only=True)))
        again = second.wait_for("response_done", timeout=180).response_done
        assert [i.id for i in loaded] == list(again.input_item_ids[:2])  # from the store
    finally:
        second.close()
    items = conversations.GetConversation(
        pb.GetConversationRequest(id=conversation.id), timeout=30, metadata=md()
    ).items
    assert [i.text for i in items][:2] == [user.text, assistant.text]
    assert [i.role for i in items] == [llm_pb2.CHAT_ROLE_USER, llm_pb2.CHAT_ROLE_ASSISTANT] * 2
    assert not items[3].artifact_ids  # a text-only reply has no audio


def test_through_the_gateway_each_tenant_sees_its_own(
    orch: ServiceProcess,
    local_stores: dict[str, str],
    logs: Path,
    tmp_path: Path,
    tts_piper: ServiceProcess,
) -> None:
    """Two keys of two tenants on a real gateway in front of the stored orchestrator: a turn
    through /api/turns keeps its conversation and media; the other tenant gets the same 404 as
    for an unknown id on the conversation and on its artifacts, and paths that try to leave the
    API leak nothing."""
    import requests

    from gateway.keys import digest
    from tests.support.gateway import gateway_env, running_gateway, sse_events

    mine, theirs = "tenant-a-key-0123456789", "tenant-b-key-0123456789"
    keys = tmp_path / "keys.toml"
    keys.write_text(
        f'[[keys]]\nname = "a"\ntenant = "{TENANT}"\nkey_sha256 = "{digest(mine)}"\n'
        f'[[keys]]\nname = "b"\ntenant = "{OTHER}"\nkey_sha256 = "{digest(theirs)}"\n',
        encoding="utf-8",
    )
    env = gateway_env(
        orchestrator=orch,
        tts=tts_piper,
        CHORUS_GATEWAY_API_KEYS_FILE=str(keys),
        CHORUS_ARTIFACTS_FOLDER=local_stores["CHORUS_ARTIFACTS_FOLDER"],
    )
    with running_gateway(env, logs, "stored", ready="/readyz") as gw:
        a = {"Authorization": f"Bearer {mine}"}
        b = {"Authorization": f"Bearer {theirs}"}
        made = requests.post(f"{gw.url}/v1/conversations", json={"title": "a"}, headers=a)
        conversation = made.json()["id"]
        body = {"text": "What is the capital of France?", "conversation_id": conversation}
        body |= {"max_tokens": 24, "temperature": 0}
        with requests.post(f"{gw.url}/api/turns", json=body, headers=a, stream=True) as turn:
            kinds = [kind for kind, _ in sse_events(turn)]
        assert "stored" in kinds, kinds
        got = requests.get(f"{gw.url}/v1/conversations/{conversation}", headers=a).json()
        (audio,) = [link for item in got["items"] for link in item["artifacts"]]
        assert requests.get(audio["url"], headers=a).headers["Content-Type"] == "audio/wav"
        listed = requests.get(f"{gw.url}/v1/conversations", headers=b).json()
        assert conversation not in [c["id"] for c in listed["data"]]
        unknown = requests.get(f"{gw.url}/v1/conversations/conv_{'0' * 32}", headers=b)
        answers = [
            requests.get(f"{gw.url}/v1/conversations/{conversation}", headers=b),
            requests.delete(f"{gw.url}/v1/conversations/{conversation}", headers=b),
            requests.get(f"{gw.url}/v1/conversations/..%2F..%2Fetc%2Fpasswd", headers=a),
            requests.get(f"{gw.url}/v1/conversations/{conversation}%00", headers=a),
        ]
        for answer in [unknown, *answers]:
            assert answer.status_code == 404, (answer.request.url, answer.text)
            assert "France" not in answer.text and "root:" not in answer.text
        assert answers[0].json() == unknown.json()  # the same answer as for an unknown id
        stolen = requests.get(audio["url"], headers=b)
        assert stolen.status_code == 404 and stolen.content.find(b"RIFF") < 0
        still = requests.get(f"{gw.url}/v1/conversations/{conversation}", headers=a)
        assert len(still.json()["items"]) == 2  # b's delete removed nothing


@pytest.fixture(scope="module")
def open_gateway(orch: ServiceProcess, local_stores: dict[str, str], logs: Path) -> Iterator[Any]:
    """A gateway without keys (the default tenant) in front of the stored orchestrator."""
    from tests.support.gateway import gateway_env, running_gateway

    env = gateway_env(
        orchestrator=orch, CHORUS_ARTIFACTS_FOLDER=local_stores["CHORUS_ARTIFACTS_FOLDER"]
    )
    with running_gateway(env, logs, "stored-open", ready="/readyz") as gw:
        yield gw


_conversations = schemathesis.openapi.from_dict(document(create_app())).include(
    path_regex=r"^/v1/conversations"
)


@_conversations.parametrize()
@schema_settings(10)
def test_the_conversations_api_conforms(case: Any, open_gateway: Any) -> None:
    """schemathesis on /v1/conversations against a real store: no server error, and every
    answer has a status, media type and body the OpenAPI document gives."""
    conforms(case, open_gateway.url, timeout=60)

"""``/v1/conversations`` and stored turns in-process, with fake orchestrator stubs: the HTTP
shapes, the caller's tenant on every call (from its key), the statuses of the store's
refusals, and a turn that names a conversation."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from chorus.v1 import llm_pb2
from chorus.v1 import orchestrator_pb2 as pb
from flask.testing import FlaskClient

from gateway.app import create_app
from gateway.keys import digest
from gateway.settings import GatewaySettings
from services.common.errors import InvalidArgument, NotFound
from tests.support.fakes import FakeChannels, FakeRpcError, Streaming, Unary, fake_stubs

KEY = "acme-key-0123456789abcdef"
ARTIFACT = "ab" * 32
STORED = pb.StoredConversation(
    id="conv_" + "1" * 32,
    title="Paris",
    created=1000.0,
    updated=1010.0,
    items=[
        pb.StoredItem(
            id="item_" + "2" * 32,
            role=llm_pb2.CHAT_ROLE_USER,
            text="What is the capital of France?",
            transcript="What is the capital of France?",
            status="completed",
            created=1001.0,
        ),
        pb.StoredItem(
            id="item_" + "3" * 32,
            role=llm_pb2.CHAT_ROLE_ASSISTANT,
            text="Paris.",
            status="completed",
            artifact_ids=[ARTIFACT],
            created=1002.0,
            timings_ms={"first_audio": 420.0},
        ),
    ],
)


def client_with(tmp_path: Path, **methods: object) -> tuple[FlaskClient, SimpleNamespace]:
    keys = tmp_path / "keys.toml"
    keys.write_text(
        f'[[keys]]\nname = "a"\ntenant = "acme"\nkey_sha256 = "{digest(KEY)}"\n', encoding="utf-8"
    )
    conversations = SimpleNamespace(**methods)
    stubs = fake_stubs(conversations=conversations)
    app = create_app(GatewaySettings(api_keys_file=keys), FakeChannels(stubs))
    return app.test_client(), conversations


AUTH = {"Authorization": f"Bearer {KEY}"}


def tenant_of(call: object) -> str:
    return dict(call.metadata)["x-chorus-tenant"]  # type: ignore[attr-defined]


def test_create_get_list_delete(tmp_path: Path) -> None:
    client, fake = client_with(
        tmp_path,
        CreateConversation=Unary(pb.StoredConversation(id=STORED.id, title="Paris")),
        GetConversation=Unary(STORED),
        ListConversations=Unary(
            pb.ListConversationsResponse(conversations=[STORED], next_page_token="next")
        ),
        DeleteConversation=Unary(
            pb.DeleteConversationResponse(items_deleted=2, artifacts_deleted=1)
        ),
    )
    created = client.post("/v1/conversations", json={"title": "Paris"}, headers=AUTH)
    assert created.status_code == 200
    assert created.get_json()["id"] == STORED.id and created.get_json()["object"] == "conversation"
    assert fake.CreateConversation.calls[0].request.title == "Paris"

    got = client.get(f"/v1/conversations/{STORED.id}", headers=AUTH).get_json()
    user, assistant = got["items"]
    assert (user["role"], user["transcript"]) == ("user", "What is the capital of France?")
    assert assistant["artifacts"] == [
        {"id": ARTIFACT, "url": f"http://localhost/v1/artifacts/{ARTIFACT}"}
    ]
    assert assistant["timings_ms"] == {"first_audio": 420.0}

    listed = client.get("/v1/conversations?page_size=5&page_token=t", headers=AUTH).get_json()
    assert listed["object"] == "list" and listed["next_page_token"] == "next"
    assert "items" not in listed["data"][0]  # a list carries no items
    request = fake.ListConversations.calls[0].request
    assert (request.page_size, request.page_token) == (5, "t")

    deleted = client.delete(f"/v1/conversations/{STORED.id}", headers=AUTH).get_json()
    assert deleted == {
        "id": STORED.id,
        "object": "conversation.deleted",
        "deleted": True,
        "items_deleted": 2,
        "artifacts_deleted": 1,
    }
    every = [*fake.CreateConversation.calls, *fake.GetConversation.calls]
    every += [*fake.ListConversations.calls, *fake.DeleteConversation.calls]
    assert {tenant_of(c) for c in every} == {"acme"}


def test_the_stores_refusals_keep_their_meaning(tmp_path: Path) -> None:
    client, _ = client_with(
        tmp_path,
        GetConversation=Unary(FakeRpcError(NotFound("no such conversation", field="id"))),
        CreateConversation=Unary(FakeRpcError(InvalidArgument("title is too long"))),
    )
    missing = client.get("/v1/conversations/conv_x", headers=AUTH)
    assert missing.status_code == 404
    assert missing.get_json()["error"]["message"] == "no such conversation"
    assert client.post("/v1/conversations", json={}, headers=AUTH).status_code == 400
    assert (
        client.post("/v1/conversations", json={"title": "x" * 201}, headers=AUTH).status_code == 400
    )
    assert client.get("/v1/conversations?page_size=1000", headers=AUTH).status_code == 400
    assert client.get(f"/v1/conversations/{STORED.id}").status_code == 401


@pytest.mark.parametrize("with_history", [False, True])
def test_a_turn_names_its_conversation(tmp_path: Path, with_history: bool) -> None:
    keys = tmp_path / "keys.toml"
    keys.write_text(
        f'[[keys]]\nname = "a"\ntenant = "acme"\nkey_sha256 = "{digest(KEY)}"\n', encoding="utf-8"
    )
    converse = Streaming([pb.TurnEvent(turn_id="t", reply_final=pb.ReplyFinal(text="Paris."))])
    stubs = fake_stubs(orchestrator=SimpleNamespace(Converse=converse))
    client = create_app(GatewaySettings(api_keys_file=keys), FakeChannels(stubs)).test_client()
    body: dict[str, object] = {"text": "And of Spain?", "conversation_id": STORED.id}
    if with_history:
        body["history"] = [{"role": "user", "content": "hi"}]
    response = client.post("/api/turns", json=body, headers=AUTH)
    if with_history:
        assert response.status_code == 400
        assert response.get_json()["error"]["param"] == "history"
        assert converse.calls == []
        return
    assert response.status_code == 200
    response.get_data()  # the stream, to its end
    (call,) = converse.calls
    assert call.request[0].config.conversation_id == STORED.id
    assert tenant_of(call) == "acme"

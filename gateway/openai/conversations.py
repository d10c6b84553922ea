"""``/v1/conversations``: the caller's stored conversations (the orchestrator's Conversations
service, over the conversation store), so a conversation outlives the browser tab that had it.

A turn that names a conversation (``conversation_id`` on ``POST /api/turns``) reads its history
from the store and is appended to it, its audio and images kept as artifacts; here a client
lists, creates, reads (with items and their media URLs) and deletes conversations. Every call
carries the caller's tenant, so another tenant's conversation is a 404 like an unknown one.
"""

from __future__ import annotations

import grpc
from chorus.v1 import llm_pb2
from chorus.v1 import orchestrator_pb2 as pb
from flask import Blueprint, Response, jsonify, request

from gateway.context import call_options, stubs_of
from gateway.errors import from_rpc_error
from gateway.openapi import documented
from gateway.parsing import json_body, validate
from gateway.responses import (
    ArtifactLink,
    Conversation,
    ConversationDeleted,
    ConversationItem,
    ConversationList,
)
from gateway.schemas import ConversationCreate, ConversationsQuery

__all__ = ["blueprint", "conversation_of"]

blueprint = Blueprint("conversations", __name__, url_prefix="/conversations")

_ROLES = {
    llm_pb2.CHAT_ROLE_USER: "user",
    llm_pb2.CHAT_ROLE_ASSISTANT: "assistant",
    llm_pb2.CHAT_ROLE_SYSTEM: "system",
}
_SERVICE = "conversation store"
_ERRORS = (404, 429, 503, 504)


def conversation_of(stored: pb.StoredConversation, with_items: bool) -> Conversation:
    """The API's shape of a stored conversation; artifact ids become URLs on this gateway."""
    conversation = Conversation(
        id=stored.id,
        object="conversation",
        title=stored.title,
        created_at=stored.created,
        updated_at=stored.updated,
    )
    if with_items:
        conversation.items = [
            ConversationItem(
                id=item.id,
                role=_ROLES.get(item.role, "user"),
                text=item.text,
                transcript=item.transcript,
                status=item.status,
                created_at=item.created,
                artifacts=[
                    ArtifactLink(id=a, url=f"{request.url_root}v1/artifacts/{a}")
                    for a in item.artifact_ids
                ],
                timings_ms=dict(item.timings_ms),
            )
            for item in stored.items
        ]
    return conversation


@blueprint.post("")
@documented(
    "createConversation", "conversations", Conversation, json=ConversationCreate, errors=_ERRORS
)
def create() -> Response:
    """Create a conversation

    An empty conversation of the caller's tenant; name it as ``conversation_id`` on turns.
    """
    body = validate(ConversationCreate, json_body() if request.get_data() else {})
    try:
        stored = stubs_of().conversations.CreateConversation(
            pb.CreateConversationRequest(title=body.title), **call_options()
        )
    except grpc.RpcError as error:
        raise from_rpc_error(error, _SERVICE) from None
    return jsonify(conversation_of(stored, with_items=True).body())


@blueprint.get("")
@documented(
    "listConversations", "conversations", ConversationList, query=ConversationsQuery, errors=_ERRORS
)
def list_conversations() -> Response:
    """List conversations

    The caller's conversations, most recently updated first, without their items.
    """
    query = validate(ConversationsQuery, request.args.to_dict())
    try:
        page = stubs_of().conversations.ListConversations(
            pb.ListConversationsRequest(page_size=query.page_size, page_token=query.page_token),
            **call_options(),
        )
    except grpc.RpcError as error:
        raise from_rpc_error(error, _SERVICE) from None
    answer = ConversationList(
        object="list",
        data=[conversation_of(c, with_items=False) for c in page.conversations],
        next_page_token=page.next_page_token or None,
    )
    return jsonify(answer.body())


@blueprint.get("/<conversation_id>")
@documented("getConversation", "conversations", Conversation, errors=_ERRORS)
def get(conversation_id: str) -> Response:
    """Get a conversation

    With its items, oldest first, and the URLs of their audio and images.
    """
    try:
        stored = stubs_of().conversations.GetConversation(
            pb.GetConversationRequest(id=conversation_id), **call_options()
        )
    except grpc.RpcError as error:
        raise from_rpc_error(error, _SERVICE) from None
    return jsonify(conversation_of(stored, with_items=True).body())


@blueprint.delete("/<conversation_id>")
@documented("deleteConversation", "conversations", ConversationDeleted, errors=_ERRORS)
def delete(conversation_id: str) -> Response:
    """Delete a conversation

    Its items and every artifact they reference go with it.
    """
    try:
        done = stubs_of().conversations.DeleteConversation(
            pb.DeleteConversationRequest(id=conversation_id), **call_options()
        )
    except grpc.RpcError as error:
        raise from_rpc_error(error, _SERVICE) from None
    answer = ConversationDeleted(
        id=conversation_id,
        object="conversation.deleted",
        deleted=True,
        items_deleted=done.items_deleted,
        artifacts_deleted=done.artifacts_deleted,
    )
    return jsonify(answer.body())

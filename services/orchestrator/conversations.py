"""gRPC adapter for ``chorus.v1.Conversations``: the conversation store, per tenant.

Thin: every rule (ids, tenants, limits, paging, NOT_FOUND for another tenant's id) is the
repository's (``services/common/conversations``); its errors reach the caller through the one
interceptor like every other servicer's. Deleting a conversation deletes the artifacts its
items referenced, and the ones its turns put that no item references (the reply's chunks).
"""

from __future__ import annotations

from typing import Any

import grpc
from chorus.v1 import orchestrator_pb2 as pb
from chorus.v1 import orchestrator_pb2_grpc

from services.common.conversations import Conversation, Item
from services.common.errors import InvalidArgument, NotFound, ResourceExhausted
from services.orchestrator.storage import CHAT_ROLES, Stores, blocking, tenant_of

__all__ = ["ConversationsServicer", "DEFAULT_PAGE_SIZE"]

DEFAULT_PAGE_SIZE = 20
"""A list page when the request names no size (at most the store's ``max_list_limit``)."""

Context = grpc.aio.ServicerContext[Any, Any]


class ConversationsServicer(orchestrator_pb2_grpc.ConversationsServicer):
    def __init__(self, stores: Stores) -> None:
        self._stores = stores

    async def CreateConversation(
        self, request: pb.CreateConversationRequest, context: Context
    ) -> pb.StoredConversation:
        tenant = tenant_of(context)
        repository = await self._stores.conversations()
        created = await blocking("conversation", repository.create, tenant, request.title or None)
        return _conversation(created)

    async def GetConversation(
        self, request: pb.GetConversationRequest, context: Context
    ) -> pb.StoredConversation:
        tenant = tenant_of(context)
        repository = await self._stores.conversations()
        found = await blocking("conversation", repository.get, tenant, request.id)
        return _conversation(found)

    async def ListConversations(
        self, request: pb.ListConversationsRequest, context: Context
    ) -> pb.ListConversationsResponse:
        tenant = tenant_of(context)
        repository = await self._stores.conversations()
        most = repository.limits.max_list_limit
        size = request.page_size or min(DEFAULT_PAGE_SIZE, most)
        if size > most:
            raise ResourceExhausted(f"page_size {size} is more than {most}", field="page_size")
        # One more than the page where the limit allows: a full last page then has no next.
        asked = min(size + 1, most)
        try:
            found = await blocking(
                "conversation", repository.list, tenant, asked, request.page_token or None
            )
        except NotFound as error:
            raise InvalidArgument(
                "page_token is not a page of this list", field="page_token"
            ) from error
        page = found[:size]
        more = len(found) > size or (asked == size and len(found) == size)
        return pb.ListConversationsResponse(
            conversations=[_conversation(c) for c in page],
            next_page_token=page[-1].id if more and page else "",
        )

    async def DeleteConversation(
        self, request: pb.DeleteConversationRequest, context: Context
    ) -> pb.DeleteConversationResponse:
        tenant = tenant_of(context)
        repository = await self._stores.conversations()
        found = await blocking("conversation", repository.get, tenant, request.id)
        referenced = await blocking("conversation", repository.delete, tenant, request.id)
        artifacts = await self._stores.artifacts()
        # The turns' own artifacts too (chunks no item references), found by their metadata.
        own = await blocking("artifact", artifacts.list, tenant, request.id)
        candidates = dict.fromkeys([*referenced, *(a.id for a in own)])
        # Content addressing shares one copy between conversations: keep what others still use.
        still_used = await blocking("conversation", repository.referenced_artifacts, tenant)
        deleted = 0
        for artifact_id in candidates:
            if artifact_id not in still_used and await blocking(
                "artifact", artifacts.delete, artifact_id, tenant
            ):
                deleted += 1
        return pb.DeleteConversationResponse(
            items_deleted=len(found.items), artifacts_deleted=deleted
        )


def _conversation(conversation: Conversation) -> pb.StoredConversation:
    return pb.StoredConversation(
        id=conversation.id,
        title=conversation.title or "",
        created=conversation.created,
        updated=conversation.updated,
        items=[_item(i) for i in conversation.items],
    )


def _item(item: Item) -> pb.StoredItem:
    return pb.StoredItem(
        id=item.id,
        role=CHAT_ROLES[item.role],
        text=item.text,
        transcript=item.transcript or "",
        status=item.status,
        artifact_ids=item.artifact_ids,
        created=item.created,
        timings_ms=dict(item.timings or {}),
    )

"""gRPC adapter for ``chorus.v1.Orchestrator``: admits a turn, reads its input, runs the Turn.

Input rules live in ``inputs.py``, the stages in ``turn.py``; this module maps them to RPCs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
from chorus.v1 import orchestrator_pb2 as pb
from chorus.v1 import orchestrator_pb2_grpc

from services.common.artifacts import ArtifactStore
from services.common.errors import InvalidArgument, Overloaded, Unavailable
from services.common.logs import request_id
from services.orchestrator.downstream import Downstream
from services.orchestrator.inputs import check_config, read_input, unary_input
from services.orchestrator.session import LiveSession
from services.orchestrator.settings import OrchestratorSettings
from services.orchestrator.stages import TurnContext
from services.orchestrator.storage import Stores, TurnRecord, stored_history, tenant_of
from services.orchestrator.turn import Turn

# Where RunTurn's one reply keeps each kind of Converse event: the last one, or every one (the
# partial transcripts, reply deltas and image progress of a stream have no place in it).
_ONE = {
    "transcript_final": "transcript",
    "reply_final": "reply",
    "turn_timings": "timings",
    "stored": "stored",
}
_EACH = {"audio_chunk": "audio", "image_result": "images", "error": "errors"}
# Either RPC's context: only its deadline is read.
Context = grpc.aio.ServicerContext[Any, Any]


class OrchestratorServicer(orchestrator_pb2_grpc.OrchestratorServicer):
    def __init__(
        self,
        settings: OrchestratorSettings,
        downstream: Downstream,
        stores: Stores | None = None,
    ) -> None:
        self._settings = settings
        self._downstream = downstream
        self._stores = stores or Stores()  # opened on first use only
        self._turns = asyncio.Semaphore(settings.max_turns)
        self._sessions = asyncio.Semaphore(settings.max_sessions)

    def _deadline(self, context: Context) -> float:
        remaining = context.time_remaining()
        budget = self._settings.turn_timeout if remaining is None else remaining
        return time.monotonic() + budget

    def _turn(self, config: pb.TurnConfig, context: Context, record: TurnRecord | None) -> Turn:
        return Turn(
            TurnContext(
                config,
                self._settings,
                self._downstream,
                request_id.get(),
                self._deadline(context),
                record=record,
            )
        )

    async def _stored(
        self, config: pb.TurnConfig, context: Context
    ) -> tuple[pb.TurnConfig, TurnRecord | None]:
        """A turn naming a stored conversation: its config with the stored history, and the
        record that keeps the turn; other turns as they are. Runs before any model is called,
        so an unknown conversation fails the turn at once.

        Raises:
            InvalidArgument: history sent with a conversation_id, artifacts_only without one,
                a malformed tenant.
            NotFound: an unknown or another tenant's conversation.
            Unavailable: a store cannot be reached.
        """
        if not config.conversation_id:
            if config.artifacts_only:
                raise InvalidArgument(
                    "artifacts_only needs a conversation_id (the media go to its store)",
                    field="config.artifacts_only",
                )
            return config, None
        if config.history:
            raise InvalidArgument(
                "send either history or a conversation_id (whose history is stored), not both",
                field="config.history",
            )
        tenant = tenant_of(context)
        settings = self._settings
        history = await stored_history(
            self._stores,
            tenant,
            config.conversation_id,
            settings.max_history_messages,
            settings.max_history_chars,
        )
        stored = pb.TurnConfig()
        stored.CopyFrom(config)
        stored.history.extend(history)
        try:
            artifacts: ArtifactStore | None = await self._stores.artifacts()
        except Unavailable:
            artifacts = None  # the turn goes on; each put reports a non-fatal error
        record = TurnRecord(
            stores=self._stores,
            artifacts=artifacts,
            tenant=tenant,
            conversation_id=config.conversation_id,
            turn_id=request_id.get(),
            artifacts_only=config.artifacts_only,
            store_input_audio=config.store_input_audio,
        )
        return stored, record

    def _admit(self) -> None:
        if self._turns.locked():
            raise Overloaded(
                f"too many turns in progress (limit {self._settings.max_turns}); retry later"
            )

    # -- RPCs -----------------------------------------------------------------------------

    async def Converse(
        self,
        request_iterator: AsyncIterator[pb.ConverseRequest],
        context: grpc.aio.ServicerContext[pb.ConverseRequest, pb.TurnEvent],
    ) -> AsyncIterator[pb.TurnEvent]:
        self._admit()
        async with self._turns:
            first = await anext(aiter(request_iterator), None)
            if first is None or first.WhichOneof("request") != "config":
                raise InvalidArgument(
                    "the first message of Converse must be the turn config", field="config"
                )
            config = first.config
            check_config(config, self._settings)
            config, record = await self._stored(config, context)
            inputs = await read_input(config, request_iterator, self._settings)
            if record is not None and inputs.live is not None and config.store_input_audio:
                inputs.live.kept = bytearray()
            turn = self._turn(config, context, record)
            async for event in turn.events(inputs):
                yield event

    async def RunTurn(
        self,
        request: pb.RunTurnRequest,
        context: grpc.aio.ServicerContext[pb.RunTurnRequest, pb.RunTurnResponse],
    ) -> pb.RunTurnResponse:
        self._admit()
        async with self._turns:
            check_config(request.config, self._settings)
            inputs = unary_input(request, self._settings)
            config, record = await self._stored(request.config, context)
            turn = self._turn(config, context, record)
            response = pb.RunTurnResponse(turn_id=turn.turn_id)
            async for event in turn.events(inputs):
                kind = event.WhichOneof("event")
                if kind in _ONE:
                    getattr(response, _ONE[kind]).CopyFrom(getattr(event, kind))
                elif kind in _EACH:
                    getattr(response, _EACH[kind]).append(getattr(event, kind))
            return response

    async def Session(
        self,
        request_iterator: AsyncIterator[pb.SessionRequest],
        context: grpc.aio.ServicerContext[pb.SessionRequest, pb.SessionEvent],
    ) -> AsyncIterator[pb.SessionEvent]:
        if self._sessions.locked():
            raise Overloaded(
                f"too many sessions open (limit {self._settings.max_sessions}); retry later"
            )
        async with self._sessions:
            remaining = context.time_remaining()
            budget = self._settings.max_session_seconds
            deadline = time.monotonic() + (budget if remaining is None else min(remaining, budget))
            session = LiveSession(
                self._settings,
                self._downstream,
                request_id.get(),
                deadline,
                self._stores,
                tenant_of(context),
            )
            async for event in session.events(request_iterator):
                yield event

"""gRPC adapter for ``chorus.v1.Orchestrator``: admits a turn, reads its input, runs the Turn.

Input rules live in ``inputs.py``, the stages in ``turn.py``; this module maps them to RPCs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator
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
log = logging.getLogger(__name__)

_REPORT_MARGIN_S = 0.5
"""A turn's own deadline comes this long (at most a tenth of its time) before its caller's."""

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
        self._draining = asyncio.Event()
        self._open_sessions = 0

    def _deadline(self, context: Context) -> float:
        remaining = context.time_remaining()
        if remaining is None:
            return time.monotonic() + self._settings.turn_timeout
        # The turn ends a little before its caller's deadline, so the stage that ran out of
        # time is reported (a TurnError naming it, then DEADLINE_EXCEEDED) before the caller's
        # own deadline cuts the call: that gave a bare DEADLINE_EXCEEDED, or through Envoy
        # (which enforces grpc-timeout too) a reset stream, INTERNAL, seen with a slow LLM.
        return time.monotonic() + remaining - min(_REPORT_MARGIN_S, remaining / 10)

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
            self._open_sessions += 1
            try:
                async for event in _until(session.events(request_iterator), self._draining):
                    yield event
            finally:
                self._open_sessions -= 1
            if self._draining.is_set():
                message = "the orchestrator is restarting; reconnect to go on"
                yield pb.SessionEvent(
                    elapsed_seconds=time.monotonic() - session.started,
                    error=pb.SessionError(
                        code="UNAVAILABLE", message=message, fatal=True, reason="server_restarting"
                    ),
                )
                raise Unavailable(message)

    async def drain(self) -> None:
        """The process is stopping: end every live session now (a fatal error event, then
        UNAVAILABLE, which a client takes as "reconnect"), rather than hold the drain for its
        whole grace period and then cut them off. What a session settled is still stored."""
        if self._open_sessions:
            log.info("ending %d live session(s): the orchestrator is stopping", self._open_sessions)
        self._draining.set()


async def _until(
    events: AsyncIterator[pb.SessionEvent], stop: asyncio.Event
) -> AsyncIterator[pb.SessionEvent]:
    """``events`` until they end or ``stop`` is set; then the generator is closed (its own
    cleanup runs: downstream calls cancelled, what settled stored)."""
    stopping = asyncio.ensure_future(stop.wait())
    step: asyncio.Future[pb.SessionEvent] | None = None
    try:
        while True:
            step = asyncio.ensure_future(anext(events))
            await asyncio.wait({step, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not step.done():
                return
            try:
                event = step.result()
            except StopAsyncIteration:
                return
            yield event
    finally:
        stopping.cancel()
        if step is not None and not step.done():
            step.cancel()  # into the generator, wherever it waits: it cleans up and ends
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration, Exception):
                await step
        if isinstance(events, AsyncGenerator):
            await events.aclose()

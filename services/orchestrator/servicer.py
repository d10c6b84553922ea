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

from services.common.errors import InvalidArgument, ResourceExhausted
from services.common.logs import request_id
from services.orchestrator.downstream import Downstream
from services.orchestrator.inputs import check_config, read_input, unary_input
from services.orchestrator.session import LiveSession
from services.orchestrator.settings import OrchestratorSettings
from services.orchestrator.stages import TurnContext
from services.orchestrator.turn import Turn

# Where RunTurn's one reply keeps each kind of Converse event: the last one, or every one (the
# partial transcripts, reply deltas and image progress of a stream have no place in it).
_ONE = {"transcript_final": "transcript", "reply_final": "reply", "turn_timings": "timings"}
_EACH = {"audio_chunk": "audio", "image_result": "images", "error": "errors"}
# Either RPC's context: only its deadline is read.
Context = grpc.aio.ServicerContext[Any, Any]


class OrchestratorServicer(orchestrator_pb2_grpc.OrchestratorServicer):
    def __init__(self, settings: OrchestratorSettings, downstream: Downstream) -> None:
        self._settings = settings
        self._downstream = downstream
        self._turns = asyncio.Semaphore(settings.max_turns)
        self._sessions = asyncio.Semaphore(settings.max_sessions)

    def _deadline(self, context: Context) -> float:
        remaining = context.time_remaining()
        budget = self._settings.turn_timeout if remaining is None else remaining
        return time.monotonic() + budget

    def _turn(self, config: pb.TurnConfig, context: Context) -> Turn:
        return Turn(
            TurnContext(
                config, self._settings, self._downstream, request_id.get(), self._deadline(context)
            )
        )

    def _admit(self) -> None:
        if self._turns.locked():
            raise ResourceExhausted(
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
            inputs = await read_input(config, request_iterator, self._settings)
            turn = self._turn(config, context)
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
            turn = self._turn(request.config, context)
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
            raise ResourceExhausted(
                f"too many sessions open (limit {self._settings.max_sessions}); retry later"
            )
        async with self._sessions:
            remaining = context.time_remaining()
            budget = self._settings.max_session_seconds
            deadline = time.monotonic() + (budget if remaining is None else min(remaining, budget))
            session = LiveSession(self._settings, self._downstream, request_id.get(), deadline)
            async for event in session.events(request_iterator):
                yield event

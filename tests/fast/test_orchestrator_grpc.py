"""The orchestrator's servicer on a real grpc.aio server in this process (port 0), over fake
model services: what a caller of the RPCs gets, through the one interceptor (statuses with
their BadRequest field, the request id, a unary and a streamed method alike)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio
import pytest
from chorus.v1 import orchestrator_pb2 as pb
from chorus.v1 import orchestrator_pb2_grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from services.common.errors import (
    NotFound,
    Overloaded,
    ResourceExhausted,
    Unavailable,
    retry_after_of,
)
from services.common.server import ChorusServer, ServiceDefinition
from services.orchestrator.servicer import OrchestratorServicer
from services.orchestrator.settings import OrchestratorSettings
from tests.support.fakes import AioStreaming, aio_error, fake_downstream, stage_fakes

SERVICE = pb.DESCRIPTOR.services_by_name["Orchestrator"].full_name
TEXT_TURN = pb.TurnConfig(input_mode=pb.INPUT_MODE_TEXT, image_mode=pb.IMAGE_MODE_ON, voice="v")


class Served:
    """The orchestrator over ``methods`` (see ``stage_fakes``), on 127.0.0.1:<free port>."""

    def __init__(self, methods: dict[str, Any]) -> None:
        settings = OrchestratorSettings(port=0, reflection=False)
        servicer = OrchestratorServicer(settings, fake_downstream(methods))
        register = ServiceDefinition(
            SERVICE, lambda s: orchestrator_pb2_grpc.add_OrchestratorServicer_to_server(servicer, s)
        )
        self.server = ChorusServer(settings, [register])

    async def __aenter__(self) -> orchestrator_pb2_grpc.OrchestratorStub:
        port = await self.server.start()
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        return orchestrator_pb2_grpc.OrchestratorStub(self.channel)

    async def __aexit__(self, *_: object) -> None:
        await self.channel.close()
        await self.server.stop(grace=0)


def field_of(error: grpc.aio.AioRpcError) -> str | None:
    status = rpc_status.from_call(error)
    for detail in status.details if status is not None else ():
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            return bad.field_violations[0].field
    return None


async def converse(*requests: pb.ConverseRequest) -> AsyncIterator[pb.ConverseRequest]:
    for request in requests:
        yield request


async def test_run_turn_collects_the_turn_and_its_non_fatal_errors() -> None:
    methods = stage_fakes(draw=AioStreaming([aio_error(Unavailable("down"))]))
    async with Served(methods) as stub:
        call = stub.RunTurn(
            pb.RunTurnRequest(config=TEXT_TURN, text="draw a cat"),
            metadata=(("x-request-id", "rid-7"),),
        )
        response = await call
        trailing = await call.trailing_metadata()
    assert response.turn_id == "rid-7"
    assert response.reply.text == "Hello there. A cat on a mat."
    assert [a.sequence for a in response.audio] == [0, 1]
    assert [(e.stage, e.fatal) for e in response.errors] == [(pb.STAGE_IMAGE, False)]
    assert ("x-request-id", "rid-7") in tuple(trailing)


async def test_a_fatal_stage_ends_the_stream_with_its_status_and_field() -> None:
    methods = stage_fakes(speak=AioStreaming([aio_error(NotFound("no voice 'v'", field="voice"))]))
    events: list[pb.TurnEvent] = []
    async with Served(methods) as stub:
        call = stub.Converse(
            converse(
                pb.ConverseRequest(config=TEXT_TURN),
                pb.ConverseRequest(text="draw a cat"),
                pb.ConverseRequest(end_of_input=pb.EndOfInput()),
            )
        )
        try:
            async for event in call:
                events.append(event)
        except grpc.aio.AioRpcError as error:
            failure = error
        else:
            raise AssertionError("the turn did not fail")
    assert failure.code() == grpc.StatusCode.NOT_FOUND
    assert failure.details() == "text-to-speech: no voice 'v'"
    assert field_of(failure) == "config.voice"
    last = events[-1]
    assert last.WhichOneof("event") == "error" and last.error.fatal
    assert last.error.stage == pb.STAGE_SPEECH


async def test_a_busy_stage_says_when_to_retry_and_a_limit_says_never() -> None:
    """The stage's RetryInfo reaches the TurnError event and the call's status, so the gateway
    can answer 429 with Retry-After for a lack of capacity and 400 for a limit."""
    for failure, expected in (
        (Overloaded("queue full", retry_after=4.0), 4.0),
        (ResourceExhausted("the prompt is too long"), 0.0),
    ):
        events: list[pb.TurnEvent] = []
        async with Served(stage_fakes(generate=AioStreaming([aio_error(failure)]))) as stub:
            call = stub.Converse(
                converse(
                    pb.ConverseRequest(config=TEXT_TURN),
                    pb.ConverseRequest(text="hello"),
                    pb.ConverseRequest(end_of_input=pb.EndOfInput()),
                )
            )
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                async for event in call:
                    events.append(event)
        error = events[-1].error
        assert (error.stage, error.code, error.fatal) == (
            pb.STAGE_REPLY,
            "RESOURCE_EXHAUSTED",
            True,
        )
        assert error.retry_after_seconds == expected
        assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert retry_after_of(raised.value) == (expected or None)


async def test_a_stream_cut_under_a_stage_is_unavailable_and_says_so() -> None:
    """A replica killed mid-stream reaches the orchestrator (through Envoy) as INTERNAL "Stream
    removed (RST_STREAM ...)": the stage fails UNAVAILABLE, a retry may pass, with a message
    that says what happened instead of gRPC's transport words."""
    cut = grpc.aio.AioRpcError(
        grpc.StatusCode.INTERNAL,
        grpc.aio.Metadata(),
        grpc.aio.Metadata(),
        "Stream removed (RST_STREAM with error code 2)",
    )
    events: list[pb.TurnEvent] = []
    async with Served(stage_fakes(generate=AioStreaming([cut]))) as stub:
        call = stub.Converse(
            converse(
                pb.ConverseRequest(config=TEXT_TURN),
                pb.ConverseRequest(text="hello"),
                pb.ConverseRequest(end_of_input=pb.EndOfInput()),
            )
        )
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            async for event in call:
                events.append(event)
    error = events[-1].error
    assert (error.stage, error.code, error.fatal) == (pb.STAGE_REPLY, "UNAVAILABLE", True)
    assert error.message == (
        "text-generation: the call was cut off mid-stream (its replica went away); try again"
    )
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_request_without_its_config_first_is_refused_naming_config() -> None:
    async with Served(stage_fakes()) as stub:
        call = stub.Converse(converse(pb.ConverseRequest(text="hi")))
        try:
            await call.read()
        except grpc.aio.AioRpcError as error:
            failure = error
        else:
            raise AssertionError("accepted")
    assert failure.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_of(failure) == "config"

"""What every stage of a turn shares: its context, its clock, and the one way a stage fails.

A stage is one kind of downstream work of a turn: transcription, reply, speech, image. Each
runs its calls inside ``stage_errors``, which turns a failed call into ``StageFailed`` naming the
stage, the service, the status code and, when the service named a request field, the turn's
field it came from (the speech service's ``voice`` is the turn's ``config.voice``). Whether a
failure ends the turn is decided by whoever runs the stages (``Turn``), never by the stage.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

import grpc
from chorus.v1 import orchestrator_pb2 as pb
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from prometheus_client import Counter, Histogram

from services.common.errors import ChorusError, DeadlineExceeded, from_rpc_error
from services.orchestrator.downstream import Downstream
from services.orchestrator.settings import OrchestratorSettings

if TYPE_CHECKING:  # storage builds on this module
    from services.orchestrator.storage import TurnRecord

__all__ = ["Clock", "Stage", "StageFailed", "TurnContext", "stage_errors"]

log = logging.getLogger(__name__)

STAGE_SECONDS = Histogram(
    "chorus_turn_stage_seconds",
    "Seconds from the end of a turn's input to each milestone (transcript, first reply token, "
    "first audio, image) and to the end of the turn (total).",
    ["stage"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 8, 13, 20, 30, 60, 120),
)
TURN_ERRORS = Counter("chorus_turn_errors_total", "Failed turn stages.", ["stage", "code"])

Stage = pb.Stage


class StageFailed(Exception):
    """Stage ``stage`` of a turn failed with ``error``, whose message is safe to show."""

    def __init__(self, stage: pb.Stage, error: ChorusError) -> None:
        super().__init__(error.message)
        self.stage = stage
        self.error = error


def _named_field(error: grpc.aio.AioRpcError) -> str | None:
    """The request field a service's ``google.rpc.BadRequest`` detail names, if any."""
    try:
        status = rpc_status.from_call(cast(grpc.Call, error))  # same code/details/trailers
    except ValueError:  # inconsistent details: keep the code and the message alone
        return None
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            if bad.field_violations:
                return str(bad.field_violations[0].field)
    return None


@contextmanager
def stage_errors(
    stage: pb.Stage, service: str, fields: Mapping[str, str] | None = None
) -> Iterator[None]:
    """Run one stage's calls to ``service``; a failure leaves as ``StageFailed(stage, ...)``.

    Args:
        stage: the ``pb.Stage`` the calls belong to.
        service: the service's name for messages ("text-to-speech: unknown voice ...").
        fields: the service's request fields, mapped to the turn's fields they come from. A
            field the service names is passed on to the turn's caller only through this map:
            the caller never sent the service's request, only the turn's.

    Raises:
        StageFailed: for a failed call, or a ``ChorusError`` raised in the block (the turn's
            deadline passing before a call).
    """
    try:
        yield
    except grpc.aio.AioRpcError as err:
        error = from_rpc_error(err, service)
        error.field = (fields or {}).get(_named_field(err) or "")
        raise StageFailed(stage, error) from None
    except ChorusError as err:
        raise StageFailed(stage, err) from None


@dataclass
class Clock:
    """A turn's milestones, in seconds since its input was complete."""

    started: float = field(default_factory=time.monotonic)
    input_done: float = field(default_factory=time.monotonic)
    """Moved to the end of live input when the audio stops arriving."""
    marks: dict[str, float] = field(default_factory=dict)

    def mark(self, name: str) -> None:
        """Record a milestone (the first time only) and observe it in ``STAGE_SECONDS``."""
        if name not in self.marks:
            self.marks[name] = max(0.0, time.monotonic() - self.input_done)
            STAGE_SECONDS.labels(name).observe(self.marks[name])


def _discard(event: pb.TurnEvent) -> None:
    """Where events go before anyone listens."""


@dataclass
class TurnContext:
    """What every stage of one turn shares: the request, the services, the deadline, the clock
    and the way out for events. A live session makes one per response, with ``emit`` pointing
    at its own outbound queue, and runs the same stages."""

    config: pb.TurnConfig
    settings: OrchestratorSettings
    services: Downstream
    turn_id: str
    deadline: float
    """``time.monotonic()`` by which the turn must end (the caller's deadline, or the default)."""
    clock: Clock = field(default_factory=Clock)
    emit: Callable[[pb.TurnEvent], None] = _discard
    record: TurnRecord | None = None
    """What the turn keeps in a stored conversation (``TurnConfig.conversation_id``)."""

    def event(self, **event: object) -> None:
        """Emit one TurnEvent of this turn, stamped with its id and elapsed time."""
        self.emit(
            pb.TurnEvent(
                turn_id=self.turn_id,
                elapsed_seconds=time.monotonic() - self.clock.started,
                **event,  # type: ignore[arg-type]
            )
        )

    def timeout(self, stage_timeout: float) -> float:
        """The deadline of the next call: its stage's own, cut to what is left of the turn."""
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise DeadlineExceeded("the turn's deadline passed")
        return min(stage_timeout, remaining)

    def report(self, stage: pb.Stage, error: ChorusError, *, fatal: bool) -> None:
        """Count, log and emit a stage's failure; a fatal one is the turn's last event."""
        TURN_ERRORS.labels(pb.Stage.Name(stage), error.code.name).inc()
        if fatal:
            log.warning("turn failed at %s: %s", pb.Stage.Name(stage), error.message)
        else:
            log.warning("%s failed, the turn goes on: %s", pb.Stage.Name(stage), error.message)
        self.event(
            error=pb.TurnError(
                stage=stage,
                code=error.code.name,
                message=error.message,
                fatal=fatal,
                retry_after_seconds=error.retry_after or 0.0,
            )
        )

"""Synchronous gRPC channels for the gateway: created once per process, lazily, fork-safe.

Flask handlers run in gunicorn's worker threads, so the gateway uses grpc's synchronous API
(thread-safe channels) rather than grpc.aio. Channels are opened on first use and remembered
with the process id: a gunicorn worker forked from a parent that already held channels opens
its own instead of sharing the parent's (gRPC channels do not survive fork). Which services the
gateway calls, and which setting holds each address, comes from ``services/catalog.py``.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

import grpc
from chorus.v1 import (
    image_pb2_grpc,
    llm_pb2_grpc,
    orchestrator_pb2_grpc,
    stt_pb2_grpc,
    tts_pb2_grpc,
)
from grpc_health.v1 import health_pb2_grpc

from gateway.settings import GatewaySettings
from services.catalog import BY_NAME, HEALTH_ROUTE_HEADER
from services.common.clients import open_sync_channel

GATEWAY = BY_NAME["gateway"]
GRPC_NAMES = {d.service: BY_NAME[d.service].grpc_service for d in GATEWAY.dependencies}
"""Each service the gateway calls -> its full gRPC service name."""
HEALTH_METADATA = ((HEALTH_ROUTE_HEADER, "orchestrator"),)
"""Sent with the orchestrator's health check, so an Envoy in between routes it to the
orchestrator (every service shares the health path; see ``services.catalog``)."""


@dataclass(frozen=True)
class Stubs:
    """One stub per service, over this process's channels."""

    orchestrator: orchestrator_pb2_grpc.OrchestratorStub
    conversations: orchestrator_pb2_grpc.ConversationsStub
    """The orchestrator's stored conversations (on its channel)."""
    orchestrator_health: health_pb2_grpc.HealthStub
    """Call it with ``HEALTH_METADATA`` (and ask for the orchestrator's service name)."""
    stt: stt_pb2_grpc.SpeechToTextStub
    tts: tts_pb2_grpc.TextToSpeechStub
    llm: llm_pb2_grpc.TextGenerationStub
    image: image_pb2_grpc.ImageGenerationStub


class Channels:
    """The gateway's channels; ``stubs()`` opens them on first use in each process."""

    def __init__(self, settings: GatewaySettings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._channels: list[grpc.Channel] = []
        self._stubs: Stubs | None = None

    def stubs(self) -> Stubs:
        pid = os.getpid()
        stubs = self._stubs
        if stubs is not None and self._pid == pid:
            return stubs
        with self._lock:
            if self._stubs is None or self._pid != pid:
                # After a fork the parent's channels are unusable here; drop them unclosed (closing
                # would touch the parent's state) and open this process's own.
                self._channels = []
                self._stubs = self._open()
                self._pid = pid
            return self._stubs

    def _open(self) -> Stubs:
        s = self._settings
        envoy = getattr(s, GATEWAY.envoy_setting)
        if envoy:
            shared = self._channel(envoy, list(GRPC_NAMES.values()))
            by_name = dict.fromkeys(GRPC_NAMES, shared)
        else:
            by_name = {
                d.service: self._channel(getattr(s, d.setting), [GRPC_NAMES[d.service]])
                for d in GATEWAY.dependencies
            }
        return Stubs(
            orchestrator=orchestrator_pb2_grpc.OrchestratorStub(by_name["orchestrator"]),
            conversations=orchestrator_pb2_grpc.ConversationsStub(by_name["orchestrator"]),
            orchestrator_health=health_pb2_grpc.HealthStub(by_name["orchestrator"]),
            stt=stt_pb2_grpc.SpeechToTextStub(by_name["stt"]),
            tts=tts_pb2_grpc.TextToSpeechStub(by_name["tts"]),
            llm=llm_pb2_grpc.TextGenerationStub(by_name["llm"]),
            image=image_pb2_grpc.ImageGenerationStub(by_name["image"]),
        )

    def _channel(self, address: str, services: list[str]) -> grpc.Channel:
        """A channel with the suite's options (``services.common.clients``), remembered so
        ``close`` closes it."""
        s = self._settings
        channel = open_sync_channel(address, services, s.max_message_bytes, s.max_attempts)
        self._channels.append(channel)
        return channel

    def close(self) -> None:
        with self._lock:
            if self._pid == os.getpid():
                for channel in self._channels:
                    channel.close()
            self._channels, self._stubs, self._pid = [], None, None

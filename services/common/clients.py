"""Channels to other Chorus services: retries, keepalive, limits and request-id propagation.

One place decides how a caller reaches a Chorus service, so every caller gets the same behaviour,
whether it is an asyncio service (the orchestrator, ``grpc.aio``) or the gateway (gunicorn
threads, synchronous ``grpc``): a gRPC service config that retries UNAVAILABLE with exponential
backoff (before any response arrived), keepalive pings that notice dead peers, round-robin over
every address a DNS name resolves to (headless Kubernetes Services) or one Envoy address in
front of many replicas, and the request id on every call.
"""

from __future__ import annotations

import json
from typing import TypedDict

import grpc

from services.common.interceptor import REQUEST_ID_KEY
from services.common.logs import request_id

__all__ = [
    "CallOptions",
    "Metadata",
    "call_metadata",
    "call_options",
    "channel_options",
    "open_channel",
    "open_sync_channel",
    "service_config",
]

Metadata = tuple[tuple[str, str], ...]
ChannelOptions = list[tuple[str, str | int]]

DEFAULT_MAX_MESSAGE_BYTES = 32 * 1024 * 1024


def service_config(
    services: list[str],
    max_attempts: int = 4,
    initial_backoff: float = 0.2,
    max_backoff: float = 2.0,
) -> str:
    """The gRPC service config (JSON) for calls to ``services``.

    ``max_attempts`` below 2 means one try: gRPC rejects a retry policy of fewer than 2 attempts,
    so the policy is left out rather than clamped (a caller that asked for no retries gets none).
    """
    method: dict[str, object] = {"name": [{"service": name} for name in services]}
    if max_attempts >= 2:
        method["retryPolicy"] = {
            "maxAttempts": max_attempts,
            "initialBackoff": f"{initial_backoff}s",
            "maxBackoff": f"{max_backoff}s",
            "backoffMultiplier": 2,
            "retryableStatusCodes": ["UNAVAILABLE"],
        }
    return json.dumps({"loadBalancingConfig": [{"round_robin": {}}], "methodConfig": [method]})


def channel_options(
    services: list[str],
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    max_attempts: int = 4,
) -> ChannelOptions:
    """Options of every channel to Chorus services, sync or asyncio alike."""
    return [
        ("grpc.service_config", service_config(services, max_attempts)),
        ("grpc.enable_retries", int(max_attempts >= 2)),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
    ]


def open_channel(
    address: str,
    services: list[str],
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    max_attempts: int = 4,
) -> grpc.aio.Channel:
    """An insecure grpc.aio channel to ``address`` (host:port or dns:///name:port)."""
    return grpc.aio.insecure_channel(
        address, options=channel_options(services, max_message_bytes, max_attempts)
    )


def open_sync_channel(
    address: str,
    services: list[str],
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    max_attempts: int = 4,
) -> grpc.Channel:
    """The synchronous twin of ``open_channel``, for callers that block a thread per call."""
    return grpc.insecure_channel(
        address, options=channel_options(services, max_message_bytes, max_attempts)
    )


def call_metadata(*extra: tuple[str, str]) -> Metadata:
    """Metadata for a downstream call: the current request id, so every log line of a turn,
    in every service, carries the same id; ``extra`` pairs follow it."""
    return ((REQUEST_ID_KEY, request_id.get()), *extra)


class CallOptions(TypedDict):
    """Keyword arguments of one downstream call: ``stub.Method(message, **call_options(...))``."""

    timeout: float
    metadata: Metadata


def call_options(timeout: float, *extra: tuple[str, str]) -> CallOptions:
    """A call's deadline (seconds from now) and its metadata, the two things every call needs."""
    return {"timeout": timeout, "metadata": call_metadata(*extra)}

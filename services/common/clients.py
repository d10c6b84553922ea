"""Channels to other Chorus services: retries, keepalive, limits and request-id propagation.

One place decides how a service calls another, so every caller gets the same behaviour: a gRPC
service config that retries UNAVAILABLE with exponential backoff (before any response arrived),
keepalive pings that notice dead peers, and round-robin over every address a DNS name resolves
to (headless Kubernetes Services) or one Envoy address in front of many replicas.
"""

from __future__ import annotations

import json

import grpc

from services.common.interceptor import REQUEST_ID_KEY
from services.common.logs import request_id


def service_config(
    services: list[str],
    max_attempts: int = 4,
    initial_backoff: float = 0.2,
    max_backoff: float = 2.0,
) -> str:
    return json.dumps(
        {
            "loadBalancingConfig": [{"round_robin": {}}],
            "methodConfig": [
                {
                    "name": [{"service": name} for name in services],
                    "retryPolicy": {
                        "maxAttempts": max_attempts,
                        "initialBackoff": f"{initial_backoff}s",
                        "maxBackoff": f"{max_backoff}s",
                        "backoffMultiplier": 2,
                        "retryableStatusCodes": ["UNAVAILABLE"],
                    },
                }
            ],
        }
    )


def open_channel(
    address: str,
    services: list[str],
    max_message_bytes: int = 32 * 1024 * 1024,
    max_attempts: int = 4,
) -> grpc.aio.Channel:
    """An insecure grpc.aio channel to ``address`` (host:port or dns:///name:port)."""
    return grpc.aio.insecure_channel(
        address,
        options=[
            ("grpc.service_config", service_config(services, max_attempts)),
            ("grpc.enable_retries", 1),
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.keepalive_timeout_ms", 10_000),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
        ],
    )


def call_metadata() -> tuple[tuple[str, str], ...]:
    """Metadata for a downstream call: the current request id, so every log line of a turn,
    in every service, carries the same id."""
    return ((REQUEST_ID_KEY, request_id.get()),)

"""Docker HEALTHCHECK for every Chorus image: exit 0 when the container's service is ready.

gRPC services: the standard ``grpc.health.v1.Health/Check`` (SERVING only once the model is
loaded; NOT_SERVING while draining) on ``$CHORUS_<PREFIX>_PORT``. The gateway: HTTP ``/readyz``.
Envoy: its admin ``/ready`` on loopback (inside the container, where the admin API is bound).
"""

from __future__ import annotations

import os
import sys
import urllib.request

PREFIXES = {
    "stt": ("CHORUS_STT_", 50051),
    "tts": ("CHORUS_TTS_", 50052),
    "llm": ("CHORUS_LLM_", 50053),
    "image": ("CHORUS_IMAGE_", 50054),
    "orchestrator": ("CHORUS_ORCH_", 50055),
    "gateway": ("CHORUS_GATEWAY_", 8000),
}


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def grpc_serving(port: int) -> bool:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=2
            )
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def main() -> int:
    service = os.environ.get("CHORUS_SERVICE", "")
    if service == "envoy":
        return (
            0
            if http_ok(
                f"http://127.0.0.1:{os.environ.get('CHORUS_ENVOY_ADMIN_PORT', '9901')}/ready"
            )
            else 1
        )
    prefix, default_port = PREFIXES[service]
    port = int(os.environ.get(f"{prefix}PORT", default_port))
    if service == "gateway":
        return 0 if http_ok(f"http://127.0.0.1:{port}/readyz") else 1
    return 0 if grpc_serving(port) else 1


if __name__ == "__main__":
    sys.exit(main())

"""Docker HEALTHCHECK for every Chorus image: exit 0 when the container's service is ready.

gRPC services: the standard ``grpc.health.v1.Health/Check`` (SERVING only once the model is
loaded; NOT_SERVING while draining) on ``$CHORUS_<PREFIX>_PORT``. HTTP services (the gateway):
their ready path (``/readyz``). Envoy: its admin ``/ready`` on loopback (inside the container,
where the admin API is bound). Ports, prefixes and paths come from ``services/catalog.py``.
"""

from __future__ import annotations

import os
import sys
import urllib.request

from services.catalog import ENVOY, service


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
    name = os.environ.get("CHORUS_SERVICE", "")
    if name == ENVOY.name:
        admin_port = os.environ.get(f"{ENVOY.env_prefix}ADMIN_PORT", str(ENVOY.admin_port))
        return 0 if http_ok(f"http://127.0.0.1:{admin_port}/ready") else 1
    spec = service(name)
    port = int(os.environ.get(spec.env("port"), spec.port))
    if spec.protocol == "http":
        return 0 if http_ok(f"http://127.0.0.1:{port}{spec.ready_path}") else 1
    return 0 if grpc_serving(port) else 1


if __name__ == "__main__":
    sys.exit(main())

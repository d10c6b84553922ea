"""Liveness, readiness and the OpenAPI document."""

from __future__ import annotations

import grpc
from flask import Blueprint, Response, jsonify
from grpc_health.v1 import health_pb2

from gateway.app import metadata, settings_of, stubs_of
from gateway.openapi import document

blueprint = Blueprint("health", __name__)


@blueprint.get("/healthz")
def healthz() -> Response:
    """The process answers HTTP (liveness); says nothing about the services behind it."""
    return jsonify({"status": "ok"})


@blueprint.get("/readyz")
def readyz() -> tuple[Response, int]:
    """Ready when the orchestrator answers its health check with SERVING."""
    try:
        answer = stubs_of().orchestrator_health.Check(
            health_pb2.HealthCheckRequest(),
            timeout=settings_of().ready_timeout,
            metadata=metadata(),
        )
    except grpc.RpcError as error:
        detail = error.code().name if isinstance(error, grpc.Call) else "UNKNOWN"
        return jsonify({"status": "unavailable", "orchestrator": detail}), 503
    name = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
    ready = answer.status == health_pb2.HealthCheckResponse.SERVING
    return jsonify({"status": "ready" if ready else "unavailable", "orchestrator": name}), (
        200 if ready else 503
    )


@blueprint.get("/openapi.json")
def openapi() -> Response:
    return jsonify(document())

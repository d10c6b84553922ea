"""Liveness, readiness and the OpenAPI document."""

from __future__ import annotations

import grpc
from flask import Blueprint, Response, jsonify
from grpc_health.v1 import health_pb2

from gateway.app import metadata, settings_of, stubs_of
from gateway.channels import HEALTH_METADATA
from gateway.openapi import document
from services.catalog import BY_NAME

# The orchestrator's own service: SERVING there is what its readiness probe and Envoy check too.
ORCHESTRATOR = BY_NAME["orchestrator"].grpc_service

blueprint = Blueprint("health", __name__)


@blueprint.get("/healthz")
def healthz() -> Response:
    """The process answers HTTP (liveness); says nothing about the services behind it."""
    return jsonify({"status": "ok"})


@blueprint.get("/readyz")
def readyz() -> tuple[Response, int]:
    """Ready when the orchestrator answers its health check with SERVING.

    The check names the orchestrator twice: in the request (which service's health) and in
    ``HEALTH_METADATA`` (so an Envoy in between, which cannot read the request, routes it there).
    """
    try:
        answer = stubs_of().orchestrator_health.Check(
            health_pb2.HealthCheckRequest(service=ORCHESTRATOR),
            timeout=settings_of().ready_timeout,
            metadata=metadata() + HEALTH_METADATA,
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

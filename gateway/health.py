"""Liveness, readiness and the OpenAPI document: the routes that need no API key."""

from __future__ import annotations

import grpc
from flask import Blueprint, Response, current_app, jsonify
from grpc_health.v1 import health_pb2

from gateway.channels import HEALTH_METADATA
from gateway.context import call_options, settings_of, stubs_of
from gateway.openapi import OBJECT, document, documented
from gateway.responses import Readiness, Status
from services.catalog import BY_NAME

__all__ = ["ORCHESTRATOR", "blueprint"]

# The orchestrator's own service: SERVING there is what its readiness probe and Envoy check too.
ORCHESTRATOR = BY_NAME["orchestrator"].grpc_service

blueprint = Blueprint("health", __name__)


@blueprint.get("/healthz")
@documented("healthz", "health", Status, errors=(), public=True)
def healthz() -> Response:
    """Liveness

    The process answers HTTP; says nothing about the services behind it.
    """
    return jsonify(Status(status="ok").body())


@blueprint.get("/readyz")
@documented(
    "readyz", "health", Readiness, other={503: (Readiness, "Not ready")}, errors=(), public=True
)
def readyz() -> tuple[Response, int]:
    """Ready when the orchestrator is SERVING

    The check names the orchestrator twice: in the request (which service's health) and in the
    metadata (so an Envoy in between, which cannot read the request, routes it there).
    """
    try:
        answer = stubs_of().orchestrator_health.Check(
            health_pb2.HealthCheckRequest(service=ORCHESTRATOR),
            **call_options(settings_of().ready_timeout, *HEALTH_METADATA),
        )
    except grpc.RpcError as error:
        detail = error.code().name if isinstance(error, grpc.Call) else "UNKNOWN"
        return jsonify(Readiness(status="unavailable", orchestrator=detail).body()), 503
    name = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
    ready = answer.status == health_pb2.HealthCheckResponse.SERVING
    readiness = Readiness(status="ready" if ready else "unavailable", orchestrator=name)
    return jsonify(readiness.body()), (200 if ready else 503)


@blueprint.get("/openapi.json")
@documented(
    "openapi",
    "health",
    (None, "This document (OpenAPI 3.1)"),
    media={"application/json": OBJECT},
    errors=(),
    public=True,
)
def openapi() -> Response:
    """The OpenAPI document

    Made by spectree from the routes and the pydantic models (gateway/openapi.py).
    """
    return jsonify(document(current_app))

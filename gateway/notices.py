"""Notices for the page (``/api/config``): a service serving a placeholder model says so.

Offline, the suite runs stand-in models: a tiny random-weight image pipeline that draws noise
and a 270M base text model. Each service marks them in its ListModels (``ModelInfo.placeholder``,
the description saying why and what to set); a notice is made of the default model of the image
and text generation services when it is one. The services are asked with one short deadline
for both (the gateway's ``ready_timeout``) and the answer is kept ``TTL_SECONDS`` per process,
so page loads rarely cost a call; a service that does not answer contributes no notice and
never fails the page's config.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Literal

import grpc
from chorus.v1 import common_pb2

from gateway.channels import Stubs
from gateway.errors import from_rpc_error
from gateway.responses import Notice
from services.catalog import BY_NAME
from services.common.clients import call_options

__all__ = ["SOURCES", "TTL_SECONDS", "Notices", "fetch_notices"]

log = logging.getLogger(__name__)

TTL_SECONDS = 5.0
"""How long a process reuses the notices: a page load after a model change shows it soon, and
a burst of page loads costs one call per service."""

SOURCES: tuple[tuple[Literal["image", "text-generation"], str], ...] = (
    ("image", "image"),
    ("text-generation", "llm"),
)
"""(the notice's ``service``, the catalog service asked)."""


def fetch_notices(stubs: Stubs, timeout: float) -> list[Notice]:
    """Ask each service of ``SOURCES`` for its models, all within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    notices: list[Notice] = []
    for service, name in SOURCES:
        list_models = getattr(stubs, name).ListModels
        remaining = max(0.05, deadline - time.monotonic())
        try:
            listing = list_models(common_pb2.ListModelsRequest(), **call_options(remaining))
        except grpc.RpcError as error:
            log.info("no notices from %s: %s", name, from_rpc_error(error).message)
            continue
        for model in listing.models:
            if model.is_default and model.placeholder:
                message = " ".join(model.description.split())  # one line, whatever it says
                notices.append(
                    Notice(
                        service=service,
                        message=message or f"{model.id} is a placeholder model.",
                        setting=BY_NAME[name].env("model"),
                    )
                )
    return notices


class Notices:
    """The notices of one gateway process, fetched at most once per ``ttl`` seconds."""

    def __init__(
        self, ttl: float = TTL_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._ttl = ttl
        self._clock = clock
        # Held while fetching: concurrent page loads wait for that one answer (at most the
        # timeout) rather than each asking the services.
        self._lock = threading.Lock()
        self._fetched_at: float | None = None
        self._notices: list[Notice] = []

    def get(self, stubs: Stubs, timeout: float) -> list[Notice]:
        with self._lock:
            if self._fetched_at is None or self._clock() - self._fetched_at >= self._ttl:
                self._notices = fetch_notices(stubs, timeout)
                self._fetched_at = self._clock()
            return list(self._notices)

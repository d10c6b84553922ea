"""What a request handler needs from its app: the settings, the stubs, the options of a call.

Blueprints import these from here, never from ``gateway.app``: the app imports every blueprint
at the top of its module, and nothing imports back into it, so there is no import cycle.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache

from flask import Flask, current_app, g, has_request_context

from gateway.channels import Channels, Stubs
from gateway.keys import ANONYMOUS, KeyRing, Principal
from gateway.notices import Notices
from gateway.settings import GatewaySettings
from services.common.artifacts import ArtifactSettings, ArtifactStore, open_store
from services.common.clients import CallOptions
from services.common.clients import call_options as _call_options

__all__ = [
    "TENANT_KEY",
    "GatewayState",
    "call_options",
    "install",
    "settings_of",
    "state_of",
    "stubs_of",
    "tenant_metadata",
]

_EXTENSION = "chorus"


@dataclass(frozen=True)
class GatewayState:
    """One app's settings and channels (channels are per process, opened on first use), its
    API keys, and the notices ``/api/config`` serves (fetched on first use, kept briefly)."""

    settings: GatewaySettings
    channels: Channels
    keys: KeyRing
    notices: Notices = field(default_factory=Notices)
    artifacts: Callable[[], ArtifactStore] = field(
        default_factory=lambda: cache(lambda: open_store(ArtifactSettings()))
    )
    """The artifact store (``CHORUS_ARTIFACTS_*``), opened on first use: an S3 client is made
    only when a request needs it."""


def install(app: Flask, settings: GatewaySettings, channels: Channels) -> None:
    """Attach the state to ``app``; ``create_app`` calls it once."""
    app.extensions[_EXTENSION] = GatewayState(settings, channels, KeyRing(settings))


def state_of(app: Flask | None = None) -> GatewayState:
    """The state of ``app`` (by default the app handling the current request)."""
    state: GatewayState = (app or current_app).extensions[_EXTENSION]
    return state


def settings_of() -> GatewaySettings:
    return state_of().settings


def stubs_of() -> Stubs:
    return state_of().channels.stubs()


TENANT_KEY = "x-chorus-tenant"
"""The metadata that tells the orchestrator whose conversations and artifacts a call reaches."""


def tenant_metadata() -> tuple[str, str]:
    """The caller's tenant as call metadata (its key's, or ``default`` on an open gateway)."""
    principal: Principal = g.get("principal", ANONYMOUS) if has_request_context() else ANONYMOUS
    return (TENANT_KEY, principal.tenant)


def call_options(timeout: float | None = None, *extra: tuple[str, str]) -> CallOptions:
    """Deadline and metadata of a downstream call: ``timeout`` seconds (the gateway's
    ``call_timeout`` by default), the request id and the caller's tenant, plus ``extra``
    metadata pairs."""
    timeout = settings_of().call_timeout if timeout is None else timeout
    return _call_options(timeout, tenant_metadata(), *extra)

"""What a request handler needs from its app: the settings, the stubs, the options of a call.

Blueprints import these from here, never from ``gateway.app``: the app imports every blueprint
at the top of its module, and nothing imports back into it, so there is no import cycle.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache

from flask import Flask, current_app

from gateway.channels import Channels, Stubs
from gateway.keys import KeyRing
from gateway.notices import Notices
from gateway.settings import GatewaySettings
from services.common.artifacts import ArtifactSettings, ArtifactStore, open_store
from services.common.clients import CallOptions
from services.common.clients import call_options as _call_options

__all__ = ["GatewayState", "call_options", "install", "settings_of", "state_of", "stubs_of"]

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


def call_options(timeout: float | None = None, *extra: tuple[str, str]) -> CallOptions:
    """Deadline and metadata of a downstream call: ``timeout`` seconds (the gateway's
    ``call_timeout`` by default) and the request id, plus ``extra`` metadata pairs."""
    return _call_options(settings_of().call_timeout if timeout is None else timeout, *extra)

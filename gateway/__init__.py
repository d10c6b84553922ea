"""Chorus HTTP gateway: the browser interface and OpenAI-compatible endpoints over gRPC."""

from gateway.app import create_app
from gateway.settings import GatewaySettings

__all__ = ["GatewaySettings", "create_app"]

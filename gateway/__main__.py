"""``python -m gateway``: serve the gateway with gunicorn (gthread workers).

gthread suits this gateway: each request is a thread blocked on a gRPC call (no CPU work), and
an open SSE stream holds only its thread; workers are forked before any gRPC channel exists
(channels open lazily in each worker). SIGTERM drains open requests for ``graceful_timeout``.
"""

from __future__ import annotations

import sys
from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication

from gateway.app import create_app
from gateway.settings import GatewaySettings
from services.common.logs import configure_logging


class GatewayServer(BaseApplication):  # type: ignore[misc]  # gunicorn ships no types
    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        super().__init__()

    def load_config(self) -> None:
        s = self.settings
        options: dict[str, Any] = {
            "bind": [f"{s.host}:{s.port}"],
            "workers": s.workers,
            "worker_class": "gthread",
            "threads": s.threads,
            "graceful_timeout": int(s.graceful_timeout),
            # Worker heartbeat (gthread beats while its threads stream), not a request limit.
            "timeout": 60,
            "keepalive": 5,
            "accesslog": None,  # the app logs one line per request, with its request id
            "errorlog": "-",
            "loglevel": s.log_level.lower(),
            "proc_name": "chorus-gateway",
            "control_socket_disable": True,  # no shared ~/.gunicorn socket between instances
            "post_fork": _post_fork,
        }
        for key, value in options.items():
            self.cfg.set(key, value)

    def load(self) -> Flask:
        return create_app(self.settings)


def _post_fork(server: Any, worker: Any) -> None:
    settings = server.app.settings
    configure_logging(settings.log_level, settings.log_json, service="gateway")


def main() -> int:
    settings = GatewaySettings()
    configure_logging(settings.log_level, settings.log_json, service="gateway")
    GatewayServer(settings).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``python -m gateway``: serve the gateway with gunicorn (gthread workers).

gthread suits this gateway: each request is a thread blocked on a gRPC call (no CPU work), and
an open SSE stream holds only its thread; workers are forked before any gRPC channel exists
(channels open lazily in each worker). SIGTERM drains open requests for ``graceful_timeout``;
open /v1/realtime sockets would hold their threads for all of it, so the worker first ends them
with a close frame (1001, going away), then drains as before. SIGINT (Ctrl-C) and SIGQUIT end a
worker at once (``_quit_now``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
from types import FrameType
from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication

from gateway.app import create_app
from gateway.metrics import child_exit, prepare_multiprocess
from gateway.openai.realtime import SESSIONS
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
            "post_worker_init": _post_worker_init,
            "child_exit": child_exit,  # a dead worker's gauges leave /metrics
            # The request's size, before the app sees it (the app answers the same limits).
            "limit_request_line": s.max_request_line_bytes,
            "limit_request_field_size": s.max_header_bytes,
            "limit_request_fields": s.max_header_count,
        }
        for key, value in options.items():
            self.cfg.set(key, value)

    def load(self) -> Flask:
        return create_app(self.settings)


def _post_fork(server: Any, worker: Any) -> None:
    settings = server.app.settings
    configure_logging(settings.log_level, settings.log_json, service="gateway")


def _post_worker_init(worker: Any) -> None:
    """Wrap the worker's SIGTERM handler (installed by now): realtime sessions are closed first.
    And replace its SIGINT / SIGQUIT handler: see ``_quit_now``.

    Closing only cancels each session's call and marks it; the session's own thread sends the
    close frame and returns, so the handler does no I/O and the drain that follows is short.
    """
    drain = signal.getsignal(signal.SIGTERM)

    def stop(signum: int, frame: FrameType | None) -> None:
        SESSIONS.close_all(1001, "the gateway is shutting down")
        if callable(drain):
            drain(signum, frame)

    signal.signal(signal.SIGTERM, stop)
    signal.siginterrupt(signal.SIGTERM, False)  # as the worker set it: calls are not interrupted
    quitting: list[int] = []

    def quit_now(signum: int, frame: FrameType | None) -> None:
        if quitting:  # Ctrl-C's SIGINT, then the master's SIGQUIT: the first one does it all
            return
        quitting.append(signum)
        _quit_now(worker)

    for sig in (signal.SIGINT, signal.SIGQUIT):
        signal.signal(sig, quit_now)


def _quit_now(worker: Any) -> None:
    """SIGINT / SIGQUIT: end the worker at once; its realtime sessions get a second to say
    goodbye (close frame 1001), then the process exits, whatever its threads are doing.

    gunicorn's own handler raises SystemExit in the main thread, and the interpreter then joins
    the thread pool's threads: one streaming an SSE turn or a realtime session waits on its gRPC
    call, so the worker hung until the master killed it after ``graceful_timeout`` (30 s; seen
    on Ctrl-C in ``make run`` after a browser had used the page). A terminal's Ctrl-C also sends
    SIGINT to every process at once, and the master's SIGQUIT follows: with gunicorn's handler
    the second signal ran inside the first one's cleanup, in the middle of a gRPC cancel. Here
    the first signal does everything, and the exit does not wait for any thread.
    """
    worker.alive = False
    SESSIONS.close_all(1001, "the gateway is shutting down", wait=1.0)
    logging.shutdown()  # flush the log handlers: os._exit skips the interpreter's cleanup
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(0)


def main() -> int:
    settings = GatewaySettings()
    configure_logging(settings.log_level, settings.log_json, service="gateway")
    prepare_multiprocess()  # before the workers fork: /metrics sums all of them
    GatewayServer(settings).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Logging set up once per process, with the current call's request id on every line.

Plain text for a terminal; one JSON object a line (python-json-logger) for collectors, when a
service runs with ``LOG_JSON``. Both carry the same facts: time, level, service, request id,
logger, message, and the traceback of a logged exception.
"""

from __future__ import annotations

import contextvars
import logging
import sys
from typing import TextIO

from pythonjsonlogger.json import JsonFormatter

__all__ = ["configure_logging", "log_handler", "request_id"]

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
"""Request id of the call being served; set by the server interceptor from ``x-request-id``."""

# The record's fields in every JSON line, and the names Chorus's JSON lines have always used
# for them; ``exc_info`` (the formatted traceback) is added by the formatter when present.
_JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(message)s"
_JSON_NAMES = {"asctime": "time", "levelname": "level", "name": "logger", "exc_info": "exception"}


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


def log_handler(service: str, *, as_json: bool, stream: TextIO | None = None) -> logging.Handler:
    """A handler writing to ``stream`` (stderr) that stamps each record with the request id.

    In JSON, values JSON cannot hold (``extra=`` objects) are written with ``str()``, so a
    pydantic ``SecretStr``, how every key is kept, appears as ``**********``, never as the key.
    """
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(_RequestIdFilter())
    if as_json:
        handler.setFormatter(
            JsonFormatter(
                _JSON_FIELDS,
                rename_fields=_JSON_NAMES,
                static_fields={"service": service},
            )
        )
    else:
        handler.setFormatter(
            logging.Formatter(
                f"%(asctime)s %(levelname)s {service} [%(request_id)s] %(name)s: %(message)s"
            )
        )
    return handler


def configure_logging(level: str = "INFO", as_json: bool = False, service: str = "chorus") -> None:
    """Configure the root logger; call once from a service's entrypoint."""
    logging.basicConfig(
        level=level.upper(), handlers=[log_handler(service, as_json=as_json)], force=True
    )

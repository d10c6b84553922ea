"""The HTTP gateway as a real gunicorn process on loopback, for tests and benchmarks."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import requests
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from websockets.sync.client import ClientConnection, connect

from devtools.processes import ServiceProcess, free_port
from services.catalog import BY_NAME
from tests.support.services import started

NOWHERE = "127.0.0.1:9"
"""An address where nothing listens (the discard port), for a gateway without an orchestrator."""
GATEWAY = BY_NAME["gateway"]


def gateway_env(
    *,
    orchestrator: ServiceProcess | str = NOWHERE,
    stt: ServiceProcess | str = NOWHERE,
    tts: ServiceProcess | str = NOWHERE,
    llm: ServiceProcess | str = NOWHERE,
    image: ServiceProcess | str = NOWHERE,
    **extra: str,
) -> dict[str, str]:
    """The gateway's environment: each service's address in the variable the catalog names."""

    def address(p: ServiceProcess | str) -> str:
        return p if isinstance(p, str) else p.address

    given = {"orchestrator": orchestrator, "stt": stt, "tts": tts, "llm": llm, "image": image}
    env = {variable: address(given[name]) for name, variable in GATEWAY.address_env.items()}
    return {**env, "CHORUS_GATEWAY_WORKERS": "1", "CHORUS_GATEWAY_THREADS": "16", **extra}


class GatewayProcess(ServiceProcess):
    """``python -m gateway`` (gunicorn, gthread) on a free loopback port: the launcher's own
    process class, plus HTTP helpers."""

    def __init__(self, env: Mapping[str, str], log_path: Path, ready: str = "/healthz") -> None:
        spec = replace(GATEWAY, ready_path=ready)
        super().__init__(spec, free_port(), 0, env=dict(env), log_path=log_path)

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def status(self, path: str) -> int | None:
        try:
            with urllib.request.urlopen(self.url + path, timeout=5) as r:
                return r.status
        except urllib.error.HTTPError as error:
            return error.code
        except OSError:
            return None

    def alive(self) -> bool:
        return (
            self.process is not None
            and self.process.poll() is None
            and self.status("/healthz") == 200
        )


@contextmanager
def running_gateway(
    env: Mapping[str, str], log_dir: Path, tag: str, ready: str = "/healthz"
) -> Iterator[GatewayProcess]:
    with started(GatewayProcess(env, log_dir / f"gateway-{tag}.log", ready), 60) as proc:
        yield proc


def sse_events(response: requests.Response) -> Iterator[tuple[str, dict]]:
    """The (event, JSON data) pairs of a server-sent event stream, as a browser reads them."""
    event, data = "message", []
    for line in response.iter_lines(decode_unicode=True):
        if line == "":
            if data:
                yield event, json.loads("\n".join(data))
            event, data = "message", []
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip())


def schema_settings(max_examples: int) -> settings:
    """Hypothesis settings of every schemathesis run against a live gateway: the same examples
    on every machine (derandomized, no example database), no per-example deadline (a turn takes
    seconds), explicit examples then generated ones, and no health check (a live server is
    slow by Hypothesis's measure, not by ours)."""
    return settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )


def conforms(case: Any, base_url: str, timeout: float = 120) -> None:
    """Send a schemathesis case to a live gateway and check the answer against the document:
    no server error, and a status, media type and body that ``/openapi.json`` gives."""
    case.call_and_validate(
        base_url=base_url,
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
        ],
        timeout=timeout,
    )


def realtime_socket(url: str, api_key: str | None = None, **kwargs: Any) -> ClientConnection:
    """A raw ``/v1/realtime`` socket to the gateway at ``url`` (model ``chorus``), the key as a
    bearer header; ``headers=`` replaces that header (``{}``: no key at all)."""
    headers = kwargs.pop("headers", {"Authorization": f"Bearer {api_key}"} if api_key else {})
    return connect(
        url.replace("http://", "ws://") + "/v1/realtime?model=chorus",
        additional_headers=headers,
        open_timeout=30,
        **kwargs,
    )


def receive_until(ws: ClientConnection, kind: str, timeout: float = 60) -> dict[str, Any]:
    """The next server event of type ``kind`` on ``ws``, skipping the others; TimeoutError after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        event = json.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic())))
        if event["type"] == kind:
            return dict(event)

"""The HTTP gateway as a real gunicorn process on loopback, for tests and benchmarks."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from services.launcher import ServiceProcess, free_port
from tests.support.services import SPECS, started

NOWHERE = "127.0.0.1:9"
"""An address where nothing listens (the discard port), for a gateway without an orchestrator."""


def gateway_env(
    *,
    orchestrator: ServiceProcess | str = NOWHERE,
    stt: ServiceProcess | str = NOWHERE,
    tts: ServiceProcess | str = NOWHERE,
    llm: ServiceProcess | str = NOWHERE,
    image: ServiceProcess | str = NOWHERE,
    **extra: str,
) -> dict[str, str]:
    def address(p: ServiceProcess | str) -> str:
        return p if isinstance(p, str) else p.address

    return {
        "CHORUS_GATEWAY_ORCHESTRATOR_ADDRESS": address(orchestrator),
        "CHORUS_GATEWAY_STT_ADDRESS": address(stt),
        "CHORUS_GATEWAY_TTS_ADDRESS": address(tts),
        "CHORUS_GATEWAY_LLM_ADDRESS": address(llm),
        "CHORUS_GATEWAY_IMAGE_ADDRESS": address(image),
        "CHORUS_GATEWAY_WORKERS": "1",
        "CHORUS_GATEWAY_THREADS": "16",
        **extra,
    }


class GatewayProcess(ServiceProcess):
    """``python -m gateway`` (gunicorn, gthread) on a free loopback port: the launcher's own
    process class, plus HTTP helpers."""

    def __init__(self, env: Mapping[str, str], log_path: Path, ready: str = "/healthz") -> None:
        spec = replace(SPECS["gateway"], http_ready=ready)
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

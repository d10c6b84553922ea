"""The voice suite a benchmark runs against: STT, TTS and LLM services, an orchestrator over
them (image mode off: no image service) and a gateway in front, on loopback; stopped in reverse
order at the end, whatever happened."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from devtools.processes import ServiceProcess, free_port
from services.catalog import BY_NAME
from tests.support.gateway import NOWHERE, GatewayProcess, gateway_env

__all__ = ["VoiceSuite", "voice_suite"]


@dataclass(frozen=True)
class VoiceSuite:
    stt: ServiceProcess
    tts: ServiceProcess
    llm: ServiceProcess
    orchestrator: ServiceProcess
    gateway: GatewayProcess


@contextmanager
def voice_suite(
    logs: Path, stt_env: Mapping[str, str] = {}, llm_env: Mapping[str, str] = {}
) -> Iterator[VoiceSuite]:
    """Every process SERVING (the gateway ready: its /readyz), each logging into ``logs``."""
    started: list[ServiceProcess] = []

    def service(name: str, env: Mapping[str, str]) -> ServiceProcess:
        proc = ServiceProcess(
            BY_NAME[name], free_port(), free_port(), env=dict(env), log_path=logs / f"{name}.log"
        )
        started.append(proc)
        return proc.start()

    try:
        stt, tts, llm = service("stt", stt_env), service("tts", {}), service("llm", llm_env)
        for proc in (stt, tts, llm):
            proc.wait_ready()
        orchestrator = service(
            "orchestrator",
            {
                "CHORUS_ORCH_STT_ADDRESS": stt.address,
                "CHORUS_ORCH_TTS_ADDRESS": tts.address,
                "CHORUS_ORCH_LLM_ADDRESS": llm.address,
                "CHORUS_ORCH_IMAGE_ADDRESS": NOWHERE,  # image mode off: never called
            },
        )
        orchestrator.wait_ready()
        gateway = GatewayProcess(
            gateway_env(orchestrator=orchestrator, stt=stt, tts=tts, llm=llm),
            logs / "gateway.log",
            ready="/readyz",
        )
        started.append(gateway)
        gateway.start()
        gateway.wait_ready()
        yield VoiceSuite(stt, tts, llm, orchestrator, gateway)
    finally:
        for proc in reversed(started):
            proc.stop()

"""The suite a soak runs against, on loopback: two replicas of each model service (STT Whisper
tiny.en on one thread, TTS Piper, LLM llama.cpp Gemma 3 270M, image a tiny diffusers pipeline)
behind one real Envoy (fault injection on), an orchestrator with a SQLite conversation store and
an artifact folder, and the gateway (gunicorn, two workers). Logs go into the run's folder.

The artifact folder is a small tmpfs when this process may mount one (root), so the full-disk
fault fills a real file system; elsewhere that fault is skipped."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from devtools.envoy import EnvoyProcess, running_envoy
from devtools.processes import ServiceProcess, free_port
from services.catalog import BY_NAME
from tests.support.envoy import REPLICA_ENV
from tests.support.gateway import GatewayProcess, gateway_env

__all__ = ["KINDS", "SoakSuite", "soak_suite"]

KINDS = ("stt", "tts", "llm", "image")
ARTIFACT_TMPFS = "64m"

STAGE_TIMEOUT_SECONDS = 20
"""The orchestrator's per-stage deadlines (transcription, reply, speech per sentence, image):
short, so a slow downstream (Envoy's delay) ends turns with a deadline error instead of
holding them for the defaults' minutes."""


@dataclass
class SoakSuite:
    folder: Path
    replicas: dict[str, list[ServiceProcess]]
    envoy: EnvoyProcess
    orchestrator: ServiceProcess
    gateway: GatewayProcess
    artifacts: Path
    artifacts_tmpfs: bool
    expected_down: set[str] = field(default_factory=set)
    """Names of processes a fault has stopped on purpose (not crashes while listed)."""

    @property
    def url(self) -> str:
        return self.gateway.url

    def named(self) -> dict[str, ServiceProcess | EnvoyProcess]:
        procs: dict[str, ServiceProcess | EnvoyProcess] = {
            f"{kind}-{i}": p for kind, ps in self.replicas.items() for i, p in enumerate(ps)
        }
        procs |= {
            "envoy": self.envoy,
            "orchestrator": self.orchestrator,
            "gateway": self.gateway,
        }
        return procs

    def pids(self) -> dict[str, int]:
        """name -> pid of every process alive now."""
        return {
            name: p.process.pid
            for name, p in self.named().items()
            if p.process is not None and p.process.poll() is None
        }

    def dead(self) -> dict[str, int | None]:
        """Processes that exited without a fault having stopped them: name -> exit code."""
        return {
            name: p.process.returncode if p.process else None
            for name, p in self.named().items()
            if name not in self.expected_down
            and (p.process is None or p.process.poll() is not None)
        }


def _model_env(kind: str, folder: Path) -> dict[str, str]:
    env = dict(REPLICA_ENV[kind])
    if kind == "image":
        from tests.support.tiny_diffusers import build_tiny_sd

        tiny = folder / "tiny-sd"
        if not tiny.exists():
            build_tiny_sd(tiny)
        env["CHORUS_IMAGE_MODEL"] = str(tiny)
    return env


def _mount_tmpfs(path: Path) -> bool:
    if os.geteuid() != 0:
        return False
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={ARTIFACT_TMPFS},mode=0755", "tmpfs", str(path)],
        capture_output=True,
    )
    return result.returncode == 0


@contextmanager
def soak_suite(folder: Path) -> Iterator[SoakSuite]:
    """Everything SERVING (the gateway's /readyz 200); stopped (SIGTERM, callers first) and the
    tmpfs unmounted at the end, whatever happened."""
    artifacts = folder / "artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    tmpfs = _mount_tmpfs(artifacts)
    with ExitStack() as stack:
        if tmpfs:
            stack.callback(subprocess.run, ["umount", "-l", str(artifacts)], check=False)
        replicas = {
            kind: [
                ServiceProcess(
                    BY_NAME[kind],
                    free_port(),
                    free_port(),
                    env=_model_env(kind, folder),
                    log_path=folder / f"{kind}-{i}.log",
                )
                for i in range(2)
            ]
            for kind in KINDS
        }
        for ps in replicas.values():
            for p in ps:
                stack.callback(p.stop, 10)
                p.start()
        for ps in replicas.values():
            for p in ps:
                p.wait_ready(300)
        envoy = stack.enter_context(running_envoy(replicas, folder))
        for kind, ps in replicas.items():
            envoy.wait_hosts(kind, healthy=[p.port for p in ps], timeout=60)
        orchestrator = ServiceProcess(
            BY_NAME["orchestrator"],
            free_port(),
            free_port(),
            env={
                "CHORUS_ORCH_ENVOY_ADDRESS": envoy.address,
                "CHORUS_ORCH_SESSION_STREAM_SECONDS": "30",
                "CHORUS_ORCH_MAX_HISTORY_MESSAGES": "8",
                "CHORUS_ORCH_TRANSCRIPTION_TIMEOUT": str(STAGE_TIMEOUT_SECONDS),
                "CHORUS_ORCH_REPLY_TIMEOUT": str(STAGE_TIMEOUT_SECONDS),
                "CHORUS_ORCH_SPEECH_TIMEOUT": str(STAGE_TIMEOUT_SECONDS),
                "CHORUS_ORCH_IMAGE_TIMEOUT": str(STAGE_TIMEOUT_SECONDS),
                "CHORUS_ORCH_GRACE_SECONDS": "5",
                "CHORUS_ARTIFACTS_FOLDER": str(artifacts),
                "CHORUS_CONVERSATIONS_URL": f"sqlite:///{folder / 'conversations.sqlite3'}",
            },
            log_path=folder / "orchestrator.log",
        )
        stack.callback(orchestrator.stop, 15)
        orchestrator.start().wait_ready(120)
        gateway = GatewayProcess(
            gateway_env(
                orchestrator=orchestrator,
                stt=envoy.address,
                tts=envoy.address,
                llm=envoy.address,
                image=envoy.address,
                CHORUS_GATEWAY_WORKERS="2",
                CHORUS_GATEWAY_THREADS="16",
                CHORUS_GATEWAY_MAX_HISTORY_MESSAGES="8",
                CHORUS_ARTIFACTS_FOLDER=str(artifacts),
            ),
            folder / "gateway.log",
            ready="/readyz",
        )
        stack.callback(gateway.stop, 30)
        gateway.start().wait_ready(120)
        yield SoakSuite(folder, replicas, envoy, orchestrator, gateway, artifacts, tmpfs)

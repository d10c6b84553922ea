"""Start the Chorus suite as local processes on loopback: ``make run`` (``python -m services.launcher``).

Each service runs in its own process, exactly as it would in a container; the launcher waits
until every one reports SERVING on the official health service, prints the addresses, and on
Ctrl-C (or SIGTERM) stops them all with SIGTERM so in-flight calls drain. Tests start services
with the same ``ServiceProcess`` class.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    module: str
    env_prefix: str
    port: int
    metrics_port: int


SUITE = (
    ServiceSpec("stt", "services.stt", "CHORUS_STT_", 50051, 9151),
    ServiceSpec("tts", "services.tts", "CHORUS_TTS_", 50052, 9152),
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServiceProcess:
    """One service process: started with its env, ready when health says SERVING."""

    spec: ServiceSpec
    port: int
    metrics_port: int
    env: Mapping[str, str] = field(default_factory=dict)
    log_path: Path | None = None
    process: subprocess.Popen[bytes] | None = None
    observed_health: list[int | None] = field(default_factory=list)
    """Health statuses seen while waiting for readiness (None: not answering yet)."""

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> ServiceProcess:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "gen"), str(ROOT), env.get("PYTHONPATH", "")])
        env[f"{self.spec.env_prefix}HOST"] = "127.0.0.1"
        env[f"{self.spec.env_prefix}PORT"] = str(self.port)
        env[f"{self.spec.env_prefix}METRICS_PORT"] = str(self.metrics_port)
        env.update(self.env)
        out = open(self.log_path, "ab") if self.log_path else None  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", self.spec.module],
            env=env,
            cwd=ROOT,
            stdout=out or None,
            stderr=subprocess.STDOUT if out else None,
        )
        return self

    def health(self, timeout: float = 1.0) -> int | None:
        """The health status, or None when the server does not answer."""
        with grpc.insecure_channel(self.address) as channel:
            try:
                response = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=timeout
                )
            except grpc.RpcError:
                return None
            return response.status

    def wait_ready(self, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        assert self.process is not None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.spec.name} exited with code {self.process.returncode} before it was ready"
                )
            status = self.health()
            if not self.observed_health or self.observed_health[-1] != status:
                self.observed_health.append(status)
            if status == health_pb2.HealthCheckResponse.SERVING:
                return
            time.sleep(0.1)
        raise TimeoutError(f"{self.spec.name} was not SERVING within {timeout:.0f} s")

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (drain), then SIGKILL if it does not exit within ``timeout``."""
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


def main() -> int:
    run_dir = ROOT / ".run"
    run_dir.mkdir(exist_ok=True)
    processes = [
        ServiceProcess(spec, spec.port, spec.metrics_port, log_path=run_dir / f"{spec.name}.log")
        for spec in SUITE
    ]
    for proc in processes:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", proc.port)) == 0:
                print(f"port {proc.port} for {proc.spec.name} is already in use", file=sys.stderr)
                return 1
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    try:
        for proc in processes:
            proc.start()
        print("starting Chorus (first start joins and loads model weights) ...", flush=True)
        for proc in processes:
            proc.wait_ready()
            print(
                f"  {proc.spec.name:<6} grpc://{proc.address}   metrics http://127.0.0.1:"
                f"{proc.metrics_port}/metrics   log {proc.log_path}",
                flush=True,
            )
        print("Chorus is SERVING. Press Ctrl-C to stop.", flush=True)
        while not stopping:
            if any(p.process and p.process.poll() is not None for p in processes):
                print("a service exited; stopping the rest (see .run/*.log)", file=sys.stderr)
                return 1
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        print("\nstopping ...", flush=True)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for proc in processes:
            proc.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

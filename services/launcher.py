"""Start the Chorus suite as local processes on loopback: ``make run``.

Each service runs in its own process, exactly as it would in a container; the launcher waits
until every one reports SERVING on the official health service, prints the addresses, and on
Ctrl-C (or SIGTERM) stops them all with SIGTERM so in-flight calls drain. Tests start services
with the same ``ServiceProcess`` class.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
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
    defaults: Mapping[str, str] = field(default_factory=dict)
    """Settings for the offline suite, used unless the environment sets them."""
    http_ready: str | None = None
    """For an HTTP service (the gateway): the path that answers 200 when it is ready."""


SUITE = (
    ServiceSpec("stt", "services.stt", "CHORUS_STT_", 50051, 9151),
    ServiceSpec("tts", "services.tts", "CHORUS_TTS_", 50052, 9152),
    ServiceSpec("llm", "services.llm", "CHORUS_LLM_", 50053, 9153),
    # The offline image model is a tiny random-weight pipeline: keep its pictures small and fast.
    ServiceSpec(
        "image",
        "services.image",
        "CHORUS_IMAGE_",
        50054,
        9154,
        defaults={
            "CHORUS_IMAGE_DEFAULT_WIDTH": "128",
            "CHORUS_IMAGE_DEFAULT_HEIGHT": "128",
            "CHORUS_IMAGE_DEFAULT_STEPS": "8",
        },
    ),
    ServiceSpec("orchestrator", "services.orchestrator", "CHORUS_ORCH_", 50055, 9155),
    ServiceSpec("gateway", "gateway", "CHORUS_GATEWAY_", 8000, 0, http_ready="/readyz"),
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
        env = {**self.spec.defaults, **os.environ}
        env["PYTHONPATH"] = os.pathsep.join(
            [str(ROOT / "gen"), str(ROOT), env.get("PYTHONPATH", "")]
        )
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
        if self.spec.http_ready:
            try:
                with urllib.request.urlopen(
                    f"http://{self.address}{self.spec.http_ready}", timeout=timeout
                ):
                    return health_pb2.HealthCheckResponse.SERVING
            except urllib.error.HTTPError:
                return health_pb2.HealthCheckResponse.NOT_SERVING
            except (urllib.error.URLError, OSError):
                return None
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
                    f"{self.spec.name} exited with code {self.process.returncode} "
                    "before it was ready"
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
    """Start the suite: model services, then (with CHORUS_ENVOY=1) Envoy in front of them, then
    the orchestrator (through Envoy when it runs); stop everything on Ctrl-C or SIGTERM."""
    run_dir = ROOT / ".run"
    run_dir.mkdir(exist_ok=True)
    use_envoy = os.environ.get("CHORUS_ENVOY", "") not in ("", "0")
    processes = {
        spec.name: ServiceProcess(
            spec, spec.port, spec.metrics_port, log_path=run_dir / f"{spec.name}.log"
        )
        for spec in SUITE
    }
    busy = [p for p in processes.values() if _port_in_use(p.port)]
    if busy:
        for proc in busy:
            print(f"port {proc.port} for {proc.spec.name} is already in use", file=sys.stderr)
        return 1

    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    models = [p for name, p in processes.items() if name not in ("orchestrator", "gateway")]
    orchestrator, gateway = processes["orchestrator"], processes["gateway"]
    with contextlib.ExitStack() as stack:
        try:
            print("starting Chorus (the first start joins and loads model weights) ...", flush=True)
            for proc in models:
                stack.callback(proc.stop)
                proc.start()
            for proc in models:
                proc.wait_ready(600)
                _print_ready(proc)
            if use_envoy:
                from deploy.envoy.local import running_envoy

                envoy = stack.enter_context(
                    running_envoy(
                        {p.spec.name: [p] for p in models},
                        run_dir,
                        listen_port=10000,
                        admin_port=9901,
                    )
                )
                print(
                    f"  {'envoy':<12} grpc://{envoy.address}   admin http://127.0.0.1:9901",
                    flush=True,
                )
                orchestrator.env = {"CHORUS_ORCH_ENVOY_ADDRESS": envoy.address}
                gateway.env = {"CHORUS_GATEWAY_ENVOY_ADDRESS": envoy.address}
            stack.callback(orchestrator.stop)
            orchestrator.start().wait_ready()
            _print_ready(orchestrator)
            stack.callback(gateway.stop)
            gateway.start().wait_ready()
            print(
                f"  {'gateway':<12} http://{gateway.address}/v1 (OpenAI-compatible)   "
                f"log {gateway.log_path}"
            )
            print(f"\nChorus is SERVING: open http://{gateway.address}/api/interface/", flush=True)
            print("Press Ctrl-C to stop.", flush=True)
            while not stopping:
                if any(p.process and p.process.poll() is not None for p in processes.values()):
                    print("a service exited; stopping the rest (see .run/*.log)", file=sys.stderr)
                    return 1
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
        finally:
            print("\nstopping ...", flush=True)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
    return 0


def _port_in_use(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _print_ready(proc: ServiceProcess) -> None:
    print(
        f"  {proc.spec.name:<12} grpc://{proc.address}   metrics http://127.0.0.1:"
        f"{proc.metrics_port}/metrics   log {proc.log_path}",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())

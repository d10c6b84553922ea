"""Start the Chorus suite as local processes on loopback: ``make run``.

Each service of the catalog (``services/catalog.py``) runs in its own process, exactly as it
would in a container; the launcher starts a service once every service it calls reports SERVING
on the official health service, prints the addresses, and on Ctrl-C (or SIGTERM) stops them all
with SIGTERM so in-flight calls drain. With ``CHORUS_ENVOY=1`` a real Envoy sits between the
callers and the services they call, as in the containers. Tests start services with the same
``ServiceProcess`` class, and a whole suite with ``running_suite``.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.catalog import BY_NAME, DEPENDED_ON, ENVOY, SERVICES, Service

if TYPE_CHECKING:
    from deploy.envoy.local import EnvoyProcess

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServiceProcess:
    """One service process: started with its env, ready when health says SERVING."""

    spec: Service
    port: int
    metrics_port: int
    """0 for a service without metrics (the gateway)."""
    env: Mapping[str, str] = field(default_factory=dict)
    log_path: Path | None = None
    process: subprocess.Popen[bytes] | None = None
    observed_health: list[int | None] = field(default_factory=list)
    """Health statuses seen while waiting for readiness (None: not answering yet)."""

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> ServiceProcess:
        env = {**self.spec.offline_defaults, **os.environ}
        env["PYTHONPATH"] = os.pathsep.join(
            [str(ROOT / "gen"), str(ROOT), env.get("PYTHONPATH", "")]
        )
        env[self.spec.env("host")] = "127.0.0.1"
        env[self.spec.env("port")] = str(self.port)
        if self.spec.metrics_port is not None:
            env[self.spec.env("metrics_port")] = str(self.metrics_port)
        # A local process whose model cannot load exits, so `make run` and the tests say so at
        # once (containers keep it up and unhealthy instead; see ModelServiceSettings).
        env.setdefault(self.spec.env("exit_on_load_failure"), "true")
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
        if self.spec.protocol == "http":
            try:
                with urllib.request.urlopen(
                    f"http://{self.address}{self.spec.ready_path}", timeout=timeout
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


def start_order(names: Iterable[str]) -> list[list[str]]:
    """Waves of the named services: each calls only services of earlier waves (the catalog's
    dependencies), so a caller starts once everything it calls is ready."""
    wanted = set(names)
    pending = [s.name for s in SERVICES if s.name in wanted]
    waves: list[list[str]] = []
    while pending:
        wave = [
            n for n in pending if all(d.service not in pending for d in BY_NAME[n].dependencies)
        ]
        if not wave:
            raise ValueError(f"dependency cycle among {pending}")
        waves.append(wave)
        pending = [n for n in pending if n not in wave]
    return waves


@contextlib.contextmanager
def running_suite(
    processes: Mapping[str, ServiceProcess],
    run_dir: Path,
    envoy_ports: tuple[int, int] | None = None,
    report: Callable[[str], object] = print,
    timeout: float = 600.0,
) -> Iterator[EnvoyProcess | None]:
    """Start ``processes`` (catalog name -> process) in dependency order, yield once every one
    is ready (the Envoy in front, or None), and stop them all afterwards (SIGTERM, callers first).

    Each caller is given its dependencies' addresses; with ``envoy_ports`` (listener, admin), a
    real Envoy fronts every service another one calls and each caller gets only the Envoy address
    (its ``envoy_setting``), as in docker-compose.yml and Kubernetes. Envoy health-checks what it
    fronts, so a caller that is started later (the orchestrator) gets calls once it is SERVING.
    """
    with contextlib.ExitStack() as stack:
        envoy: EnvoyProcess | None = None
        for wave in start_order(processes):
            procs = [processes[name] for name in wave]
            if envoy_ports and envoy is None and any(p.spec.dependencies for p in procs):
                from deploy.envoy.local import running_envoy  # it imports this module

                fronted = {name: [processes[name]] for name in DEPENDED_ON if name in processes}
                listen, admin = envoy_ports
                envoy = stack.enter_context(
                    running_envoy(fronted, run_dir, listen_port=listen, admin_port=admin)
                )
                report(
                    f"  {ENVOY.name:<12} grpc://{envoy.address}   admin http://127.0.0.1:{admin}"
                )
            for proc in procs:
                proc.env = {**_addresses(proc.spec, processes, envoy), **proc.env}
                stack.callback(proc.stop)
                proc.start()
            for proc in procs:
                proc.wait_ready(timeout)
                report(_describe(proc))
        yield envoy


def _addresses(
    spec: Service, processes: Mapping[str, ServiceProcess], envoy: EnvoyProcess | None
) -> dict[str, str]:
    """The settings that tell a caller where the services it calls are."""
    if envoy is not None and spec.envoy_setting:
        return {spec.env(spec.envoy_setting): envoy.address}
    return {
        spec.env(d.setting): processes[d.service].address
        for d in spec.dependencies
        if d.service in processes
    }


def _describe(proc: ServiceProcess) -> str:
    if proc.spec.protocol == "http":
        return (
            f"  {proc.spec.name:<12} http://{proc.address}/v1 (OpenAI-compatible)   "
            f"log {proc.log_path}"
        )
    return (
        f"  {proc.spec.name:<12} grpc://{proc.address}   metrics http://127.0.0.1:"
        f"{proc.metrics_port}/metrics   log {proc.log_path}"
    )


def main() -> int:
    """Start the suite (with CHORUS_ENVOY=1, Envoy between callers and the services they call);
    stop everything on Ctrl-C or SIGTERM."""
    run_dir = ROOT / ".run"
    run_dir.mkdir(exist_ok=True)
    use_envoy = os.environ.get("CHORUS_ENVOY", "") not in ("", "0")
    processes = {
        s.name: ServiceProcess(s, s.port, s.metrics_port or 0, log_path=run_dir / f"{s.name}.log")
        for s in SERVICES
    }
    ports = {p.spec.name: p.port for p in processes.values()}
    if use_envoy:
        ports |= {ENVOY.name: ENVOY.local_port, f"{ENVOY.name} admin": ENVOY.admin_port}
    busy = {name: port for name, port in ports.items() if _port_in_use(port)}
    for name, port in busy.items():
        print(f"port {port} for {name} is already in use", file=sys.stderr)
    if busy:
        return 1

    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    envoy_ports = (ENVOY.local_port, ENVOY.admin_port) if use_envoy else None
    with contextlib.ExitStack() as stack:
        try:
            print("starting Chorus (the first start joins and loads model weights) ...", flush=True)
            report = functools.partial(print, flush=True)
            stack.enter_context(running_suite(processes, run_dir, envoy_ports, report))
            gateway = processes["gateway"]
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


if __name__ == "__main__":
    sys.exit(main())

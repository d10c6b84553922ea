"""One service process on loopback: started with its settings, ready when its health says
SERVING, stopped with SIGTERM so in-flight calls drain.

The building block of the local launcher (``devtools.launcher``), the local Envoy
(``devtools.envoy``) and the tests; it knows the catalog, nothing about either of them.
"""

from __future__ import annotations

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
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.catalog import Service

if TYPE_CHECKING:
    pass


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

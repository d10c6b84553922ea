"""Real Envoy on loopback: rendered from the template, started, read via its admin API.

Used by `make run ENVOY=1` (devtools/launcher.py), by the tests and by `make soak`.

Faults at run time, no restart (``Options.fault_injection``, on in ``Options.local()``)::

    envoy.set_delay("llm", 10_000)            # every call to the llm cluster waits 10 s first
    envoy.set_delay("stt", 500, percent=20)   # a fifth of the STT calls wait 0.5 s
    envoy.set_abort("tts", percent=50)        # half the TTS calls fail at once, UNAVAILABLE
    envoy.clear_faults("llm")                 # or clear_faults() for every cluster
    envoy.active("llm")                       # calls in flight to the llm replicas

A delayed call waits inside Envoy before it is routed: the caller's deadline (grpc-timeout)
ends it there, and it never reaches a replica.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from deploy.envoy.render import FAULT_RUNTIME_PREFIX, Endpoint, Options, envoy_binary, render
from devtools.processes import ServiceProcess, free_port


@dataclass
class EnvoyProcess:
    config: Path
    port: int
    admin_port: int
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def admin(self, path: str, method: str = "GET", timeout: float = 5.0) -> str:
        request = urllib.request.Request(f"http://127.0.0.1:{self.admin_port}{path}", method=method)
        with urllib.request.urlopen(request, timeout=timeout) as r:
            return r.read().decode()

    def host_flags(self, cluster: str) -> dict[int, set[str]]:
        """Port of each host of ``cluster`` -> the health flags Envoy holds for it (empty: healthy).

        Flags as in the admin API's JSON: ``failed_active_health_check``,
        ``failed_outlier_check``, ``pending_active_hc``, ...
        """
        data = json.loads(self.admin("/clusters?format=json"))
        out: dict[int, set[str]] = {}
        for status in data.get("cluster_statuses", []):
            if status["name"] != cluster:
                continue
            for host in status.get("host_statuses", []):
                port = int(host["address"]["socket_address"]["port_value"])
                health = host.get("health_status", {})
                flags = {k for k, v in health.items() if v is True}
                if health.get("eds_health_status", "HEALTHY") != "HEALTHY":
                    flags.add(health["eds_health_status"])
                out[port] = flags
        return out

    def runtime(self, **values: str | int) -> None:
        """Set runtime keys through the admin API (``POST /runtime_modify``); an empty string
        removes a key (back to the config's default). Takes effect on the next request."""
        query = urllib.parse.urlencode({k: str(v) for k, v in values.items()})
        self.admin(f"/runtime_modify?{query}", method="POST")

    def runtime_values(self) -> dict[str, str]:
        """The runtime keys that are set (any layer), as strings."""
        entries = json.loads(self.admin("/runtime")).get("entries", {})
        return {k: str(v.get("final_value", "")) for k, v in entries.items()}

    def set_delay(self, cluster: str, ms: int, percent: int = 100) -> None:
        """Delay ``percent`` % of the calls routed to ``cluster`` by ``ms`` before they leave
        Envoy (the fault filter of ``Options.fault_injection``); no restart, next call on."""
        if not 0 <= percent <= 100 or ms < 0:
            raise ValueError(f"percent in 0..100 and ms >= 0, got {percent}, {ms}")
        key = f"{FAULT_RUNTIME_PREFIX}.{cluster}"
        self.runtime(**{f"{key}.delay_ms": ms, f"{key}.delay_percent": percent})

    def set_abort(
        self, cluster: str, percent: int = 100, grpc_status: int = 14, http_status: int = 503
    ) -> None:
        """Answer ``percent`` % of the calls routed to ``cluster`` at once with ``grpc_status``
        (gRPC clusters; 14 UNAVAILABLE by default) or ``http_status`` (the gateway): never
        retried, since the call never reached a replica."""
        if not 0 <= percent <= 100:
            raise ValueError(f"percent in 0..100, got {percent}")
        key = f"{FAULT_RUNTIME_PREFIX}.{cluster}"
        self.runtime(
            **{
                f"{key}.abort_percent": percent,
                f"{key}.abort_grpc_status": grpc_status,
                f"{key}.abort_http_status": http_status,
            }
        )

    def clear_faults(self, cluster: str | None = None) -> None:
        """Remove the delays and aborts of ``cluster`` (None: of every cluster)."""
        prefix = f"{FAULT_RUNTIME_PREFIX}.{cluster + '.' if cluster else ''}"
        keys = [k for k in self.runtime_values() if k.startswith(prefix)]
        if keys:
            self.runtime(**dict.fromkeys(keys, ""))

    def active(self, cluster: str) -> int:
        """Calls Envoy has in flight to ``cluster``'s replicas now (``upstream_rq_active``)."""
        return self.stat(f"cluster.{cluster}.upstream_rq_active")

    def faults_active(self) -> int:
        """Calls held by a fault filter now (delayed, not yet routed): 0 once every delayed
        call has gone on or its caller gave up."""
        return self.stat("http.chorus.fault.active_faults")

    def stat(self, name: str) -> int:
        """One counter or gauge from /stats (0 when absent)."""
        for line in self.admin(f"/stats?filter=^{name}$").splitlines():
            key, _, value = line.partition(": ")
            if key == name:
                return int(value)
        return 0

    def wait_hosts(
        self,
        cluster: str,
        healthy: Sequence[int],
        unhealthy: Sequence[int] = (),
        timeout: float = 30.0,
    ) -> dict[int, set[str]]:
        """Wait until exactly these hosts are healthy / not healthy; returns the last flags."""
        deadline = time.monotonic() + timeout
        flags: dict[int, set[str]] = {}
        while time.monotonic() < deadline:
            flags = self.host_flags(cluster)
            if all(not flags.get(p, {"absent"}) for p in healthy) and all(
                flags.get(p) for p in unhealthy
            ):
                return flags
            time.sleep(0.1)
        raise TimeoutError(
            f"{cluster}: wanted healthy {healthy}, unhealthy {unhealthy}; got {flags}"
        )


@contextmanager
def running_envoy(
    endpoints: Mapping[str, Sequence[ServiceProcess | Endpoint]],
    log_dir: Path,
    tag: str = "",
    **options: object,
) -> Iterator[EnvoyProcess]:
    """Envoy on 127.0.0.1 in front of ``endpoints`` (kind -> replicas), ready when its admin API
    reports LIVE; stopped (SIGTERM, then SIGKILL) afterwards. ``options`` override ``Options``."""
    suffix = f"-{tag}" if tag else ""
    port = int(options.pop("listen_port", 0)) or free_port()  # type: ignore[call-overload]
    admin_port = int(options.pop("admin_port", 0)) or free_port()  # type: ignore[call-overload]
    eps = {
        kind: [p if isinstance(p, Endpoint) else Endpoint("127.0.0.1", p.port) for p in procs]
        for kind, procs in endpoints.items()
    }
    config = log_dir / f"envoy{suffix}.yaml"
    opts = Options.local(
        listen_port=port,
        admin_port=admin_port,
        access_log_path=str(log_dir / f"envoy{suffix}-access.log"),
        **options,
    )
    config.write_text(render(eps, opts))
    proc = EnvoyProcess(config, port, admin_port, log_dir / f"envoy{suffix}.log")
    with open(proc.log_path, "ab") as log:
        proc.process = subprocess.Popen(
            # One worker thread (2-core machines) and no hot-restart shared memory, so several
            # Envoys (and test runs) can coexist.
            [
                str(envoy_binary()),
                "-c",
                str(config),
                "--concurrency",
                "1",
                "--disable-hot-restart",
                "--log-level",
                "info",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.process.poll() is not None:
                raise RuntimeError(f"envoy exited with {proc.process.returncode}")
            try:
                if proc.admin("/ready", timeout=1).strip() == "LIVE":
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("envoy was not LIVE within 30 s")
            time.sleep(0.05)
        yield proc
    except BaseException:
        print(proc.log_path.read_text(errors="replace")[-5000:])
        raise
    finally:
        proc.process.terminate()
        try:
            proc.process.wait(10)
        except subprocess.TimeoutExpired:
            proc.process.kill()
            proc.process.wait()

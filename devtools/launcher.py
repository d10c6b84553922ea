"""Start the Chorus suite as local processes on loopback: ``make run``.

Each service of the catalog (``services/catalog.py``) runs in its own process, exactly as it
would in a container; the launcher starts a service once every service it calls reports SERVING
on the official health service, prints the addresses, and on Ctrl-C (or SIGTERM) stops them all
with SIGTERM so in-flight calls drain. With ``CHORUS_ENVOY=1`` a real Envoy sits between the
callers and the services they call, as in the containers. Tests start services with the same
``ServiceProcess`` class (``devtools.processes``), and a whole suite with ``running_suite``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path

from devtools.envoy import EnvoyProcess, running_envoy
from devtools.processes import ROOT, ServiceProcess, free_port
from services.catalog import BY_NAME, DEPENDED_ON, ENVOY, SERVICES, Service


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


def main(argv: Sequence[str] | None = None) -> int:
    """Start the suite (with CHORUS_ENVOY=1, Envoy between callers and the services they call);
    stop everything on Ctrl-C or SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m devtools.launcher", description=__doc__)
    parser.add_argument("--run-dir", type=Path, default=ROOT / ".run", help="logs and configs")
    parser.add_argument(
        "--free-ports",
        action="store_true",
        help="any free loopback ports instead of the catalog's (tests; a second suite)",
    )
    args = parser.parse_args(argv)
    run_dir: Path = args.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    use_envoy = os.environ.get("CHORUS_ENVOY", "") not in ("", "0")

    def pick(default: int) -> int:
        return free_port() if args.free_ports else default

    processes = {
        s.name: ServiceProcess(
            s,
            pick(s.port),
            pick(s.metrics_port) if s.metrics_port else 0,
            log_path=run_dir / f"{s.name}.log",
        )
        for s in SERVICES
    }
    ports = {p.spec.name: p.port for p in processes.values()}
    envoy_ports = (pick(ENVOY.local_port), pick(ENVOY.admin_port)) if use_envoy else None
    if envoy_ports:
        ports |= {ENVOY.name: envoy_ports[0], f"{ENVOY.name} admin": envoy_ports[1]}
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
    with contextlib.ExitStack() as stack:
        try:
            print("starting Chorus (the first start joins and loads model weights) ...", flush=True)
            report = functools.partial(print, flush=True)
            stack.enter_context(running_suite(processes, run_dir, envoy_ports, report))
            gateway = processes["gateway"]
            print(f"\nChorus is SERVING: open http://{gateway.address}/api/interface/", flush=True)
            print("Press Ctrl-C to stop.", flush=True)
            # Ctrl-C reaches every process of the terminal's group at once: the services stop
            # on their own and the launcher waits for them. From here on a flag, not
            # KeyboardInterrupt (which still interrupts a start), so that a service exiting on
            # the same Ctrl-C is never taken for a crash (exit 1: "make: *** Error 1").
            signal.signal(signal.SIGINT, stop)
            while not stopping:
                if any(p.process and p.process.poll() is not None for p in processes.values()):
                    time.sleep(0.5)  # a signal to the whole group may still be on its way here
                    if stopping:
                        break
                    print(
                        f"a service exited; stopping the rest (see {run_dir}/*.log)",
                        file=sys.stderr,
                    )
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

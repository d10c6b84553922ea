"""Real Envoy on loopback for tests (the same code `make run ENVOY=1` uses), and replicas of a
service to put behind it."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from devtools.envoy import EnvoyProcess, running_envoy
from devtools.processes import ServiceProcess, free_port
from services.catalog import BY_NAME

__all__ = ["EnvoyProcess", "replicas", "running_envoy"]


@contextmanager
def replicas(
    kinds: Mapping[str, tuple[Mapping[str, str], int]], logs: Path, tag: str = "envoy"
) -> Iterator[dict[str, list[ServiceProcess]]]:
    """``count`` replicas of each kind (``kind -> (env, count)``), all started at once (they
    load in parallel) and all SERVING when yielded; stopped afterwards (SIGTERM)."""
    procs = {
        name: [
            ServiceProcess(
                BY_NAME[name],
                free_port(),
                free_port(),
                env=dict(env),
                log_path=logs / f"{name}-{tag}-{i}.log",
            )
            for i in range(count)
        ]
        for name, (env, count) in kinds.items()
    }
    every = [p for group in procs.values() for p in group]
    try:
        for p in every:
            p.start()
        for p in every:
            p.wait_ready()
        yield procs
    except BaseException:
        for p in every:
            if p.log_path and p.log_path.exists():
                print(f"--- {p.log_path.name}", p.log_path.read_text(errors="replace")[-3000:])
        raise
    finally:
        for p in every:
            p.stop(timeout=10)

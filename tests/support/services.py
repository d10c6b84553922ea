"""Start real service processes on loopback for tests, one per configuration per session."""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from devtools.processes import ServiceProcess, free_port
from services.catalog import BY_NAME


@contextmanager
def running(
    name: str, env: Mapping[str, str], log_dir: Path, tag: str = ""
) -> Iterator[ServiceProcess]:
    """A started, SERVING service process; SIGTERM-stopped afterwards."""
    spec = BY_NAME[name]
    stem = f"{name}{'-' + tag if tag else ''}"
    log_path = log_dir / f"{stem}.log"
    # Every test service writes its spans to a file, so a test can follow one trace across them.
    env = {spec.env("trace_file"): str(log_dir / f"{stem}.spans.jsonl"), **env}
    proc = ServiceProcess(spec, free_port(), free_port(), env=env, log_path=log_path)
    with started(proc) as ready:
        yield ready


@contextmanager
def started(proc: ServiceProcess, timeout: float = 180.0) -> Iterator[ServiceProcess]:
    """Start ``proc``, yield it once SERVING, stop it (SIGTERM) afterwards; on a failure the
    tail of its log is printed, so the test report says why."""
    proc.start()
    try:
        proc.wait_ready(timeout)
        yield proc
    except BaseException:
        log = proc.log_path
        print(log.read_text(errors="replace")[-5000:] if log and log.exists() else "(no log)")
        raise
    finally:
        proc.stop()


def scrape(proc: ServiceProcess) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{proc.metrics_port}/metrics", timeout=5) as r:
        return r.read().decode()


def metric_value(text: str, name: str, **labels: str) -> float:
    """Sum of a metric's samples whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        match = re.match(rf"{re.escape(name)}(?:\{{(.*)\}})? (\S+)$", line)
        if not match:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(match.group(2))
    return total

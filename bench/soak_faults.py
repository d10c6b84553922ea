"""Faults injected while the users' load runs, each returning what it did and what its own
check saw; what the users saw meanwhile is read from their records afterwards (``judge``).

- ``kill_replica``: SIGKILL replica 0 of a model kind, once it is busy with a call; start it
  again on the same port after a pause; recovered when Envoy routes to both replicas again.
  Idempotent calls (transcriptions, syntheses) must lose nothing (Envoy retries them on the
  other replica); turns in flight may end with a stage error, never without an answer.
- ``slow_downstream``: Envoy's fault filter delays every LLM call beyond the orchestrator's
  reply deadline: turns must end with a deadline error, and the calls Envoy holds must not
  pile up (they drop as their callers give up, and none are left once the delay is lifted).
- ``restart_orchestrator``: SIGTERM the orchestrator while live sessions are open, start it
  again on the same port: the sessions are closed with a close frame, the clients reconnect.
- ``full_disk``: fill the artifact store's file system (a tmpfs): a stored turn still gets its
  text, plus a clear storage error.
"""

from __future__ import annotations

import errno
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

import requests

from bench.soak_load import Load
from bench.soak_report import Fault, Record
from bench.soak_suite import STAGE_TIMEOUT_SECONDS, SoakSuite
from tests.support.services import metric_value, scrape

__all__ = ["Injected", "judge", "schedule"]

GRACE = 10.0
"""Requests that start up to this long after a fault's recovery still count as during it."""
SPACING = 2 * GRACE
"""Least time between one fault's recovery and the next fault, so their windows stay apart."""
IDEMPOTENT = ("transcription", "speech")
FULL_DISK_SECONDS = 20.0
DELAY_CLUSTER = "llm"
DELAY_SECONDS = 30


@dataclass
class Injected:
    name: str
    start: float
    end: float
    outcome: str
    passed: bool
    kinds_must_not_fail: tuple[str, ...] = ()
    skipped: bool = False


def _wait(check: Callable[[], bool], timeout: float, every: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(every)
    return False


def kill_replica(suite: SoakSuite, load: Load, kind: str) -> Injected:
    victim, other = suite.replicas[kind]
    name = f"{kind}-0"

    def busy() -> bool:
        try:
            text = scrape(victim)
        except OSError:
            return False
        return any(
            metric_value(text, "chorus_grpc_in_flight", method=m) > 0 for m in _methods(text)
        )

    was_busy = _wait(busy, 30, 0.05)
    retries = suite.envoy.stat(f"cluster.{kind}.upstream_rq_retry")
    start = load.clock()
    suite.expected_down.add(name)
    assert victim.process is not None
    victim.process.kill()
    victim.process.wait(10)
    time.sleep(5)
    victim.observed_health.clear()
    victim.start()
    victim.wait_ready(300)
    suite.expected_down.discard(name)
    suite.envoy.wait_hosts(kind, healthy=[victim.port, other.port], timeout=60)
    end = load.clock()
    retried = suite.envoy.stat(f"cluster.{kind}.upstream_rq_retry") - retries
    return Injected(
        f"kill -9 {name}",
        start,
        end,
        f"killed {'mid-call' if was_busy else 'idle'}; Envoy retried {retried} calls; "
        "back and routed to",
        True,
        IDEMPOTENT,
    )


def _methods(metrics: str) -> set[str]:
    """The model methods a service's metrics name (health checks left out)."""
    found = re.findall(r'chorus_grpc_in_flight\{method="([^"]+)"\}', metrics)
    return {m for m in found if not m.startswith("/grpc.health")}


def slow_downstream(suite: SoakSuite, load: Load) -> Injected:
    envoy = suite.envoy
    start = load.clock()
    envoy.set_delay(DELAY_CLUSTER, DELAY_SECONDS * 1000)
    held = 0
    until = time.monotonic() + DELAY_SECONDS
    while time.monotonic() < until:
        held = max(held, envoy.faults_active())
        time.sleep(0.5)
    envoy.clear_faults(DELAY_CLUSTER)
    drained = _wait(lambda: envoy.faults_active() == 0, STAGE_TIMEOUT_SECONDS + 10)
    end = load.clock()
    return Injected(
        f"Envoy delay {DELAY_SECONDS} s on {DELAY_CLUSTER}",
        start,
        end,
        f"held at most {held} calls at once; "
        + ("none held after the delay was lifted" if drained else "calls still held: PILED UP"),
        drained,
    )


def restart_orchestrator(suite: SoakSuite, load: Load) -> Injected:
    live = _wait(lambda: load.active("live") > 0, 60, 0.1)
    open_sessions = load.active("live")
    start = load.clock()
    suite.expected_down.add("orchestrator")
    suite.orchestrator.stop(30)
    suite.orchestrator.observed_health.clear()
    suite.orchestrator.start()
    suite.orchestrator.wait_ready(120)
    suite.expected_down.discard("orchestrator")
    end = load.clock()
    # The clients that were closed on reconnect within load.RECONNECT_FOR; give them that long.
    time.sleep(GRACE)
    return Injected(
        "restart orchestrator (SIGTERM, same port)",
        start,
        end,
        f"{open_sessions if live else 0} live sessions open at SIGTERM",
        True,
    )


def full_disk(suite: SoakSuite, load: Load) -> Injected:
    if not suite.artifacts_tmpfs:
        now = load.clock()
        return Injected(
            "artifact store's disk full", now, now, "skipped: no tmpfs (needs root)", True, (), True
        )
    filler = suite.artifacts / "filler"
    start = load.clock()
    with open(filler, "wb") as out:
        block = bytes(1024 * 1024)
        try:
            while True:
                out.write(block)
                out.flush()
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
    try:
        text, errors, status = _stored_turn(suite.url)
        # Held a while, so the users' own stored turns meet the full disk too.
        time.sleep(max(0.0, start + FULL_DISK_SECONDS - load.clock()))
    finally:
        filler.unlink()
    end = load.clock()
    # The store's error says the disk is full; it is not fatal: the reply went on.
    full = [e for e in errors if "(fatal)" not in e and ("full" in e or "space" in e)]
    passed = status == 200 and bool(text) and bool(full)
    return Injected(
        "artifact store's disk full",
        start,
        end,
        f"turn text {'arrived' if text else 'MISSING'} ({len(text)} chars); "
        f"error events: {'; '.join(errors) or 'NONE'}",
        passed,
    )


def _stored_turn(url: str) -> tuple[str, list[str], int]:
    """A text turn in a new stored conversation: (reply text, error events, HTTP status)."""
    http = requests.Session()
    made = http.post(f"{url}/v1/conversations", json={"title": "full disk"}, timeout=30)
    body = {"text": "What is the capital of France?", "max_tokens": 16}
    body["conversation_id"] = made.json()["id"]
    text, errors = "", []
    with http.post(f"{url}/api/turns", json=body, stream=True, timeout=120) as response:
        if response.status_code != 200:
            return "", [response.text[:200]], response.status_code
        event = ""
        for line in response.iter_lines(decode_unicode=True):
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data = json.loads(line[5:])
                if event == "reply_final":
                    text = str(data.get("text", ""))
                elif event == "error":
                    fatal = " (fatal)" if data.get("fatal") else ""
                    what = f"{data.get('stage')}/{data.get('code')}{fatal}"
                    errors.append(f"{what}: {data.get('message', '')}")
    return text, errors, 200


def schedule(suite: SoakSuite, load: Load) -> list[tuple[str, Callable[[], Injected]]]:
    """The faults in the order they run."""
    faults: list[tuple[str, Callable[[], Injected]]] = [
        (f"kill {kind}", lambda kind=kind: kill_replica(suite, load, kind))  # type: ignore[misc]
        for kind in ("stt", "tts", "llm", "image")
    ]
    faults += [
        ("restart orchestrator", lambda: restart_orchestrator(suite, load)),
        ("full disk", lambda: full_disk(suite, load)),
        ("slow downstream", lambda: slow_downstream(suite, load)),
    ]
    return faults


def judge(injected: Injected, records: list[Record]) -> Fault:
    """The fault with what the users saw: requests that started during it (up to GRACE after
    its recovery); it passed when its own check did, nothing was lost, the kinds that must not
    fail did not, and every live client closed on during it got through again."""
    window = [r for r in records if injected.start <= r.start <= injected.end + GRACE]
    seen: dict[str, int] = {}
    for r in window:
        if not r.ok or "warn" in r.status:
            key = f"{r.kind} {r.status}"
            seen[key] = seen.get(key, 0) + 1
    lost = [r for r in window if r.lost]
    failed = [r for r in window if r.kind in injected.kinds_must_not_fail and not r.ok]
    outcome = injected.outcome
    # A client closed on reconnects until answered: its first close, its tries, its answer.
    closed = [r for r in window if r.kind == "live" and r.status.startswith("close 10")]
    closed = [r for r in closed if r.status != "close 1000" and not r.detail.startswith("re")]
    back = [r for r in records if r.kind == "live" and r.ok and r.detail.startswith("reconnect")]
    back = [r for r in back if r.start >= injected.start]
    if closed:
        outcome += f"; {len(closed)} live clients closed on, {len(back)} reconnected and answered"
    if failed:
        outcome += f"; {len(failed)} {'/'.join(injected.kinds_must_not_fail)} FAILED"
    if lost:
        outcome += f"; {len(lost)} LOST"
    passed = injected.passed and not lost and not failed and len(back) >= len(closed)
    return Fault(
        name=injected.name,
        start=injected.start,
        end=injected.end,
        outcome=outcome,
        passed=passed,
        errors=seen,
        requests=len(window),
        skipped=injected.skipped,
    )

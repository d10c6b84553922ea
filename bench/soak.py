"""``make soak``: load and soak of the whole suite on loopback, with faults under that load.

Starts the suite (``bench/soak_suite.py``: two replicas of each model service behind a real
Envoy, the orchestrator with its stores, the gunicorn gateway), runs simulated users
(``bench/soak_load.py``) for a set number of minutes, samples RSS, open files and threads of
every process (``bench/soak_sample.py``), injects faults after warm-up
(``bench/soak_faults.py``), and writes the report (``bench/soak_report.py``) into the run's
folder with the logs, the samples and every request.

Knobs (environment; the Makefile passes its variables of the same names):
SOAK_USERS (6), SOAK_MINUTES (10), SOAK_FAULTS (1; 0: none), SOAK_OUT (the run's folder;
default .run/soak/<UTC time>), SOAK_WARMUP_SECONDS (the smaller of 120 and a quarter of the
run), SOAK_SAMPLE_SECONDS (5), SOAK_FAULT_ONLY (comma-separated words picking faults by
name, for development: ``stt,orchestrator``).

Exit status 1 when a request was lost, a process crashed (other than those the faults
stopped), a fault's check failed, or a process grew beyond the bounds (``BOUNDS``)."""

from __future__ import annotations

import datetime
import os
import signal
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from types import FrameType
from typing import Any

from bench.soak_faults import SPACING, Injected, judge, schedule
from bench.soak_load import DEADLINES, Clip, Load
from bench.soak_report import (
    MIB,
    Bounds,
    errors_by_status,
    growths,
    latencies,
    verdicts,
    write,
)
from bench.soak_sample import Sampler
from bench.soak_suite import SoakSuite, soak_suite
from devtools.processes import ROOT
from tests.support.session import RATE, spoken
from tests.support.speech import wav_bytes

BOUNDS = Bounds(rss_mib=64, rss_fraction=0.25, fds=32, threads=16)
"""After warm-up, from the first minute's median to the last minute's. Open files and threads
move with the load (a gRPC connection, a socket, a worker thread per request in flight), so
their bounds leave room for one burst of users; a leak grows without end and breaks them in a
long run."""
CLIP_TEXTS = ["What is the capital of France?", "What color is the sky?"]


def _env_number(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    return float(raw) if raw else default


def _clips(folder: Path) -> list[Clip]:
    out = []
    for text in CLIP_TEXTS:
        clip = spoken(text, folder)
        out.append(Clip(text, wav_bytes(clip.pcm, RATE), clip.bytes()))
    return out


class _Stop(Exception):
    pass


def _on_term(signum: int, frame: FrameType | None) -> None:
    raise _Stop(f"signal {signum}")


def _run_faults(
    faults: list[tuple[str, Callable[[], Injected]]],
    first_at: float,
    last_by: float,
    clock: Callable[[], float],
    done: list[Injected],
    stop: threading.Event,
) -> None:
    """Each fault at its turn, spread evenly over [first_at, last_by], and at least SPACING
    after the one before recovered."""
    gap = (last_by - first_at) / max(1, len(faults))
    for n, (name, inject) in enumerate(faults):
        not_before = max(first_at + n * gap, done[-1].end + SPACING if done else 0.0)
        while clock() < not_before and not stop.is_set():
            time.sleep(0.5)
        if stop.is_set():
            return
        print(f"[{clock():7.1f}s] fault: {name}", flush=True)
        started = clock()
        try:
            done.append(inject())
        except Exception as exc:  # noqa: BLE001 (the run goes on and reports it)
            traceback.print_exc()
            done.append(Injected(name, started, clock(), f"fault driver error: {exc!r}", False))
        print(f"[{clock():7.1f}s]   -> {done[-1].outcome}", flush=True)


def main() -> int:
    users = int(_env_number("SOAK_USERS", 6))
    minutes = _env_number("SOAK_MINUTES", 10)
    with_faults = os.environ.get("SOAK_FAULTS", "1").strip() not in ("0", "", "false", "no")
    duration = minutes * 60
    warmup = _env_number("SOAK_WARMUP_SECONDS", min(120.0, duration / 4))
    every = _env_number("SOAK_SAMPLE_SECONDS", 5)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    out = os.environ.get("SOAK_OUT", "").strip()
    folder = Path(out) if out else ROOT / ".run" / "soak" / stamp
    folder.mkdir(parents=True, exist_ok=True)
    print(f"soak: {users} users, {minutes:g} min, faults {'on' if with_faults else 'off'}")
    print(f"soak: run folder {folder}", flush=True)
    signal.signal(signal.SIGTERM, _on_term)

    with tempfile.TemporaryDirectory() as tmp:
        clips = _clips(Path(tmp))
    crashes: list[str] = []
    injected: list[Injected] = []
    try:
        with soak_suite(folder) as suite:
            print(f"soak: suite SERVING, gateway {suite.url}", flush=True)
            summary, records = _soak(
                suite, clips, users, duration, warmup, every, with_faults, crashes, injected
            )
    except (KeyboardInterrupt, _Stop) as exc:
        print(f"soak: stopped ({exc!r}); processes stopped", file=sys.stderr)
        return 130
    summary |= {
        "started": stamp,
        "users": users,
        "minutes": minutes,
        "warmup_seconds": warmup,
        "folder": str(folder),
    }
    report = write(folder, summary, records)
    print(report.read_text())
    print(f"soak: report {report}")
    return 0 if summary["passed"] else 1


def _soak(
    suite: SoakSuite,
    clips: list[Clip],
    users: int,
    duration: float,
    warmup: float,
    every: float,
    with_faults: bool,
    crashes: list[str],
    injected: list[Injected],
) -> tuple[dict[str, Any], list[Any]]:
    t0 = time.monotonic()

    def clock() -> float:
        return time.monotonic() - t0

    samples_file = suite.folder / "samples.jsonl"
    sampler = Sampler(suite.pids, samples_file, clock).start(every)
    load = Load(suite.url, clips, clock)
    load.start(users)
    stop_faults = threading.Event()
    faults_thread = None
    if with_faults:
        faults = schedule(suite, load)
        only = [w.strip() for w in os.environ.get("SOAK_FAULT_ONLY", "").split(",") if w.strip()]
        if only:
            faults = [f for f in faults if any(w in f[0] for w in only)]
        faults_thread = threading.Thread(
            target=_run_faults,
            args=(
                faults,
                warmup + 30,
                duration - 90,
                clock,
                injected,
                stop_faults,
            ),
            name="soak-faults",
            daemon=True,
        )
        faults_thread.start()
    seen_dead: set[str] = set()
    last_report = 0.0
    try:
        while clock() < duration or (faults_thread and faults_thread.is_alive()):
            if faults_thread and clock() > duration + 600:
                stop_faults.set()
                crashes.append("fault driver still running 10 min after the run's end")
                break
            for name, code in suite.dead().items():
                if name not in seen_dead:
                    seen_dead.add(name)
                    crashes.append(f"{name} exited with {code} at {clock():.0f} s")
                    print(f"[{clock():7.1f}s] CRASH: {crashes[-1]}", flush=True)
            if clock() - last_report >= 30:
                last_report = clock()
                done = list(load.records)
                bad = sum(1 for r in done if not r.ok)
                print(f"[{clock():7.1f}s] {len(done)} requests, {bad} not ok", flush=True)
            time.sleep(1)
    finally:
        load_end = clock()
        stuck = load.join(max(DEADLINES.values()) + 30)
        sampler.stop()
    if stuck:
        crashes.append(f"users still inside a request past every deadline: {stuck}")
    workers = [n for n in sampler.children_seen.get("gateway", {}).values()]
    if len(workers) > 2:
        crashes.append(f"gateway workers replaced (seen {len(workers)}: {', '.join(workers)})")

    records = load.records
    faults = [judge(i, records) for i in injected]
    gs = growths(sampler.samples, warmup, load_end)
    lines = verdicts(gs, BOUNDS)
    lat = latencies(records)
    lost = sum(int(v["lost"]) for v in lat.values())
    judged = [g for g in gs if g.judged]
    top = max(judged, key=lambda g: g.rss_growth, default=None)
    memory = (
        f"largest RSS growth {top.rss_growth / MIB:+.1f} MiB ({top.name}); "
        f"bounds {'held' if all(ok for _, ok in lines) else 'BROKEN'}"
        if top
        else "no process lived through a warm-up"
    )
    checks = [
        f"requests lost: {lost}: {'PASS' if lost == 0 else 'FAIL'}",
        f"crashes: {len(crashes)}: {'PASS' if not crashes else 'FAIL'}",
    ]
    if faults:
        failed = [f.name for f in faults if not f.passed and not f.skipped]
        checks.append(
            f"faults failed: {len(failed)}{' (' + ', '.join(failed) + ')' if failed else ''}: "
            f"{'PASS' if not failed else 'FAIL'}"
        )
    passed = all(ok for _, ok in lines) and all(c.endswith("PASS") for c in checks)
    summary = {
        "passed": passed,
        "latencies": lat,
        "errors": errors_by_status(records),
        "faults": [asdict(f) for f in faults],
        "crashes": crashes,
        "growth": [asdict(g) for g in gs],
        "bounds": BOUNDS.describe(),
        "verdicts": lines,
        "checks": checks,
        "memory_growth": memory,
        "samples_file": samples_file.name,
        "load_seconds": load_end,
    }
    return summary, records


if __name__ == "__main__":
    sys.exit(main())

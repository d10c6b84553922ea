"""The soak's pure half: what one request and one process sample record, percentiles, growth of
each process after warm-up, the bounds' verdicts and the Markdown report. No I/O besides what
``write`` is given; the fast tests (tests/fast/test_soak_report.py) run all of it in-process."""

from __future__ import annotations

import json
import math
import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "Bounds",
    "Fault",
    "Growth",
    "Record",
    "Sample",
    "errors_by_status",
    "growths",
    "latencies",
    "percentile",
    "render",
    "verdicts",
]

MIB = 1024 * 1024


@dataclass
class Record:
    """One simulated request, as its user saw it."""

    kind: str
    start: float
    """Seconds since the load began."""
    seconds: float
    """To the end (the last event of a stream, the whole body of an answer)."""
    status: str
    """``200``, ``503``, ``200 error:LLM/UNAVAILABLE`` (a stream that ended with an error
    event), ``close 1013``, ``refused``..."""
    ok: bool
    lost: bool = False
    """No answer at all: a hang past the deadline, a reset without a status, a stream cut
    without its end."""
    detail: str = ""
    first_event: float | None = None
    """Seconds to the first audio: a turn's first ``audio_chunk`` event, a live session's first
    audio delta after the end of its spoken question."""


@dataclass
class Sample:
    """One process at one moment."""

    t: float
    """Seconds since the load began."""
    name: str
    pid: int
    rss: int
    fds: int
    threads: int


@dataclass
class Fault:
    """One injected fault and what the users saw while it lasted."""

    name: str
    start: float
    end: float
    """When the system was whole again (the process back and routed to, the delay lifted)."""
    outcome: str
    """What the fault's own check saw (``turn text arrived, storage error ...``)."""
    passed: bool
    errors: dict[str, int] = field(default_factory=dict)
    """``kind status`` -> count, for requests that started during [start, end + grace]."""
    requests: int = 0
    """Requests that started in that window."""
    skipped: bool = False
    """Not injected (what it needs is missing here); neither survived nor failed."""

    @property
    def recovery(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class Bounds:
    """After warm-up, from the first minute's median to the last minute's: no process may grow
    more than these. RSS: ``rss_mib`` or ``rss_fraction`` of its level, whichever is larger."""

    rss_mib: float = 64.0
    rss_fraction: float = 0.25
    fds: int = 32
    threads: int = 16

    def describe(self) -> str:
        return (
            f"RSS +{self.rss_mib:.0f} MiB or +{self.rss_fraction:.0%} (the larger), "
            f"open files +{self.fds}, threads +{self.threads}"
        )


@dataclass
class Growth:
    """One process incarnation (name, pid): its level after warm-up and at the end."""

    name: str
    pid: int
    rss_base: int
    rss_end: int
    rss_max: int
    fds_base: float
    fds_end: float
    threads_base: float
    threads_end: float
    judged: bool
    """False when the incarnation did not live through a warm-up and two windows after it (a
    replica a fault restarted late): shown, not judged."""

    @property
    def rss_growth(self) -> int:
        return self.rss_end - self.rss_base

    @property
    def fds_growth(self) -> float:
        return self.fds_end - self.fds_base

    @property
    def threads_growth(self) -> float:
        return self.threads_end - self.threads_base


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by linear interpolation between closest ranks (numpy's
    default); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def latencies(records: Iterable[Record]) -> dict[str, dict[str, float]]:
    """Per kind: requests, ok, errors, lost, p50/p95/p99 of the ok ones (seconds) and the median
    time to the first event where there is one."""
    by_kind: dict[str, list[Record]] = {}
    for r in records:
        by_kind.setdefault(r.kind, []).append(r)
    out: dict[str, dict[str, float]] = {}
    for kind in sorted(by_kind):
        rs = by_kind[kind]
        good = [r.seconds for r in rs if r.ok]
        firsts = [r.first_event for r in rs if r.ok and r.first_event is not None]
        out[kind] = {
            "requests": len(rs),
            "ok": len(good),
            "errors": sum(1 for r in rs if not r.ok and not r.lost),
            "lost": sum(1 for r in rs if r.lost),
            "p50": percentile(good, 50),
            "p95": percentile(good, 95),
            "p99": percentile(good, 99),
            "first_p50": percentile(firsts, 50),
        }
    return out


def errors_by_status(records: Iterable[Record]) -> dict[str, int]:
    """``kind status`` -> count, for every request that did not end as intended."""
    return dict(sorted(Counter(f"{r.kind} {r.status}" for r in records if not r.ok).items()))


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else math.nan


def growths(
    samples: Iterable[Sample], warmup: float, load_end: float, window: float = 60.0
) -> list[Growth]:
    """Each incarnation's growth: the median of its samples in the ``window`` after its
    warm-up (``warmup`` seconds after the load began, or after it was born when a fault
    restarted it) against the median of its last ``window`` before ``load_end``; RSS max over
    everything after its warm-up."""
    by_proc: dict[tuple[str, int], list[Sample]] = {}
    for s in samples:
        by_proc.setdefault((s.name, s.pid), []).append(s)
    for ss in by_proc.values():
        ss.sort(key=lambda s: s.t)
    out = []
    # Each name's incarnations in the order they were born (pids wrap: not by pid).
    for (name, pid), ss in sorted(by_proc.items(), key=lambda kv: (kv[0][0], kv[1][0].t)):
        born = ss[0].t
        settled = max(warmup, born + warmup) if born > 0 else warmup
        last = min(ss[-1].t, load_end)
        after = [s for s in ss if settled <= s.t <= last]
        base = [s for s in after if s.t <= settled + window]
        end = [s for s in after if s.t >= last - window]
        judged = bool(base) and bool(end) and last - settled >= 2 * window
        if not after:
            after = ss[-1:]
            base = end = after
        out.append(
            Growth(
                name=name,
                pid=pid,
                rss_base=int(_median([s.rss for s in base])),
                rss_end=int(_median([s.rss for s in end])),
                rss_max=max(s.rss for s in after),
                fds_base=_median([s.fds for s in base]),
                fds_end=_median([s.fds for s in end]),
                threads_base=_median([s.threads for s in base]),
                threads_end=_median([s.threads for s in end]),
                judged=judged,
            )
        )
    return out


def verdicts(gs: Iterable[Growth], bounds: Bounds) -> list[tuple[str, bool]]:
    """One line per bound: which judged processes broke it (passed when none did)."""
    judged = [g for g in gs if g.judged]
    rss = [
        g
        for g in judged
        if g.rss_growth > max(bounds.rss_mib * MIB, bounds.rss_fraction * g.rss_base)
    ]
    fds = [g for g in judged if g.fds_growth > bounds.fds]
    threads = [g for g in judged if g.threads_growth > bounds.threads]

    def line(what: str, limit: str, broke: list[Growth], amount: Any) -> tuple[str, bool]:
        if not broke:
            return f"{what} of every process ({len(judged)} judged) within {limit}: PASS", True
        names = ", ".join(f"{g.name} ({amount(g)})" for g in broke)
        return f"{what} beyond {limit}: {names}: FAIL", False

    return [
        line(
            "RSS growth",
            f"+{bounds.rss_mib:.0f} MiB or +{bounds.rss_fraction:.0%}",
            rss,
            lambda g: f"+{g.rss_growth / MIB:.1f} MiB",
        ),
        line("open files growth", f"+{bounds.fds}", fds, lambda g: f"+{g.fds_growth:g}"),
        line("threads growth", f"+{bounds.threads}", threads, lambda g: f"+{g.threads_growth:g}"),
    ]


def _survived(faults: list[Fault]) -> str:
    injected = [f for f in faults if not f.skipped]
    text = f"{sum(f.passed for f in injected)} of {len(injected)}"
    skipped = [f.name for f in faults if f.skipped]
    return text + (f" (skipped: {', '.join(skipped)})" if skipped else "")


def _s(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2f}"


def render(summary: dict[str, Any]) -> str:
    """The Markdown report of one run, from the summary ``bench/soak.py`` builds (the same dict
    is written beside it as JSON)."""
    lat: dict[str, dict[str, float]] = summary["latencies"]
    total = sum(int(v["requests"]) for v in lat.values())
    lost = sum(int(v["lost"]) for v in lat.values())
    faults = [Fault(**f) for f in summary["faults"]]
    gs = [Growth(**g) for g in summary["growth"]]
    per_kind = ", ".join(f"{k} {int(v['requests'])}" for k, v in lat.items())
    lines = [
        f"# Soak run {summary['started']}",
        "",
        f"Verdict: **{'PASS' if summary['passed'] else 'FAIL'}**",
        "",
        "| load held | value |",
        "|---|---|",
        f"| users | {summary['users']} |",
        f"| minutes | {summary['minutes']:g} (warm-up {summary['warmup_seconds']:.0f} s) |",
        f"| requests | {total} ({per_kind}) |",
        f"| faults survived | {_survived(faults)} |",
        f"| crashes | {len(summary['crashes'])} |",
        f"| requests lost | {lost} |",
        f"| memory growth after warm-up | {summary['memory_growth']} |",
        "",
        "## Latency per kind (seconds, requests that ended as intended)",
        "",
        "To the end: a turn's `done` event, a whole answer; a live session from the end of its",
        "spoken question to `response.done`. First audio: a turn's first `audio_chunk`, a live",
        "session's first audio delta.",
        "",
        "| kind | requests | ok | errors | lost | p50 | p95 | p99 | first audio p50 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for kind, v in lat.items():
        lines.append(
            f"| {kind} | {int(v['requests'])} | {int(v['ok'])} | {int(v['errors'])} | "
            f"{int(v['lost'])} | {_s(v['p50'])} | {_s(v['p95'])} | {_s(v['p99'])} | "
            f"{_s(v['first_p50'])} |"
        )
    lines += ["", "## Errors by kind and status", ""]
    errors: dict[str, int] = summary["errors"]
    if errors:
        lines += ["| kind status | count |", "|---|---:|"]
        lines += [f"| {k} | {n} |" for k, n in errors.items()]
    else:
        lines.append("None.")
    lines += ["", "## Faults", ""]
    if faults:
        lines += [
            "| fault | at (s) | recovered after (s) | requests in window | users saw | check | |",
            "|---|---:|---:|---:|---|---|---|",
        ]
        for f in faults:
            saw = ", ".join(f"{k} x{n}" for k, n in f.errors.items()) or "no errors"
            lines.append(
                f"| {f.name} | {f.start:.0f} | {f.recovery:.1f} | {f.requests} | {saw} | "
                f"{f.outcome} | {'skipped' if f.skipped else 'ok' if f.passed else 'FAILED'} |"
            )
    else:
        lines.append("None injected (SOAK_FAULTS=0).")
    lines += ["", "## Crashes", ""]
    lines += [f"- {c}" for c in summary["crashes"]] or ["None."]
    lines += [
        "",
        "## Processes after warm-up",
        "",
        "Level: median over the first minute after warm-up; end: median over the last minute.",
        "",
        "| process | pid | RSS level MiB | RSS end MiB | growth MiB | RSS max MiB | "
        "open files | threads | judged |",
        "|---|---:|---:|---:|---:|---:|---|---|---|",
    ]
    for g in gs:
        lines.append(
            f"| {g.name} | {g.pid} | {g.rss_base / MIB:.1f} | {g.rss_end / MIB:.1f} | "
            f"{g.rss_growth / MIB:+.1f} | {g.rss_max / MIB:.1f} | "
            f"{g.fds_base:g} -> {g.fds_end:g} | {g.threads_base:g} -> {g.threads_end:g} | "
            f"{'yes' if g.judged else 'no (too short after warm-up)'} |"
        )
    lines += ["", "## Bounds", "", f"Stated: {summary['bounds']}", ""]
    lines += [f"- {text}" for text, _ in summary["verdicts"]]
    lines += [f"- {text}" for text in summary.get("checks", [])]
    lines += ["", f"Samples: `{summary['samples_file']}`; logs in this folder.", ""]
    return "\n".join(lines)


def write(folder: Path, summary: dict[str, Any], records: Sequence[Record]) -> Path:
    """report.md, summary.json and requests.jsonl into ``folder``; the report's path."""
    (folder / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    with open(folder / "requests.jsonl", "w") as out:
        for r in records:
            out.write(json.dumps(asdict(r)) + "\n")
    report = folder / "report.md"
    report.write_text(render(summary))
    return report

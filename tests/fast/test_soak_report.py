"""The soak's pure logic (bench/soak_report.py), in-process: percentiles, per-kind latencies and
errors, growth after warm-up per process incarnation, the bounds' verdicts, the report."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path

import pytest

from bench.soak_report import (
    MIB,
    Bounds,
    Fault,
    Record,
    Sample,
    errors_by_status,
    growths,
    latencies,
    percentile,
    render,
    verdicts,
    write,
)


def test_percentile_interpolates_like_numpy() -> None:
    values = [float(v) for v in range(1, 11)]
    assert percentile(values, 50) == pytest.approx(5.5)
    assert percentile(values, 95) == pytest.approx(9.55)
    assert percentile(values, 99) == pytest.approx(9.91)
    assert percentile(values, 0) == 1.0 and percentile(values, 100) == 10.0
    assert percentile([3.0], 99) == 3.0
    assert math.isnan(percentile([], 50))


def test_latencies_count_ok_errors_and_lost_per_kind() -> None:
    records = [
        Record("text_turn", 1.0, 2.0, "200", True, first_event=0.5),
        Record("text_turn", 2.0, 4.0, "200", True, first_event=1.5),
        Record("text_turn", 3.0, 9.0, "200 error:STAGE_REPLY/UNAVAILABLE", False),
        Record("speech", 4.0, 1.0, "503 unavailable", False),
        Record("speech", 5.0, 60.0, "hang", False, lost=True),
    ]
    lat = latencies(records)
    assert lat["text_turn"]["requests"] == 3 and lat["text_turn"]["ok"] == 2
    assert lat["text_turn"]["errors"] == 1 and lat["text_turn"]["lost"] == 0
    assert lat["text_turn"]["p50"] == pytest.approx(3.0)  # the failed one is not timed
    assert lat["text_turn"]["first_p50"] == pytest.approx(1.0)
    assert lat["speech"]["errors"] == 1 and lat["speech"]["lost"] == 1
    assert math.isnan(lat["speech"]["p95"])
    assert errors_by_status(records) == {
        "speech 503 unavailable": 1,
        "speech hang": 1,
        "text_turn 200 error:STAGE_REPLY/UNAVAILABLE": 1,
    }


def _series(name: str, pid: int, times: range, rss: int, step: int = 0, fds: int = 10) -> list:
    return [Sample(float(t), name, pid, rss + step * t, fds, 5) for t in times]


def test_growth_is_first_minute_after_warmup_against_last() -> None:
    samples = (
        _series("flat", 1, range(0, 600, 5), 100 * MIB)
        + _series("leaky", 2, range(0, 600, 5), 100 * MIB, step=MIB // 2)
        # a replica restarted at 400 s: too short-lived after its own warm-up to be judged
        + _series("stt-0", 3, range(0, 300, 5), 200 * MIB)
        + _series("stt-0", 4, range(400, 600, 5), 300 * MIB, fds=50)
    )
    gs = {(g.name, g.pid): g for g in growths(samples, warmup=120, load_end=600)}
    assert gs[("flat", 1)].rss_growth == 0 and gs[("flat", 1)].judged
    leaky = gs[("leaky", 2)]
    # medians: the first minute after 120 s (t=150) against the last minute (t=565)
    assert leaky.rss_growth == pytest.approx((565 - 150) * MIB // 2, rel=0.02)
    assert leaky.rss_max == 100 * MIB + 595 * (MIB // 2)
    assert gs[("stt-0", 3)].judged  # lived 120..295: two windows
    assert not gs[("stt-0", 4)].judged  # born at 400, settled at 520: not two windows left

    lines = verdicts(gs.values(), Bounds(rss_mib=64, rss_fraction=0.25, fds=32, threads=16))
    (rss, rss_ok), (fds, fds_ok), (threads, threads_ok) = lines
    assert not rss_ok and "leaky" in rss and "flat" not in rss
    assert fds_ok and threads_ok  # stt-0 pid 4's extra files are not judged
    assert "3 judged" in fds


def test_rss_bound_is_the_larger_of_mib_and_fraction() -> None:
    big = _series("big", 1, range(0, 400, 5), 1000 * MIB)
    big += [Sample(float(t), "big", 1, 1200 * MIB, 10, 5) for t in range(400, 600, 5)]
    (rss, ok), *_ = verdicts(growths(big, 120, 600), Bounds(rss_mib=64, rss_fraction=0.25))
    assert ok, rss  # +200 MiB of 1000 MiB is within 25 %
    (rss, ok), *_ = verdicts(growths(big, 120, 600), Bounds(rss_mib=64, rss_fraction=0.1))
    assert not ok and "+200.0 MiB" in rss


def test_report_renders_and_is_written_with_its_json(tmp_path: Path) -> None:
    records = [
        Record("text_turn", 1.0, 2.0, "200", True, first_event=0.5),
        Record("live", 2.0, 1.0, "close 1013 error:unavailable", False),
    ]
    gs = growths(_series("envoy", 7, range(0, 600, 5), 40 * MIB), 120, 600)
    lines = verdicts(gs, Bounds())
    fault = Fault("kill -9 stt-0", 200.0, 215.5, "back", True, {"live close 1013": 1}, 4)
    skipped = Fault("disk full", 300.0, 300.0, "skipped", True, skipped=True)
    summary = {
        "started": "20261201T000000Z",
        "passed": True,
        "users": 6,
        "minutes": 10.0,
        "warmup_seconds": 120.0,
        "latencies": latencies(records),
        "errors": errors_by_status(records),
        "faults": [asdict(fault), asdict(skipped)],
        "crashes": [],
        "growth": [asdict(g) for g in gs],
        "bounds": Bounds().describe(),
        "verdicts": lines,
        "checks": ["requests lost: 0: PASS"],
        "memory_growth": "largest RSS growth +0.0 MiB (envoy)",
        "samples_file": "samples.jsonl",
    }
    report = write(tmp_path, summary, records)
    text = report.read_text()
    assert "Verdict: **PASS**" in text
    assert "| requests | 2 (live 1, text_turn 1) |" in text
    assert "| faults survived | 1 of 1 (skipped: disk full) |" in text
    assert "| kill -9 stt-0 | 200 | 15.5 | 4 | live close 1013 x1 | back | ok |" in text
    assert "| live close 1013 error:unavailable | 1 |" in text
    assert "| envoy | 7 | 40.0 | 40.0 | +0.0 |" in text
    assert text == render(json.loads((tmp_path / "summary.json").read_text()))
    assert len((tmp_path / "requests.jsonl").read_text().splitlines()) == 2

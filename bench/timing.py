"""Side-by-side measurement shared by the benchmarks: alternate two paths so drift on the
machine hits both alike."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def alternate(a: Callable[[], T], b: Callable[[], T], repeats: int) -> tuple[list[T], list[T]]:
    """Call ``a`` and ``b`` once each to warm up, then alternately ``repeats`` times; return
    what each call returned."""
    a(), b()
    a_values, b_values = [], []
    for _ in range(repeats):
        a_values.append(a())
        b_values.append(b())
    return a_values, b_values


def timed(fn: Callable[[], object]) -> Callable[[], float]:
    """``fn`` as a function returning the seconds it took."""

    def run() -> float:
        started = time.perf_counter()
        fn()
        return time.perf_counter() - started

    return run

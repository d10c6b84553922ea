"""Every few seconds, RSS, open files and threads of every process of the suite (each root
process and its descendants: the gunicorn master and its workers), appended to a JSON-lines
file; and which processes died without a fault having killed them."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import psutil

from bench.soak_report import Sample

__all__ = ["Sampler"]


class Sampler:
    """``roots()`` gives name -> pid of the processes to watch now (it changes as faults
    restart them); children are named ``<root>/worker-<n>`` in the order they were first seen
    (a gunicorn worker that is replaced gets a new name)."""

    def __init__(
        self, roots: Callable[[], dict[str, int]], path: Path, clock: Callable[[], float]
    ) -> None:
        self._roots = roots
        self._path = path
        self._clock = clock
        self.samples: list[Sample] = []
        self.children_seen: dict[str, dict[int, str]] = {}
        """root name -> child pid -> the name given to it."""
        self._procs: dict[int, psutil.Process] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak-sampler", daemon=True)

    def start(self, every: float) -> Sampler:
        self._every = every
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def _proc(self, pid: int) -> psutil.Process:
        if pid not in self._procs:
            self._procs[pid] = psutil.Process(pid)
        return self._procs[pid]

    def sample_once(self) -> list[Sample]:
        now = self._clock()
        taken: list[Sample] = []
        for root, pid in self._roots().items():
            try:
                proc = self._proc(pid)
                family = [(root, proc)]
                seen = self.children_seen.setdefault(root, {})
                for child in proc.children(recursive=True):
                    if child.pid not in seen:
                        seen[child.pid] = f"{root}/worker-{len(seen)}"
                    family.append((seen[child.pid], self._proc(child.pid)))
            except psutil.Error:
                continue  # gone (a fault killed it); the next sample sees its successor
            for name, p in family:
                try:
                    with p.oneshot():
                        taken.append(
                            Sample(
                                now, name, p.pid, p.memory_info().rss, p.num_fds(), p.num_threads()
                            )
                        )
                except psutil.Error:
                    continue
        self.samples.extend(taken)
        with open(self._path, "a") as out:
            for s in taken:
                out.write(json.dumps(asdict(s)) + "\n")
        return taken

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            self.sample_once()
            self._stop.wait(max(0.0, self._every - (time.monotonic() - started)))

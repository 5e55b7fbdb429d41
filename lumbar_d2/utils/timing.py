"""Wall-clock timing: the one stopwatch behind every latency and speed figure.

Benchmarks, the export comparison and the volume bench all time calls the same way: a
monotonic high-resolution clock (``time.perf_counter``), an optional ``sync`` run before the
clock stops (``torch.cuda.synchronize``, so queued GPU work is counted), and warm-up calls
that are not timed (first calls pay for lazy initialisation and graph optimisation).
"""
from __future__ import annotations

import time
from typing import Callable, List, Optional

Sync = Optional[Callable[[], None]]


class Stopwatch:
    """``with Stopwatch() as watch: work()``, then ``watch.seconds``.

    Args:
        sync: called before the clock stops, e.g. ``torch.cuda.synchronize``.
    """

    def __init__(self, sync: Sync = None):
        self.sync = sync
        self.seconds = float("nan")
        self._start = 0.0

    def __enter__(self) -> "Stopwatch":
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        if self.sync is not None:
            self.sync()
        self.seconds = time.perf_counter() - self._start


def time_calls(fn: Callable[[], object], n_runs: int, warmup: int = 0, sync: Sync = None
               ) -> List[float]:
    """Seconds of each of ``n_runs`` calls of ``fn``, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
        if sync is not None:
            sync()
    seconds = []
    for _ in range(n_runs):
        with Stopwatch(sync) as watch:
            fn()
        seconds.append(watch.seconds)
    return seconds


__all__ = ["Stopwatch", "time_calls"]

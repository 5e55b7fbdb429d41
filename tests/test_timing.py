"""lumbar_d2.utils.timing: the one stopwatch (a fake clock, no wall-clock assertions)."""
from __future__ import annotations

import pytest

from lumbar_d2.utils import timing


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> dict:
    """A clock that only moves when a test moves it."""
    now = {"t": 100.0}
    monkeypatch.setattr(timing.time, "perf_counter", lambda: now["t"])
    return now


def test_stopwatch_counts_the_sync_inside_the_timed_block(clock):
    def sync():  # queued device work finishes 0.5 s after the call returned
        clock["t"] += 0.5
    with timing.Stopwatch(sync) as watch:
        clock["t"] += 2.0
    assert watch.seconds == pytest.approx(2.5)


def test_time_calls_skips_warmup_and_times_each_call(clock):
    durations = iter([9.0, 9.0, 1.0, 2.0, 3.0])  # two slow warm-up calls, then three

    def call():
        clock["t"] += next(durations)
    assert timing.time_calls(call, n_runs=3, warmup=2) == pytest.approx([1.0, 2.0, 3.0])
    with pytest.raises(StopIteration):
        call()  # exactly 5 calls were made

import time

import pytest

from mobileseg.bench.latency import measure, summarize


def test_summary_statistics():
    stats = summarize([1.0, 2.0, 3.0, 4.0, 10.0], first_ms=20.0)
    assert (stats.min, stats.median, stats.max, stats.count) == (1.0, 3.0, 10.0, 5)
    assert stats.mean == pytest.approx(4.0) and stats.first_ms == 20.0
    assert stats.p90 == pytest.approx(7.6) and stats.cv == pytest.approx(stats.std / 4.0)


def test_measure_times_each_run_and_honours_the_wait():
    calls = []
    start = time.perf_counter()
    stats = measure(lambda: calls.append(time.sleep(0.002)), iterations=5, warmup=2, wait_s=0.01)
    elapsed = time.perf_counter() - start
    assert len(calls) == 1 + 2 + 5 and stats.count == 5
    assert all(1.5 <= s <= 50 for s in stats.samples_ms)
    assert elapsed >= 4 * 0.01 + 8 * 0.002  # 4 waits between 5 measured runs


def test_measure_rejects_non_positive_iterations():
    with pytest.raises(ValueError):
        measure(lambda: None, iterations=0)

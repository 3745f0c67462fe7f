"""Shared by the benchmarks: interleaved wall-clock timing."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def timed(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median wall time of each call, measured interleaved (one round calls each once, in
    turn), so that a slow spell of the machine hits every method alike; one warm-up round."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for round_ in range(repeats + 1):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            if round_:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}

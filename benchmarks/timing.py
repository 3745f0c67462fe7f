"""Shared by the benchmarks: interleaved wall-clock timing."""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable


def rounds(fns: dict[str, Callable[[], object]], repeats: int, seed: int = 0
           ) -> dict[str, list[float]]:
    """Wall times of ``repeats`` rounds (after one warm-up round): each round calls every
    function once, in an order shuffled per round (seeded), so that neither a slow spell of the
    machine nor the memory state a call leaves to the next one favours a method."""
    order = list(fns)
    rng = random.Random(seed)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for round_ in range(repeats + 1):
        rng.shuffle(order)
        for name in order:
            start = time.perf_counter()
            fns[name]()
            if round_:
                times[name].append(time.perf_counter() - start)
    return times


def timed(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median wall time of each call over :func:`rounds`."""
    return {name: statistics.median(t) for name, t in rounds(fns, repeats).items()}


def paired_ratio(ours: list[float], peer: list[float]) -> tuple[float, float, float]:
    """(median, lower quartile, upper quartile) of the per-round ratios ours / peer: both were
    timed in the same rounds, so each ratio compares calls made moments apart."""
    ratios = sorted(a / b for a, b in zip(ours, peer, strict=True))
    q1, _, q3 = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else (ratios * 3)
    return statistics.median(ratios), q1, q3

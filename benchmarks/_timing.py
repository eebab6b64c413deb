"""Side-by-side timing: interleave the two callables so drift hits both equally, report medians."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def paired_medians(a: Callable[[], object], b: Callable[[], object], repeats: int = 200,
                   warmup: int = 20) -> tuple[float, float]:
    for _ in range(warmup):
        a()
        b()
    ta, tb = [], []
    for i in range(repeats):
        first, second, t_first, t_second = (a, b, ta, tb) if i % 2 == 0 else (b, a, tb, ta)
        start = time.perf_counter()
        first()
        mid = time.perf_counter()
        second()
        end = time.perf_counter()
        t_first.append(mid - start)
        t_second.append(end - mid)
    return statistics.median(ta), statistics.median(tb)

"""What every benchmark shares: the corpus it reads, and side-by-side timing that interleaves
the two callables so drift hits both equally."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

# The real corpus beside the repository when it is there; else Python's own documentation.
DEFAULT_CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "tinyshakespeare.txt"


def load_text(path: Path) -> tuple[str, str]:
    """The corpus text and a name for it: `path` if it is a file, else pydoc_data.topics."""
    if path.is_file():
        return path.read_text(encoding="utf-8"), str(path.resolve())
    from pydoc_data.topics import topics

    return "\n".join(topics.values()), "pydoc_data.topics"


def _paired_times(
    a: Callable[[], object], b: Callable[[], object], repeats: int, warmup: int
) -> tuple[list[float], list[float]]:
    """Times of `a` and `b` over `repeats` interleaved runs, alternating which goes first so
    neither side always runs on a warmer cache."""
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
    return ta, tb


def paired_medians(
    a: Callable[[], object], b: Callable[[], object], repeats: int = 200, warmup: int = 20
) -> tuple[float, float]:
    ta, tb = _paired_times(a, b, repeats, warmup)
    return statistics.median(ta), statistics.median(tb)


def paired_best(
    a: Callable[[], object], b: Callable[[], object], repeats: int = 15, warmup: int = 1
) -> tuple[float, float]:
    """Best time of each over `repeats` interleaved runs: on a shared machine other work only
    ever adds time, so the fastest run is the closest to what the code itself costs."""
    ta, tb = _paired_times(a, b, repeats, warmup)
    return min(ta), min(tb)

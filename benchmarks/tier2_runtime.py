"""Goal: the whole of Tier 2 on the embedded gpt-mini (~1M parameters) takes under 120 s on
2 CPU cores.

Runs Tier 2 on every embedded example in one process and prints, for each, the seconds it
took, the ratio to the 120 s goal and its slowest analyses. matplotlib's first import is
measured on its own beforehand, so every run is warm.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from utils.loading import load_model
from utils.tiers.tier2 import run_tier2

GOAL_SECONDS = 120.0
EXAMPLES = ("gpt-mini", "builder-export", "bert-mini")


def _import_seconds() -> float:
    start = time.perf_counter()
    import matplotlib.figure  # noqa: F401

    return time.perf_counter() - start


def tier2_runtime() -> float:
    """Tier 2 on each embedded example; returns gpt-mini's ratio to the goal."""
    print(f"first-use imports (matplotlib): {_import_seconds():.2f} s")
    print(f"{'example':<16} {'params':>9} {'seconds':>8} {'ratio':>6}  slowest analyses")
    ratios = {}
    for name in EXAMPLES:
        loaded = load_model(f"example:{name}")
        params = sum(p.numel() for p in loaded.model.parameters())
        start = time.perf_counter()
        report = run_tier2(loaded, progress=False)
        seconds = time.perf_counter() - start
        ratio = ratios[name] = seconds / GOAL_SECONDS
        slow = sorted(report, key=lambda r: r.seconds, reverse=True)[:3]
        slowest = ", ".join(f"{r.id} {r.seconds:.1f}s" for r in slow)
        print(f"{name:<16} {params:>9,} {seconds:>8.2f} {ratio:>6.2f}  {slowest}  [{report.status}]")
    print(f"gpt-mini: {ratios['gpt-mini']:.2f} of the {GOAL_SECONDS:.0f} s goal (goal <= 1.00)")
    return ratios["gpt-mini"]


def main() -> int:
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    tier2_runtime()
    return 0


if __name__ == "__main__":
    sys.exit(main())

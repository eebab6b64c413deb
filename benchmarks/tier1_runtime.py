"""Goals: the whole of Tier 1 on the embedded gpt-mini (~1M parameters) takes under 30 s on
2 CPU cores; on a model whose forward takes 5 s and on a GPT-2-small-shaped model (124M
parameters, random weights) it ends within its 60 s budget (+20%), skipping with the reason
what does not fit (on GPT-2 small, nothing but the training checks).

Runs Tier 1 on each in one process and prints, for each, the seconds it took, the ratio to
its goal, its slowest checks and what skipped. The figures import matplotlib on first use;
that cost is measured on its own beforehand and printed, so every run is warm.

    python benchmarks/tier1_runtime.py [--only gpt-mini,slow-5s,gpt2-small]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from utils.loading import load_model
from utils.tiers.tier1 import run_tier1

GOAL_SECONDS = 30.0
BUDGET = 60.0
BUDGET_SLACK = 1.2
GPT2_SMALL = {"vocab_size": 50257, "d_model": 768, "num_heads": 12, "num_layers": 12, "d_ff": 3072, "max_seq_len": 1024}


class FiveSecondLM(nn.Module):
    """A correct tiny causal LM whose forward takes 5 s (it sleeps): time, not compute."""

    def __init__(self, vocab: int = 64, d: int = 16, max_len: int = 32):
        super().__init__()
        self.max_seq_len = max_len
        self.emb = nn.Embedding(vocab, d)
        self.pos = nn.Embedding(max_len, d)
        self.head = nn.Linear(d, vocab)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        time.sleep(5.0)
        T = input_ids.shape[1]
        if T > self.max_seq_len:
            raise ValueError(f"{T} tokens; at most {self.max_seq_len}")
        positions = torch.arange(T, device=input_ids.device)
        return self.head(self.emb(input_ids) + self.pos(positions))  # (B, T, V)


def _models() -> dict[str, tuple[object, dict, float]]:
    """name -> (what run_tier1 gets, its options, the goal in seconds)."""
    import json

    config = json.loads(
        (Path(__file__).resolve().parents[1] / "utils" / "examples" / "gpt_mini" / "config.json").read_text()
    )
    return {
        "gpt-mini": (lambda: load_model("example:gpt-mini"), {}, GOAL_SECONDS),
        "builder-export": (lambda: load_model("example:builder-export"), {}, GOAL_SECONDS),
        "bert-mini": (lambda: load_model("example:bert-mini"), {}, GOAL_SECONDS),
        "slow-5s": (FiveSecondLM, {"task": "causal_lm", "time_budget": BUDGET}, BUDGET * BUDGET_SLACK),
        "gpt2-small": (
            lambda: load_model("example:gpt-mini", config={**config, **GPT2_SMALL}),
            {"time_budget": BUDGET},
            BUDGET * BUDGET_SLACK,
        ),
    }


def _import_seconds() -> float:
    start = time.perf_counter()
    import matplotlib.figure  # noqa: F401

    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated names (default: all)")
    args = parser.parse_args()
    models = _models()
    names = args.only.split(",") if args.only else list(models)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"first-use imports (matplotlib): {_import_seconds():.2f} s")
    print(f"{'model':<16} {'params':>12} {'seconds':>8} {'goal':>6} {'ratio':>6}  slowest checks; skipped")
    within = True
    for name in names:
        build, options, goal = models[name]
        model = build()
        module = model.model if hasattr(model, "model") else model
        params = sum(p.numel() for p in module.parameters())
        start = time.perf_counter()
        report = run_tier1(model, progress=False, **options)
        seconds = time.perf_counter() - start
        within &= seconds <= goal
        slow = sorted(report, key=lambda r: r.seconds, reverse=True)[:3]
        slowest = ", ".join(f"{r.id} {r.seconds:.1f}s" for r in slow)
        skipped = ", ".join(r.id for r in report.skipped) or "none"
        print(
            f"{name:<16} {params:>12,} {seconds:>8.2f} {goal:>6.0f} {seconds / goal:>6.2f}  "
            f"{slowest}; skipped: {skipped} [{report.status}, first forward "
            f"{report.meta.get('first_forward_s') or 0:.3g} s]"
        )
    print("every model within its goal (ratio <= 1.00)" if within else "a model missed its goal")
    return 0 if within else 1


if __name__ == "__main__":
    sys.exit(main())

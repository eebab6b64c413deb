"""Goals: the whole of Tier 2 on the embedded gpt-mini (~1M parameters) takes under 120 s on
2 CPU cores, and capturing every attention map of one forward costs under 3x the plain
forward.

`tier2_runtime()` runs Tier 2 on every embedded example in one process and prints, for each,
the seconds it took, the ratio to the 120 s goal and its slowest analyses (matplotlib's first
import is measured on its own beforehand, so every run is warm). `capture_overhead()` runs
the plain eval forward and `capture_attention` (which also verifies every map) side by side,
interleaved, on the embedded examples and a tiny Hugging Face GPT-2 with eager attention (the
hand-written softmax path), and prints capture / plain for each.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks._bench import paired_medians  # noqa: E402
from utils.adapters import adapt  # noqa: E402
from utils.analysis.attention import capture_attention  # noqa: E402
from utils.loading import load_model  # noqa: E402
from utils.tiers.tier2 import run_tier2  # noqa: E402

GOAL_SECONDS = 120.0
EXAMPLES = ("gpt-mini", "builder-export", "bert-mini")
CAPTURE_GOAL = 3.0
CAPTURE_BATCH, CAPTURE_LEN = 4, 64


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


def _capture_cases():
    import transformers as tf

    for name in EXAMPLES:
        loaded = load_model(f"example:{name}")
        yield name, adapt(loaded.model.eval(), loaded.config)
    cfg = tf.GPT2Config(
        n_layer=2, n_embd=128, n_head=4, vocab_size=8000, n_positions=256, bos_token_id=0, eos_token_id=0
    )
    cfg._attn_implementation = "eager"
    yield "hf-gpt2-eager", adapt(tf.GPT2LMHeadModel(cfg).eval())


def capture_overhead(repeats: int = 30) -> dict[str, float]:
    """capture_attention / plain forward, per model; prints a line each and the worst."""
    torch.manual_seed(0)
    ratios: dict[str, float] = {}
    print(f"capture on one forward ({CAPTURE_BATCH} x {CAPTURE_LEN} tokens)")
    print(f"{'model':<16} {'plain ms':>9} {'capture ms':>11} {'ratio':>6}  maps")
    for name, adapted in _capture_cases():
        T = min(CAPTURE_LEN, adapted.profile.max_seq_len or CAPTURE_LEN)
        ids = torch.randint(0, adapted.profile.vocab_size, (CAPTURE_BATCH, T))
        maps = capture_attention(adapted, ids)

        def plain(a=adapted, x=ids):
            with torch.no_grad():
                a(x)

        t_plain, t_capture = paired_medians(
            plain, lambda a=adapted, x=ids: capture_attention(a, x), repeats=repeats, warmup=3
        )
        ratios[name] = t_capture / t_plain
        methods = ",".join(sorted({m.method for m in maps}))
        print(
            f"{name:<16} {t_plain * 1e3:>9.2f} {t_capture * 1e3:>11.2f} {ratios[name]:>6.2f}  {len(maps)} ({methods})"
        )
    worst = max(ratios, key=ratios.get)
    print(f"worst capture overhead {ratios[worst]:.2f}x ({worst}; goal < {CAPTURE_GOAL:.0f}x)")
    return ratios


def main() -> int:
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    tier2_runtime()
    capture_overhead()
    return 0


if __name__ == "__main__":
    sys.exit(main())

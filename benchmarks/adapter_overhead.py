"""Goal: the adapted forward costs at most 2% more than calling the model directly.

Runs both side by side in one process (interleaved calls, median of many) on the embedded
gpt-mini, a nanoGPT-style model that needs targets for full logits, and a tiny Hugging Face
GPT-2, and prints adapted / direct for each.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks._bench import paired_medians  # noqa: E402
from utils.adapters import adapt  # noqa: E402
from utils.loading import load_model  # noqa: E402

GOAL = 1.02


def _cases():
    import transformers as tf

    loaded = load_model("example:gpt-mini")
    yield "gpt-mini", loaded.model, loaded.config, lambda m, ids: m(ids)
    gpt2 = tf.GPT2LMHeadModel(
        tf.GPT2Config(n_layer=2, n_embd=128, n_head=4, vocab_size=8000, n_positions=256, bos_token_id=0, eos_token_id=0)
    )
    yield "hf-gpt2-small-ish", gpt2, None, lambda m, ids: m(input_ids=ids, use_cache=False).logits


def main() -> int:
    torch.manual_seed(0)
    worst = 0.0
    print(f"{'model':<20} {'direct ms':>10} {'adapted ms':>11} {'ratio':>7}")
    for name, model, config, direct in _cases():
        model.eval()
        adapted = adapt(model, config)
        V = adapted.profile.vocab_size
        ids = torch.randint(0, V, (8, 128))
        with torch.inference_mode():
            t_direct, t_adapted = paired_medians(
                lambda d=direct, m=model, x=ids: d(m, x), lambda a=adapted, x=ids: a(x)
            )
        ratio = t_adapted / t_direct
        worst = max(worst, ratio)
        print(f"{name:<20} {t_direct * 1e3:>10.3f} {t_adapted * 1e3:>11.3f} {ratio:>7.3f}")
    print(f"worst ratio {worst:.3f} (goal <= {GOAL})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Goal: the graph executor costs at most 5% more than the hand-written reference forward.

The reference is the forward the canvas meant, written out by hand over the same modules
(post-LN blocks, causal self-attention, output head), as a designer export's oracle does.
Both run side by side in one process on the embedded builder-export example; prints the ratio.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks._bench import paired_medians  # noqa: E402
from utils.adapters import ComputationalGraphExecutor  # noqa: E402
from utils.adapters.graph import ATTENTION_TYPES  # noqa: E402
from utils.loading import load_model  # noqa: E402

GOAL = 1.05


def reference_forward(g: nn.Module, config, input_ids: torch.Tensor) -> torch.Tensor:
    """Post-LN blocks over the export's module names, the way a designer's oracle writes it."""
    T = input_ids.shape[1]
    x = g.embedding_0_token(input_ids) + g.embedding_0_pos(torch.arange(T, device=input_ids.device))
    x = g.embedding_0_dropout(x)
    causal = torch.triu(torch.ones(T, T, dtype=torch.bool, device=input_ids.device), 1)
    n_blocks = sum(1 for n in config.nodes if n["type"] in ATTENTION_TYPES)
    for blk in range(n_blocks):
        a = getattr(g, f"mhsa_{blk}")(x, x, x, attn_mask=causal, need_weights=False)[0]
        h = getattr(g, f"layernorm_{2 * blk}")(x + a)
        x = getattr(g, f"layernorm_{2 * blk + 1}")(h + getattr(g, f"ffn_{blk}")(h))
    return g.output_0(x)


def main() -> int:
    torch.manual_seed(0)
    loaded = load_model("example:builder-export")
    model, config = loaded.model.eval(), loaded.config
    ex = ComputationalGraphExecutor(model, None, config)
    ids = torch.randint(0, config.vocab_size, (8, config.max_seq_len))
    with torch.inference_mode():
        diff = (ex.forward(ids) - reference_forward(model, config, ids)).abs().max().item()
        t_ref, t_ex = paired_medians(lambda: reference_forward(model, config, ids), lambda: ex.forward(ids))
    ratio = t_ex / t_ref
    print(f"max |executor - reference| = {diff:.2e}")
    print(f"reference {t_ref * 1e3:.3f} ms, executor {t_ex * 1e3:.3f} ms, ratio {ratio:.3f} (goal <= {GOAL})")
    return 0 if diff < 1e-5 else 1


if __name__ == "__main__":
    sys.exit(main())

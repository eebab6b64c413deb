"""attention_patterns on models built to show each pattern, and on ones built to fail it."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from tests.analysis.models import HEADS, STYLES, EncoderLM, StructuredLM
from utils.adapters import AdaptedModel, adapt
from utils.analysis.attention import capture_attention
from utils.loading import load_model
from utils.tiers.tier2_attention import attention_patterns

EXPECTED = {  # head name -> the labels it must get
    "previous_token": ["previous_token"],
    "first_token_sink": ["first_token_sink"],
    "self": ["self"],
    "induction": ["induction"],
    "random": [],
    "dead": ["dead"],
}


@dataclass
class Ctx:
    """The part of the Tier 2 context attention_patterns reads."""

    adapted: AdaptedModel | None
    input_ids: torch.Tensor
    attention_mask: torch.Tensor | None = None
    token_strings: list[list[str]] | None = None
    trained: bool | None = None
    seed: int = 0
    deadline: float = math.inf
    adapt_error: str | None = None
    device: torch.device = torch.device("cpu")


def _ctx(model: nn.Module, vocab: int, T: int = 24, **kw) -> Ctx:
    ids = torch.randint(0, vocab, (3, T), generator=torch.Generator().manual_seed(1))
    return Ctx(adapt(model.eval()), ids, **kw)


@pytest.mark.parametrize("style", STYLES)
def test_each_structured_head_gets_its_label(style):
    result = attention_patterns.run(_ctx(StructuredLM(style), 50))
    assert result.status == "pass", result.summary
    heads = result.metrics["heads"]
    assert [h["head"] for h in heads] == list(range(6))
    for h, name in zip(heads, HEADS):
        assert h["labels"] == EXPECTED[name], (name, h)
        assert set(h) >= {
            "layer",
            "head",
            "module",
            "labels",
            "entropy",
            "previous_token",
            "first_token",
            "diagonal",
            "induction",
            "ablation_kl",
        }
    assert heads[5]["ablation_kl"] < 1e-9 < heads[0]["ablation_kl"]
    assert set(result.figures) == {"heads_grid", "head_table"}
    assert "sinks are normal" in result.summary


def test_a_dead_head_in_a_trained_model_warns():
    result = attention_patterns.run(_ctx(StructuredLM("sdpa"), 50, trained=True))
    assert result.status == "warn"
    assert "layer 0 head 5" in result.advice


class WrongAxisLM(nn.Module):
    """Broken: softmax over the query axis, so attention rows do not sum to 1."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(50, 32)
        self.qkv = nn.Linear(32, 96)
        self.out = nn.Linear(32, 50)

    def forward(self, input_ids):
        B, T = input_ids.shape
        q, k, v = (t.view(B, T, 4, 8).transpose(1, 2) for t in self.qkv(self.emb(input_ids)).split(32, -1))
        att = (q @ k.transpose(-2, -1)) / math.sqrt(8)
        att = att.masked_fill(torch.ones(T, T).triu(1).bool(), float("-inf"))
        y = F.softmax(att, dim=-2) @ v  # (B, 4, T, 8)
        return self.out(y.transpose(1, 2).reshape(B, T, 32))


def test_rows_that_do_not_sum_to_one_fail():
    result = attention_patterns.run(_ctx(WrongAxisLM(), 50))
    assert result.status == "fail"
    assert "do not sum to 1" in result.summary and "softmax over the last" in result.advice


def test_untrained_gpt_mini_passes_with_uniform_heads():
    loaded = load_model("example:gpt-mini")
    ctx = Ctx(
        adapt(loaded.model.eval(), loaded.config),
        torch.randint(0, 2048, (2, 20), generator=torch.Generator().manual_seed(0)),
        trained=False,
        token_strings=[["$x", "a\n", "_{b}"] + [f"t{i}" for i in range(17)]] * 2,
    )
    result = attention_patterns.run(ctx)
    assert result.status == "pass"
    heads = result.metrics["heads"]
    assert len(heads) == 16 and {h["module"] for h in heads} == {f"blocks.{i}.attn" for i in range(4)}
    assert sum("uniform" in h["labels"] for h in heads) >= 12
    assert not any("dead" in h["labels"] for h in heads)
    assert "untrained" in result.summary
    assert all(m["method"] == "sdpa" and m["max_error"] < 1e-5 for m in result.metrics["maps"])


def test_induction_fits_a_short_position_table_no_length_is_stated_for():
    model = EncoderLM(batch_first=False, positions=16)  # 2 x 16 repeated tokens would overflow
    ctx = _ctx(model, 97, T=16)
    assert ctx.adapted.profile.max_seq_len is None
    result = attention_patterns.run(ctx)
    assert result.status == "pass", result.summary
    sizing = result.metrics["induction_sequence"]
    assert sizing["length"] == 16 and "probe failed" in sizing["source"]
    assert all(h["induction"] is not None for h in result.metrics["heads"])


def test_induction_uses_the_stated_maximum_length():
    loaded = load_model("example:gpt-mini")
    adapted = adapt(loaded.model.eval(), loaded.config, max_seq_len=20)
    ctx = Ctx(adapted, torch.randint(0, 2048, (2, 12), generator=torch.Generator().manual_seed(0)))
    sizing = attention_patterns.run(ctx).metrics["induction_sequence"]
    assert sizing["length"] == 20 and sizing["source"].startswith("max_seq_len=20")


class _ShiftedValues(torch.Tensor):
    """Values whose attention kernel adds 0.5 after weights x V, as a custom kernel that
    folds an extra term into its output would: capture sees the call, but the weights it
    rebuilds cannot reproduce that output."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        out = super().__torch_function__(func, types, args, kwargs or {})
        return out + 0.5 if func is F.scaled_dot_product_attention else out


class ShiftedKernelLM(nn.Module):
    """Two causal SDPA layers; the second one's kernel adds a constant after weights x V."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(50, 32)
        self.qkv = nn.ModuleList(nn.Linear(32, 96) for _ in range(2))
        self.out = nn.Linear(32, 50)

    def forward(self, input_ids):
        B, T = input_ids.shape
        x = self.emb(input_ids)  # (B, T, C)
        for i, qkv in enumerate(self.qkv):
            q, k, v = (t.view(B, T, 4, 8).transpose(1, 2) for t in qkv(x).split(32, -1))  # (B, 4, T, 8)
            if i == 1:
                v = v.as_subclass(_ShiftedValues)
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True).as_subclass(torch.Tensor)
            x = x + y.transpose(1, 2).reshape(B, T, 32)
        return self.out(x)


def test_a_map_that_does_not_reproduce_its_output_is_left_out():
    ctx = _ctx(ShiftedKernelLM(), 50)
    maps = capture_attention(ctx.adapted, ctx.input_ids)
    assert [m.method for m in maps] == ["sdpa", "sdpa"]
    assert maps[0].max_error < 1e-5 and maps[1].errors["output"] > 0.1
    assert maps[1].max_error == maps[1].errors["output"] and maps[1].errors["row_sum"] < 1e-5
    result = attention_patterns.run(ctx)
    assert result.status == "pass", result.summary
    assert {h["layer"] for h in result.metrics["heads"]} == {0}  # layer 1 excluded, not analysed
    assert [m["max_error"] > 0.1 for m in result.metrics["maps"]] == [False, True]
    left_out = [n for n in result.metrics["notes"] if "do not reproduce its output" in n]
    assert len(left_out) == 1 and "(layer 1)" in left_out[0]


class NoAttentionLM(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(50, 16)
        self.out = nn.Linear(16, 50)

    def forward(self, input_ids):
        return self.out(torch.relu(self.emb(input_ids)))


def test_a_model_without_attention_skips():
    result = attention_patterns.run(_ctx(NoAttentionLM(), 50))
    assert result.status == "skip" and "No attention was seen" in result.summary


def test_an_exhausted_budget_says_what_was_not_ablated():
    result = attention_patterns.run(_ctx(StructuredLM("softmax"), 50, deadline=time.perf_counter()))
    assert result.status == "pass"
    assert all(h["ablation_kl"] is None and "dead" not in h["labels"] for h in result.metrics["heads"])
    assert any("time budget" in n for n in result.metrics["notes"])


def test_no_adapted_model_skips_with_the_reason():
    result = attention_patterns.run(
        Ctx(None, torch.zeros(1, 2, dtype=torch.long), adapt_error="forward takes no tokens")
    )
    assert result.status == "skip" and "forward takes no tokens" in result.summary

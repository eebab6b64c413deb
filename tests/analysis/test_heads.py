"""Per-head numbers and labels on weights written by hand."""

from __future__ import annotations

import math

import torch

from utils.analysis.heads import (
    HeadThresholds,
    dead_heads,
    head_labels,
    head_patterns,
    induction_scores,
)

T = 12
CAUSAL = torch.ones(T, T).tril()


def _rows(w: torch.Tensor) -> torch.Tensor:
    return (w / w.sum(-1, keepdim=True))[None, None]  # (1, 1, T, T)


def _labels(w: torch.Tensor, **extra) -> list[str]:
    stats = head_patterns(w)
    row = {k: float(v[0]) for k, v in stats.items()} | extra
    return head_labels(row, HeadThresholds())


def test_uniform_causal_attention_is_uniform_and_nothing_else():
    w = _rows(CAUSAL)
    stats = head_patterns(w)
    assert math.isclose(float(stats["entropy"][0]), 1.0, abs_tol=1e-5)
    assert _labels(w) == ["uniform"]


def test_a_band_over_the_last_three_tokens_is_local():
    i = torch.arange(T)
    band = ((i[:, None] - i[None, :]) >= 0) & ((i[:, None] - i[None, :]) <= 2)
    assert _labels(_rows(band.float())) == ["local"]


def test_padding_rows_and_keys_are_left_out():
    w = _rows(CAUSAL).repeat(2, 1, 1, 1)
    keep = torch.ones(2, T, dtype=torch.bool)
    keep[1, 8:] = False  # padded queries of row 1 do not count
    w[1, :, 8:] = 0.0
    w[1, :, 8:, 0] = 1.0  # whatever pad rows hold
    stats = head_patterns(w, keep)
    assert math.isclose(float(stats["entropy"][0]), 1.0, abs_tol=1e-5)
    assert float(stats["first_token"][0]) < 0.5


def test_cross_attention_has_no_positional_numbers():
    w = torch.softmax(torch.randn(1, 2, 5, 7), dim=-1)
    stats = head_patterns(w)
    assert all(math.isnan(float(stats[k][0])) for k in ("previous_token", "diagonal", "local"))
    assert not math.isnan(float(stats["entropy"][0]))


def test_induction_score_reads_the_token_after_the_earlier_copy():
    half = 6
    w = torch.zeros(1, 1, 2 * half, 2 * half)
    for i in range(2 * half):
        w[0, 0, i, i - half + 1 if i >= half else 0] = 1.0
    assert float(induction_scores(w, half)[0]) == 1.0
    assert float(induction_scores(_rows(torch.ones(2 * half, 2 * half).tril()), half)[0]) < 0.2


def test_dead_is_relative_to_the_largest_effect():
    t = HeadThresholds()
    assert dead_heads([0.3, 1e-12, 2e-4, None], t) == [False, True, False, False]
    assert dead_heads([1e-7, 2e-7], t) == [False, False]  # small model, no head stands out
    assert dead_heads([0.0, 0.0], t) == [True, True]

"""Perturbation curves: exactly 0 at rate 0, growing with the rate, ~0 for a model that
ignores its tokens."""

from __future__ import annotations

import torch

from tests.analysis.zoo import IgnoresTokensLM, TinyLM, V
from utils.adapters import adapt
from utils.analysis.perturbation import perturbation_curves, replace_tokens


def _curves(model):
    ids = torch.randint(0, V, (4, 20), generator=torch.Generator().manual_seed(2))
    return perturbation_curves(adapt(model).eval(), ids, generator=torch.Generator().manual_seed(3))


def test_rate_zero_gives_exactly_zero_and_more_disturbance_moves_more():
    curves = _curves(TinyLM())
    assert curves.token[0.0] == {"kl": 0.0, "flip_rate": 0.0}
    assert curves.noise[0.0] == {"kl": 0.0, "flip_rate": 0.0}
    assert curves.token[0.8]["kl"] > curves.token[0.05]["kl"] > 0
    assert curves.noise[1.0]["kl"] > curves.noise[0.01]["kl"] > 0
    assert curves.positions == 4 * 20


def test_a_model_that_ignores_its_tokens_has_no_token_sensitivity():
    curves = _curves(IgnoresTokensLM())
    assert max(p["kl"] for p in curves.token.values()) < 1e-9
    assert max(p["flip_rate"] for p in curves.token.values()) == 0.0


def test_replacement_changes_the_asked_share_of_real_tokens_only():
    ids = torch.randint(0, V, (3, 20), generator=torch.Generator().manual_seed(4))
    keep = torch.ones_like(ids, dtype=torch.bool)
    keep[:, 15:] = False  # padding
    out = replace_tokens(ids, keep, 0.2, V, torch.Generator().manual_seed(5))
    changed = out != ids
    assert changed[:, :15].sum(1).tolist() == [3, 3, 3]
    assert not changed[:, 15:].any()
    assert torch.equal(replace_tokens(ids, keep, 0.0, V, torch.Generator()), ids)

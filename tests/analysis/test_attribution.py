"""Integrated Gradients: complete on every embedded example, equal to captum's, zero for a
model that ignores its tokens."""

from __future__ import annotations

import pytest
import torch
from captum.attr import LayerIntegratedGradients

from tests.analysis.zoo import IgnoresTokensLM, TinyLM, V
from utils.adapters import adapt
from utils.analysis.attribution import COMPLETENESS_TOLERANCE, integrated_gradients
from utils.analysis.predictions import target_log_probs
from utils.loading import load_model


def _ids(vocab: int, B: int = 3, T: int = 12) -> torch.Tensor:
    return torch.randint(0, vocab, (B, T), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("example", ["gpt-mini", "builder-export", "bert-mini"])
def test_completeness_error_is_under_five_percent_on_the_embedded_examples(example):
    loaded = load_model(f"example:{example}")
    adapted = adapt(loaded.model, loaded.config).eval()
    for baseline in (None, 0):
        res = integrated_gradients(adapted, _ids(adapted.profile.vocab_size), baseline_id=baseline)
        assert res.converged and res.completeness_error < COMPLETENESS_TOLERANCE
        # completeness itself: the attributions add up to f(input) - f(baseline)
        assert torch.allclose(res.token_scores.sum(-1), res.delta, rtol=0.05, atol=1e-4)


def test_captum_layer_integrated_gradients_agrees():
    adapted = adapt(TinyLM()).eval()
    ids = _ids(V)
    ours = integrated_gradients(adapted, ids, baseline_id=0, steps=(32,))

    def predicted(input_ids):
        return target_log_probs(adapted(input_ids), "causal_lm")

    lig = LayerIntegratedGradients(predicted, adapted.model.tok)
    theirs = lig.attribute(
        ids, baselines=torch.zeros_like(ids), target=ours.targets, n_steps=32, method="gausslegendre"
    )
    assert torch.allclose(ours.token_scores, theirs.sum(-1).detach(), rtol=1e-3, atol=1e-5)


def test_gradient_x_input_ranks_tokens_like_ig_on_a_smooth_model():
    res = integrated_gradients(adapt(TinyLM()).eval(), _ids(V))
    assert res.rank_agreement > 0.5


def test_a_model_that_ignores_its_tokens_gets_zero_attribution():
    res = integrated_gradients(adapt(IgnoresTokensLM()).eval(), _ids(V))
    assert float(res.token_scores.abs().max()) == 0.0
    assert float(res.delta.abs().max()) == 0.0

"""Weight spectra: the power-law fit recovers a known exponent, packed projections are
split, and exact copies are found (tied weights are not copies)."""

from __future__ import annotations

import time

import numpy as np
import torch

from tests.analysis.zoo import ClonedHeadLM, CopiedBlocksLM, TinyLM
from utils.analysis.spectrum import duplicates, power_law_alpha, weight_matrices, weight_spectra
from utils.loading import load_model


def test_the_power_law_fit_recovers_a_known_alpha_in_milliseconds():
    rng = np.random.default_rng(0)
    for alpha in (2.5, 4.0):
        samples = (1 - rng.random(2000)) ** (-1 / (alpha - 1))  # Pareto, p(x) ~ x^-alpha, x >= 1
        start = time.perf_counter()
        fit, xmin, tail = power_law_alpha(samples)
        assert time.perf_counter() - start < 1.0
        assert abs(fit - alpha) < 0.25 and tail > 100


def test_packed_attention_projections_are_split_into_q_k_v():
    export = load_model("example:builder-export").model
    names = [n for n, _ in weight_matrices(export)]
    assert {"mhsa_0.in_proj_weight[q]", "mhsa_0.in_proj_weight[k]", "mhsa_0.in_proj_weight[v]"} <= set(names)
    rows = {s.name: s for s in weight_spectra(export)}
    q = rows["mhsa_0.in_proj_weight[q]"]
    assert q.shape == (80, 80) and q.spectral_norm > 0 and 1 <= q.stable_rank <= 80


def test_a_cloned_untied_matrix_is_a_duplicate_and_a_tied_one_is_not():
    cloned = {s.name: s.duplicate_of for s in weight_spectra(ClonedHeadLM())}
    assert cloned["head.weight"] == "tok.weight"
    tied = TinyLM()
    tied.head.weight = tied.tok.weight
    assert not duplicates(weight_matrices(tied))
    assert not duplicates(weight_matrices(TinyLM()))


def test_copied_blocks_are_duplicates_of_the_first():
    dupes = duplicates(weight_matrices(CopiedBlocksLM()))
    assert dupes["blocks.1.attn.qkv.weight"] == "blocks.0.attn.qkv.weight"
    assert dupes["blocks.2.mlp.2.weight"] == "blocks.0.mlp.2.weight"


def test_constant_matrices_are_not_called_copies():
    model = TinyLM()
    with torch.no_grad():
        model.blocks[0].attn.proj.weight.zero_()
        model.blocks[1].attn.proj.weight.zero_()
    assert not duplicates(weight_matrices(model))

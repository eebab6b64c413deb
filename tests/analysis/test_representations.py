"""Representation health: a collapsed block is seen (and named), a healthy stream is not."""

from __future__ import annotations

import torch
from torch import nn

from tests.adapters.zoo import SeqFirstLM
from tests.analysis.zoo import TinyLM, V
from utils.adapters import adapt
from utils.analysis.representations import effective_rank, mean_token_cosine, representation_health
from utils.loading import load_model


def _ids(vocab: int = V) -> torch.Tensor:
    return torch.randint(0, vocab, (4, 16), generator=torch.Generator().manual_seed(10))


def test_the_collapsing_middle_block_has_one_vector_for_every_position():
    rows = representation_health(adapt(TinyLM(collapse_at=1)).eval(), _ids())
    by_name = {r.module: r for r in rows}
    assert by_name["blocks.0"].spread > 0.5
    assert by_name["blocks.1"].spread < 1e-3
    assert by_name["blocks.1"].mean_token_cosine > 0.999
    assert by_name["blocks.1"].effective_rank_centered < by_name["blocks.0"].effective_rank_centered


def test_a_healthy_stream_keeps_its_rank_and_its_ffn_alive():
    rows = representation_health(adapt(TinyLM()).eval(), _ids())
    assert [r.module for r in rows] == ["blocks.0", "blocks.1", "blocks.2"]
    for r in rows:
        assert r.spread > 0.5 and r.mean_token_cosine < 0.9 and r.effective_rank_centered > 5
        assert r.dead_neuron_fraction == 0.0
        assert 0 < r.block_cosine < 1


def test_seq_first_and_flat_exports_are_read_too():
    rows = representation_health(adapt(SeqFirstLM()).eval(), torch.randint(0, 97, (4, 16)))
    assert [r.module for r in rows] == ["encoder.layers.0", "encoder.layers.1"]
    assert all(r.dead_neuron_fraction is not None for r in rows)  # linear1 pre-activations
    loaded = load_model("example:builder-export")
    rows = representation_health(adapt(loaded.model, loaded.config).eval(), _ids(1500))
    assert [r.module for r in rows][:2] == ["layernorm_0", "layernorm_1"]
    assert rows[0].block_cosine is None and rows[1].block_cosine is not None


def test_dead_relu_units_are_counted():
    model = TinyLM()
    model.blocks[0].mlp[1] = nn.ReLU()
    with torch.no_grad():
        model.blocks[0].mlp[0].bias[: 3 * 24] = -100.0  # 75% of the units can never fire
    rows = representation_health(adapt(model).eval(), _ids())
    assert abs(rows[0].dead_neuron_fraction - 0.75) < 1e-6


def test_the_metrics_themselves():
    assert abs(effective_rank(torch.eye(5)) - 5) < 1e-6
    assert abs(effective_rank(torch.ones(6, 3)) - 1) < 1e-6
    same = torch.ones(1, 4, 3)
    assert abs(mean_token_cosine(same, torch.ones(1, 4, dtype=torch.bool)) - 1) < 1e-9

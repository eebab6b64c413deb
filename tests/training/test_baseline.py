"""The baseline is a real transformers model whose size matches the user's within 10%."""

from __future__ import annotations

import pytest
import torch

from tests.training.tier3_models import BlindLM, EncoderDecoder, TinyLM
from utils import adapt, load_model
from utils.training.baseline import (
    BaselineError,
    bart_parameters,
    bert_parameters,
    build_baseline,
    count_parameters,
    gpt2_parameters,
    heads_for,
    model_dropout,
    size_baseline,
)


@pytest.mark.parametrize(
    ("family", "counter"), [("gpt2", gpt2_parameters), ("bert", bert_parameters), ("bart", bart_parameters)]
)
def test_the_size_formulas_match_the_built_models(family, counter):
    from utils.training.baseline import BaselineSizing

    for vocab, ctx, d, layers in ((100, 16, 32, 1), (257, 40, 48, 3)):
        sizing = BaselineSizing(family, layers, d, heads_for(d), vocab, ctx, 0, 0, 1, 1)
        expected = counter(vocab, ctx, d, layers)
        assert count_parameters(build_baseline(sizing)) == expected


@pytest.mark.parametrize("name", ["gpt-mini", "bert-mini"])
def test_the_embedded_examples_get_a_baseline_within_ten_percent(name):
    loaded = load_model(f"example:{name}")
    adapted = adapt(loaded.model, loaded.config)
    sizing = size_baseline(adapted)
    assert sizing.family == ("gpt2" if name == "gpt-mini" else "bert")
    assert abs(sizing.total_error) <= 0.10
    assert sizing.target_total == count_parameters(loaded.model).total
    assert sizing.vocab_size == adapted.profile.vocab_size
    assert sizing.max_seq_len == adapted.profile.max_seq_len
    assert sizing.n_embd % sizing.n_head == 0


def test_an_encoder_decoder_gets_a_bart_baseline_within_ten_percent():
    model = EncoderDecoder(vocab_size=128, max_seq_len=32, d_model=64)
    sizing = size_baseline(adapt(model))
    assert sizing.family == "bart" and abs(sizing.total_error) <= 0.10
    bart = build_baseline(sizing, pad_token_id=0, eos_token_id=3)
    assert count_parameters(bart).total == sizing.total
    assert bart.config.decoder_start_token_id == 3 and bart.config.encoder_layers == bart.config.decoder_layers
    assert adapt(bart).profile.task == "seq2seq"
    no_pad = build_baseline(sizing, pad_token_id=None, eos_token_id=3)  # EOS stands in as BART's pad id
    assert no_pad.config.pad_token_id == 3 and no_pad.model.shared.padding_idx is None
    assert no_pad.model.shared.weight[3].abs().sum() > 0  # EOS is a real input: its row learns


def test_an_untied_wide_model_gets_a_wider_baseline():
    tied = size_baseline(adapt(TinyLM(vocab_size=512, max_seq_len=32, d_model=64)))
    untied_model = TinyLM(vocab_size=512, max_seq_len=32, d_model=64)
    untied_model.head.weight = torch.nn.Parameter(untied_model.tok.weight.detach().clone())
    untied = size_baseline(adapt(untied_model))
    assert untied.target_total == tied.target_total + 512 * 64
    assert abs(untied.total_error) <= 0.10 and untied.total > tied.total


def test_the_baseline_trains_with_the_users_dropout():
    assert model_dropout(TinyLM(dropout=0.2)) == 0.2
    assert model_dropout(BlindLM()) == 0.0


def test_a_classifier_has_no_standard_baseline():
    class Classifier(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.e = torch.nn.Embedding(50, 8)
            self.out = torch.nn.Linear(8, 3)

        def forward(self, input_ids):
            return self.out(self.e(input_ids).mean(1))  # (B, 3)

    with pytest.raises(BaselineError, match="classification"):
        size_baseline(adapt(Classifier(), task="classification", vocab_size=50))

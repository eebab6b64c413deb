"""The token embedding and the blocks are found by structure, in every model family."""

from __future__ import annotations

from transformers import BertConfig, BertForMaskedLM, GPT2Config, GPT2LMHeadModel

from tests.adapters.zoo import NanoGPT, SeqFirstLM
from tests.analysis.zoo import TinyLM
from utils.analysis.locate import find_blocks
from utils.loading import load_model
from utils.vocabulary import token_embedding


def test_blocks_of_every_family_are_found():
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=101, n_positions=32, n_embd=16, n_layer=3, n_head=2))
    bert = BertForMaskedLM(
        BertConfig(
            vocab_size=101,
            hidden_size=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=32,
            max_position_embeddings=32,
        )
    )
    assert find_blocks(gpt2).names == ("transformer.h.0", "transformer.h.1", "transformer.h.2")
    assert find_blocks(bert).names == ("bert.encoder.layer.0", "bert.encoder.layer.1")
    assert find_blocks(NanoGPT()).names == ("h.0", "h.1")
    assert find_blocks(SeqFirstLM()).names == ("encoder.layers.0", "encoder.layers.1")
    assert find_blocks(TinyLM()).kind == "blocks"


def test_a_flat_export_is_read_at_its_norm_inputs():
    export = load_model("example:builder-export").model
    layout = find_blocks(export)
    assert layout.kind == "norm_inputs"
    assert layout.names == ("layernorm_0", "layernorm_1", "layernorm_2", "layernorm_3")


def test_the_token_embedding_is_the_vocabulary_table_not_the_position_table():
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=101, n_positions=128, n_embd=16, n_layer=1, n_head=2))
    assert token_embedding(gpt2, 101)[0] == "transformer.wte"
    export = load_model("example:builder-export").model
    assert token_embedding(export, None)[0] == "embedding_0_token"

"""Real third-party architectures from tiny random configs, built offline: the Hugging Face
classes people actually load, so Tier 1 can be held to no false alarm on any of them.

Every model has vocabulary 97, width 32, two layers and (where it has one) a context of 40,
so that batch, length, vocabulary and width all differ from one another."""

from __future__ import annotations

from collections.abc import Callable

import torch
import transformers as tf
from torch import nn

V, L = 97, 40
_COMMON = dict(
    vocab_size=V,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    max_position_embeddings=L,
)
_DISTILBERT = dict(vocab_size=V, dim=32, n_layers=2, n_heads=4, hidden_dim=64, max_position_embeddings=L)


def _hf(model: str, config: str, **fields) -> Callable[[], nn.Module]:
    return lambda: getattr(tf, model)(getattr(tf, config)(**fields))


CAUSAL_LMS: dict[str, Callable[[], nn.Module]] = {
    "gpt2": _hf("GPT2LMHeadModel", "GPT2Config", n_layer=2, n_embd=32, n_head=4, vocab_size=V, n_positions=L),
    "gpt_neox": _hf("GPTNeoXForCausalLM", "GPTNeoXConfig", **_COMMON),
    "opt": _hf(
        "OPTForCausalLM",
        "OPTConfig",
        vocab_size=V,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        ffn_dim=64,
        max_position_embeddings=L,
        word_embed_proj_dim=32,
    ),
    "mistral": _hf("MistralForCausalLM", "MistralConfig", num_key_value_heads=2, **_COMMON),
    "qwen2": _hf("Qwen2ForCausalLM", "Qwen2Config", num_key_value_heads=2, **_COMMON),
    "phi": _hf("PhiForCausalLM", "PhiConfig", **_COMMON),
    "phi3": _hf("Phi3ForCausalLM", "Phi3Config", pad_token_id=0, **_COMMON),
    "falcon": _hf(
        "FalconForCausalLM",
        "FalconConfig",
        vocab_size=V,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=L,
    ),
    "gemma": _hf("GemmaForCausalLM", "GemmaConfig", head_dim=8, num_key_value_heads=2, **_COMMON),
    "gemma2": _hf("Gemma2ForCausalLM", "Gemma2Config", head_dim=8, num_key_value_heads=2, **_COMMON),
    "bloom": _hf("BloomForCausalLM", "BloomConfig", vocab_size=V, hidden_size=32, n_layer=2, n_head=4),
    "gptj": _hf(
        "GPTJForCausalLM", "GPTJConfig", vocab_size=V, n_embd=32, n_layer=2, n_head=4, n_positions=L, rotary_dim=4
    ),
    "gpt_bigcode": _hf(
        "GPTBigCodeForCausalLM", "GPTBigCodeConfig", vocab_size=V, n_embd=32, n_layer=2, n_head=4, n_positions=L
    ),
    "codegen": _hf(
        "CodeGenForCausalLM",
        "CodeGenConfig",
        vocab_size=V,
        n_embd=32,
        n_layer=2,
        n_head=4,
        n_positions=L,
        n_ctx=L,
        rotary_dim=4,
    ),
    "mpt": _hf("MptForCausalLM", "MptConfig", vocab_size=V, d_model=32, n_layers=2, n_heads=4, max_seq_len=L),
    "llama_gqa": _hf("LlamaForCausalLM", "LlamaConfig", num_key_value_heads=2, **_COMMON),
    "mamba": _hf("MambaForCausalLM", "MambaConfig", vocab_size=V, hidden_size=32, num_hidden_layers=2, state_size=4),
    "rwkv": _hf(
        "RwkvForCausalLM",
        "RwkvConfig",
        vocab_size=V,
        hidden_size=32,
        num_hidden_layers=2,
        context_length=L,
        attention_hidden_size=32,
        intermediate_size=64,
    ),
    "olmo": _hf("OlmoForCausalLM", "OlmoConfig", **_COMMON),
    "stablelm": _hf("StableLmForCausalLM", "StableLmConfig", num_key_value_heads=4, **_COMMON),  # default 32
}
MASKED_LMS: dict[str, Callable[[], nn.Module]] = {
    "bert": _hf("BertForMaskedLM", "BertConfig", **_COMMON),
    "roberta": _hf("RobertaForMaskedLM", "RobertaConfig", pad_token_id=1, **_COMMON),
    "distilbert": _hf("DistilBertForMaskedLM", "DistilBertConfig", **_DISTILBERT),
    "electra": _hf("ElectraForMaskedLM", "ElectraConfig", embedding_size=32, **_COMMON),
    "albert": _hf("AlbertForMaskedLM", "AlbertConfig", embedding_size=16, **_COMMON),
    "deberta_v2": _hf("DebertaV2ForMaskedLM", "DebertaV2Config", **_COMMON),
    "xlm_roberta": _hf("XLMRobertaForMaskedLM", "XLMRobertaConfig", pad_token_id=1, **_COMMON),
    "modernbert": _hf(
        "ModernBertForMaskedLM",
        "ModernBertConfig",
        vocab_size=V,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=L,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        sep_token_id=2,
        cls_token_id=1,
    ),
}
CLASSIFIERS: dict[str, Callable[[], nn.Module]] = {
    "bert_cls": _hf("BertForSequenceClassification", "BertConfig", num_labels=3, **_COMMON),
    "distilbert_cls": _hf("DistilBertForSequenceClassification", "DistilBertConfig", num_labels=3, **_DISTILBERT),
}
ENCODER_DECODERS: dict[str, Callable[[], nn.Module]] = {
    "t5": _hf(
        "T5ForConditionalGeneration",
        "T5Config",
        vocab_size=V,
        d_model=32,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_heads=4,
        decoder_start_token_id=0,
        n_positions=L,  # as in t5-small's config (512): the length it was trained for
    ),
    "bart": _hf(
        "BartForConditionalGeneration",
        "BartConfig",
        vocab_size=V,
        d_model=32,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_position_embeddings=L,
    ),
}
FAMILIES = {**CAUSAL_LMS, **MASKED_LMS, **CLASSIFIERS, **ENCODER_DECODERS}


class Zoo(dict):
    """Builds each model the first time it is asked for, seeded, and keeps it."""

    def __missing__(self, name: str) -> nn.Module:
        tf.logging.set_verbosity_error()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            self[name] = FAMILIES[name]()
        return self[name]

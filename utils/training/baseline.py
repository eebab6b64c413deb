"""A fair baseline: a standard transformer of the same size, vocabulary and context length.

    sizing = size_baseline(adapted)          # BaselineSizing: n_layer, n_embd, n_head, counts
    baseline = build_baseline(sizing)        # a random-init GPT2LMHeadModel (BertForMaskedLM, BART)

A causal LM is compared with GPT-2 (`GPT2LMHeadModel`), a masked LM with BERT
(`BertForMaskedLM`), an encoder-decoder with BART (`BartForConditionalGeneration`, as many
decoder as encoder layers), all from `transformers` with random weights. The shape is searched
over depth and width so that the total parameter count is within 10% of the user's model,
and among the shapes that are, the one whose non-embedding count is also closest wins: the
comparison is then about the design, not about how many weights each side got.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

from torch import nn

from utils.adapters import AdaptedModel, adapt
from utils.errors import ToolkitError

MAX_SIZE_ERROR = 0.10  # the baseline's total parameters are within 10% of the user's
_WIDTH_STEP = 16
_MAX_WIDTH = 4096
_MAX_LAYERS = 48
_HEAD_DIM = 64  # GPT-2 and BERT use 64-wide heads


class BaselineError(ToolkitError, ValueError):
    """No standard baseline fits this model; the message says why."""


@dataclass(frozen=True)
class ParameterCount:
    """Unique parameters (tied weights once); embeddings are the token and position tables."""

    total: int
    embedding: int

    @property
    def non_embedding(self) -> int:
        return self.total - self.embedding


@dataclass(frozen=True)
class BaselineSizing:
    """The baseline's shape and how close its size is to the user's model."""

    family: str  # "gpt2", "bert" or "bart"
    n_layer: int  # for BART, the layers of each of the encoder and the decoder
    n_embd: int
    n_head: int
    vocab_size: int
    max_seq_len: int
    total: int
    non_embedding: int
    target_total: int
    target_non_embedding: int

    @property
    def total_error(self) -> float:
        """Relative difference in total parameters (0.03 = 3% more than the user's)."""
        return (self.total - self.target_total) / self.target_total

    @property
    def non_embedding_error(self) -> float:
        return (self.non_embedding - self.target_non_embedding) / max(self.target_non_embedding, 1)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "total_error": self.total_error, "non_embedding_error": self.non_embedding_error}


def count_parameters(model: nn.Module) -> ParameterCount:
    """Total unique parameters and those in embedding tables (token and learned positions)."""
    params = {id(p): p.numel() for p in model.parameters()}
    embedding = {id(m.weight): m.weight.numel() for m in model.modules() if isinstance(m, nn.Embedding)}
    return ParameterCount(sum(params.values()), sum(embedding.values()))


def gpt2_parameters(vocab: int, ctx: int, d: int, layers: int) -> ParameterCount:
    """GPT2LMHeadModel's count: token and position tables, 12d^2 + 13d a block (attention
    qkv and projection, a 4d MLP, two LayerNorms), a final LayerNorm; the head is tied."""
    embedding = (vocab + ctx) * d
    return ParameterCount(embedding + layers * (12 * d * d + 13 * d) + 2 * d, embedding)


def bert_parameters(vocab: int, ctx: int, d: int, layers: int) -> ParameterCount:
    """BertForMaskedLM's count: token, position and two token-type tables with a LayerNorm,
    12d^2 + 13d a block, the prediction head's transform (d^2 + d, a LayerNorm) and its
    output bias; the decoder weight is tied to the token table."""
    embedding = (vocab + ctx + 2) * d
    head = d * d + d + 2 * d + vocab
    return ParameterCount(embedding + 2 * d + layers * (12 * d * d + 13 * d) + head, embedding)


def bart_parameters(vocab: int, ctx: int, d: int, layers: int) -> ParameterCount:
    """BartForConditionalGeneration's count with `layers` encoder and `layers` decoder layers:
    the shared token table and two position tables of ctx + 2 rows, 12d^2 + 13d an encoder
    layer, 16d^2 + 19d a decoder layer (cross-attention and its LayerNorm besides), two
    embedding LayerNorms; the head is tied to the token table."""
    embedding = (vocab + 2 * (ctx + 2)) * d
    return ParameterCount(embedding + layers * (28 * d * d + 32 * d) + 4 * d, embedding)


_COUNTERS = {"gpt2": gpt2_parameters, "bert": bert_parameters, "bart": bart_parameters}
_FAMILIES = {"causal_lm": "gpt2", "masked_lm": "bert", "seq2seq": "bart"}


def heads_for(width: int) -> int:
    """64-wide heads where the width allows, else the most heads that divide it evenly."""
    heads = max(1, width // _HEAD_DIM)
    while width % heads:
        heads -= 1
    return heads


def size_baseline(model: Any, *, vocab_size: int | None = None, max_seq_len: int | None = None) -> BaselineSizing:
    """The standard shape closest in size to `model` (an nn.Module or AdaptedModel)."""
    adapted = model if isinstance(model, AdaptedModel) else adapt(model)
    family = _family(adapted)
    vocab = vocab_size or adapted.profile.vocab_size
    ctx = max_seq_len or adapted.profile.max_seq_len
    if not vocab or not ctx:
        raise BaselineError(
            "the baseline needs the model's vocabulary size and maximum "
            "length; pass vocab_size= and max_seq_len= (or a config.json "
            "stating them)"
        )
    target = count_parameters(adapted.model)
    count = _COUNTERS[family]
    best = None
    for layers, width in _shapes():
        c = count(vocab, ctx, width, layers)
        error = abs(c.total - target.total) / target.total
        if error > MAX_SIZE_ERROR:
            continue
        score = error + abs(c.non_embedding - target.non_embedding) / max(target.non_embedding, 1)
        if best is None or score < best[0]:
            best = (score, layers, width, c)
    if best is None:
        raise BaselineError(
            f"no {family} shape (1-{_MAX_LAYERS} layers, width {_WIDTH_STEP}-{_MAX_WIDTH}) "
            f"with vocabulary {vocab} and context {ctx} comes within "
            f"{MAX_SIZE_ERROR:.0%} of the model's {target.total:,} parameters (its "
            f"embedding tables alone take {vocab * _WIDTH_STEP:,} at the narrowest width)"
        )
    _, layers, width, c = best
    return BaselineSizing(
        family,
        layers,
        width,
        heads_for(width),
        vocab,
        ctx,
        c.total,
        c.non_embedding,
        target.total,
        target.non_embedding,
    )


def _family(adapted: AdaptedModel) -> str:
    task = adapted.profile.task
    if task not in _FAMILIES:
        raise BaselineError(
            f"a standard baseline exists for causal and masked language models and encoder-decoders; "
            f"this model's task is {task}"
        )
    return _FAMILIES[task]


def _shapes() -> Iterator[tuple[int, int]]:
    for layers in range(1, _MAX_LAYERS + 1):
        for width in range(_WIDTH_STEP, _MAX_WIDTH + 1, _WIDTH_STEP):
            yield layers, width


def build_baseline(
    sizing: BaselineSizing,
    *,
    dropout: float = 0.0,
    pad_token_id: int | None = None,
    eos_token_id: int | None = None,
    seed: int = 0,
) -> nn.Module:
    """The random-init transformers model for `sizing`, built offline from a config."""
    import torch
    from transformers import BertConfig, BertForMaskedLM, GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    s = sizing
    if s.family == "bart":
        return _bart(s, dropout, pad_token_id, eos_token_id)
    if s.family == "gpt2":
        config = GPT2Config(
            vocab_size=s.vocab_size,
            n_positions=s.max_seq_len,
            n_embd=s.n_embd,
            n_layer=s.n_layer,
            n_head=s.n_head,
            resid_pdrop=dropout,
            embd_pdrop=dropout,
            attn_pdrop=dropout,
            tie_word_embeddings=True,
            bos_token_id=eos_token_id,
            eos_token_id=eos_token_id,
            pad_token_id=pad_token_id,
        )
        return GPT2LMHeadModel(config)
    config = BertConfig(
        vocab_size=s.vocab_size,
        max_position_embeddings=s.max_seq_len,
        hidden_size=s.n_embd,
        num_hidden_layers=s.n_layer,
        num_attention_heads=s.n_head,
        intermediate_size=4 * s.n_embd,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
        pad_token_id=pad_token_id or 0,
        tie_word_embeddings=True,
    )
    return BertForMaskedLM(config)


def _bart(s: BaselineSizing, dropout: float, pad_token_id: int | None, eos_token_id: int | None) -> nn.Module:
    """BART's decoder starts from its end-of-text token, as the pretrained models do. Without
    a padding token, EOS stands in for it in the config (BART's shift needs one), but its
    embedding row keeps learning: packed rows hold no padding, and EOS is a real input."""
    import torch
    from transformers import BartConfig, BartForConditionalGeneration

    eos = eos_token_id if eos_token_id is not None else 0
    pad = pad_token_id if pad_token_id is not None else eos
    config = BartConfig(
        vocab_size=s.vocab_size,
        max_position_embeddings=s.max_seq_len,
        d_model=s.n_embd,
        encoder_layers=s.n_layer,
        decoder_layers=s.n_layer,
        encoder_attention_heads=s.n_head,
        decoder_attention_heads=s.n_head,
        encoder_ffn_dim=4 * s.n_embd,
        decoder_ffn_dim=4 * s.n_embd,
        dropout=dropout,
        attention_dropout=dropout,
        activation_dropout=0.0,
        pad_token_id=pad,
        bos_token_id=eos,
        eos_token_id=eos,
        decoder_start_token_id=eos,
        forced_eos_token_id=None,
        tie_word_embeddings=True,
    )
    model = BartForConditionalGeneration(config)
    if pad_token_id is None:
        inner = model.model
        for table in (inner.shared, inner.encoder.embed_tokens, inner.decoder.embed_tokens):
            table.padding_idx = None
        with torch.no_grad():
            inner.shared.weight[pad].normal_(0.0, config.init_std)
    return model


def model_dropout(model: nn.Module) -> float:
    """The dropout the user's model trains with (its most common nn.Dropout rate), so the
    baseline is regularised the same way; 0 when it has none."""
    rates = [m.p for m in model.modules() if isinstance(m, nn.Dropout)]
    return max(set(rates), key=rates.count) if rates else 0.0

"""The toolkit's domain vocabulary, spelled once: what a model does, how its padding mask
reads, what its output holds, the label that is never trained on, and the many names one
size goes by in configs and constructors.

The types are `Literal`s over plain strings, so profiles, reports and JSON carry the same
text a user writes (`task="causal_lm"`), and the tuples beside them are what code validates
and iterates over.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Literal, get_args

if TYPE_CHECKING:  # torch costs seconds to import; the command line reads TASKS without it
    from torch import nn

# -- what a model does --------------------------------------------------------------------

Task = Literal["causal_lm", "masked_lm", "classification", "encoder", "seq2seq"]
TASKS: tuple[str, ...] = get_args(Task)
# logits over the vocabulary per position (a seq2seq model's: per target position)
LM_TASKS: tuple[str, ...] = ("causal_lm", "masked_lm", "seq2seq")
LOSS_TASKS: tuple[str, ...] = ("causal_lm", "masked_lm", "classification", "seq2seq")  # trainable
DATA_TASKS: tuple[str, ...] = ("causal_lm", "masked_lm", "classification", "seq2seq")  # the data module's


def longest_row(task: str | None, max_seq_len: int | None) -> int | None:
    """The longest data row (seq_len, max_length) a model of `max_seq_len` positions takes:
    an encoder-decoder's row is a source and a target of up to max_seq_len each."""
    if max_seq_len is None:
        return None
    return 2 * max_seq_len if task == "seq2seq" else max_seq_len


# -- how a padding mask reads -------------------------------------------------------------

# "keep_one": 1 = attend, 0 = pad (Hugging Face's attention_mask);
# "pad_true": True = pad (PyTorch's key_padding_mask).
MaskConvention = Literal["keep_one", "pad_true"]
MASK_CONVENTIONS: tuple[str, ...] = get_args(MaskConvention)
# Mask parameter names whose convention is fixed by the ecosystem they come from.
KEEP_ONE_MASK_NAMES: tuple[str, ...] = ("attention_mask", "input_mask")
PAD_TRUE_MASK_NAMES: tuple[str, ...] = ("key_padding_mask", "src_key_padding_mask", "padding_mask", "pad_mask")

# -- what the output holds ----------------------------------------------------------------

OutputKind = Literal["logits", "log_probs", "probs"]
OUTPUT_KINDS: tuple[str, ...] = get_args(OutputKind)

# -- labels -------------------------------------------------------------------------------

IGNORE_INDEX = -100  # a label position no loss is taken on (padding, unmasked MLM tokens)

# -- names of sizes -----------------------------------------------------------------------

# Keys config.json is read under for the two sizes every check needs.
CONFIG_VOCAB_KEYS: tuple[str, ...] = ("vocab_size", "n_vocab")
CONFIG_SEQ_LEN_KEYS: tuple[str, ...] = (
    "max_seq_len",
    "seq_length",
    "block_size",
    "n_positions",
    "max_position_embeddings",
)
# Every name the two sizes go by as a model attribute or a constructor parameter.
VOCAB_SIZE_NAMES: tuple[str, ...] = ("vocab_size", "n_vocab", "ntoken", "num_tokens")
SEQ_LEN_NAMES: tuple[str, ...] = CONFIG_SEQ_LEN_KEYS + ("max_len", "context_length", "n_ctx")

# -- names of embedding tables ------------------------------------------------------------

_POSITION_TABLE = re.compile(r"pos|wpe", re.IGNORECASE)


def position_embedding(model: nn.Module) -> tuple[str, nn.Embedding] | None:
    """The first nn.Embedding named like a position table (`pos`, `wpe`)."""
    from torch import nn

    for name, module in model.named_modules():
        if isinstance(module, nn.Embedding) and _POSITION_TABLE.search(name):
            return name, module
    return None


_NOT_TOKEN_TABLE = re.compile(r"pos|wpe|token_type|segment|type_emb", re.IGNORECASE)


def token_embedding(
    model: nn.Module, vocab_size: int | None = None, *, by_name: bool = False
) -> tuple[str, nn.Module] | None:
    """(qualified name, module) of the layer that turns token ids into vectors: the model's
    `get_input_embeddings()` when it has one, else the nn.Embedding with `vocab_size` rows,
    else the first nn.Embedding not named like a position or segment table, else the largest
    nn.Embedding (position tables are shorter than vocabularies).

    `by_name` keeps only the name rule, for checking a config against the model: there the
    table must be one the model's own names say holds tokens, or none at all."""
    from torch import nn

    tables = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Embedding)]
    named = next(((n, m) for n, m in tables if not _NOT_TOKEN_TABLE.search(n)), None)
    if by_name:
        return named
    getter = getattr(model, "get_input_embeddings", None)
    if callable(getter):
        try:
            emb = getter()
        except Exception:  # noqa: BLE001 - base classes raise when a model has none
            emb = None
        names = {id(m): n for n, m in model.named_modules()}
        if isinstance(emb, nn.Module) and id(emb) in names:
            return names[id(emb)], emb
    exact = next(((n, m) for n, m in tables if m.num_embeddings == vocab_size), None)
    if exact is not None or named is not None:
        return exact or named
    return max(tables, key=lambda nm: nm[1].num_embeddings) if tables else None

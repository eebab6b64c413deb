"""Public pretrained tokenizers by vocabulary size, and loading them without hanging offline.

`KNOWN_TOKENIZERS` maps a model's vocabulary size (its embedding rows) to an ungated Hugging
Face repository whose tokenizer fits it. `length` is `len(tokenizer)` of that repository:
base vocabulary plus added and special tokens (not `tokenizer.vocab_size`, which leaves the
added ones out: Qwen2 reports 151643 but emits ids up to 151645, so a 151643-row model cannot
use it). A model may have more rows than the tokenizer has tokens (vocabularies are padded to
a multiple of 64 or 128 for speed, e.g. nanoGPT's 50304 for GPT-2's 50257): the extra rows
are never used, and every match says how many.

When a tokenizer is actually loaded, its real length is compared with the table again
(`check_loaded_length`), so a repository that changed upstream is caught, not trusted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

PADDING_MULTIPLES = (64, 128)


@dataclass(frozen=True)
class KnownTokenizer:
    """A public tokenizer: where it lives and how many ids it can emit."""

    repo: str
    length: int
    family: str


@dataclass(frozen=True)
class KnownMatch:
    """A known tokenizer that fits a model of `vocab_size` rows."""

    tokenizer: KnownTokenizer
    vocab_size: int
    how: str

    @property
    def unused_rows(self) -> int:
        return self.vocab_size - self.tokenizer.length


GPT2 = KnownTokenizer("openai-community/gpt2", 50257, "GPT-2")
BERT_UNCASED = KnownTokenizer("google-bert/bert-base-uncased", 30522, "BERT uncased")
BERT_CASED = KnownTokenizer("google-bert/bert-base-cased", 28996, "BERT cased")
ALBERT = KnownTokenizer("albert/albert-base-v2", 30000, "ALBERT")
T5 = KnownTokenizer("google-t5/t5-small", 32100, "T5")
ROBERTA = KnownTokenizer("FacebookAI/roberta-base", 50265, "RoBERTa/BART")
OPT = KnownTokenizer("facebook/opt-125m", 50265, "OPT")
PYTHIA = KnownTokenizer("EleutherAI/pythia-160m", 50277, "Pythia/GPT-NeoX")
LLAMA2 = KnownTokenizer("NousResearch/Llama-2-7b-hf", 32000, "Llama 2")
MISTRAL_V03 = KnownTokenizer("unsloth/mistral-7b-v0.3", 32768, "Mistral v0.3")
QWEN2 = KnownTokenizer("Qwen/Qwen2-0.5B", 151646, "Qwen2")
SMOLLM = KnownTokenizer("HuggingFaceTB/SmolLM-135M", 49152, "SmolLM")
LLAMA3 = KnownTokenizer("NousResearch/Meta-Llama-3-8B", 128256, "Llama 3")
FALCON = KnownTokenizer("tiiuae/falcon-7b", 65024, "Falcon")
XLM_ROBERTA = KnownTokenizer("FacebookAI/xlm-roberta-base", 250002, "XLM-RoBERTa")
MT5 = KnownTokenizer("google/mt5-small", 250100, "mT5")
BLOOM = KnownTokenizer("bigscience/bloom-560m", 250680, "BLOOM")

# (model vocabulary size, tokenizer): a size appears once; the tokenizer's own length first,
# then the padded sizes real models of that family use.
_ENTRIES: tuple[tuple[int, KnownTokenizer], ...] = (
    (50257, GPT2),
    (50304, GPT2),  # nanoGPT: 50257 padded to a multiple of 64 (Pythia also fits, see below)
    (30522, BERT_UNCASED),
    (28996, BERT_CASED),
    (30000, ALBERT),
    (32100, T5),
    (32128, T5),  # T5 checkpoints' embedding size
    (50265, ROBERTA),  # BART has the same 50265-token vocabulary
    (50272, OPT),  # OPT checkpoints' embedding size
    (50277, PYTHIA),
    (50432, PYTHIA),  # Pythia 6.9B/12B and GPT-NeoX-20B
    (32000, LLAMA2),
    (32768, MISTRAL_V03),
    (151646, QWEN2),
    (151936, QWEN2),  # Qwen2 0.5B-1.5B checkpoints
    (152064, QWEN2),  # Qwen2 7B and 72B checkpoints
    (49152, SMOLLM),
    (128256, LLAMA3),
    (65024, FALCON),
    (250002, XLM_ROBERTA),
    (250100, MT5),
    (250112, MT5),  # mT5 checkpoints' embedding size
    (250680, BLOOM),
    (250880, BLOOM),  # BLOOM checkpoints' embedding size
)


def build_table(entries: Iterable[tuple[int, KnownTokenizer]]) -> dict[int, KnownTokenizer]:
    """The size -> tokenizer table, refusing a size listed twice or a tokenizer that does
    not fit the size it is listed under."""
    table: dict[int, KnownTokenizer] = {}
    for size, tok in entries:
        if size in table:
            raise ValueError(f"vocabulary size {size} is listed twice: {table[size].repo} and {tok.repo}")
        if tok.length > size:
            raise ValueError(f"{tok.repo} emits ids up to {tok.length - 1}, which do not fit {size} rows")
        table[size] = tok
    return table


KNOWN_TOKENIZERS: dict[int, KnownTokenizer] = build_table(_ENTRIES)


def find_known_tokenizers(vocab_size: int, table: Mapping[int, KnownTokenizer] | None = None) -> list[KnownMatch]:
    """Every known tokenizer that fits `vocab_size` rows, best first: the one listed under
    that size, then those whose length padded to a multiple of 64 or 128 is that size."""
    table = KNOWN_TOKENIZERS if table is None else table
    matches: list[KnownMatch] = []
    if vocab_size in table:
        matches.append(KnownMatch(table[vocab_size], vocab_size, "listed for this size"))
    padded = []
    for tok in {t.repo: t for t in table.values()}.values():
        multiples = [m for m in PADDING_MULTIPLES if -(-tok.length // m) * m == vocab_size]
        if multiples and tok.length <= vocab_size and all(tok.repo != m.tokenizer.repo for m in matches):
            padded.append(KnownMatch(tok, vocab_size, f"{tok.length} padded to a multiple of {multiples[0]}"))
    return matches + sorted(padded, key=lambda m: (m.unused_rows, m.tokenizer.repo))


def check_loaded_length(match: KnownMatch, tokenizer: Any) -> str:
    """'' when the loaded tokenizer fits the model, else why not (the table may be stale)."""
    actual = len(tokenizer)
    if actual > match.vocab_size:
        return (
            f"{match.tokenizer.repo} has {actual} tokens, more than the model's {match.vocab_size} "
            f"rows (the table says {match.tokenizer.length}; the repository changed)"
        )
    return ""


def load_pretrained(repo: str, offline_reason: Callable[[], str]) -> Any:
    """Load `repo` with `AutoTokenizer`: from the local cache first, from the hub only when
    `offline_reason()` (asked only on a cache miss) is empty. Never runs repository code."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(repo, local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError) as exc:
        reason = offline_reason()
        if reason:
            raise OSError(f"not in the local cache, and the hub is unavailable: {reason}") from exc
    return AutoTokenizer.from_pretrained(repo, trust_remote_code=False)

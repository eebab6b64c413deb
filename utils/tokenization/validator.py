"""Check a tokenizer against a model before any data reaches it.

An id at or above the model's vocabulary size is a device-side assert on a GPU (an opaque
crash far from its cause); a missing or colliding special token silently corrupts padding
and labels; a lossy round trip or a high unknown rate hides text from the model. Each is
cheap to find here and expensive to find in training.

Checks (each a `CheckResult` in a `TierReport` named "tokenizer"):

- `tokenizer.id_range`: every id the tokenizer can emit is below `expected_vocab_size`;
- `tokenizer.special_tokens`: every special token is in the vocabulary and has an id of its
  own (except GPT-2's one end-of-text token serving as bos/eos/unk and padding too);
  missing padding or end-of-text is a warning;
- `tokenizer.round_trip`: decode(encode(s)) == s on a multilingual set; exact for tokenizers
  that are lossless by construction, reported (warn) for the others;
- `tokenizer.coverage`: unknown-token rate and characters per token on the user's text.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from utils.checks import CheckResult, CheckSet, TierReport, Verdict, run_checks
from utils.errors import TokenizerValidationError

ROUND_TRIP_TEXTS = (
    "",
    " ",
    "  \t\n  ",
    "Hello, world! It's 3.14 (or so).",
    "Emoji: 👋🏽 👨‍👩‍👧 🇺🇳",
    "中文：你好，世界。日本語：こんにちは。한국어: 안녕하세요",
    "العربية: مرحبا بالعالم",
    "עברית: שלום עולם",
    "Combining: e\u0301 a\u0308 n\u0303 \u0915\u093f",
    "Ελληνικά και русский текст",
    "line one\nline two\r\nTabs\tand  double  spaces",
)
# Roles that may share one id, provided end-of-text is among them: GPT-2's single
# <|endoftext|> serves as bos, eos and unk, and padding commonly reuses it.
_END_OF_TEXT_FAMILY = frozenset({"bos_token", "eos_token", "unk_token", "pad_token"})


TOKENIZER_CHECKS = CheckSet("tokenizer")


@dataclass(frozen=True)
class CoverageThresholds:
    # More than 1 token in 20 unknown: the model would miss whole words of the user's text.
    unk_fail_rate: float = 0.05
    # Above 1 in 1000: rare characters are lost; worth saying, not worth refusing.
    unk_warn_rate: float = 0.001
    # Fewer characters than tokens: text spelled out byte by byte (long sequences, weak model).
    min_chars_per_token: float = 1.0


@dataclass
class _Context:
    tokenizer: Any
    vocab_size: int
    texts: list[str] | None
    lossless: bool


class TokenizerValidator:
    """`validate(tok, expected_vocab_size, texts=..., strict=...)` -> `TierReport`."""

    @staticmethod
    def validate(
        tokenizer: Any,
        expected_vocab_size: int,
        texts: Iterable[str] | None = None,
        strict: bool = False,
        lossless: bool | None = None,
        max_chars: int = 2_000_000,
    ) -> TierReport:
        """`texts`: the user's text, for the coverage check (the first `max_chars`
        characters). `lossless`: whether the round trip must be exact; by default, true for
        byte-level BPE and byte-fallback tokenizers. `strict=True` raises on any failure."""
        if not isinstance(expected_vocab_size, int) or expected_vocab_size < 1:
            raise ValueError(f"expected_vocab_size must be a positive integer, got {expected_vocab_size!r}")
        ctx = _Context(
            tokenizer=tokenizer,
            vocab_size=expected_vocab_size,
            texts=_sample(texts, max_chars) if texts is not None else None,
            lossless=is_lossless(tokenizer) if lossless is None else lossless,
        )
        report = run_checks("tokenizer", CHECKS, ctx, meta=_meta(ctx), progress=False)
        if strict and report.failed:
            raise TokenizerValidationError(report)
        return report


def is_lossless(tokenizer: Any) -> bool:
    """True when the tokenizer can write any Unicode text exactly: byte-level BPE, or a
    character / sentencepiece-style vocabulary with UTF-8 byte fallback and no normalizer."""
    if getattr(tokenizer, "byte_fallback", False):
        return True
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return False
    spec = json.loads(backend.to_str())
    if spec.get("normalizer") is not None:
        return False
    kinds = {
        spec.get("pre_tokenizer") and spec["pre_tokenizer"].get("type"),
        spec.get("decoder") and spec["decoder"].get("type"),
    }
    return "ByteLevel" in kinds or bool(spec["model"].get("byte_fallback"))


@TOKENIZER_CHECKS.check("tokenizer.id_range")
def check_id_range(ctx: _Context, v: Verdict) -> CheckResult:
    """Every token id is below the model's vocabulary size

    What it checks: the largest id among the vocabulary, the special tokens and the encoded
    multilingual probe texts, against the model's number of embedding rows.
    Why it matters: an id past the embedding table is a device-side assert on a GPU, an
    opaque crash far from its cause that leaves the runtime unusable until it restarts.
    Known false alarms: none; unused rows (a vocabulary padded to a multiple of 64) pass.
    Broken example: a 1000-token tokenizer feeding a model built with vocab_size=800.
    How to fix: give the model vocab_size >= the largest id + 1, or use a tokenizer built
    for the model's size (AdaptiveTokenizer.load_or_create(vocab_size=...)).
    """
    tok = ctx.tokenizer
    vocab_ids = list(tok.get_vocab().values())
    special_ids = [i for i in tok.all_special_ids if i is not None]
    probe_ids = [i for ids in _encode_all(tok, ROUND_TRIP_TEXTS) for i in ids]
    emitted = vocab_ids + special_ids + probe_ids
    max_id = max(emitted)
    size = len(tok)
    metrics = {
        "max_id": max_id,
        "tokenizer_size": size,
        "model_vocab_size": ctx.vocab_size,
        "unused_rows": ctx.vocab_size - (max_id + 1),
    }
    if max_id >= ctx.vocab_size:
        too_big = sum(i >= ctx.vocab_size for i in set(emitted))
        return v.fail(
            f"The tokenizer emits ids up to {max_id} but the model has {ctx.vocab_size} rows: "
            f"{too_big} ids are out of range (on a GPU: a device-side assert).",
            metrics,
            advice=f"Give the model vocab_size >= {max_id + 1}, or use a tokenizer built for "
            f"{ctx.vocab_size} tokens (AdaptiveTokenizer.load_or_create(vocab_size={ctx.vocab_size})).",
        )
    return v.pass_(
        f"All ids are below {ctx.vocab_size} (largest {max_id}); "
        f"{metrics['unused_rows']} embedding rows are never used.",
        metrics,
    )


@TOKENIZER_CHECKS.check("tokenizer.special_tokens")
def check_special_tokens(ctx: _Context, v: Verdict) -> CheckResult:
    """Padding and end-of-text tokens exist and do not collide

    What it checks: every special token is in the vocabulary and has an id of its own;
    padding and end-of-text exist (their absence is a warning).
    Why it matters: a missing or shared special token silently corrupts padding, labels and
    document boundaries when packing.
    Known false alarms: GPT-2's single <|endoftext|> serving as bos, eos, unk and padding is
    accepted, since end-of-text is among the roles sharing it.
    Broken example: a tokenizer whose pad token and unk token share one id.
    How to fix: give each role its own token (tokenizer.add_special_tokens(...), growing the
    model's vocab_size to len(tokenizer)), or reuse eos for padding.
    """
    tok = ctx.tokenizer
    vocab = tok.get_vocab()
    roles = {role: str(value) for role, value in tok.special_tokens_map.items() if isinstance(value, str)}
    ids = {role: vocab.get(token) for role, token in roles.items()}
    metrics = {"tokens": roles, "ids": ids}
    problems = [f"{role} {roles[role]!r} is not in the vocabulary" for role, i in ids.items() if i is None]
    problems += _collisions(ids)
    missing = [r for r in ("pad_token", "eos_token") if r not in roles]
    if problems:
        return v.fail(
            "; ".join(problems) + ".",
            metrics,
            advice="Give each role its own token in the vocabulary, e.g. "
            "tokenizer.add_special_tokens({'pad_token': '<pad>'}) (and grow the model's "
            "vocab_size to len(tokenizer)), or reuse eos for padding: tokenizer.pad_token = tokenizer.eos_token.",
        )
    if missing:
        return v.warn(
            f"No {' and no '.join(missing)}: batches cannot be padded and documents cannot be separated when packing.",
            metrics,
            advice="Set them, e.g. tokenizer.pad_token = tokenizer.eos_token, or "
            "tokenizer.add_special_tokens({'eos_token': '</s>'}).",
        )
    return v.pass_(
        "Special tokens: " + ", ".join(f"{r}={roles[r]!r} ({ids[r]})" for r in roles) + ".",
        metrics,
    )


@TOKENIZER_CHECKS.check("tokenizer.round_trip")
def check_round_trip(ctx: _Context, v: Verdict) -> CheckResult:
    """decode(encode(text)) gives the text back

    What it checks: decode(encode(s)) == s on a multilingual set (emoji, CJK, Arabic,
    Hebrew, combining marks, whitespace).
    Why it matters: a tokenizer that alters text hides part of it from the model, and
    generated text cannot match the input.
    Known false alarms: tokenizers lossy by design (normalising, with an unknown token) only
    warn; they fail only when they should be lossless (byte-level, byte fallback).
    Broken example: a byte-level BPE tokenizer with a lowercasing normalizer.
    How to fix: rebuild the tokenizer without the normalizer (FastBPETrainer,
    CharacterLevelTokenizer), or pass lossless=False if the loss is intended.
    """
    tok = ctx.tokenizer
    decoded = [tok.decode(ids, skip_special_tokens=True) for ids in _encode_all(tok, ROUND_TRIP_TEXTS)]
    broken = [(t, d) for t, d in zip(ROUND_TRIP_TEXTS, decoded, strict=True) if t != d]
    metrics = {
        "texts": len(ROUND_TRIP_TEXTS),
        "mismatches": len(broken),
        "lossless_expected": ctx.lossless,
        "examples": [{"text": t, "decoded": d} for t, d in broken[:3]],
    }
    if not broken:
        return v.pass_(
            f"All {len(ROUND_TRIP_TEXTS)} multilingual texts (emoji, CJK, Arabic, Hebrew, "
            "combining marks, whitespace) come back exactly.",
            metrics,
        )
    first = f"{broken[0][0]!r} -> {broken[0][1]!r}"
    if ctx.lossless:
        return v.fail(
            f"{len(broken)} of {len(ROUND_TRIP_TEXTS)} texts change on a round trip although "
            f"this tokenizer should be lossless, e.g. {first}.",
            metrics,
            advice="The tokenizer's normalizer or decoder alters text; rebuild it "
            "(FastBPETrainer, CharacterLevelTokenizer) or pass lossless=False if this is intended.",
        )
    return v.warn(
        f"Lossy by design: {len(broken)} of {len(ROUND_TRIP_TEXTS)} texts change, e.g. {first}.",
        metrics,
        advice="Generated text will not match the input exactly (normalisation, unknown "
        "characters). Fine for many tasks; use a byte-level tokenizer when exact text matters.",
    )


@TOKENIZER_CHECKS.check("tokenizer.coverage", thresholds=CoverageThresholds())
def check_coverage(ctx: _Context, v: Verdict) -> CheckResult:
    """Unknown-token rate and characters per token on your text

    What it checks: the share of unknown tokens and the characters per token on the user's
    text (skipped when no text is given).
    Why it matters: unknown tokens are text the model never sees; fewer than one character
    per token means text spelled out byte by byte, long sequences and a weaker model.
    Known false alarms: a character tokenizer on a script it was not built for warns, which
    is the point; byte-fallback tokenizers never produce unknown tokens.
    Broken example: a word-level vocabulary without byte fallback on text in another
    language.
    How to fix: use a tokenizer with byte fallback (CharacterLevelTokenizer with vocab_size
    >= 400, byte-level BPE) or one trained on this text.
    """
    t = v.thresholds
    if not ctx.texts:
        return v.skip(
            "No text given: pass texts=... to measure the unknown-token rate.",
        )
    tok = ctx.tokenizer
    ids = [i for seq in _encode_all(tok, ctx.texts) for i in seq]
    n_chars = sum(len(t) for t in ctx.texts)
    unk = tok.unk_token_id
    n_unk = sum(i == unk for i in ids) if unk is not None else 0
    rate = n_unk / max(len(ids), 1)
    per_token = n_chars / max(len(ids), 1)
    metrics = {
        "chars": n_chars,
        "tokens": len(ids),
        "unknown_tokens": n_unk,
        "unknown_rate": rate,
        "chars_per_token": per_token,
    }
    summary = f"{rate:.2%} of {len(ids)} tokens are unknown; {per_token:.2f} characters per token."
    if rate > t.unk_fail_rate:
        status, advice = (
            "fail",
            (
                "The model would not see much of your text. Use a tokenizer with byte fallback "
                "(CharacterLevelTokenizer with vocab_size >= 400, or byte-level BPE) or one "
                "trained on this text."
            ),
        )
    elif rate > t.unk_warn_rate or per_token < t.min_chars_per_token:
        status, advice = (
            "warn",
            (
                "Some characters are unknown or spelled out byte by byte; a larger vocabulary or "
                "a tokenizer trained on this text would represent it better."
            ),
        )
    else:
        status, advice = "pass", ""
    return v.result(status, summary, metrics, advice)


CHECKS = list(TOKENIZER_CHECKS)


def _collisions(ids: dict[str, int | None]) -> list[str]:
    by_id: dict[int, set[str]] = {}
    for role, i in ids.items():
        if i is not None:
            by_id.setdefault(i, set()).add(role)
    return [
        f"{' and '.join(sorted(roles))} share id {i}"
        for i, roles in by_id.items()
        if len(roles) > 1 and not ("eos_token" in roles and roles <= _END_OF_TEXT_FAMILY)
    ]


def _encode_all(tok: Any, texts: Sequence[str]) -> list[list[int]]:
    encode_to_arrays = getattr(tok, "encode_to_arrays", None)
    if encode_to_arrays is not None:
        return [a.tolist() for a in encode_to_arrays(list(texts))]
    return [list(ids) for ids in tok(list(texts), add_special_tokens=False)["input_ids"]]


def _sample(texts: Iterable[str], max_chars: int) -> list[str]:
    if isinstance(texts, str):
        raise TypeError("texts must be an iterable of strings, not one string: wrap it in a list")
    sample, size = [], 0
    for text in texts:
        sample.append(text[: max_chars - size])
        size += len(sample[-1])
        if size >= max_chars:
            break
    return sample


def _meta(ctx: _Context) -> dict[str, Any]:
    return {
        "tokenizer": type(ctx.tokenizer).__name__,
        "tokenizer_size": len(ctx.tokenizer),
        "model_vocab_size": ctx.vocab_size,
        "lossless_expected": ctx.lossless,
    }

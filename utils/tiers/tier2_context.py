"""What every Tier 2 analysis receives: the adapted model, the batch it is analysed on (real
text or seeded random tokens), whether the model looks trained, and the time left.

Whether a model is trained changes what its insides mean: at initialisation attention is
near-uniform, blocks barely change the stream and weight spectra look random, all of which
would be alarming in a trained model. So the tier measures it first (loss on the analysed
input against ln V, the loss of a uniform guess) and every summary reads its numbers for the
one case or the other.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from utils.adapters import AdaptedModel, ModelProfile
from utils.adapters.losses import lm_loss
from utils.checks import CheckResult
from utils.checks.catalogue import Check, CheckSet, Verdict
from utils.tiers.tier1.context import keep_modes
from utils.vocabulary import token_embedding

log = logging.getLogger(__name__)

DEFAULT_BATCH = 4  # rows analysed: two random + two repeated random (or four text windows)
DEFAULT_MAX_T = 32  # tokens per row: enough context for patterns, little enough to be quick
# A model "looks trained" when its loss on the input is below this share of ln V (the loss
# of a uniform guess). At initialisation the loss is ln V within a few percent (Tier 1's
# initial_loss); even a briefly trained model is well under 3/4 of it on text it can predict.
TRAINED_LOSS_RATIO = 0.75
# Above this share of ln V the model is confident and wrong on the input: not at
# initialisation (whose predictions are near-uniform), but trained on other data than this
# (a text model shown random tokens) or initialised far too large. Neither reading applies.
CONFIDENT_WRONG_RATIO = 1.25


@dataclass
class Tier2Context:
    """Shared state for one Tier 2 run. `adapted` is None when the model could not be adapted
    (then `adapt_error` says why and every analysis skips)."""

    adapted: AdaptedModel | None
    adapt_error: str | None
    device: torch.device
    seed: int
    input_ids: torch.Tensor  # (B, T) the analysis batch
    attention_mask: torch.Tensor | None  # (B, T) 1 = real token, or None
    token_strings: list[list[str]] | None  # per row and position, from the tokenizer
    data: str  # "text" or "random"
    time_budget: float
    started: float = field(default_factory=time.perf_counter)
    id_high: int = 2  # random tokens are drawn from [0, id_high)
    pad_id: int | None = None  # the tokenizer's pad token: the attribution baseline
    decode: Callable[[int], str] | None = None  # token id -> its text, from the tokenizer

    @property
    def profile(self) -> ModelProfile:
        assert self.adapted is not None
        return self.adapted.profile

    @property
    def model(self) -> nn.Module:
        assert self.adapted is not None
        return self.adapted.model

    @property
    def deadline(self) -> float:
        return self.started + self.time_budget

    def remaining(self) -> float:
        return self.deadline - time.perf_counter()

    def generator(self, offset: int = 0) -> torch.Generator:
        """A CPU generator seeded from the run's seed; `offset` keeps analyses' draws apart."""
        return torch.Generator().manual_seed(self.seed * 1_000_003 + offset)

    def label(self, row: int, position: int) -> str:
        """How a token is named in figures and metrics: its string, else its id."""
        if self.token_strings is not None:
            return self.token_strings[row][position]
        return f"#{int(self.input_ids[row, position])}"

    def token(self, token_id: int) -> str:
        """A token id as figures and metrics name it: its text when there is a tokenizer."""
        return self.decode(token_id) if self.decode is not None else f"#{token_id}"

    @functools.cached_property
    def embedding(self) -> tuple[str, nn.Module] | None:
        """(name, module) of the token embedding, found once."""
        return token_embedding(self.model, self.profile.vocab_size)

    # -- trained or not ----------------------------------------------------------------

    @functools.cached_property
    def loss(self) -> float | None:
        """The model's loss on the analysed input (None for tasks without one): next-token
        loss for a causal LM (on the repeated halves for random input, the only part a model
        can predict), reproduction of the input for a masked LM."""
        if self.adapted is None or self.profile.task not in ("causal_lm", "masked_lm"):
            return None
        with torch.no_grad():
            logits = self.adapted(self.input_ids, self.attention_mask)
        labels = self.input_ids.clone()
        if self.attention_mask is not None:
            labels[self.attention_mask == 0] = -100
        if self.data == "random" and self.profile.task == "causal_lm":
            labels[: self.input_ids.shape[0] // 2] = -100  # random rows: unpredictable
            labels[:, : self.input_ids.shape[1] // 2 + 1] = -100  # first copy: unpredictable
        loss = lm_loss(logits, labels, self.profile.task, self.profile.output_kind)[0]
        return float(loss) if math.isfinite(float(loss)) else None

    @property
    def uniform_loss(self) -> float | None:
        return math.log(self.profile.vocab_size) if self.profile.vocab_size else None

    @property
    def trained(self) -> bool | None:
        """True when the loss is well below ln V, False when it is about ln V (a near-uniform
        guess, as at initialisation), None when unknown: no loss for the task, or a loss far
        above ln V (confident and wrong on this input)."""
        if self.loss is None or not self.uniform_loss:
            return None
        if self.loss < TRAINED_LOSS_RATIO * self.uniform_loss:
            return True
        return False if self.loss <= CONFIDENT_WRONG_RATIO * self.uniform_loss else None

    def reading(self, trained: str, untrained: str) -> str:
        """What a summary's numbers mean, for a trained or an untrained model; when that is
        unclear (no loss for the task, or confident and wrong on this input) it says so and
        gives the trained reading as conditional."""
        if self.trained is None:
            return f"Whether the model is trained is unclear on this input (see model_state); if it is: {trained}"
        return trained if self.trained else untrained

    def state(self) -> str:
        """'trained', 'untrained' or 'of unknown training' for summaries."""
        return {True: "trained", False: "untrained", None: "of unknown training"}[self.trained]


@dataclass(frozen=True)
class Needs:
    """Preconditions of an analysis; unmet ones make it `skip` with the reason."""

    embedding: bool = False  # a token embedding to attribute over
    vocab: bool = False  # a known vocabulary size (to draw replacement tokens)
    min_seconds: float = 1.0  # time it needs from the budget


def _guard(ctx: Tier2Context, check: Check, v: Verdict, call: Callable[[], CheckResult]) -> CheckResult:
    """What every analysis needs around it: skips for unmet preconditions and an exhausted
    time budget, a fixed seed, eval mode with the model's flags restored, and a crash of the
    measuring code turned into a `skip` with the reason (the model is not at fault for it)."""
    unmet = _unmet(ctx, check.needs or Needs())
    if unmet:
        return v.skip(unmet[0], advice=unmet[1])
    torch.manual_seed(ctx.seed)
    try:
        with keep_modes(ctx.adapted), torch.no_grad():
            ctx.adapted.eval()
            return call()
    except Exception as exc:  # noqa: BLE001 - a failing measurement (OOM too) is a skip
        log.debug("analysis %s could not run", check.id, exc_info=True)
        return v.skip(
            f"Could not be measured: {type(exc).__name__}: {exc}",
            {"traceback": traceback.format_exc(limit=4)},
            advice="A limit of the analysis, not a fault of the model: run with -v "
            "for the traceback, or pass a shorter seq_len.",
        )


TIER2_CHECKS = CheckSet("tier2", guard=_guard)


def within_budget(check: Check) -> Check:
    """`check` with a guard that first skips it, with the reason, when less of the tier's
    time budget is left than it needs (`needs.min_seconds`, else one second); every Tier 2
    analysis, whoever declared it, runs through this."""
    inner = check.guard
    need = getattr(check.needs, "min_seconds", 1.0)

    def guard(ctx: Tier2Context, c: Check, v: Verdict, call: Callable[[], CheckResult]) -> CheckResult:
        if ctx.remaining() < need:
            return v.skip(
                f"Not run: the time budget ({ctx.time_budget:g} s) was used up by the analyses before it.",
                advice="Pass a larger time_budget (or --time-budget).",
            )
        return inner(ctx, c, v, call) if inner is not None else call()

    return dataclasses.replace(check, guard=guard)


def _unmet(ctx: Tier2Context, needs: Needs) -> tuple[str, str] | None:
    if ctx.adapted is None:
        return (
            f"Not run: the model could not be adapted ({ctx.adapt_error}).",
            "Run Tier 1 (tbuilder check) and fix what forward_signature reports.",
        )
    if needs.vocab and not ctx.profile.vocab_size:
        return (
            "Needs the vocabulary size to draw replacement tokens, and it is unknown.",
            'Pass vocab_size=... (or put "vocab_size" in config.json).',
        )
    if needs.embedding and ctx.embedding is None:
        return (
            "The model has no nn.Embedding (or get_input_embeddings()) whose output the analysis could work on.",
            "Nothing to do if the model takes vectors, not tokens; otherwise give it an nn.Embedding for its tokens.",
        )
    return None


def build_inputs(
    vocab: int,
    max_len: int | None,
    seed: int,
    seq_len: int | None,
    tokenizer: Any = None,
    texts: Sequence[str] | None = None,
) -> tuple[torch.Tensor, list[list[str]] | None, str]:
    """(input_ids (B, T), token strings or None, "text" | "random"). Text: B consecutive
    windows of the tokenised texts. Random: two rows of seeded random tokens and two rows of
    a random half-length sequence said twice (which an induction head can predict)."""
    T = seq_len or min(max_len or DEFAULT_MAX_T, DEFAULT_MAX_T)
    B = DEFAULT_BATCH if T != DEFAULT_BATCH else DEFAULT_BATCH + 1  # B != T: layouts stay readable
    if tokenizer is not None and texts:
        stream = _token_stream(tokenizer, texts, B * T)
        if len(stream) < B * T:
            raise ValueError(
                f"texts: the tokenised texts hold {len(stream)} tokens; Tier 2 "
                f"needs at least {B * T} ({B} rows of {T}); give more text or a "
                "smaller seq_len"
            )
        too_big = [i for i in stream[: B * T] if i >= vocab]
        if too_big:
            raise ValueError(
                f"tokenizer: it produced id {max(too_big)}, but the model has only "
                f"{vocab} rows; use the model's own tokenizer"
            )
        ids = torch.tensor(stream[: B * T]).view(B, T)
        return ids, [[token_text(tokenizer, int(i)) for i in row] for row in ids], "text"
    g = torch.Generator().manual_seed(seed * 1_000_003 + 11)
    rand = torch.randint(0, vocab, (B - B // 2, T), generator=g)
    half = (T + 1) // 2
    first = torch.randint(0, vocab, (B // 2, half), generator=g)
    repeated = torch.cat([first, first], dim=1)[:, :T]
    return torch.cat([rand, repeated]), None, "random"


def _token_stream(tokenizer: Any, texts: Sequence[str], need: int) -> list[int]:
    out: list[int] = []
    for text in texts:
        out += list(tokenizer.encode(text, add_special_tokens=False))
        if len(out) >= need:
            break
    return out


def token_text(tokenizer: Any, token_id: int) -> str:
    """A token as a person reads it: its decoded text, spaces shown as '␣'."""
    text = tokenizer.decode([token_id])
    return text.replace(" ", "␣").replace("\n", "⏎") or f"#{token_id}"

"""How much the model's predictions move when its input is disturbed: tokens replaced at
random at several rates, and Gaussian noise of several relative sizes added to the
token-embedding output. Each point is the mean next-token KL(clean || perturbed) over every
real position and the share of positions whose top-1 prediction flipped; rate 0 runs the
same forward on the same input and so gives exactly 0.

    curves = perturbation_curves(adapted, input_ids, generator=torch.Generator().manual_seed(0))
    curves.token[0.1]  # {"kl": ..., "flip_rate": ...}
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from utils.adapters import AdaptedModel
from utils.analysis.hooks import ReplaceOutput
from utils.analysis.predictions import all_log_probs, flip_rate, kl_divergence
from utils.vocabulary import token_embedding

# Shares of real tokens replaced by random ones: from one token in twenty to most of them.
TOKEN_RATES = (0.0, 0.05, 0.1, 0.2, 0.4, 0.8)
# Noise norm relative to each token's embedding norm: 1% is float16-level jitter, 100% drowns
# the token.
NOISE_SIZES = (0.0, 0.01, 0.05, 0.1, 0.3, 1.0)


@dataclass
class PerturbationCurves:
    """rate -> {"kl": mean KL in nats, "flip_rate": share of flipped top-1 predictions}."""

    token: dict[float, dict[str, float]]
    noise: dict[float, dict[str, float]]
    positions: int  # predictions compared at each point
    embedding: str | None  # the module whose output got the noise (None: no noise curve)


def perturbation_curves(
    adapted: AdaptedModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    generator: torch.Generator,
    rates: Sequence[float] = TOKEN_RATES,
    sizes: Sequence[float] = NOISE_SIZES,
    id_high: int | None = None,
) -> PerturbationCurves:
    """Both curves for one batch. Replacement tokens are drawn from [0, id_high) (default: the
    vocabulary) and always differ from the token they replace. Call with the model in eval
    mode; the model is not changed."""
    p = adapted.profile
    high = id_high or p.vocab_size
    if not high or high < 2:
        raise ValueError("replacing tokens needs a vocabulary of at least 2 tokens")
    keep = attention_mask.bool() if attention_mask is not None else torch.ones_like(input_ids, dtype=torch.bool)
    with torch.no_grad():
        clean = all_log_probs(adapted(input_ids, attention_mask), p.output_kind, _keep_for(p, keep))
        token = {}
        for rate in rates:
            ids = replace_tokens(input_ids, keep, rate, high, generator)
            token[float(rate)] = _point(clean, adapted(ids, attention_mask), p, keep)
        found = token_embedding(adapted.model, p.vocab_size)
        noise = {}
        if found is not None:
            for size in sizes:
                with ReplaceOutput(found[1], _noiser(size, generator)):
                    out = adapted(input_ids, attention_mask)
                noise[float(size)] = _point(clean, out, p, keep)
    return PerturbationCurves(token, noise, int(clean.shape[0]), found[0] if found else None)


def replace_tokens(
    ids: torch.Tensor, keep: torch.Tensor, rate: float, high: int, generator: torch.Generator
) -> torch.Tensor:
    """A copy of `ids` with round(rate * real tokens) real positions per row set to a random
    different token; rate 0 returns an identical copy."""
    out = ids.clone()
    for row in range(ids.shape[0]):
        real = keep[row].nonzero().flatten().cpu()
        n = int(round(rate * len(real)))
        if n == 0:
            continue
        pos = real[torch.randperm(len(real), generator=generator)[:n]]
        shift = torch.randint(1, high, (n,), generator=generator)  # never 0: always a new token
        out[row, pos.to(ids.device)] = (ids[row, pos.to(ids.device)].cpu() + shift).remainder(high).to(ids.device)
    return out


def _noiser(size: float, generator: torch.Generator):
    """Adds noise whose norm is `size` times each token vector's norm (in expectation)."""

    def add(out: torch.Tensor) -> torch.Tensor:
        z = torch.randn(out.shape, generator=generator).to(out.device, out.dtype)
        scale = out.norm(dim=-1, keepdim=True) / out.shape[-1] ** 0.5  # per-coordinate RMS
        return out + size * scale * z

    return add


def _keep_for(p, keep: torch.Tensor) -> torch.Tensor | None:
    """Which predictions to compare: real positions of an LM; every row of a classifier."""
    return keep if p.task != "classification" else None


def _point(clean: torch.Tensor, logits: torch.Tensor, p, keep: torch.Tensor) -> dict[str, float]:
    other = all_log_probs(logits, p.output_kind, _keep_for(p, keep))
    return {"kl": float(kl_divergence(clean, other).mean()), "flip_rate": flip_rate(clean, other)}

"""The spectrum of every weight matrix: what heavy-tailed self-regularisation (Martin &
Mahoney, 2021) reads from the eigenvalues of W^T W, and matrices that are exact copies.

- alpha: the exponent of a power law p(lambda) ~ lambda^-alpha fitted to the tail of the
  eigenvalue distribution, by maximum likelihood with the tail start chosen by the smallest
  Kolmogorov-Smirnov distance (Clauset, Shalizi & Newman, 2009), all tail starts at once in
  a few vectorised lines. A random matrix has no power-law tail (large alpha, roughly > 6);
  well-trained layers sit around 2-6; below 2 a layer is dominated by a few directions.
- stable rank |W|_F^2 / |W|_2^2: how many directions carry the matrix's energy.
- spectral norm |W|_2: the largest factor by which the layer stretches an input.

`nn.MultiheadAttention`'s packed `in_proj_weight` is split into its Q, K and V parts.

    rows = weight_spectra(model)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

# Shortest tail the power law is fitted to: fewer eigenvalues give an alpha that is mostly
# noise (Clauset et al. use tails of 50+; small layers do not have that many).
MIN_TAIL = 10
# Matrices with more elements than this are summarised from a random subset of rows large
# enough to keep the top of the spectrum (a 50k-row embedding otherwise dominates runtime).
MAX_ROWS = 4096
# Candidate tail starts tried by the fit (evenly spaced): the KS table is starts x eigenvalues.
MAX_STARTS = 256


@dataclass
class MatrixSpectrum:
    name: str
    shape: tuple[int, ...]
    alpha: float  # nan when the matrix has too few eigenvalues for a fit
    alpha_xmin: float
    tail: int  # eigenvalues in the fitted tail
    stable_rank: float
    spectral_norm: float
    eigenvalues: np.ndarray = field(repr=False)  # of W^T W, descending
    duplicate_of: str | None = None  # an earlier matrix with exactly the same values

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "shape": list(self.shape),
            "alpha": self.alpha,
            "tail": self.tail,
            "stable_rank": self.stable_rank,
            "spectral_norm": self.spectral_norm,
            "duplicate_of": self.duplicate_of,
        }


def weight_matrices(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """(name, 2-D tensor) for each distinct weight matrix, tied ones once, packed attention
    projections split into `<name>[q]`, `[k]`, `[v]`."""
    out = []
    for name, p in model.named_parameters():
        if p.dim() != 2 or min(p.shape) < 2:
            continue
        owner = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
        if isinstance(owner, nn.MultiheadAttention) and name.endswith("in_proj_weight"):
            for part, w in zip("qkv", p.detach().chunk(3, dim=0)):
                out.append((f"{name}[{part}]", w))
        else:
            out.append((name, p.detach()))
    return out


def weight_spectra(
    model: nn.Module, generator: torch.Generator | None = None, include_embeddings: bool = False
) -> list[MatrixSpectrum]:
    """A MatrixSpectrum for every weight matrix. Embedding tables are looked up, not
    multiplied, so their spectrum says little; they are skipped unless asked for, but are
    always compared when looking for duplicates."""
    named = weight_matrices(model)
    dupes = duplicates(named)
    tables = {f"{n}.weight" if n else "weight" for n, m in model.named_modules() if isinstance(m, nn.Embedding)}
    rows = []
    for name, w in named:
        if name in tables and not include_embeddings and name not in dupes:
            continue
        rows.append(matrix_spectrum(name, w, generator, dupes.get(name)))
    return rows


def matrix_spectrum(
    name: str, w: torch.Tensor, generator: torch.Generator | None = None, duplicate_of: str | None = None
) -> MatrixSpectrum:
    x = w.detach().double().cpu()
    if x.shape[0] > MAX_ROWS and x.shape[0] > x.shape[1]:
        g = generator or torch.Generator().manual_seed(0)
        keep = torch.randperm(x.shape[0], generator=g)[:MAX_ROWS]
        x = x[keep] * (w.shape[0] / MAX_ROWS) ** 0.5  # unbiased W^T W
    s = torch.linalg.svdvals(x).numpy()
    eig = s**2
    alpha, xmin, tail = power_law_alpha(eig)
    fro2 = float(eig.sum())
    return MatrixSpectrum(
        name,
        tuple(w.shape),
        alpha,
        xmin,
        tail,
        stable_rank=fro2 / float(eig[0]) if eig[0] > 0 else 0.0,
        spectral_norm=float(s[0]),
        eigenvalues=eig,
        duplicate_of=duplicate_of,
    )


def power_law_alpha(eigenvalues: np.ndarray, min_tail: int = MIN_TAIL) -> tuple[float, float, int]:
    """(alpha, xmin, tail size): the continuous power-law MLE alpha = 1 + n / sum ln(x / xmin)
    for every candidate xmin at once, keeping the one whose fitted CDF is closest (KS) to the
    empirical CDF of its tail."""
    x = np.sort(np.asarray(eigenvalues, dtype=np.float64))
    x = x[x > x.max() * 1e-12] if x.size and x.max() > 0 else x[:0]
    n = x.size
    if n < min_tail:
        return float("nan"), float("nan"), 0
    logx = np.log(x)
    # tail = x[j:]; at most MAX_STARTS candidates keep the KS table small for wide layers
    starts = np.unique(np.linspace(0, n - min_tail, min(n - min_tail + 1, MAX_STARTS)).astype(int))
    m = n - starts  # tail sizes
    suffix = np.cumsum(logx[::-1])[::-1]  # sum of logx[j:]
    denom = suffix[starts] - m * logx[starts]
    with np.errstate(divide="ignore", invalid="ignore"):
        alphas = 1 + m / denom
    # KS distance of each candidate: rows j, columns i >= j of the tail.
    i = np.arange(n)
    ratio = np.log(x[None, :]) - logx[starts, None]  # ln(x_i / x_j)
    fitted = 1 - np.exp((1 - alphas[:, None]) * ratio)
    empirical = (i[None, :] - starts[:, None] + 1) / m[:, None]
    dist = np.abs(np.where(i[None, :] >= starts[:, None], fitted - empirical, 0.0))
    ks = np.where(np.isfinite(alphas) & (denom > 0), dist.max(1), np.inf)
    best = int(np.argmin(ks))
    if not np.isfinite(ks[best]):
        return float("nan"), float("nan"), 0
    return float(alphas[best]), float(x[starts[best]]), int(m[best])


def duplicates(named: list[tuple[str, torch.Tensor]]) -> dict[str, str]:
    """name -> the first earlier matrix holding exactly the same values. Constant matrices
    (all zeros, a zero-initialised projection) are alike by design and left out; tied weights
    are one tensor and appear once."""
    first: dict[tuple, list[tuple[str, torch.Tensor]]] = {}
    out: dict[str, str] = {}
    for name, w in named:
        w = w.detach()
        if not bool(torch.isfinite(w).all()) or float(w.float().std()) == 0:
            continue
        key = (tuple(w.shape), round(float(w.double().sum()), 6), round(float(w.double().abs().sum()), 6))
        for other, ow in first.get(key, []):
            if torch.equal(w, ow):
                out[name] = other
                break
        else:
            first.setdefault(key, []).append((name, w))
    return out

"""The health of the residual stream, block by block.

For each block's output (the token vectors it hands on) this measures:
- effective rank (Roy & Vetterli, 2007): exp of the entropy of the normalised singular
  values of the (tokens x width) matrix, uncentred and centred. Many directions in use is
  healthy; ~1 means every token lies on one line.
- mean pairwise token cosine within a sequence: 1 is rank collapse (Dong et al., 2021), every
  position the same vector, so nothing downstream can tell the tokens apart.
- anisotropy: the share of the matrix's energy on its top singular direction (Ethayarajh,
  2019); trained LMs are strongly anisotropic, which is normal.
- spread: |X - mean| / |X| within each sequence, how far its tokens differ at all.
- block cosine: cosine between a block's input and its output per token; ~1 means the block
  barely changes the stream (normal at initialisation, a redundant layer once trained).
- dead FFN neurons: the share of feed-forward units that never fire on the input.

    layers = representation_health(adapted, input_ids)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from utils.adapters import AdaptedModel
from utils.analysis.hooks import Record
from utils.analysis.locate import BlockLayout, batch_major, find_blocks, is_activation, up_projection


@dataclass
class LayerHealth:
    layer: int  # order of execution
    module: str
    effective_rank: float
    effective_rank_centered: float
    mean_token_cosine: float
    anisotropy: float
    spread: float
    block_cosine: float | None  # None when the block's input could not be read
    dead_neuron_fraction: float | None  # None when the block has no visible FFN

    def to_dict(self) -> dict[str, float | int | str | None]:
        return dict(self.__dict__)


def representation_health(
    adapted: AdaptedModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    layout: BlockLayout | None = None,
) -> list[LayerHealth]:
    """One LayerHealth per block, in execution order. `layout` defaults to find_blocks().
    Use a batch whose size differs from its length (seq-first models are read by shape).
    Call with the model in eval mode; the model is not changed."""
    layout = layout or find_blocks(adapted.model)
    if layout is None:
        raise ValueError(
            "no repeated blocks (a ModuleList of one block class) and no norm layers "
            "were found to read the residual stream from"
        )
    model = adapted.model
    B, T = input_ids.shape
    keep = attention_mask.bool() if attention_mask is not None else torch.ones(B, T, dtype=torch.bool)
    units = _ffn_units(model, layout)
    # Gradients stay enabled: nn.TransformerEncoderLayer's fused inference path skips the
    # submodules (and their hooks) under no_grad.
    with (
        torch.enable_grad(),
        Record(model, layout.names) as blocks,
        Record(model, sorted(set(units.values())), inputs=True) as ffn,
    ):
        adapted(input_ids, attention_mask)
    rows = []
    previous: torch.Tensor | None = None
    for i, name in enumerate(n for n in blocks.order if n in layout.names):
        key = "inputs" if layout.kind == "norm_inputs" else "outputs"
        out = batch_major(getattr(blocks, key).get(name, torch.empty(0)), B, T)
        if out is None:
            continue
        inp = previous if layout.kind == "norm_inputs" else batch_major(blocks.inputs.get(name, torch.empty(0)), B, T)
        previous = out
        rows.append(
            _health(
                i,
                name,
                out.float(),
                None if inp is None else inp.float(),
                keep,
                _dead(ffn, units.get(name), B, T, keep),
            )
        )
    return rows


def _health(
    i: int, name: str, out: torch.Tensor, inp: torch.Tensor | None, keep: torch.Tensor, dead: float | None
) -> LayerHealth:
    X = out.detach()[keep.to(out.device)].reshape(-1, out.shape[-1]).cpu()  # (N, C) real tokens
    centred = X - X.mean(0, keepdim=True)
    s = torch.linalg.svdvals(X.double())
    block_cos = None
    if inp is not None and inp.shape == out.shape:
        Y = inp.detach()[keep.to(inp.device)].reshape(-1, inp.shape[-1]).cpu()
        block_cos = float(F.cosine_similarity(X.double(), Y.double(), dim=-1).mean())
    return LayerHealth(
        layer=i,
        module=name,
        effective_rank=effective_rank(X),
        effective_rank_centered=effective_rank(centred),
        mean_token_cosine=mean_token_cosine(out.detach().cpu(), keep.cpu()),
        anisotropy=float(s[0] ** 2 / (s**2).sum()) if float(s.sum()) > 0 else 0.0,
        spread=spread(out.detach().cpu(), keep.cpu()),
        block_cosine=block_cos,
        dead_neuron_fraction=dead,
    )


def effective_rank(X: torch.Tensor) -> float:
    """exp(entropy of the singular values normalised to sum 1): between 1 and min(N, C)."""
    s = torch.linalg.svdvals(X.double())
    total = float(s.sum())
    if total <= 0:
        return 0.0
    p = s / total
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def mean_token_cosine(H: torch.Tensor, keep: torch.Tensor) -> float:
    """Mean cosine between distinct real positions of the same sequence, over sequences."""
    values = []
    for h, k in zip(H.double(), keep):
        v = F.normalize(h[k], dim=-1)  # (n, C)
        n = v.shape[0]
        if n < 2:
            continue
        gram = v @ v.T
        values.append(float((gram.sum() - gram.diagonal().sum()) / (n * (n - 1))))
    return sum(values) / len(values) if values else float("nan")


def spread(H: torch.Tensor, keep: torch.Tensor) -> float:
    """How far a sequence's tokens differ from their own mean, relative to their size, over
    all sequences: 0 when every position of a sequence holds the same vector."""
    num = den = 0.0
    for h, k in zip(H.double(), keep):
        x = h[k]
        num += float((x - x.mean(0, keepdim=True)).pow(2).sum())
        den += float(x.pow(2).sum())
    return (num / den) ** 0.5 if den > 0 else 0.0


def _ffn_units(model, layout: BlockLayout) -> dict[str, str]:
    """block name -> the module whose output shows its FFN units firing: a ReLU-family
    activation module, else the up-projection (whose pre-activation must be > 0 to fire)."""
    if layout.kind != "blocks":
        return {}
    units = {}
    for name in layout.names:
        block = model.get_submodule(name)
        acts = [n for n, m in block.named_modules() if n and is_activation(m)]
        up = up_projection(block)
        if acts:
            units[name] = f"{name}.{acts[0]}"
        elif up is not None:
            units[name] = f"{name}.{up}"
    return units


def _dead(ffn: Record, unit: str | None, B: int, T: int, keep: torch.Tensor) -> float | None:
    """Share of units whose output is never > 0 on any real token."""
    if unit is None or unit not in ffn.outputs:
        return None
    a = batch_major(ffn.outputs[unit], B, T)
    if a is None:
        return None
    fired = (a[keep.to(a.device)] > 0).any(0)  # (units,)
    return float((~fired).float().mean())

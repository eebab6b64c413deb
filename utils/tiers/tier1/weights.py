"""Tier 1 checks of the weights themselves: a sane initialisation, weight tying that survives
`.to()` and saving, and a safetensors round trip that reproduces the outputs exactly."""

from __future__ import annotations

import copy
import inspect
import logging
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_model
from torch import nn

from utils.checks import CheckResult, Verdict, stream_offset
from utils.tiers.probes import owner_of, plain_tensor_attributes
from utils.tiers.tier1.context import Needs, Tier1Context, check, eval_mode

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InitializationThresholds:
    # A weight matrix is judged by its gain, std * sqrt(fan_in): 1 keeps the signal's scale
    # through the layer. PyTorch's default Linear init gives 0.58, Kaiming 1.41, GPT-2's std
    # 0.02 gives 0.1 to 0.6. Above 4 every layer amplifies its input; above 10 the
    # activations explode within a few layers. Below 1e-3 the layer's output is ~zero.
    gain_warn: float = 4.0
    gain_fail: float = 10.0
    gain_low_warn: float = 1e-3
    # Embedding tables are looked up, not multiplied, so their std is judged directly:
    # PyTorch's default is N(0, 1), GPT-2's N(0, 0.02). Warn from 3x and fail from 10x.
    emb_std_warn: float = 3.0
    emb_std_fail: float = 10.0
    # A norm is judged by the std of what it outputs for unit-variance input, less its output
    # for zeros (the bias): below this it passes on only its bias. Measured, not read from the
    # weight: Gemma's RMSNorm computes x * (1 + weight), so its zero weight is a scale of 1.
    norm_scale_low: float = 1e-3


_MATMUL_OWNERS = (nn.Linear, nn.Bilinear, nn.modules.conv._ConvNd)
_EMB_HINTS = ("emb", "wte", "wpe", "pos", "token")


# -- parameter_initialization -----------------------------------------------------------------


def _kind(ctx: Tier1Context, name: str, p: torch.Tensor, owner: nn.Module) -> str:
    """norm | bias | embedding | matrix | vector: each kind has its own rule."""
    leaf = name.rpartition(".")[2].lower()
    if "norm" in type(owner).__name__.lower() or "norm" in leaf:
        return "norm"
    if p.dim() <= 1:
        return "bias" if "bias" in leaf else "vector"
    if isinstance(owner, nn.Embedding):
        return "embedding"
    if (
        not isinstance(owner, _MATMUL_OWNERS)
        and type(owner).__name__ != "Conv1D"
        and (any(h in name.lower() for h in _EMB_HINTS) or p.shape[0] in (ctx.vocab_size, ctx.profile.max_seq_len))
    ):
        return "embedding"
    return "matrix"


def _norm_output_scale(owner: nn.Module, weight: torch.Tensor) -> float | None:
    """The std of what a norm layer outputs for unit-variance input, less what it outputs
    for zeros (its bias), on a copy in eval mode: the scale it really applies, whatever its
    weight stores. None when the layer is not a norm module or cannot be called on
    (4, *shape)."""
    if owner.__dict__.get("_parameters", {}).get("weight") is not weight or (
        "norm" not in type(owner).__name__.lower()
    ):
        return None
    probe = copy.deepcopy(owner).float().cpu().eval()
    x = torch.randn((4, *weight.shape), generator=torch.Generator().manual_seed(0))  # (4, D)
    try:
        with torch.no_grad():
            out, rest = probe(x), probe(torch.zeros_like(x))  # rest: the bias alone
    except Exception:  # noqa: BLE001 - a norm that takes other inputs is judged by its weight
        return None
    if not (
        isinstance(out, torch.Tensor)
        and isinstance(rest, torch.Tensor)
        and out.is_floating_point()
        and out.shape == rest.shape
        and out.numel() > 1
    ):
        return None
    return float((out - rest).float().std())


def _fan_in(p: torch.Tensor, owner: nn.Module) -> int:
    if type(owner).__name__ == "Conv1D":  # Hugging Face's GPT-2 layer stores (in, out)
        return int(p.shape[0])
    return int(math.prod(p.shape[1:]))


# Tensors above twice this many elements get their std and mean from every k-th element
# (STATS_SAMPLE to twice as many); finiteness and the largest magnitude still read every
# element. The std of 2**20 samples is within about 0.1% of the full one, far inside the
# 3x-10x thresholds, and a 38M-element embedding table is judged in milliseconds.
STATS_SAMPLE = 2**20


def tensor_stats(p: torch.Tensor) -> dict[str, float] | None:
    """std, mean and max_abs of a tensor; None when it holds NaN or Inf. One min/max pass over
    every element decides finiteness (NaN propagates through both), which is several times
    cheaper than `torch.isfinite(x).all()` on a large tensor."""
    x = p.detach().reshape(-1)
    if x.numel() == 0:
        return {"std": 0.0, "mean": 0.0, "max_abs": 0.0}
    low, high = (float(v) for v in torch.aminmax(x))
    if not (math.isfinite(low) and math.isfinite(high)):
        return None
    if x.numel() > 2 * STATS_SAMPLE:
        x = x[:: x.numel() // STATS_SAMPLE]  # every k-th element: a view, no gather
    x = x.float()
    std = float(x.std()) if x.numel() > 1 else 0.0
    return {"std": std, "mean": float(x.mean()), "max_abs": max(abs(low), abs(high))}


def _judge(
    ctx: Tier1Context, name: str, p: torch.Tensor, owner: nn.Module, t: InitializationThresholds
) -> dict[str, Any]:
    """One tensor's statistics, its kind and a verdict: ok | warn | fail, with the reason."""
    kind = _kind(ctx, name, p, owner)
    row: dict[str, Any] = {"name": name, "kind": kind, "shape": list(p.shape)}
    stats = tensor_stats(p)
    if stats is None:
        return {**row, "verdict": "fail", "why": "contains NaN/Inf"}
    row.update(stats)
    std = stats["std"]
    if kind in ("bias", "vector"):
        return {**row, "verdict": "ok"}
    if kind == "norm":
        if "weight" not in name.rpartition(".")[2]:
            return {**row, "verdict": "ok"}
        scale = _norm_output_scale(owner, p)
        row["output_scale"] = scale
        flat = row["max_abs"] == 0 if scale is None else scale < t.norm_scale_low
        return {
            **row,
            "verdict": "warn" if flat else "ok",
            "why": ("norm outputs ~0 on unit-variance input: its scale is zero, so the layer passes on only its bias")
            if flat
            else "",
        }
    if row["max_abs"] == 0:
        return {
            **row,
            "verdict": "warn",
            "why": "all zero (fine only if deliberate, e.g. a zero-initialised projection)",
        }
    if kind == "embedding":
        verdict = "fail" if std > t.emb_std_fail else "warn" if std > t.emb_std_warn else "ok"
        return {
            **row,
            "verdict": verdict,
            "why": f"std {std:.3g} for an embedding table (PyTorch default 1, GPT-2 0.02)" if verdict != "ok" else "",
        }
    gain = std * math.sqrt(_fan_in(p, owner))
    row["gain"] = gain
    if gain > t.gain_fail:
        return {
            **row,
            "verdict": "fail",
            "why": f"gain std*sqrt(fan_in) = {gain:.3g}: outputs are {gain:.3g}x larger than inputs",
        }
    if gain > t.gain_warn or gain < t.gain_low_warn:
        return {**row, "verdict": "warn", "why": f"gain std*sqrt(fan_in) = {gain:.3g}"}
    return {**row, "verdict": "ok"}


def _fingerprint(p: torch.Tensor) -> tuple:
    """Shape and 64 evenly spaced elements: equal tensors share it, so only tensors with the
    same fingerprint are compared in full (torch.equal decides, the fingerprint only sorts)."""
    flat = p.reshape(-1)
    k = min(64, flat.numel())
    picks = (torch.arange(k) * (flat.numel() - 1) // max(k - 1, 1)).to(flat.device)
    return (tuple(p.shape), tuple(flat[picks].tolist()))


def _varied(p: torch.Tensor) -> bool:
    """Finite and not constant: constant tensors (zeros, ones) are equal by design."""
    return tensor_stats(p) is not None and bool(p.max() != p.min())


def _identical_copies(named: list[tuple[str, torch.Tensor]]) -> list[list[str]]:
    """Groups of distinct, non-constant weight matrices holding exactly the same values (a
    layer deep-copied N times starts with N identical copies)."""
    buckets: dict[tuple, list[tuple[str, torch.Tensor]]] = {}
    for n, p in named:
        p = p.detach()
        if p.dim() >= 2 and p.numel() > 1:
            buckets.setdefault(_fingerprint(p), []).append((n, p))
    buckets = {k: v for k, v in buckets.items() if len(v) > 1}
    groups = []
    for items in buckets.values():
        items = [(n, p) for n, p in items if _varied(p)]
        while len(items) > 1:
            head, rest = items[0], items[1:]
            same = [n for n, p in rest if torch.equal(p, head[1])]
            if same:
                groups.append([head[0], *same])
            items = [(n, p) for n, p in rest if n not in same]
    return groups


@check("parameter_initialization", thresholds=InitializationThresholds(), needs=Needs(forward=False))
def parameter_initialization(ctx: Tier1Context, v: Verdict) -> CheckResult:
    """Weights are finite, non-zero and sanely scaled

    What it checks: weights are finite and non-zero, weight matrices have a gain
    std * sqrt(fan_in) near 1, embeddings a std near PyTorch's default, and norms and biases
    follow their own rules.
    Why it matters: a large gain makes activations explode within a few layers, a tiny one
    makes outputs vanish; both waste the start of training.
    Known false alarms: an all-zero weight matrix (a deliberately zero-initialised
    projection) only warns; norms and biases are never judged by gain, and a norm is judged
    by the scale it outputs, not its weight (Gemma's `x * (1 + weight)` starts at zero).
    Broken example: HugeInitLM, whose `head.weight` has a gain far above 10.
    How to fix: use nn.init.normal_(w, std=0.02) or PyTorch's default init; initialise norm
    weights to 1 and biases to 0.
    """
    named = list(ctx.model.named_parameters())
    rows = [_judge(ctx, n, p, owner_of(ctx.model, n), v.thresholds) for n, p in named]
    failed = [r for r in rows if r["verdict"] == "fail"]
    warned = [r for r in rows if r["verdict"] == "warn"]
    copies = _identical_copies(named)
    kinds = {k: sum(r["kind"] == k for r in rows) for k in ("matrix", "embedding", "norm", "bias", "vector")}
    metrics = {
        "tensors": len(rows),
        "kinds": kinds,
        "flagged": failed + warned,
        "identical_copies": copies,
        "per_tensor": rows[:200],
    }
    note = (
        f" Note: {len(copies)} group(s) of identical layer copies (e.g. "
        f"{', '.join(copies[0][:3])}); they will differ once trained, but start symmetric."
        if copies
        else ""
    )
    listing = "; ".join(f"`{r['name']}` {r['why']}" for r in (failed + warned)[:4])
    if failed:
        return v.fail(
            f"{len(failed)} tensor(s) badly initialised: {listing}.{note}",
            metrics,
            "Re-initialise these tensors: nn.init.normal_(w, std=0.02) (or the module's own "
            "reset_parameters()); remove any manual scaling of weights in __init__. NaN/Inf "
            "weights usually come from dividing by a zero norm.",
        )
    if warned:
        return v.warn(
            f"{len(warned)} tensor(s) look unusual: {listing}.{note}",
            metrics,
            "Check that these scales are intended; a variance-preserving init has std about 1/sqrt(fan_in).",
        )
    return v.pass_(
        f"All {len(rows)} tensors finite and sanely scaled "
        f"({kinds['matrix']} matrices, {kinds['embedding']} embeddings, "
        f"{kinds['norm']} norm, {kinds['bias']} bias).{note}",
        metrics,
    )


# -- weight_sharing ----------------------------------------------------------------------------


def share_groups(model: nn.Module) -> list[list[str]]:
    """Names of parameters sharing one storage (weight tying), each group sorted."""
    by_storage: dict[int, list[str]] = {}
    for n, p in model.named_parameters(remove_duplicate=False):
        by_storage.setdefault(p.untyped_storage().data_ptr(), []).append(n)
    return sorted(sorted(g) for g in by_storage.values() if len(g) > 1)


def split_by_conversion(model: nn.Module, groups: list[list[str]]) -> list[list[str]]:
    """The groups that `.to(dtype)` separates, found without converting anything.
    `Module._apply` (behind `.to()`, `.half()`, `.cuda()`) converts each Parameter object in
    place once, wherever it is registered, so names bound to one object stay tied; distinct
    Parameter objects that share storage (a tie made through `.data`) are converted one by
    one into separate storages. A group is kept exactly when all its names are one object,
    which a walk over the parameters decides for any model size."""
    by_name = dict(model.named_parameters(remove_duplicate=False))
    return [g for g in groups if len({id(by_name[n]) for n in g}) > 1]


def _kept(groups: list[list[str]], other: list[list[str]]) -> list[list[str]]:
    """Groups of `groups` that are not inside one group of `other` (the lost ties)."""
    return [g for g in groups if not any(set(g) <= set(o) for o in other)]


@dataclass
class Instance:
    """Another instance of the user's class to load a saved state into. `exact`: built the
    same way as the original (so any difference after loading is the model's fault)."""

    model: nn.Module
    how: str
    exact: bool


def rebuilt_instance(ctx: Tier1Context) -> Instance | None:
    """A new instance from the class's constructor, with other random weights: from the
    Hugging Face config (exact), or with no arguments (inexact: the original may have been
    built with other arguments). None when neither works or the layout differs."""
    model = ctx.model
    cls = type(model)
    config = getattr(model, "config", None)
    if config is not None and hasattr(model, "post_init"):
        ctor, how, exact = (lambda: cls(config)), f"{cls.__name__}(model.config)", True
    elif all(
        p.default is not p.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        for p in list(inspect.signature(cls.__init__).parameters.values())[1:]
    ):
        ctor, how, exact = cls, f"{cls.__name__}()", False
    else:
        return None
    if not _meta_layout_may_match(ctor, model):
        return None
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(ctx.seed + 1)
            built = ctor()
    except Exception as exc:  # the constructor wants arguments after all
        log.debug("rebuilding %s with %s failed", cls.__name__, how, exc_info=exc)
        return None
    if not _same_layout(built, model):
        return None
    return Instance(built.to(device=ctx.device, dtype=torch.float32), how, exact)


def _meta_layout_may_match(ctor: Any, model: nn.Module) -> bool:
    """Build on the meta device first (no weights allocated, no initialisation run): a
    constructor whose layout differs from the model's is refused in milliseconds, before a
    real build of a large model. A constructor that cannot run on meta is given the real
    build to decide."""
    try:
        with torch.device("meta"), torch.random.fork_rng(devices=[]):
            built = ctor()
    except Exception:  # noqa: BLE001 - the real build below decides
        return True
    return not isinstance(built, nn.Module) or _same_layout(built, model)


def faithful_copy(model: nn.Module) -> nn.Module:
    """A deep copy in which tensors that share storage in `model` share storage too.
    (`copy.deepcopy` clones each Parameter on its own, so it separates weights that were tied
    through `.data`; this copy keeps them as they are, for the checks to judge.)"""
    clones: dict[int, torch.UntypedStorage] = {}
    memo: dict[int, torch.Tensor] = {}
    tensors = [p for _, p in model.named_parameters(remove_duplicate=False)]
    tensors += [b for _, b in model.named_buffers(remove_duplicate=False)]
    for t in tensors:
        if id(t) in memo:
            continue
        storage = t.untyped_storage()
        twin = clones.setdefault(storage.data_ptr(), storage.clone())
        view = torch.empty(0, dtype=t.dtype, device=t.device).set_(twin, t.storage_offset(), t.size(), t.stride())
        memo[id(t)] = nn.Parameter(view, requires_grad=t.requires_grad) if isinstance(t, nn.Parameter) else view
    return copy.deepcopy(model, memo)


# Noise for a scrambled copy repeats every NOISE_PERIOD elements: a prime, so the pattern
# lines up with no row length, and drawing it once (instead of one normal sample per weight)
# turns seconds into milliseconds on a 124M-parameter model. Each element still moves by a
# random amount; loading must put every one back.
NOISE_PERIOD = 65521


def _add_periodic(t: torch.Tensor, noise: torch.Tensor) -> None:
    """t += the noise repeated over t's elements, in place (t is contiguous state)."""
    flat = t.view(-1)
    n, period = flat.numel(), noise.numel()
    whole = n // period * period
    noise = noise.to(t)
    if whole:
        flat[:whole].view(-1, period).add_(noise)  # (n // period, period)
    flat[whole:].add_(noise[: n - whole])


def scrambled_copy(ctx: Tier1Context) -> Instance:
    """A faithful copy whose saved tensors are all replaced by noise: loading must restore
    them."""
    clone = faithful_copy(ctx.model)
    noise = torch.randn(NOISE_PERIOD, generator=ctx.generator(stream_offset("scrambled_copy")))
    with torch.no_grad():
        for t in clone.state_dict().values():
            if t.is_floating_point():
                _add_periodic(t, noise)
    return Instance(clone, "a copy with every saved tensor replaced by noise", True)


def _same_layout(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(sa[k].shape == sb[k].shape for k in sa)


def load_shared(target: nn.Module, path: Path, device: torch.device) -> None:
    """Load a file written by safetensors' `save_model` into `target`, strictly. A tied tensor
    is stored once under one of its names and the others are recorded in the metadata as
    aliases of it; every alias gets the stored tensor back, so the load is complete whether
    or not `target` ties the same weights (an instance whose constructor does not tie them,
    because the tie was made after construction)."""
    with safe_open(str(path), framework="pt", device=str(device)) as f:
        state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no iter
        aliases = f.metadata() or {}
    for alias, stored in aliases.items():
        if stored in state and alias not in state:
            state[alias] = state[stored]
    target.load_state_dict(state, strict=True)


def safetensors_round_trip(ctx: Tier1Context, targets: list[nn.Module]) -> None:
    """Save the user's model once with safetensors (shared tensors stored once) and load the
    file into each of `targets`, strictly: one write however many instances are checked."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.safetensors"
        save_model(ctx.model, str(path))
        for target in targets:
            load_shared(target, path, ctx.device)


@check("weight_sharing", needs=Needs(forward=False))
def weight_sharing(ctx: Tier1Context, v: Verdict) -> CheckResult:
    """Tied weights stay tied through .to() and a state-dict round trip

    What it checks: weights meant to be tied (the token embedding and the output layer) stay
    the same tensor through .to() and a state-dict round trip.
    Why it matters: ties made by copying `.data` break silently on the first move or reload,
    doubling the parameters and training the two copies apart.
    Known false alarms: models without tied weights pass.
    Broken example: DataTiedLM, tying with head.weight.data = tok.weight.data.
    How to fix: tie the parameters themselves: head.weight = tok.weight.
    """
    groups = share_groups(ctx.model)
    metrics: dict = {"groups": groups, "executor_tied_output": ctx.profile.tied_output}
    if not groups:
        tail = " The graph executor ties the output to the token embedding." if ctx.profile.tied_output else ""
        return v.pass_("No parameters share storage (no weight tying)." + tail, metrics)
    lost_to = split_by_conversion(ctx.model, groups)
    rebuilt = rebuilt_instance(ctx)
    target = rebuilt if rebuilt is not None and rebuilt.exact else scrambled_copy(ctx)
    try:
        safetensors_round_trip(ctx, [target.model])
        lost_rt = _kept(groups, share_groups(target.model))
    except Exception as exc:  # noqa: BLE001 - a failed load is a lost tie, reported below
        metrics["round_trip_error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
        lost_rt = groups
    metrics.update(lost_after_to=lost_to, lost_after_round_trip=lost_rt, loaded_into=target.how)
    shown = "; ".join(" = ".join(g) for g in groups[:3])
    if lost_to or lost_rt:
        where = ".to()" if lost_to else "a safetensors round trip"
        g = (lost_to or lost_rt)[0]
        return v.fail(
            f"Tied tensors {' = '.join(g)} are separate after {where}.",
            metrics,
            "Tie by sharing the Parameter object, `self.head.weight = self.tok.weight`, not by "
            "assigning `.data` (each Parameter is then converted on its own by .to() and the "
            "tie silently breaks); re-tie in __init__ so a fresh instance is tied too.",
        )
    return v.pass_(f"{len(groups)} tied group(s) ({shown}) survive .to() and a safetensors round trip.", metrics)


# -- state_dict_roundtrip ------------------------------------------------------------------------


def _outside_state(a: nn.Module, b: nn.Module) -> list[str]:
    """Floating tensors outside the state dict (non-persistent buffers, plain attributes) with
    the same shape but other values in two instances: random state that saving loses. (A
    deterministic tensor sized by a constructor argument differs in shape, not counted.)"""
    saved = set(a.state_dict())

    def unsaved(m: nn.Module) -> dict[str, torch.Tensor]:
        found = {n: t for n, t in m.named_buffers() if n not in saved}
        found.update(dict(plain_tensor_attributes(m)))
        return {n: t for n, t in found.items() if t.is_floating_point()}

    mine, theirs = unsaved(a), unsaved(b)
    return [
        n
        for n, t in mine.items()
        if n in theirs and t.shape == theirs[n].shape and not torch.equal(t.cpu(), theirs[n].cpu())
    ]


def _reload_difference(ctx: Tier1Context, target: Instance, ids: torch.Tensor, saved: Path) -> float:
    """Load the saved model into `target` and return the largest output difference."""
    load_shared(target.model, saved, ctx.device)
    other = ctx.adapted.with_model(target.model)
    with torch.no_grad(), eval_mode(ctx.adapted), eval_mode(other):
        a, b = ctx.adapted(ids), other(ids)
    if torch.allclose(a, b, rtol=0, atol=0, equal_nan=True):
        return 0.0
    return float((a - b).abs().max()) if a.shape == b.shape else float("inf")


@check("state_dict_roundtrip", needs=Needs(comparable=True))
def state_dict_roundtrip(ctx: Tier1Context, v: Verdict) -> CheckResult:
    """Save and reload (safetensors) gives identical outputs

    What it checks: saving the state dict through safetensors and loading it into a
    scrambled copy (and into a freshly built instance, when the model can be rebuilt) gives
    identical outputs.
    Why it matters: state that is not saved (a random tensor kept as a plain attribute) makes
    a reloaded checkpoint a different model.
    Known false alarms: none for deterministic models; a model that cannot be rebuilt is
    reloaded into a scrambled copy of itself only.
    Broken example: UnsavedRandomLM, mixing in a random tensor not registered as a buffer.
    How to fix: register constant tensors with self.register_buffer(...) so they are saved.
    """
    ids = ctx.ids(offset=v.stream("tokens"))
    targets = [scrambled_copy(ctx)]
    rebuilt = rebuilt_instance(ctx)
    if rebuilt is not None:
        targets.append(rebuilt)
    metrics: dict = {"loaded_into": [t.how for t in targets]}
    with tempfile.TemporaryDirectory() as tmp:
        return _judge_reloads(ctx, v, targets, ids, Path(tmp) / "model.safetensors", metrics)


def _judge_reloads(
    ctx: Tier1Context, v: Verdict, targets: list[Instance], ids: torch.Tensor, saved: Path, metrics: dict
) -> CheckResult:
    """Save the model once to `saved`, load it into each target and compare the outputs."""
    equal, notes = [], []
    for target in targets:
        try:
            if not saved.exists():
                save_model(ctx.model, str(saved))
            diff = _reload_difference(ctx, target, ids, saved)
        except Exception as exc:  # noqa: BLE001 - a failed save/load is the finding
            metrics["error"] = f"{type(exc).__name__}: {exc}"
            return v.fail(
                f"Saving, or loading into {target.how}, with safetensors failed: {metrics['error'][:300]}",
                metrics,
                "Make every tensor the model needs a parameter or a buffer, with the same "
                "names and shapes in every instance built from the same config.",
            )
        metrics[f"max_difference[{target.how}]"] = diff
        if diff == 0:
            equal.append(target.how)
            continue
        suspects = _outside_state(ctx.model, target.model)
        metrics["state_outside_state_dict"] = suspects
        if target.exact or suspects:
            return v.fail(
                f"After save + load into {target.how} the outputs differ (max {diff:.3g})"
                + (f"; tensors outside the state dict differ: {', '.join(suspects[:5])}." if suspects else "."),
                metrics,
                "Everything that shapes the output must be saved: register random or learned "
                "tensors with register_buffer(name, t) (persistent, the default) or as "
                "nn.Parameter, not as plain attributes or persistent=False buffers.",
            )
        notes.append(
            f" {target.how} computes differently even after loading, with nothing "
            "unsaved to blame: the original was probably built with other arguments."
        )
    return v.pass_(
        "Outputs after a safetensors save + load into "
        f"{' and into '.join(equal)} equal the original's exactly." + "".join(notes),
        metrics,
    )

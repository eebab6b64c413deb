"""Detectors: behavioural probes (layout, mask convention, logits, task) and the sizes a model states."""

from __future__ import annotations

import logging
import os
import site
import sys
import sysconfig
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import torch
import torch.nn as nn

from utils._frames import file_line, raised_at, user_frame
from utils.adapters.adapted_model import AdaptedModel
from utils.adapters.profile import ModelProfile
from utils.adapters.signature import ModelSignatureInspector, SignatureInfo
from utils.errors import AdaptError
from utils.loading.config import ModelConfig
from utils.vocabulary import (
    KEEP_ONE_MASK_NAMES,
    MASK_CONVENTIONS,
    SEQ_LEN_NAMES,
    TASKS,
    VOCAB_SIZE_NAMES,
    position_embedding,
)

log = logging.getLogger(__name__)

_PROBE_B, _PROBE_T = 3, 5


_CAUSAL_HINTS = ("gpt", "llama", "decoder", "causal", "mistral", "qwen", "falcon")


def probe_profile(
    model: nn.Module, sig: SignatureInfo, max_len: int | None, len_src: str, **facts: Any
) -> ModelProfile:
    """The profile `adapt` probes with before the sizes and the task are known: a batch-first
    forward giving a logits tensor, its mask unverified; `facts` sets what a route knows."""
    base: dict[str, Any] = dict(
        model_class=type(model).__name__,
        signature=sig,
        input_name=sig.input_param,
        mask_name=sig.mask_param,
        mask_convention=None,
        mask_verified=False,
        batch_first=True,
        output_access="tensor",
        full_logits_via="forward",
        output_kind="logits",
        task="",
        task_source="",
        vocab_size=None,
        vocab_source="",
        max_seq_len=max_len,
        max_seq_len_source=len_src,
        attention_modules=_attention_modules(model),
        library=installed_package(model),
    )
    return ModelProfile(**{**base, **facts})


def probe_with(adapted: AdaptedModel, **facts: Any) -> AdaptedModel:
    """The adapter under probe with some facts set: the profile is frozen, so each probe
    calls the model through a copy of it rather than changing it."""
    return AdaptedModel(adapted.model, replace(adapted.profile, **facts), adapted.executor)


def _full_logits_via_labels(adapted: AdaptedModel, ids: torch.Tensor) -> str:
    """nanoGPT returns logits for the last position only unless targets are given. Returns
    the note saying so, once passing the labels is shown to give every position."""
    p = adapted.profile
    if p.signature.label_param is None:
        raise AdaptError(
            f"{p.model_class} returns logits for one position when given {ids.shape[1]} and "
            "takes no labels/targets parameter that could ask for all of them"
        )
    logits = probe_with(adapted, full_logits_via="labels")(ids)
    if logits.shape[1] != ids.shape[1]:
        raise AdaptError(
            f"{p.model_class} returns logits for {logits.shape[1]} position(s) for an input of "
            f"{ids.shape[1]}, with or without {p.signature.label_param!r}"
        )
    return (
        f"full-sequence logits obtained by passing {p.signature.label_param}=input_ids "
        "(the model otherwise returns only the last position)"
    )


def _detect_layout(adapted: AdaptedModel, ids: torch.Tensor, vocab: int) -> tuple[bool, str | None]:
    """Batch-first or seq-first, by behaviour: changing token (0, 0) of a batch-first model
    moves only row 0; of a seq-first model fed (B, T) it moves only column 0. Seq-first is
    accepted only if, transposed, the model also treats identical rows identically (a
    batch-first model whose attention lacks `batch_first=True` fails that and stays
    batch-first, for Tier 1 to flag). Returns batch_first and the note explaining a change."""
    base = adapted(ids)
    alt = ids.clone()
    alt[0, 0] = (alt[0, 0] + 1) % vocab
    moved = (adapted(alt) - base).abs().amax(-1) > 1e-6  # (B, T)
    rows_only = not moved[1:].any()
    cols_only = not moved[:, 1:].any()
    if rows_only or not cols_only:
        return True, None
    seq_first = probe_with(adapted, batch_first=False)
    same = ids.clone()
    same[1] = same[0]
    out = seq_first(same)
    if torch.allclose(out[0], out[1], atol=1e-5) and not _rows_mix(seq_first, ids, vocab):
        return False, "seq-first model: inputs and logits are transposed (B, T) <-> (T, B)"
    return True, "the model mixes the batch dimension (check batch_independence)"


def _rows_mix(adapted: AdaptedModel, ids: torch.Tensor, vocab: int) -> bool:
    base = adapted(ids)
    alt = ids.clone()
    alt[0] = (alt[0] + 1) % vocab
    return bool((adapted(alt)[1:] - base[1:]).abs().max() > 1e-6)


def _detect_mask_convention(
    adapted: AdaptedModel, ids: torch.Tensor, forced: str | None
) -> tuple[str, bool, str | None]:
    """Pad part of row 0, change what the pad positions hold, and keep the convention under
    which the real positions do not move. Right padding first (a causal model under the wrong
    convention masks its first real token), then left padding (a bidirectional model that
    ignores pads on the right still sees them on the left). Names decide only when behaviour
    cannot. Returns the convention, whether behaviour verified it, and a note when not."""
    p = adapted.profile
    by_name = "keep_one" if p.mask_name in KEEP_ONE_MASK_NAMES else "pad_true"
    if forced is not None:
        if forced not in MASK_CONVENTIONS:
            raise AdaptError(f"mask_convention={forced!r}: use 'keep_one' or 'pad_true'")
        return forced, False, None
    T = ids.shape[1]
    n_pad = max(1, T // 2)
    ok: list[str] = []
    for pads in (slice(T - n_pad, T), slice(0, n_pad)):
        real = torch.ones(T, dtype=torch.bool)
        real[pads] = False
        ok = [c for c in MASK_CONVENTIONS if _real_positions_still(adapted, ids, pads, real, c)]
        if len(ok) == 1:
            return ok[0], True, None
    return (
        by_name,
        False,
        (
            f"padding mask convention taken from the name {p.mask_name!r} ({by_name}): "
            + (
                "the model's output does not depend on its mask"
                if len(ok) == 2
                else "neither convention kept real positions independent of pad content"
            )
        ),
    )


def _real_positions_still(
    adapted: AdaptedModel, ids: torch.Tensor, pads: slice, real: torch.Tensor, convention: str
) -> bool:
    """True when, under `convention`, row 0's real outputs ignore what its pads hold."""
    probe = probe_with(adapted, mask_convention=convention)
    mask = torch.ones_like(ids)
    mask[0, pads] = 0
    alt = ids.clone()
    alt[0, pads] = (alt[0, pads] + 7) % max(int(ids.max()) + 1, 8)
    try:
        a, b = probe(ids, mask), probe(alt, mask)
    except Exception as exc:  # a convention the model rejects is simply not its convention
        log.debug("mask probe %s failed: %s", convention, exc)
        return False
    # (B, T, V): the real positions of row 0; (B, C): row 0's single prediction
    ra, rb = (a[0, real], b[0, real]) if a.dim() == 3 else (a[0], b[0])
    if not (torch.isfinite(ra).all() and torch.isfinite(rb).all()):
        return False
    return bool((ra - rb).abs().max() <= 1e-5)


def _sizes_and_task(
    adapted: AdaptedModel,
    logits: torch.Tensor,
    ids: torch.Tensor,
    config: ModelConfig | None,
    ov: dict,
    vocab_hint: int,
    vocab_src: str,
) -> tuple[dict[str, Any], list[str]]:
    """The profile's last facts (classes, vocabulary, task and where each came from) and the
    notes about them, from the probe's logits."""
    notes: list[str] = []
    width = int(logits.shape[-1])
    found: dict[str, Any] = {"num_classes": width if logits.dim() == 2 else None}
    if "vocab_size" in ov:
        vocab, source = int(ov["vocab_size"]), "override"
    elif vocab_src in ("config", "model attribute", "model config"):
        vocab, source = vocab_hint, vocab_src
    elif logits.dim() == 3:
        vocab, source = width, "output width"
    elif vocab_src != "probe default":
        vocab, source = vocab_hint, vocab_src
    else:
        vocab, source = None, "unknown"
        notes.append("vocabulary size unknown: pass vocab_size=...")
    if adapted.profile.max_seq_len is None:
        notes.append("maximum sequence length unknown: pass max_seq_len=...")
    task, task_source, note = _task(adapted, logits, ids, config, ov, vocab)
    notes += [note] if note else []
    found.update(vocab_size=vocab, vocab_source=source, task=task, task_source=task_source)
    return found, notes


def _task(
    adapted: AdaptedModel,
    logits: torch.Tensor,
    ids: torch.Tensor,
    config: ModelConfig | None,
    ov: dict,
    vocab: int | None,
) -> tuple[str, str, str | None]:
    """The task, where it came from, and a note when it is only a default."""
    if ov.get("task"):
        return ov["task"], "override", None
    raw = _raw(config)
    if raw.get("task") in TASKS:
        return raw["task"], "config", None
    if logits.dim() == 2:
        return "classification", "output shape (B, C)", None
    arch = " ".join(_hf_config(adapted.model).get("architectures") or [])
    for key, task in (
        ("CausalLM", "causal_lm"),
        ("LMHeadModel", "causal_lm"),
        ("MaskedLM", "masked_lm"),
        ("SequenceClassification", "classification"),
    ):
        if key in arch or key in type(adapted.model).__name__:
            return task, "model class", None
    template = str(raw.get("template") or raw.get("model_type") or "")
    if any(k in template.lower() for k in _CAUSAL_HINTS):
        return "causal_lm", f"template {template!r}", None
    cls = type(adapted.model).__name__
    if any(k in cls.lower() for k in _CAUSAL_HINTS):
        return "causal_lm", f"class name {cls!r}", None
    if vocab is not None and logits.shape[-1] != vocab:
        return "encoder", "output width differs from the vocabulary", None
    buffer = _causal_buffer(adapted.model)
    if buffer is not None:
        return "causal_lm", f"causal mask buffer {buffer!r}", None
    causal = _is_causal(adapted, ids)
    if causal is None:
        return (
            "causal_lm",
            "default (behaviour not measurable)",
            (
                "task taken as causal_lm: outputs are not finite or not repeatable in eval mode, so "
                "behaviour could not tell; pass task=... if that is wrong"
            ),
        )
    if causal:
        return "causal_lm", "behaviour (no position sees later tokens)", None
    return "masked_lm", "behaviour (positions see later tokens)", None


def _is_causal(adapted: AdaptedModel, ids: torch.Tensor) -> bool | None:
    """Whether changing the last token leaves every earlier position alone; None when the
    outputs are not finite or not repeatable, since then a difference proves nothing."""
    base = adapted(ids)
    if not torch.isfinite(base).all() or not torch.equal(base, adapted(ids)):
        return None
    alt = ids.clone()
    alt[:, -1] = (alt[:, -1] + 1) % max(int(ids.max()) + 1, 2)
    return bool((adapted(alt)[:, :-1] - base[:, :-1]).abs().max() <= 1e-6)


def _causal_buffer(model: nn.Module) -> str | None:
    """A square causal buffer (nanoGPT's `bias = tril(ones)`, a bool or -inf `causal_mask`)
    says the author meant the model to be causal, whether or not forward applies it."""
    for name, buf in model.named_buffers():
        if buf.dim() < 2 or buf.shape[-1] != buf.shape[-2] or buf.shape[-1] < 2:
            continue
        square = buf.reshape(-1, buf.shape[-2], buf.shape[-1])[0]
        tril = torch.tril(torch.ones(square.shape, dtype=torch.bool, device=square.device))
        if square.is_floating_point():
            patterns = (square != 0, torch.isneginf(square))
        else:
            patterns = (square.bool(),)
        if any(torch.equal(p, tril) or torch.equal(p, ~tril) for p in patterns):
            return name
    return None


def _find_logits(out: Any) -> str:
    """Where the logits are in whatever `forward` returned."""
    if isinstance(out, torch.Tensor):
        return "tensor"
    if isinstance(out, Mapping):
        for key in ("logits", "prediction_logits", "lm_logits"):
            if isinstance(out.get(key), torch.Tensor):
                return f"key:{key}"
        for key, value in out.items():
            if isinstance(value, torch.Tensor) and value.dim() >= 2:
                return f"key:{key}"
    if isinstance(getattr(out, "logits", None), torch.Tensor):
        return "attr:logits"
    if isinstance(out, (tuple, list)):
        for i, value in enumerate(out):
            if isinstance(value, torch.Tensor):
                return f"index:{i}"
    raise AdaptError(f"forward returned a {type(out).__name__} with no tensor of logits in it")


def _expect_batch_dims(logits: Any, ids: torch.Tensor, who: str) -> None:
    B, T = ids.shape
    if not isinstance(logits, torch.Tensor):
        raise AdaptError(f"{who} returned {type(logits).__name__}, not a tensor of logits")
    ok3 = logits.dim() == 3 and tuple(logits.shape[:2]) in ((B, T), (T, B))
    ok2 = logits.dim() == 2 and logits.shape[0] == B
    if not (ok3 or ok2):
        raise AdaptError(
            f"{who} returned logits of shape {tuple(logits.shape)} for input ids of shape "
            f"(B={B}, T={T}); expected (B, T, V) or (B, C)"
        )


def _output_kind(logits: torch.Tensor) -> str:
    x = logits.float()
    if not torch.isfinite(x).all():
        return "logits"
    if (x <= 1e-6).all() and torch.allclose(x.exp().sum(-1), torch.ones(()), atol=1e-3):
        return "log_probs"
    if (x >= 0).all() and torch.allclose(x.sum(-1), torch.ones(()), atol=1e-3):
        return "probs"
    return "logits"


def _probe_len(max_len: int | None) -> int:
    return _PROBE_T if max_len is None else max(1, min(_PROBE_T, max_len))


def _probe_ids(B: int, T: int, vocab: int, device: torch.device) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, vocab, (B, T), generator=g).to(device)


def _device(model: nn.Module) -> torch.device:
    for t in list(model.parameters()) + list(model.buffers()):
        return t.device
    return torch.device("cpu")


def _raw(config: ModelConfig | None) -> dict:
    return {} if config is None else config.raw


def _config_value(config: ModelConfig | None, name: str) -> Any:
    return None if config is None else getattr(config, name)


def _hf_config(model: nn.Module) -> dict:
    cfg = getattr(model, "config", None)
    if cfg is None:
        return {}
    if hasattr(cfg, "to_dict"):
        return cfg.to_dict()
    if isinstance(cfg, dict):
        return cfg
    return {k: v for k, v in vars(cfg).items() if not k.startswith("_")}


def _model_attr(model: nn.Module, names: tuple[str, ...]) -> tuple[int | None, str]:
    for holder, label in ((model, "model attribute"), (_hf_config(model), "model config")):
        for name in names:
            value = holder.get(name) if isinstance(holder, dict) else getattr(holder, name, None)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value, label
    return None, ""


def _declared(
    model: nn.Module, config: ModelConfig | None, ov: dict, key: str, attrs: tuple[str, ...]
) -> tuple[int | None, str]:
    """A size someone stated: an override, the config, or an attribute of the model or of
    its own config object, in that order."""
    if ov.get(key):
        return int(ov[key]), "override"
    value = _config_value(config, key)
    if isinstance(value, int) and value > 0:
        return value, "config"
    return _model_attr(model, attrs)


def _vocab_hint(model: nn.Module, config: ModelConfig | None, ov: dict) -> tuple[int, str]:
    """A vocabulary bound that keeps probe ids valid: override, config, model attribute, else
    the smallest embedding table (a token id below every table's size is safe)."""
    value, label = _declared(model, config, ov, "vocab_size", VOCAB_SIZE_NAMES)
    if value:
        return value, label
    rows = [m.num_embeddings for m in model.modules() if isinstance(m, nn.Embedding)]
    if rows:
        return min(rows), "smallest embedding table"
    return 64, "probe default"


def _max_seq_len(model: nn.Module, config: ModelConfig | None, ov: dict) -> tuple[int | None, str]:
    value, label = _declared(model, config, ov, "max_seq_len", SEQ_LEN_NAMES)
    if value and label != "override":
        return _after_padding_index(model, value, label)
    if value:
        return value, label
    table = position_embedding(model)
    if table is not None:
        return table[1].num_embeddings, f"position table {table[0]}"
    for name, buf in model.named_buffers():
        leaf = name.rsplit(".", 1)[-1].lower()
        if buf.dim() >= 2 and buf.shape[-1] == buf.shape[-2] and leaf in ("bias", "mask", "causal_mask"):
            return int(buf.shape[-1]), f"buffer {name}"
    return None, "unknown"


def _after_padding_index(model: nn.Module, value: int, label: str) -> tuple[int, str]:
    """RoBERTa's rule: a position table with a padding row numbers real positions from
    padding_idx + 1, so `max_position_embeddings` (514) rows hold 512 positions. Applied only
    when a forward of `value` tokens fails and one of the shorter length runs."""
    table = position_embedding(model)
    pad = None if table is None else table[1].padding_idx
    if pad is None or pad < 0:
        return value, label
    usable = table[1].num_embeddings - pad - 1
    if not 0 < usable < value or _runs(model, value) or not _runs(model, usable):
        return value, label
    return usable, (f"{label}; position table {table[0]} starts after its padding index {pad}, so {usable} of {value}")


def _runs(model: nn.Module, T: int) -> bool:
    """Whether one forward of a single row of T tokens runs (token id 0 is in every vocab)."""
    sig = ModelSignatureInspector(model).analyze()
    ids = torch.zeros(1, T, dtype=torch.long, device=_device(model))  # (1, T)
    try:
        model(**{sig.input_param: ids}) if sig.input_param else model(ids)
    except Exception:  # noqa: BLE001 - a length the model cannot take is what is measured
        return False
    return True


def _site_roots() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    roots = [paths["purelib"], paths["platlib"], site.getusersitepackages()]
    roots += getattr(site, "getsitepackages", lambda: [])()
    return tuple(os.path.realpath(r) + os.sep for r in roots)


def installed_package(model: nn.Module) -> str | None:
    """The package the model's class comes from when it is installed (its file under a
    site-packages folder, as Hugging Face's classes are), else None: the user's own code,
    which the user can change (and the embedded examples, which stand for it)."""
    top = type(model).__module__.split(".")[0]
    module = sys.modules.get(type(model).__module__)
    path = getattr(module, "__file__", None)
    if top == __name__.split(".")[0] or not path or not os.path.realpath(path).startswith(_site_roots()):
        return None  # the toolkit's own examples stand for the user's code
    return top


def _attention_modules(model: nn.Module) -> tuple[str, ...]:
    """Outermost modules that do attention: nn.MultiheadAttention or a class named so."""
    found: list[str] = []
    for name, m in model.named_modules():
        cls = type(m).__name__.lower()
        is_attn = isinstance(m, nn.MultiheadAttention) or (
            ("attention" in cls or "attn" in cls or cls.endswith("selfattention"))
            and "layer" not in cls
            and "block" not in cls
        )
        if is_attn and name and not any(name.startswith(f + ".") for f in found):
            found.append(name)
    return tuple(found)


def _forward_raised(model: nn.Module, sig: SignatureInfo, errors: list[Exception], attempts: list[str]) -> str:
    """Why no probe call worked. When the model's own code raised (a line of model.py is in
    the traceback), that error and line are the message: renaming inputs would not help."""
    frame = user_frame(errors[0])
    if frame is None:
        return _cannot_adapt(model, sig, "every call failed", attempts)
    lines = [
        f"Cannot adapt {type(model).__name__}: its forward raised "
        f"{type(errors[0]).__name__}: {errors[0]} at {raised_at(errors[0])}."
    ]
    if len({str(e) for e in errors}) > 1:
        lines += [f"  tried: {a}" for a in attempts]
    lines.append(f"  Fix: the error is in the model's own code at {file_line(frame)}; fix it there, then run again.")
    return "\n".join(lines)


def _cannot_adapt(model: nn.Module, sig: SignatureInfo, why: str, attempts: list[str] | None = None) -> str:
    lines = [
        f"Cannot adapt {type(model).__name__}: {why}.",
        f"  forward parameters: {sig.roles() or '(none)'}",
    ]
    lines += [f"  tried: {a}" for a in attempts or []]
    lines.append(
        "  Fix: give forward a token input named input_ids (or idx, src, x, tokens) returning "
        "logits (B, T, V), or pass the roles explicitly (task=, vocab_size=, max_seq_len=)."
    )
    return "\n".join(lines)

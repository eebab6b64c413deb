"""`adapt`: inspect a model once, then call it one way: `forward(input_ids, attention_mask)`.

Every fact the adapter relies on is found by probing with shapes where batch, length and
vocabulary all differ, and recorded in a `ModelProfile`, so no tier guesses again.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from utils._frames import describe
from utils.adapters.adapted_model import AdaptedModel
from utils.adapters.detectors import (
    _PROBE_B,
    _attention_modules,
    _cannot_adapt,
    _detect_layout,
    _detect_mask_convention,
    _device,
    _expect_batch_dims,
    _find_logits,
    _finish_profile,
    _forward_raised,
    _full_logits_via_labels,
    _max_seq_len,
    _output_kind,
    _probe_ids,
    _probe_len,
    _vocab_hint,
    installed_package,
)
from utils.adapters.graph_executor import ComputationalGraphExecutor, GraphError
from utils.adapters.profile import ModelProfile
from utils.adapters.seq2seq import adapt_seq2seq, encoder_decoder
from utils.adapters.signature import ModelSignatureInspector, SignatureInfo
from utils.errors import AdaptError
from utils.vocabulary import (
    TASKS,
)


def adapt(model: nn.Module, config: Any = None, **overrides: Any) -> AdaptedModel:
    """Inspect `model` once and return an `AdaptedModel`.

    `config` is a `ModelConfig`, a dict or None. Overrides: `task`, `vocab_size`,
    `max_seq_len`, `batch_first`, `mask_convention`.
    """
    if isinstance(model, AdaptedModel):
        return model
    if not isinstance(model, nn.Module):
        raise AdaptError(f"adapt() needs an nn.Module, got {type(model).__name__}")
    unknown = set(overrides) - {"task", "vocab_size", "max_seq_len", "batch_first",
                                "mask_convention"}
    if unknown:
        raise AdaptError(f"adapt() got unknown options: {', '.join(sorted(unknown))}")
    overrides = {k: v for k, v in overrides.items() if v is not None}  # None: nothing overridden
    if overrides.get("task") not in (None, *TASKS):
        raise AdaptError(f"task={overrides['task']!r} is not one of {', '.join(TASKS)}")
    sig = ModelSignatureInspector(model).analyze()
    modes = [(m, m.training) for m in model.modules()]  # restored per module: a mixed
    model.eval()                                          # train/eval state stays mixed
    try:
        with torch.no_grad():
            if sig.needs_graph_executor:
                return _adapt_graph(model, sig, config, overrides)
            if encoder_decoder(model, sig, config, overrides):
                return adapt_seq2seq(model, sig, config, overrides)
            return _adapt_callable(model, sig, config, overrides)
    finally:
        for m, mode in modes:
            m.training = mode


def _adapt_graph(model: nn.Module, sig: SignatureInfo, config: Any, ov: dict) -> AdaptedModel:
    try:
        executor = ComputationalGraphExecutor(model, ModelSignatureInspector(model), config)
    except GraphError as exc:
        raise AdaptError(
            f"{type(model).__name__}.forward takes intermediate outputs "
            f"({', '.join(sig.intermediate_params)}), so it cannot be called directly, and the "
            f"graph executor could not rebuild its graph: {exc}"
        ) from exc
    vocab, vocab_src = _vocab_hint(model, config, ov)
    max_len, len_src = _max_seq_len(model, config, ov)
    device = _device(model)
    ids = _probe_ids(_PROBE_B, _probe_len(max_len), vocab, device)
    try:
        logits = executor.forward(ids)
    except Exception as exc:
        raise AdaptError(f"the graph executor built the graph but running it failed: "
                         f"{type(exc).__name__}: {exc}") from exc
    _expect_batch_dims(logits, ids, "graph executor")
    profile = ModelProfile(
        model_class=type(model).__name__, signature=sig, input_name=sig.input_param,
        mask_name=None, mask_convention="keep_one", mask_verified=False, batch_first=True,
        output_access="tensor", full_logits_via="graph_executor",
        output_kind=_output_kind(logits), task="", task_source="",
        vocab_size=None, vocab_source="", max_seq_len=max_len, max_seq_len_source=len_src,
        attention_modules=_attention_modules(model), uses_graph_executor=True,
        graph_source=executor.source, tied_output=executor.tied_output,
    )
    if executor.tied_output:
        profile.notes.append("no output module: logits tied to the token embedding")
    adapted = AdaptedModel(model, profile, executor)
    _finish_profile(adapted, logits, ids, config, ov, vocab, vocab_src)
    return adapted


def _adapt_callable(model: nn.Module, sig: SignatureInfo, config: Any, ov: dict) -> AdaptedModel:
    if sig.input_param is None or sig.unknown_required:
        raise AdaptError(_cannot_adapt(model, sig, "no token input parameter was recognised"
                                       if sig.input_param is None else
                                       f"required parameters with no known role: "
                                       f"{', '.join(sig.unknown_required)}"))
    vocab, vocab_src = _vocab_hint(model, config, ov)
    max_len, len_src = _max_seq_len(model, config, ov)
    device = _device(model)
    ids = _probe_ids(_PROBE_B, _probe_len(max_len), vocab, device)
    profile = ModelProfile(
        model_class=type(model).__name__, signature=sig, input_name=sig.input_param,
        mask_name=sig.mask_param, mask_convention=None, mask_verified=False,
        batch_first=bool(ov.get("batch_first", True)), output_access="tensor",
        full_logits_via="forward", output_kind="logits", task="", task_source="",
        vocab_size=None, vocab_source="", max_seq_len=max_len, max_seq_len_source=len_src,
        attention_modules=_attention_modules(model), library=installed_package(model),
    )
    adapted = AdaptedModel(model, profile)

    attempts: list[str] = []
    errors: list[Exception] = []
    out = None
    for batch_first in ((True, False) if "batch_first" not in ov else (ov["batch_first"],)):
        x = ids if batch_first else ids.t()
        try:
            out = model(x) if adapted._positional else model(**{sig.input_param: x})
            profile.batch_first = batch_first
            break
        except Exception as exc:
            errors.append(exc)
            attempts.append(f"{sig.input_param}={'(B, T)' if batch_first else '(T, B)'} "
                            f"-> {describe(exc)}")
    if out is None:
        raise AdaptError(_forward_raised(model, sig, errors, attempts))
    try:
        profile.output_access = _find_logits(out)
    except AdaptError as exc:
        raise AdaptError(_cannot_adapt(model, sig, str(exc), attempts)) from exc
    logits = adapted(ids)
    if logits.dim() == 3 and logits.shape[1] == 1 and ids.shape[1] > 1:
        _full_logits_via_labels(adapted, ids)
        logits = adapted(ids)
    _expect_batch_dims(logits, ids, type(model).__name__)
    if "batch_first" not in ov and logits.dim() == 3:
        _detect_layout(adapted, ids, vocab)
        logits = adapted(ids)
    profile.output_kind = _output_kind(logits)
    if profile.output_kind != "logits":
        profile.notes.append(f"the model returns {profile.output_kind.replace('_', '-')}, "
                             "not raw logits")
    if sig.mask_param is not None:
        _detect_mask_convention(adapted, ids, ov.get("mask_convention"))
    _finish_profile(adapted, logits, ids, config, ov, vocab, vocab_src)
    return adapted

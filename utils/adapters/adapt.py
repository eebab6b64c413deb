"""`adapt`: inspect a model once, then call it one way: `forward(input_ids, attention_mask)`.

Every fact the adapter relies on is found by probing with shapes where batch, length and
vocabulary all differ, and recorded in a `ModelProfile`, so no tier guesses again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from utils._frames import describe
from utils.adapters.adapted_model import AdaptedModel
from utils.adapters.detectors import (
    _PROBE_B,
    _cannot_adapt,
    _detect_layout,
    _detect_mask_convention,
    _device,
    _expect_batch_dims,
    _find_logits,
    _forward_raised,
    _full_logits_via_labels,
    _max_seq_len,
    _output_kind,
    _probe_ids,
    _probe_len,
    _sizes_and_task,
    _vocab_hint,
    probe_profile,
    probe_with,
)
from utils.adapters.graph_executor import ComputationalGraphExecutor, GraphError
from utils.adapters.seq2seq import adapt_seq2seq, encoder_decoder
from utils.adapters.signature import ModelSignatureInspector, SignatureInfo
from utils.errors import AdaptError
from utils.loading.config import ModelConfig, as_config
from utils.vocabulary import (
    TASKS,
)


def adapt(
    model: nn.Module, config: ModelConfig | Mapping[str, Any] | str | Path | None = None, **overrides: Any
) -> AdaptedModel:
    """Inspect `model` once and return an `AdaptedModel`.

    `config` is a `ModelConfig`, a dict, the path of a config.json or None; it is read as a
    `ModelConfig` here, once, so nothing past this point branches on its type. Overrides:
    `task`, `vocab_size`, `max_seq_len`, `batch_first`, `mask_convention`.
    """
    if isinstance(model, AdaptedModel):
        return model
    if not isinstance(model, nn.Module):
        raise AdaptError(f"adapt() needs an nn.Module, got {type(model).__name__}")
    unknown = set(overrides) - {"task", "vocab_size", "max_seq_len", "batch_first", "mask_convention"}
    if unknown:
        raise AdaptError(f"adapt() got unknown options: {', '.join(sorted(unknown))}")
    overrides = {k: v for k, v in overrides.items() if v is not None}  # None: nothing overridden
    if overrides.get("task") not in (None, *TASKS):
        raise AdaptError(f"task={overrides['task']!r} is not one of {', '.join(TASKS)}")
    config = as_config(config)
    sig = ModelSignatureInspector(model).analyze()
    modes = [(m, m.training) for m in model.modules()]  # restored per module: a mixed
    model.eval()  # train/eval state stays mixed
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


def _adapt_graph(model: nn.Module, sig: SignatureInfo, config: ModelConfig | None, ov: dict) -> AdaptedModel:
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
        raise AdaptError(
            f"the graph executor built the graph but running it failed: {type(exc).__name__}: {exc}"
        ) from exc
    _expect_batch_dims(logits, ids, "graph executor")
    profile = probe_profile(
        model,
        sig,
        max_len,
        len_src,
        mask_name=None,
        mask_convention="keep_one",
        full_logits_via="graph_executor",
        output_kind=_output_kind(logits),
        uses_graph_executor=True,
        graph_source=executor.source,
        tied_output=executor.tied_output,
        library=None,
    )
    probe = AdaptedModel(model, profile, executor)
    notes = ["no output module: logits tied to the token embedding"] if executor.tied_output else []
    found, more = _sizes_and_task(probe, logits, ids, config, ov, vocab, vocab_src)
    profile = replace(probe.profile, **found, notes=tuple(notes + more))
    return AdaptedModel(model, profile, executor)


def _adapt_callable(model: nn.Module, sig: SignatureInfo, config: ModelConfig | None, ov: dict) -> AdaptedModel:
    if sig.input_param is None or sig.unknown_required:
        raise AdaptError(
            _cannot_adapt(
                model,
                sig,
                "no token input parameter was recognised"
                if sig.input_param is None
                else f"required parameters with no known role: {', '.join(sig.unknown_required)}",
            )
        )
    vocab, vocab_src = _vocab_hint(model, config, ov)
    max_len, len_src = _max_seq_len(model, config, ov)
    device = _device(model)
    ids = _probe_ids(_PROBE_B, _probe_len(max_len), vocab, device)
    probe = AdaptedModel(
        model, probe_profile(model, sig, max_len, len_src, batch_first=bool(ov.get("batch_first", True)))
    )
    notes: list[str] = []

    attempts: list[str] = []
    errors: list[Exception] = []
    out, layout = None, probe.profile.batch_first
    for batch_first in (True, False) if "batch_first" not in ov else (ov["batch_first"],):
        x = ids if batch_first else ids.t()
        try:
            out = model(x) if probe._positional else model(**{sig.input_param: x})
            layout = batch_first
            break
        except Exception as exc:
            errors.append(exc)
            attempts.append(f"{sig.input_param}={'(B, T)' if batch_first else '(T, B)'} -> {describe(exc)}")
    if out is None:
        raise AdaptError(_forward_raised(model, sig, errors, attempts))
    try:
        probe = probe_with(probe, batch_first=layout, output_access=_find_logits(out))
    except AdaptError as exc:
        raise AdaptError(_cannot_adapt(model, sig, str(exc), attempts)) from exc
    logits = probe(ids)
    if logits.dim() == 3 and logits.shape[1] == 1 and ids.shape[1] > 1:
        notes.append(_full_logits_via_labels(probe, ids))
        probe = probe_with(probe, full_logits_via="labels")
        logits = probe(ids)
    _expect_batch_dims(logits, ids, type(model).__name__)
    if "batch_first" not in ov and logits.dim() == 3:
        layout, note = _detect_layout(probe, ids, vocab)
        notes += [note] if note else []
        probe = probe_with(probe, batch_first=layout)
        logits = probe(ids)
    kind = _output_kind(logits)
    if kind != "logits":
        notes.append(f"the model returns {kind.replace('_', '-')}, not raw logits")
    probe = probe_with(probe, output_kind=kind)
    if sig.mask_param is not None:
        convention, verified, note = _detect_mask_convention(probe, ids, ov.get("mask_convention"))
        notes += [note] if note else []
        probe = probe_with(probe, mask_convention=convention, mask_verified=verified)
    found, more = _sizes_and_task(probe, logits, ids, config, ov, vocab, vocab_src)
    return AdaptedModel(model, replace(probe.profile, **found, notes=tuple(notes + more)))

"""Adapting an encoder-decoder: the source goes to the encoder, the target (shifted right by
the model's own rule) to the decoder, and the logits are over the target."""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn as nn

from utils.adapters.adapted_model import DECODER_INPUT, AdaptedModel, start_and_pad
from utils.adapters.detectors import (
    _PROBE_B,
    _cannot_adapt,
    _device,
    _find_logits,
    _hf_config,
    _max_seq_len,
    _output_kind,
    _probe_ids,
    _probe_len,
    _raw,
    _sizes_and_task,
    _vocab_hint,
    probe_profile,
    probe_with,
)
from utils.adapters.signature import SignatureInfo
from utils.errors import AdaptError
from utils.loading.config import ModelConfig


def encoder_decoder(model: nn.Module, sig: SignatureInfo, config: ModelConfig | None, ov: dict) -> str | None:
    """Why the model is an encoder-decoder (its config says so, or forward takes decoder
    input ids), or None. A task set to anything else, by override or config, wins."""
    if ov.get("task") not in (None, "seq2seq") or _raw(config).get("task") not in (None, "seq2seq"):
        return None
    if _hf_config(model).get("is_encoder_decoder"):
        return "config.is_encoder_decoder"
    if DECODER_INPUT in sig.params:
        return f"forward takes {DECODER_INPUT}"
    return "override" if ov.get("task") == "seq2seq" else None


def adapt_seq2seq(model: nn.Module, sig: SignatureInfo, config: ModelConfig | None, ov: dict) -> AdaptedModel:
    """Probe with a source and a target of different lengths, so that logits over the wrong
    one are caught, and verify the source mask by changing source pad content."""
    why = encoder_decoder(model, sig, config, ov)
    if sig.input_param is None or DECODER_INPUT not in sig.params:
        missing = "token input" if sig.input_param is None else DECODER_INPUT
        raise AdaptError(
            _cannot_adapt(model, sig, f"it is an encoder-decoder ({why}) but forward takes no {missing} parameter")
        )
    vocab, vocab_src = _vocab_hint(model, config, ov)
    max_len, len_src = _max_seq_len(model, config, ov)
    start, _ = start_and_pad(model)
    prepare = callable(getattr(model, "prepare_decoder_input_ids_from_labels", None))
    shift = (
        "model.prepare_decoder_input_ids_from_labels" if prepare else f"shifted right after decoder start token {start}"
    )
    profile = probe_profile(
        model,
        sig,
        max_len,
        len_src,
        mask_convention="keep_one" if sig.mask_param else None,
        task="seq2seq",
        task_source=why,
        target_shift=shift,
    )
    probe = AdaptedModel(model, profile)
    device = _device(model)
    source = _probe_ids(_PROBE_B, _probe_len(max_len), vocab, device)  # (B, T)
    target = _probe_ids(_PROBE_B, max(1, _probe_len(max_len) - 1), vocab, device)  # (B, S)
    try:
        call = {DECODER_INPUT: probe.decoder_inputs(target), **probe._static}
        out = model(source, **call) if probe._positional else model(**{sig.input_param: source}, **call)
        probe = probe_with(probe, output_access=_find_logits(out))
        logits = probe(source, target_ids=target)  # (B, S, V)
    except Exception as exc:
        raise AdaptError(
            _cannot_adapt(model, sig, f"calling it as an encoder-decoder ({why}) failed: {type(exc).__name__}: {exc}")
        ) from exc
    if logits.dim() != 3 or tuple(logits.shape[:2]) != tuple(target.shape):
        raise AdaptError(
            f"{probe.profile.model_class} returned logits of shape {tuple(logits.shape)} for a source "
            f"{tuple(source.shape)} and a target {tuple(target.shape)}; expected (B, target "
            "length, V)"
        )
    probe = probe_with(probe, output_kind=_output_kind(logits))
    notes = [
        f"encoder-decoder: source ids and mask to the encoder, target ids "
        f"({probe.profile.target_shift}) to the decoder; logits over the target"
    ]
    if sig.mask_param is not None:
        verified, note = _verify_source_mask(probe, source, target)
        notes += [note] if note else []
        probe = probe_with(probe, mask_verified=verified)
    found, more = _sizes_and_task(probe, logits, source, config, {**ov, "task": "seq2seq"}, vocab, vocab_src)
    found["task_source"] = why
    return AdaptedModel(model, replace(probe.profile, **found, notes=tuple(notes + more)))


def _verify_source_mask(adapted: AdaptedModel, source: torch.Tensor, target: torch.Tensor) -> tuple[bool, str | None]:
    """keep_one (1 = real source token) is verified when right-padding the source and
    changing what its pads hold leaves every target logit where it was. Returns whether it
    was, and the note when not."""
    p = adapted.profile
    mask = torch.ones_like(source)  # (B, T)
    mask[0, -max(1, source.shape[1] // 2) :] = 0
    alt = source.masked_fill(mask == 0, 0) + (mask == 0).long()  # pads now hold token 1
    a, b = adapted(source, mask, target), adapted(alt, mask, target)
    if bool(torch.isfinite(a).all()) and bool((a - b).abs().max() <= 1e-5):
        return True, None
    return False, (
        f"source padding mask taken from the name {p.mask_name!r} (keep_one): pad content still moved the target logits"
    )

"""The adapted model: one calling convention, `forward(input_ids, attention_mask=None)` -> logits."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn as nn

from utils.adapters.graph_executor import ComputationalGraphExecutor
from utils.adapters.losses import lm_loss
from utils.adapters.profile import ModelProfile
from utils.vocabulary import IGNORE_INDEX

DECODER_INPUT = "decoder_input_ids"  # an encoder-decoder's decoder input, by HF's name

# The profile field that says where each overridable fact came from.
_SOURCE_FIELD = {"task": "task_source", "vocab_size": "vocab_source", "max_seq_len": "max_seq_len_source"}


class AdaptedModel(nn.Module):
    """Wraps a user's model: `forward(input_ids (B, T), attention_mask (B, T) 1=keep)` returns
    logits (B, T, V), or (B, C) for a classifier. The user's model is `.model`."""

    def __init__(self, model: nn.Module, profile: ModelProfile, executor: ComputationalGraphExecutor | None = None):
        super().__init__()
        self.model = model
        self.profile = profile
        self.executor = executor
        self._static: dict[str, Any] = {"use_cache": False} if "use_cache" in profile.signature.params else {}
        self._positional = bool(profile.signature.params) and (profile.signature.params[0] == profile.input_name)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        target_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """`target_ids` (B, S) only for a seq2seq model: the tokens the decoder must produce
        (-100 where nothing is to be produced); without them the target is the source."""
        p = self.profile
        for ids in (input_ids, target_ids):
            if ids is not None and p.library and p.max_seq_len and ids.shape[-1] > p.max_seq_len:
                raise ValueError(
                    f"{ids.shape[-1]} tokens: {p.model_class} takes at most max_seq_len="
                    f"{p.max_seq_len} ({p.max_seq_len_source}). Crop or split the input, or "
                    "pass max_seq_len=... to adapt() if the model takes more."
                )
        if p.task == "seq2seq" and p.target_shift is not None:
            return self._seq2seq(input_ids, attention_mask, input_ids if target_ids is None else target_ids)
        if target_ids is not None:
            raise ValueError(f"target_ids is for seq2seq models; this one is {p.task}")
        if self.executor is not None:
            return self.executor.forward(input_ids, attention_mask)
        x = input_ids if p.batch_first else input_ids.t()  # seq-first models take (T, B)
        kwargs = dict(self._static)
        if attention_mask is not None and p.mask_name is not None:
            kwargs[p.mask_name] = attention_mask if p.mask_convention == "keep_one" else attention_mask == 0
        if p.full_logits_via == "labels":
            kwargs[p.signature.label_param] = x.contiguous()  # nanoGPT: all positions (it .view()s)
        out = self.model(x, **kwargs) if self._positional else self.model(**{p.input_name: x}, **kwargs)
        logits = _extract(out, p.output_access)
        if not p.batch_first and logits.dim() == 3:
            logits = logits.transpose(0, 1)
        return logits

    def _seq2seq(self, source: torch.Tensor, mask: torch.Tensor | None, target: torch.Tensor) -> torch.Tensor:
        """Source and its mask to the encoder, the target shifted right by the model's own
        rule to the decoder; logits (B, S, V), position s predicting target[:, s]."""
        p = self.profile
        kwargs = dict(self._static)
        kwargs[DECODER_INPUT] = self.decoder_inputs(target)  # (B, S)
        if mask is not None and p.mask_name is not None:
            kwargs[p.mask_name] = mask
        out = self.model(source, **kwargs) if self._positional else self.model(**{p.input_name: source}, **kwargs)
        return _extract(out, p.output_access)

    def decoder_inputs(self, target: torch.Tensor) -> torch.Tensor:
        """The decoder's input for `target` (B, S): a start token, then the target but its
        last token (-100 replaced by the pad id), by the model's own rule when it has one."""
        prepare = getattr(self.model, "prepare_decoder_input_ids_from_labels", None)
        if callable(prepare):
            return prepare(labels=target)
        start, pad = start_and_pad(self.model)
        shifted = torch.cat([torch.full_like(target[:, :1], start), target[:, :-1]], dim=1)
        return shifted.masked_fill(shifted == IGNORE_INDEX, pad)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The toolkit's training loss for this model's task and output kind (shifted by one
        for a causal LM, on the target for seq2seq; -100 never trained on)."""
        return lm_loss(logits, labels, self.profile.task, self.profile.output_kind)[0]

    @property
    def takes_labels(self) -> bool:
        """Whether forward takes a labels/targets parameter the model computes its own loss
        from (never through the graph executor, which calls the modules one by one)."""
        return self.profile.signature.label_param is not None and not self.profile.uses_graph_executor

    @property
    def labels_are_inputs(self) -> bool:
        """Hugging Face's convention (`labels` = input_ids, the model shifts) rather than
        nanoGPT's (`targets` = the next tokens, the caller shifts)."""
        return self.profile.signature.label_param in ("labels", "label")

    def own_loss(self, ids: torch.Tensor) -> torch.Tensor | None:
        """The model's own training loss on `ids` (B, T), called by its own label convention;
        None when forward takes no labels or returns no scalar loss."""
        if not self.takes_labels:
            return None
        p = self.profile
        if self.labels_are_inputs:
            x, y = ids, ids  # (B, T), (B, T)
        else:
            x, y = ids[:, :-1].contiguous(), ids[:, 1:].contiguous()  # (B, T-1), (B, T-1)
        if not p.batch_first:
            x, y = x.t(), y.t()  # seq-first models take (T, B)
        kwargs = {p.signature.label_param: y, **self._static}
        out = self.model(x, **kwargs) if self._positional else self.model(**{p.input_name: x}, **kwargs)
        return _loss_in(out)

    def with_model(self, model: nn.Module) -> AdaptedModel:
        """The same adapter (profile, graph) around another instance of the user's class: a
        reloaded or rebuilt copy is called exactly the way this one is."""
        executor = None
        if self.executor is not None:
            executor = copy.copy(self.executor)
            executor.model = model
        return AdaptedModel(model, self.profile, executor)

    def with_overrides(self, **overrides: Any) -> AdaptedModel:
        """The same model with `task`, `vocab_size` or `max_seq_len` set by the caller; the
        profile records that they came from an override."""
        sources = {_SOURCE_FIELD[k]: "override" for k in overrides}
        profile = dataclasses.replace(self.profile, **overrides, **sources)
        return AdaptedModel(self.model, profile, self.executor)

    def extra_repr(self) -> str:
        return self.profile.summary()


def start_and_pad(model: nn.Module) -> tuple[int, int]:
    """The decoder start token and pad id from the model's config (the pad id, else 0, when
    it names no start token)."""
    cfg = getattr(model, "config", None)
    pad = getattr(cfg, "pad_token_id", None)
    start = getattr(cfg, "decoder_start_token_id", None)
    pad = pad if isinstance(pad, int) else 0
    return (start if isinstance(start, int) else pad), pad


def _loss_in(out: Any) -> torch.Tensor | None:
    """The scalar loss in a forward's output: `.loss`, `['loss']`, or a 0-d tensor in a tuple."""
    if isinstance(out, Mapping) and isinstance(out.get("loss"), torch.Tensor):
        return out["loss"]
    if isinstance(getattr(out, "loss", None), torch.Tensor):
        return out.loss
    if isinstance(out, (tuple, list)):
        return next((t for t in out if isinstance(t, torch.Tensor) and t.dim() == 0), None)
    return None


def _extract(out: Any, how: str) -> torch.Tensor:
    if how == "tensor":
        return out
    kind, _, key = how.partition(":")
    if kind == "index":
        return out[int(key)]
    if kind == "key":
        return out[key]
    return getattr(out, key)

"""Read a model's `forward` signature once and say what each parameter is for."""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass, field

import torch.nn as nn

TOKEN_NAMES = (
    "input_ids",
    "idx",
    "input",
    "inputs",
    "src",
    "x",
    "tokens",
    "token_ids",
    "input_tokens",
    "ids",
    "text",
    "seq",
    "sequence",
)
# Padding masks: one flag per (batch, position). `attention_mask` is the Hugging Face
# convention (1 = keep); the `*padding_mask` names follow PyTorch (True = pad).
PADDING_MASK_NAMES = (
    "attention_mask",
    "mask",
    "key_padding_mask",
    "src_key_padding_mask",
    "padding_mask",
    "pad_mask",
    "input_mask",
)
# Square (T, T) attention masks, as in `nn.TransformerEncoder(src, mask=..)` or the PyTorch
# tutorial's `forward(src, src_mask)`: never fed a padding mask, left to the model's default.
SQUARE_MASK_NAMES = ("src_mask", "attn_mask", "causal_mask", "tgt_mask")
LABEL_NAMES = ("labels", "targets", "target", "y", "label")
NODE_TYPES = (
    "input",
    "embedding",
    "mhsa",
    "attention",
    "attn",
    "self_attention",
    "residual",
    "add",
    "ffn",
    "mlp",
    "feedforward",
    "layernorm",
    "rmsnorm",
    "norm",
    "dropout",
    "linear",
    "output",
    "block",
    "transformer",
    "lm_head",
)
_INTERMEDIATE = re.compile(rf"^({'|'.join(NODE_TYPES)})_\d+_(output|out|x|logits|hidden)$")
_NODE_INPUT = re.compile(r"^input_\d+_(tokens|ids)$")


@dataclass
class SignatureInfo:
    """What `forward` takes, by role. `is_simple` means it can be called with tokens alone."""

    params: list[str]
    input_param: str | None
    mask_param: str | None
    square_mask_param: str | None
    label_param: str | None
    intermediate_params: list[str] = field(default_factory=list)
    optional_params: list[str] = field(default_factory=list)
    unknown_required: list[str] = field(default_factory=list)
    var_kwargs: bool = False
    var_args: bool = False

    @property
    def needs_graph_executor(self) -> bool:
        return bool(self.intermediate_params)

    @property
    def is_simple(self) -> bool:
        return self.input_param is not None and not self.intermediate_params and not self.unknown_required

    def roles(self) -> dict[str, str]:
        out = {}
        for p in self.params:
            if p == self.input_param:
                out[p] = "input"
            elif p == self.mask_param:
                out[p] = "padding_mask"
            elif p == self.square_mask_param:
                out[p] = "square_mask"
            elif p == self.label_param:
                out[p] = "labels"
            elif p in self.intermediate_params:
                out[p] = "intermediate"
            elif p in self.unknown_required:
                out[p] = "unknown_required"
            else:
                out[p] = "optional"
        return out


class ModelSignatureInspector:
    """Classifies every parameter of `model.forward`: token input, padding mask, square
    mask, labels, the designer's intermediate outputs (`<node>_<i>_output`), optional
    parameters and `**kwargs`."""

    def __init__(self, model: nn.Module):
        self.model = model

    def analyze(self) -> SignatureInfo:
        sig = inspect.signature(self.model.forward)
        params, required = [], []
        var_kwargs = var_args = False
        for p in sig.parameters.values():
            if p.kind is p.VAR_KEYWORD:
                var_kwargs = True
            elif p.kind is p.VAR_POSITIONAL:
                var_args = True
            else:
                params.append(p.name)
                if p.default is p.empty:
                    required.append(p.name)

        intermediates = [p for p in params if _INTERMEDIATE.match(p)]
        rest = [p for p in params if p not in intermediates]
        input_param = _first_match(rest, TOKEN_NAMES) or next((p for p in rest if _NODE_INPUT.match(p)), None)
        mask_param = _first_match(rest, PADDING_MASK_NAMES)
        square = _first_match(rest, SQUARE_MASK_NAMES)
        label_param = _first_match(rest, LABEL_NAMES)
        known = {input_param, mask_param, square, label_param}
        unknown_required = [p for p in required if p not in known and p not in intermediates]
        optional = [p for p in rest if p not in known and p not in unknown_required]
        return SignatureInfo(
            params=params,
            input_param=input_param,
            mask_param=mask_param,
            square_mask_param=square,
            label_param=label_param,
            intermediate_params=intermediates,
            optional_params=optional,
            unknown_required=unknown_required,
            var_kwargs=var_kwargs,
            var_args=var_args,
        )


def _first_match(params: list[str], names: tuple[str, ...]) -> str | None:
    for name in names:
        if name in params:
            return name
    return None

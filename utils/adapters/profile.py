"""What `adapt` found about a model (`ModelProfile`): every downstream step reads it instead of guessing."""

from __future__ import annotations

from dataclasses import dataclass

from utils.adapters.signature import SignatureInfo


@dataclass(frozen=True)
class ModelProfile:
    """What `adapt` found about a model; every downstream step reads it instead of guessing.

    Frozen: `adapt` assembles it once, and a changed copy is made with `dataclasses.replace`."""

    model_class: str
    signature: SignatureInfo
    input_name: str | None
    mask_name: str | None
    mask_convention: str | None  # "keep_one" (1 = attend, HF) | "pad_true" (True = pad)
    mask_verified: bool
    batch_first: bool
    output_access: str  # "tensor", "index:<i>", "key:<k>", "attr:<a>"
    full_logits_via: str  # "forward", "labels", "graph_executor"
    output_kind: str  # "logits", "log_probs", "probs"
    task: str
    task_source: str
    vocab_size: int | None
    vocab_source: str
    max_seq_len: int | None
    max_seq_len_source: str
    attention_modules: tuple[str, ...] = ()
    uses_graph_executor: bool = False
    graph_source: str | None = None
    tied_output: bool = False
    num_classes: int | None = None
    library: str | None = None  # the installed package the class comes from; None: user code
    target_shift: str | None = None  # seq2seq: how target ids become decoder inputs
    notes: tuple[str, ...] = ()

    @property
    def accepts_mask(self) -> bool:
        return self.mask_name is not None or self.uses_graph_executor

    def summary(self) -> str:
        layout = "batch-first" if self.batch_first else "seq-first (transposed in and out)"
        mask = (
            f"{self.mask_name} ({self.mask_convention}{', verified' if self.mask_verified else ', by name'})"
            if self.mask_name
            else ("attention_mask via graph executor" if self.uses_graph_executor else "none")
        )
        return (
            f"{self.model_class}: task {self.task} ({self.task_source}), vocab {self.vocab_size} "
            f"({self.vocab_source}), max_seq_len {self.max_seq_len} ({self.max_seq_len_source}), "
            f"input {self.input_name!r}, mask {mask}, {layout}, output {self.output_access} "
            f"as {self.output_kind}"
        )

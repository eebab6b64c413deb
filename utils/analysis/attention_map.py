"""One captured attention call: where it ran, its weights and how well they check out."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class AttentionMap:
    """One attention call: where (`module`, `layer` = order of execution), the weights
    (B, H, T, S) float32 on CPU, how they were obtained (`method`) and how well they check
    out (`max_error`, the largest of `errors`: row sums, masked entries, output)."""

    module: str
    layer: int
    weights: torch.Tensor | None
    method: str
    max_error: float | None
    errors: dict[str, float] = field(default_factory=dict)
    note: str = ""

    @property
    def available(self) -> bool:
        return self.weights is not None

    @property
    def num_heads(self) -> int:
        return 0 if self.weights is None else int(self.weights.shape[1])

    def __repr__(self) -> str:
        shape = tuple(self.weights.shape) if self.weights is not None else None
        err = "n/a" if self.max_error is None else f"{self.max_error:.2e}"
        return (
            f"AttentionMap(module={self.module!r}, layer={self.layer}, weights={shape}, "
            f"method={self.method!r}, max_error={err})"
        )

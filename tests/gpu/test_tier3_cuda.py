"""Tier 3 on a GPU: mixed-precision training (bf16 and fp16 with its loss scaler) learns, and
the result reports model FLOPs utilisation against the device's peak."""

from __future__ import annotations

import math

import pytest
import torch

from utils import adapt, load_model, train
from utils.examples import default_corpus


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return [p for p in default_corpus().split("\n\n") if p.strip()][:600]


def _gpt_mini():
    loaded = load_model("example:gpt-mini")
    return adapt(loaded.model, loaded.config)


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_mixed_precision_training_learns_and_reports_mfu(cuda, texts, tmp_path, precision):
    if precision == "bf16-mixed" and not torch.cuda.is_bf16_supported():
        pytest.skip(f"{torch.cuda.get_device_name()} has no bf16")
    adapted = _gpt_mini()
    result = train(
        adapted,
        texts,
        max_steps=60,
        batch_size=16,
        seq_len=128,
        precision=precision,
        eval_every=30,
        eval_batches=4,
        out_dir=tmp_path,
        progress=False,
        live_plot=False,
    )
    assert result.precision == precision
    first = result.history[0]["train_loss"]
    assert math.isfinite(result.train_loss) and result.train_loss < first - 0.5, (first, result.train_loss)
    assert result.peak_flops is not None, torch.cuda.get_device_name()
    assert 0 < result.mfu < 1, result.mfu
    assert result.peak_memory_bytes and result.peak_memory_bytes > 0
    assert {p.device.type for p in adapted.parameters()} <= {"cpu", "cuda"}


def test_auto_precision_picks_bf16_where_the_gpu_has_it(cuda, texts, tmp_path):
    result = train(
        _gpt_mini(),
        texts,
        max_steps=5,
        batch_size=8,
        seq_len=64,
        eval_every=5,
        eval_batches=1,
        out_dir=tmp_path,
        progress=False,
        live_plot=False,
    )
    assert result.precision == ("bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed")

"""Tier 1 on a GPU: the CUDA branches of memory_footprint and inference_speed, and that the
device checks' predictions hold on a real device."""

from __future__ import annotations

import pytest
import torch

from tests.gpu.models import T_MAX, FixedDeviceLM, PositionLoopLM, TinyLM, V
from utils import adapt, load_model, run_tier1


def _gpt_mini():
    loaded = load_model("example:gpt-mini")
    return adapt(loaded.model, loaded.config)


@pytest.mark.parametrize("batch_size, seq_len", [(8, 256), (4, 64)])
def test_measured_training_peak_is_within_20_percent_of_the_estimate(cuda, batch_size, seq_len):
    # seq_len sets the training shape memory_footprint estimates and then measures on the GPU
    report = run_tier1(_gpt_mini(), device=cuda, seq_len=seq_len, checks=["memory_footprint"])
    result = report["memory_footprint"]
    measured, estimated = result.metrics["measured_training_peak"], result.metrics["estimated_training_peak_bytes"]
    assert isinstance(measured, int), measured  # a string says why the measurement failed
    assert abs(estimated - measured) <= 0.2 * measured, (estimated, measured)
    assert result.metrics["available_source"].startswith("free memory on ")
    assert result.status == "pass" and "measured peak" in result.summary


def test_inference_speed_on_cuda_times_the_gpu_and_reports_its_fraction_of_peak(cuda):
    result = run_tier1(_gpt_mini(), device=cuda, checks=["inference_speed"])["inference_speed"]
    assert result.status == "pass", result.summary
    assert result.metrics["device"].startswith("cuda")
    assert result.metrics["latency_ms"] > 0 and result.metrics["tokens_per_s"] > 0
    if any(k in torch.cuda.get_device_name() for k in ("H200", "H100", "A100", "L4", "T4", "A10", "V100")):
        assert 0 < result.metrics["fraction_of_peak_fp32"] < 1


def test_inference_speed_on_cuda_flags_a_loop_over_positions(cuda):
    result = run_tier1(PositionLoopLM(), device=cuda, checks=["inference_speed"])["inference_speed"]
    assert result.status == "warn" and "Python loop over positions" in result.summary


def test_a_correct_model_passes_tier1_on_cuda_and_comes_back_where_it_was(cuda):
    model = TinyLM()
    report = run_tier1(model, device=cuda)
    assert not report.failed, [(r.id, r.summary) for r in report.failed]
    assert {p.device.type for p in model.parameters()} == {"cpu"}


def test_device_portability_predicts_what_happens_on_cuda(cuda):
    """The check traces on the meta device, without a GPU; here the GPU confirms it: the
    flagged model really fails there, the passing one really runs (and agrees with the CPU)."""
    ids = torch.randint(0, V, (2, T_MAX), generator=torch.Generator().manual_seed(0))
    broken, correct = FixedDeviceLM(), TinyLM()
    assert run_tier1(broken, checks=["device_portability"])["device_portability"].status == "fail"
    with pytest.raises(RuntimeError, match="same device|device"):
        adapt(broken).to(cuda)(ids.to(cuda))
    assert run_tier1(correct, checks=["device_portability"])["device_portability"].status == "pass"
    adapted = adapt(correct).eval()
    with torch.no_grad():
        on_cpu = adapted(ids)
        on_gpu = adapted.to(cuda)(ids.to(cuda)).cpu()
    torch.testing.assert_close(on_gpu, on_cpu, atol=1e-3, rtol=1e-3)

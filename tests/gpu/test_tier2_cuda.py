"""Tier 2 on a GPU: attention capture gives the same maps on CUDA as on the CPU, and the whole
tier runs there without a failure of its own."""

from __future__ import annotations

import torch

from utils import adapt, capture_attention, load_model, run_tier2


def _gpt_mini():
    loaded = load_model("example:gpt-mini")
    return adapt(loaded.model, loaded.config).eval()


def test_capture_attention_on_cuda_matches_the_cpu(cuda):
    adapted = _gpt_mini()
    ids = torch.randint(0, adapted.profile.vocab_size, (2, 24), generator=torch.Generator().manual_seed(0))
    on_cpu = capture_attention(adapted, ids)
    on_gpu = capture_attention(adapted.to(cuda), ids.to(cuda))
    assert on_gpu and [m.module for m in on_gpu] == [m.module for m in on_cpu]
    for cpu_map, gpu_map in zip(on_cpu, on_gpu):
        assert gpu_map.available, gpu_map.note
        assert gpu_map.max_error is not None and gpu_map.max_error < 1e-3
        torch.testing.assert_close(gpu_map.weights.cpu(), cpu_map.weights, atol=1e-4, rtol=1e-3)


def test_run_tier2_on_cuda_fails_nothing_and_restores_the_model(cuda):
    adapted = _gpt_mini()
    before = {k: v.clone() for k, v in adapted.state_dict().items()}
    report = run_tier2(adapted, device=cuda, time_budget=120, progress=False)
    assert not report.failed, [(r.id, r.summary) for r in report.failed]
    assert {p.device.type for p in adapted.parameters()} == {"cpu"}
    for k, v in adapted.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)

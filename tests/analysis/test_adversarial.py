"""HotFlip finds the swaps that matter (verified by a forward) and beats random swaps."""

from __future__ import annotations

import torch

from tests.analysis.zoo import IgnoresTokensLM, TinyLM, TriggerBagLM, V
from utils.adapters import adapt
from utils.analysis.adversarial import hotflip


def _ids() -> torch.Tensor:
    ids = torch.randint(9, V, (4, 16), generator=torch.Generator().manual_seed(6))
    return ids


def test_hotflip_finds_the_trigger_tokens_and_beats_random_swaps():
    res = hotflip(adapt(TriggerBagLM()).eval(), _ids(), generator=torch.Generator().manual_seed(7))
    assert {s.new for s in res.swaps[:8]} <= set(TriggerBagLM.TRIGGERS)
    assert res.hotflip_kl > 10 * res.random_kl
    assert res.flip_rate > res.random_flip_rate


def test_every_swap_is_verified_by_a_forward():
    adapted = adapt(TinyLM()).eval()
    ids = _ids()
    res = hotflip(adapted, ids, generator=torch.Generator().manual_seed(8))
    s = res.swaps[0]
    swapped = ids[s.row : s.row + 1].clone()
    assert swapped[0, s.position] == s.old
    swapped[0, s.position] = s.new
    with torch.no_grad():
        p = torch.log_softmax(adapted(ids[s.row : s.row + 1])[0, -1], -1)
        q = torch.log_softmax(adapted(swapped)[0, -1], -1)
    assert abs(float((p.exp() * (p - q)).sum()) - s.kl) < 1e-5
    assert len(res.random) == 4 * 8


def test_a_model_that_ignores_its_tokens_is_moved_by_no_swap():
    res = hotflip(adapt(IgnoresTokensLM()).eval(), _ids(), generator=torch.Generator().manual_seed(9))
    assert max(s.kl for s in res.swaps + res.random) < 1e-9

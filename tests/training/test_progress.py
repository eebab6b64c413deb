import pytest
import torch

from tests.training.conftest import FAST
from tests.training.models import DeafLM
from utils.adapters import adapt
from utils.training import resolve_precision, train
from utils.training.callbacks import LiveLossPlot, RunRecorder, in_notebook


class Handle:
    def __init__(self):
        self.updates = 0

    def update(self, obj):
        self.updates += 1


def test_live_plot_draws_once_then_updates_in_place(monkeypatch):
    import IPython.display

    shown = []
    handle = Handle()
    monkeypatch.setattr(IPython.display, "display", lambda obj, display_id=None: shown.append(obj) or handle)
    recorder = RunRecorder(tokens_per_step=100)
    recorder.rows = [
        {
            "step": s,
            "tokens": 100 * s,
            "train_loss": torch.tensor(4.0 - s / 10),
            "val_loss": 3.5 if s == 5 else None,
            "lr": 1e-3,
            "grad_norm": None,
        }
        for s in range(1, 6)
    ]
    plot = LiveLossPlot(recorder)
    plot.draw()
    plot.draw()
    assert len(shown) == 1 and handle.updates == 1
    assert shown[0].data[:8] == b"\x89PNG\r\n\x1a\n"


def test_no_live_plot_outside_a_notebook():
    assert not in_notebook()


def test_precision_auto_is_32_on_cpu():
    assert resolve_precision("auto", "cpu") == "32-true"
    assert resolve_precision("32") == "32-true"
    assert resolve_precision("bf16-mixed") == "bf16-mixed"


def test_early_stopping_ends_a_run_that_does_not_improve(data, tmp_path):
    model = adapt(DeafLM(), task="causal_lm")
    result = train(
        model, data, max_steps=50, out_dir=tmp_path, **(FAST | {"eval_every": 2, "early_stopping_patience": 2})
    )
    assert result.stopped_reason == "early_stopping"
    assert result.steps == 6  # evaluations at 2 (best), 4 and 6 (no better): stop
    assert result.val_loss == pytest.approx(result.best_val_loss)

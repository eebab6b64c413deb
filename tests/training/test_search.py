"""search(): real Optuna on SQLite; resumed and shared studies; failed trials recorded."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import torch

from tests.training.models import NaNAfterLM, TinyLM
from utils.training.search import SearchError, search

TEXTS = [
    f"{w} {w[::-1]} {w.upper()} {w}{w}." for w in ("alpha", "beta", "gamma", "delta", "omega", "sigma", "theta")
] * 12
FAST = dict(max_steps=6, eval_every=2, eval_batches=1, batch_size=4, seq_len=16, logger="none")


class Factory:
    """A fresh TinyLM per call, except call number `nan_at` (counted from 0), which goes
    non-finite once training starts."""

    def __init__(self, nan_at: int | None = None):
        self.calls, self.nan_at = 0, nan_at

    def __call__(self) -> torch.nn.Module:
        self.calls += 1
        torch.manual_seed(self.calls)
        return NaNAfterLM(after=2) if self.calls - 1 == self.nan_at else TinyLM(vocab_size=128)


@pytest.fixture(scope="module")
def tokenizer():
    from utils.tokenization import CharacterLevelTokenizer

    return CharacterLevelTokenizer(vocab_size=128)


def test_a_study_resumes_and_a_nan_trial_is_recorded_as_failed(tmp_path, tokenizer):
    # call 0 probes the model for dropout, calls 1.. build trials: trial 1 goes NaN
    first = search(
        Factory(nan_at=2),
        TEXTS,
        n_trials=2,
        study_name="s",
        tokenizer=tokenizer,
        out_dir=tmp_path,
        pruner="none",
        **FAST,
    )
    assert first.storage == f"sqlite:///{(tmp_path / 'study.db').resolve()}"  # the default
    assert first.n_trials == 2 and first.states == {"COMPLETE": 1, "FAIL": 1}
    assert first.best_value is not None and set(first.best_params) >= {
        "learning_rate",
        "weight_decay",
        "warmup_steps",
        "batch_size",
    }
    assert {"optimization_history", "best_trial_curve"} <= set(first.figures)
    # resumed from the same storage; a pruner that stops any loss above 0.1 at its first report
    again = search(
        Factory(),
        TEXTS,
        n_trials=1,
        storage=first.storage,
        study_name="s",
        tokenizer=tokenizer,
        out_dir=tmp_path / "elsewhere",
        pruner=optuna.pruners.ThresholdPruner(upper=0.1),
        **FAST,
    )
    assert again.n_trials == 3 and [t["number"] for t in again.trials] == [0, 1, 2]
    assert again.states == {"COMPLETE": 1, "FAIL": 1, "PRUNED": 1}


_WORKER = """
import sys
from tests.training.test_search import FAST, TEXTS, Factory
from utils.tokenization import CharacterLevelTokenizer
from utils.training.search import search
search(Factory(), TEXTS, n_trials=1, storage=sys.argv[1], study_name="shared",
       tokenizer=CharacterLevelTokenizer(vocab_size=128), out_dir=sys.argv[2],
       seed=int(sys.argv[3]), **FAST)
"""


@pytest.mark.slow
def test_two_worker_processes_share_one_study(tmp_path):
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": root, "OMP_NUM_THREADS": "1"}
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, storage, str(tmp_path / f"w{i}"), str(i)],
            env=env,
            cwd=root,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    for w in workers:
        _, err = w.communicate(timeout=280)
        assert w.returncode == 0, err[-2000:]
    study = optuna.load_study(study_name="shared", storage=storage)
    assert sorted(t.number for t in study.trials) == [0, 1]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)


def test_bad_settings_are_clear_errors(tokenizer):
    with pytest.raises(SearchError, match="n_trials"):
        search(Factory(), TEXTS, n_trials=0)
    with pytest.raises(SearchError, match="pruner"):
        search(Factory(), TEXTS, n_trials=1, pruner="sometimes")
    with pytest.raises(SearchError, match="optuna distribution"):
        search(Factory(), TEXTS, n_trials=1, space={"learning_rate": (1e-4, 1e-2)})

import pytest
import pytorch_lightning as pl
import torch

from tests.training.conftest import FAST
from tests.training.models import TinyLM, token_data
from utils.tokenization.data_module import SimpleDataModule
from utils.training import train


class InterruptAt(pl.Callback):
    """Raises `error` as the batch of micro-batch index `batch` starts."""

    def __init__(self, batch: int, error: BaseException):
        self.batch, self.error = batch, error

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.fit_loop.epoch_loop.batch_progress.current.processed == self.batch:
            raise self.error


def _fresh():
    torch.manual_seed(0)
    return TinyLM(), SimpleDataModule(token_data(n=64), val_split=0.25)


def _losses(result):
    return [(r["step"], r["train_loss"], r["val_loss"]) for r in result.history]


def _assert_same_run(a, b, model_a, model_b):
    assert [r["step"] for r in a.history] == [r["step"] for r in b.history]
    for (step, ta, va), (_, tb, vb) in zip(_losses(a), _losses(b)):
        assert abs(ta - tb) < 1e-5, (step, ta, tb)
        assert (va is None) == (vb is None) and (va is None or abs(va - vb) < 1e-5), (step, va, vb)
    assert [r["lr"] for r in a.history] == pytest.approx([r["lr"] for r in b.history], abs=1e-12)
    for pa, pb in zip(model_a.parameters(), model_b.parameters()):
        torch.testing.assert_close(pa, pb, atol=1e-5, rtol=0)


def test_run_interrupted_by_ctrl_c_resumes_where_it_stopped(tmp_path):
    settings = dict(FAST, max_steps=40, learning_rate=3e-3, eval_every=10)
    model_a, data_a = _fresh()
    straight = train(model_a, data_a, out_dir=tmp_path / "a", **settings)
    model_b, data_b = _fresh()
    with pytest.raises(KeyboardInterrupt, match="state at step 20 .*resume=True"):
        train(model_b, data_b, out_dir=tmp_path / "b", callbacks=[InterruptAt(20, KeyboardInterrupt())], **settings)
    model_c, data_c = _fresh()  # a new process: nothing but the checkpoint carries over
    resumed = train(model_c, data_c, out_dir=tmp_path / "b", resume=True, **settings)
    assert resumed.steps == 40
    _assert_same_run(straight, resumed, model_a, model_c)
    assert resumed.best_val_loss == pytest.approx(straight.best_val_loss, abs=1e-5)


def test_an_exception_inside_gradient_accumulation_resumes_from_the_last_checkpoint(tmp_path):
    settings = dict(FAST, max_steps=20, batch_size=4, grad_accum=2, eval_every=10)
    model_a, data_a = _fresh()
    straight = train(model_a, data_a, out_dir=tmp_path / "a", **settings)
    model_b, data_b = _fresh()
    with pytest.raises(RuntimeError):
        train(
            model_b,
            data_b,
            out_dir=tmp_path / "b",
            callbacks=[InterruptAt(2 * 14 + 1, RuntimeError("killed"))],
            **settings,
        )
    state = torch.load(tmp_path / "b" / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["global_step"] == 10  # the evaluation's checkpoint, not a half step
    model_c, data_c = _fresh()
    resumed = train(model_c, data_c, out_dir=tmp_path / "b", resume=True, **settings)
    _assert_same_run(straight, resumed, model_a, model_c)


def test_resume_refuses_a_missing_checkpoint_file(tmp_path):
    model, data = _fresh()
    with pytest.raises(ValueError, match="no checkpoint file there"):
        train(model, data, resume=tmp_path / "nope.ckpt", **FAST)


def test_resume_refuses_a_checkpoint_trained_with_another_tokenizer(tmp_path):
    settings = dict(FAST, eval_every=2)
    texts_a = [f"the cat sat on the mat {i}. " * 8 for i in range(40)]
    texts_b = [f"zzz yyy xxx www {i}! " * 8 for i in range(40)]  # other characters first: other ids
    torch.manual_seed(0)
    train(TinyLM(), texts_a, out_dir=tmp_path, max_steps=2, **settings)
    last = tmp_path / "checkpoints" / "last.ckpt"
    before = last.read_bytes()
    with pytest.raises(ValueError, match=r"last.ckpt: it was trained with another tokenizer .*resume=False"):
        train(TinyLM(), texts_b, out_dir=tmp_path, resume=True, max_steps=4, **settings)
    assert last.read_bytes() == before  # the refused run wrote nothing over it
    resumed = train(TinyLM(), texts_a, out_dir=tmp_path, resume=True, max_steps=4, **settings)
    assert resumed.steps == 4 and resumed.history[0]["step"] == 1  # the history carried over

import math

import pytest
import pytorch_lightning as pl
import torch

from tests.training.conftest import FAST
from tests.training.models import NaNAfterLM, OOMAboveLM, TinyLM, V, token_data
from utils.adapters import UniversalModelAdapter, adapt
from utils.adapters.lightning_module import DataMismatchError, NonFiniteLossError
from utils.tokenization.character_tokenizer import CharacterLevelTokenizer
from utils.tokenization.data_module import AdaptiveTokenizerDataModule, SimpleDataModule
from utils.training import TrainConfig, TrainConfigError, TrainingOOMError, train


def test_train_learns_records_history_and_writes_loadable_checkpoints(data, tmp_path):
    torch.manual_seed(0)
    model = TinyLM()
    result = train(model, data, max_steps=30, learning_rate=3e-3, out_dir=tmp_path, **FAST)
    assert result.steps == 30 and len([r for r in result.history if r["train_loss"]]) == 30
    assert [r["step"] for r in result.history] == list(range(1, 31))
    assert result.history[-1]["train_loss"] < math.log(V) - 1.0, result.history[-1]
    assert [r["step"] for r in result.history if r["val_loss"] is not None] == [10, 20, 30]
    assert result.val_loss == result.history[-1]["val_loss"] < result.history[9]["val_loss"]
    assert result.tokens_seen == 30 * 8 * 24 and result.tokens_per_second > 0
    assert result.mfu is None and result.precision == "32-true"
    assert all(r["grad_norm"] > 0 and r["lr"] > 0 for r in result.history)
    for path in (result.best_checkpoint, result.last_checkpoint):
        state = torch.load(path, weights_only=True)
        weights = {k.removeprefix("adapted.model."): v for k, v in state["state_dict"].items()}
        assert set(weights) >= {"tok.weight", "head.weight"}
    last = torch.load(result.last_checkpoint, weights_only=True)["state_dict"]
    torch.testing.assert_close(last["adapted.model.head.weight"], model.head.weight)  # in place
    assert not list(tmp_path.glob("checkpoints/*.tmp"))


def test_text_data_goes_through_the_data_module(tmp_path):
    texts = ["the quick brown fox jumps over the lazy dog. " * 8] * 12
    tok = CharacterLevelTokenizer(vocab_size=V)
    result = train(TinyLM(), texts, tokenizer=tok, max_tokens=4 * 8 * 16, seq_len=16, out_dir=tmp_path, **FAST)
    assert result.steps == 4 and result.val_loss is not None
    assert result.stopped_reason == "max_tokens" and result.tokens_seen == 512


@pytest.mark.parametrize(
    "field, value, words",
    [
        ("learning_rate", float("inf"), "learning_rate=inf"),
        ("learning_rate", 0.0, "learning_rate=0.0"),
        ("learning_rate", -1e-3, "> 0"),
        ("max_steps", 0, "max_steps=0"),
        ("warmup_steps", 50, "warmup must end"),
        ("batch_size", 0, "batch_size=0"),
        ("precision", "fp8", "precision='fp8'"),
        ("betas", (0.9, 1.5), "betas"),
    ],
)
def test_bad_settings_are_refused_with_their_name(field, value, words):
    with pytest.raises(TrainConfigError, match=words.replace("(", r"\(")):
        TrainConfig(**({"max_steps": 20} | {field: value}))


def test_unknown_or_conflicting_settings(data):
    with pytest.raises(TrainConfigError, match="unknown training setting.*lerning_rate"):
        train(TinyLM(), data, lerning_rate=1e-3)
    with pytest.raises(TrainConfigError, match="max_steps or max_tokens"):
        TrainConfig(max_steps=5, max_tokens=1000)


def test_inputs_that_cannot_fit_the_model_are_refused_before_training(tmp_path):
    texts = ["some text to train on. " * 40] * 4
    big = CharacterLevelTokenizer(vocab_size=200)
    with pytest.raises(DataMismatchError, match=r"200 ids.*61 rows"):
        train(TinyLM(), texts, tokenizer=big, max_steps=2, seq_len=16, **FAST)
    with pytest.raises(
        TrainConfigError,
        match=r"seq_len=64 is above what the model's context of 24 tokens .max_seq_len. allows: use seq_len <= 24",
    ):
        train(TinyLM(), texts, tokenizer=CharacterLevelTokenizer(vocab_size=V), seq_len=64, **FAST)
    short = SimpleDataModule(token_data(n=5), val_split=0.2)
    with pytest.raises(TrainConfigError, match=r"too little text for one batch: .* 4 row"):
        train(TinyLM(), short, max_steps=2, **FAST)


def test_nan_loss_stops_at_once_naming_step_batch_and_module(data, tmp_path):
    # (a correct model is never stopped: the first test trains one to the end)
    torch.manual_seed(0)
    model = NaNAfterLM(after=3)
    adapted = adapt(model)
    model.calls = 0
    with pytest.raises(NonFiniteLossError, match=r"step 3 \(batch 3\).*`model.blow` \(Exploder\)"):
        train(adapted, data, max_steps=20, out_dir=tmp_path, **FAST)
    assert all(torch.isfinite(p).all() for p in model.parameters())  # never trained on


def test_nan_stop_holds_under_a_bare_trainer(data):
    model = NaNAfterLM(after=2)
    module = UniversalModelAdapter(adapt(model), learning_rate=1e-3, max_steps=10)
    model.calls = 0
    trainer = pl.Trainer(
        max_steps=10,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    with pytest.raises(NonFiniteLossError, match="step 2 .*model.blow"):
        trainer.fit(module, data)
    assert trainer.global_step == 2


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"learning_rate": float("inf")}, "learning_rate must be a finite number > 0"),
        ({"max_steps": 0}, "max_steps must be an integer >= 1"),
        ({"warmup_steps": 10, "max_steps": 10}, "warmup_steps=10 leaves no steps"),
    ],
)
def test_adapter_refuses_bad_optimizer_settings(kwargs, words):
    with pytest.raises(ValueError, match=words):
        UniversalModelAdapter(TinyLM(), **kwargs)


def test_adapter_refuses_a_data_module_that_does_not_fit_the_profile():
    texts = ["the data module's tokenizer is larger than the model. " * 20] * 4
    dm = AdaptiveTokenizerDataModule(
        texts, CharacterLevelTokenizer(vocab_size=150), batch_size=2, max_length=16, cache=False
    )
    module = UniversalModelAdapter(adapt(TinyLM()), max_steps=2)
    trainer = pl.Trainer(
        max_steps=2,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    with pytest.raises(DataMismatchError, match=r"150 ids but the model's vocabulary has 61"):
        trainer.fit(module, dm)
    long_rows = AdaptiveTokenizerDataModule(
        texts, CharacterLevelTokenizer(vocab_size=V), batch_size=2, max_length=48, cache=False
    )
    with pytest.raises(DataMismatchError, match=r"rows of 48 tokens .* context is 24"):
        trainer.fit(module, long_rows)


def test_out_of_memory_halves_the_micro_batch_keeping_the_step(data, tmp_path, caplog):
    torch.manual_seed(0)
    model = OOMAboveLM(limit=2)
    result = train(model, data, max_steps=2, out_dir=tmp_path, **FAST)
    assert (result.batch_size, result.grad_accum) == (2, 4)
    assert result.steps == 2 and result.tokens_seen == 2 * 8 * 24
    assert model.seen[-8:] == [2] * 8
    assert "micro-batch 4 and grad_accum 2" in caplog.text
    assert "micro-batch 2 and grad_accum 4" in caplog.text
    with pytest.raises(TrainingOOMError, match="micro-batch of 1 row"):
        train(OOMAboveLM(limit=0), data, max_steps=2, out_dir=tmp_path, **FAST)


def test_flops_per_token_of_an_encoder_decoder_counts_its_target_too():
    from tests.training.tier3_models import EncoderDecoder
    from utils.training.flops import flops_per_token

    adapted = adapt(EncoderDecoder(vocab_size=64, max_seq_len=32))
    source, target = torch.randint(4, 64, (2, 4)), torch.randint(4, 64, (2, 5))  # an odd block: 4 + 5
    batch = {"input_ids": source, "attention_mask": torch.ones_like(source), "labels": target}
    total = flops_per_token(adapted, batch, "seq2seq", torch.device("cpu")) * (4 + 5)  # per source + target token
    shorter = dict(batch, labels=target[:, :1])
    total_shorter = flops_per_token(adapted, shorter, "seq2seq", torch.device("cpu")) * (4 + 1)
    assert total > total_shorter > 0  # the decoder ran over the target given, not over the source


def test_an_encoder_decoder_row_is_a_source_and_a_target_of_up_to_its_context_each(tmp_path):
    from tests.training.tier3_models import EncoderDecoder

    texts = [f"the cat sat on the mat {i}. " * 4 for i in range(60)]
    torch.manual_seed(0)
    model = EncoderDecoder(vocab_size=64, max_seq_len=12)
    result = train(model, texts, out_dir=tmp_path, max_steps=2, seq_len=24, **FAST)
    assert result.steps == 2
    with pytest.raises(TrainConfigError, match=r"context of 12 tokens \(max_seq_len, a source and a target .*<= 24"):
        train(model, texts, out_dir=tmp_path, max_steps=2, seq_len=26, **FAST)


def test_an_encoder_decoders_target_ids_are_checked_against_its_vocabulary():
    from tests.training.tier3_models import EncoderDecoder

    module = UniversalModelAdapter(adapt(EncoderDecoder(vocab_size=64, max_seq_len=12)))
    source = torch.randint(4, 64, (2, 6))
    target = torch.tensor([[5, 6, 7], [8, 70, -100]])  # 70: past the 64 rows
    with pytest.raises(DataMismatchError, match="token id 70 but the model's vocabulary has 64 rows"):
        module.training_step({"input_ids": source, "attention_mask": torch.ones_like(source), "labels": target}, 0)

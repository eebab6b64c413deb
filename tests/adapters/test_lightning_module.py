import math
import pickle

import pytest
import pytorch_lightning as pl
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset

from tests.adapters import zoo
from utils.adapters import UniversalModelAdapter, adapt
from utils.adapters.lightning_module import decay_groups, warmup_cosine
from utils.adapters.losses import IGNORE_INDEX, lm_loss

PATTERN = "the quick brown fox jumps over the lazy dog. "


class Windows(Dataset):
    """Overlapping windows of a repeated sentence, as ids 1..n (0 is left for padding)."""

    def __init__(self, text: str, block: int):
        self.vocab = {c: i + 1 for i, c in enumerate(sorted(set(text)))}
        self.ids = torch.tensor([self.vocab[c] for c in text])
        self.block = block

    def __len__(self):
        return len(self.ids) - self.block

    def __getitem__(self, i):
        x = self.ids[i : i + self.block]
        return {"input_ids": x, "attention_mask": torch.ones_like(x), "labels": x.clone()}


def _trainer(steps, **kw):
    return pl.Trainer(
        max_steps=steps,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kw,
    )


def test_causal_loss_shifts_by_one():
    V = 11
    labels = torch.tensor([[1, 2, 3, 4]])
    logits = torch.full((1, 4, V), -20.0)
    for t in range(3):  # position t predicts token t + 1
        logits[0, t, labels[0, t + 1]] = 20.0
    loss, n = lm_loss(logits, labels, "causal_lm")
    assert n == 3 and loss < 1e-6
    unshifted, _ = lm_loss(logits, labels, "masked_lm")
    assert unshifted > 5


def test_ignore_index_never_trained_whatever_the_pad_id():
    torch.manual_seed(0)
    logits = torch.randn(2, 6, 13)
    labels = torch.randint(0, 13, (2, 6))
    padded = labels.clone()
    padded[1, 3:] = IGNORE_INDEX
    loss, n = lm_loss(logits, padded, "causal_lm")
    manual = torch.nn.functional.cross_entropy(
        torch.cat([logits[0, :-1], logits[1, :2]]), torch.cat([labels[0, 1:], labels[1, 1:3]])
    )
    assert n == 7
    torch.testing.assert_close(loss, manual)


def test_masked_and_classification_losses():
    logits = torch.randn(2, 5, 9)
    labels = torch.full((2, 5), IGNORE_INDEX)
    labels[0, 2], labels[1, 4] = 3, 7
    loss, n = lm_loss(logits, labels, "masked_lm")
    manual = torch.nn.functional.cross_entropy(torch.stack([logits[0, 2], logits[1, 4]]), torch.tensor([3, 7]))
    assert n == 2
    torch.testing.assert_close(loss, manual)
    cls_loss, n = lm_loss(torch.randn(4, 3), torch.tensor([0, 2, 1, 1]), "classification")
    assert n == 4 and cls_loss > 0
    with pytest.raises(ValueError, match="encoder"):
        lm_loss(logits, labels, "encoder")


def test_log_probs_and_probs_outputs_give_the_same_loss():
    logits = torch.randn(2, 5, 9)
    labels = torch.randint(0, 9, (2, 5))
    ref, _ = lm_loss(logits, labels, "causal_lm")
    lp, _ = lm_loss(logits.log_softmax(-1), labels, "causal_lm", "log_probs")
    pr, _ = lm_loss(logits.softmax(-1), labels, "causal_lm", "probs")
    torch.testing.assert_close(lp, ref)
    torch.testing.assert_close(pr, ref, atol=1e-5, rtol=1e-5)


def test_no_weight_decay_on_biases_norms_and_embeddings():
    model = zoo.NanoGPT()  # lm_head is tied to the token embedding
    decay, keep = decay_groups(model, 0.1)
    decay_ids = {id(p) for p in decay["params"]}
    assert id(model.wte.weight) not in decay_ids and id(model.wpe.weight) not in decay_ids
    assert id(model.h[0].attn.qkv.weight) in decay_ids
    assert id(model.h[0].attn.qkv.bias) not in decay_ids and id(model.ln_f.weight) not in decay_ids
    n_unique = len({id(p) for p in model.parameters()})
    assert len(decay["params"]) + len(keep["params"]) == n_unique


def test_warmup_then_cosine():
    lrs = [warmup_cosine(s, 10, 110, 0.1) for s in range(111)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))
    assert lrs[110] == pytest.approx(0.1)
    assert lrs[60] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))


def test_gpt_mini_learns_a_pattern_and_generates_it():
    from utils.loading import load_model

    torch.manual_seed(0)
    loaded = load_model("example:gpt-mini")
    module = UniversalModelAdapter(
        adapt(loaded.model, loaded.config), learning_rate=3e-3, warmup_steps=20, weight_decay=0.0
    )
    data = Windows(PATTERN * 30, block=32)
    batch = next(iter(DataLoader(data, batch_size=16)))
    start, _ = module._step(batch)
    _trainer(250).fit(module, DataLoader(data, batch_size=16, shuffle=True))
    end, _ = module._step(batch)
    assert end < 0.1 * start, (start, end)
    prompt = torch.tensor([[data.vocab[c] for c in "the quick brown"]])
    out = module.generate(prompt, max_new_tokens=16, temperature=0)
    inverse = {i: c for c, i in data.vocab.items()}
    assert "".join(inverse[int(i)] for i in out[0]) == "the quick brown fox jumps over "


def _tiny_module(**kw):
    torch.manual_seed(0)
    return UniversalModelAdapter(zoo.TinyGPT(), learning_rate=1e-3, warmup_steps=2, **kw)


def test_mixed_precision_accumulation_and_logging():
    module = _tiny_module()
    data = Windows(PATTERN * 4, block=12)
    trainer = _trainer(4, precision="bf16-mixed", accumulate_grad_batches=2, limit_val_batches=2, val_check_interval=4)
    trainer.fit(module, DataLoader(data, batch_size=4), DataLoader(data, batch_size=4))
    m = trainer.callback_metrics
    for key in ("train_loss", "train_ppl", "lr", "tokens_per_sec", "val_loss", "val_ppl"):
        assert key in m and torch.isfinite(m[key]), key
    torch.testing.assert_close(m["val_ppl"], torch.exp(m["val_loss"]), rtol=0.05, atol=0)


def test_pickles_and_checkpoints_round_trip(tmp_path):
    module = _tiny_module(eos_token_id=3)
    data = Windows(PATTERN * 2, block=12)
    trainer = _trainer(2)
    trainer.fit(module, DataLoader(data, batch_size=4))
    clone = pickle.loads(pickle.dumps(module))
    ids = data[0]["input_ids"][None]
    torch.testing.assert_close(clone.eval()(ids), module.eval()(ids))
    path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(path)
    torch.manual_seed(123)
    restored = UniversalModelAdapter.load_from_checkpoint(path, model=zoo.TinyGPT(), weights_only=True)
    assert restored.hparams.eos_token_id == 3 and restored.hparams.learning_rate == 1e-3
    torch.testing.assert_close(restored.eval()(ids), module.eval()(ids))


def test_generate_crops_context_samples_and_stops_at_eos():
    module = _tiny_module()
    long_prompt = torch.randint(1, zoo.V, (2, zoo.L + 5))  # longer than the position table
    out = module.generate(
        long_prompt, max_new_tokens=4, temperature=0.8, top_k=5, top_p=0.9, generator=torch.Generator().manual_seed(0)
    )
    assert out.shape == (2, zoo.L + 9)
    greedy = module.generate(long_prompt[:, :4], max_new_tokens=1, temperature=0)
    eos = int(greedy[0, -1])
    stopped = module.generate(long_prompt[:1, :4], max_new_tokens=10, temperature=0, eos_token_id=eos)
    assert stopped.shape == (1, 5) and int(stopped[0, -1]) == eos


def test_generate_refuses_non_causal_models():
    module = UniversalModelAdapter(zoo.TinyGPT(causal=False), task="masked_lm")
    with pytest.raises(ValueError, match="causal LM"):
        module.generate(torch.tensor([[1, 2]]), max_new_tokens=2)


def test_top_k_one_equals_greedy():
    module = _tiny_module()
    prompt = torch.randint(1, zoo.V, (3, 5))
    torch.testing.assert_close(
        module.generate(prompt, 6, temperature=1.0, top_k=1), module.generate(prompt, 6, temperature=0)
    )


def test_encoder_has_no_objective():
    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(50, 8)

        def forward(self, input_ids):
            return self.emb(input_ids)

    module = UniversalModelAdapter(Encoder(), task="encoder")
    with pytest.raises(ValueError, match="no training loss"):
        module._step({"input_ids": torch.randint(0, 50, (2, 4)), "labels": torch.zeros(2, 4).long()})

"""Encoder-decoders through the adapter and the Lightning module: the source goes to the
encoder, the target (shifted by the model's own rule) to the decoder, and the loss is the
target's cross-entropy, equal to the model's own."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from tests.tiers.hf_zoo import Zoo
from tests.tiers.zoo_broken import TinySeq2Seq
from utils.adapters import UniversalModelAdapter, adapt
from utils.adapters.losses import IGNORE_INDEX, lm_loss


@pytest.fixture(scope="module")
def zoo():
    return Zoo()


@pytest.mark.parametrize("name", ["t5", "bart"])
def test_hugging_face_encoder_decoders_are_seq2seq_with_logits_over_the_target(zoo, name):
    adapted = adapt(zoo[name])
    p = adapted.profile
    assert (p.task, p.task_source) == ("seq2seq", "config.is_encoder_decoder")
    assert p.target_shift == "model.prepare_decoder_input_ids_from_labels" and p.mask_verified
    source, target = torch.randint(3, 97, (2, 7)), torch.randint(3, 97, (2, 5))
    target[1, -2:] = IGNORE_INDEX  # a padded target: the model's own loss skips it too
    mask = torch.ones_like(source)
    mask[1, -3:] = 0
    model = zoo[name].eval()
    with torch.no_grad():
        logits = adapted(source, mask, target_ids=target)  # (B, S, V)
        own = model(input_ids=source, attention_mask=mask, labels=target).loss
    assert logits.shape == (2, 5, 97)
    assert torch.allclose(lm_loss(logits, target, "seq2seq")[0], own, atol=1e-6)
    assert adapted(source).shape == (2, 7, 97)  # no target: the source is the target


def test_a_hand_written_encoder_decoder_is_recognised_by_its_decoder_input():
    adapted = adapt(TinySeq2Seq())
    p = adapted.profile
    assert (p.task, p.task_source) == ("seq2seq", "forward takes decoder_input_ids")
    target = torch.tensor([[5, 6, IGNORE_INDEX]])
    assert adapted.decoder_inputs(target).tolist() == [[0, 5, 6]]  # start token 0, then shifted


def test_the_lightning_module_trains_a_seq2seq_model_on_the_target(zoo):
    torch.manual_seed(0)
    source = torch.randint(3, 97, (8, 6))
    batches = [
        {"input_ids": source, "attention_mask": torch.ones_like(source), "labels": source.flip(1)}
    ]  # learn to reverse
    module = UniversalModelAdapter(adapt(zoo["t5"]), learning_rate=1e-2, warmup_steps=1)
    with torch.no_grad():
        before = module._step(batches[0])[0].item()
    pl.Trainer(
        max_steps=30,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    ).fit(module, DataLoader(batches * 30, batch_size=None))
    with torch.no_grad():
        after = module._step(batches[0])[0].item()
    assert after < 0.5 * before

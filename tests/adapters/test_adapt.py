import copy
import pickle

import pytest
import torch
import torch.nn as nn
import transformers as tf

from tests.adapters import zoo
from utils.adapters import AdaptError, adapt


def _ids(B=2, T=9, V=zoo.V, seed=0):
    return torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(seed))


def test_plain_tensor_output():
    torch.manual_seed(0)
    a = adapt(zoo.TinyGPT())
    p = a.profile
    assert a(_ids()).shape == (2, 9, zoo.V)
    assert (p.input_name, p.output_access, p.batch_first) == ("input_ids", "tensor", True)
    assert (p.vocab_size, p.max_seq_len, p.task) == (zoo.V, zoo.L, "causal_lm")
    assert p.attention_modules == ("blocks.0.attn", "blocks.1.attn")


@pytest.mark.parametrize("cls,access", [(zoo.DictOutputLM, "key:logits"), (zoo.TupleOutputLM, "index:0")])
def test_dict_and_tuple_outputs(cls, access):
    torch.manual_seed(0)
    model = cls()
    a = adapt(model)
    assert a.profile.output_access == access
    ids = _ids()
    torch.testing.assert_close(a(ids), zoo.TinyGPT.forward(model, ids))


def test_nanogpt_full_logits_from_last_position_model():
    torch.manual_seed(0)
    model = zoo.NanoGPT().eval()
    a = adapt(model)
    ids = _ids()
    logits = a(ids)
    assert logits.shape == (2, 9, zoo.V)
    assert a.profile.full_logits_via == "labels"
    torch.testing.assert_close(logits[:, -1:], model(ids)[0])


def test_seq_first_model_is_transposed_in_and_out():
    torch.manual_seed(0)
    model = zoo.SeqFirstLM().eval()
    a = adapt(model)
    assert a.profile.batch_first is False
    ids = _ids()
    torch.testing.assert_close(a(ids), model(ids.t()).transpose(0, 1))


def test_batch_mixing_model_is_not_mistaken_for_seq_first():
    torch.manual_seed(0)
    a = adapt(zoo.BatchMixingLM())
    assert a.profile.batch_first is True
    assert any("mixes the batch" in n for n in a.profile.notes)


def test_log_softmax_output_recorded():
    torch.manual_seed(0)
    assert adapt(zoo.LogSoftmaxLM()).profile.output_kind == "log_probs"


@pytest.mark.parametrize(
    "cls,name,conv", [(zoo.TinyGPT, "attention_mask", "keep_one"), (zoo.PadTrueLM, "key_padding_mask", "pad_true")]
)
def test_mask_convention_verified_by_probe(cls, name, conv):
    torch.manual_seed(0)
    a = adapt(cls())
    assert (a.profile.mask_name, a.profile.mask_convention, a.profile.mask_verified) == (name, conv, True)
    ids, mask = _ids(), torch.ones(2, 9, dtype=torch.long)
    mask[1, :4] = 0
    alt = ids.clone()
    alt[1, :4] = (alt[1, :4] + 3) % zoo.V
    torch.testing.assert_close(a(ids, mask)[1, 4:], a(alt, mask)[1, 4:])  # HF mask in, right answer out


def test_misleading_mask_name_is_corrected_by_probe():
    class Inverted(zoo.TinyGPT):  # named like HF, but True = pad
        def forward(self, input_ids, attention_mask=None):
            return zoo.PadTrueLM.forward(self, input_ids, attention_mask)

    torch.manual_seed(0)
    assert adapt(Inverted()).profile.mask_convention == "pad_true"


def test_classifier():
    torch.manual_seed(0)
    a = adapt(zoo.Classifier(classes=7))
    assert a(_ids()).shape == (2, 7)
    assert (a.profile.task, a.profile.num_classes) == ("classification", 7)


def test_config_and_overrides_win():
    torch.manual_seed(0)
    a = adapt(zoo.TinyGPT(causal=False), {"template": "GPT-mini", "vocab_size": zoo.V})
    assert (a.profile.task, a.profile.task_source) == ("causal_lm", "template 'GPT-mini'")
    a = adapt(zoo.TinyGPT(), None, task="masked_lm", max_seq_len=12)
    assert (a.profile.task, a.profile.max_seq_len) == ("masked_lm", 12)


class Encoder(zoo.TinyGPT):
    """No name, config or buffer says causal: behaviour decides."""


def test_task_from_behaviour_without_hints():
    torch.manual_seed(0)
    assert adapt(Encoder(causal=False)).profile.task == "masked_lm"
    assert adapt(Encoder(causal=True)).profile.task_source.startswith("behaviour")


def test_task_from_class_name_and_causal_buffer():
    class Leaky(Encoder):
        def __init__(self):
            super().__init__(causal=False)
            self.register_buffer("bias", torch.tril(torch.ones(zoo.L, zoo.L)).view(1, 1, zoo.L, zoo.L))

    torch.manual_seed(0)
    assert adapt(zoo.TinyGPT(causal=False)).profile.task_source == "class name 'TinyGPT'"
    p = adapt(Leaky()).profile
    assert (p.task, p.task_source) == ("causal_lm", "causal mask buffer 'bias'")


def test_unmeasurable_behaviour_defaults_to_causal_and_says_so():
    class Noisy(Encoder):
        def forward(self, input_ids, attention_mask=None):
            out = super().forward(input_ids, attention_mask)
            return torch.nn.functional.dropout(out, 0.5, training=True)

    torch.manual_seed(0)
    p = adapt(Noisy()).profile
    assert p.task == "causal_lm" and any("not repeatable" in n for n in p.notes)


def test_unknown_sizes_are_left_unknown_and_said():
    class Bare(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(40, 8)
            self.out = nn.Linear(8, 40)

        def forward(self, tokens):
            return self.out(self.emb(tokens))

    p = adapt(Bare()).profile
    assert p.max_seq_len is None and any("max_seq_len" in n for n in p.notes)
    assert p.vocab_size == 40 and p.vocab_source == "output width"


def test_cannot_adapt_lists_what_was_tried():
    class Odd(nn.Module):
        def forward(self, image, style):
            return image

    with pytest.raises(AdaptError, match=r"image.*style|no token input"):
        adapt(Odd())

    class Crashes(zoo.TinyGPT):
        def forward(self, input_ids):
            raise RuntimeError("shape mismatch in block 3")

    with pytest.raises(AdaptError, match="shape mismatch in block 3"):
        adapt(Crashes())


def test_bad_override_is_rejected():
    with pytest.raises(AdaptError, match="task='chat'"):
        adapt(zoo.TinyGPT(), task="chat")


def test_adapt_restores_training_mode_and_pickles():
    model = zoo.TinyGPT().train()
    a = adapt(model)
    assert model.training
    b = pickle.loads(pickle.dumps(a))
    torch.testing.assert_close(b.eval()(_ids()), copy.deepcopy(a).eval()(_ids()))


def _hf(name):
    small = dict(num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
    if name == "gpt2":
        return tf.GPT2LMHeadModel(
            tf.GPT2Config(
                n_layer=2, n_embd=32, n_head=4, vocab_size=101, n_positions=32, bos_token_id=0, eos_token_id=0
            )
        )
    if name == "llama":
        return tf.LlamaForCausalLM(
            tf.LlamaConfig(
                hidden_size=32,
                num_key_value_heads=2,
                vocab_size=103,
                max_position_embeddings=64,
                bos_token_id=0,
                eos_token_id=0,
                pad_token_id=0,
                **small,
            )
        )
    cfg = tf.BertConfig(hidden_size=32, vocab_size=107, max_position_embeddings=48, num_labels=3, **small)
    return tf.BertForMaskedLM(cfg) if name == "bert" else tf.BertForSequenceClassification(cfg)


@pytest.mark.parametrize(
    "name,task,vocab,max_len,shape",
    [
        ("gpt2", "causal_lm", 101, 32, (2, 9, 101)),
        ("llama", "causal_lm", 103, 64, (2, 9, 103)),
        ("bert", "masked_lm", 107, 48, (2, 9, 107)),
        ("bert_cls", "classification", 107, 48, (2, 3)),
    ],
)
def test_hugging_face_models(name, task, vocab, max_len, shape):
    torch.manual_seed(0)
    model = _hf(name).eval()
    a = adapt(model)
    p = a.profile
    assert (p.task, p.vocab_size, p.max_seq_len) == (task, vocab, max_len)
    assert p.mask_name == "attention_mask" and p.mask_convention == "keep_one"
    ids = _ids(V=50)
    mask = torch.ones_like(ids)
    mask[0, -3:] = 0
    out = a(ids, mask)
    assert out.shape == shape
    torch.testing.assert_close(out, model(input_ids=ids, attention_mask=mask).logits)


def test_adapted_model_owns_copies_and_its_loss():
    """The tiers call a reloaded copy, an overridden profile and the loss through the
    adapted model, never by rebuilding its calling convention."""
    torch.manual_seed(0)
    model = zoo.TinyGPT()
    adapted = adapt(model)
    ids = torch.randint(0, adapted.profile.vocab_size, (2, 6))
    twin = copy.deepcopy(model)
    other = adapted.with_model(twin)
    assert other.model is twin and other.profile is adapted.profile
    assert torch.equal(other(ids), adapted(ids))
    overridden = adapted.with_overrides(max_seq_len=8)
    assert overridden.profile.max_seq_len == 8 and overridden.profile.max_seq_len_source == "override"
    assert adapted.profile.max_seq_len_source != "override" and overridden.model is model
    logits = adapted(ids)
    shifted = nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
    assert torch.allclose(adapted.loss(logits, ids), shifted)


def test_an_override_of_none_overrides_nothing():
    from utils.loading import load_model

    loaded = load_model("example:gpt-mini")
    plain = adapt(loaded.model, loaded.config).profile
    given = adapt(loaded.model, loaded.config, vocab_size=None, max_seq_len=None, task=None).profile
    assert (given.vocab_size, given.max_seq_len, given.task) == (plain.vocab_size, plain.max_seq_len, plain.task)

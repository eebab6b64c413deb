from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from datasets import Dataset, DatasetDict

from tests.tokenization.conftest import MULTILINGUAL
from utils.tokenization import (
    AdaptiveTokenizerDataModule,
    CharacterLevelTokenizer,
    SimpleDataModule,
    mask_tokens,
)
from utils.tokenization import encoding as encoding_module
from utils.tokenization.encoding import encode_ragged, encode_stream


@pytest.fixture(scope="module")
def char_tok() -> CharacterLevelTokenizer:
    return CharacterLevelTokenizer(vocab_size=1000)


def first_batch(dm: AdaptiveTokenizerDataModule, split: str = "train") -> dict[str, torch.Tensor]:
    dm.setup()
    loader = dm.train_dataloader() if split == "train" else dm.val_dataloader()
    return next(iter(loader))


def test_seq2seq_splits_each_packed_block_into_a_source_and_its_continuation(char_tok) -> None:
    docs = ["first document", "second one", "third"] * 20
    settings = dict(dataset=docs, tokenizer=char_tok, batch_size=4, max_length=16, val_split=0.0)
    causal = AdaptiveTokenizerDataModule(**settings)
    dm = AdaptiveTokenizerDataModule(**settings, task="seq2seq")
    causal.setup()
    dm.setup()
    batch = next(iter(dm._loader(dm.train_dataset, shuffle=False)))
    blocks = next(iter(causal._loader(causal.train_dataset, shuffle=False)))["input_ids"]  # (4, 16)
    assert torch.equal(batch["input_ids"], blocks[:, :8]) and torch.equal(batch["labels"], blocks[:, 8:])
    assert batch["attention_mask"].shape == (4, 8) and bool(batch["attention_mask"].all())
    assert char_tok.decode(batch["input_ids"][0]) + char_tok.decode(batch["labels"][0]) == "first document</s>s"


def test_causal_lm_packs_documents_joined_with_eos_into_full_blocks(char_tok) -> None:
    docs = ["first document", "second one", "third"] * 20
    dm = AdaptiveTokenizerDataModule(dataset=docs, tokenizer=char_tok, batch_size=4, max_length=16, val_split=0.0)
    dm.setup()
    stream = "".join(d + "</s>" for d in docs)
    n_tokens = len(char_tok.encode(stream))
    assert len(dm.train_dataset) == n_tokens // 16 and dm.stats["train_dropped_tokens"] == n_tokens % 16
    block0 = dm.train_dataset[0]["input_ids"]
    assert char_tok.decode(block0) == "first document</s>s"
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape == (4, 16) and batch["input_ids"].dtype == torch.long
    assert torch.equal(batch["labels"], batch["input_ids"])  # unshifted: the model shifts
    assert batch["attention_mask"].all()


def test_chunked_stream_equals_encoding_each_document(bpe_tokenizer, char_tok, corpus, monkeypatch) -> None:
    monkeypatch.setattr(encoding_module, "CHUNK_CHARS", 300)  # force many chunks and cut long documents
    docs = corpus[:60] + ["line one\nline two\n" * 40, "x" * 700]
    for tok in (bpe_tokenizer, char_tok):
        flat, lengths = encode_ragged(tok, docs)
        expected = np.concatenate(
            [np.append(flat[s - n : s], tok.eos_token_id) for s, n in zip(np.cumsum(lengths), lengths, strict=True)]
        )
        got = encode_stream(tok, docs, tok.eos_token_id)
        assert got.dtype == np.int32
        if tok is bpe_tokenizer:  # the word-less "xxx..." document must be cut mid-word
            assert np.array_equal(got[:-20], expected[:-20])
        else:
            assert np.array_equal(got, expected)
        assert tok.decode(got.tolist()) == "".join(d + tok.eos_token for d in docs)


def test_long_texts_are_cut_between_words() -> None:
    assert encoding_module._cut("aaa bbb ccc", 0, 9) == 7
    assert encoding_module._cut("aaa  bbb", 0, 7) == 3  # never between two spaces
    assert encoding_module._cut("aaa\nbbbbbbb", 0, 8) == 4
    assert encoding_module._cut("abcdefghij", 2, 5) == 7


def test_ragged_encoding_matches_the_tokenizer_call(bpe_tokenizer) -> None:
    texts = MULTILINGUAL + ["", "plain"]
    flat, lengths = encode_ragged(bpe_tokenizer, texts)
    expected = bpe_tokenizer(texts, add_special_tokens=False)["input_ids"]
    assert lengths.tolist() == [len(x) for x in expected]
    assert flat.tolist() == [i for x in expected for i in x]


def test_unpacked_causal_lm_pads_and_masks_labels(char_tok) -> None:
    docs = ["a", "bb bb", "ccc ccc ccc"]
    dm = AdaptiveTokenizerDataModule(
        dataset=docs, tokenizer=char_tok, batch_size=3, max_length=8, val_split=0.0, packing=False
    )
    dm.setup()
    batch = dm.collator([dm.train_dataset[i] for i in range(3)])
    assert batch["input_ids"].shape == (3, 8)
    assert batch["attention_mask"].sum(1).tolist() == [2, 6, 8]  # doc + eos, truncated to 8
    assert (batch["labels"][batch["attention_mask"] == 0] == -100).all()
    assert torch.equal(batch["labels"][0, :2], batch["input_ids"][0, :2])
    assert (batch["input_ids"][0, 2:] == char_tok.pad_token_id).all()
    assert dm.stats["train_truncated_rows"] == 1


def test_masked_lm_masks_fifteen_percent_80_10_10_and_never_special_tokens() -> None:
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(10, 1000, (64, 512), generator=gen)
    ids[:, 0] = 2  # a special token in every row
    attention = torch.ones_like(ids)
    attention[:, -12:] = 0
    inputs, labels = mask_tokens(
        ids, attention, torch.tensor([0, 1, 2, 3, 4]), mask_id=4, vocab_size=1000, probability=0.15, generator=gen
    )
    chosen = labels != -100
    assert abs(chosen.float().mean().item() - 0.15 * 500 / 512) < 0.01
    assert not chosen[:, 0].any() and not chosen[:, -12:].any()
    assert torch.equal(labels[chosen], ids[chosen])
    masked = (inputs == 4) & chosen
    kept = (inputs == ids) & chosen
    assert abs(masked.sum().item() / chosen.sum().item() - 0.8) < 0.02
    assert abs(kept.sum().item() / chosen.sum().item() - 0.1 - 0.1 / 1000) < 0.02
    assert torch.equal(inputs[~chosen], ids[~chosen])


def test_masked_lm_masks_at_least_one_token_per_row() -> None:
    ids = torch.full((8, 3), 7)
    _, labels = mask_tokens(
        ids,
        torch.ones_like(ids),
        torch.tensor([0]),
        4,
        10,
        probability=1e-6,
        generator=torch.Generator().manual_seed(1),
    )
    assert ((labels != -100).sum(1) == 1).all()


def test_masked_lm_data_module(char_tok) -> None:
    dm = AdaptiveTokenizerDataModule(
        dataset=["some text to mask " * 40],
        tokenizer=char_tok,
        batch_size=2,
        max_length=64,
        task="masked_lm",
        val_split=0.0,
    )
    torch.manual_seed(0)
    batch = first_batch(dm)
    picked = batch["labels"] != -100
    assert picked.any() and (batch["input_ids"][picked] == char_tok.mask_token_id).any()
    assert (batch["input_ids"][~picked] != char_tok.mask_token_id).all()


def test_classification_records_with_string_labels(char_tok) -> None:
    records = [{"text": "good " * (i % 5 + 1), "label": "pos" if i % 2 else "neg"} for i in range(20)]
    dm = AdaptiveTokenizerDataModule(
        dataset=records, tokenizer=char_tok, batch_size=20, max_length=12, task="classification", val_split=0.0
    )
    dm.setup()
    assert dm.label_names == ["neg", "pos"] and dm.num_classes == 2
    batch = dm.collator([dm.train_dataset[i] for i in range(20)])
    assert batch["labels"].tolist() == [i % 2 for i in range(20)]
    assert batch["input_ids"].shape == (20, 12)
    assert batch["attention_mask"][0].sum() == 5 and (batch["input_ids"][0, 5:] == 0).all()


def test_split_is_deterministic_by_seed(char_tok) -> None:
    docs = [f"document number {i} " * 3 for i in range(50)]

    def val_blocks(seed: int) -> list[list[int]]:
        dm = AdaptiveTokenizerDataModule(dataset=docs, tokenizer=char_tok, max_length=32, val_split=0.2, seed=seed)
        dm.setup()
        return [dm.val_dataset[i]["input_ids"].tolist() for i in range(len(dm.val_dataset))]

    assert val_blocks(1) == val_blocks(1)
    assert val_blocks(1) != val_blocks(2)


def test_tokenised_once_then_read_from_the_cache(char_tok, tmp_path) -> None:
    docs = ["cache me please"] * 30
    first = AdaptiveTokenizerDataModule(dataset=docs, tokenizer=char_tok, max_length=8, cache_dir=tmp_path)
    first.setup()
    second = AdaptiveTokenizerDataModule(dataset=docs, tokenizer=char_tok, max_length=8, cache_dir=tmp_path)
    second.setup()
    assert first.stats["cache"].startswith("written") and second.stats["cache"].startswith("hit")
    assert torch.equal(first.train_dataset[0]["input_ids"], second.train_dataset[0]["input_ids"])
    other = AdaptiveTokenizerDataModule(
        dataset=docs, tokenizer=CharacterLevelTokenizer(vocab_size=900), max_length=8, cache_dir=tmp_path
    )
    other.setup()
    assert other.stats["cache"].startswith("written")


def test_the_cache_follows_the_column_not_just_the_file(char_tok, tmp_path) -> None:
    (tmp_path / "two.csv").write_text("a,b\n" + "alpha alpha alpha,beta beta beta\n" * 10, encoding="utf-8")

    def first_block(column: str) -> str:
        dm = AdaptiveTokenizerDataModule(
            dataset=tmp_path / "two.csv",
            tokenizer=char_tok,
            max_length=8,
            val_split=0.0,
            text_column=column,
            cache_dir=tmp_path / "cache",
        )
        dm.setup()
        return char_tok.decode(dm.train_dataset[0]["input_ids"])

    assert first_block("a") == "alpha al"
    assert first_block("b") == "beta bet"


def test_text_csv_jsonl_and_parquet_files(char_tok, tmp_path) -> None:
    rows = [{"body": f"row {i} says hello", "y": i % 3} for i in range(30)]
    (tmp_path / "data.txt").write_text("\n".join(r["body"] for r in rows), encoding="utf-8")
    (tmp_path / "data.jsonl").write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    (tmp_path / "data.csv").write_text("body,y\n" + "\n".join(f"{r['body']},{r['y']}" for r in rows), encoding="utf-8")
    Dataset.from_list(rows).to_parquet(str(tmp_path / "data.parquet"))
    txt = AdaptiveTokenizerDataModule(dataset=tmp_path / "data.txt", tokenizer=char_tok, max_length=16)
    txt.setup()
    assert char_tok.decode(txt.train_dataset.dataset[0]["input_ids"]) == "row 0 says hello"
    for name in ("data.jsonl", "data.csv", "data.parquet"):
        dm = AdaptiveTokenizerDataModule(
            dataset=str(tmp_path / name),
            tokenizer=char_tok,
            max_length=16,
            task="classification",
            text_column="body",
            label_column="y",
            val_split=0.0,
        )
        dm.setup()
        assert len(dm.train_dataset) == 30 and dm.num_classes == 3, name
        assert char_tok.decode(dm.train_dataset[7]["input_ids"]) == "row 7 says hello"
        assert dm.train_dataset[7]["label"] == 1


def test_dataset_dict_uses_its_validation_split(char_tok) -> None:
    dd = DatasetDict(
        {
            "train": Dataset.from_dict({"text": ["train text " * 10] * 4}),
            "validation": Dataset.from_dict({"text": ["held out " * 10] * 2}),
        }
    )
    dm = AdaptiveTokenizerDataModule(dataset=dd, tokenizer=char_tok, max_length=20, val_split=0.5)
    batch = first_batch(dm, "val")
    assert char_tok.decode(batch["input_ids"][0]).startswith("held out")
    assert dm.stats["train_examples"] == len(char_tok.encode("train text " * 10 + "</s>")) * 4 // 20


def test_real_lightning_trainer_consumes_the_batches(char_tok) -> None:
    import pytorch_lightning as pl

    class TinyLM(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.emb = torch.nn.Embedding(len(char_tok), 8)
            self.out = torch.nn.Linear(8, len(char_tok))

        def _loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
            logits = self.out(self.emb(batch["input_ids"]))  # (B, T, V)
            return torch.nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, logits.size(-1)), batch["labels"][:, 1:].reshape(-1)
            )

        def training_step(self, batch, _):
            return self._loss(batch)

        def validation_step(self, batch, _):
            self.log("val_loss", self._loss(batch))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    dm = AdaptiveTokenizerDataModule(
        dataset=["to be or not to be " * 30], tokenizer=char_tok, batch_size=4, max_length=16, num_workers=1
    )
    trainer = pl.Trainer(
        max_epochs=1,
        limit_train_batches=3,
        limit_val_batches=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    trainer.fit(TinyLM(), datamodule=dm)
    assert trainer.global_step == 3 and torch.isfinite(trainer.callback_metrics["val_loss"])


def test_bad_input_gets_clear_errors(char_tok, tmp_path) -> None:
    def setup(dataset, **kwargs) -> None:
        AdaptiveTokenizerDataModule(dataset=dataset, tokenizer=char_tok, **kwargs).setup()

    with pytest.raises(ValueError, match=r"no text \(2 documents, all empty\)"):
        setup(["", ""])
    with pytest.raises(ValueError, match="shorter than one block: 6 tokens, max_length=512"):
        setup(["short"])
    (tmp_path / "latin1.txt").write_bytes("line one\ncaf\xe9\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1.txt: not UTF-8 \(byte 12, line 2"):
        setup(tmp_path / "latin1.txt")
    with pytest.raises(KeyError, match=r"no column 'text'; columns are \['body'\]"):
        setup(Dataset.from_dict({"body": ["x"]}))
    with pytest.raises(ValueError, match="classification needs labels"):
        setup(["some text"], task="classification")
    with pytest.raises(FileNotFoundError, match="missing.csv does not exist"):
        setup(tmp_path / "missing.csv")
    with pytest.raises(TypeError, match=r"item 1 is int"):
        setup(["ok", 3])
    with pytest.raises(ValueError, match="cannot be split into training and validation"):
        setup(["abcdefgh"], max_length=8, val_split=0.5)
    with pytest.raises(ValueError, match="could not be loaded from the Hugging Face Hub .offline mode"):
        setup("someone/some-dataset")
    no_mask = CharacterLevelTokenizer(vocab_size=300, mask_token=None)
    with pytest.raises(ValueError, match="masked_lm needs a mask token"):
        AdaptiveTokenizerDataModule(dataset=["x"], tokenizer=no_mask, task="masked_lm")
    with pytest.raises(ValueError, match="task='translation' is not one of"):
        AdaptiveTokenizerDataModule(dataset=["x"], tokenizer=char_tok, task="translation")
    with pytest.raises(ValueError, match="task='seq2seq' splits packed blocks .* use packing=True"):
        AdaptiveTokenizerDataModule(dataset=["x"], tokenizer=char_tok, task="seq2seq", packing=False)
    with pytest.raises(ValueError, match="task='seq2seq' needs max_length >= 2"):
        AdaptiveTokenizerDataModule(dataset=["x"], tokenizer=char_tok, task="seq2seq", max_length=1)
    with pytest.raises(ValueError, match="max_length must be an integer >= 1, got 0"):
        AdaptiveTokenizerDataModule(dataset=["x"], tokenizer=char_tok, max_length=0)


def test_hub_dataset_with_the_hub_unreachable_is_a_clear_error(char_tok, unreachable_hub) -> None:
    dm = AdaptiveTokenizerDataModule(dataset="someone/some-dataset", tokenizer=char_tok)
    with pytest.raises(ConnectionError, match=f"cannot be reached .{unreachable_hub}"):
        dm.setup()


def test_simple_data_module_from_token_tensors() -> None:
    ids = torch.arange(40).reshape(10, 4)
    mask = torch.ones_like(ids)
    mask[:, -1] = 0
    dm = SimpleDataModule(ids, attention_mask=mask, batch_size=10, val_split=0.2)
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape == (8, 4) and batch["input_ids"].dtype == torch.long
    assert (batch["labels"][:, -1] == -100).all() and torch.equal(batch["labels"][:, :3], batch["input_ids"][:, :3])
    assert len(next(iter(dm.val_dataloader()))["input_ids"]) == 2
    classes = SimpleDataModule(ids, labels=torch.arange(10) % 2, val_split=0.0, batch_size=10)
    assert next(iter(classes.train_dataloader()))["labels"].shape == (10,)
    assert classes.val_dataloader() == []
    with pytest.raises(ValueError, match="must be a 2-D integer tensor"):
        SimpleDataModule(torch.zeros(4, 3))
    with pytest.raises(ValueError, match=r"attention_mask \(10, 3\) must match input_ids \(10, 4\)"):
        SimpleDataModule(ids, attention_mask=torch.ones(10, 3))

"""Goal: FastBPETrainer trains within 5% of the raw `tokenizers` library on the same corpus
and settings; sentencepiece's BPE trainer is timed beside them for reference.

Corpus: the file given as argument (default ../shared/data/tinyshakespeare.txt beside the
repository), else Python's own pydoc_data.topics text; `--copies` repeats it to reach a
few MB. All three train on the same lines in one process, interleaved, median of repeats.
FastBPETrainer runs without its cache, so training is timed, not a cache hit.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import time
from pathlib import Path

import sentencepiece as spm
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks._bench import DEFAULT_CORPUS, load_text, paired_medians
from utils.tokenization import FastBPETrainer

GOAL = 1.05
SPECIALS = ["<pad>", "<unk>", "<s>", "</s>", "<mask>"]


def load_corpus(path: Path, copies: int) -> tuple[list[str], str]:
    text, name = load_text(path)
    lines = [line for line in text.splitlines() if line.strip()]
    return lines * copies, name


def raw_tokenizers(lines: list[str], vocab_size: int) -> int:
    """The same byte-level BPE, straight from the library."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(lines, trainer, length=len(lines))
    return tok.get_vocab_size()


def ours(lines: list[str], vocab_size: int) -> int:
    return len(FastBPETrainer(cache=False, show_progress=False).train_on_dataset(texts=lines, vocab_size=vocab_size))


def sentencepiece_bpe(lines: list[str], vocab_size: int) -> float:
    model = io.BytesIO()
    start = time.perf_counter()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=model,
        model_type="bpe",
        vocab_size=vocab_size,
        byte_fallback=True,
        num_threads=os.cpu_count() or 1,
        minloglevel=2,
        input_sentence_size=0,
        max_sentence_length=1 << 16,
    )
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", nargs="?", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument("--copies", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    lines, name = load_corpus(args.corpus, args.copies)
    mb = sum(len(line.encode()) + 1 for line in lines) / 1e6
    print(f"corpus: {name} x{args.copies} = {mb:.1f} MB, {len(lines)} lines; vocab_size={args.vocab_size}")

    sizes = {ours(lines, args.vocab_size), raw_tokenizers(lines, args.vocab_size)}
    assert len(sizes) == 1, f"different vocabulary sizes: {sizes}"
    t_raw, t_ours = paired_medians(
        lambda: raw_tokenizers(lines, args.vocab_size),
        lambda: ours(lines, args.vocab_size),
        repeats=args.repeats,
        warmup=1,
    )
    t_spm = statistics.median(sentencepiece_bpe(lines, args.vocab_size) for _ in range(args.repeats))
    ratio = t_ours / t_raw
    print(f"{'trainer':<28} {'seconds':>8} {'MB/s':>7}")
    for label, t in [("tokenizers (raw library)", t_raw), ("FastBPETrainer", t_ours), ("sentencepiece BPE", t_spm)]:
        print(f"{label:<28} {t:8.3f} {mb / t:7.2f}")
    print(f"FastBPETrainer / raw tokenizers = {ratio:.3f} (goal <= {GOAL})")
    print(f"sentencepiece / FastBPETrainer  = {t_spm / t_ours:.2f}")
    return 0 if ratio <= GOAL else 1


if __name__ == "__main__":
    sys.exit(main())

"""Goal: AdaptiveTokenizerDataModule tokenises a corpus at least 3x faster than the naive
`datasets.map(lambda b: tokenizer(b["text"]), batched=True)`.

Both start from the same documents (the lines of the corpus) and the same tokenizer, in one
process, interleaved, median of repeats; the data module runs with its cache off, so the
full path is timed: encoding, EOS joining, packing into blocks and the seeded split. Timed
for the byte-level BPE tokenizer (Rust) and the character tokenizer (numpy). Corpus: the
file given as argument (default ../shared/data/tinyshakespeare.txt beside the repository),
else pydoc_data.topics.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import datasets

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks._bench import DEFAULT_CORPUS, load_text, paired_medians
from utils.tokenization import (
    AdaptiveTokenizerDataModule,
    CharacterLevelTokenizer,
    FastBPETrainer,
)

GOAL = 3.0


def load_lines(path: Path) -> tuple[list[str], str]:
    text, name = load_text(path)
    return text.splitlines(), name


def naive(dataset: datasets.Dataset, tokenizer) -> int:
    mapped = dataset.map(
        lambda b: tokenizer(b["text"]), batched=True, remove_columns=["text"], load_from_cache_file=False
    )
    return len(mapped)


def ours(lines: list[str], tokenizer, max_length: int) -> int:
    dm = AdaptiveTokenizerDataModule(dataset=lines, tokenizer=tokenizer, max_length=max_length, cache=False)
    dm.setup()
    return dm.stats["train_tokens"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", nargs="?", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    datasets.disable_progress_bars()
    logging.disable(logging.INFO)
    lines, name = load_lines(args.corpus)
    mb = sum(len(line.encode()) + 1 for line in lines) / 1e6
    dataset = datasets.Dataset.from_dict({"text": lines})
    tokenizers = {
        "byte-level BPE (8000)": FastBPETrainer(show_progress=False).train_on_dataset(texts=lines, vocab_size=8000),
        "character (1000)": CharacterLevelTokenizer(vocab_size=1000, texts=lines),
    }
    print(f"corpus: {name}, {mb:.2f} MB, {len(lines)} documents; max_length={args.max_length}")
    print(f"{'tokenizer':<24} {'naive map s':>12} {'data module s':>14} {'speedup':>8}")
    worst = float("inf")
    for label, tok in tokenizers.items():
        t_naive, t_ours = paired_medians(
            lambda tok=tok: naive(dataset, tok),
            lambda tok=tok: ours(lines, tok, args.max_length),
            repeats=args.repeats,
            warmup=1,
        )
        speedup = t_naive / t_ours
        worst = min(worst, speedup)
        print(f"{label:<24} {t_naive:12.3f} {t_ours:14.3f} {speedup:7.1f}x")
    print(f"worst speedup = {worst:.1f}x (goal >= {GOAL}x)")
    return 0 if worst >= GOAL else 1


if __name__ == "__main__":
    sys.exit(main())

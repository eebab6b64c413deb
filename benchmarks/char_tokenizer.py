"""Goal: CharacterLevelTokenizer encodes at least 10x faster than a Python dict loop.

And through the Hugging Face call on a batch of 4 KB chunks: `tok(batch, return_tensors="pt",
padding=True)` at least 10x the dict loop over the same chunks, plain `tok(batch)` at least 3x.

Also timed beside them: the byte-level BPE tokenizer's `encode_batch` (Rust, all cores) on
the same text, and decoding. Corpus: the file given as argument (default
../shared/data/tinyshakespeare.txt beside the repository), else pydoc_data.topics. Each pair
runs interleaved in one process on the same inputs, best of `--repeats` runs (other load on a
shared machine only adds time); throughput in MB of UTF-8 text per second. The three ratios
and the load average are printed together at the end.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks._bench import DEFAULT_CORPUS, load_text, paired_best
from utils.tokenization import CharacterLevelTokenizer, FastBPETrainer

GOAL = 10.0
BATCH_GOALS = {"tok(batch, return_tensors='pt', padding=True)": 10.0, "tok(batch)": 3.0}
CHUNK = 4096


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", nargs="?", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--vocab-size", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    text, name = load_text(args.corpus)
    lines = text.splitlines(keepends=True)
    mb = len(text.encode()) / 1e6
    # A corpus that writes a special token (wikitext's "<unk>") means those characters, as
    # in the dict loop: the tokenizer is told to split them.
    literal = any(t in text for t in CharacterLevelTokenizer(vocab_size=args.vocab_size).all_special_tokens)
    tok = CharacterLevelTokenizer(vocab_size=args.vocab_size, texts=[text], split_special_tokens=literal)
    vocab, unk = tok.get_vocab(), tok.unk_token_id
    bpe = FastBPETrainer(show_progress=False).train_on_dataset(texts=lines, vocab_size=8000)
    print(f"corpus: {name}, {mb:.2f} MB; character vocab {len(tok)}, BPE vocab {len(bpe)}")
    if literal:
        print("the corpus writes special tokens: they are split into characters, as the dict loop does")

    def dict_loop() -> list[int]:
        return [vocab.get(ch, unk) for ch in text]

    def ours() -> list:
        return tok.encode_to_arrays([text])

    def ours_hf_api() -> list[int]:
        return tok.encode(text)

    def bpe_batch() -> list:
        return bpe.backend_tokenizer.encode_batch(lines, add_special_tokens=False)

    assert ours()[0].tolist() == dict_loop() == ours_hf_api(), "encoders disagree"
    ids = ours()[0]
    t_loop, t_ours = paired_best(dict_loop, ours, repeats=args.repeats, warmup=1)
    t_api, t_bpe = paired_best(ours_hf_api, bpe_batch, repeats=args.repeats, warmup=1)
    t_decode, _ = paired_best(lambda: tok.decode(ids), lambda: None, repeats=args.repeats, warmup=1)
    print(f"{'encoder':<40} {'seconds':>8} {'MB/s':>8}")
    for label, t in [
        ("python dict loop", t_loop),
        ("CharacterLevelTokenizer.encode_to_arrays", t_ours),
        ("CharacterLevelTokenizer.encode (HF API)", t_api),
        ("BPE encode_batch (tokenizers, Rust)", t_bpe),
        ("CharacterLevelTokenizer.decode", t_decode),
    ]:
        print(f"{label:<40} {t:8.4f} {mb / t:8.1f}")
    print(f"encode (HF API) vs dict loop  = {t_loop / t_api:.1f}x")
    print(f"encode_to_arrays vs BPE encode_batch = {t_bpe / t_ours:.1f}x")
    ratios = {"encode_to_arrays": (t_loop / t_ours, GOAL), **_batch_calls(tok, text, vocab, unk, mb, args.repeats)}
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\nvs the python dict loop (best of {args.repeats}; load average {load}):")
    for label, (ratio, goal) in ratios.items():
        verdict = "met" if ratio >= goal else "MISSED"
        print(f"  {label:<48} {ratio:6.1f}x  goal >= {goal:g}x  {verdict}")
    return 0 if all(ratio >= goal for ratio, goal in ratios.values()) else 1


def _batch_calls(
    tok: CharacterLevelTokenizer, text: str, vocab: dict, unk: int, mb: float, repeats: int
) -> dict[str, tuple[float, float]]:
    """The Hugging Face call on 4 KB chunks, against the dict loop over the same chunks:
    each call's (ratio, goal)."""
    chunks = [text[i : i + CHUNK] for i in range(0, len(text), CHUNK)]

    def dict_loop() -> list[list[int]]:
        return [[vocab.get(ch, unk) for ch in chunk] for chunk in chunks]

    calls = {
        "tok(batch, return_tensors='pt', padding=True)": lambda: tok(chunks, return_tensors="pt", padding=True),
        "tok(batch)": lambda: tok(chunks),
    }
    assert tok(chunks)["input_ids"] == dict_loop(), "batch call disagrees with the dict loop"
    padded = tok(chunks, return_tensors="pt", padding=True)
    assert padded["input_ids"][padded["attention_mask"].bool()].tolist() == sum(dict_loop(), [])
    ratios = {}
    print(f"batch of {len(chunks)} chunks of {CHUNK} characters")
    for label, call in calls.items():
        t_loop, t_call = paired_best(dict_loop, call, repeats=repeats, warmup=1)
        ratios[label] = (t_loop / t_call, BATCH_GOALS[label])
        print(f"{label:<48} {mb / t_call:8.1f} MB/s vs dict loop {mb / t_loop:6.1f} MB/s")
    return ratios


if __name__ == "__main__":
    sys.exit(main())

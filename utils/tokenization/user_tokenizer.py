"""The user-tokenizer strategy: the user's own tokenizer, from whatever file they have.

Accepted: a tokenizer object, a `tokenizer.json`, a Hugging Face tokenizer folder (including
folders saved by this package), a sentencepiece `.model`, a BERT-style `vocab.txt`, or a
`vocab.json` (byte-level BPE when a `merges.txt` sits beside it, else a word or character
vocabulary). Nothing here runs code from the folder (`trust_remote_code` is never set).

Files without a tokenizer config do not say which token is padding or end of text; the
special tokens are then recognised by their usual spellings (`SPECIAL_TOKEN_SPELLINGS`),
and only spellings present in the vocabulary are used.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast
from transformers.tokenization_utils_sentencepiece import SentencePieceBackend

from utils.tokenization.character_tokenizer import CharacterLevelTokenizer

SPECIAL_TOKEN_SPELLINGS = {
    "pad_token": ("<pad>", "[PAD]", "<|pad|>", "<|padding|>"),
    "unk_token": ("<unk>", "[UNK]", "<|unk|>", "<|unknown|>"),
    "bos_token": ("<s>", "<bos>", "<|begin_of_text|>", "<|startoftext|>", "[CLS]"),
    "eos_token": ("</s>", "<eos>", "<|endoftext|>", "<|end_of_text|>", "[SEP]"),
    "mask_token": ("<mask>", "[MASK]", "<|mask|>"),
}
FORMATS_HELP = (
    "give a tokenizer.json, a Hugging Face tokenizer folder, a sentencepiece .model, or a vocab.txt / vocab.json file"
)


class SentencePieceTokenizer(SentencePieceBackend):
    """A sentencepiece `.model` as a Hugging Face tokenizer whose decoding goes through
    sentencepiece itself, so byte-fallback pieces become text again (the generic backend
    leaves them as `<0x..>`)."""

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        return self.sp_model.decode_pieces(tokens)


OWN_CLASSES = {cls.__name__: cls for cls in (CharacterLevelTokenizer, SentencePieceTokenizer)}


def load_user_tokenizer(source: Any) -> PreTrainedTokenizerBase:
    """Load the user's tokenizer from an object or a path; a clear error for anything else."""
    if isinstance(source, PreTrainedTokenizerBase):
        return source
    if isinstance(source, Tokenizer):
        return _wrap(source)
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"tokenizer must be a tokenizer object or a path, got {type(source).__name__}")
    path = Path(source).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"tokenizer path {path} does not exist; {FORMATS_HELP}")
    return _load_folder(path) if path.is_dir() else _load_file(path)


def _load_folder(folder: Path) -> PreTrainedTokenizerBase:
    config_path = folder / "tokenizer_config.json"
    if config_path.is_file():
        config = _read_json(config_path)
        own = OWN_CLASSES.get(str(config.get("tokenizer_class")))
        if own is not None:
            return own.from_pretrained(str(folder))
        if "auto_map" in config:
            raise ValueError(
                f"{config_path} asks for custom tokenizer code (auto_map), which is never run; "
                "save the tokenizer as tokenizer.json (tokenizer.backend_tokenizer.save(...)) instead"
            )
    if config_path.is_file() or (folder / "tokenizer.json").is_file():
        try:
            return AutoTokenizer.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)
        except Exception as exc:  # tokenizers raises a bare Exception for a bad schema
            if (folder / "tokenizer.json").is_file():
                _tokenizer_json(folder / "tokenizer.json")  # names the file when it is the cause
            raise ValueError(f"{folder}: the Hugging Face tokenizer does not load: {exc}") from exc
    for name in ("tokenizer.model", "spiece.model", "sentencepiece.model", "vocab.json", "vocab.txt"):
        if (folder / name).is_file():
            return _load_file(folder / name)
    found = sorted(p.name for p in folder.iterdir())[:20]
    raise ValueError(f"{folder} holds no tokenizer files (found {found}); {FORMATS_HELP}")


def _load_file(path: Path) -> PreTrainedTokenizerBase:
    suffix = path.suffix.lower()
    if suffix == ".model":
        return _load_sentencepiece(path)
    if suffix == ".txt":
        return _load_wordpiece_vocab(path)
    if suffix == ".json":
        data = _read_json(path)
        if isinstance(data, dict) and "model" in data:
            return _wrap(_tokenizer_json(path))
        if isinstance(data, dict) and data and all(isinstance(v, int) for v in data.values()):
            return _load_vocab_json(path, data)
        raise ValueError(
            f"{path}: neither a tokenizer.json (no 'model' entry) nor a vocab.json (a token -> id mapping)"
        )
    raise ValueError(f"{path}: unknown tokenizer file type {suffix!r}; {FORMATS_HELP}")


def _tokenizer_json(path: Path) -> Tokenizer:
    """`Tokenizer.from_file`, whose schema errors ("invalid type: string, expected a map")
    name neither the file nor what to do."""
    try:
        return Tokenizer.from_file(str(path))
    except Exception as exc:  # a bare Exception from the Rust side
        raise ValueError(
            f"{path}: not a valid tokenizer.json ({exc}); write it with the tokenizers library "
            "(tokenizer.save(path) or tokenizer.backend_tokenizer.save(path))"
        ) from exc


def _load_sentencepiece(path: Path) -> PreTrainedTokenizerBase:
    import sentencepiece as spm

    try:
        sp = spm.SentencePieceProcessor(model_file=str(path))
    except (OSError, RuntimeError) as exc:
        raise ValueError(f"{path}: not a sentencepiece model ({exc})") from exc
    roles = {"unk_token": sp.unk_id(), "bos_token": sp.bos_id(), "eos_token": sp.eos_id(), "pad_token": sp.pad_id()}
    specials = {role: sp.id_to_piece(i) for role, i in roles.items() if i >= 0}
    return SentencePieceTokenizer(vocab_file=str(path), **specials)


def _load_wordpiece_vocab(path: Path) -> PreTrainedTokenizerFast:
    """A BERT-style vocab.txt: WordPiece, lower-cased when the vocabulary has no capitals."""
    tokens = _read_text(path).splitlines()
    vocab = {t: i for i, t in enumerate(tokens) if t}
    if not vocab:
        raise ValueError(f"{path}: the vocabulary file is empty")
    specials = _recognise_specials(vocab)
    unk = _unknown_token(path, specials)
    lowercase = not any(t.upper() != t.lower() and t != t.lower() for t in vocab if t not in specials.values())
    backend = Tokenizer(models.WordPiece(vocab, unk_token=unk))
    backend.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece()
    return _wrap(backend, specials)


def _load_vocab_json(path: Path, vocab: dict[str, int]) -> PreTrainedTokenizerFast:
    """vocab.json + merges.txt: byte-level BPE (GPT-2 layout). vocab.json alone: one token
    per character when every ordinary token is one character, else one per word."""
    merges = path.with_name("merges.txt")
    specials = _recognise_specials(vocab)
    if merges.is_file():
        backend = Tokenizer(models.BPE.from_file(str(path), str(merges)))
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        backend.decoder = decoders.ByteLevel()
        return _wrap(backend, specials)
    backend = Tokenizer(models.WordLevel(vocab, unk_token=_unknown_token(path, specials)))
    ordinary = [t for t in vocab if t not in specials.values()]
    if all(len(t) == 1 for t in ordinary):
        backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
        backend.decoder = decoders.Fuse()
    else:
        backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return _wrap(backend, specials)


def _wrap(backend: Tokenizer, specials: dict[str, str] | None = None) -> PreTrainedTokenizerFast:
    """A `PreTrainedTokenizerFast` around a Rust tokenizer, special tokens recognised by name."""
    if specials is None:
        specials = _recognise_specials(backend.get_vocab(with_added_tokens=True))
    return PreTrainedTokenizerFast(tokenizer_object=backend, clean_up_tokenization_spaces=False, **specials)


def _unknown_token(path: Path, specials: dict[str, str]) -> str:
    """A word or WordPiece vocabulary meets words it does not hold; without an unknown token
    the Rust tokenizer fails on the first one, deep inside encoding."""
    unk = specials.get("unk_token")
    if unk is None:
        raise ValueError(
            f"{path}: this vocabulary has no unknown token, so text with a word or character "
            f"outside it cannot be encoded; add one of {SPECIAL_TOKEN_SPELLINGS['unk_token']} to it"
        )
    return unk


def _recognise_specials(vocab: dict[str, int]) -> dict[str, str]:
    found = {}
    for role, spellings in SPECIAL_TOKEN_SPELLINGS.items():
        present = [s for s in spellings if s in vocab]
        if present:
            found[role] = present[0]
    return found


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from exc


def _read_json(path: Path) -> Any:
    try:
        return json.loads(_read_text(path))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from exc

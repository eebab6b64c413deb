"""The vocabulary sizes the toolkit's tokenizers can serve, in one place (the CLI, the
adaptive tokenizer and the character tokenizer all read these; no heavy imports here).

- below `MIN_VOCAB_SIZE` no tokenizer fits: the five special tokens need a row each, and
  at least one character must be left;
- below `USEFUL_VOCAB_SIZE` a character tokenizer holds only part of printable ASCII, so
  most text loses characters to `<unk>`;
- from `LOSSLESS_VOCAB_SIZE` on (plus one row for each character of the text outside
  printable ASCII), the character tokenizer has the 256 UTF-8 byte tokens and printable
  ASCII: any text round-trips;
- byte-level BPE needs `MIN_BPE_VOCAB_SIZE` rows (merges beyond the 256 bytes);
- a tokenizer that leaves more than `WASTEFUL_UNUSED_FRACTION` of the model's embedding rows
  unused wastes their parameters: the report says so.
"""

SPECIAL_TOKENS = 5  # <pad> <unk> <s> </s> <mask>
MIN_VOCAB_SIZE = SPECIAL_TOKENS + 1
USEFUL_VOCAB_SIZE = 100
PRINTABLE_ASCII_CHARS = "\t\n\r" + "".join(chr(c) for c in range(0x20, 0x7F))
PRINTABLE_ASCII = len(PRINTABLE_ASCII_CHARS)  # 98
LOSSLESS_VOCAB_SIZE = SPECIAL_TOKENS + 256 + PRINTABLE_ASCII
MIN_BPE_VOCAB_SIZE = 512
WASTEFUL_UNUSED_FRACTION = 0.5
LIMITS_HELP = (
    f"at least {MIN_VOCAB_SIZE}; below {USEFUL_VOCAB_SIZE} most text loses characters, "
    f"from {LOSSLESS_VOCAB_SIZE} (+1 per non-ASCII character of the text) every text "
    f"round-trips; BPE from {MIN_BPE_VOCAB_SIZE}"
)

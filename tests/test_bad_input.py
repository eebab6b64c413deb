"""Bad input from a new user's journey: each case gets one clear line naming the file, line,
flag or value, exit status 2, and no traceback unless -v."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from utils.cli import main

TINY_LM = """
import torch
from torch import nn


class TinyLM(nn.Module):
    def __init__(self, vocab_size=50, max_seq_len=16, d=8):
        super().__init__()
        self.max_seq_len = max_seq_len
        self.emb = nn.Embedding(vocab_size, d)
        self.pos = nn.Embedding(max_seq_len, d)
        self.head = nn.Linear(d, vocab_size)

    def forward(self, input_ids):
        T = input_ids.shape[1]
        if T > self.max_seq_len:
            raise ValueError(f"{T} tokens; at most {self.max_seq_len}")
        return self.head(self.emb(input_ids) + self.pos(torch.arange(T)))
"""


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def export(folder: Path, source: str, config: dict | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.py").write_text(textwrap.dedent(source))
    (folder / "config.json").write_text(json.dumps(config or {"vocab_size": 50, "max_seq_len": 16}))
    return folder


def one_error(err: str) -> str:
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


# -- verdicts -----------------------------------------------------------------------------


def test_a_forward_that_raises_shows_its_text_and_the_line_of_model_py(capsys, tmp_path):
    source = TINY_LM.replace("        T = input_ids.shape[1]\n",
                             "        T = input_ids.shape[1]\n"
                             "        raise RuntimeError('boom: the head was never built')\n")
    line = source.splitlines().index("        raise RuntimeError('boom: the head was never built')") + 1
    code, out, _ = run(capsys, "check", str(export(tmp_path / "x", source)), "-q",
                       "--checks", "forward_signature")
    assert code == 1
    flat = " ".join(out.split())
    assert "its forward raised RuntimeError: boom: the head was never built" in flat
    assert f"model.py:{line} in forward" in flat
    assert "input_ids (or idx" not in flat  # no advice to rename the input

"""Embedded examples (the default workload) and an offline default corpus.

    gpt-mini        a correct small causal decoder, simple forward(input_ids, attention_mask)
    builder-export  the designer's style: a forward that takes intermediate outputs and
                    cannot run as written, with a graph config (nodes, edges, causal)
    bert-mini       a small masked-language-model encoder built from a config dataclass

Each is a folder with model.py and config.json, loadable as `example:<name>`.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

_FOLDERS = {"gpt-mini": "gpt_mini", "builder-export": "builder_export", "bert-mini": "bert_mini"}
DEFAULT_EXAMPLE = "gpt-mini"
_HERE = Path(__file__).resolve().parent
_UNDERLINE = re.compile(r"^\s*([*=^~-])\1{2,}\s*$")


def list_examples() -> list[str]:
    """The names `example:<name>` accepts, default first."""
    return list(_FOLDERS)


def example_path(name: str) -> Path:
    """The folder of example `name` (holding model.py and config.json)."""
    if name not in _FOLDERS:
        raise ValueError(f"unknown example {name!r}; examples: {', '.join(_FOLDERS)}")
    return _HERE / _FOLDERS[name]


@functools.lru_cache(maxsize=1)
def default_corpus() -> str:
    """English prose and code (Python's own reference topics, about 450 KB) that ships
    with every Python, so demos and smoke tests train on real text with no download."""
    from pydoc_data.topics import topics

    return "\n\n".join(_clean(topics[name]) for name in sorted(topics))


def _clean(text: str) -> str:
    """Drop reStructuredText heading underlines and trailing blanks; keep paragraphs."""
    lines = [
        line.rstrip() for line in text.expandtabs(4).splitlines() if not _UNDERLINE.match(line)
    ]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()

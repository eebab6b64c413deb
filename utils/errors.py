"""Every error a user of the toolkit can see, under one base.

A `ToolkitError`'s message is the whole story: what is wrong, where (file, line, parameter or
value) and what to do. The command line prints it as `error: <message>`, with no exception
type and no traceback; anything else that escapes is a bug in the toolkit and is shown with
its type. Classes that callers have long caught as `ValueError` keep that base too.
"""

from __future__ import annotations

from typing import Any


class ToolkitError(Exception):
    """Base of every user-facing error; `str(error)` is the message to show."""


class CommandError(ToolkitError):
    """Bad command-line input or a command this version cannot run."""


class LoadError(ToolkitError):
    """A model source that cannot be loaded; the message says where and what to do."""


class GistError(LoadError):
    """A gist that cannot be fetched; the message says why and what to do."""


class AdaptError(ToolkitError, ValueError):
    """The model could not be adapted; the message lists what was tried and found."""


class GraphError(ToolkitError, ValueError):
    """The graph cannot be built or run; the message names the node or parameter."""


class TokenizerValidationError(ToolkitError, ValueError):
    """Raised by `TokenizerValidator.validate(..., strict=True)`, listing every failed check."""

    def __init__(self, report: Any) -> None:
        self.report = report
        lines = [f"- {r.id}: {r.summary} What to do: {r.advice}" for r in report.failed]
        super().__init__("the tokenizer does not fit the model:\n" + "\n".join(lines))


class OptionError(ToolkitError, ValueError):
    """An option that cannot work (run_tier1's `max_seq_len=1000` on a 256-position model):
    names the option, its value and why, so the command line can say it with its flags."""

    def __init__(self, option: str, value: Any, why: str, caller: str = "run_tier1") -> None:
        self.option, self.value, self.why = option, value, why
        super().__init__(f"{caller}({option}={value!r}): {why}")


class WriteError(ToolkitError, OSError):
    """A file or folder that cannot be written: the message names the path, why and what to
    do."""

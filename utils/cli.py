"""`tbuilder` (also `python -m utils`): the toolkit's engine from a shell.

Exit status: 0 when done, 1 when a check failed, 2 for bad input or a tier this version
does not have, 130 when interrupted (Ctrl-C). Errors are one line on stderr; `-v` adds the
traceback. Each command imports what it needs when it runs, so a bad argument is answered
before torch, transformers or Lightning load.
"""

from __future__ import annotations

import argparse
import logging
import math
import re
import sys
from collections.abc import Callable
from typing import Any

from utils import commands
from utils._io import writable_folder, writable_target
from utils.commands import CLI_TRAIN, EXIT_ERROR, EXIT_INTERRUPTED
from utils.errors import OptionError, ToolkitError
from utils.examples import DEFAULT_EXAMPLE, list_examples
from utils.tokenization.limits import LIMITS_HELP, MIN_VOCAB_SIZE
from utils.vocabulary import TASKS

log = logging.getLogger("utils.cli")

DEFAULT_SOURCE = f"example:{DEFAULT_EXAMPLE}"

_DESCRIPTION = """\
Check, understand and train a transformer you designed.

SOURCE is a model: an export folder (model.py + config.json), a .py file,
example:<name>, gist:<id>[@<revision>] or a gist URL, or module.path:ClassName.
Without SOURCE, commands use the embedded example {default}."""

_EPILOG = """\
examples:
  tbuilder info                          describe the embedded default model
  tbuilder info path/to/export           what was loaded from your export
  tbuilder check path/to/export --out r  Tier 1, report written to r/
  tbuilder tokenizer --vocab-size 8000 --data corpus.txt --out tok

embedded examples: {examples}
exit status: 0 done, 1 a check failed, 2 bad input or tier not available, 130 interrupted

Loading a model runs its code (model.py, or a gist's files); --no-gist refuses gists."""


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors as the toolkit's one line (no usage block above it)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_ERROR, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def _whole(lowest: int) -> Callable[[str], int]:
    """An argparse type: a whole number >= `lowest`, refused with the flag's name."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < lowest:
            raise argparse.ArgumentTypeError(f"{value} is too small: give {lowest} or more")
        return value

    return parse


def _device_name(text: str) -> str:
    """An argparse type: cpu, cuda or cuda:N (whether that device exists is checked later)."""
    if not re.fullmatch(r"cpu|cuda(:\d+)?", text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a device: give cpu, cuda or cuda:N")
    return text


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text} is not a positive number of seconds")
    return value


# -- the parser ---------------------------------------------------------------------------


def _add_global_options(parser: argparse.ArgumentParser, suppress: bool) -> None:
    """Options every command takes, accepted before or after the command name. The copy on
    each subcommand defaults to SUPPRESS so it never overwrites a value given earlier."""

    def default(value: Any) -> Any:
        return argparse.SUPPRESS if suppress else value

    group = parser.add_argument_group("global options")
    group.add_argument(
        "--class",
        dest="class_name",
        metavar="NAME",
        default=default(None),
        help="the model class (or factory) to use when the file defines several",
    )
    group.add_argument(
        "--config",
        metavar="FILE",
        default=default(None),
        help="a config.json to use instead of the export's own",
    )
    group.add_argument(
        "--json",
        metavar="FILE",
        default=default(None),
        help="also write the result as JSON to FILE",
    )
    group.add_argument(
        "--out",
        metavar="DIR",
        default=default(None),
        help="write the result (JSON, Markdown, figures) into DIR",
    )
    group.add_argument(
        "--no-gist",
        action="store_true",
        default=default(False),
        help="refuse gist sources (loading a model runs its code; this keeps code from the internet out)",
    )
    group.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=default(False),
        help="say more, and show tracebacks on errors",
    )
    group.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=default(False),
        help="only warnings and errors on stderr",
    )


def _add_tier_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model options (override what is inferred)")
    group.add_argument("--task", choices=TASKS, help="what the model does")
    group.add_argument(
        "--vocab-size",
        type=_whole(2),
        metavar="N",
        help="vocabulary size (2 or more; at most the model's embedding rows)",
    )
    group.add_argument(
        "--max-seq-len", type=_whole(1), metavar="N", help="longest input (at most the model's position table)"
    )
    group.add_argument(
        "--device",
        metavar="DEV",
        type=_device_name,
        help="cpu, cuda or cuda:N (default: cuda when available, else cpu)",
    )
    group.add_argument("--seed", type=_whole(0), metavar="N", help="random seed")


def _add_check_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("check options")
    group.add_argument(
        "--checks",
        metavar="IDS",
        type=lambda text: [c.strip() for c in text.split(",") if c.strip()],
        help="only these checks, comma-separated (e.g. causality,output_shape)",
    )
    group.add_argument(
        "--time-budget",
        type=_seconds,
        metavar="SECONDS",
        help="time for the whole tier (default 60); checks that cannot fit skip, saying so",
    )


def _add_analysis_options(parser: argparse.ArgumentParser, time_budget: bool, data: bool = True) -> None:
    group = parser.add_argument_group("analysis options (Tier 2)")
    if data:
        group.add_argument("--data", metavar="PATH", help="text to analyse: a file or a folder of .txt files")
    group.add_argument("--tokenizer", metavar="PATH", help="the model's tokenizer (needed with --data)")
    group.add_argument(
        "--analyses",
        metavar="IDS",
        type=lambda text: [c.strip() for c in text.split(",") if c.strip()],
        help="only these analyses, comma-separated (e.g. attribution,weight_spectrum)",
    )
    if time_budget:
        group.add_argument("--time-budget", type=float, metavar="SECONDS", help="time cap for the tier")


def _add_train_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("training options (Tier 3)")
    group.add_argument(
        "--data", metavar="PATH", help="training text: a file or a folder of .txt files (default: the embedded corpus)"
    )
    group.add_argument(
        "--steps",
        type=int,
        metavar="N",
        help=f"optimizer steps (default {CLI_TRAIN['max_steps']}, of "
        f"{CLI_TRAIN['batch_size']} rows of up to {CLI_TRAIN['seq_len']} tokens)",
    )
    group.add_argument(
        "--search",
        type=int,
        default=0,
        metavar="N",
        help="hyperparameter-search trials before training (default 0: none)",
    )
    group.add_argument("--no-baseline", action="store_true", help="skip the size-matched GPT-2/BERT baseline run")
    group.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")


def build_parser() -> argparse.ArgumentParser:
    """The whole command line; global options are accepted before and after the command."""
    common = _Parser(add_help=False)
    _add_global_options(common, suppress=True)
    parser = _Parser(
        prog="tbuilder",
        description=_DESCRIPTION.format(default=DEFAULT_EXAMPLE),
        epilog=_EPILOG.format(examples=", ".join(list_examples())),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_global_options(parser, suppress=False)
    parser.add_argument("--version", action="version", version=f"tbuilder {_version()}")
    subcommands = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, run: Callable[[argparse.Namespace], int], summary: str) -> argparse.ArgumentParser:
        sub = subcommands.add_parser(name, parents=[common], help=summary, description=summary)
        sub.set_defaults(run=run)
        return sub

    def source(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "source",
            nargs="?",
            default=DEFAULT_SOURCE,
            metavar="SOURCE",
            help=f"the model (default: {DEFAULT_SOURCE})",
        )

    source(
        command(
            "info",
            commands.cmd_info,
            "Describe a model: class, how it was built, parameter "
            "counts, vocabulary size, max length, forward signature, config fields.",
        )
    )
    check = command(
        "check",
        commands.cmd_check,
        "Tier 1: is the model correct and trainable? (within --time-budget, 60 s by default)",
    )
    source(check)
    _add_tier_options(check)
    _add_check_options(check)
    analyze = command("analyze", commands.cmd_analyze, "Tier 2: what is the model doing inside?")
    source(analyze)
    _add_tier_options(analyze)
    _add_analysis_options(analyze, time_budget=True)
    train = command("train", commands.cmd_train, "Tier 3: how well does it learn, against a baseline?")
    source(train)
    _add_train_options(train)
    _add_tier_options(train)
    run = command("run", commands.cmd_run, "Every tier this version has, in order.")
    source(run)
    _add_train_options(run)
    _add_tier_options(run)
    _add_check_options(run)
    _add_analysis_options(run, time_budget=False, data=False)
    catalogue = command("checks", commands.cmd_checks, "List every check with its purpose, or explain one.")
    catalogue.add_argument(
        "--explain",
        metavar="ID",
        help="what the check does, why it matters, false alarms, a broken example, the fix",
    )
    tok = command("tokenizer", commands.cmd_tokenizer, "Pick (or train) the tokenizer for a vocabulary size.")
    tok.add_argument(
        "--vocab-size",
        type=_whole(MIN_VOCAB_SIZE),
        required=True,
        metavar="N",
        help=f"the model's vocabulary size ({LIMITS_HELP})",
    )
    tok.add_argument(
        "--min-frequency",
        type=_whole(1),
        default=2,
        metavar="N",
        help="BPE merges only pairs seen N times or more (default 2; 1 fills a large vocabulary from little text)",
    )
    tok.add_argument(
        "--data",
        metavar="PATH",
        help="text to train on: a file or a folder of .txt files (default: embedded corpus)",
    )
    return parser


def _version() -> str:
    from utils import __version__

    return __version__


# -- running ------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Run one command and return the exit status: errors become one line on stderr, not a
    traceback, because the reader is a model designer, not the toolkit's developer."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and argument errors end here
        return exc.code if isinstance(exc.code, int) else EXIT_ERROR
    root = logging.getLogger("utils")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    previous_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO)
    try:
        if args.command is None:
            parser.print_help(sys.stderr)
            return EXIT_ERROR
        _check_outputs(args)
        return args.run(args)
    except KeyboardInterrupt:
        log.debug("Traceback:", exc_info=True)
        log.error("interrupted: nothing was written")
        return EXIT_INTERRUPTED
    except Exception as exc:  # the command line reports errors, it does not crash
        log.debug("Traceback:", exc_info=True)
        if isinstance(exc, OptionError):
            log.error("error: %s", _flag_words(exc))
        elif isinstance(exc, ToolkitError):
            log.error("error: %s", exc)
        else:
            hint = "" if args.verbose else " (run with -v for the traceback)"
            log.error("error: %s: %s%s", type(exc).__name__, exc, hint)
        return EXIT_ERROR
    finally:
        root.removeHandler(handler)
        root.setLevel(previous_level)


def _check_outputs(args: argparse.Namespace) -> None:
    """--json and --out must be writable before minutes of work go into them."""
    if getattr(args, "json", None):
        writable_target(args.json)
    if getattr(args, "out", None):
        writable_folder(args.out)


def _flag_words(exc: OptionError) -> str:
    """An option error in the flags' words: `--max-seq-len 1000: ...`."""
    return f"--{exc.option.replace('_', '-')} {exc.value}: {exc.why}"

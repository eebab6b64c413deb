"""`tbuilder` (also `python -m utils`): the toolkit's engine from a shell.

Exit status: 0 when done, 1 when a check failed, 2 for bad input or a tier this version
does not have. Errors are one line on stderr; `-v` adds the traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from utils._io import atomic_write_text
from utils.errors import CommandError, ToolkitError
from utils.examples import DEFAULT_EXAMPLE, default_corpus, list_examples
from utils.vocabulary import TASKS

log = logging.getLogger("utils.cli")

EXIT_OK, EXIT_FAILED, EXIT_ERROR = 0, 1, 2
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
exit status: 0 done, 1 a check failed, 2 bad input or tier not available"""


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
    group.add_argument("--vocab-size", type=int, metavar="N", help="vocabulary size")
    group.add_argument("--max-seq-len", type=int, metavar="N", help="longest input")
    group.add_argument(
        "--device",
        metavar="DEV",
        help="cpu, cuda, cuda:1, mps (default: cuda when available, else cpu)",
    )
    group.add_argument("--seed", type=int, metavar="N", help="random seed")


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
        type=float,
        metavar="SECONDS",
        help="time cap, in seconds, for the training checks",
    )


def _add_analysis_options(parser: argparse.ArgumentParser, time_budget: bool) -> None:
    group = parser.add_argument_group("analysis options (Tier 2)")
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


def build_parser() -> argparse.ArgumentParser:
    """The whole command line; global options are accepted before and after the command."""
    common = argparse.ArgumentParser(add_help=False)
    _add_global_options(common, suppress=True)
    parser = argparse.ArgumentParser(
        prog="tbuilder",
        description=_DESCRIPTION.format(default=DEFAULT_EXAMPLE),
        epilog=_EPILOG.format(examples=", ".join(list_examples())),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_global_options(parser, suppress=False)
    parser.add_argument("--version", action="version", version=f"tbuilder {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(
        name: str, run: Callable[[argparse.Namespace], int], summary: str
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, parents=[common], help=summary, description=summary)
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
            _cmd_info,
            "Describe a model: class, how it was built, parameter "
            "counts, vocabulary size, max length, forward signature, config fields.",
        )
    )
    check = command(
        "check", _cmd_check, "Tier 1: is the model correct and trainable? (about a minute)"
    )
    source(check)
    _add_tier_options(check)
    _add_check_options(check)
    analyze = command("analyze", _cmd_analyze, "Tier 2: what is the model doing inside?")
    source(analyze)
    _add_tier_options(analyze)
    _add_analysis_options(analyze, time_budget=True)
    train = command("train", _cmd_train, "Tier 3: how well does it learn, against a baseline?")
    source(train)
    train.add_argument(
        "--data", metavar="PATH", help="training text: a file or a folder of .txt files"
    )
    _add_tier_options(train)
    run = command("run", _cmd_run, "Every tier this version has, in order.")
    source(run)
    _add_tier_options(run)
    _add_check_options(run)
    _add_analysis_options(run, time_budget=False)
    catalogue = command(
        "checks", _cmd_checks, "List every check with its purpose, or explain one."
    )
    catalogue.add_argument(
        "--explain",
        metavar="ID",
        help="what the check does, why it matters, false alarms, a broken example, the fix",
    )
    tok = command(
        "tokenizer", _cmd_tokenizer, "Pick (or train) the tokenizer for a vocabulary size."
    )
    tok.add_argument(
        "--vocab-size", type=int, required=True, metavar="N", help="the model's vocabulary size"
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
    args = parser.parse_args(argv)
    root = logging.getLogger("utils")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    previous_level = root.level
    root.addHandler(handler)
    root.setLevel(
        logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    )
    try:
        if args.command is None:
            parser.print_help(sys.stderr)
            return EXIT_ERROR
        return args.run(args)
    except Exception as exc:  # the command line reports errors, it does not crash
        log.debug("Traceback:", exc_info=True)
        if isinstance(exc, ToolkitError):
            log.error("error: %s", exc)
        else:
            hint = "" if args.verbose else " (run with -v for the traceback)"
            log.error("error: %s: %s%s", type(exc).__name__, exc, hint)
        return EXIT_ERROR
    finally:
        root.removeHandler(handler)
        root.setLevel(previous_level)


def _emit(text: str) -> None:
    """Command output goes to stdout; messages about the work go to stderr via logging."""
    sys.stdout.write(text.rstrip("\n") + "\n")


def _load(args: argparse.Namespace) -> Any:
    from utils.loading import load_model

    return load_model(args.source, class_name=args.class_name, config=args.config)


def _tier_options(args: argparse.Namespace) -> dict[str, Any]:
    """What the user overrode, plus the device: the GPU when there is one."""
    import torch

    names = ("task", "vocab_size", "max_seq_len", "seed", "checks", "time_budget")
    options = {k: getattr(args, k) for k in names if getattr(args, k) is not None}
    options["device"] = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    options["progress"] = not args.quiet
    return options


def _finish(args: argparse.Namespace, report: Any) -> int:
    _emit(report.to_text())
    if args.json:
        atomic_write_text(args.json, report.to_json())
        log.info("Wrote %s", args.json)
    if args.out:
        report.save(args.out)
        log.info("Wrote the report to %s", args.out)
    return EXIT_FAILED if report.status == "fail" else EXIT_OK


def _cmd_info(args: argparse.Namespace) -> int:
    facts = _load(args).describe()
    _emit(format_info(facts))
    text = json.dumps(facts, indent=2) + "\n"
    if args.json:
        atomic_write_text(args.json, text)
    if args.out:
        atomic_write_text(Path(args.out) / "info.json", text)
    return EXIT_OK


def _cmd_check(args: argparse.Namespace) -> int:
    from utils.tiers.tier1 import run_tier1

    return _finish(args, run_tier1(_load(args), **_tier_options(args)))


def _catalogue() -> list[tuple[str, list[Any]]]:
    """The checks, grouped as they run: each tier in its order, then the tokenizer's."""
    from utils.tiers.tier1 import CHECKS, TIER1_NAME
    from utils.tiers.tier2 import ANALYSES, TIER2_NAME
    from utils.tokenization.validator import CHECKS as TOKENIZER_CHECKS

    return [
        (TIER1_NAME, list(CHECKS)),
        (TIER2_NAME, list(ANALYSES)),
        ("Tokenizer validation", list(TOKENIZER_CHECKS)),
    ]


def format_catalogue(groups: list[tuple[str, list[Any]]]) -> str:
    """One line per check: its id and title, under its group's name."""
    width = max(len(c.id) for _, checks in groups for c in checks)
    lines = []
    for name, checks in groups:
        lines += ["", name] if lines else [name]
        lines += [f"  {c.id:<{width}}  {c.title}" for c in checks]
    lines.append("")
    lines.append("tbuilder checks --explain ID   what a check does, why, and how to fix it")
    return "\n".join(lines)


def _cmd_checks(args: argparse.Namespace) -> int:
    groups = _catalogue()
    if args.explain is None:
        _emit(format_catalogue(groups))
        return EXIT_OK
    by_id = {c.id: c for _, checks in groups for c in checks}
    if args.explain not in by_id:
        raise CommandError(
            f"--explain {args.explain}: no check has that id; `tbuilder checks` lists them "
            f"({', '.join(by_id)})"
        )
    _emit(by_id[args.explain].explain())
    return EXIT_OK


def _cmd_run(args: argparse.Namespace) -> int:
    from utils.checks import merge_reports
    from utils.tiers.tier1 import run_tier1
    from utils.tiers.tier2 import run_tier2

    loaded = _load(args)
    tier1 = run_tier1(loaded, **_tier_options(args))
    tier2 = run_tier2(loaded, **_analysis_options(args))
    log.info("Tier 3 (train) is not available in this version; ran Tiers 1 and 2.")
    return _finish(args, merge_reports("Tiers 1 and 2", [tier1, tier2]))


def _cmd_analyze(args: argparse.Namespace) -> int:
    from utils.tiers.tier2 import run_tier2

    return _finish(args, run_tier2(_load(args), **_analysis_options(args)))


def _analysis_options(args: argparse.Namespace) -> dict[str, Any]:
    """Tier 2's options: the model overrides, the analyses, and real text when given."""
    import torch

    names = ("task", "vocab_size", "max_seq_len", "seed")
    options: dict[str, Any] = {k: getattr(args, k) for k in names if getattr(args, k) is not None}
    options["device"] = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    options["progress"] = not args.quiet
    if args.command == "analyze" and args.time_budget is not None:
        options["time_budget"] = args.time_budget
    if args.analyses:
        options["analyses"] = args.analyses
    if args.data and not args.tokenizer:
        raise CommandError(
            f"--data {args.data} needs --tokenizer PATH (the tokenizer the model was trained with) to "
            "turn the text into its token ids; without --data, Tier 2 analyses random tokens."
        )
    if args.tokenizer:
        options["tokenizer"] = args.tokenizer
        options["texts"] = read_texts(args.data) if args.data else paragraphs(default_corpus())
    log.info("Tier 2 analyses %s.", "your text" if args.data else "the embedded corpus" if args.tokenizer
             else "seeded random tokens (pass --data and --tokenizer for real text)")
    return options


def _cmd_train(args: argparse.Namespace) -> int:
    raise CommandError(
        "Tier 3 (train) is not available in this version; `tbuilder check` runs Tier 1."
    )


def _cmd_tokenizer(args: argparse.Namespace) -> int:
    from utils.tokenization.adaptive_tokenizer import AdaptiveTokenizer

    if args.vocab_size < 2:
        raise CommandError(
            f"--vocab-size must be the model's vocabulary size (2 or more), not {args.vocab_size}."
        )
    texts = read_texts(args.data) if args.data else paragraphs(default_corpus())
    choice = AdaptiveTokenizer.load_or_create(vocab_size=args.vocab_size, texts=texts)
    tried = "; ".join(f"{a.strategy} ({a.source}): {a.outcome}" for a in choice.tried)
    rows = [
        ("strategy", choice.strategy),
        ("source", choice.source),
        (
            "tokens",
            f"{choice.tokenizer_size} for {choice.vocab_size} rows ({choice.unused_rows} unused)",
        ),
        ("reason", choice.reason),
        ("tried", tried),
    ] + [("note", note) for note in choice.notes]
    _emit("\n".join(f"{name:<10}  {value}" for name, value in rows))
    if args.json:
        atomic_write_text(args.json, json.dumps(choice.to_dict(), indent=2) + "\n")
    if args.out:
        choice.save(args.out)
        log.info("Wrote the tokenizer to %s", args.out)
    return EXIT_OK


# -- helpers ------------------------------------------------------------------------------


def paragraphs(text: str) -> list[str]:
    """Blank-line separated paragraphs: the documents a plain text file holds."""
    return [p.strip() for p in text.split("\n\n") if p.strip()]


def read_texts(path: str | Path) -> list[str]:
    """Paragraphs of a UTF-8 text file, or of every .txt file under a folder."""
    path = Path(path)
    files = sorted(path.rglob("*.txt")) if path.is_dir() else [path]
    if not path.exists():
        raise CommandError(f"--data {path}: no such file or folder.")
    if not files:
        raise CommandError(f"--data {path}: the folder holds no .txt files.")
    texts: list[str] = []
    for file in files:
        try:
            texts += paragraphs(file.read_text(encoding="utf-8"))
        except UnicodeDecodeError as exc:
            raise CommandError(
                f"--data {file} is not UTF-8 text (byte {exc.start}); convert it to UTF-8."
            ) from exc
    if not texts:
        raise CommandError(f"--data {path} holds no text.")
    return texts


def format_info(facts: dict[str, Any]) -> str:
    """`tbuilder info` as aligned lines a person reads top to bottom."""
    config = facts["config"]
    counts = facts["parameters"]
    token = facts["token_embedding"]
    sizes = ", ".join(f"{counts[kind]:,} {kind}" for kind in ("total", "trainable", "embedding"))
    rows = [
        ("class", facts["class"]),
        ("source", facts["source"]),
        ("file", facts["file"] or "-"),
        ("built with", facts["construction"]),
        ("parameters", sizes),
        (
            "vocab size",
            _sized(facts["vocab_size"], config["found_at"].get("vocab_size"))
            + (f"; token embedding '{token['name']}' has {token['rows']} rows" if token else ""),
        ),
        ("max length", _sized(facts["max_seq_len"], config["found_at"].get("max_seq_len"))),
        ("forward", facts["forward"]),
        ("config", config["path"] or "none"),
        ("  found", ", ".join(f"{k}={v}" for k, v in config["found"].items()) or "nothing"),
        ("  missing", ", ".join(config["missing"]) or "nothing"),
        ("  other", ", ".join(config["other_fields"]) or "nothing"),
    ]
    return "\n".join(f"{name:<12}  {value}" for name, value in rows)


def _sized(value: int | None, where: str | None) -> str:
    return f"{value}, from config {where}" if value is not None else "not in the config"

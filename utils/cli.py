"""`tbuilder` (also `python -m utils`): the toolkit's engine from a shell.

Exit status: 0 when done, 1 when a check failed, 2 for bad input or a tier this version
does not have, 130 when interrupted (Ctrl-C). Errors are one line on stderr; `-v` adds the
traceback. Each command imports what it needs when it runs, so a bad argument is answered
before torch, transformers or Lightning load.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from utils._io import atomic_write_text, writable_folder, writable_target
from utils.errors import CommandError, OptionError, ToolkitError
from utils.examples import DEFAULT_EXAMPLE, default_corpus, list_examples
from utils.tokenization.limits import LIMITS_HELP, MIN_VOCAB_SIZE
from utils.vocabulary import TASKS

log = logging.getLogger("utils.cli")

EXIT_OK, EXIT_FAILED, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 130
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


CLI_TRAIN = {"max_steps": 200, "batch_size": 8, "seq_len": 128}


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
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, run: Callable[[argparse.Namespace], int], summary: str) -> argparse.ArgumentParser:
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
        "check", _cmd_check, "Tier 1: is the model correct and trainable? (within --time-budget, 60 s by default)"
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
    _add_train_options(train)
    _add_tier_options(train)
    run = command("run", _cmd_run, "Every tier this version has, in order.")
    source(run)
    _add_train_options(run)
    _add_tier_options(run)
    _add_check_options(run)
    _add_analysis_options(run, time_budget=False, data=False)
    catalogue = command("checks", _cmd_checks, "List every check with its purpose, or explain one.")
    catalogue.add_argument(
        "--explain",
        metavar="ID",
        help="what the check does, why it matters, false alarms, a broken example, the fix",
    )
    tok = command("tokenizer", _cmd_tokenizer, "Pick (or train) the tokenizer for a vocabulary size.")
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


def _emit(text: str) -> None:
    """Command output goes to stdout; messages about the work go to stderr via logging."""
    sys.stdout.write(text.rstrip("\n") + "\n")


def _load(args: argparse.Namespace, device: str | None = None) -> Any:
    from utils.loading import load_model

    return load_model(
        args.source, class_name=args.class_name, config=args.config, allow_gist=not args.no_gist, device=device
    )


def _load_for_counting(args: argparse.Namespace) -> Any:
    """Build on the meta device (no weights allocated: a 2B-parameter model is counted in
    a second); a constructor that cannot run there is built for real, and the log says so."""
    try:
        return _load(args, device="meta")
    except Exception as exc:  # noqa: BLE001 - a real build decides; its own error wins
        meta_error = exc
    loaded = _load(args)
    log.info("Could not build on the meta device (%s); built it for real", str(meta_error).splitlines()[0])
    return loaded


def _tier_options(args: argparse.Namespace) -> dict[str, Any]:
    """What the user overrode, plus the device: the GPU when there is one."""
    import torch

    names = ("task", "vocab_size", "max_seq_len", "seed", "checks", "time_budget")
    options = {k: getattr(args, k) for k in names if getattr(args, k) is not None}
    options["device"] = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    options["progress"] = not args.quiet
    return options


def _finish(args: argparse.Namespace, report: Any, save: bool = True) -> int:
    _emit(report.to_text())
    if args.json:
        atomic_write_text(args.json, report.to_json())
        log.info("Wrote %s", args.json)
    if args.out and save:
        report.save(args.out)
        log.info("Wrote the report to %s", args.out)
    return EXIT_FAILED if report.status == "fail" else EXIT_OK


def _cmd_info(args: argparse.Namespace) -> int:
    facts = _load_for_counting(args).describe()
    _emit(format_info(facts))
    text = json.dumps(facts, indent=2) + "\n"
    if args.json:
        atomic_write_text(args.json, text)
    if args.out:
        atomic_write_text(Path(args.out) / "info.json", text)
    return EXIT_OK


def _cmd_check(args: argparse.Namespace) -> int:
    from utils.tiers.tier1 import run_tier1

    options = _tier_options(args)
    _refuse_what_cannot_fit(args, options["device"])
    return _finish(args, run_tier1(_load(args), **options))


def _refuse_what_cannot_fit(args: argparse.Namespace, device: str) -> None:
    """Count the weights on the meta device and refuse, with the numbers, a model the tier
    cannot hold in the memory free on `device`, before building it for real (a 2B-parameter
    model would otherwise allocate gigabytes only to run out of memory)."""
    from utils.tiers.tier1.budget import free_memory, tier_memory_shortfall, weight_bytes
    from utils.tiers.tier1.run import tier_device

    dev = tier_device(device)  # a device that cannot be used is named by its flag first
    try:
        counted = _load(args, device="meta")
    except Exception:  # noqa: BLE001 - a constructor that cannot run on meta is built for real
        return
    free = free_memory(dev)
    shortfall = tier_memory_shortfall(weight_bytes(counted.model), free)
    if shortfall:
        raise CommandError(f"{counted.source}: {shortfall}")


def _catalogue() -> list[tuple[str, list[Any]]]:
    """The checks, grouped as they run: each tier in its order, then the tokenizer's."""
    from utils.tiers.tier1 import CHECKS, TIER1_NAME
    from utils.tiers.tier2 import ANALYSES, TIER2_NAME
    from utils.tiers.tier3 import TIER3_CHECKS, TIER3_NAME
    from utils.tokenization.validator import CHECKS as TOKENIZER_CHECKS

    return [
        (TIER1_NAME, list(CHECKS)),
        (TIER2_NAME, list(ANALYSES)),
        (TIER3_NAME, list(TIER3_CHECKS)),
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
            f"--explain {args.explain}: no check has that id; `tbuilder checks` lists them ({', '.join(by_id)})"
        )
    _emit(by_id[args.explain].explain())
    return EXIT_OK


def _cmd_run(args: argparse.Namespace) -> int:
    from utils.checks import merge_reports
    from utils.tiers.tier1 import run_tier1
    from utils.tiers.tier2 import run_tier2

    options = _tier_options(args)
    _refuse_what_cannot_fit(args, options["device"])
    loaded = _load(args)
    tier1 = run_tier1(loaded, **options)
    tier2 = run_tier2(loaded, **_analysis_options(args))
    if tier1.status == "fail":
        log.info("Tier 3 (train) not run: Tier 1 failed; fix what it reports first.")
        return _finish(args, merge_reports("Tiers 1 and 2", [tier1, tier2]))
    return _finish(args, merge_reports(f"All tiers: {loaded.source}", [tier1, tier2, _tier3(args, loaded)]))


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
    # in `run`, --data is the training text; Tier 2 reads it only with the model's tokenizer
    data = args.data if args.command == "analyze" or args.tokenizer else None
    if data and not args.tokenizer:
        raise CommandError(
            f"--data {data} needs --tokenizer PATH (the tokenizer the model was trained with) to "
            "turn the text into its token ids; without --data, Tier 2 analyses random tokens."
        )
    if args.tokenizer:
        options["tokenizer"] = args.tokenizer
        options["texts"] = read_texts(data) if data else paragraphs(default_corpus())
    log.info(
        "Tier 2 analyses %s.",
        "your text"
        if data
        else "the embedded corpus"
        if args.tokenizer
        else "seeded random tokens (pass --data and --tokenizer for real text)",
    )
    return options


def _cmd_train(args: argparse.Namespace) -> int:
    return _finish(args, _tier3(args, _load(args)), save=False)


def _tier3(args: argparse.Namespace, loaded: Any) -> Any:
    """Tier 3 into the run folder --out (default tbuilder_runs/<model>): checkpoints, CSV
    log, baseline, export and the report with its figures."""
    from utils.tiers.tier3 import run_tier3

    if args.steps is not None and args.steps < 1:
        raise CommandError(f"--steps {args.steps}: give a positive number of steps.")
    if args.search < 0:
        raise CommandError(f"--search {args.search}: give 0 (no search) or a number of trials.")
    texts = read_texts(args.data) if args.data else paragraphs(default_corpus())
    out = Path(args.out or Path("tbuilder_runs") / loaded.class_name)
    overrides = _train_defaults(loaded)
    overrides.update({k: v for k, v in (("max_steps", args.steps), ("seed", args.seed)) if v is not None})
    if args.resume:
        overrides["resume"] = True
    report = run_tier3(
        loaded,
        data=texts,
        search_trials=args.search,
        baseline=not args.no_baseline,
        out_dir=out,
        progress=not args.quiet,
        **overrides,
    )
    log.info("Wrote the run folder %s", out)
    return report


def _train_defaults(loaded: Any) -> dict[str, Any]:
    """A budget that trains an embedded example in a few minutes on two CPU cores: 200 steps
    of 8 rows of up to 128 tokens (about 200k tokens); --steps gives more."""
    limit = loaded.config.max_seq_len
    if limit is None:  # the adapter finds the model's context; train() caps seq_len to it
        return {k: v for k, v in CLI_TRAIN.items() if k != "seq_len"}
    return {**CLI_TRAIN, "seq_len": min(CLI_TRAIN["seq_len"], limit)}


def _cmd_tokenizer(args: argparse.Namespace) -> int:
    texts = read_texts(args.data) if args.data else paragraphs(default_corpus())
    from utils.tokenization.adaptive_tokenizer import AdaptiveTokenizer
    from utils.tokenization.bpe_trainer import FastBPETrainer

    # the choice's notes carry the trainer's warnings: print them once, in the table
    trainer_log = logging.getLogger("utils.tokenization.bpe_trainer")
    level = trainer_log.level
    trainer_log.setLevel(logging.ERROR)
    try:
        choice = AdaptiveTokenizer.load_or_create(
            vocab_size=args.vocab_size,
            texts=texts,
            bpe_trainer=FastBPETrainer(min_frequency=args.min_frequency),
            text_name=f"{args.data}" if args.data else "the embedded corpus (no --data given)",
        )
    finally:
        trainer_log.setLevel(level)
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
            raise CommandError(f"--data {file} is not UTF-8 text (byte {exc.start}); convert it to UTF-8.") from exc
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

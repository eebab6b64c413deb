"""What each `tbuilder` command does once its arguments are parsed, and the output it writes.

Kept apart from the parser so that `utils.cli` stays the shape of the command line. Each
command imports what it needs when it runs, so a bad argument is answered before torch,
transformers or Lightning load.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from utils._io import atomic_write_text
from utils.errors import CommandError, OptionError
from utils.examples import default_corpus

log = logging.getLogger("utils.commands")

EXIT_OK, EXIT_FAILED, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 130
CLI_TRAIN = {"max_steps": 200, "batch_size": 8, "seq_len": 128}


# -- the commands -------------------------------------------------------------------------


def _emit(text: str) -> None:
    """Command output goes to stdout; messages about the work go to stderr via logging."""
    sys.stdout.write(text.rstrip("\n") + "\n")


def _load(args: argparse.Namespace, device: str | None = None) -> Any:
    from utils.loading import load_model

    return load_model(
        args.source, class_name=args.class_name, config=args.config, allow_gist=not args.no_gist, device=device
    )


@contextmanager
def _quiet(logger: str) -> Iterator[None]:
    """Errors only from `logger` for the duration: for a step whose news is told elsewhere."""
    log_ = logging.getLogger(logger)
    level = log_.level
    log_.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log_.setLevel(level)


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


def cmd_info(args: argparse.Namespace) -> int:
    facts = _load_for_counting(args).describe()
    _emit(format_info(facts))
    text = json.dumps(facts, indent=2) + "\n"
    if args.json:
        atomic_write_text(args.json, text)
    if args.out:
        atomic_write_text(Path(args.out) / "info.json", text)
    return EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
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
        with _quiet("utils.loading"):  # the real build says what it built, once
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


def cmd_checks(args: argparse.Namespace) -> int:
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


def cmd_run(args: argparse.Namespace) -> int:
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


def cmd_analyze(args: argparse.Namespace) -> int:
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


def cmd_train(args: argparse.Namespace) -> int:
    return _finish(args, _tier3(args, _load(args)), save=False)


def _tier3(args: argparse.Namespace, loaded: Any) -> Any:
    """Tier 3 into the run folder --out (default tbuilder_runs/<model>): checkpoints, CSV
    log, baseline, export and the report with its figures. --task, --vocab-size and
    --max-seq-len override what the adapter infers; --device picks where training runs."""
    from utils.adapters import adapt
    from utils.tiers.tier1.run import check_overrides
    from utils.tiers.tier3 import run_tier3

    if args.steps is not None and args.steps < 1:
        raise CommandError(f"--steps {args.steps}: give a positive number of steps.")
    if args.search < 0:
        raise CommandError(f"--search {args.search}: give 0 (no search) or a number of trials.")
    texts = read_texts(args.data) if args.data else paragraphs(default_corpus())
    out = Path(args.out or Path("tbuilder_runs") / loaded.class_name)
    model_options = {k: getattr(args, k) for k in ("task", "vocab_size", "max_seq_len") if getattr(args, k) is not None}
    check_overrides(loaded.model, args.vocab_size, args.max_seq_len)
    overrides = _train_defaults(args.max_seq_len or loaded.config.max_seq_len)
    overrides.update({k: v for k, v in (("max_steps", args.steps), ("seed", args.seed)) if v is not None})
    if args.device:
        overrides.update(_accelerator(args.device))
    if args.resume:
        overrides["resume"] = True
    report = run_tier3(
        adapt(loaded.model, loaded.config, **model_options) if model_options else loaded,
        data=texts,
        search_trials=args.search,
        baseline=not args.no_baseline,
        out_dir=out,
        progress=not args.quiet,
        **overrides,
    )
    log.info("Wrote the run folder %s", out)
    return report


def _accelerator(device: str) -> dict[str, Any]:
    """train()'s accelerator and devices for a --device of cpu, cuda or cuda:N."""
    import torch

    if device == "cpu":
        return {"accelerator": "cpu", "devices": 1}
    if not torch.cuda.is_available():
        raise OptionError(
            "device", device, "no CUDA device is available here; use 'cpu' (or a GPU runtime)", "tbuilder train"
        )
    index = device.partition(":")[2]
    return {"accelerator": "gpu", "devices": [int(index)] if index else 1}


def _train_defaults(limit: int | None) -> dict[str, Any]:
    """A budget that trains an embedded example in a few minutes on two CPU cores: 200 steps
    of 8 rows of up to 128 tokens (about 200k tokens); --steps gives more."""
    if limit is None:  # the adapter finds the model's context; train() caps seq_len to it
        return {k: v for k, v in CLI_TRAIN.items() if k != "seq_len"}
    return {**CLI_TRAIN, "seq_len": min(CLI_TRAIN["seq_len"], limit)}


def cmd_tokenizer(args: argparse.Namespace) -> int:
    texts = read_texts(args.data) if args.data else paragraphs(default_corpus())
    from utils.tokenization.adaptive_tokenizer import AdaptiveTokenizer
    from utils.tokenization.bpe_trainer import FastBPETrainer

    # the choice's notes carry the trainer's warnings: print them once, in the table
    with _quiet("utils.tokenization.bpe_trainer"):
        choice = AdaptiveTokenizer.load_or_create(
            vocab_size=args.vocab_size,
            texts=texts,
            bpe_trainer=FastBPETrainer(min_frequency=args.min_frequency),
            text_name=f"{args.data}" if args.data else "the embedded corpus (no --data given)",
        )
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

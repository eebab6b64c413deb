"""The command line, run in-process through `utils.cli.main` (plus one real subprocess)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from utils.cli import main
from utils.commands import read_texts

FIXTURES = Path(__file__).parent / "fixtures" / "builder_exports"
REPO = Path(__file__).resolve().parents[1]


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def info_rows(out: str) -> dict[str, str]:
    return {line[:12].strip(): line[14:] for line in out.splitlines()}


def test_info_defaults_to_the_embedded_example(capsys):
    code, out, err = run(capsys, "info")
    rows = info_rows(out)
    assert code == 0
    assert rows["class"] == "GPTMini" and rows["source"] == "example:gpt-mini"
    assert rows["built with"].startswith("keyword arguments from config.json: vocab_size")
    assert rows["vocab size"].startswith("2048, from config vocab_size; token embedding 'tok_emb' has 2048 rows")
    assert rows["max length"] == "256, from config max_seq_len"
    assert rows["forward"].startswith("forward(input_ids")
    assert rows["missing"] == "nodes, edges"
    total, trainable, embedding = (int(x.split()[0].replace(",", "")) for x in rows["parameters"].split(", "))
    assert 800_000 < total < 1_300_000 and trainable == total and 0 < embedding < total
    assert "Built GPTMini" in err


@pytest.mark.parametrize(
    ("folder", "vocab", "max_len", "missing"),
    [
        ("simple_graph", 300, 24, "nothing"),
        ("complex_edges", 260, 16, "nothing"),
        ("flat_config", 200, 12, "template, nodes, edges"),
    ],
)
def test_info_on_designer_exports(capsys, folder, vocab, max_len, missing):
    code, out, _ = run(capsys, "info", str(FIXTURES / folder))
    rows = info_rows(out)
    assert code == 0
    assert rows["vocab size"].startswith(f"{vocab}, from config")
    assert rows["max length"].startswith(f"{max_len}, from config")
    assert rows["missing"] == missing
    assert rows["built with"] == "no-argument constructor"


def test_info_writes_json_and_out_with_options_before_or_after_the_command(capsys, tmp_path):
    after = tmp_path / "after.json"
    code, _, _ = run(capsys, "info", "example:bert-mini", "--json", str(after), "--out", str(tmp_path / "dir"))
    assert code == 0
    facts = json.loads(after.read_text())
    assert facts["class"] == "BertMini" and facts["vocab_size"] == 3000
    assert json.loads((tmp_path / "dir" / "info.json").read_text()) == facts
    before = tmp_path / "before.json"
    assert run(capsys, "--json", str(before), "-q", "info", "example:builder-export")[0] == 0
    assert json.loads(before.read_text())["config"]["found"]["nodes"] == 15


def test_class_option_and_ambiguity_error(capsys, tmp_path):
    (tmp_path / "model.py").write_text(
        textwrap.dedent(
            """
            import torch.nn as nn

            class A(nn.Module):
                pass

            class B(nn.Module):
                pass
            """
        )
    )
    code, out, err = run(capsys, "info", str(tmp_path))
    assert code == 2 and out == ""
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in err
    assert "several model classes that no other class uses: A, B" in err and "--class A" in err
    code, out, _ = run(capsys, "--class", "B", "info", str(tmp_path))
    assert code == 0 and info_rows(out)["class"] == "B"
    assert run(capsys, "info", str(tmp_path), "--class", "A")[0] == 0


def test_config_option(capsys, tmp_path):
    config = tmp_path / "other.json"
    config.write_text(json.dumps({"vocab_size": 300, "max_seq_len": 20}))
    code, out, _ = run(capsys, "info", str(FIXTURES / "simple_graph"), "--config", str(config))
    assert code == 0 and info_rows(out)["max length"] == "20, from config max_seq_len"


def test_errors_are_one_line_without_traceback(capsys):
    code, out, err = run(capsys, "info", "no/such/export")
    assert code == 2 and out == ""
    assert err.strip() == (
        "error: model source 'no/such/export' is not an existing file or folder, nor "
        "'example:<name>', 'gist:<id>', a gist URL or 'module.path:ClassName'. Check the path."
    )
    assert "Traceback" not in err


def test_verbose_shows_the_traceback(capsys):
    code, _, err = run(capsys, "-v", "info", "no/such/export")
    assert code == 2 and "Traceback" in err


def test_no_command_prints_help(capsys):
    code, _, err = run(capsys)
    assert code == 2 and "usage: tbuilder" in err and "tokenizer" in err


def test_bad_option_is_a_usage_error(capsys):
    code, _, err = run(capsys, "check", "--task", "translation")
    assert code == 2
    assert err.startswith("error: tbuilder check: argument --task: invalid choice: 'translation'")
    assert len(err.strip().splitlines()) == 1


def test_read_texts(tmp_path):
    (tmp_path / "a.txt").write_text("first paragraph\n\nsecond\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_text("third\n")
    (tmp_path / "skip.md").write_text("not text data\n")
    assert read_texts(tmp_path) == ["first paragraph", "second", "third"]
    assert read_texts(tmp_path / "a.txt") == ["first paragraph", "second"]


def bad_data(folder: Path, kind: str) -> Path:
    """A --data argument that must be refused, of the given kind."""
    if kind == "blank":
        (folder / "blank.txt").write_text("\n\n  \n")
        return folder / "blank.txt"
    if kind == "latin-1":
        (folder / "latin.txt").write_bytes(b"caf\xe9")
        return folder / "latin.txt"
    return folder / "missing.txt" if kind == "missing" else folder


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("missing", r"--data .*missing\.txt: no such file or folder"),
        ("empty folder", r"the folder holds no \.txt files"),
        ("blank", "holds no text"),
        ("latin-1", r"is not UTF-8 text \(byte 3\)"),
    ],
)
def test_tokenizer_data_errors(capsys, tmp_path, kind, message):
    code, _, err = run(capsys, "tokenizer", "--vocab-size", "300", "--data", str(bad_data(tmp_path, kind)))
    assert code == 2
    assert re.search(message, err), err


def test_tokenizer_command_picks_and_saves(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("TBUILDER_CACHE_DIR", str(tmp_path / "cache"))
    data = tmp_path / "corpus.txt"
    data.write_text("the quick brown fox jumps over the lazy dog\n\n" * 20 + "façade — naïve\n")
    out_dir, record = tmp_path / "tok", tmp_path / "choice.json"
    code, out, _ = run(
        capsys,
        "tokenizer",
        "--vocab-size",
        "300",
        "--data",
        str(data),
        "--out",
        str(out_dir),
        "--json",
        str(record),
    )
    rows = {line[:10].strip(): line[12:] for line in out.splitlines()}
    assert code == 0
    assert rows["strategy"] == "character" and rows["tokens"].startswith("300 for 300 rows")
    assert json.loads(record.read_text())["strategy"] == "character"
    assert (out_dir / "tokenizer_choice.json").is_file()
    assert run(capsys, "tokenizer", "--vocab-size", "1")[0] == 2


QUICK = "output_shape,causality,padding_invariance"


def test_check_passes_a_correct_model(capsys, tmp_path):
    out_dir, record = tmp_path / "report", tmp_path / "report.json"
    code, out, _ = run(capsys, "-q", "check", "--checks", QUICK, "--out", str(out_dir), "--json", str(record))
    assert code == 0, out
    data = json.loads(record.read_text())
    assert data["status"] == "pass"
    assert [r["id"] for r in data["results"]] == QUICK.split(",")
    assert (out_dir / "report.md").is_file() and (out_dir / "report.json").is_file()
    assert "PASS  causality" in out


def test_check_says_once_what_it_built(capsys):
    # the model is first counted on the meta device (to refuse one that cannot fit), then built
    code, out, err = run(capsys, "check", "--checks", "initial_loss")
    assert code == 0, out + err
    assert (out + err).count("Built GPTMini with") == 1, err


def test_check_fails_a_leaky_model_with_exit_1(capsys):
    # simple_graph has no causal mask: as a causal LM it sees future tokens
    source = str(FIXTURES / "simple_graph")
    code, out, _ = run(capsys, "-q", "check", source, "--task", "causal_lm", "--checks", "causality")
    assert code == 1
    assert "FAIL  causality" in out and out.rstrip().splitlines()[-1].startswith("FAIL:")
    code, out, err = run(
        capsys, "run", source, "--task", "causal_lm", "--checks", "causality", "--analyses", "weight_spectrum"
    )
    assert code == 1 and "FAIL  causality" in out and "Tier 3 (train) not run: Tier 1 failed" in err


def test_check_with_an_unknown_check_id(capsys):
    code, _, err = run(capsys, "check", "--checks", "causality,telepathy")
    assert code == 2 and "unknown check id(s) 'telepathy'" in err


def test_python_dash_m_utils_help():
    result = subprocess.run(
        [sys.executable, "-m", "utils", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: tbuilder")
    for command in ("info", "check", "analyze", "train", "tokenizer", "run"):
        assert command in result.stdout


def test_version(capsys):
    from utils import __version__

    assert main(["--version"]) == 0 and capsys.readouterr().out.strip() == f"tbuilder {__version__}"


@pytest.mark.parametrize(("flags", "message"), [(["--steps", "0"], "--steps 0"), (["--search", "-1"], "--search -1")])
def test_train_refuses_bad_numbers_before_training(capsys, tmp_path, flags, message):
    code, _, err = run(capsys, "train", "--out", str(tmp_path / "run"), *flags)
    assert code == 2 and f"error: {message}" in err
    assert not (tmp_path / "run").exists()


def test_train_takes_the_model_options_and_the_device(capsys, tmp_path):
    report = tmp_path / "report.json"
    flags = ["--steps", "2", "--no-baseline", "--max-seq-len", "16", "--device", "cpu", "-q", "--json", str(report)]
    code, _, err = run(capsys, "train", "--out", str(tmp_path / "run"), *flags)
    assert code in (0, 1), err  # two steps may not learn enough to pass
    meta = json.loads(report.read_text())["meta"]
    assert "max_seq_len 16 (override)" in meta["profile"]
    assert meta["settings"]["seq_len"] == 16 and meta["settings"]["accelerator"] == "cpu"
    code, _, err = run(capsys, "train", "--out", str(tmp_path / "big"), "--max-seq-len", "100000")
    assert code == 2 and "error: --max-seq-len 100000: the model's position table" in err
    assert not (tmp_path / "big").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_train_on_a_missing_gpu_names_the_flag(capsys, tmp_path):
    code, _, err = run(capsys, "train", "--out", str(tmp_path / "run"), "--device", "cuda", "--steps", "1")
    assert code == 2 and "error: --device cuda: no CUDA device is available here" in err
    assert not (tmp_path / "run").exists()


def test_checks_lists_the_catalogue_and_explains_one(capsys):
    code, out, _ = run(capsys, "checks")
    assert code == 0
    assert "causality" in out and "No position sees later tokens" in out
    listed = [line for line in out.splitlines() if line.startswith("  ")]
    assert "tokenizer.id_range" in out and len(listed) == 33  # 17 Tier 1, 6 Tier 2, 6 Tier 3, 4 tokenizer
    assert "baseline_comparison" in out and "attention_patterns" in out
    code, out, _ = run(capsys, "checks", "--explain", "label_leakage")
    assert code == 0 and out.startswith("label_leakage: Training on random tokens cannot beat chance")
    assert "Known false alarms:" in out and "How to fix:" in out
    code, _, err = run(capsys, "checks", "--explain", "nope")
    assert code == 2 and err.startswith("error: --explain nope: no check has that id")

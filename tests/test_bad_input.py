"""Bad input from a new user's journey: each case gets one clear line naming the file, line,
flag or value, exit status 2, and no traceback unless -v."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from utils.cli import main

REPO = Path(__file__).resolve().parents[1]

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
    source = TINY_LM.replace(
        "        T = input_ids.shape[1]\n",
        "        T = input_ids.shape[1]\n        raise RuntimeError('boom: the head was never built')\n",
    )
    line = source.splitlines().index("        raise RuntimeError('boom: the head was never built')") + 1
    code, out, _ = run(capsys, "check", str(export(tmp_path / "x", source)), "-q", "--checks", "forward_signature")
    assert code == 1
    flat = " ".join(out.split())
    assert "its forward raised RuntimeError: boom: the head was never built" in flat
    assert f"model.py:{line} in forward" in flat
    assert "input_ids (or idx" not in flat  # no advice to rename the input


# -- command-line options -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["tokenizer", "--vocab-size", "0"],
            "error: tbuilder tokenizer: argument --vocab-size: 0 is too small: give 6 or more",
        ),
        (
            ["tokenizer", "--vocab-size", "many"],
            "error: tbuilder tokenizer: argument --vocab-size: 'many' is not a whole number",
        ),
        (
            ["check", "--vocab-size", "0"],
            "error: tbuilder check: argument --vocab-size: 0 is too small: give 2 or more",
        ),
        (
            ["check", "--max-seq-len", "-3"],
            "error: tbuilder check: argument --max-seq-len: -3 is too small: give 1 or more",
        ),
        (
            ["check", "--time-budget", "0"],
            "error: tbuilder check: argument --time-budget: 0 is not a positive number of seconds",
        ),
        (["check", "--device", "tpu"], "error: tbuilder check: argument --device: 'tpu' is not a device"),
    ],
)
def test_bad_options_are_refused_before_any_work(capsys, argv, message):
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert one_error(err).startswith(message) and err.rstrip().endswith("--help)")


def test_an_instant_error_loads_neither_torch_nor_transformers():
    # Lightning, transformers and torch cost 5-7 s to import; a typo is answered without them
    code = (
        "import sys; from utils.cli import main; status = main(['tokenizer', "
        "'--vocab-size', '0']); heavy = [m for m in ('torch', 'transformers', "
        "'pytorch_lightning') if m in sys.modules]; print(status, heavy)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=False, timeout=120
    )
    assert result.stdout.strip() == "2 []", result.stderr


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        (
            "--max-seq-len",
            "40",
            "error: --max-seq-len 40: the model's position table 'pos' has 16 rows; give at most 16",
        ),
        ("--vocab-size", "500", "error: --vocab-size 500: the model's largest embedding has 50 rows"),
    ],
)
def test_overrides_past_the_models_tables_name_the_flag_and_both_numbers(capsys, tmp_path, flag, value, message):
    code, out, err = run(capsys, "check", str(export(tmp_path / "m", TINY_LM)), flag, value)
    assert code == 2 and out == ""
    assert one_error(err).startswith(message)


def test_a_missing_gpu_is_named_by_its_flag(capsys, tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code, _, err = run(capsys, "check", str(export(tmp_path / "m", TINY_LM)), "--device", "cuda")
    assert code == 2
    assert one_error(err).startswith("error: --device cuda: no CUDA device is available here")


def test_ctrl_c_is_one_line_and_status_130(capsys, monkeypatch):
    import utils.commands as commands

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(commands, "cmd_info", interrupted)
    code, out, err = run(capsys, "info")
    assert code == 130 and out == ""
    assert err.strip() == "interrupted: nothing was written"


def test_no_gist_refuses_gists_before_fetching(capsys):
    code, _, err = run(capsys, "--no-gist", "info", "gist:0123456789abcdef0123")
    assert code == 2
    assert "gist sources are turned off here (allow_gist=False, tbuilder --no-gist)" in one_error(err)


# -- outputs ------------------------------------------------------------------------------


def test_json_that_is_a_folder_and_out_that_is_a_file_fail_before_the_work(capsys, tmp_path):
    (tmp_path / "taken").write_text("keep me")
    code, out, err = run(capsys, "info", "--json", str(tmp_path))
    assert code == 2 and out == ""
    assert one_error(err) == (
        f"error: cannot write {tmp_path}: it is a folder; give a file name inside it, e.g. {tmp_path / 'report.json'}"
    )
    code, out, err = run(capsys, "check", "--out", str(tmp_path / "taken"))
    assert code == 2 and out == "" and "Built" not in err
    assert one_error(err).startswith(f"error: cannot write into {tmp_path / 'taken'}: it is a file")
    assert (tmp_path / "taken").read_text() == "keep me"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder_is_one_line(capsys, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        code, _, err = run(capsys, "info", "--json", str(locked / "info.json"))
        assert code == 2
        assert one_error(err).endswith(f"the folder {locked} is not writable; choose a folder you can write to")
    finally:
        locked.chmod(0o700)


def test_report_save_onto_a_file_raises_one_clear_error(tmp_path):
    from utils.checks import CheckResult, TierReport
    from utils.errors import WriteError

    target = tmp_path / "report"
    target.write_text("not a folder")
    report = TierReport("Tier 1", [CheckResult("a", "A", "pass", "fine")])
    with pytest.raises(WriteError, match=r"cannot write into .*report: it is a file, not a folder"):
        report.save(target)
    assert target.read_text() == "not a folder"
    assert list(tmp_path.iterdir()) == [target]  # nothing half-written beside it


# -- counting parameters ------------------------------------------------------------------


HUGE = """
from torch import nn


class Huge(nn.Module):
    def __init__(self, vocab_size=50_000, d=44_000):
        super().__init__()
        self.emb = nn.Embedding(vocab_size, d)  # 2.2B parameters: 8.8 GB in float32

    def forward(self, input_ids):
        return self.emb(input_ids)
"""


def test_info_counts_a_model_larger_than_memory_without_building_it(capsys, tmp_path):
    from utils.loading import load_model

    folder = export(tmp_path / "huge", HUGE, {"vocab_size": 50_000})
    loaded = load_model(folder, device="meta")
    assert all(p.is_meta for p in loaded.model.parameters())
    code, out, _ = run(capsys, "info", str(folder))
    assert code == 0 and "2,200,000,000 total" in out


def test_check_refuses_a_model_larger_than_memory_before_building_it(capsys, tmp_path):
    import resource

    import torch

    from utils.tiers.tier1.budget import free_memory

    free = free_memory(torch.device("cpu"))
    if free is None:
        pytest.skip("this system does not say how much memory is free")
    width = free // (4 * 50_000) + 1  # float32 weights alone exceed all the free memory
    folder = export(tmp_path / "huge", HUGE.replace("d=44_000", f"d={width}"), {"vocab_size": 50_000})
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    code, out, err = run(capsys, "check", str(folder), "--device", "cpu")
    grown_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    line = one_error(err)
    assert code == 2 and out == "" and "was not built" in line and "GB" in line
    assert "says nothing about the model" in line
    assert grown_kb < 512 * 1024, f"peak memory grew by {grown_kb} kB"


def test_info_builds_for_real_when_the_constructor_cannot_run_on_meta(capsys, tmp_path):
    source = TINY_LM.replace(
        "        self.head = nn.Linear(d, vocab_size)\n",
        "        self.head = nn.Linear(d, vocab_size)\n"
        "        self.scale = float(self.head.weight.detach().abs().max())\n",
    )
    code, out, err = run(capsys, "info", str(export(tmp_path / "m", source)))
    assert code == 0 and "Could not build on the meta device" in err
    assert "978 total" in out


# -- loading user code --------------------------------------------------------------------

USES_OWN_UTILS = """
from torch import nn
from utils import act
from utils.inner import width  # a package's submodule, when utils is a folder


class UsesHelpers(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(50, width())

    def forward(self, input_ids):
        return act(self.emb(input_ids))
"""


@pytest.mark.parametrize("layout", ["file", "package"])
def test_the_exports_own_utils_wins_and_the_toolkit_is_restored(tmp_path, layout):
    import utils as toolkit
    from utils.loading import load_model

    folder = export(
        tmp_path / layout,
        USES_OWN_UTILS.replace(
            "from utils.inner import width  # a package's submodule, when utils is a folder\n",
            "from utils.inner import width\n" if layout == "package" else "width = lambda: 8\n",
        ),
        {"vocab_size": 50},
    )
    helpers = "import torch\n\n\ndef act(x):\n    return torch.tanh(x)\n"
    if layout == "file":
        (folder / "utils.py").write_text(helpers)
    else:
        (folder / "utils").mkdir()
        (folder / "utils" / "__init__.py").write_text(helpers)
        (folder / "utils" / "inner.py").write_text("def width():\n    return 8\n")
    loaded = load_model(folder)
    assert type(loaded.model).__name__ == "UsesHelpers"
    assert sys.modules["utils"] is toolkit and hasattr(sys.modules["utils"], "run_tier1")
    assert "utils.inner" not in sys.modules
    assert not list(folder.rglob("__pycache__")), "importing wrote bytecode into the export"


def test_importing_from_the_toolkits_name_without_a_utils_file_says_where_to_put_it(capsys, tmp_path):
    code, _, err = run(capsys, "info", str(export(tmp_path / "m", USES_OWN_UTILS)))
    line = one_error(err)
    assert code == 2 and "model.py line 3 imports from 'utils'" in line
    assert "put it next to model.py" in line and "pip install" not in line


def test_sys_exit_at_import_is_an_error_of_the_file(capsys, tmp_path):
    folder = export(tmp_path / "m", "import sys\n\nsys.exit(3)\n")
    code, _, err = run(capsys, "info", str(folder))
    assert code == 2
    assert one_error(err) == (
        f"error: {folder / 'model.py'} line 3 called sys.exit(3) while being "
        "imported, so nothing could be loaded. Put script code under "
        '`if __name__ == "__main__":`.'
    )


def test_a_binary_model_py_is_named_as_binary(capsys, tmp_path):
    folder = export(tmp_path / "m", "")
    (folder / "model.py").write_bytes(b"PK\x03\x04\x00\x00binary")
    code, _, err = run(capsys, "info", str(folder))
    assert code == 2 and "syntax error" not in err
    assert one_error(err).startswith(
        f"error: {folder / 'model.py'} is not Python source: it holds binary data (a NUL byte at offset 4)"
    )


# -- the tokenizer command ----------------------------------------------------------------


def test_tokenizer_without_data_says_it_used_the_embedded_corpus(capsys):
    code, out, err = run(capsys, "tokenizer", "--vocab-size", "50")
    assert code == 0
    rows = [line for line in out.splitlines() if line.strip()]
    assert "the embedded corpus (no --data given)" in out and "your text" not in out
    assert any(r.startswith("note") and "lossy: 50 rows" in r for r in rows)
    assert "\n\n" not in err and "lossy" not in err  # the note once, in the table


def test_tokenizer_shortfall_is_said_once_with_advice_the_cli_can_follow(capsys, tmp_path):
    data = tmp_path / "small.txt"
    data.write_text("a small corpus of a few words\n\n" * 40)
    code, out, err = run(capsys, "tokenizer", "--vocab-size", "5000", "--data", str(data))
    assert code == 0
    assert out.count("reached") == 1 and "reached" not in err
    assert "--min-frequency 1" in out
    assert "\n\n" not in err.strip("\n")
    code, out, _ = run(capsys, "tokenizer", "--vocab-size", "5000", "--data", str(data), "--min-frequency", "1")
    assert code == 0 and "min_frequency=1" not in out

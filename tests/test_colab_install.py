"""The notebook's set-up cell installs the toolkit where it is missing (Colab), holding the
runtime's torch and numpy; tested here without Colab.

The toolkit's wheel is built from a copy of this tree, and a fresh virtual environment sees
this machine's packages (torch, numpy, ...) but not the toolkit: its site-packages lists
the interpreter's as a plain path, so the editable install's import hook never runs. The
set-up cell then runs, unchanged, in that environment with TOOLKIT_SOURCE pointing at the
wheel. pip runs offline (`--no-index`) and with `--no-deps`, because the Colab pins are
other versions than this machine has and no index is reachable; that the pins reach pip
is checked on the wheel's metadata instead (the `colab` extra equals requirements-colab.txt).
"""

from __future__ import annotations

import os
import re
import shutil
import site
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import jupytext
import pytest

ROOT = Path(__file__).resolve().parent.parent
HELD = ("torch", "numpy")


def _requirement_names(lines: list[str]) -> list[str]:
    names = []
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if line:
            names.append(re.split(r"[<>=!~;\[ @]", line, maxsplit=1)[0].lower().replace("_", "-"))
    return names


def _colab_requirements() -> list[str]:
    return [
        line.split("#", 1)[0].strip()
        for line in (ROOT / "requirements-colab.txt").read_text().splitlines()
        if line.split("#", 1)[0].strip()
    ]


def test_requirements_colab_names_neither_torch_nor_numpy():
    names = _requirement_names(_colab_requirements())
    assert names, "requirements-colab.txt lists nothing"
    assert not set(names) & set(HELD), f"requirements-colab.txt must not name {set(names) & set(HELD)}"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The toolkit's wheel, built from a copy so the tree gets no build/ or egg-info."""
    work = tmp_path_factory.mktemp("wheel")
    src = work / "src"
    shutil.copytree(ROOT / "utils", src / "utils", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "requirements-colab.txt"):
        shutil.copy(ROOT / name, src / name)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-index",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(work / "dist"),
            str(src),
        ],
        check=True,
    )
    (built,) = (work / "dist").glob("*.whl")
    return built


@pytest.fixture()
def runtime(tmp_path) -> Path:
    """A fresh virtual environment with this machine's packages but without the toolkit."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    ours = {sysconfig.get_paths()["purelib"], *site.getsitepackages()}
    Path(purelib, "_runtime.pth").write_text("".join(f"{p}\n" for p in sorted(ours)))
    return python


def _setup_cell(tmp_path: Path) -> Path:
    nb = jupytext.read(ROOT / "notebooks" / "template.py")
    cell = next(c for c in nb.cells if c.cell_type == "code" and c.source.startswith("#@title 1. Set-up"))
    path = tmp_path / "setup_cell.py"
    path.write_text(cell.source)
    return path


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TBUILDER_TOOLKIT_SOURCE")}
    env.update(PIP_NO_INDEX="1", PIP_NO_DEPS="1", PYTHONNOUSERSITE="1", **extra)
    return env


def _versions(python: Path, cwd: Path) -> str:
    code = "import torch, numpy; print(torch.__version__, numpy.__version__)"
    return subprocess.run(
        [str(python), "-c", code], check=True, capture_output=True, text=True, env=_env(), cwd=cwd
    ).stdout.strip()


def test_setup_cell_installs_the_wheel_and_keeps_torch_and_numpy(wheel, runtime, tmp_path):
    check = [str(runtime), "-c", "import utils"]
    visible = subprocess.run(check, env=_env(), capture_output=True, cwd=tmp_path).returncode == 0
    assert not visible, "the toolkit is importable before the install"
    before = _versions(runtime, tmp_path)
    done = subprocess.run(
        [str(runtime), str(_setup_cell(tmp_path))],
        capture_output=True,
        text=True,
        env=_env(TBUILDER_TOOLKIT_SOURCE=str(wheel)),
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "transformer-builder-toolkit[colab] @ file://" in done.stdout
    assert all(f"{name}==" in done.stdout for name in HELD), done.stdout  # held at their versions
    located = subprocess.run(
        [str(runtime), "-c", "import utils; print(utils.__file__)"],
        env=_env(),
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    ).stdout
    assert str(runtime.parent.parent) in located  # the venv's own copy, from the wheel
    assert _versions(runtime, tmp_path) == before


def test_setup_cell_without_a_source_says_what_to_put(runtime, tmp_path):
    done = subprocess.run(
        [str(runtime), str(_setup_cell(tmp_path))], capture_output=True, text=True, env=_env(), cwd=tmp_path
    )
    assert done.returncode == 1
    assert done.stderr.strip().count("\n") == 0, done.stderr  # one line, no traceback
    assert "set TOOLKIT_SOURCE to a git URL with a tag" in done.stderr


def test_wheel_carries_the_colab_pins(wheel):
    """The `colab` extra the set-up cell installs is requirements-colab.txt, pin for pin."""
    with zipfile.ZipFile(wheel) as archive:
        meta = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        lines = archive.read(meta).decode().splitlines()
    pinned = {
        line.split(":", 1)[1].split(";")[0].strip()
        for line in lines
        if line.startswith("Requires-Dist:") and 'extra == "colab"' in line
    }
    assert pinned == set(_colab_requirements())

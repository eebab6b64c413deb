"""Export a trained model as a folder anyone can load, and prove it loads back the same.

    result = export(adapted, "export/", tokenizer=tok)
    result.formats["safetensors"].max_abs_diff     # 0.0: the reloaded model is the same model

The folder holds `model.safetensors` (tied weights stored once), the model's own source file
as `model.py`, its `config.json`, the tokenizer, and a `load_model.py` plus README showing
how to load it. Parity is measured where a user would load it: in a fresh Python process,
through `load_model.py`. Optional formats (`torch.export`'s `.pt2`, ONNX through
onnxruntime) get the same check, and are skipped with the reason when a model cannot be
exported that way. The folder is built beside `directory` and renamed into place, so a
crash never leaves half an export.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from utils._io import atomic_write_text
from utils.adapters import AdaptedModel, adapt
from utils.errors import ToolkitError

log = logging.getLogger(__name__)

OPTIONAL_FORMATS = ("torch.export", "onnx")
_DYNAMIC = ({0: torch.export.Dim.AUTO, 1: torch.export.Dim.AUTO},)  # dims the code fixes stay fixed
_FILES = {"torch.export": ("model.pt2",), "onnx": ("model.onnx", "model.onnx.data")}
FP32_TOLERANCE = 1e-4  # optional formats: max |logit difference| allowed in float32
RELOAD_TOLERANCE = 0.0  # safetensors: the reloaded model must give identical logits
_PARITY_TIMEOUT_S = 300
_PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the folder holding `utils/`


class ExportError(ToolkitError, ValueError):
    """The model cannot be exported as asked; the message says why and what to do."""


@dataclass
class FormatParity:
    """One exported format and how closely it reproduces the model's logits."""

    format: str
    status: str  # "ok", "mismatch", "skipped"
    file: str | None = None
    max_abs_diff: float | None = None
    tolerance: float | None = None
    reason: str = ""
    input_shape: str = ""  # what the exported file accepts, e.g. "(batch, seq)"


@dataclass
class ExportResult:
    """What `export` wrote and how each format compared with the model."""

    directory: Path
    files: list[str]
    formats: dict[str, FormatParity] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when no written format disagrees with the model."""
        return all(f.status != "mismatch" for f in self.formats.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "directory": str(self.directory),
            "files": self.files,
            "formats": {k: asdict(v) for k, v in self.formats.items()},
        }


def export(
    model_or_adapted: Any,
    directory: str | os.PathLike,
    *,
    tokenizer: Any = None,
    config: Any = None,
    formats: Sequence[str] = OPTIONAL_FORMATS,
    parity: bool = True,
) -> ExportResult:
    """Write the model into `directory` (replacing what is there) and check it loads back.

    `model_or_adapted`: an nn.Module, an AdaptedModel, a LoadedModel or a
    UniversalModelAdapter. `config`: the config to write (a dict or ModelConfig; default:
    the loaded model's, else the config.json beside its source file). `formats`: optional
    formats to add ("torch.export", "onnx"). `parity=False` skips the checks.
    """
    unknown = [f for f in formats if f not in OPTIONAL_FORMATS]
    if unknown:
        raise ExportError(f"export(formats=...): unknown format(s) {unknown}; known: {', '.join(OPTIONAL_FORMATS)}")
    adapted, source_file, cfg = _resolve(model_or_adapted, config)
    target = Path(directory).expanduser().resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        _write_package(adapted, source_file, cfg, tokenizer, scratch)
        ids = _parity_ids(adapted)
        reference = _reference_logits(adapted, ids)
        results: dict[str, FormatParity] = {}
        for fmt in formats:
            results[fmt] = _export_optional(fmt, adapted, ids, scratch)
        if parity:
            results = _check_parity(reference, ids, scratch, results, _reload_tolerance(adapted))
        files = sorted(str(p.relative_to(scratch)) for p in scratch.rglob("*") if p.is_file())
        result = ExportResult(target, files + ["export.json"], results)
        atomic_write_text(scratch / "export.json", json.dumps(result.to_dict(), indent=2))
        _replace_dir(scratch, target)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return result


# -- what is being exported ----------------------------------------------------------------


def _resolve(obj: Any, config: Any) -> tuple[AdaptedModel, Path, dict[str, Any]]:
    """The adapted model, the file defining the user's class, and the config to write."""
    loaded_config = None
    if hasattr(obj, "adapted") and isinstance(obj.adapted, AdaptedModel):  # the Lightning module
        obj = obj.adapted
    if not isinstance(obj, nn.Module) and hasattr(obj, "model"):  # a LoadedModel
        loaded_config = getattr(obj, "config", None)
        obj = obj.model
    if not isinstance(obj, nn.Module):
        raise ExportError(f"export() needs an nn.Module, an AdaptedModel or a loaded model; got {type(obj).__name__}")
    adapted = obj if isinstance(obj, AdaptedModel) else adapt(obj, config or loaded_config)
    source_file = _source_file(adapted.model)
    cfg = _config_dict(config if config is not None else loaded_config, source_file, adapted)
    return adapted, source_file, cfg


def _source_file(model: nn.Module) -> Path:
    cls = type(model)
    try:
        path = inspect.getsourcefile(cls)
    except TypeError:
        path = None
    if not path or not Path(path).is_file():
        raise ExportError(
            f"{cls.__name__} has no source file (defined in a notebook cell or built at run "
            f"time): export() copies the class's file as model.py. Save the class in a .py "
            "file, load it with load_model(path), and export that."
        )
    return Path(path)


def _config_dict(config: Any, source_file: Path, adapted: AdaptedModel) -> dict[str, Any]:
    """The config to write: the one given, else config.json beside the source, else the
    sizes the adapter found. The class name is recorded so the loader picks this class."""
    if config is None and (source_file.parent / "config.json").is_file():
        config = json.loads((source_file.parent / "config.json").read_text(encoding="utf-8"))
    if config is None:
        p = adapted.profile
        config = {k: v for k, v in (("vocab_size", p.vocab_size), ("max_seq_len", p.max_seq_len)) if v is not None}
    data = dict(getattr(config, "raw", config))
    data.setdefault("model_name", type(adapted.model).__name__)
    return data


# -- writing the package ---------------------------------------------------------------------


def _write_package(adapted: AdaptedModel, source_file: Path, cfg: dict[str, Any], tokenizer: Any, folder: Path) -> None:
    from safetensors.torch import save_model

    save_model(adapted.model, str(folder / "model.safetensors"))  # shared tensors stored once
    shutil.copyfile(source_file, folder / "model.py")
    atomic_write_text(folder / "config.json", json.dumps(cfg, indent=2))
    if tokenizer is not None:
        from utils.tokenization._common import save_tokenizer

        save_tokenizer(getattr(tokenizer, "tokenizer", tokenizer), folder / "tokenizer")
    atomic_write_text(folder / "load_model.py", _LOADER)
    atomic_write_text(folder / "README.md", _readme(cfg, tokenizer is not None))


_LOADER = '''"""Load this exported model: `python load_model.py` prints its logits for a short input.

    from load_model import load, load_tokenizer
    model = load()                 # the trained nn.Module, in eval mode
    tokenizer = load_tokenizer()   # None when the export holds no tokenizer

Needs torch, safetensors and the Transformer Builder toolkit (`pip install
transformer-builder-toolkit`), whose `load_model` builds the class in model.py from
config.json exactly as it was built before export.
"""

from pathlib import Path

import torch
from safetensors.torch import load_model as load_weights

from utils import load_model

HERE = Path(__file__).resolve().parent


def load(device: str = "cpu") -> torch.nn.Module:
    """The model from model.py + config.json with the weights from model.safetensors."""
    model = load_model(HERE).model
    load_weights(model, str(HERE / "model.safetensors"), device=device)  # restores tied weights
    return model.to(device).eval()


def load_tokenizer():
    """The tokenizer saved with the model, or None when there is none."""
    if not (HERE / "tokenizer").is_dir():
        return None
    from utils.tokenization import load_user_tokenizer

    return load_user_tokenizer(HERE / "tokenizer")


if __name__ == "__main__":
    from utils import adapt

    model = load()
    adapted = adapt(model, load_model(HERE).config)
    with torch.no_grad():
        logits = adapted(torch.zeros(1, 4, dtype=torch.long))
    print(type(model).__name__, "logits", tuple(logits.shape))
'''


def _readme(cfg: dict[str, Any], has_tokenizer: bool) -> str:
    name = cfg.get("model_name", "model")
    tok = "- `tokenizer/`: the tokenizer it was trained with (`load_tokenizer()`)\n" if has_tokenizer else ""
    return f"""# {name}, exported

- `model.safetensors`: the trained weights (tied weights stored once)
- `model.py`, `config.json`: the model's code and configuration
{tok}- `load_model.py`: loads all of it; `export.json`: the files and their parity checks
- `model.pt2` (`torch.export`) and `model.onnx` (onnxruntime), when the model exports to them

```python
from load_model import load, load_tokenizer
model = load()            # nn.Module in eval mode; load("cuda") for a GPU
tokenizer = load_tokenizer()
```

Or with the toolkit directly:

```python
from safetensors.torch import load_model as load_weights
from utils import load_model
model = load_model("path/to/this/folder").model
load_weights(model, "path/to/this/folder/model.safetensors")
```

`torch.export.load("model.pt2").module()(input_ids)` and
`onnxruntime.InferenceSession("model.onnx").run(None, {{"input_ids": ids}})` return the
logits directly. `export.json` records the largest logit difference of each format
against the model at export time.
"""


def _replace_dir(new: Path, target: Path) -> None:
    """Rename `new` onto `target`; an old export is moved aside first and removed after."""
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
        os.replace(target, old / target.name)
    os.replace(new, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# -- optional formats ------------------------------------------------------------------------


def _parity_ids(adapted: AdaptedModel) -> torch.Tensor:
    """(2, T) token ids drawn from a fixed seed, T = 16 or the model's maximum if shorter."""
    p = adapted.profile
    T = min(16, p.max_seq_len or 16)
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, p.vocab_size or 2, (2, T), generator=g)


def _export_optional(fmt: str, adapted: AdaptedModel, ids: torch.Tensor, folder: Path) -> FormatParity:
    """Write one optional format, with dynamic batch and length where the model's code
    allows, else for the parity input's shape only (the reason is kept); a model that cannot
    be exported that way at all is a skip. Tracing runs on a copy: it may leave traced
    tensors in a module's caches."""
    if fmt == "onnx" and importlib.util.find_spec("onnxruntime") is None:
        return FormatParity(
            fmt, "skipped", reason="onnxruntime is not installed (pip install onnx onnxruntime onnxscript)"
        )
    notes = []
    for dynamic in (_DYNAMIC, None):
        try:
            with warnings.catch_warnings(), _eval(_cpu_copy(adapted)) as cpu:
                warnings.simplefilter("ignore")
                program = _write_format(fmt, cpu, ids, folder, dynamic)
            return FormatParity(
                fmt,
                "ok",
                _FILES[fmt][0],
                tolerance=FP32_TOLERANCE,
                input_shape=_input_shape(program),
                reason="; ".join(notes),
            )
        except Exception as exc:  # noqa: BLE001 - a model that does not export is a skip
            log.debug("%s export failed", fmt, exc_info=True)
            for name in _FILES[fmt]:
                (folder / name).unlink(missing_ok=True)
            notes.append(f"{'dynamic' if dynamic else 'static'} shapes: {type(exc).__name__}: {_first_line(exc)}")
    return FormatParity(fmt, "skipped", reason=f"{fmt} could not export this model (" + "; ".join(notes) + ")")


def _write_format(fmt: str, model: nn.Module, ids: torch.Tensor, folder: Path, dynamic: Any) -> Any:
    """Export `model` as `fmt` into `folder`; returns the torch.export program it traced."""
    if fmt == "torch.export":
        program = torch.export.export(model, (ids,), dynamic_shapes=dynamic)
        torch.export.save(program, str(folder / "model.pt2"))
        return program
    onnx_program = torch.onnx.export(
        model,
        (ids,),
        str(folder / "model.onnx"),
        input_names=["input_ids"],
        output_names=["logits"],
        dynamo=True,
        dynamic_shapes=dynamic,
        external_data=False,
        verbose=False,
    )
    return onnx_program.exported_program


def _input_shape(program: Any) -> str:
    """The input shape an exported program accepts: a name for each dimension left dynamic,
    the size for each the model's code fixed (e.g. '(batch, 16)')."""
    node = next(
        n
        for n in program.graph.nodes
        if n.op == "placeholder"
        and n.name not in program.graph_signature.inputs_to_parameters
        and n.name not in program.graph_signature.inputs_to_buffers
    )
    dims = [str(d) if isinstance(d, int) else name for d, name in zip(node.meta["val"].shape, ("batch", "seq"))]
    return f"({', '.join(dims)})"


def _cpu_copy(adapted: AdaptedModel) -> AdaptedModel:
    """A CPU float32 copy of the model: exported files load on any machine."""
    import copy

    return copy.deepcopy(adapted).to("cpu", torch.float32)


def _reference_logits(adapted: AdaptedModel, ids: torch.Tensor) -> torch.Tensor:
    """The model's own eval-mode logits for `ids`, on the CPU in float32."""
    device = next(adapted.parameters()).device
    with torch.no_grad(), _eval(adapted):
        return adapted(ids.to(device)).float().cpu()


class _eval:
    """Eval mode for the duration, each module's own mode restored after."""

    def __init__(self, model: nn.Module):
        self.modes = [(m, m.training) for m in model.modules()]
        self.model = model

    def __enter__(self) -> nn.Module:
        self.model.eval()
        return self.model

    def __exit__(self, *exc: Any) -> None:
        for m, mode in self.modes:
            m.training = mode


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else ""


# -- parity in a fresh process ----------------------------------------------------------------


def _reload_tolerance(adapted: AdaptedModel) -> float:
    """Identical logits for a CPU float32 model (the fresh process runs the same arithmetic);
    the float32 tolerance for one trained on a GPU or in another dtype."""
    exact = all(p.device.type == "cpu" and p.dtype == torch.float32 for p in adapted.parameters())
    return RELOAD_TOLERANCE if exact else FP32_TOLERANCE


def _check_parity(
    reference: torch.Tensor, ids: torch.Tensor, folder: Path, results: dict[str, FormatParity], reload_tolerance: float
) -> dict[str, FormatParity]:
    """Run the export in a fresh interpreter and compare its logits with the model's."""
    from safetensors.torch import load_file, save_file

    work = Path(tempfile.mkdtemp(prefix="tbuilder-parity-"))
    try:
        save_file({"input_ids": ids.contiguous()}, str(work / "ids.safetensors"))
        formats = [f for f, r in results.items() if r.status == "ok"]
        error = _run_child(folder, work, formats)
        outputs = load_file(str(work / "out.safetensors")) if error is None else {}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    checked = {
        "safetensors": _compare(
            "safetensors", "model.safetensors", outputs, reference, reload_tolerance, error, "(batch, seq)"
        )
    }
    for fmt, res in results.items():
        checked[fmt] = (
            _compare(fmt, res.file, outputs, reference, FP32_TOLERANCE, error, res.input_shape)
            if res.status == "ok"
            else res
        )
    return checked


def _run_child(folder: Path, work: Path, formats: list[str]) -> str | None:
    """Load the export in a new process; None on success, else what went wrong."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(_PACKAGE_ROOT), env.get("PYTHONPATH", "")])
    cmd = [
        sys.executable,
        "-c",
        _CHILD,
        str(folder),
        str(work),
        ",".join(formats),
        str(torch.get_num_threads()),
    ]  # the same threads: the same summation order
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=_PARITY_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return f"loading the export took over {_PARITY_TIMEOUT_S} s"
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        return lines[-1] if lines else f"the loader exited with status {proc.returncode}"
    return None


_CHILD = r"""
import importlib.util, sys, warnings
from pathlib import Path
import torch
from safetensors.torch import load_file, save_file
warnings.simplefilter("ignore")
folder, work, formats = Path(sys.argv[1]), Path(sys.argv[2]), [f for f in sys.argv[3].split(",") if f]
torch.set_num_threads(int(sys.argv[4]))
ids = load_file(str(work / "ids.safetensors"))["input_ids"]
spec = importlib.util.spec_from_file_location("_exported_loader", folder / "load_model.py")
loader = importlib.util.module_from_spec(spec)
spec.loader.exec_module(loader)
from utils import adapt, load_model
model = loader.load()
outputs = {}
with torch.no_grad():
    outputs["safetensors"] = adapt(model, load_model(folder).config).eval()(ids).float()
    if "torch.export" in formats:
        outputs["torch.export"] = torch.export.load(str(folder / "model.pt2")).module()(ids).float()
if "onnx" in formats:
    import onnxruntime as ort
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    outputs["onnx"] = torch.from_numpy(session.run(None, {"input_ids": ids.numpy()})[0]).float()
save_file({k: v.contiguous() for k, v in outputs.items()}, str(work / "out.safetensors"))
"""


def _compare(
    fmt: str,
    file: str | None,
    outputs: dict[str, torch.Tensor],
    reference: torch.Tensor,
    tolerance: float,
    error: str | None,
    shape: str = "",
) -> FormatParity:
    if error is not None:
        return FormatParity(
            fmt,
            "mismatch",
            file,
            tolerance=tolerance,
            reason=f"the exported folder did not load in a fresh process: {error}",
        )
    got = outputs[fmt]
    if got.shape != reference.shape:
        return FormatParity(
            fmt,
            "mismatch",
            file,
            tolerance=tolerance,
            reason=f"logits shape {tuple(got.shape)} != {tuple(reference.shape)}",
        )
    diff = float((got - reference).abs().max())
    status = "ok" if diff <= tolerance else "mismatch"
    reason = "" if status == "ok" else f"max |logit difference| {diff:.3g} > {tolerance:g}"
    return FormatParity(fmt, status, file, diff, tolerance, reason, shape)

# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Transformer Builder: check, understand and train your model
#
# Run the cells from top to bottom (Colab: *Runtime > Run all*). With the defaults the
# notebook works on the embedded example `gpt-mini` and text that ships with Python, so it
# runs offline; choose your own model and data in **2. Parameters**. A GPU makes training
# faster (Colab: *Runtime > Change runtime type*); without one the notebook says so and
# keeps its budgets small.
#
# | section | answers |
# |---|---|
# | 1. Set-up | installs the toolkit if this runtime lacks it (never torch or numpy); versions, device, GPU |
# | 2. Parameters | which model, which data, how long to train, where results go |
# | 3. Load and adapt | which class was built and how; how to call it, and where each fact came from |
# | 4. Tier 1 | is the model correct and trainable? |
# | 5. Tokenizer and data | which tokenizer fits the vocabulary, why, and does it fit the model? |
# | 6. Tier 2 | what does the untrained model do inside? |
# | 7. Tier 3 | does it learn, with which settings, against a same-size GPT-2, BERT or BART? what does it write? |
# | 8. Tier 2 again | what did training change inside (heads that specialised, rank)? |
# | 9. Export | a folder that loads without the toolkit, checked to give the same outputs, to download |

# %% [markdown]
# ## 1. Set-up
# In a clone, Jupyter or CI the toolkit is already importable and nothing is installed. In
# Colab (or any runtime without it) put where to install it from in `TOOLKIT_SOURCE`: a git
# URL with a tag (`git+https://github.com/OWNER/REPO@v0.1.0`), or a wheel's path or URL.
# It installs with the pins of `requirements-colab.txt` and holds torch and numpy at the
# runtime's own versions: changing them under a live runtime breaks it.

# %%
#@title 1. Set-up { display-mode: "form" }
TOOLKIT_SOURCE = ""  #@param {type:"string"}

import importlib  # noqa: E402
import importlib.metadata  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

TOOLKIT_SOURCE = TOOLKIT_SOURCE.strip() or os.environ.get("TBUILDER_TOOLKIT_SOURCE", "")
DISTRIBUTION = "transformer-builder-toolkit"
HELD = ("torch", "numpy")  # the runtime's own builds: never reinstalled, never upgraded


def toolkit_importable() -> bool:
    """The toolkit's `utils`, not some other package of that common name."""
    try:
        import utils
    except ImportError:
        return False
    return hasattr(utils, "run_tier1")


def pip_requirement(source: str) -> str:
    """The toolkit with its `colab` extra (the pins of requirements-colab.txt)."""
    if "://" not in source:  # a wheel or a clone on this machine
        path = Path(source).expanduser()
        if not path.exists():
            raise SystemExit(f"TOOLKIT_SOURCE={source!r}: no such file or folder; check the path")
        source = path.resolve().as_uri()
    return f"{DISTRIBUTION}[colab] @ {source}"


def install_toolkit(source: str) -> None:
    """pip install the toolkit under a constraints file holding this runtime's torch and numpy."""
    held = []
    for name in HELD:
        try:
            held.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            pass  # not installed: the toolkit's own requirement brings it
    constraints = Path(tempfile.mkdtemp()) / "constraints.txt"
    constraints.write_text("".join(f"{line}\n" for line in held))
    requirement = pip_requirement(source)
    print(f"installing {requirement}, holding {', '.join(held) or 'nothing'}")
    done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-c", str(constraints), requirement])
    if done.returncode != 0:
        raise SystemExit(f"pip could not install {requirement} (exit {done.returncode}); its messages are above")
    importlib.invalidate_caches()
    sys.modules.pop("utils", None)  # a different `utils` imported before must not shadow the toolkit


if not toolkit_importable():
    if not TOOLKIT_SOURCE:
        raise SystemExit(
            "The toolkit is not installed here: set TOOLKIT_SOURCE to a git URL with a tag "
            "(git+https://github.com/OWNER/REPO@v0.1.0) or a wheel's path or URL, then run this cell again"
        )
    install_toolkit(TOOLKIT_SOURCE)

import torch  # noqa: E402

import utils  # noqa: E402
from utils.notebook import in_colab  # noqa: E402

IN_COLAB = in_colab()
HAS_GPU = torch.cuda.is_available()
versions = {"python": platform.python_version(), "toolkit": utils.__version__}
versions.update({name: importlib.metadata.version(name) for name in (*HELD, "pytorch-lightning")})
print(", ".join(f"{k} {v}" for k, v in versions.items()), "| Colab" if IN_COLAB else "| not Colab")
if HAS_GPU:
    gpu = torch.cuda.get_device_properties(0)
    print(f"device cuda: {gpu.name}, {gpu.total_memory / 2**30:.1f} GiB")
else:
    print("device cpu: no GPU, so the budgets below stay small (Colab: Runtime > Change runtime type > GPU)")

# %% [markdown]
# ## 2. Parameters
# **Model**: `MODEL_KIND` says what `MODEL_SOURCE` is: an embedded `example` name
# (`gpt-mini`, `builder-export`, `bert-mini`), a `gist` id or URL, a `path` (an export
# folder with `model.py` + `config.json`, a `.py` file, or a `.zip` of an export), or
# `upload` (a dialog opens in the next cell: upload `model.py` + `config.json`, or one zip).
#
# **Data**: the `offline corpus` (Python's own docs, no download), a `file`
# (`.txt`/`.csv`/`.jsonl`/`.parquet`), an `upload`, or a Hugging Face `datasets` name.
# `TOKENIZER` is your own tokenizer (a `tokenizer.json`, a folder, a `.model`); empty picks
# one for the vocabulary. `VOCAB_SIZE` overrides the model's vocabulary size (0 keeps it).
#
# **Budget**: `TRAIN_STEPS`, `SEARCH_TRIALS` (0 skips the search), `COMPARE_TO_BASELINE`.
# `QUICK_MODE` shrinks everything to a smoke test of a minute or so.
#
# **Results** go to `OUTPUT_DIR`; with `SAVE_TO_DRIVE` under your Google Drive (it asks to
# mount it), so they outlive the runtime.

# %%
#@title 2. Parameters { display-mode: "form" }
MODEL_KIND = "example"  #@param ["example", "gist", "path", "upload"]
MODEL_SOURCE = "gpt-mini"  #@param {type:"string"}
MODEL_CLASS = ""  #@param {type:"string"}
DATA_KIND = "offline corpus"  #@param ["offline corpus", "file", "upload", "datasets"]
DATA_SOURCE = ""  #@param {type:"string"}
TEXT_COLUMN = "text"  #@param {type:"string"}
TOKENIZER = ""  #@param {type:"string"}
VOCAB_SIZE = 0  #@param {type:"integer"}
TRAIN_STEPS = 2000  #@param {type:"integer"}
SEQ_LEN = 256  #@param {type:"integer"}
BATCH_SIZE = 16  #@param {type:"integer"}
SEARCH_TRIALS = 0  #@param {type:"integer"}
COMPARE_TO_BASELINE = True  #@param {type:"boolean"}
OUTPUT_DIR = "tbuilder_results"  #@param {type:"string"}
SAVE_TO_DRIVE = False  #@param {type:"boolean"}
QUICK_MODE = False  #@param {type:"boolean"}

import os  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

from utils.notebook import DATA_KINDS, MODEL_KINDS, output_folder, require  # noqa: E402

require(globals(), HAS_GPU="1. Set-up")
for field, value, allowed in (("MODEL_KIND", MODEL_KIND, MODEL_KINDS), ("DATA_KIND", DATA_KIND, DATA_KINDS)):
    if value not in allowed:
        raise ValueError(f"{field}={value!r}: choose one of {', '.join(allowed)}")
for field, value in (("TRAIN_STEPS", TRAIN_STEPS), ("SEQ_LEN", SEQ_LEN), ("BATCH_SIZE", BATCH_SIZE)):
    if value < 1:
        raise ValueError(f"{field}={value}: must be at least 1")

QUICK_MODE = QUICK_MODE or os.environ.get("TBUILDER_NOTEBOOK_QUICK") == "1"
DEVICE = "cuda" if HAS_GPU else "cpu"
if QUICK_MODE:
    TRAIN_STEPS, SEQ_LEN, BATCH_SIZE, SEARCH_TRIALS = min(TRAIN_STEPS, 30), min(SEQ_LEN, 32), 8, min(SEARCH_TRIALS, 2)
    MAX_TEXTS, TIER1_SECONDS, TIER2_SECONDS, EVAL_BATCHES = 400, 15, 20, 2
    TIER2_ANALYSES, EXPORT_FORMATS = ["attention_patterns", "representation_health"], []
    print("QUICK_MODE: tiny budgets, a smoke test of the whole notebook; the numbers mean little")
elif not HAS_GPU:
    TRAIN_STEPS, SEQ_LEN, SEARCH_TRIALS = min(TRAIN_STEPS, 300), min(SEQ_LEN, 128), min(SEARCH_TRIALS, 4)
    MAX_TEXTS, TIER1_SECONDS, TIER2_SECONDS, EVAL_BATCHES = 5000, 60, 120, 10
    TIER2_ANALYSES, EXPORT_FORMATS = None, ["torch.export", "onnx"]
    print("no GPU: budgets capped for a CPU (at most 300 steps of 128 tokens, 4 search trials)")
else:
    MAX_TEXTS, TIER1_SECONDS, TIER2_SECONDS, EVAL_BATCHES = None, 60, 240, 20
    TIER2_ANALYSES, EXPORT_FORMATS = None, ["torch.export", "onnx"]
OUT = output_folder(OUTPUT_DIR, on_drive=SAVE_TO_DRIVE)
WORK = Path(tempfile.mkdtemp(prefix="tbuilder-"))  # uploads and unpacked zips
print(f"{TRAIN_STEPS} steps of {BATCH_SIZE} x {SEQ_LEN} tokens on {DEVICE}, {SEARCH_TRIALS} search trials, "
      f"baseline {'on' if COMPARE_TO_BASELINE else 'off'}; results in {OUT.resolve()}")

# %% [markdown]
# ## 3. Load and adapt
# `load_model` finds the model class and builds it the way its constructor asks; `adapt`
# probes it once and records how to call it (input and mask names, layout, where the logits
# are, task, sizes) and where each fact came from: the config, the model's own layers, or a
# probe of its behaviour.

# %%
from utils import adapt, load_model  # noqa: E402
from utils.notebook import require, resolve_model_source  # noqa: E402

require(globals(), MODEL_KIND="2. Parameters", WORK="2. Parameters")
model_source = resolve_model_source(MODEL_KIND, MODEL_SOURCE, WORK)
print("model from", model_source.origin)
loaded = load_model(model_source.value, class_name=MODEL_CLASS or None)
info = loaded.describe()
print(f"built {info['class']} ({info['construction']}), {info['parameters']['total']:,} parameters")
config_file = info["config"]["path"] or "the config"
for field, key in info["config"]["found_at"].items():
    print(f"  {field} = {info['config']['found'].get(field)!r} ({config_file}, key {key!r})")
if info["config"]["missing"]:
    print("  not in the config:", ", ".join(info["config"]["missing"]))

overrides = {"vocab_size": VOCAB_SIZE} if VOCAB_SIZE > 0 else {}
adapted = adapt(loaded.model, loaded.config, **overrides)
profile = adapted.profile
print(profile.summary())
for note in profile.notes:
    print("note:", note)

# %% [markdown]
# ## 4. Tier 1: is the model correct and trainable?
# Seventeen checks, each with a stable id; anything that is not a pass says what to do. A
# failed check stops nothing: the cells below still run, and say that their results mean
# less until it is fixed.

# %%
from IPython.display import display  # noqa: E402

from utils import run_tier1  # noqa: E402
from utils.notebook import require, tier1_caveat  # noqa: E402

require(globals(), adapted="3. Load and adapt", OUT="2. Parameters")
tier1 = run_tier1(adapted, device=DEVICE, time_budget=TIER1_SECONDS)
tier1.save(OUT / "tier1")
display(tier1)
print(f"Tier 1: {tier1.status}; report and figures in {OUT / 'tier1'}")
if caveat := tier1_caveat(globals()):
    print(caveat)

# %% [markdown]
# ## 5. Tokenizer and data
# The tokenizer is chosen for the model's vocabulary: yours when `TOKENIZER` is set, else a
# known pretrained one when the hub is reachable, else BPE trained on your text, else
# characters. The validator checks it against the model before any batch reaches it (an id
# past the embedding table is a device-side assert on a GPU).

# %%
from IPython.display import display  # noqa: E402

from utils.notebook import require, resolve_data_source, tier1_caveat  # noqa: E402
from utils.tokenization import AdaptiveTokenizer, AdaptiveTokenizerDataModule, TokenizerValidator  # noqa: E402
from utils.tokenization.sources import load_corpus  # noqa: E402

require(globals(), profile="3. Load and adapt", DATA_KIND="2. Parameters")
if caveat := tier1_caveat(globals()):
    print(caveat)
data_source = resolve_data_source(DATA_KIND, DATA_SOURCE, WORK)
texts = load_corpus(data_source.value, text_column=TEXT_COLUMN).train[:MAX_TEXTS]
print(f"data from {data_source.origin}: {len(texts):,} texts, {sum(map(len, texts)):,} characters")

choice = AdaptiveTokenizer.load_or_create(vocab_size=profile.vocab_size, texts=texts, tokenizer=TOKENIZER or None)
print(f"tokenizer: {choice.strategy} ({choice.reason})")
for attempt in choice.tried:
    print(f"  {attempt.strategy}{'' if attempt.source == '-' else ' ' + attempt.source}: {attempt.outcome}")
tokenizer = choice.tokenizer
display(TokenizerValidator.validate(tokenizer, expected_vocab_size=profile.vocab_size, texts=texts[:200]))

task = profile.task if profile.task in ("causal_lm", "masked_lm", "seq2seq") else "causal_lm"
seq_len = min(SEQ_LEN, (2 if task == "seq2seq" else 1) * (profile.max_seq_len or SEQ_LEN))
data = AdaptiveTokenizerDataModule(dataset=texts, tokenizer=tokenizer, batch_size=BATCH_SIZE,
                                   max_length=seq_len, val_split=0.05, task=task)
data.setup()
print(f"{len(data.train_dataloader())} training batches of {BATCH_SIZE} x {seq_len} tokens ({task})")

# %% [markdown]
# ## 6. Tier 2 on the untrained model
# What the model does inside before any training: each attention head's pattern, which
# input tokens its predictions rest on, how perturbations move them, the health of its
# representations layer by layer and the spectra of its weights. At initialisation this
# describes random weights; section 8 shows what training changed.

# %%
from IPython.display import display  # noqa: E402

from utils import run_tier2  # noqa: E402
from utils.notebook import require, tier1_caveat  # noqa: E402

require(globals(), adapted="3. Load and adapt", tokenizer="5. Tokenizer and data", texts="5. Tokenizer and data")
if caveat := tier1_caveat(globals()):
    print(caveat)
tier2_untrained = run_tier2(adapted, tokenizer=tokenizer, texts=texts[:200], device=DEVICE,
                            time_budget=TIER2_SECONDS, analyses=TIER2_ANALYSES)
tier2_untrained.save(OUT / "tier2_untrained")
display(tier2_untrained)

# %% [markdown]
# ## 7. Tier 3: training, search and the baseline
# A real Lightning run (AdamW, warmup then cosine decay, mixed precision on a GPU) with the
# loss plotted as it comes; with `SEARCH_TRIALS` an Optuna study (SQLite under the results
# folder, pruning bad trials) picks the settings first. With `COMPARE_TO_BASELINE` a GPT-2
# (BERT for a masked LM, BART for an encoder-decoder) of the same size trains the same way on the same data, so the
# loss has something to be judged against. Then samples from the trained model.

# %%
import math  # noqa: E402

from IPython.display import display  # noqa: E402

from utils import run_tier3  # noqa: E402
from utils.notebook import require, tier1_caveat  # noqa: E402

require(globals(), adapted="3. Load and adapt", tokenizer="5. Tokenizer and data", seq_len="5. Tokenizer and data")
if caveat := tier1_caveat(globals()):
    print(caveat)
TIER3_CHECKS = ["hyperparameter_search", "training", "generalization", "baseline_comparison", "generation"]
tier3 = run_tier3(adapted, data=texts, tokenizer=tokenizer, search_trials=SEARCH_TRIALS,
                  baseline=COMPARE_TO_BASELINE, out_dir=OUT / "tier3", checks=TIER3_CHECKS,
                  max_steps=TRAIN_STEPS, batch_size=BATCH_SIZE, seq_len=seq_len,
                  eval_every=max(5, TRAIN_STEPS // 10), eval_batches=EVAL_BATCHES)
display(tier3)
trained = tier3["training"].metrics
print(f"ln(V) = {math.log(profile.vocab_size):.2f}; {tier3['training'].summary}")
if tier3["baseline_comparison"].status != "skip":
    print(f"{'model':<40} {'parameters':>12} {'val loss':>9} {'perplexity':>11} {'tokens/s':>10}")
    for row in tier3["baseline_comparison"].metrics["rows"]:
        print(f"{row['model']:<40} {row['parameters']:>12,} {row['val_loss']:>9.3f} {row['perplexity']:>11.1f} "
              f"{row['tokens_per_second']:>10,.0f}")
if tier3["generation"].status != "skip":
    for prompt, text in tier3["generation"].metrics["greedy"].items():
        print(f"{prompt!r} -> {text!r}")

# %% [markdown]
# ## 8. Tier 2 on the trained model: what changed
# The same analyses on the trained weights, then the difference: heads that took on a
# pattern (previous token, induction, ...) and how each layer's effective rank moved.

# %%
from IPython.display import display  # noqa: E402

from utils import run_tier2  # noqa: E402
from utils.notebook import require, tier2_changes  # noqa: E402

require(globals(), tier3="7. Tier 3", tier2_untrained="6. Tier 2 on the untrained model")
tier2_trained = run_tier2(adapted, tokenizer=tokenizer, texts=texts[:200], device=DEVICE,
                          time_budget=TIER2_SECONDS, analyses=TIER2_ANALYSES)
tier2_trained.save(OUT / "tier2_trained")
display(tier2_trained)
print("\n".join(tier2_changes(tier2_untrained, tier2_trained)))

# %% [markdown]
# ## 9. Export
# The trained model as a folder that loads without this toolkit: weights as safetensors,
# the model's code, its config and the tokenizer. Loading it back in a fresh process must
# give the same logits (the parity check). In Colab the folder downloads as a zip; with
# `SAVE_TO_DRIVE` it is also on your Drive.

# %%
from utils import export  # noqa: E402
from utils.notebook import deliver, require  # noqa: E402

require(globals(), tier3="7. Tier 3", tokenizer="5. Tokenizer and data")
exported = export(adapted, OUT / "export", tokenizer=tokenizer, formats=EXPORT_FORMATS)
for name, parity in exported.formats.items():
    detail = parity.reason or f"max |difference| {parity.max_abs_diff:.2g} (tolerance {parity.tolerance:.2g})"
    print(f"{name}: {parity.status}, {detail}")
print("parity:", "every format reproduces the model" if exported.ok else "a format DISAGREES with the model")
archive = deliver(exported.directory)
print(f"exported to {exported.directory}; zipped as {archive}" + (" (on your Drive)" if SAVE_TO_DRIVE else ""))

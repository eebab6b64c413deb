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
# Run the cells from top to bottom. With the defaults the notebook checks the embedded
# example `gpt-mini`; point `MODEL_SOURCE` at your own export (a folder holding `model.py`
# and `config.json`, a `.py` file, or `gist:<id>`) to check yours.
#
# 1. **Set-up**: installs only what the runtime lacks, never torch or numpy.
# 2. **Load and adapt**: finds your model class, builds it, and learns how to call it.
# 3. **Tier 1**: is the model correct and trainable?
# 4. **Tokenizer and data**: a tokenizer that fits your vocabulary, checked against the model.
# 5. **A short training run**: does the loss fall, and what does the model write?

# %% [markdown]
# ## 1. Set-up
# In Colab this installs the packages the runtime lacks, holding torch and numpy at the
# runtime's own versions (changing them under a live runtime breaks it). Elsewhere it only
# checks that the toolkit imports.

# %%
import importlib.metadata
import subprocess
import sys
import tempfile
from pathlib import Path

IN_COLAB = "google.colab" in sys.modules
TOOLKIT_PIP_SPEC = ""  # in Colab: where to install the toolkit from, e.g. a git URL or a wheel

if IN_COLAB:
    held = "\n".join(f"{p}=={importlib.metadata.version(p)}" for p in ("torch", "numpy"))
    constraints = Path(tempfile.mkdtemp()) / "constraints.txt"
    constraints.write_text(held + "\n")
    requirements = Path("requirements-colab.txt")
    pip = [sys.executable, "-m", "pip", "install", "-q", "-c", str(constraints)]
    if requirements.exists():
        subprocess.run(pip + ["-r", str(requirements)], check=True)
    if TOOLKIT_PIP_SPEC:
        subprocess.run(pip + ["--no-deps", TOOLKIT_PIP_SPEC], check=True)

import torch  # noqa: E402

import utils  # noqa: E402

print(f"toolkit {utils.__version__}, torch {torch.__version__}, "
      f"device {'cuda' if torch.cuda.is_available() else 'cpu'}")

# %% [markdown]
# ## Parameters

# %%
MODEL_SOURCE = "example:gpt-mini"  # or "path/to/export", "path/to/model.py", "gist:<id>"
DATA = None  # a .txt/.csv/.jsonl/.parquet file; None uses the offline default corpus
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TRAIN_STEPS = 60
SEQ_LEN = 64
OUT_DIR = Path("tbuilder_reports")

# %% [markdown]
# ## 2. Load and adapt
# `load_model` says which class it built and how; `adapt` probes the model once and records
# how to call it (input and mask names, layout, where the logits are, task, sizes).

# %%
from utils import adapt, load_model  # noqa: E402

loaded = load_model(MODEL_SOURCE)
info = loaded.describe()
for key in ("class", "construction", "parameters", "vocab_size", "max_seq_len"):
    print(f"{key:>13}: {info.get(key)}")

adapted = adapt(loaded.model, loaded.config)
profile = adapted.profile
print(profile.summary())
for note in profile.notes:
    print("note:", note)

# %% [markdown]
# ## 3. Tier 1: is the model correct and trainable?
# Each check has a stable id; anything that is not a pass comes with what to do.

# %%
from utils import run_tier1  # noqa: E402

tier1 = run_tier1(adapted, device=DEVICE)
tier1.save(OUT_DIR / "tier1")
tier1

# %% [markdown]
# ## 4. Tokenizer and data
# The tokenizer is chosen for the model's vocabulary size: a known pretrained one when the
# hub is reachable, else BPE trained on your text, else characters. The validator checks it
# against the model before any batch reaches it (an id past the embedding table is a
# device-side assert on a GPU).

# %%
from utils.examples import default_corpus  # noqa: E402
from utils.tokenization import (  # noqa: E402
    AdaptiveTokenizer,
    AdaptiveTokenizerDataModule,
    TokenizerValidator,
)

if DATA is None:
    corpus = default_corpus()
    texts = [p for p in corpus.split("\n\n") if p.strip()]
else:
    texts = DATA
sample = texts if isinstance(texts, list) else None

choice = AdaptiveTokenizer.load_or_create(vocab_size=profile.vocab_size, texts=sample)
print(f"tokenizer: {choice.strategy} ({choice.reason})")
validation = TokenizerValidator.validate(choice.tokenizer, expected_vocab_size=profile.vocab_size,
                                         texts=sample[:200] if sample else None)
validation

# %%
task = profile.task if profile.task in ("causal_lm", "masked_lm") else "causal_lm"
seq_len = min(SEQ_LEN, profile.max_seq_len or SEQ_LEN)
data = AdaptiveTokenizerDataModule(dataset=texts, tokenizer=choice.tokenizer, batch_size=16,
                                   max_length=seq_len, val_split=0.05, task=task)
data.setup()
print(f"{len(data.train_dataloader())} training batches of 16 x {seq_len} tokens")

# %% [markdown]
# ## 5. A short training run
# A real Lightning Trainer with AdamW, warmup and cosine decay. The loss should fall from
# about ln(vocab size) at the start.

# %%
import math  # noqa: E402

import pytorch_lightning as pl  # noqa: E402

from utils.adapters import UniversalModelAdapter  # noqa: E402

module = UniversalModelAdapter(adapted, learning_rate=1e-3, warmup_steps=10,
                               max_steps=TRAIN_STEPS, task=task)
trainer = pl.Trainer(max_steps=TRAIN_STEPS, accelerator="auto", logger=False,
                     enable_checkpointing=False, limit_val_batches=4,
                     val_check_interval=min(TRAIN_STEPS, len(data.train_dataloader())),
                     enable_model_summary=False)
trainer.fit(module, datamodule=data)
metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
print(f"ln(V) = {math.log(profile.vocab_size):.2f}; after {TRAIN_STEPS} steps: "
      f"train loss {metrics.get('train_loss', float('nan')):.2f}, "
      f"validation loss {metrics.get('val_loss', float('nan')):.2f}")

# %%
if task == "causal_lm":
    prompt = torch.tensor([choice.tokenizer.encode("The ", add_special_tokens=False)])
    out = module.generate(prompt, max_new_tokens=40, temperature=0.8, top_k=50,
                          generator=torch.Generator().manual_seed(0))
    print(choice.tokenizer.decode(out[0], skip_special_tokens=True))

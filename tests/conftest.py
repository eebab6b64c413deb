"""Suite-wide settings: the tests never reach a hub, and never write to the user's cache."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

os.environ["HF_HUB_OFFLINE"] = "1"  # before any Hugging Face import
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MPLBACKEND", "Agg")
_CACHE = tempfile.mkdtemp(prefix="tbuilder-test-cache-")
os.environ["TBUILDER_CACHE_DIR"] = _CACHE
# Tier 1's 60 s budget assumes a machine to itself; the suite shares its cores with other
# work, and the tests about the budget pass time_budget themselves.
os.environ.setdefault("TBUILDER_TIME_BUDGET", "600")
atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)

"""Suite-wide settings: the tests never reach a hub, and never write to the user's cache."""

from __future__ import annotations

import os
import tempfile

os.environ["HF_HUB_OFFLINE"] = "1"  # before any Hugging Face import
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ["TBUILDER_CACHE_DIR"] = tempfile.mkdtemp(prefix="tbuilder-test-cache-")

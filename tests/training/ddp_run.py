"""One rank of the two-process DDP test (launched by test_ddp.py with RANK, LOCAL_RANK,
WORLD_SIZE and MASTER_* set, as torchrun would): trains, then saves its weights and history
to argv[1]."""

import json
import logging
import sys
from pathlib import Path

import torch

from tests.training.models import TinyLM, token_data
from utils.tokenization.data_module import SimpleDataModule
from utils.training import train


def main(out: Path, devices: int, batch_size: int) -> None:
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    torch.manual_seed(0)
    model = TinyLM()
    data = SimpleDataModule(token_data(n=64), val_split=0.25)
    result = train(
        model,
        data,
        max_steps=8,
        batch_size=batch_size,
        learning_rate=3e-3,
        eval_every=4,
        eval_batches=16 // batch_size,
        accelerator="cpu",
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        progress=False,
        logger="none",
        out_dir=out / "run",
    )
    rank = int(__import__("os").environ.get("RANK", 0))
    torch.save(model.state_dict(), out / f"weights{rank}.pt")
    (out / f"history{rank}.json").write_text(json.dumps(result.history))


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))

"""DDP with two CPU processes (gloo), launched the way torchrun launches them."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(out: Path, devices: int, batch_size: int) -> list[subprocess.Popen]:
    port = _free_port()
    procs = []
    for rank in range(devices):
        env = dict(
            os.environ,
            PYTHONPATH=str(ROOT),
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(port),
            WORLD_SIZE=str(devices),
            RANK=str(rank),
            LOCAL_RANK=str(rank),
            NODE_RANK="0",
            OMP_NUM_THREADS="1",
        )
        if devices == 1:
            for key in ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK"):
                env.pop(key)
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "tests.training.ddp_run", str(out), str(devices), str(batch_size)],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
        )
    return procs


def _wait(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        output, _ = p.communicate(timeout=240)
        assert p.returncode == 0, output.decode()[-3000:]


@pytest.mark.slow
def test_two_process_ddp_matches_one_process_with_the_same_global_batch(tmp_path):
    ddp, single = tmp_path / "ddp", tmp_path / "single"
    ddp.mkdir(), single.mkdir()
    _wait(_launch(ddp, devices=2, batch_size=4) + _launch(single, devices=1, batch_size=8))
    w0, w1 = (torch.load(ddp / f"weights{r}.pt", weights_only=True) for r in (0, 1))
    for name in w0:
        assert torch.equal(w0[name], w1[name]), name  # identical weights on both ranks
    ws = torch.load(single / "weights0.pt", weights_only=True)
    # the same rows per step: the weights agree up to float summation order (which Adam's
    # normalisation of near-zero gradients amplifies a little)
    for name in w0:
        torch.testing.assert_close(w0[name], ws[name], atol=2e-3, rtol=0)
    h_ddp = json.loads((ddp / "history0.json").read_text())
    h_one = json.loads((single / "history0.json").read_text())
    assert [r["step"] for r in h_ddp] == [r["step"] for r in h_one] == list(range(1, 9))
    # each rank evaluates the same 16 validation rows as the single process
    val_ddp = [r["val_loss"] for r in h_ddp if r["val_loss"] is not None]
    val_one = [r["val_loss"] for r in h_one if r["val_loss"] is not None]
    assert val_ddp == pytest.approx(val_one, abs=1e-3)
    # each rank's training loss is over its half of the step's rows: their mean is the
    # single process's loss over all of them
    h_rank1 = json.loads((ddp / "history1.json").read_text())
    for a, b, one in zip(h_ddp, h_rank1, h_one):
        assert (a["train_loss"] + b["train_loss"]) / 2 == pytest.approx(one["train_loss"], abs=1e-3)

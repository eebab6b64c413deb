"""Goal: `train()` runs at least 0.97x the tokens/s of a hand-written PyTorch loop on the
same model, batches, steps and recipe (AdamW, warmup + cosine, clipping at 1.0), and ends
within 0.02 nats of its validation loss.

Both sides run in one process, alternating (train, loop, train, loop), each from the same
initial weights; the best time of each side counts, so a noisy neighbour cannot favour one.
On a CUDA device it also measures MFU of a GPT-2-small-shaped model (12 layers, 768 wide,
1024 context) in bf16 for both sides (planning figure: nanoGPT reaches ~30% on an A100).

    PYTHONPATH=. python benchmarks/training_throughput.py [--steps 60] [--corpus FILE]
"""

from __future__ import annotations

import argparse
import copy
import logging
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks._bench import DEFAULT_CORPUS, load_text  # noqa: E402
from utils.adapters import adapt  # noqa: E402
from utils.adapters.lightning_module import decay_groups, resolve_warmup, warmup_cosine  # noqa: E402
from utils.adapters.losses import lm_loss  # noqa: E402
from utils.training import TrainConfig, train  # noqa: E402
from utils.training.data import StreamBatchSampler  # noqa: E402
from utils.training.flops import flops_per_token, peak_flops  # noqa: E402

RATIO_GOAL = 0.97
LOSS_GOAL = 0.02


def gpt2(n_layer: int, n_embd: int, n_head: int, vocab: int, ctx: int) -> torch.nn.Module:
    import transformers as tf

    torch.manual_seed(0)
    config = tf.GPT2Config(
        n_layer=n_layer,
        n_embd=n_embd,
        n_head=n_head,
        vocab_size=vocab,
        n_positions=ctx,
        bos_token_id=0,
        eos_token_id=0,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    return tf.GPT2LMHeadModel(config)


def hand_loop(
    model: torch.nn.Module, data, cfg: TrainConfig, device: torch.device, autocast: torch.dtype | None
) -> tuple[float, float]:
    """The loop a practitioner writes: same batches, AdamW groups, schedule and clipping.
    Returns (tokens per second, validation loss)."""
    model.to(device).train()
    task = model.profile.task
    train_set = data.train_dataloader().dataset
    sampler = StreamBatchSampler(len(train_set), cfg.batch_size, cfg.max_steps, cfg.seed)
    loader = torch.utils.data.DataLoader(
        train_set, batch_sampler=sampler, collate_fn=data.collator if hasattr(data, "collator") else None
    )
    opt = torch.optim.AdamW(decay_groups(model, cfg.weight_decay), lr=cfg.learning_rate, betas=cfg.betas)
    warmup = resolve_warmup(cfg.warmup_steps, cfg.max_steps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, warmup, cfg.max_steps, cfg.min_lr_ratio))
    tokens = 0
    start = time.perf_counter()
    for batch in loader:
        ids, labels = batch["input_ids"].to(device), batch["labels"].to(device)
        with torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
            loss, _ = lm_loss(model(ids, batch["attention_mask"].to(device)), labels, task)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sched.step()
        tokens += ids.numel()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return tokens / seconds, evaluate(model, data, cfg, device, autocast)


@torch.no_grad()
def evaluate(model, data, cfg: TrainConfig, device, autocast) -> float:
    model.eval()
    losses, weights = [], []
    for i, batch in enumerate(data.val_dataloader()):
        if i == cfg.eval_batches:
            break
        with torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
            logits = model(batch["input_ids"].to(device), batch["attention_mask"].to(device))
        loss, _ = lm_loss(logits, batch["labels"].to(device), model.profile.task)
        losses.append(float(loss))
        weights.append(len(batch["input_ids"]))
    model.train()
    return sum(x * w for x, w in zip(losses, weights)) / sum(weights)


def compare(
    name: str,
    base: torch.nn.Module,
    data,
    cfg: TrainConfig,
    device: torch.device,
    autocast: torch.dtype | None,
    repeats: int,
) -> dict:
    adapted = adapt(base)
    best_train, best_loop, train_loss, loop_loss = 0.0, 0.0, None, None
    for _ in range(repeats):
        ours = copy.deepcopy(adapted)
        with tempfile.TemporaryDirectory() as out:
            result = train(ours, data, config=cfg, out_dir=out)
        best_train, train_loss = max(best_train, result.tokens_per_second), result.val_loss
        theirs = copy.deepcopy(adapted)
        rate, loop_loss = hand_loop(theirs, data, cfg, device, autocast)
        best_loop = max(best_loop, rate)
    row = {
        "case": name,
        "train_tok_s": best_train,
        "loop_tok_s": best_loop,
        "ratio": best_train / best_loop,
        "train_val": train_loss,
        "loop_val": loop_loss,
        "loss_diff": abs(train_loss - loop_loss),
    }
    if device.type == "cuda":
        batch = next(iter(data.train_dataloader()))
        fpt = flops_per_token(adapt(base), batch, "causal_lm", device)
        peak = peak_flops(device)
        if peak:
            row["train_mfu"], row["loop_mfu"] = fpt * best_train / peak, fpt * best_loop / peak
    return row


def cpu_case(steps: int, corpus: Path, repeats: int) -> dict:
    from utils.tokenization import AdaptiveTokenizerDataModule, CharacterLevelTokenizer

    text, _ = load_text(corpus)
    vocab, ctx = 256, 128
    tok = CharacterLevelTokenizer(vocab_size=vocab)
    data = AdaptiveTokenizerDataModule(
        [text[:400_000]], tok, batch_size=16, max_length=ctx, val_split=0.05, cache=False
    )
    data.setup()
    cfg = TrainConfig(
        max_steps=steps,
        batch_size=16,
        seq_len=ctx,
        learning_rate=1e-3,
        eval_every=steps,
        eval_batches=8,
        progress=False,
        logger="none",
        accelerator="cpu",
    )
    return compare("cpu gpt2 4x128", gpt2(4, 128, 4, vocab, ctx), data, cfg, torch.device("cpu"), None, repeats)


def gpu_case(steps: int) -> dict:
    from utils.tokenization.data_module import SimpleDataModule

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 50257, (512, 1024), generator=g)
    data = SimpleDataModule(ids, batch_size=8, val_split=0.05)
    cfg = TrainConfig(
        max_steps=steps,
        batch_size=8,
        seq_len=1024,
        learning_rate=6e-4,
        eval_every=steps,
        eval_batches=4,
        precision="bf16-mixed",
        progress=False,
        logger="none",
        accelerator="gpu",
    )
    return compare(
        "gpu gpt2-small bf16",
        gpt2(12, 768, 12, 50257, 1024),
        data,
        cfg,
        torch.device("cuda"),
        torch.bfloat16,
        repeats=1,
    )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--gpu-steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--skip-cpu", action="store_true")
    args = parser.parse_args()
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    rows = [] if args.skip_cpu else [cpu_case(args.steps, args.corpus, args.repeats)]
    if torch.cuda.is_available():
        rows.append(gpu_case(args.gpu_steps))
    ok = True
    print(
        f"{'case':<22} {'train() tok/s':>13} {'loop tok/s':>11} {'ratio':>6} "
        f"{'val train()':>11} {'val loop':>9} {'diff':>6} {'MFU ours/loop':>14}"
    )
    for r in rows:
        mfu = f"{r['train_mfu']:.1%}/{r['loop_mfu']:.1%}" if "train_mfu" in r else "-"
        print(
            f"{r['case']:<22} {r['train_tok_s']:>13,.0f} {r['loop_tok_s']:>11,.0f} "
            f"{r['ratio']:>6.3f} {r['train_val']:>11.4f} {r['loop_val']:>9.4f} "
            f"{r['loss_diff']:>6.4f} {mfu:>14}"
        )
        ok &= r["ratio"] >= RATIO_GOAL and r["loss_diff"] <= LOSS_GOAL
    print(f"goal: ratio >= {RATIO_GOAL}, loss diff <= {LOSS_GOAL} nats: {'met' if ok else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""Tier 1 checks of where and how the model runs: device placement (traced on the meta
device, no GPU needed), memory for training, and inference speed."""

from __future__ import annotations

import copy
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from utils.checks import CheckResult, Verdict
from utils.tiers.probes import (
    DeviceTrace,
    OpCounter,
    SavedTensorBytes,
    meta_copy,
    plain_tensor_attributes,
)
from utils.tiers.tier1.context import LOSS_TASKS, Tier1Context, check, eval_mode

# inference_speed: length of the timed batch (capped so a long context stays quick on a CPU),
# warm-up calls, then timed calls until this many seconds or calls have passed.
SPEED_MAX_T = 256
SPEED_WARMUP = 2
SPEED_MIN_SECONDS = 0.25
SPEED_MAX_CALLS = 20
# Peak dense float32 FLOP/s (no tensor cores) of common GPUs, for the achieved fraction.
PEAK_FP32_FLOPS = {
    "H200": 67e12,
    "H100 PCIe": 51e12,
    "H100": 67e12,
    "A100": 19.5e12,
    "L40S": 91.6e12,
    "L4": 30.3e12,
    "A10": 31.2e12,
    "T4": 8.1e12,
    "V100": 15.7e12,
}


# -- device_portability ---------------------------------------------------------------------


@check("device_portability")
def device_portability(ctx: Tier1Context, v: Verdict) -> CheckResult:
    """Forward creates no tensors on a fixed device

    What it checks: forward, traced on the meta device, creates no tensor on a fixed device,
    and the model keeps no plain tensor attributes that .to() would leave behind.
    Why it matters: a tensor created on the CPU inside forward crashes (or silently copies)
    the moment the model runs on a GPU.
    Known false alarms: device moves that follow the input (x.to(idx.device)) are not
    flagged.
    Broken example: FixedDeviceLM, building torch.arange(T) without a device.
    How to fix: create tensors with device=idx.device, and keep constant tensors as buffers
    (self.register_buffer(...)).
    """
    attrs = plain_tensor_attributes(ctx.model)
    metrics: dict = {"plain_tensor_attributes": [f"{n} {tuple(t.shape)} on {t.device}" for n, t in attrs]}
    traced, shadows = meta_copy(ctx.adapted)
    trace = DeviceTrace(shadows, ctx.device)
    for name, t in plain_tensor_attributes(traced.model):
        trace.origins[t] = f"attribute `{name}` (a plain tensor, not a parameter or buffer)"
    ids = ctx.ids(offset=v.stream("tokens"))
    meta_ids = ids.to("meta")
    shadows[meta_ids] = ids
    error = None
    try:
        with torch.no_grad(), eval_mode(traced), trace:
            traced(meta_ids)
    except Exception as exc:  # noqa: BLE001 - an untraceable model is reported, not crashed
        error = f"{type(exc).__name__}: {str(exc)[:300]}"
    findings = list({(f["op"], f["where"]): f for f in trace.findings}.values())
    metrics.update(mixed_device_ops=findings, trace_error=error)
    if findings:
        f = findings[0]
        return v.fail(
            f"{len(findings)} operation(s) mix the model's device with a fixed one, e.g. "
            f"{f['op']} at {f['where']} uses a tensor on {f['host_devices']} made at "
            f"{f['host_tensor_made_at']}. On a GPU this fails with 'Expected all tensors to be "
            "on the same device'.",
            metrics,
            "Create tensors on the input's device: torch.arange(T, device=idx.device), "
            "torch.ones(T, T, device=x.device); keep constant tensors as buffers "
            "(self.register_buffer('mask', m)) so model.to(device) moves them.",
        )
    if attrs:
        names = ", ".join(f"`{n}`" for n, _ in attrs[:5])
        return v.warn(
            f"Tensors kept as plain attributes: {names}. model.to(device) does not move them "
            "and state_dict() does not save them.",
            metrics,
            "Register them: self.register_buffer('name', tensor) (or nn.Parameter if trained).",
        )
    if error:
        return v.skip(
            f"The forward could not be traced on the meta device: {error}",
            metrics,
            "Nothing is known to be wrong. To check by hand, run one "
            "forward on a GPU (model.to('cuda') and ids on 'cuda'): an error "
            "'Expected all tensors to be on the same device' names the line.",
        )
    return v.pass_(
        "Traced on the meta device: every tensor forward creates follows the "
        "input's device, and no module keeps tensors outside parameters/buffers.",
        metrics,
    )


# -- memory_footprint ------------------------------------------------------------------------


def _unique_params(model: nn.Module) -> list[nn.Parameter]:
    return list({p.untyped_storage().data_ptr(): p for p in model.parameters()}.values())


def _available_bytes(device: torch.device) -> tuple[int | None, str]:
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0]
        return int(free), f"free memory on {torch.cuda.get_device_name(device)}"
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024, "available RAM"
    return None, "unknown"


def _activation_bytes(ctx: Tier1Context, T: int, offset: int) -> int:
    """Bytes autograd keeps for one training forward of one sequence of T tokens (train
    mode, so dropout masks count), plus the logits."""
    has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in ctx.model.modules())
    model = copy.deepcopy(ctx.adapted) if has_bn else ctx.adapted  # BN stats must not move
    model.train()
    ids = ctx.ids(1, T, offset=offset)
    with (
        SavedTensorBytes(exclude=list(model.parameters())) as saved,
        torch.enable_grad(),
        ctx.clock.without_backward(),
    ):
        out = model(ids)
        if ctx.task in LOSS_TASKS:
            ctx.loss(out, ctx.labels_for(ids, offset))
    return saved.total + out.numel() * out.element_size()


def _measured_peak(ctx: Tier1Context, B: int, T: int, offset: int) -> int | str:
    """GPU only: the peak allocated during one AdamW step on a copy, or why it failed."""
    trainee = copy.deepcopy(ctx.adapted).train()
    opt = torch.optim.AdamW([p for p in trainee.parameters() if p.requires_grad])
    ids = ctx.ids(B, T, offset=offset)
    torch.cuda.synchronize(ctx.device)
    base = torch.cuda.memory_allocated(ctx.device)
    torch.cuda.reset_peak_memory_stats(ctx.device)
    try:
        out = trainee(ids)
        loss = ctx.loss(out, ctx.labels_for(ids, offset)) if ctx.task in LOSS_TASKS else out.mean()
        loss.backward()
        opt.step()
        torch.cuda.synchronize(ctx.device)
        own = sum(p.numel() * p.element_size() for p in _unique_params(trainee))
        return torch.cuda.max_memory_allocated(ctx.device) - base + own
    except torch.cuda.OutOfMemoryError as exc:
        return f"out of memory: {str(exc)[:200]}"
    finally:
        del trainee, opt
        torch.cuda.empty_cache()


def _gib(n: float) -> str:
    return f"{n / 2**30:.3g} GiB" if n >= 2**30 else f"{n / 2**20:.3g} MiB"


@check("memory_footprint")
def memory_footprint(ctx: Tier1Context, v: Verdict) -> CheckResult:
    """Training memory: parameters, gradients, AdamW, activations

    What it checks: parameter, gradient, AdamW state and activation bytes for the training
    shape, and the measured training peak, against the memory available.
    Why it matters: knowing the peak before training avoids an out-of-memory crash hours in,
    and says what batch size fits.
    Known false alarms: estimates are for float32 without activation checkpointing; mixed
    precision needs less.
    Broken example: CheckedGPT at batch_size 10**9, which cannot fit in memory.
    How to fix: train with a smaller batch or sequence length (the warning says how many
    sequences fit), mixed precision or gradient accumulation.
    """
    params = _unique_params(ctx.model)
    param_bytes = sum(p.numel() * p.element_size() for p in params)
    trainable = [p for p in params if p.requires_grad]
    grad_bytes = sum(p.numel() * p.element_size() for p in trainable)
    adam_bytes = 2 * sum(p.numel() for p in trainable) * 4  # exp_avg + exp_avg_sq in float32
    B, T = ctx.train_batch_size, ctx.train_seq_len
    per_seq = _activation_bytes(ctx, T, v.stream("activations"))
    peak = param_bytes + grad_bytes + adam_bytes + B * per_seq
    available, source = _available_bytes(ctx.device)
    metrics: dict = {
        "parameters": sum(p.numel() for p in params),
        "param_bytes": param_bytes,
        "grad_bytes": grad_bytes,
        "adamw_bytes": adam_bytes,
        "activation_bytes_per_sequence": per_seq,
        "batch_size": B,
        "seq_len": T,
        "activation_bytes": B * per_seq,
        "estimated_training_peak_bytes": peak,
        "available_bytes": available,
        "available_source": source,
    }
    if ctx.device.type == "cuda":
        metrics["measured_training_peak"] = _measured_peak(ctx, B, T, v.stream("training_step"))
    summary = (
        f"Training at B={B}, T={T} needs about {_gib(peak)}: parameters "
        f"{_gib(param_bytes)}, gradients {_gib(grad_bytes)}, AdamW {_gib(adam_bytes)}, "
        f"activations {_gib(B * per_seq)}"
    )
    measured = metrics.get("measured_training_peak")
    if isinstance(measured, int):
        summary += f"; measured peak {_gib(measured)}"
    if isinstance(measured, str) or (available is not None and peak > available):
        spare = (available or 0) - param_bytes - grad_bytes - adam_bytes
        fits = max(0, spare // max(per_seq, 1))
        return v.warn(
            summary + f", more than the {_gib(available or 0)} of {source}.",
            metrics,
            f"Use a batch of at most {fits} sequences of {T} tokens here (or gradient "
            "accumulation), shorter sequences, bf16 mixed precision, or a larger device."
            if fits
            else "The weights and optimizer state alone do not fit: use a smaller "
            "model, bf16 weights, or a larger device.",
        )
    tail = f" (of {_gib(available)} {source})." if available else "."
    return v.pass_(summary + tail, metrics)


# -- inference_speed --------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_FP32_FLOPS.items() if k in name), None)


def _op_count(ctx: Tier1Context, T: int, offset: int) -> tuple[int, int]:
    with torch.no_grad(), OpCounter() as counter:
        ctx.adapted(ctx.ids(1, T, offset=offset))
    return counter.ops, counter.syncs


@dataclass(frozen=True)
class InferenceSpeedThresholds:
    # A forward whose operation count grows with the length by at least one op per two extra
    # positions (and by at least 8 ops) runs a Python loop over positions. Correct models run
    # the same number of operations at every length.
    loop_min_ops: int = 8


def _count_flops(ctx: Tier1Context, ids: torch.Tensor) -> tuple[float | None, str | None]:
    """FLOPs of one eval forward, or None and why PyTorch's counter failed. The counter's
    module tracking can fail under no_grad on a model that feeds a parameter straight into a
    submodule, so a failure is retried with gradients enabled; a measuring tool that fails
    twice leaves the FLOPs unknown, which says nothing about the model."""
    error = None
    for grad in (False, True):
        try:
            with torch.set_grad_enabled(grad), eval_mode(ctx.adapted), FlopCounterMode(display=False) as flops:
                ctx.adapted(ids)
            return float(flops.get_total_flops()), None
        except Exception as exc:  # noqa: BLE001 - the counter's failure, reported as unknown
            error = f"{type(exc).__name__}: {str(exc)[:200]}"
    return None, error


@check("inference_speed", thresholds=InferenceSpeedThresholds())
def inference_speed(ctx: Tier1Context, v: Verdict) -> CheckResult:
    """Inference latency, throughput and FLOPs per token

    What it checks: latency, tokens per second and FLOPs per token of the forward, and
    whether the number of operations grows with the length (a Python loop over positions).
    Why it matters: a loop over positions makes training and generation orders of magnitude
    slower than they need to be.
    Known false alarms: timings on a shared CPU vary; only the operation count is judged. A
    loop inside an installed package's class (Mamba's and RWKV's CPU paths) is noted, not
    flagged; FLOPs PyTorch's counter cannot measure are unknown (a skip, with the reason).
    Broken example: PositionLoopLM, running its layers once per position.
    How to fix: process all positions at once with batched matmuls and masks instead of a
    Python loop.
    """
    B, T = ctx.batch_size, min(ctx.train_seq_len, SPEED_MAX_T)
    ids = ctx.ids(B, T, offset=v.stream("tokens"))
    times: list[float] = []
    with torch.no_grad(), eval_mode(ctx.adapted):
        for _ in range(SPEED_WARMUP):
            ctx.adapted(ids)
        _sync(ctx.device)
        while len(times) < SPEED_MAX_CALLS and sum(times) < SPEED_MIN_SECONDS:
            start = time.perf_counter()
            ctx.adapted(ids)
            _sync(ctx.device)
            times.append(time.perf_counter() - start)
        short, long_ = max(2, T // 2), T
        ops_short, syncs = _op_count(ctx, short, v.stream("op_count")) if T >= 4 else (0, 0)
        ops_long, _ = _op_count(ctx, long_, v.stream("op_count")) if T >= 4 else (0, 0)
    latency = statistics.median(times)
    total, flop_error = _count_flops(ctx, ids)
    per_token = None if total is None else total / (B * T)
    n_params = sum(p.numel() for p in _unique_params(ctx.model))
    metrics = {
        "batch": B,
        "seq_len": T,
        "latency_ms": latency * 1e3,
        "tokens_per_s": B * T / latency,
        "flops_per_token": per_token,
        "flops_per_token_over_2N": per_token / (2 * n_params) if n_params and per_token is not None else None,
        "flops_error": flop_error,
        "ops_per_forward": {str(short): ops_short, str(long_): ops_long},
        "host_syncs_per_forward": syncs,
        "device": str(ctx.device),
    }
    peak = _peak_flops(ctx.device)
    if peak and total is not None:
        metrics["fraction_of_peak_fp32"] = total / latency / peak
    summary = (
        f"{latency * 1e3:.3g} ms per forward of ({B}, {T}) on {ctx.device.type}: "
        f"{B * T / latency:,.0f} tokens/s, "
        + (
            f"{per_token / 1e6:.3g} MFLOPs/token"
            if per_token is not None
            else f"FLOPs unknown (PyTorch's FLOP counter failed on this model: {flop_error})"
        )
    )
    if "fraction_of_peak_fp32" in metrics:
        summary += f", {metrics['fraction_of_peak_fp32']:.1%} of fp32 peak"
    grew = ops_long - ops_short
    loops = T >= 4 and grew >= max(v.thresholds.loop_min_ops, (long_ - short) // 2)
    metrics["loops_over_positions"] = loops
    library = ctx.profile.library
    if loops and library:
        summary += (
            f". Forward runs {ops_short} operations at T={short} and {ops_long} at "
            f"T={long_}: the installed {library} implementation loops over positions on "
            f"{ctx.device.type} (a recurrent model's reference path); nothing to change "
            "in your code"
        )
    elif loops:
        return v.warn(
            summary + f". But forward runs {ops_short} operations at T={short} and {ops_long} at "
            f"T={long_}: a Python loop over positions.",
            metrics,
            "Process all positions at once: one batched matmul / attention call over the whole "
            "sequence instead of a `for t in range(T)` loop; the loop is slow on a GPU.",
        )
    if total is None:
        return v.skip(
            summary + ". Latency and throughput were measured; FLOPs per token were not.",
            metrics,
            "Nothing is known to be wrong with the model: the measuring tool failed. "
            "The latency above stands; estimate FLOPs as 2 x parameters per token.",
        )
    return v.pass_(summary + ".", metrics)

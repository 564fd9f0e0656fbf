"""The training loop shared by teachers and students: steps, checkpoints, resume.

    L = α·L1(S, T) + (1 − α)·L1(S, GT)      (α = 0 or no teacher: plain L1 to ground truth)

Batches are a pure function of (seed, iteration) (`batches`), so a run restarted from a
checkpoint sees exactly the batches it would have seen — no data-loader state to save. The
learning rate is a pure function of the iteration (`lr_at`: step halving, or cosine after an
optional linear warm-up), so the schedule needs no state either.
"""
from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.profiler import record_function

from srstudy.data import PatchDataset
from srstudy.measure.timing import device_sync, time_ms

from .batches import Batch, make_bank_batch, make_batch, to_device
from .device_batches import DeviceBatches
from .prefetch import BatchPrefetcher

log = logging.getLogger("srstudy.train")

CHECKPOINT_NAME = "checkpoint.pth"


def lr_at(iteration: int, base_lr: float, milestones: list[int], gamma: float, *, schedule: str = "step",
          warmup: int = 0, total: int | None = None) -> float:
    """Learning rate at a (0-based) iteration. `step` (the paper's): base × gamma^(milestones
    passed); `warmup` does not apply. `cosine`: the first `warmup` iterations ramp linearly,
    base·(i+1)/warmup (base at the last of them); then base·½(1 + cos(π·p)), p the fraction
    of the remaining `total − warmup` iterations done."""
    if schedule == "step":
        return base_lr * gamma ** sum(1 for m in milestones if iteration >= m)
    if schedule != "cosine":
        raise ValueError(f"unknown learning-rate schedule {schedule!r}: use step or cosine")
    if total is None:
        raise ValueError("the cosine schedule needs the run's total iterations")
    if iteration < warmup:
        return base_lr * (iteration + 1) / warmup
    done = min(1.0, (iteration - warmup) / max(1, total - warmup))
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * done))


def distillation_loss(sr: torch.Tensor, hr: torch.Tensor, teacher_sr: torch.Tensor | None, alpha: float) -> torch.Tensor:
    """α·L1(S, T) + (1 − α)·L1(S, GT); plain L1(S, GT) without a teacher."""
    gt = F.l1_loss(sr, hr)
    if teacher_sr is None or alpha == 0:
        return gt
    return alpha * F.l1_loss(sr, teacher_sr) + (1 - alpha) * gt


@dataclass
class LoopSpec:
    """What the loop needs to know; built from a `TrialConfig` (or a teacher's settings)."""

    iterations: int
    batch_size: int
    base_lr: float
    milestones: list[int]
    gamma: float = 0.5
    schedule: str = "step"  # or "cosine" (see lr_at)
    warmup_iterations: int = 0
    betas: tuple[float, float] = (0.9, 0.99)
    alpha: float = 0.0
    seed: int = 0
    precision: str = "fp32"
    checkpoint_interval: int = 250
    val_interval: int = 250
    log_interval: int = 10
    prefetch: int | None = None  # batches built ahead in a thread; None: 2 on CUDA, 0 on CPU
    batch_crops: str = "host"  # host: cut, stacked and copied by the host; device: cut on the device (device_batches)


@dataclass
class LoopState:
    iteration: int = 0
    extra: dict[str, Any] = field(default_factory=dict)  # run id, accumulated energy, …


def save_training_checkpoint(path: Path, model, optimizer, state: LoopState) -> None:
    """Model, optimiser, RNG states, iteration and `extra` (e.g. the MLflow run id), atomically."""
    obj = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "iteration": state.iteration,
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "extra": state.extra,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def load_training_checkpoint(path: Path, model, optimizer, device: torch.device) -> LoopState:
    """Restore what `save_training_checkpoint` wrote (weights_only=True)."""
    obj = torch.load(path, map_location=device, weights_only=True)
    model.load_state_dict(obj["model"])
    optimizer.load_state_dict(obj["optimizer"])
    torch.set_rng_state(obj["torch_rng"].cpu())
    if obj["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in obj["cuda_rng"]])
    return LoopState(iteration=int(obj["iteration"]), extra=dict(obj["extra"]))


def autocast(device: torch.device, precision: str):
    """The training step's numerics: ``fp32`` plain float32 (a no-op context); ``tf32`` float32
    tensors with TensorFloat-32 tensor-core matmuls on CUDA (10-bit mantissa products, fp32
    accumulate: the matmuls that run as fp32 SIMT kernels otherwise); ``bf16`` autocast.

    Why a context and not a global switch: validation, benchmarks and latency run outside it
    in exact fp32, whatever the trial trained in. On a CPU ``tf32`` is plain fp32.
    """
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    if precision == "tf32" and device.type == "cuda":
        return _tf32_matmuls()
    return contextlib.nullcontext()


@contextlib.contextmanager
def _tf32_matmuls():
    """TF32 matmuls inside the block; the process's setting is restored after it."""
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


#: PHASES of an iteration, each a `record_function` range "loop/<name>" inside "loop/iteration"
PHASES = ("energy_hooks", "batch_wait", "h2d", "forward", "backward", "optimizer", "log", "validate", "checkpoint")
PhaseListener = Callable[[str, int, float, float], None]
_phase_listener: PhaseListener | None = None


@contextlib.contextmanager
def phase_listener(listener: PhaseListener) -> Iterator[None]:
    """During the block, `train` reports each phase it ran (`PHASES` and "iteration") as
    `listener(name, iteration, t_start, t_end)` (host `time.perf_counter()` seconds), in the
    training thread. For profiling the loop (benchmarks/profile_trial_loop.py); without a
    listener the phases are only `record_function` ranges, which cost nothing measurable
    unless a profiler runs."""
    global _phase_listener
    if _phase_listener is not None:
        raise RuntimeError("a loop phase listener is already set; one profiler at a time")
    _phase_listener = listener
    try:
        yield
    finally:
        _phase_listener = None


@contextlib.contextmanager
def _phase(name: str, iteration: int) -> Iterator[None]:
    """One coarse phase of an iteration: the profiler range "loop/<name>", and its host times
    to the phase listener when one is set."""
    listener = _phase_listener
    t0 = time.perf_counter() if listener is not None else 0.0
    with record_function(f"loop/{name}"):
        yield
    if listener is not None:
        listener(name, iteration, t0, time.perf_counter())


def train(
    model: torch.nn.Module,
    dataset: PatchDataset,
    spec: LoopSpec,
    *,
    device: torch.device,
    teacher: torch.nn.Module | None = None,
    checkpoint_path: Path | None = None,
    state: LoopState | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    on_log: Callable[[int, dict[str, float]], None] | None = None,
    on_validate: Callable[[int], None] | None = None,
    on_checkpoint: Callable[[int], None] | None = None,
    progress: Callable[[int], None] | None = None,
    bank=None,
    gpu_session=None,
) -> LoopState:
    """Train `model` from `state.iteration` to `spec.iterations`; returns the final state.

    `bank` (a `teacher_bank.TeacherBank`): batches come from its fixed patches with their
    precomputed teacher outputs (`Batch.teacher_sr`), and no teacher runs in the loop.

    `on_log(it, {"train_loss": …, "lr": …})` every `log_interval` iterations,
    `on_validate(it)` every `val_interval` and at the end, `on_checkpoint(it)` after each
    checkpoint is written (every `checkpoint_interval` and at the end).

    `gpu_session` (a `srstudy.measure.trial_session.TrialEnergySession`, on a GPU): its
    exclusive energy window runs inside this loop; it pauses before validation and checkpoints,
    and between windows the loop steps aside for other trials' windows.

    Each iteration is a profiler range "loop/iteration" holding coarse ranges per phase
    (`PHASES`; `phase_listener` receives their host times).
    """
    state = state or LoopState()
    model.to(device).train()
    if teacher is not None:
        teacher.to(device).eval().requires_grad_(False)
    if optimizer is None:
        optimizer = torch.optim.Adam(model.parameters(), lr=spec.base_lr, betas=spec.betas)
    losses: list[float] = []
    it = state.iteration
    with contextlib.ExitStack() as stack:
        batch_of = _batch_source(dataset, spec, device, start=it, stack=stack, bank=bank)
        while it < spec.iterations:
            step = it
            with _phase("iteration", step):
                if gpu_session is not None:
                    with _phase("energy_hooks", step):
                        gpu_session.before_iteration(it)  # opens the exclusive window when due
                lr_now = lr_at(it, spec.base_lr, spec.milestones, spec.gamma, schedule=spec.schedule,
                               warmup=spec.warmup_iterations, total=spec.iterations)
                for group in optimizer.param_groups:
                    group["lr"] = lr_now
                with _phase("batch_wait", step):
                    batch = batch_of(it)
                with _phase("h2d", step):
                    lr_img, hr_img = to_device(batch.lr, device), to_device(batch.hr, device)
                    teacher_sr = None
                    if batch.teacher_sr is not None and spec.alpha > 0:  # precomputed by the teacher bank
                        teacher_sr = batch.teacher_sr.to(device, non_blocking=True)
                with _phase("forward", step), autocast(device, spec.precision):
                    if teacher_sr is None and teacher is not None and spec.alpha > 0:
                        with torch.no_grad():
                            teacher_sr = teacher(lr_img)
                    sr = model(lr_img)
                    loss = distillation_loss(sr.float(), hr_img, None if teacher_sr is None else teacher_sr.float(),
                                             spec.alpha)
                with _phase("backward", step):
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                with _phase("optimizer", step):
                    optimizer.step()
                it += 1
                state.iteration = it
                losses.append(loss.detach())
                if gpu_session is not None:
                    with _phase("energy_hooks", step):
                        gpu_session.after_iteration(it - 1, boundary=it % spec.val_interval == 0
                                                    or it % spec.checkpoint_interval == 0)
                if progress is not None:
                    progress(it)
                if on_log is not None and (it % spec.log_interval == 0 or it == spec.iterations):
                    with _phase("log", step):
                        mean = torch.stack(losses).mean().item()
                        if not np.isfinite(mean):
                            raise FloatingPointError(f"training loss became {mean} at iteration {it}; lower optim.lr")
                        on_log(it, {"train_loss": mean, "lr": lr_now})
                        losses.clear()
                if on_validate is not None and (it % spec.val_interval == 0 or it == spec.iterations):
                    with _phase("validate", step):
                        model.eval()
                        on_validate(it)
                        model.train()
                if checkpoint_path is not None and (it % spec.checkpoint_interval == 0 or it == spec.iterations):
                    with _phase("checkpoint", step):
                        save_training_checkpoint(checkpoint_path, model, optimizer, state)
                        if on_checkpoint is not None:
                            on_checkpoint(it)
    model.eval()
    return state


def _batch_source(dataset: PatchDataset, spec: LoopSpec, device: torch.device, *, start: int,
                  stack: contextlib.ExitStack, bank=None) -> Callable[[int], Batch]:
    """iteration -> its batch (with `teacher_sr` from a bank). `spec.batch_crops == "device"`: the
    host draws the crops (in the prefetch thread when there is one) and the device cuts them
    (`device_batches`). Else built by a prefetch thread
    (`spec.prefetch` ahead; default 2 on CUDA, none on CPU, where the thread would compete
    with the training threads) or in line."""
    depth = spec.prefetch if spec.prefetch is not None else (2 if device.type == "cuda" else 0)
    if spec.batch_crops == "device":  # the host only draws the crops (ahead, in the thread); the device cuts them
        cutter = DeviceBatches(dataset, device)
        targets = None if bank is None else bank.targets
        draw = lambda i: cutter.crops(spec.batch_size, i, spec.seed, bank_targets=targets)  # noqa: E731
        if not depth:
            return lambda i: cutter.gather(draw(i))
        ahead = BatchPrefetcher(draw, start=start, stop=spec.iterations, depth=depth, pin=device.type == "cuda")
        crops_of = stack.enter_context(ahead).next
        return lambda i: cutter.gather(crops_of(i))
    if bank is not None:
        build = lambda i: make_bank_batch(dataset, bank.targets, spec.batch_size, i, spec.seed)  # noqa: E731
    else:
        build = lambda i: make_batch(dataset, spec.batch_size, i, spec.seed)  # noqa: E731
    if not depth:
        return build
    ahead = BatchPrefetcher(build, start=start, stop=spec.iterations, depth=depth, pin=device.type == "cuda")
    return stack.enter_context(ahead).next


def measure_latency(
    model: torch.nn.Module, *, device: torch.device, height: int, width: int, repeats: int, warmup: int,
    alone: Callable[[], contextlib.AbstractContextManager] | None = None,
) -> tuple[dict[str, float], dict[str, str]]:
    """Median and p90 ms of `repeats` batch-1 forwards on a random LR image, after warm-up, and
    how they ran (tags: `latency_method`, and why a CUDA graph could not be used).

    On CUDA the forward is replayed from a CUDA graph (`srstudy.models.cuda_graph`): a batch-1
    forward of these networks is bound by the host launching kernels (on an H200, 8.6 ms eager
    against 0.71 ms replayed for DVMSR at LR 64², `benchmarks/results/dvmsr_inference_graphs_h200.json`),
    which says more about the Python host than about the network; a deployed engine (TensorRT,
    a graph) does not pay it. A capture that fails falls back to eager forwards, and the tags
    say so. On a CPU: eager forwards.

    `alone()`: a context giving this process the GPU to itself (a study trial's energy session,
    `TrialEnergySession.alone`); only the timed forwards run inside it (the graph is captured
    before), and the tag `latency_gpu` says how long it waited. Without it, other processes'
    kernels on the GPU stretch the figure: in a study at 0.25 GPU per trial on an H200, students
    of 100k-150k params timed so at 0.17 to 7.2 ms (session 8, `gpu_study_inherit_h200.json`)."""
    from srstudy.models.cuda_graph import capture_forward

    model.eval()
    x = torch.rand(1, 3, height, width, device=device)
    forward, tags = (lambda: model(x)), {"latency_method": "eager"}
    if device.type == "cuda":
        try:
            replay = capture_forward(model, x, warmup=max(warmup, 1))
            forward, tags = (lambda: replay(x)), {"latency_method": "cuda_graph"}
        except Exception as e:  # noqa: BLE001 — eager latency, tagged with the reason (never silent)
            tags["latency_cuda_graph_unavailable_reason"] = f"{type(e).__name__}: {e}"[:250]
            log.warning("latency: CUDA graph capture failed (%s); timing eager forwards", e)
    with torch.no_grad(), (alone() if alone is not None else contextlib.nullcontext()) as grant:
        times = time_ms(forward, repeats=repeats, warmup=warmup, sync=device_sync(device))
    if grant is not None:
        tags["latency_gpu"] = f"alone: the GPU's lock held exclusively (waited {grant.wait_s:.2f} s)"
    return {"latency_ms": float(np.median(times)), "latency_p90_ms": float(np.percentile(times, 90))}, tags

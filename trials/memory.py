"""Pre-flight memory check: a student's or teacher's training must fit the device's free memory.

A config sized for a GPU (MambaLiteSR's recipe: batch 128, LR 64² patches) run on a CPU
does not fail fast: it swaps for minutes and is then killed by the kernel (the recipe's
teacher reached 23.5 GB resident). So before any training, the memory of one training
step is estimated from the config and compared with the device's free memory; a step that
does not fit is refused with the estimate and the settings that lower it.

The estimate (an estimate: analytic, not a measurement of the run) for a DVMSR network at
batch B, LR patch P×P, scale s — T = B·P² tokens, M = n_groups·blocks_per_group mixers,
C = embed_dim, Di = expand·C, N = d_state, 4 bytes a float (bf16 is counted as fp32: an
upper bound):

    saved = 4 · ( T · (M · (k_state·Di·N + k_mix·Di + k_n·N) + K_BODY·C) + K_HR · 3·B·(s·P)² )
    step  = PEAK_FACTOR · saved  +  16 · params   (weights, gradients, Adam's two moments)
    + for a student distilling from a live teacher: the teacher's weights and the peak of
      its no-grad forward, K_INFER · 4 · T · Di (+ 8·T·Di·N for the chunked scan on CUDA,
      which builds its a and b tensors whole)

`saved` is what autograd keeps for the backward pass. Its coefficients are a least-squares
fit to the saved tensors of real forwards (`torch.autograd.graph.saved_tensors_hooks`,
unique storages; 72 configs, C ∈ {8, 16, 24}, M ≤ 4, N ∈ {4, 16}, B ≤ 2, P ∈ {16, 24, 32},
all within 3 %; the benchmark below checks larger ones, within 1.5 %): with the pure-PyTorch
chunked scan each mixer keeps ≈ 4.14 Di·N floats a token — both sweeps keep each step's
decay exp(Δ·A) and state h, plus the chunks' carries — and 13.5 Di + 4.1 N more
(projections, conv, SiLU, Δ, the scan's packed inputs, gate).
The fused scans (`cuda` = mamba_ssm, `triton`) keep no per-step state, only the state
entering each chunk (Di·N per 128 tokens) and their inputs: 9.5 Di + 2.1 N a token
(measured with a stand-in that saves exactly what the Triton kernel saves, plus mamba_ssm's
saved output; not measured on a GPU). `PEAK_FACTOR` (backward's gradients and temporaries
on top of the saved tensors) and `K_INFER` were calibrated on this project's 2-core CPU
against the growth of peak resident memory (VmHWM, reset first) over one full training
step (or one no-grad forward) in a fresh process: benchmarks/bench_activation_memory.py,
results in benchmarks/results/activation_memory_cpu.json. Peak/saved was 1.69–1.98 for steps of
90 MB to 2.4 GB (2.14 for a 43 MB one, where fixed costs weigh more), so PEAK_FACTOR = 2.0:
the whole estimate came to 0.95–1.19 × the measured peak growth. A no-grad forward peaked
at 21–33 floats a token per Di; with K_INFER = 32 its estimate came to 0.84–1.46 × measured.
The fused stand-in's saved bytes were 0.86–0.91 × the `fused` estimate.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from srstudy.config import ArchConfig, TrialConfig

log = logging.getLogger("srstudy.memory")

FLOAT_BYTES = 4
#: floats a token per mixer, per scan family: (k_state · Di·N, k_mix · Di, k_n · N)
MIXER_FLOATS = {"chunked": (4.14, 13.5, 4.1), "fused": (0.01, 9.5, 2.1)}
FUSED_BACKENDS = frozenset({"cuda", "triton"})
K_BODY = 4.4  # floats a token outside the mixers, times C (conv_first, embeddings, body conv, tail)
K_HR = 0.5  # floats per HR pixel and channel (upsampled output, pixel shuffle)
PEAK_FACTOR = 2.0  # peak of a training step / saved tensors, measured on CPU (module docstring)
K_INFER = 32.0  # floats a token times Di alive at the peak of a no-grad forward (measured on CPU)
OPTIMIZER_BYTES_PER_PARAM = 16  # fp32 weight + gradient + Adam's exp_avg and exp_avg_sq


class InsufficientMemoryError(RuntimeError):
    """A training step's estimated memory exceeds the device's free memory."""


@dataclass(frozen=True)
class MemoryEstimate:
    """Estimated memory of one training step (bytes); see the module docstring."""

    what: str  # "the student's training", "the teacher's training"
    saved_bytes: int  # activations autograd keeps for the backward pass
    step_bytes: int  # peak of one step's activations: PEAK_FACTOR × saved
    state_bytes: int  # weights, gradients, optimiser moments
    teacher_bytes: int = 0  # a live teacher: weights + its no-grad forward's peak
    knobs: tuple[str, ...] = ()  # the settings that lower it, with their values

    @property
    def total_bytes(self) -> int:
        return self.step_bytes + self.state_bytes + self.teacher_bytes


def _mixer_floats(backend: str) -> tuple[float, float, float]:
    return MIXER_FLOATS["fused" if backend in FUSED_BACKENDS else "chunked"]


def saved_activation_bytes(arch: ArchConfig, *, batch_size: int, patch_size: int, scale: int, backend: str) -> int:
    """Bytes autograd saves in one training forward of `arch` (the `saved` formula)."""
    k_state, k_mix, k_n = _mixer_floats(backend)
    C, Di, N = arch.embed_dim, arch.expand * arch.embed_dim, arch.d_state
    tokens = batch_size * patch_size**2
    mixers = arch.n_groups * arch.blocks_per_group
    per_token = mixers * (k_state * Di * N + k_mix * Di + k_n * N) + K_BODY * C
    hr = 3 * batch_size * (scale * patch_size) ** 2
    return int(FLOAT_BYTES * (tokens * per_token + K_HR * hr))


def inference_bytes(arch: ArchConfig, *, batch_size: int, patch_size: int, scale: int, backend: str,
                     device_type: str) -> int:
    """Weights and the peak of one no-grad forward (a live teacher during distillation)."""
    tokens, Di = batch_size * patch_size**2, arch.expand * arch.embed_dim
    floats = K_INFER * tokens * Di + 3 * batch_size * (scale * patch_size) ** 2
    if backend not in FUSED_BACKENDS and device_type == "cuda":  # chunked, loop mode: a and b whole
        floats += 2 * tokens * Di * arch.d_state
    return int(FLOAT_BYTES * (floats + arch.param_count(scale)))


def training_estimate(arch: ArchConfig, *, batch_size: int, patch_size: int, scale: int, backend: str,
                      what: str = "training", knobs: tuple[str, ...] = ()) -> MemoryEstimate:
    """The memory of one training step of `arch` (no teacher); see the module docstring.

    The same on CPU and CUDA: the chunked scan keeps its decays and states either way (on
    CUDA it builds them whole, on CPU step by step, twice)."""
    saved = saved_activation_bytes(arch, batch_size=batch_size, patch_size=patch_size, scale=scale, backend=backend)
    return MemoryEstimate(what, saved, int(PEAK_FACTOR * saved),
                          OPTIMIZER_BYTES_PER_PARAM * arch.param_count(scale), knobs=knobs)


def measured_saved_bytes(model: torch.nn.Module, x: torch.Tensor) -> int:
    """Bytes autograd really keeps for one training forward of `model` on `x` (unique
    storages, via saved-tensor hooks): the measurement the analytic estimate is checked
    against (tests) and calibrated with (benchmarks/bench_activation_memory.py)."""
    storages: dict[int, int] = {}

    def count(t: torch.Tensor) -> torch.Tensor:
        s = t.untyped_storage()
        storages[s.data_ptr()] = max(storages.get(s.data_ptr(), 0), s.nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(count, lambda t: t):
        out = model(x)
    out.sum().backward()  # frees what autograd saved; the count is taken above
    return sum(storages.values())


def _arch_knobs(prefix: str, arch: ArchConfig) -> tuple[str, ...]:
    return (f"{prefix}embed_dim ({arch.embed_dim})",
            f"{prefix}n_groups × {prefix}blocks_per_group ({arch.n_groups} × {arch.blocks_per_group})",
            f"{prefix}d_state ({arch.d_state})")


def student_estimate(cfg: TrialConfig, *, backend: str, device_type: str) -> MemoryEstimate:
    """The student's training step, plus the live teacher's forward when it distils from one
    (alpha > 0 without a teacher bank)."""
    knobs = (f"batch_size ({cfg.batch_size})", f"patch_size ({cfg.patch_size}; the estimate grows with its square)",
             *_arch_knobs("student.", cfg.student))
    est = training_estimate(cfg.student, batch_size=cfg.batch_size, patch_size=cfg.patch_size, scale=cfg.scale,
                            backend=backend, what="the student's training", knobs=knobs)
    if cfg.alpha == 0 or cfg.teacher.bank_patches:
        return est
    # with teacher.checkpoint the network is the checkpoint's; teacher.arch stands in for it here
    teacher = inference_bytes(cfg.teacher.arch, batch_size=cfg.batch_size, patch_size=cfg.patch_size, scale=cfg.scale,
                               backend=backend, device_type=device_type)
    return MemoryEstimate(est.what + " (with the live teacher's forward)", est.saved_bytes, est.step_bytes,
                          est.state_bytes, teacher, knobs + ("teacher.bank_patches (no teacher forward per step)",))


def teacher_estimate(cfg: TrialConfig, *, backend: str) -> MemoryEstimate:
    """The teacher's training step (batch `teacher.batch_size`, else the trial's)."""
    t = cfg.teacher
    batch = t.batch_size or cfg.batch_size
    batch_knob = (f"teacher.batch_size ({t.batch_size})" if t.batch_size
                  else f"batch_size ({cfg.batch_size}; or set teacher.batch_size)")
    knobs = (batch_knob, f"patch_size ({cfg.patch_size}; the estimate grows with its square)",
             *_arch_knobs("teacher.arch.", t.arch))
    return training_estimate(t.arch, batch_size=batch, patch_size=cfg.patch_size, scale=cfg.scale, backend=backend,
                             what="the teacher's training", knobs=knobs)


def free_memory(device: torch.device) -> tuple[int | None, str]:
    """(free bytes, where the figure comes from) for `device`; None when it cannot be read.

    CUDA: `torch.cuda.mem_get_info`, plus what this process's caching allocator holds
    unused. CPU (and Apple's unified memory): the kernel's `MemAvailable` (what can be
    allocated without swapping), else psutil's `available`.
    """
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int(free + cached), f"free on {device} (torch.cuda.mem_get_info + this process's unused cache)"
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024, "available RAM (MemAvailable, /proc/meminfo)"
    except OSError:
        pass
    try:
        import psutil
    except ImportError:
        return None, "unknown (no /proc/meminfo, psutil not installed)"
    return int(psutil.virtual_memory().available), "available RAM (psutil)"


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**28 else f"{n / 2**20:.0f} MiB"


def check_fits(estimate: MemoryEstimate, device: torch.device) -> None:
    """Raise `InsufficientMemoryError` (naming the estimate, the free memory and the knobs)
    when the step's estimated memory exceeds the device's free memory."""
    free, source = free_memory(device)
    if free is None:
        log.warning("memory pre-flight skipped for %s: free memory of %s is %s", estimate.what, device, source)
        return
    log.info("memory pre-flight: %s needs an estimated %s; %s: %s", estimate.what, _gib(estimate.total_bytes),
             source, _gib(free))
    if estimate.total_bytes <= free:
        return
    parts = [f"activations {_gib(estimate.step_bytes)}",
             f"weights, gradients and Adam state {_gib(estimate.state_bytes)}"]
    if estimate.teacher_bytes:
        parts.append(f"the live teacher's forward {_gib(estimate.teacher_bytes)}")
    hint = ""
    if device.type == "cpu":
        hint = "; or train on a GPU (--set device=cuda)"
    elif device.type == "cuda":
        hint = "; on CUDA, scan_backend cuda or triton keeps no per-step scan states"
    raise InsufficientMemoryError(
        f"{estimate.what} needs an estimated {_gib(estimate.total_bytes)} ({', '.join(parts)}) but {device} has "
        f"{_gib(free)} free ({source}); refused before training. Lower it with: {', '.join(estimate.knobs)}{hint}. "
        "(An analytic estimate of one training step, calibrated on a CPU: srstudy/trials/memory.py.)")

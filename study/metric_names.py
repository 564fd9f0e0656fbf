"""The metric names a trial logs, their short aliases and the constraint grammar: the one list
that a study's objectives and constraints (and `srstudy pareto`'s) are read against.

A trial's final metrics (`srstudy.trials.distill.run_trial` → `TrialResult.metrics`, which a
study trial reports to Tune) are the names in `TRIAL_METRICS`, plus `<Set>_psnr` and
`<Set>_ssim` for each of `data.benchmark_sets`. GPU metrics are absent on a CPU; `edge_*`
metrics come later, from `srstudy bench`, never from a trial.
"""
from __future__ import annotations

import operator
import re
from collections.abc import Iterable

# short names → the metric logged under that name (a trial's, or `srstudy bench`'s edge_*)
ALIASES: dict[str, str] = {
    "psnr": "val_psnr",
    "ssim": "val_ssim",
    "energy": "gpu_energy_j",
    "power": "gpu_avg_power_w",
    "latency": "latency_ms",
    "edge_latency": "edge_latency_ms",
    "edge_energy": "edge_energy_per_image_j",
}

ANALYTIC_METRICS = ("params", "flops")  # known before training: constraints on them skip the trial
# NVML energy (`srstudy.measure.energy.EnergyResult.metrics`, trials/distill.py's inference energy)
ENERGY_METRICS = ("gpu_energy_j", "gpu_energy_per_iter_j", "gpu_avg_power_w", "gpu_idle_power_w",
                  "gpu_inference_energy_per_image_j")
GPU_MEMORY_METRICS = ("gpu_peak_mem_allocated_mb", "gpu_peak_mem_reserved_mb")  # CUDA trials only
TRIAL_METRICS = (
    *ANALYTIC_METRICS, "teacher_params",
    "val_psnr", "val_ssim",  # the last validation
    "train_time_s", "iterations_per_s", "wall_time_s",
    "latency_ms", "latency_p90_ms",  # `trials.loop.measure_latency`
    *GPU_MEMORY_METRICS, *ENERGY_METRICS,
)
BENCHMARK_SUFFIXES = ("_psnr", "_ssim")  # `<Set>_psnr`, `<Set>_ssim` per data.benchmark_sets
EDGE_PREFIX = "edge_"

# `metric op value`: `params <= 150000`, `psnr>=20`, `flops == 1e6`
CONSTRAINT_PATTERN = re.compile(r"\s*([A-Za-z_][\w.\-]*)\s*(<=|>=|==|<|>)\s*([-+]?[0-9.]+(?:[eE][-+]?\d+)?)\s*")
OPERATORS = {"<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt, "==": operator.eq}


def resolve_metric(name: str) -> str:
    """The logged name of a metric name or alias (`psnr` → `val_psnr`)."""
    name = name.strip()
    return ALIASES.get(name, name)


def trial_metrics(benchmark_sets: Iterable[str] = ()) -> list[str]:
    """Every metric a trial with these benchmark sets can report at its end."""
    return [*TRIAL_METRICS, *(f"{s}{suffix}" for s in benchmark_sets for suffix in BENCHMARK_SUFFIXES)]


def unknown_trial_metric(name: str, benchmark_sets: Iterable[str] = ()) -> str | None:
    """Why `name` (already alias-resolved) is not a metric a trial logs, naming the valid
    ones; None when a trial logs it."""
    sets = list(benchmark_sets)
    if name in trial_metrics(sets):
        return None
    if name.startswith(EDGE_PREFIX):
        return (f"{name!r} is measured by `srstudy bench` on a finished trial, not by the trial itself; "
                f"rank trials on it afterwards with `srstudy pareto --objectives {name}:min`")
    bench = (f"{', '.join(f'{s}_psnr, {s}_ssim' for s in sets)} (data.benchmark_sets)" if sets
             else "<Set>_psnr and <Set>_ssim for each of data.benchmark_sets (none set)")
    aliases = ", ".join(f"{a}={m}" for a, m in ALIASES.items() if not m.startswith(EDGE_PREFIX))
    return (f"no trial logs a metric {name!r}; a trial logs {', '.join(TRIAL_METRICS)}, {bench}; "
            f"aliases: {aliases}")

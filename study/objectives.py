"""Objectives and constraints: the metric names a trial logs, their short aliases, the one
grammar, the default objectives and direction, and whether an objective can be measured.

Read by the study config (`StudyConfig.objectives` / `.constraints`, through the pydantic
field types `StudyObjective` / `StudyConstraint`) and by `srstudy.analysis` (`--objectives`,
`--constraint` of `srstudy pareto`, `report`, `export --best`), so both speak one vocabulary:

    objective    metric:max | metric:min      psnr:max, gpu_energy_j:min; a bare name takes
                                              `default_direction` (not in a study config:
                                              a study states what it optimises)
    constraint   metric op value              params <= 150000, psnr>=20, flops == 1e6
                                              (op: <=, >=, <, >, ==)

A trial's final metrics (`srstudy.trials.distill.run_trial` → `TrialResult.metrics`, which a
study trial reports to Tune) are the names in `TRIAL_METRICS`, plus `<Set>_psnr` and
`<Set>_ssim` for each of `data.benchmark_sets`. GPU metrics are absent on a CPU; `edge_*`
metrics come later, from `srstudy bench`, never from a trial.

An objective that cannot be measured (GPU energy on a CPU-only study; a metric no finished
run logged) is left out by `keep_measurable`, with one notice, never filled with 0.
"""
from __future__ import annotations

import operator
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Annotated

from pydantic import BeforeValidator

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
# NVML energy (`study.energy.EnergyResult.metrics`, trials/distill.py's inference energy)
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

DEFAULT_OBJECTIVES = "psnr:max,energy:min,params:min,latency:min"
_MAXIMISED = re.compile(r"(psnr|ssim|iterations_per_s|images_per_s)$")

# `metric op value`: `params <= 150000`, `psnr>=20`, `flops == 1e6`
CONSTRAINT_PATTERN = re.compile(r"\s*([A-Za-z_][\w.\-]*)\s*(<=|>=|==|<|>)\s*([-+]?[0-9.]+(?:[eE][-+]?\d+)?)\s*")
OPERATORS = {"<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt, "==": operator.eq}
DIRECTIONS = ("max", "min")

Say = Callable[[str], None]


class ObjectiveError(ValueError):
    """An objective or constraint that cannot be read, or evaluated on these runs."""


# ---- names ----------------------------------------------------------------------------------
def resolve_metric(name: str) -> str:
    """The logged name of a metric name or alias (`psnr` → `val_psnr`)."""
    name = name.strip()
    return ALIASES.get(name, name)


def default_direction(metric: str) -> str:
    """'max' for PSNR/SSIM/throughput metrics, 'min' for everything else."""
    return "max" if _MAXIMISED.search(metric) else "min"


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


def _fields(spec: dict, kind: str, names: tuple[str, ...]) -> dict:
    """The fields of a mapping written out in full (YAML `{metric: psnr, direction: max}`)."""
    extra = sorted(set(spec) - set(names))
    missing = [n for n in names if n not in spec]
    if extra or missing:
        raise ObjectiveError(f"{kind} {spec}: give exactly the keys {', '.join(names)}"
                             + (f" (unknown: {', '.join(map(str, extra))})" if extra else "")
                             + (f" (missing: {', '.join(missing)})" if missing else ""))
    return spec


# ---- the two value types ----------------------------------------------------------------------
@dataclass(frozen=True)
class Objective:
    """A metric to optimise and its direction ('max' or 'min'); `str()` is `metric:direction`."""

    metric: str
    direction: str

    @classmethod
    def parse(cls, spec: str | dict | Objective, *, require_direction: bool = False) -> Objective:
        """`psnr:max`, `gpu_energy_j:min`, a mapping `{metric, direction}`, or a bare name
        (direction from `default_direction`, unless `require_direction`); aliases resolved."""
        if isinstance(spec, Objective):
            return spec
        if isinstance(spec, dict):
            spec = _fields(spec, "objective", ("metric", "direction"))
            metric, direction, text = str(spec["metric"]), str(spec["direction"]), f"{spec}"
        elif isinstance(spec, str):
            text = spec.strip()
            if not text:
                raise ObjectiveError("empty objective; write metric:max or metric:min, e.g. psnr:max")
            if require_direction and ":" not in text:
                raise ObjectiveError(f"objective {text!r}: write metric:max or metric:min, e.g. psnr:max")
            metric, _, direction = text.rpartition(":") if ":" in text else (text, "", "")
        else:
            raise ObjectiveError(f"objective {spec!r}: write metric:max or metric:min, e.g. psnr:max")
        metric = resolve_metric(metric)
        direction = direction.strip().lower() or default_direction(metric)
        if direction not in DIRECTIONS:
            raise ObjectiveError(f"objective {text!r}: direction must be 'max' or 'min', e.g. {metric}:max")
        return cls(metric, direction)

    def __str__(self) -> str:
        return f"{self.metric}:{self.direction}"


@dataclass(frozen=True)
class Constraint:
    """`metric op value`, e.g. `params<=150000`; on analytic metrics (params, flops) a study
    checks it before any training and skips violating trials."""

    metric: str
    op: str
    value: float

    @classmethod
    def parse(cls, spec: str | dict | Constraint) -> Constraint:
        """`params<=150000`, `latency <= 5`, `psnr>=20`, or a mapping `{metric, op, value}`
        (aliases allowed)."""
        if isinstance(spec, Constraint):
            return spec
        if isinstance(spec, dict):
            spec = _fields(spec, "constraint", ("metric", "op", "value"))
            if spec["op"] not in OPERATORS:
                raise ObjectiveError(f"constraint {spec}: op must be one of {', '.join(OPERATORS)}")
            try:
                return cls(resolve_metric(str(spec["metric"])), spec["op"], float(spec["value"]))
            except (TypeError, ValueError):
                raise ObjectiveError(f"constraint {spec}: value must be a number") from None
        m = CONSTRAINT_PATTERN.fullmatch(spec) if isinstance(spec, str) else None
        if not m:
            raise ObjectiveError(f"constraint {spec!r}: write 'metric <= value', e.g. 'params<=150000' "
                                 "(operators <=, >=, <, >, ==)")
        return cls(resolve_metric(m.group(1)), m.group(2), float(m.group(3)))

    def holds(self, values):
        """Whether measured value(s) satisfy the constraint: a bool for one number, an
        element-wise boolean array for an array."""
        result = OPERATORS[self.op](values, self.value)
        return result if getattr(result, "ndim", 0) else bool(result)

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.value:g}"


def parse_objectives(spec: str | Sequence[str | dict | Objective]) -> list[Objective]:
    """A comma-separated string or a list → objectives (aliases resolved, no duplicates)."""
    items = [s for s in spec.split(",") if s.strip()] if isinstance(spec, str) else list(spec)
    objs = [Objective.parse(s) for s in items]
    if not objs:
        raise ObjectiveError("no objectives given; e.g. psnr:max,params:min")
    seen = [o.metric for o in objs]
    dup = sorted({m for m in seen if seen.count(m) > 1})
    if dup:
        raise ObjectiveError(f"objective(s) {dup} given twice")
    return objs


def parse_constraints(specs: Iterable[str | dict | Constraint] | str | None) -> list[Constraint]:
    """Constraints from one string, a list, or None (no constraint)."""
    if specs is None:
        return []
    if isinstance(specs, str):
        specs = [specs]
    return [Constraint.parse(s) for s in specs]


def default_objectives() -> list[Objective]:
    """`DEFAULT_OBJECTIVES`: validation PSNR up; GPU energy, parameters and latency down."""
    return parse_objectives(DEFAULT_OBJECTIVES)


# pydantic field types of the study config: strings, mappings or instances in, these out
StudyObjective = Annotated[Objective, BeforeValidator(lambda v: Objective.parse(v, require_direction=True))]
StudyConstraint = Annotated[Constraint, BeforeValidator(Constraint.parse)]


# ---- measured or not ------------------------------------------------------------------------
def keep_measurable(objectives: Sequence[Objective], why_not: Callable[[str], str | None], say: Say, *,
                    where: str) -> list[Objective]:
    """The objectives whose metric `why_not` has no reason against; each other one is left
    out with a notice (through `say`), never filled with 0. `where` ends the error raised
    when none is left ("on this machine", "in these runs")."""
    kept = []
    for obj in objectives:
        reason = why_not(obj.metric)
        if reason:
            say(f"objective {obj} left out: {reason}; it is not filled with 0")
        else:
            kept.append(obj)
    if not kept:
        raise ObjectiveError(f"none of the objectives {', '.join(map(str, objectives))} can be measured {where}; "
                             "give one that can, e.g. psnr:max")
    return kept


def energy_unavailable_reason(gpu: float, *, on_cluster: bool = False) -> str | None:
    """Why GPU energy can't be measured for trials given `gpu` GPUs each (None: it can).

    `on_cluster`: the trials run on the nodes of a Ray cluster the launcher connects to, whose
    NVML this machine cannot check (a launcher without a GPU is common there); each GPU node
    answers for itself, and one that cannot measure is tagged on the study's run
    (`energy_accounting_unavailable_reason.node-<id>`) while its trials' energy stays absent.
    """
    if gpu <= 0:
        return "trials run on CPU (resources.gpu = 0)"
    if on_cluster:
        return None
    from srstudy.measure.nvml import nvml_unavailable_reason  # one NVML check, in measure/

    return nvml_unavailable_reason()


def measurable_here(objectives: Sequence[Objective], constraints: Sequence[Constraint], gpu: float,
                    say: Say, *, on_cluster: bool = False) -> list[Objective]:
    """A study's objectives minus those its trials (`gpu` GPUs each) cannot measure on this
    machine (`on_cluster`: on the cluster's nodes, see `energy_unavailable_reason`), each with
    a notice; a constraint on such a metric gets a notice too (no trial can be held to it).
    ObjectiveError when no objective is left."""
    energy_reason = energy_unavailable_reason(gpu, on_cluster=on_cluster)

    def why_not(metric: str) -> str | None:
        if metric in ENERGY_METRICS and energy_reason is not None:
            return f"GPU energy cannot be measured ({energy_reason})"
        if metric in GPU_MEMORY_METRICS and gpu <= 0:
            return "GPU memory is not measured: trials run on CPU (resources.gpu = 0)"
        return None

    for c in constraints:
        reason = why_not(c.metric)
        if reason:
            say(f"constraint {c} cannot be applied: {reason}; no trial is filtered on it")
    return keep_measurable(objectives, why_not, say, where="on this machine")


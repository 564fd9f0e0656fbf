"""Typed configuration, validated once at the edge; every error names the field and value.

A trial is fully described by a `TrialConfig`: the student's architecture, the teacher,
the distillation weight `alpha`, the optimiser schedule, data, precision and device. Its
field defaults are MambaLiteSR's recipe (batch 128, LR 64×64 patches, α = 0.8, 2500
iterations, a 32-dim 4×2 rank-2 student, a 60-dim 8×2 teacher, Adam 2e-4 halved at
milestones): a GPU-sized trial, also written out in benchmarks/configs/paper_recipe.yaml.
With no file, `load_trial_config` (so `srstudy trial` / `srstudy teacher` without
--config) gives the embedded default trial instead: the base `trial` of the default study
(study/configs/default_study.yaml), CPU-sized, a minute or two on 2 cores.

Configs come from YAML files plus `--set key=value` overrides (`student.embed_dim=16`;
values are parsed as YAML, so `data.benchmark_sets=[Set5,Set14]` works). A key that itself
holds dots is written in quotes and brackets: `search_space["student.rank"]={type: int, …}`.
"""
from __future__ import annotations

import hashlib
import json
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, ValidationInfo, field_validator, model_validator

from srstudy.models.inherit import inheritance_problem

from .config_io import ConfigError, apply_overrides, flatten, parse_override, read_yaml  # noqa: F401 (re-exported)
from .data_root import apply_data_root
from .objectives import StudyConstraint, StudyObjective, default_objectives, parse_objectives, unknown_trial_metric
from .search_space import check_search_space, split_dotted_key_hint
from .trial_parts import (  # noqa: F401 (re-exported: srstudy.config is where users import them)
    ArchConfig, DataConfig, EnergyWindowConfig, LatencyConfig, OptimConfig, TeacherConfig, _Model)
from .workdir import DEFAULT_WORKDIR


class TrialConfig(_Model):
    """One distillation trial. Field defaults = MambaLiteSR's recipe, sized for a GPU (the
    embedded CPU-sized default trial is `load_trial_config(None)`)."""

    experiment: str = Field("srstudy", min_length=1, description="MLflow experiment name")
    student: ArchConfig = Field(default_factory=ArchConfig)
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    student_init: Literal["random", "teacher"] = Field(
        "random", description="random: DVMSR's init; teacher: start from the teacher's weights (its first groups and "
        "blocks, truncated-SVD ranks; `srstudy.models.inherit`): needs the teacher's embed_dim, d_state, expand, d_conv")
    alpha: float = Field(0.8, ge=0, le=1, description="L = α·L1(S,T) + (1−α)·L1(S,GT)")
    iterations: int = Field(2500, ge=1)
    batch_size: int = Field(128, ge=1)
    patch_size: int = Field(64, ge=4, description="LR patch side; HR patches are patch_size·scale")
    scale: int = Field(4, ge=2)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    val_interval: int = Field(250, ge=1)
    checkpoint_interval: int = Field(250, ge=1)
    seed: int = 0
    precision: Literal["fp32", "tf32", "bf16"] = Field(
        "fp32", description="training numerics: fp32; tf32 (fp32 with TensorFloat-32 matmuls on CUDA); bf16 autocast")
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N")
    scan_backend: str | None = Field(None, description="None: automatic (logged); chunked, cuda, reference")
    data: DataConfig = Field(default_factory=DataConfig)
    latency: LatencyConfig = Field(default_factory=LatencyConfig)
    energy_sample_hz: float = Field(10.0, gt=0)
    energy_window: EnergyWindowConfig = Field(default_factory=EnergyWindowConfig)
    batch_crops: Literal["auto", "host", "device"] = Field(
        "auto", description="where training batches are cut: host (a thread crops, stacks and copies them) or device "
        "(the training images held in GPU memory, patches gathered there); auto: device on CUDA when the images take "
        "at most 1/8 of its free memory. The batches are the same either way")
    prefetch_batches: int | None = Field(
        None, ge=0, description="batches built ahead in a background thread; None: 2 on CUDA, 0 on CPU")

    @field_validator("device")
    @classmethod
    def _device_name(cls, v: str) -> str:
        base = v.split(":")[0]
        if base not in ("auto", "cpu", "cuda", "mps"):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {v!r}")
        return v

    @model_validator(mode="after")
    def _student_can_inherit(self):
        """A teacher trained here has a known architecture: check it now (a checkpoint's is
        checked when the trial loads it, before training)."""
        if self.student_init == "teacher" and self.teacher.checkpoint is None:
            problem = inheritance_problem(self.student.to_model_config(self.scale),
                                          self.teacher.arch.to_model_config(self.scale))
            if problem:
                raise ValueError(f"student_init=teacher: {problem}")
        return self

    @model_validator(mode="after")
    def _warmup_shorter_than_the_run(self):
        if self.optim.schedule == "cosine" and self.optim.warmup_iterations >= self.iterations:
            raise ValueError(f"optim.warmup_iterations ({self.optim.warmup_iterations}) must be below iterations "
                             f"({self.iterations}) for the cosine schedule; lower it, or 0 for no warm-up")
        return self

    def analytic_metrics(self) -> dict[str, int]:
        """The student's metrics known from its config alone (no network built): `params`, and
        `flops` of one LR image of the latency size — what analytic constraints are checked on."""
        model = self.student.to_model_config(self.scale)
        return {"params": model.param_count(), "flops": model.flops(self.latency.height, self.latency.width)}

    def identity(self, *, exclude: tuple[str, ...] = ("device", "prefetch_batches", "batch_crops",
                                                       "energy_window")) -> str:
        """A stable hash of everything that changes the result (for resume folders); how
        energy is measured (`energy_window`) changes no result and is left out, and so are
        fields added since identities were first stored while they hold their defaults
        (`without_later_defaults`), so an upgrade keeps every trial folder."""
        payload = without_later_defaults(self.model_dump(mode="json", exclude=set(exclude)))
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


# ---- loading, overrides and error messages --------------------------------------------------
def format_validation_error(err: ValidationError, source: str) -> str:
    """One line per problem: `field.path: message (got value)`, headed by the source."""
    lines = [f"invalid configuration ({source}):"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "<root>"
        got = e.get("input")
        shown = "" if isinstance(got, dict) else f" (got {got!r})"
        lines.append(f"  {loc}: {e['msg'].removeprefix('Value error, ')}{shown}")
    return "\n".join(lines)


def build(model: type[BaseModel], data: dict[str, Any], source: str):
    """Validate `data` as `model`, turning pydantic errors into a `ConfigError`."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, source)) from None


def load_trial_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (),
                      data_root: str | Path | None = None) -> TrialConfig:
    """A validated `TrialConfig` from a YAML file plus `key=value` overrides; with no file,
    the embedded default trial (the default study's base `trial`: CPU-sized, quick) — not
    the GPU-sized field defaults, which would not finish on a CPU. `data_root`: the data
    (and a relative teacher.checkpoint) from that folder, before the overrides (`data_root`)."""
    data = read_yaml(path) if path is not None else dict(read_yaml(DEFAULT_STUDY).get("trial") or {})
    if data_root is not None:
        apply_data_root(data, data_root)
    apply_overrides(data, overrides)
    source = str(path) if path is not None else f"the default trial (trial: of {DEFAULT_STUDY})"
    if data_root is not None:
        source += f" + --data-root {data_root}"
    if overrides:
        source += " + --set " + " ".join(overrides)
    return build(TrialConfig, data, source)


# ---- the study: search space, objectives, constraints, resources --------------------------


class ParamSpec(_Model):
    """One searched setting: an int range (with step, optionally log), a float range
    (optionally log) or a categorical list — Optuna's distributions."""

    type: Literal["int", "float", "categorical"]
    low: float | None = None
    high: float | None = None
    step: float | None = Field(None, gt=0)
    log: bool = False
    choices: list[Any] | None = None

    @model_validator(mode="after")
    def _consistent(self):
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("a categorical parameter needs a non-empty 'choices' list")
            return self
        if self.low is None or self.high is None:
            raise ValueError(f"a {self.type} parameter needs 'low' and 'high'")
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) is above high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"log=true needs low > 0, got low={self.low}")
        if self.log and self.step is not None:
            raise ValueError("choose either log=true or a step, not both")
        if self.type == "int" and (self.low != int(self.low) or self.high != int(self.high)):
            raise ValueError(f"int parameter bounds must be integers, got {self.low}..{self.high}")
        return self

    def refuses(self, value: Any) -> str | None:
        """None when the search could sample `value`, else why not (for `points_to_evaluate`)."""
        if self.type == "categorical":
            return None if value in self.choices else f"is not one of the choices {self.choices}"
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"is not a number (a {self.type} parameter)"
        if self.type == "int" and value != int(value):
            return "is not an integer"
        if not self.low <= value <= self.high:
            return f"is outside {self.low}..{self.high}"
        if self.step is not None and (Decimal(str(value)) - Decimal(str(self.low))) % Decimal(str(self.step)) != 0:
            return f"is not on the step {self.step} from {self.low}"
        return None

    def extremes(self) -> list[tuple[str, Any]]:
        """The values a trial can be given at the edges of the space: (`low`, v), (`high`, v)
        (the highest value the step reaches), or (`choice`, c) for every categorical choice."""
        if self.type == "categorical":
            return [("choice", c) for c in self.choices]
        cast = int if self.type == "int" else float
        high = self.high
        if self.step is not None:  # as Optuna trims it, in decimal arithmetic
            low, step = Decimal(str(self.low)), Decimal(str(self.step))
            high = float(low + ((Decimal(str(self.high)) - low) // step) * step)
        return [("low", cast(self.low)), ("high", cast(high))]


class Resources(_Model):
    """Per-trial Ray resources; `gpu` may be fractional (0.25 → four trials per GPU)."""

    cpu: float = Field(1.0, gt=0)
    gpu: float = Field(0.0, ge=0)
    custom: dict[str, float] = Field(default_factory=dict, description="extra Ray resources, e.g. {jetson: 1}")


class AshaSettings(_Model):
    """ASHA early stopping on the validation-PSNR fidelity metric."""

    enabled: bool = True
    grace_period: int | None = Field(None, ge=1, description="iterations before a trial may be stopped (None: val_interval)")
    reduction_factor: float = Field(2.0, gt=1)


RESUME_MAY_CHANGE = ("max_concurrent",)  # study settings a `--resume` may change: not part of its identity


class StudyConfig(_Model):
    """A hyper-parameter study: a base trial, what to search, what to optimise, how to run."""

    name: str = Field("srstudy", min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    workdir: Path = DEFAULT_WORKDIR
    tracking_uri: str | None = Field(None, description="MLflow URI (default: sqlite under workdir)")
    trial: TrialConfig = Field(default_factory=TrialConfig)
    search_space: dict[str, ParamSpec] = Field(default_factory=dict)
    objectives: list[StudyObjective] = Field(default_factory=default_objectives, min_length=1)
    constraints: list[StudyConstraint] = Field(default_factory=list)
    num_samples: int = Field(8, ge=1)
    max_concurrent: int = Field(4, ge=1, description="trials at once; may change on --resume (e.g. on more GPUs)")
    resources: Resources = Field(default_factory=Resources)
    asha: AshaSettings = Field(default_factory=AshaSettings)
    seed: int = 0
    points_to_evaluate: list[dict[str, Any]] = Field(
        default_factory=list, description="settings the search tries first, in order (Ray Tune's points_to_evaluate, "
        "Optuna's enqueue_trial): each maps searched keys to values in their ranges; keys left out are sampled")

    @field_validator("search_space", mode="before")
    @classmethod
    def _dotted_keys_not_split(cls, space: Any) -> Any:
        hint = split_dotted_key_hint(space)
        if hint:
            raise ValueError(hint)
        return space

    @field_validator("search_space")
    @classmethod
    def _keys_name_trial_settings(cls, space: dict[str, ParamSpec], info: ValidationInfo) -> dict[str, ParamSpec]:
        if not space:
            raise ValueError("search_space is empty: give at least one setting to search, e.g. student.rank")
        if "trial" in info.data:  # every end of a range and every choice must be a valid trial setting
            check_search_space(space, info.data["trial"])
        return space

    @field_validator("objectives", "constraints")
    @classmethod
    def _metrics_a_trial_logs(cls, items: list, info: ValidationInfo) -> list:
        if "trial" in info.data:  # else the trial's own error is the one to fix first
            for item in items:
                problem = unknown_trial_metric(item.metric, info.data["trial"].data.benchmark_sets)
                if problem:
                    raise ValueError(f"{item}: {problem}")
        if info.field_name == "objectives":
            parse_objectives(items)  # the one duplicate rule
        return items

    def identity_payload(self) -> dict[str, Any]:
        """What a resumed study must match: the whole config but the folder, the store, how
        energy is measured (`trial.energy_window` changes no result) and how many trials run at
        once (`max_concurrent`: the machine's choice, so a study started on one GPU can go on
        with more trials at once on two)."""
        payload = self.model_dump(mode="json", exclude={"workdir": True, "tracking_uri": True,
                                                        **dict.fromkeys(RESUME_MAY_CHANGE, True),
                                                        "trial": {"energy_window"}})
        payload["trial"] = without_later_defaults(payload["trial"])
        if not payload.get("points_to_evaluate"):  # added later: studies without points keep their identity
            payload.pop("points_to_evaluate", None)
        return payload

    def identity(self) -> str:
        """Hash of `identity_payload` (stored in the study folder; a resume must match it)."""
        return _payload_hash(self.identity_payload())

    def is_study_of(self, state: dict[str, Any], *, ran_with: dict[str, Any] | None = None) -> bool:
        """Whether a study folder's `study.json` state holds this study, so `--resume` may go on
        with it. Folders written before `max_concurrent` left the identity hashed it with the
        rest: their stored config is compared without it, and where they stored no config their
        identity is recomputed with the `ran_with` values (`RESUME_MAY_CHANGE` settings as the
        study's MLflow run logged them at its start; this config's own values by default)."""
        if state.get("identity") == self.identity():
            return True
        stored = state.get("config")
        if stored is None:
            then = {k: getattr(self, k) for k in RESUME_MAY_CHANGE} | (ran_with or {})
            return _payload_hash(self.identity_payload() | then) == state.get("identity")
        if not isinstance(stored, dict) or _payload_hash(stored) != state.get("identity"):
            return False  # not the config the folder's identity hashed
        return _payload_hash(without_resume_settings(stored)) == self.identity()

    @model_validator(mode="after")
    def _points_inside_the_space(self):
        """Every point to evaluate names searched keys with values the search could sample, and a
        point that sets every key keeps the analytic constraints (else it would never train)."""
        for i, point in enumerate(self.points_to_evaluate):
            where = f"points_to_evaluate[{i}]"
            unknown = sorted(set(point) - set(self.search_space))
            if unknown:
                raise ValueError(f"{where}: {unknown} not in search_space (searched: {sorted(self.search_space)})")
            for key, value in point.items():
                problem = self.search_space[key].refuses(value)
                if problem:
                    raise ValueError(f"{where}: {key}={value!r} {problem}")
            if set(point) == set(self.search_space):
                analytic = self.trial_config(point).analytic_metrics()
                broken = [str(c) for c in self.constraints if c.metric in analytic and not c.holds(analytic[c.metric])]
                if broken:
                    raise ValueError(f"{where} breaks {', '.join(broken)} ({', '.join(f'{k} = {v}' for k, v in analytic.items())})")
        return self

    def trial_config(self, params: dict[str, Any]) -> TrialConfig:
        """The base trial with sampled `params` (`{"student.rank": 3, …}`) applied."""
        data = self.trial.model_dump(mode="json")
        apply_overrides(data, [f"{k}={json.dumps(v)}" for k, v in params.items()])
        return build(TrialConfig, data, f"study {self.name} trial {params}")


DEFAULT_STUDY = Path(__file__).parent / "configs" / "default_study.yaml"


def load_study_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (),
                      data_root: str | Path | None = None) -> StudyConfig:
    """A validated `StudyConfig` from YAML (default: the bundled CPU study) plus overrides;
    `data_root`: the base trial's data (and a relative teacher.checkpoint) from that folder,
    before the overrides (`data_root.apply_data_root`)."""
    path = DEFAULT_STUDY if path is None else Path(path)
    data = read_yaml(path)
    if data_root is not None:
        trial = data.get("trial")
        data["trial"] = apply_data_root(trial if isinstance(trial, dict) else {}, data_root)
    apply_overrides(data, overrides)
    source = str(path) + (f" + --data-root {data_root}" if data_root is not None else "")
    source += (" + --set " + " ".join(overrides)) if overrides else ""
    return build(StudyConfig, data, source)


def _payload_hash(payload: dict[str, Any]) -> str:
    """A study's identity: 16 hex digits of the SHA-256 of its identity payload as sorted JSON."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


#: trial fields added after trial and study identities were first stored, with their defaults: an
#: identity leaves such a field out while it holds its default, so folders written before it
#: existed keep their identity (their trials ran with what is now the default)
LATER_TRIAL_FIELDS: dict[str, Any] = {"student_init": "random", "batch_crops": "auto"}


def without_later_defaults(trial_payload: dict[str, Any]) -> dict[str, Any]:
    """A trial's identity payload without the `LATER_TRIAL_FIELDS` that hold their defaults."""
    return {k: v for k, v in trial_payload.items()
            if not (k in LATER_TRIAL_FIELDS and v == LATER_TRIAL_FIELDS[k])}


def without_resume_settings(payload: dict[str, Any]) -> dict[str, Any]:
    """A stored identity payload without the settings a resume may change (`RESUME_MAY_CHANGE`)."""
    return {k: v for k, v in payload.items() if k not in RESUME_MAY_CHANGE}

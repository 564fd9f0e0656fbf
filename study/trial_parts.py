"""The parts of a trial's configuration (`TrialConfig` in `srstudy.config` holds them): the
networks' shapes, the teacher, the data, the optimiser, latency and energy-window settings.
Each validates its own fields and names them in its errors; `srstudy.config` re-exports them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from srstudy.models.dvmsr import DVMSRConfig


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ArchConfig(_Model):
    """A DVMSR-topology network (see `srstudy.models.dvmsr.DVMSRConfig`)."""

    embed_dim: int = Field(32, ge=1, description="C, the embedding width")
    n_groups: int = Field(4, ge=1, description="residual groups (the paper's 'blocks')")
    blocks_per_group: int = Field(2, ge=1)
    rank: int = Field(2, ge=1, description="r, rank of the mixer's Δ path")
    lowrank_proj: bool = Field(False, description="also factor in_proj/out_proj through r")
    d_state: int = Field(16, ge=1)
    expand: int = Field(2, ge=1)
    d_conv: int = Field(4, ge=1)

    def to_model_config(self, scale: int) -> DVMSRConfig:
        """The network config for the given upscaling factor."""
        return DVMSRConfig(scale=scale, **self.model_dump())

    def param_count(self, scale: int = 4) -> int:
        """Exact parameter count, without building the network."""
        return self.to_model_config(scale).param_count()


def _teacher_arch() -> ArchConfig:
    return ArchConfig(embed_dim=60, n_groups=8, blocks_per_group=2, rank=4)


class TeacherConfig(_Model):
    """The teacher: trained once and cached, or taken from a checkpoint."""

    arch: ArchConfig = Field(default_factory=_teacher_arch)
    checkpoint: Path | None = Field(None, description="use these weights instead of training (srstudy or official DVMSR .pth)")
    iterations: int = Field(2500, ge=1)
    batch_size: int | None = Field(None, ge=1, description="None: the trial's batch_size")
    lr: float = Field(2e-4, gt=0)
    seed: int = 0
    bank_patches: int | None = Field(
        None, ge=1, description="train students on a fixed bank of this many patches whose teacher outputs are "
        "computed once and shared (no teacher forward per step); None: fresh crops, live teacher")

    @field_validator("checkpoint")
    @classmethod
    def _checkpoint_exists(cls, v: Path | None) -> Path | None:
        if v is not None and not Path(v).expanduser().is_file():
            hint = "" if Path(v).expanduser().is_absolute() else (
                f" (relative to {Path.cwd()}; with --data-root DIR a config's relative path is read under DIR)")
            raise ValueError(f"teacher checkpoint file not found: {v}{hint}")
        return None if v is None else Path(v).expanduser().resolve()


class DataConfig(_Model):
    """Training/validation images and the benchmark sets scored at the end.

    `train`/`val`: "default" (scikit-image's bundled photos, split by
    `srstudy.data.default_split`; no download) or a list of HR image folders.
    """

    train: Literal["default"] | list[Path] = "default"
    val: Literal["default"] | list[Path] = "default"
    benchmark_root: Path | None = Field(None, description="folder with <Set>/HR and <Set>/LR_bicubic/X4")
    benchmark_sets: list[str] = Field(default_factory=list)
    patches_per_image: int = Field(8, ge=1)
    val_max_images: int | None = Field(None, ge=1, description="validate on at most this many images")

    @field_validator("train", "val")
    @classmethod
    def _folders_exist(cls, v):
        if v == "default":
            return v
        if not v:
            raise ValueError('give at least one folder, or "default" for the bundled images')
        for folder in v:
            if not Path(folder).expanduser().is_dir():
                raise ValueError(f"image folder not found: {folder}")
        return [Path(f).expanduser().resolve() for f in v]

    @model_validator(mode="after")
    def _benchmarks_exist(self):
        if self.benchmark_sets and self.benchmark_root is None:
            raise ValueError(f"benchmark_sets {self.benchmark_sets} given without data.benchmark_root")
        if self.benchmark_root is not None:
            root = Path(self.benchmark_root).expanduser()
            for name in self.benchmark_sets:
                if not (root / name / "HR").is_dir():
                    raise ValueError(f"benchmark set {name!r}: folder {root / name / 'HR'} not found")
        return self


class OptimConfig(_Model):
    """Adam. The student's schedule: `step`, the paper's (× gamma at each milestone), or
    `cosine`: `warmup_iterations` of linear warm-up (lr·(i+1)/warmup), then cosine decay
    from `lr` to 0 (`trials.loop.lr_at`). The warm-up belongs to cosine, so a study can
    search `schedule` with one warm-up and its `step` trials keep the paper's schedule. A
    trained teacher always uses `step`: a searched lr/schedule never changes the shared teacher."""

    lr: float = Field(2e-4, gt=0)
    betas: tuple[float, float] = (0.9, 0.99)
    milestones: list[int] | None = Field(None, description="None: at 50 %, 75 % and 90 % of the iterations")
    gamma: float = Field(0.5, gt=0, le=1)
    schedule: Literal["step", "cosine"] = Field("step", description="step: × gamma at each milestone; cosine: to 0")
    warmup_iterations: int = Field(0, ge=0, description="cosine only: linear warm-up iterations (0: none), fewer than the run's")

    def milestones_for(self, iterations: int) -> list[int]:
        """The milestone iterations for a run of this length."""
        if self.milestones is not None:
            return sorted(self.milestones)
        return sorted({max(1, int(iterations * f)) for f in (0.5, 0.75, 0.9)})


class LatencyConfig(_Model):
    """How `latency_ms` is measured after training: median of timed batch-1 forwards."""

    height: int = Field(64, ge=1)
    width: int = Field(64, ge=1)
    repeats: int = Field(50, ge=1)
    warmup: int = Field(10, ge=0)


class EnergyWindowConfig(_Model):
    """When a trial on a GPU measures its energy per iteration alone (the exclusive window of
    docs/energy_attribution.md): after `start_fraction` of its iterations (warm-up), for at
    least `min_iterations` iterations and `min_seconds` seconds. Short studies lower `min_seconds`."""

    min_iterations: int = Field(20, ge=1, description="iterations the window runs at least")
    min_seconds: float = Field(5.0, ge=0, description="seconds the window runs at least")
    start_fraction: float = Field(0.1, ge=0, lt=1, description="share of the trial's iterations before the window")

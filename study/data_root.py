"""`--data-root DIR`: a trial's images, benchmark sets and teacher checkpoint from one folder.

The folder is laid out as the project's shared data (its README describes it):

    DIR/train/T91/HR/, DIR/train/BSD200/HR/   training images (HR)
    DIR/benchmarks/<Set>/HR/                   Set5 (validation and scored), Set14 (scored),
    DIR/benchmarks/<Set>/LR_bicubic/X4/        BSD100 (scored when present)
    DIR/checkpoints/DVMSR.pth                  the official DVMSR ×4 weights

`apply_data_root` rewrites a config as read from YAML, before validation and before any
`--set` override (so an override still wins): `data.train`, `data.val`,
`data.benchmark_root` and `data.benchmark_sets` point into DIR, and a *relative*
`teacher.checkpoint` in the config (`checkpoints/DVMSR.pth`) is read under DIR. An absolute
or unset `teacher.checkpoint` is left alone (unset: the teacher is trained once and cached).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .config_io import ConfigError

TRAIN_FOLDERS = ("train/T91/HR", "train/BSD200/HR")
VAL_FOLDER = "benchmarks/Set5/HR"
BENCHMARKS = "benchmarks"
BENCHMARK_SETS = ("Set5", "Set14")
OPTIONAL_SETS = ("BSD100",)
LAYOUT = ("train/T91/HR, train/BSD200/HR, benchmarks/Set5/HR, benchmarks/Set14/HR "
          "(benchmarks/BSD100/HR optional, checkpoints/DVMSR.pth for teacher.checkpoint: checkpoints/DVMSR.pth)")


def data_root_settings(root: str | Path) -> dict[str, Any]:
    """The `data` section for a folder with the layout above; `ConfigError` naming the
    first missing folder (and the expected layout) otherwise."""
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise ConfigError(f"--data-root {root}: no such folder; it should hold {LAYOUT}")
    needed = [*TRAIN_FOLDERS, VAL_FOLDER, *(f"{BENCHMARKS}/{s}/HR" for s in BENCHMARK_SETS)]
    for rel in needed:
        if not (root / rel).is_dir():
            raise ConfigError(f"--data-root {root}: folder {root / rel} not found; the data root should hold {LAYOUT}")
    sets = [*BENCHMARK_SETS, *(s for s in OPTIONAL_SETS if (root / BENCHMARKS / s / "HR").is_dir())]
    return {"train": [str(root / f) for f in TRAIN_FOLDERS], "val": [str(root / VAL_FOLDER)],
            "benchmark_root": str(root / BENCHMARKS), "benchmark_sets": sets}


def apply_data_root(trial: dict[str, Any], root: str | Path) -> dict[str, Any]:
    """Point a raw trial mapping (as read from YAML) at `root`, in place; returns it."""
    data = trial.get("data")
    trial["data"] = {**(data if isinstance(data, dict) else {}), **data_root_settings(root)}
    teacher = trial.get("teacher")
    checkpoint = teacher.get("checkpoint") if isinstance(teacher, dict) else None
    if isinstance(checkpoint, str) and not Path(checkpoint).expanduser().is_absolute():
        teacher["checkpoint"] = str(Path(root).expanduser().resolve() / checkpoint)
    return trial

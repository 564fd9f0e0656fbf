"""The smallest trial that exercises every part of srstudy in seconds on a CPU."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

TINY_TRIAL: dict[str, Any] = {
    "experiment": "tiny",
    "iterations": 6,
    "batch_size": 2,
    "patch_size": 16,
    "val_interval": 3,
    "checkpoint_interval": 2,
    "device": "cpu",
    "student": {"embed_dim": 8, "n_groups": 1, "blocks_per_group": 1, "rank": 2},
    "teacher": {"arch": {"embed_dim": 8, "n_groups": 1, "blocks_per_group": 1, "rank": 2}, "iterations": 4},
    "data": {"val_max_images": 1},
    "latency": {"height": 16, "width": 16, "repeats": 3, "warmup": 1},
}


def with_overrides(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of `base` with dotted-key overrides applied ({"student.rank": 1})."""
    cfg = json.loads(json.dumps(base))
    for key, value in overrides.items():
        node = cfg
        *path, last = key.split(".")
        for part in path:
            node = node.setdefault(part, {})
        node[last] = value
    return cfg


def write_yaml(path: Path, cfg: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


def tiny_study_config(workdir: Path, *, name: str = "tiny", experiment: str = "tiny-study", **overrides: Any) -> dict[str, Any]:
    """A study of tiny trials (12 iterations, ASHA from iteration 4) over rank, alpha, width."""
    cfg = {
        "name": name,
        "workdir": str(workdir),
        "trial": with_overrides(TINY_TRIAL, {"experiment": experiment, "iterations": 12, "val_interval": 4}),
        "search_space": {
            "student.rank": {"type": "int", "low": 1, "high": 3},
            "alpha": {"type": "float", "low": 0.0, "high": 1.0},
            "student.embed_dim": {"type": "categorical", "choices": [4, 8, 12]},
        },
        "objectives": ["psnr:max", "energy:min", "params:min", "latency:min"],
        "num_samples": 4,
        "max_concurrent": 2,
        "resources": {"cpu": 1, "gpu": 0},
        "asha": {"enabled": True, "grace_period": 4, "reduction_factor": 2},
        "seed": 3,
    }
    return with_overrides(cfg, overrides)

"""MambaLiteSR's recipe (benchmarks/configs/paper_recipe.yaml) pointed at the shared data."""
from __future__ import annotations

from pathlib import Path

from srstudy.config import TrialConfig, load_trial_config

HERE = Path(__file__).resolve().parent


def recipe_config(data_root: str | Path, overrides: list[str], sets: str = "Set5,Set14,BSD100") -> TrialConfig:
    """The recipe trial on `<data_root>/train/{T91,BSD200}/HR`, validated on Set5, scored on `sets`."""
    root = Path(data_root).resolve()
    data = [
        f"data.train=[{root / 'train/T91/HR'},{root / 'train/BSD200/HR'}]",
        f"data.val=[{root / 'benchmarks/Set5/HR'}]",
        f"data.benchmark_root={root / 'benchmarks'}",
        f"data.benchmark_sets=[{sets}]",
    ]
    return load_trial_config(HERE / "configs" / "paper_recipe.yaml", data + list(overrides))

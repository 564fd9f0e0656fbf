"""MambaLiteSR's recipe (benchmarks/configs/paper_recipe.yaml) pointed at the shared data."""
from __future__ import annotations

from pathlib import Path

from srstudy.config import TrialConfig, load_trial_config

HERE = Path(__file__).resolve().parent


def recipe_config(data_root: str | Path, overrides: list[str], sets: str = "Set5,Set14,BSD100") -> TrialConfig:
    """The recipe trial on `<data_root>/train/{T91,BSD200}/HR`, validated on Set5, scored on `sets`
    (`srstudy.data_root`: the layout `--data-root` reads)."""
    return load_trial_config(HERE / "configs" / "paper_recipe.yaml", [f"data.benchmark_sets=[{sets}]", *overrides],
                             data_root=data_root)

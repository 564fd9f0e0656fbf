"""srstudy.analysis: reading study results — the Pareto front from MLflow, plots, notebooks.

    from srstudy.analysis import resolve_source, load_runs, analyse
    source = resolve_source("srstudy-runs")             # or tracking_uri=…, experiment=…
    runs = load_runs(source)                            # one row per trial run (pandas)
    result = analyse(runs, "psnr:max,params:min,latency:min", ["params<=150000"])
    result.front, result.excluded, result.hypervolume, result.knee

Modules: `pareto` (non-dominated sort, exact hypervolume, knee), `front` (objectives from
`srstudy.objectives`, exclusions), `select` (a study's runs ranked: `analyse_study`; the best
run: the front's knee), `load` (MLflow → pandas, `pareto_rank` tags), `plots`,
`findings` (the paper's findings), `report` (one self-contained HTML file). Plots and the
report import matplotlib when used.
"""
from srstudy.objectives import (
    ALIASES,
    DEFAULT_OBJECTIVES,
    Constraint,
    Objective,
    ObjectiveError,
    parse_constraints,
    parse_objectives,
)

from .front import FrontResult, analyse, measured_objectives
from .load import SourceError, StudySource, load_runs, resolve_source, tag_ranks
from .pareto import (
    default_reference,
    dominates,
    hypervolume,
    knee_distance,
    knee_index,
    pareto_front,
    pareto_ranks,
)

__all__ = [
    "ALIASES", "DEFAULT_OBJECTIVES", "Constraint", "FrontResult", "Objective", "ObjectiveError", "SourceError",
    "StudySource", "analyse", "default_reference", "dominates", "hypervolume", "knee_distance", "knee_index",
    "load_runs", "measured_objectives", "parse_constraints", "parse_objectives", "pareto_front", "pareto_ranks",
    "resolve_source", "tag_ranks",
]

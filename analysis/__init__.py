"""srstudy.analysis: reading study results — the Pareto front from MLflow, plots, notebooks.

    from srstudy.analysis import resolve_source, load_runs, analyse
    source = resolve_source("srstudy-runs")             # or tracking_uri=…, experiment=…
    runs = load_runs(source)                            # one row per trial run (pandas)
    result = analyse(runs, "psnr:max,params:min,latency:min", ["params<=150000"])
    result.front, result.excluded, result.hypervolume, result.knee

Modules: `pareto` (non-dominated sort, exact hypervolume, knee), `front` (objectives,
constraints, exclusions), `load` (MLflow → pandas, `pareto_rank` tags), `plots`,
`findings` (the paper's findings), `report` (one self-contained HTML file). Plots and the
report import matplotlib when used.
"""
from .front import (
    ALIASES,
    Constraint,
    FrontResult,
    Objective,
    ObjectiveError,
    analyse,
    parse_constraints,
    parse_objectives,
    split_measured,
)
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
    "ALIASES", "Constraint", "FrontResult", "Objective", "ObjectiveError", "SourceError", "StudySource",
    "analyse", "default_reference", "dominates", "hypervolume", "knee_distance", "knee_index", "load_runs",
    "parse_constraints", "parse_objectives", "pareto_front", "pareto_ranks", "resolve_source", "split_measured",
    "tag_ranks",
]

"""Choosing among a study's runs: the ranked front (`analyse_study`, what `srstudy pareto`
and `srstudy report` show) and its knee, the best run (`best_run`).

    runs, result = analyse_study(source, objectives=None, constraints=[], reference="1,2,3")
    chosen = best_run(workdir="srstudy-runs")            # or tracking_uri=…, experiment=…
    chosen.run_id, chosen.values, chosen.front

What `srstudy export --best` and `srstudy bench --best` act on. Objectives: as given, else
the study's own (its `study.json`), else `srstudy.objectives.DEFAULT_OBJECTIVES`; objectives
that no finished run measured are left out with a notice (e.g. GPU energy on a CPU-only
study); a run missing a metric is excluded from the front, never counted as 0.
"""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from srstudy.objectives import DEFAULT_OBJECTIVES, ObjectiveError, Say, parse_objectives
from srstudy.workdir import DEFAULT_WORKDIR

from .front import FrontResult, analyse, measured_objectives
from .load import SourceError, StudySource, load_runs, resolve_source

log = logging.getLogger("srstudy.analysis.select")


class SelectionError(RuntimeError):
    """No run can be chosen; the message says what the study lacks."""


@dataclass
class BestRun:
    """The run `--best` picked: the knee of the Pareto front over `objectives`."""

    run_id: str
    tracking_uri: str
    objectives: list[str]
    values: dict[str, float]
    front: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    summary: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def analyse_study(source: StudySource, objectives: str | Sequence[str] | None = None,
                  constraints: Sequence[str] | None = None, reference: str | Sequence[float] | None = None,
                  say: Say = log.info, runs: pd.DataFrame | None = None) -> tuple[pd.DataFrame, FrontResult]:
    """(runs, ranked result) of the study's trial runs over `objectives`. Objectives given
    explicitly must be measured; by default the study's own (else DEFAULT_OBJECTIVES), those
    no run measured dropped with a notice (GPU energy on a CPU-only study). `reference`: the
    hypervolume reference point, numbers or comma-separated text. Raises SourceError when
    the study has no trial runs, ObjectiveError / ValueError for bad objectives, constraints
    or reference. `runs`: the frame to rank instead of `load_runs(source)` (e.g. with a metric
    measured again after the study, `benchmarks/study_latency.py`)."""
    runs = load_runs(source) if runs is None else runs
    if not len(runs):
        raise SourceError(f"experiment {source.experiment!r} at {source.tracking_uri} has no trial runs (tag role=trial)"
                          + (f" of study {source.study!r}" if source.study else "") + "; has the study run yet?")
    if objectives is None:
        objectives = measured_objectives(runs, source.objectives or DEFAULT_OBJECTIVES,
                                         lambda message: say(f"notice: {message}"))
    if isinstance(reference, str):
        try:
            reference = [float(v) for v in reference.split(",")]
        except ValueError:
            raise ValueError(f"--reference {reference!r}: write comma-separated numbers, one per objective") from None
    return runs, analyse(runs, objectives, constraints, reference=reference)


def best_run(*, workdir: str | Path | None = None, tracking_uri: str | None = None, experiment: str | None = None,
             objectives: str | Sequence[str] | None = None, constraints: Sequence[str] | None = None,
             say: Say = log.info) -> BestRun:
    """The Pareto-best trial of a study: `srstudy.analysis` ranks the finished trial runs
    (missing metrics exclude a run, never count as 0) and the front's knee is the pick; see
    the module docstring. Raises SelectionError when there is nothing to choose from."""
    if workdir is None and tracking_uri is None:
        workdir = DEFAULT_WORKDIR
    source = resolve_source(workdir, tracking_uri=tracking_uri, experiment=experiment)
    runs = load_runs(source)
    if runs.empty:
        raise SelectionError(f"no trial runs in experiment {source.experiment!r} at {source.tracking_uri}")
    wanted = parse_objectives(objectives or source.objectives or DEFAULT_OBJECTIVES)
    try:
        kept = measured_objectives(runs, wanted, lambda message: say(f"notice: {message}"))
    except ObjectiveError as e:
        raise SelectionError(f"{e} (runs at {source.tracking_uri})") from None
    result = analyse(runs, kept, constraints)
    if result.knee_run_id is None:
        raise SelectionError("no finished trial run has every objective; " + " ".join(result.summary_lines()))
    knee = result.knee
    return BestRun(run_id=str(result.knee_run_id), tracking_uri=source.tracking_uri,
                   objectives=[str(o) for o in kept], values={m: float(knee[m]) for m in result.metrics},
                   front=[str(r) for r in result.front["run_id"]], dropped=[str(o) for o in wanted if o not in kept],
                   summary=result.summary_lines())

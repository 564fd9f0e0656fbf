"""The Pareto front of a study's runs: objectives, constraints, exclusions, hypervolume, knee.

    runs (a DataFrame from `srstudy.analysis.load.load_runs`)
      └─ analyse(runs, "psnr:max,params:min,latency_ms:min", ["params<=150000"])
           → FrontResult: ranked runs (pareto_rank 0 = the front), excluded runs with the
             reason, per-objective missing counts, hypervolume, knee

Exclusion, in this order (each excluded run is listed once, with the first reason that
applies): a run that did not finish (status other than FINISHED, or tagged `pruned=true`);
a run missing an objective (absent or non-finite — never filled with 0); a run missing a
constraint's metric; a run violating a constraint. `missing_counts` counts, per objective,
every finished run that lacks it.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from srstudy.objectives import (
    Constraint,
    Objective,
    ObjectiveError,
    Say,
    keep_measurable,
    parse_constraints,
    parse_objectives,
    resolve_metric,
)

from .pareto import default_reference, hypervolume, knee_index, pareto_ranks


def _numeric(runs: pd.DataFrame, column: str) -> pd.Series:
    """The column as floats; absent or non-finite → NaN (never 0)."""
    if column not in runs.columns:
        return pd.Series(np.nan, index=runs.index, dtype=np.float64)
    s = pd.to_numeric(runs[column], errors="coerce").astype(np.float64)
    return s.where(np.isfinite(s))


def measured(runs: pd.DataFrame, metric: str) -> int:
    """How many runs hold a finite value of `metric`."""
    return int(_numeric(runs, resolve_metric(metric)).notna().sum())


def measured_objectives(runs: pd.DataFrame, objectives, say: Say) -> list[Objective]:
    """The objectives measured in at least one finished run; each other one is left out with
    a notice (`objectives.keep_measurable`, the reason the runs give), never filled with 0.
    ObjectiveError when none is left."""
    done = runs[finished_mask(runs)] if len(runs) else runs

    def why_not(metric: str) -> str | None:
        return None if measured(done, metric) else f"measured in no finished run{unmeasured_hint(runs, metric)}"

    return keep_measurable(parse_objectives(objectives), why_not, say, where="in any finished run")


def _pruned(runs: pd.DataFrame) -> pd.Series:
    if "pruned" not in runs.columns:
        return pd.Series(False, index=runs.index)
    return runs["pruned"].map(lambda v: v is True or str(v).lower() == "true").astype(bool)


def finished_mask(runs: pd.DataFrame) -> pd.Series:
    """Runs that finished (status FINISHED, or no status column) and were not pruned."""
    status = runs["status"] if "status" in runs.columns else pd.Series("FINISHED", index=runs.index)
    return (status == "FINISHED") & ~_pruned(runs)


def unmeasured_hint(runs: pd.DataFrame, metric: str) -> str:
    """Why a metric may be absent, from the runs' own tags (energy on CPU, edge bench not run)."""
    if metric.startswith("gpu_") and "tag.energy_unavailable_reason" in runs.columns:
        reasons = runs["tag.energy_unavailable_reason"].dropna().unique()
        if len(reasons):
            return f" (the runs say: energy_unavailable_reason = {reasons[0]!r})"
    if metric.startswith("edge_"):
        return " (edge metrics come from `srstudy bench --on jetson`; none of these runs was benched)"
    return ""


@dataclass
class FrontResult:
    """What `analyse` found. `ranked` holds the runs that took part (column `pareto_rank`,
    0 = the front; `knee` marks the knee), sorted by rank then by the first objective;
    `excluded` lists the others with `reason` and `detail`."""

    objectives: list[Objective]
    constraints: list[Constraint]
    ranked: pd.DataFrame
    excluded: pd.DataFrame
    missing_counts: dict[str, int]
    total: int
    reference: np.ndarray | None = None
    hypervolume: float | None = None
    knee_run_id: str | None = None
    search_params: list[str] = field(default_factory=list)

    @property
    def metrics(self) -> list[str]:
        return [o.metric for o in self.objectives]

    @property
    def directions(self) -> list[str]:
        return [o.direction for o in self.objectives]

    @property
    def front(self) -> pd.DataFrame:
        return self.ranked[self.ranked["pareto_rank"] == 0]

    @property
    def knee(self) -> pd.Series | None:
        if self.knee_run_id is None:
            return None
        return self.ranked.set_index("run_id").loc[self.knee_run_id]

    def exclusion_counts(self) -> dict[str, int]:
        return self.excluded["reason"].value_counts().to_dict() if len(self.excluded) else {}

    def table(self, front_only: bool = True) -> pd.DataFrame:
        """Run id, name, searched settings, objective values, rank and knee, for display."""
        df = self.front if front_only else self.ranked
        cols = ["run_id", "run_name", *self.search_params, *self.metrics, "pareto_rank", "knee"]
        return df[[c for c in cols if c in df.columns]].reset_index(drop=True)

    def to_records(self, front_only: bool = True) -> list[dict]:
        """JSON-ready: one object per run with `run_id`, `run_name`, the objective values
        (keyed by metric), `pareto_rank` and `knee`."""
        df = self.front if front_only else self.ranked
        out = []
        for _, r in df.iterrows():
            rec = {"run_id": r["run_id"], "run_name": r.get("run_name")}
            rec.update({m: float(r[m]) for m in self.metrics})
            rec.update({"pareto_rank": int(r["pareto_rank"]), "knee": bool(r["knee"])})
            out.append(rec)
        return out

    def summary_lines(self) -> list[str]:
        """Human-readable counts: what was ranked, what was excluded and why."""
        lines = [f"{self.total} trial run(s): {len(self.ranked)} ranked, {len(self.excluded)} excluded"]
        if len(self.excluded):
            counts = self.exclusion_counts()
            if counts.get("not_finished"):
                det = self.excluded.loc[self.excluded["reason"] == "not_finished", "detail"].value_counts()
                lines.append(f"  excluded, did not finish: {counts['not_finished']} "
                             f"({', '.join(f'{v} {k}' for k, v in det.items())})")
            for m, n in self.missing_counts.items():
                if n:
                    lines.append(f"  missing objective {m}: {n} finished run(s) (excluded, not filled with 0)")
            if counts.get("missing_constraint_metric"):
                lines.append(f"  excluded, missing a constraint's metric: {counts['missing_constraint_metric']}")
            for c in self.constraints:
                n = int(((self.excluded["reason"] == "constraint") & (self.excluded["detail"].str.startswith(str(c)))).sum())
                if n:
                    lines.append(f"  excluded, violates {c}: {n}")
        lines.append(f"front: {len(self.front)} run(s) over {', '.join(map(str, self.objectives))}"
                     + (f" subject to {', '.join(map(str, self.constraints))}" if self.constraints else ""))
        if self.hypervolume is not None:
            ref = ", ".join(f"{m}={v:.6g}" for m, v in zip(self.metrics, self.reference))
            lines.append(f"hypervolume: {self.hypervolume:.6g} (reference {ref})")
        if self.knee_run_id is not None:
            k = self.knee
            vals = ", ".join(f"{m}={k[m]:.6g}" for m in self.metrics)
            lines.append(f"knee: {self.knee_run_id} ({k.get('run_name')}): {vals}")
        return lines


def analyse(runs: pd.DataFrame, objectives="psnr:max,params:min,latency:min", constraints=None, *,
            reference: Sequence[float] | None = None, finished_only: bool = True) -> FrontResult:
    """Rank `runs` (one row per run, a `run_id` column and one column per metric) by
    non-dominated sorting over `objectives` under `constraints`; see the module docstring.

    reference: the hypervolume reference point in the objectives' units (default: just
    beyond the worst ranked value of each objective, `pareto.default_reference`).
    Raises ObjectiveError for an objective or constraint metric measured in no run.
    """
    objs = parse_objectives(objectives)
    cons = parse_constraints(constraints)
    runs = runs.reset_index(drop=True)
    if "run_id" not in runs.columns:
        runs = runs.assign(run_id=[str(i) for i in range(len(runs))])
    done = finished_mask(runs) if finished_only else pd.Series(True, index=runs.index)
    metrics = [o.metric for o in objs]

    if done.any():
        for m in [*metrics, *[c.metric for c in cons]]:
            if measured(runs[done], m) == 0:
                where = "finished run" if finished_only else "run"
                avail = sorted(c for c in runs.columns if c in runs.attrs.get("metric_columns", runs.columns))
                raise ObjectiveError(
                    f"{m!r} is measured in none of the {int(done.sum())} {where}(s){unmeasured_hint(runs, m)}; "
                    f"drop it from the objectives/constraints, or choose among: {', '.join(avail)}")

    values = pd.DataFrame({m: _numeric(runs, m) for m in metrics})
    reasons = pd.Series(pd.NA, index=runs.index, dtype=object)
    details = pd.Series("", index=runs.index, dtype=object)

    not_done = ~done
    if not_done.any():
        status = runs["status"].astype(str) if "status" in runs.columns else pd.Series("?", index=runs.index)
        pruned = _pruned(runs)
        reasons[not_done] = "not_finished"
        details[not_done] = (status + np.where(pruned, " (pruned)", ""))[not_done]
    missing_counts = {m: int((done & values[m].isna()).sum()) for m in metrics}
    miss = values.isna()
    sel = reasons.isna() & miss.any(axis=1)
    reasons[sel] = "missing_objective"
    details[sel] = miss[sel].apply(lambda r: ",".join(m for m, v in r.items() if v), axis=1)
    for c in cons:
        cv = _numeric(runs, c.metric)
        sel = reasons.isna() & cv.isna()
        reasons[sel] = "missing_constraint_metric"
        details[sel] = c.metric
        bad = reasons.isna() & cv.notna() & ~pd.Series(c.holds(cv.fillna(0).to_numpy()), index=runs.index)
        reasons[bad] = "constraint"
        details[bad] = [f"{c} ({c.metric} = {v:g})" for v in cv[bad]]

    keep = reasons.isna()
    ranked = runs[keep].copy()
    for m in metrics:
        ranked[m] = values.loc[keep, m]
    pts = ranked[metrics].to_numpy(dtype=np.float64)
    dirs = [o.direction for o in objs]
    ranked["pareto_rank"] = pareto_ranks(pts, dirs) if len(ranked) else np.array([], dtype=int)
    ranked["knee"] = False
    hv = ref = knee_id = None
    if len(ranked):
        front = ranked[ranked["pareto_rank"] == 0]
        ref = (np.asarray(reference, dtype=np.float64) if reference is not None
               else default_reference(pts, dirs))
        hv = hypervolume(front[metrics].to_numpy(np.float64), dirs, ref)
        k = knee_index(front[metrics].to_numpy(np.float64), dirs)
        knee_id = front["run_id"].iloc[k]
        ranked.loc[ranked["run_id"] == knee_id, "knee"] = True
        asc = [True] + [d == "min" for d in dirs[:1]]
        ranked = ranked.sort_values(["pareto_rank", metrics[0]], ascending=asc, kind="stable")
    excluded = runs.loc[~keep, [c for c in ("run_id", "run_name", "status") if c in runs.columns]].copy()
    excluded["reason"] = reasons[~keep]
    excluded["detail"] = details[~keep]
    return FrontResult(objs, cons, ranked.reset_index(drop=True), excluded.reset_index(drop=True),
                       missing_counts, total=len(runs), reference=ref, hypervolume=hv, knee_run_id=knee_id,
                       search_params=_varying_params(runs))


def _varying_params(runs: pd.DataFrame) -> list[str]:
    """Param columns that take more than one value across the runs (the searched settings)."""
    cols = runs.attrs.get("param_columns", [])
    return [c for c in cols if c in runs.columns and runs[c].astype(str).nunique(dropna=False) > 1]


def fmt(v) -> str:
    """A compact number for tables."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, (bool, np.bool_)):
        return "✓" if v else ""
    if isinstance(v, (int, np.integer)):
        return f"{int(v):d}"
    if isinstance(v, (float, np.floating)):
        return f"{v:.0f}" if abs(v) >= 1e5 and float(v).is_integer() else f"{v:.5g}"
    return str(v)


def hypervolume_history(result: FrontResult, order_by: str = "end_time") -> pd.DataFrame:
    """Hypervolume of the ranked runs finished so far, after each run (in `order_by` order),
    against the result's fixed reference point: how the search progressed."""
    df = result.ranked
    if not len(df):
        return pd.DataFrame(columns=["n_runs", "run_id", "hypervolume"])
    if order_by in df.columns:
        df = df.sort_values(order_by, kind="stable")
    pts = df[result.metrics].to_numpy(np.float64)
    hv = [hypervolume(pts[: i + 1], result.directions, result.reference) for i in range(len(pts))]
    return pd.DataFrame({"n_runs": np.arange(1, len(pts) + 1), "run_id": df["run_id"].to_numpy(), "hypervolume": hv})

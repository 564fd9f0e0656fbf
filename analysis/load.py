"""A study's trial runs, from MLflow into pandas — any tracking URI.

    source = resolve_source(workdir="srstudy-runs")            # reads study.json + mlflow.db
    source = resolve_source(tracking_uri="http://mlflow:5000", experiment="srstudy",
                            study="default")                    # optional: one study's trials
    runs = load_runs(source)

One row per trial run (tag `role=trial`): `run_id`, `run_name`, `status`, `pruned` (bool,
tag `pruned=true`), `parent_run_id`, `start_time`/`end_time` (UTC), then one column per
param (numbers parsed, `None` → NaN; a param sharing a metric's name becomes `param.<name>`),
one column per metric holding its latest value (MLflow's: the value at the largest step —
for `val_psnr` that is the final validation), and `tag.<key>` for the run's own tags
(MLflow's `mlflow.*` tags left out). A metric a run did not log is NaN there, never 0.
`runs.attrs` holds `metric_columns`, `param_columns`, `tracking_uri`, `experiment`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from srstudy.workdir import DEFAULT_WORKDIR, StudyDir, missing_store

PARENT_TAG = "mlflow.parentRunId"
RANK_TAG = "pareto_rank"
OBJECTIVES_TAG = "pareto_objectives"


class SourceError(ValueError):
    """The study, store or experiment cannot be found; the message says how to point at it."""


@dataclass
class StudySource:
    """Where a study's trial runs are: a tracking URI, an experiment, optionally the study's
    parent run(s)."""

    tracking_uri: str
    experiment: str
    experiment_id: str
    parent_run_ids: list[str] | None = None
    study: str | None = None
    workdir: Path | None = None
    objectives: list[str] = field(default_factory=list)  # the study's own (study.json)

    def client(self):
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.tracking_uri)


def _check_store(uri: str, hint: str) -> None:
    """An sqlite store must exist (MLflow would silently create an empty one)."""
    missing = missing_store(uri)
    if missing:
        raise SourceError(f"{missing}; {hint}")


def resolve_source(workdir: str | Path | None = None, *, tracking_uri: str | None = None,
                   experiment: str | None = None, study: str | None = None,
                   parent_run_id: str | None = None) -> StudySource:
    """Find a study's runs.

    workdir: a `srstudy launch` folder — its `study.json` names the study and its parent run,
    whose experiment is used; the store is `sqlite:///<workdir>/mlflow.db` unless
    `tracking_uri` is given (a study that logged to a server).
    Otherwise `tracking_uri` (default `$MLFLOW_TRACKING_URI`) and `experiment` are needed;
    `study` (the study's name) or `parent_run_id` narrow the runs to one study's trials.
    """
    objectives: list[str] = []
    if workdir is not None:
        study_dir = StudyDir(workdir)
        state = study_dir.read_state()
        if state is None:
            raise SourceError(
                f"{study_dir} holds no {study_dir.state_file.name}, so it is not a `srstudy launch` workdir; point "
                "--workdir at one, or give --tracking-uri URI --experiment NAME")
        workdir = study_dir.path
        study = study or state.get("name")
        parent_run_id = parent_run_id or state.get("parent_run_id")
        objectives = list(state.get("objectives") or [])
        if tracking_uri is None:
            tracking_uri = study_dir.tracking_uri
            _check_store(tracking_uri, "if this study logged to an MLflow server, pass its --tracking-uri")
    tracking_uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not tracking_uri:
        raise SourceError("no MLflow store given: pass --workdir DIR (a `srstudy launch` folder) or "
                          "--tracking-uri URI --experiment NAME (or set MLFLOW_TRACKING_URI)")
    _check_store(tracking_uri, "check the path, or pass --workdir DIR of a `srstudy launch` study")
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=tracking_uri)
    exp = None
    if experiment is None and parent_run_id is not None:
        try:
            parent = client.get_run(parent_run_id)
        except MlflowException as e:
            raise SourceError(f"the study's parent run {parent_run_id} is not in {tracking_uri} ({e.error_code}); "
                              "did the study log to another --tracking-uri?") from None
        exp = client.get_experiment(parent.info.experiment_id)
    elif experiment is not None:
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            names = [e.name for e in client.search_experiments()]
            raise SourceError(f"no experiment named {experiment!r} at {tracking_uri}; experiments there: "
                              f"{names or 'none'} (the trial experiment is the study config's trial.experiment)")
    else:
        names = [e.name for e in client.search_experiments()]
        raise SourceError(f"which experiment? pass --experiment NAME; experiments at {tracking_uri}: {names or 'none'}")

    parents: list[str] | None = [parent_run_id] if parent_run_id else None
    if parents is None and study is not None:
        found = _search_all(client, exp.experiment_id, f"tags.role = 'study' and tags.study = '{study}'")
        if not found:
            raise SourceError(f"no study named {study!r} (a run tagged role=study, study={study}) in experiment "
                              f"{exp.name!r} at {tracking_uri}")
        parents = [r.info.run_id for r in found]
    return StudySource(tracking_uri, exp.name, exp.experiment_id, parents, study,
                       Path(workdir) if workdir else None, objectives)


def study_source(workdir: str | Path | None = None, *, tracking_uri: str | None = None,
                 experiment: str | None = None, study: str | None = None) -> StudySource:
    """`resolve_source` with the commands' default: given none of `workdir`, `tracking_uri`,
    `experiment` nor `$MLFLOW_TRACKING_URI`, the study in ./srstudy-runs."""
    if workdir is None and tracking_uri is None and experiment is None and not os.environ.get("MLFLOW_TRACKING_URI"):
        workdir = DEFAULT_WORKDIR
    return resolve_source(workdir, tracking_uri=tracking_uri, experiment=experiment, study=study)


def _search_all(client, experiment_id: str, filter_string: str) -> list:
    from mlflow.entities import ViewType

    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], filter_string=filter_string, run_view_type=ViewType.ACTIVE_ONLY,
                                  max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _parse_param(values: pd.Series) -> pd.Series:
    """A param column as numbers or booleans when every logged value is one."""
    s = values.where(values != "None")
    present = s.dropna()
    if present.empty:
        return s
    if present.isin(["True", "False"]).all():
        return s.map({"True": True, "False": False})
    num = pd.to_numeric(present, errors="coerce")
    if num.notna().all():
        out = pd.to_numeric(s, errors="coerce")
        if (out.dropna() == out.dropna().round()).all() and present.str.fullmatch(r"[-+]?\d+").all():
            return out.astype("Int64")
        return out
    return s


def runs_frame(runs: list) -> pd.DataFrame:
    """MLflow `Run` objects → the DataFrame described in the module docstring."""
    metric_names = sorted({k for r in runs for k in r.data.metrics})
    param_names = sorted({k for r in runs for k in r.data.params})
    tag_names = sorted({k for r in runs for k in r.data.tags if not k.startswith("mlflow.")})
    rows = []
    for r in runs:
        tags = r.data.tags
        row = {
            "run_id": r.info.run_id,
            "run_name": r.info.run_name,
            "status": r.info.status,
            "pruned": str(tags.get("pruned", "")).lower() == "true",
            "parent_run_id": tags.get(PARENT_TAG),
            "start_time": r.info.start_time,
            "end_time": r.info.end_time,
        }
        for k in param_names:
            row[f"param.{k}" if k in metric_names or k in row else k] = r.data.params.get(k)
        for k in metric_names:
            v = r.data.metrics.get(k)
            row[k] = np.nan if v is None else float(v)
        for k in tag_names:
            row[f"tag.{k}"] = tags.get(k)
        rows.append(row)
    base = ["run_id", "run_name", "status", "pruned", "parent_run_id", "start_time", "end_time"]
    params = [f"param.{k}" if k in metric_names or k in base else k for k in param_names]
    df = pd.DataFrame(rows, columns=base + params + metric_names + [f"tag.{k}" for k in tag_names])
    for c in ("start_time", "end_time"):
        df[c] = pd.to_datetime(df[c], unit="ms", utc=True)
    for c in params:
        df[c] = _parse_param(df[c].astype(object))
    for c in metric_names:
        df[c] = df[c].astype(np.float64)
    df = df.sort_values("start_time", kind="stable").reset_index(drop=True)
    df.attrs["metric_columns"] = metric_names
    df.attrs["param_columns"] = params
    return df


def load_runs(source: StudySource | None = None, *, include_other_roles: bool = False, **where) -> pd.DataFrame:
    """The trial runs of `source` (or of `resolve_source(**where)`) as a DataFrame.

    include_other_roles: also the study's parent run and untagged runs (not for ranking).
    """
    source = source or resolve_source(**where)
    client = source.client()
    flt = "" if include_other_roles else "tags.role = 'trial'"
    runs = _search_all(client, source.experiment_id, flt)
    if source.parent_run_ids is not None:
        keep = set(source.parent_run_ids)
        runs = [r for r in runs if r.data.tags.get(PARENT_TAG) in keep or
                (include_other_roles and r.info.run_id in keep)]
    df = runs_frame(runs)
    df.attrs.update(tracking_uri=source.tracking_uri, experiment=source.experiment, study=source.study)
    return df


def tag_ranks(source: StudySource, result, all_run_ids) -> int:
    """Write `pareto_rank` (= the run's rank, "0" on the front) and `pareto_objectives`
    (objectives and constraints it was ranked under) on every ranked run, and delete a stale
    `pareto_rank` from runs left out this time. Returns the number of runs tagged."""
    from mlflow.entities import RunTag

    client = source.client()
    label = ",".join(map(str, result.objectives))
    if result.constraints:
        label += " | " + ",".join(map(str, result.constraints))
    ranked = dict(zip(result.ranked["run_id"], result.ranked["pareto_rank"]))
    for rid, rank in ranked.items():
        client.log_batch(rid, tags=[RunTag(RANK_TAG, str(int(rank))), RunTag(OBJECTIVES_TAG, label)])
    for rid in set(all_run_ids) - set(ranked):
        run = client.get_run(rid)
        for key in (RANK_TAG, OBJECTIVES_TAG):
            if key in run.data.tags:
                client.delete_tag(rid, key)
    return len(ranked)

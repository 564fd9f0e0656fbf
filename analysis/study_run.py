"""The study's own MLflow run as the answer to "which trial should I deploy?", in the browser.

At the end of `srstudy launch` (again after each resume) `publish_front` gives the study run

    front/front.csv, front/front.json   the Pareto front: trial name, Tune trial id, run id,
                                        searched settings, objective values, rank, knee
    front/pareto_front.png              one panel per pair of objectives (`plots.pairwise_front`)
    a description (`mlflow.note.content`, shown on the run's page): what the study searched
                                        (space, objectives, constraints, trials), its front
                                        and its knee, and where to find them

and every ranked trial run a `pareto_rank` tag (0 = the front; `load.tag_ranks`), so the
runs filter `tags.pareto_rank = '0'` shows the front. The front is computed from the trial
runs in MLflow, as `srstudy pareto` computes it: a metric no run measured is left out and said
so in the description, never filled with 0.
"""
from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from srstudy.objectives import Constraint, Objective, parse_constraints, parse_objectives
from srstudy.tracking import TUNE_TRIAL_TAG

from .front import FrontResult, analyse, finished_mask, fmt, measured, measured_objectives
from .load import load_runs, resolve_source, tag_ranks

FRONT_DIR = "front"
NOTE_TAG = "mlflow.note.content"
FRONT_FILTER = "tags.pareto_rank = '0'"


@dataclass
class PublishedFront:
    """What `publish_front` wrote: the front (None when no trial finished), the description,
    the artifact paths in the study run and what was left out of the ranking, and why."""

    result: FrontResult | None
    note: str
    artifacts: list[str]
    left_out: list[str] = field(default_factory=list)


def describe_space(search_space: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """Each searched setting's range in words: `int 1–4`, `int 8–24 step 8`, `float 0–1 log`,
    `one of 4, 8, 12` (from the study config's `ParamSpec`s, as dicts)."""
    out = {}
    for key, p in search_space.items():
        if p.get("type") == "categorical":
            out[key] = "one of " + ", ".join(map(str, p.get("choices") or []))
            continue
        text = f"{p.get('type')} {p.get('low'):g}–{p.get('high'):g}"
        text += f" step {p['step']:g}" if p.get("step") else ""
        out[key] = text + (" log" if p.get("log") else "")
    return out


def _measured_constraints(runs: pd.DataFrame, constraints: Sequence[Constraint], left_out: list[str]) -> list[Constraint]:
    """The constraints some finished run measured; each other one is noted as not applied."""
    done = runs[finished_mask(runs)] if len(runs) else runs
    kept = []
    for c in constraints:
        if len(done) and not measured(done, c.metric):
            left_out.append(f"constraint {c} not applied: {c.metric} was measured in no finished trial")
        else:
            kept.append(c)
    return kept


def front_table(result: FrontResult, runs: pd.DataFrame, settings: Sequence[str]) -> pd.DataFrame:
    """The front, one row per trial run: name, Tune trial id, run id, searched settings,
    objective values, rank and knee (the knee first)."""
    front = result.front.copy()
    tag = f"tag.{TUNE_TRIAL_TAG}"
    ids = dict(zip(runs["run_id"], runs[tag])) if tag in runs.columns else {}
    front[TUNE_TRIAL_TAG] = front["run_id"].map(ids)
    cols = ["run_name", TUNE_TRIAL_TAG, "run_id", *[s for s in settings if s in front.columns], *result.metrics,
            "pareto_rank", "knee"]
    return front.sort_values("knee", ascending=False, kind="stable")[cols].reset_index(drop=True)


def study_note(*, study: str, space: Mapping[str, str], objectives: Sequence[Objective],
               constraints: Sequence[Constraint], trials: Mapping[str, int], table: pd.DataFrame | None,
               result: FrontResult | None, left_out: Sequence[str]) -> str:
    """The study run's description (Markdown, as MLflow shows it on the run's page): the
    answer first (the knee and the front), then what the study searched."""
    counted = ", ".join(f"{n} {what}" for what, n in trials.items() if n) or "none ran"
    lines = [f"**Study `{study}`**: {sum(trials.values())} trials ({counted})."]
    if table is None or not len(table):
        lines += ["", "**No front**: no trial finished with every objective measured."]
    else:
        knee = table.iloc[0]
        lines += ["", f"**Knee** (the front's balanced choice): `{knee['run_name']}`: "
                  + ", ".join(f"{m} {fmt(knee[m])}" for m in result.metrics)
                  + f"; export it with `srstudy export --run-id {knee['run_id']} --out DIR`.", "",
                  f"**Front: {len(table)} trial(s)**, tagged `pareto_rank` = 0 (search the runs with "
                  f"`{FRONT_FILTER}`); table and plot in this run's artifacts `{FRONT_DIR}/front.csv`, "
                  f"`{FRONT_DIR}/front.json`, `{FRONT_DIR}/pareto_front.png`.", "",
                  "| trial | " + " | ".join(result.metrics) + " |", "|---|" + "---|" * len(result.metrics)]
        lines += [f"| `{r['run_name']}`{' ★' if r['knee'] else ''} | "
                  + " | ".join(fmt(r[m]) for m in result.metrics) + " |" for _, r in table.iterrows()]
    lines += ["", "**Searched** (multi-objective):", "", "| setting | range |", "|---|---|",
              *[f"| `{k}` | {v} |" for k, v in space.items()], "",
              "Objectives: " + ", ".join(f"`{o.metric}` ({'↑' if o.direction == 'max' else '↓'})" for o in objectives)
              + (". Constraints: " + ", ".join(f"`{c}`" for c in constraints) if constraints else "") + "."]
    lines += [f"Left out: {why}." for why in left_out]
    return "\n".join(lines)


def publish_front(tracking_uri: str, parent_run_id: str, *, objectives: Sequence[str | Objective],
                  constraints: Sequence[str | Constraint] = (), search_space: Mapping[str, Mapping[str, Any]],
                  trials: Mapping[str, int] | None = None, study: str | None = None) -> PublishedFront:
    """Rank the study's trial runs, tag their `pareto_rank`, and log the front (table, plot)
    and the description to the study run `parent_run_id`; see the module docstring.
    `trials`: counts by outcome (`{"done": 4, "pruned": 1, …}`; default: the runs' statuses)."""
    source = resolve_source(tracking_uri=tracking_uri, parent_run_id=parent_run_id)
    client = source.client()
    runs = load_runs(source)
    left_out: list[str] = []
    objs = parse_objectives(objectives)
    if len(runs) and finished_mask(runs).any():
        objs = measured_objectives(runs, objs, left_out.append)
    cons = _measured_constraints(runs, parse_constraints(list(constraints)), left_out)
    result = table = None
    if len(runs):
        result = analyse(runs, objs, cons)
        tag_ranks(source, result, runs["run_id"])
        table = front_table(result, runs, list(search_space))
    if trials is None:
        trials = runs["status"].str.lower().value_counts().to_dict() if len(runs) else {}
    study = study or client.get_run(parent_run_id).data.tags.get("study", parent_run_id)
    note = study_note(study=study, space=describe_space(search_space), objectives=objs, constraints=cons,
                      trials=trials, table=table, result=result, left_out=left_out)
    artifacts = _log_front(client, parent_run_id, result, table) if table is not None and len(table) else []
    client.set_tag(parent_run_id, NOTE_TAG, note)
    return PublishedFront(result, note, artifacts, left_out)


def _log_front(client, run_id: str, result: FrontResult, table: pd.DataFrame) -> list[str]:
    """Write the front's CSV, JSON and plot and log them under `front/` of the run."""
    import matplotlib.pyplot as plt

    from .plots import pairwise_front

    with tempfile.TemporaryDirectory(prefix="srstudy-front-") as tmp:
        out = Path(tmp)
        table.to_csv(out / "front.csv", index=False)
        (out / "front.json").write_text(json.dumps({
            "objectives": [str(o) for o in result.objectives], "constraints": [str(c) for c in result.constraints],
            "hypervolume": result.hypervolume, "knee_run_id": result.knee_run_id,
            "excluded": result.exclusion_counts(), "filter": FRONT_FILTER,
            "front": json.loads(table.to_json(orient="records", double_precision=15)),
        }, indent=1))
        fig = pairwise_front(result, out / "pareto_front.png")
        plt.close(fig)
        names = sorted(p.name for p in out.iterdir())
        client.log_artifacts(run_id, str(out), FRONT_DIR)
    return [f"{FRONT_DIR}/{n}" for n in names]

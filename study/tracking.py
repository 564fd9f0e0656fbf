"""MLflow: one run per trial, resumable into the same run after a crash.

Default store: a sqlite file under the working directory (`srstudy.workdir.StudyDir`:
`<workdir>/mlflow.db`, artifacts in `<workdir>/artifacts`); any tracking URI is accepted.
Everything goes through an explicit `MlflowClient` (no process-global active run), so trials
in Ray workers, the CLI and tests never step on each other.
"""
from __future__ import annotations

import functools
import logging
import math
import subprocess
import time
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger("srstudy.tracking")

PARENT_TAG = "mlflow.parentRunId"
GIT_TAG = "mlflow.source.git.commit"
# What MLflow's own UI writes when a user picks the experiment's kind; MLflow 3 otherwise
# guesses GenAI and opens a study's experiment on an empty traces page.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING_KIND = "custom_model_development"
TUNE_TRIAL_TAG = "tune_trial_id"


def _client(tracking_uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def ensure_experiment(tracking_uri: str, name: str, artifact_root: str | Path | None = None) -> str:
    """The id of experiment `name`, created (with artifacts under `artifact_root`) if absent.

    The experiment is tagged as a model-training one (`mlflow.experimentKind`), also when it
    exists without the tag, so the MLflow browser shows its runs; a kind a user chose is kept.
    """
    client = _client(tracking_uri)
    exp = client.get_experiment_by_name(name)
    if exp is None:
        location = Path(artifact_root).expanduser().resolve().as_uri() if artifact_root else None
        try:
            return client.create_experiment(name, artifact_location=location,
                                            tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND})
        except Exception:  # created concurrently by another trial
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise
    if exp.lifecycle_stage == "deleted":
        client.restore_experiment(exp.experiment_id)
    if EXPERIMENT_KIND_TAG not in exp.tags:
        client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND)
    return exp.experiment_id


def browser_links(tracking_uri: str, study_run_id: str, base_url: str = "http://127.0.0.1:5000") -> dict[str, str]:
    """Addresses in the MLflow browser (`mlflow ui` at `base_url`) of a study: `study_run` (its
    description, front table and plot) and `trials` (the trial runs flat, best validation PSNR
    first). Both ask for the model-training pages (`workflowType=machine_learning`): MLflow 3.x
    picks GenAI or model-training pages from the address or the browser's last choice, not from
    the experiment's kind tag. The trials are flat because the list is sorted by a metric (sorted
    by creation time, MLflow nests them, collapsed, under the study run)."""
    exp_id = _client(tracking_uri).get_run(study_run_id).info.experiment_id
    base = f"{base_url.rstrip('/')}/#/experiments/{exp_id}/runs"
    trials = urllib.parse.urlencode({"workflowType": "machine_learning", "searchFilter": "tags.role = 'trial'",
                                     "orderByKey": "metrics.`val_psnr`", "orderByAsc": "false"})
    return {"study_run": f"{base}/{study_run_id}?workflowType=machine_learning", "trials": f"{base}?{trials}"}


# Short names for the settings a study searches: `student.rank=2, alpha=0.8, student.embed_dim=32,
# student.n_groups=4` → "r2-a0.80-c32-g4" (C is the paper's embedding width).
_SHORT = {"rank": "r", "alpha": "a", "embed_dim": "c", "n_groups": "g", "blocks_per_group": "b", "lr": "lr",
          "d_state": "n", "expand": "e", "d_conv": "k", "lowrank_proj": "lp", "batch_size": "bs",
          "patch_size": "p", "iterations": "it", "precision": "prec", "bank_patches": "bank"}


def _short_key(path: list[str]) -> str:
    last = path[-1]
    return _SHORT.get(last) or "".join(w[0] for w in last.split("_") if w)


def _short_value(v: Any) -> str:
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, float):
        if v == 0 or 0.01 <= abs(v) < 1000:
            return f"{v:.2f}"
        return f"{v:.2g}"
    return str(v)


def trial_run_name(params: Mapping[str, Any]) -> str:
    """A trial run's name from its searched settings, in search-space order, so runs can be
    told apart in the MLflow browser: {"student.rank": 2, "alpha": 0.8, "student.embed_dim": 32,
    "student.n_groups": 4} → "r2-a0.80-c32-g4". Two settings that would share a letter are
    prefixed with their section's initials (`teacher.arch.rank` → "tar"). Not a unique id
    (a sampler may repeat settings): the Tune trial id is the run's `tune_trial_id` tag."""
    paths = [k.split(".") for k in params]
    shorts = [_short_key(p) for p in paths]
    shared = {s for s in shorts if shorts.count(s) > 1}
    shorts = ["".join(part[0] for part in p[:-1]) + s if s in shared else s for p, s in zip(paths, shorts)]
    return "-".join(s + _short_value(v) for s, v in zip(shorts, params.values())) or "trial"


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The srstudy source tree's git commit, when it is a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
            capture_output=True, text=True, timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _stringify(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(_stringify(x) for x in v) + "]"
    return "None" if v is None else str(v)


class TrialRun:
    """One MLflow run of a trial: create it, or reopen an existing id after a restart."""

    def __init__(self, tracking_uri: str, run_id: str) -> None:
        self.tracking_uri = tracking_uri
        self.run_id = run_id
        self.client = _client(tracking_uri)

    @classmethod
    def start(
        cls,
        *,
        tracking_uri: str,
        experiment: str,
        run_name: str | None = None,
        run_id: str | None = None,
        parent_run_id: str | None = None,
        artifact_root: str | Path | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> "TrialRun":
        """Reopen `run_id` (resume: same run, status back to RUNNING) or create a new run."""
        client = _client(tracking_uri)
        if run_id is not None:
            client.update_run(run_id, status="RUNNING")
            log.info("resuming MLflow run %s", run_id)
            run = cls(tracking_uri, run_id)
        else:
            exp_id = ensure_experiment(tracking_uri, experiment, artifact_root)
            all_tags = dict(tags or {})
            if parent_run_id:
                all_tags[PARENT_TAG] = parent_run_id
            commit = git_commit()
            if commit:
                all_tags[GIT_TAG] = commit
            created = client.create_run(exp_id, run_name=run_name, tags=all_tags)
            run = cls(tracking_uri, created.info.run_id)
        return run

    @staticmethod
    def find_open(*, tracking_uri: str, experiment: str, tags: Mapping[str, str]) -> str | None:
        """The id of the newest unfinished run of `experiment` carrying all `tags`, or None.

        Why: a trial creates its MLflow run (tagged with its folder) and then records the run's
        id in that folder; a kill -9 between the two leaves a run nobody knows. The restarted
        trial adopts it instead of creating a second run for the same trial.
        """
        client = _client(tracking_uri)
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            return None
        # values with quotes stay out of MLflow's filter string; every tag is checked below
        where = " and ".join(f"tags.{k} = '{v}'" for k, v in tags.items() if "'" not in str(v) and "\\" not in str(v))
        runs = client.search_runs([exp.experiment_id], filter_string=where, order_by=["attributes.start_time DESC"])
        open_runs = [r for r in runs if r.info.status in ("RUNNING", "SCHEDULED", "KILLED")
                     and all(r.data.tags.get(k) == str(v) for k, v in tags.items())]
        return open_runs[0].info.run_id if open_runs else None

    # ---- logging ----------------------------------------------------------------------------
    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log params (values stringified; re-logging the same value on resume is fine)."""
        from mlflow.entities import Param

        existing = self.client.get_run(self.run_id).data.params
        fresh = [Param(k, _stringify(v)[:6000]) for k, v in params.items() if k not in existing]
        for i in range(0, len(fresh), 100):
            self.client.log_batch(self.run_id, params=fresh[i : i + 100])

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Log finite metrics; None and non-finite values are skipped, never written as 0."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [
            Metric(k, float(v), now, step or 0)
            for k, v in metrics.items()
            if v is not None and math.isfinite(float(v))
        ]
        for i in range(0, len(batch), 500):
            self.client.log_batch(self.run_id, metrics=batch[i : i + 500])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        batch = [RunTag(k, str(v)) for k, v in tags.items() if v is not None]
        if batch:
            self.client.log_batch(self.run_id, tags=batch)

    def delete_tags(self, keys) -> None:
        """Remove these tags (e.g. failure tags once a re-run repaired what they reported)."""
        for key in keys:
            self.client.delete_tag(self.run_id, key)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def finish(self, status: str = "FINISHED") -> None:
        """Mark the run FINISHED (or FAILED / KILLED)."""
        self.client.set_terminated(self.run_id, status=status)

    def ensure_finished(self) -> bool:
        """Mark FINISHED a run whose trial finished but whose status was never closed.

        A crash between writing the trial's result file and closing the run leaves the
        run RUNNING; the next start of the trial repairs it here. True when it did.
        """
        if self.client.get_run(self.run_id).info.status == "FINISHED":
            return False
        self.finish("FINISHED")
        return True

    # ---- reading back -------------------------------------------------------------------------
    def data(self):
        return self.client.get_run(self.run_id).data

    def params_if_exists(self) -> dict[str, str] | None:
        """The run's params, or None when the store has no such run (a folder that names a run
        of another store, say)."""
        from mlflow.exceptions import MlflowException

        try:
            return dict(self.data().params)
        except MlflowException:
            return None

    def artifact_paths(self, path: str | None = None) -> list[str]:
        """Every artifact file path in the run (recursively)."""
        out = []
        for info in self.client.list_artifacts(self.run_id, path):
            out.extend(self.artifact_paths(info.path) if info.is_dir else [info.path])
        return out

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
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger("srstudy.tracking")

PARENT_TAG = "mlflow.parentRunId"
GIT_TAG = "mlflow.source.git.commit"


def _client(tracking_uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def ensure_experiment(tracking_uri: str, name: str, artifact_root: str | Path | None = None) -> str:
    """The id of experiment `name`, created (with artifacts under `artifact_root`) if absent."""
    client = _client(tracking_uri)
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            client.restore_experiment(exp.experiment_id)
        return exp.experiment_id
    location = Path(artifact_root).expanduser().resolve().as_uri() if artifact_root else None
    try:
        return client.create_experiment(name, artifact_location=location)
    except Exception:  # created concurrently by another trial
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


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

    def artifact_paths(self, path: str | None = None) -> list[str]:
        """Every artifact file path in the run (recursively)."""
        out = []
        for info in self.client.list_artifacts(self.run_id, path):
            out.extend(self.artifact_paths(info.path) if info.is_dir else [info.path])
        return out

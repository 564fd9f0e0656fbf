"""What a study prints: the live table of trials (status, searched settings, objectives), and
the one-line summary of each trial that failed; the MLflow bookkeeping of pruned trials.

A trial that stopped before its final report was either **pruned** (ASHA stopped it: Tune
calls ``on_trial_complete`` and its MLflow run is ended KILLED with ``pruned=true``) or
**interrupted** (the launcher got SIGINT/Ctrl+C: Tune saves the experiment with the trial
still RUNNING, stops its worker without ``on_trial_complete``, and the MLflow run stays
RUNNING; ``srstudy launch --resume`` continues it from its last checkpoint). `trial_outcome`
is the one rule for both the live table and the study's rows."""
from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .. import ray_api
from ..config import StudyConfig
from ..tracking import TrialRun

log = logging.getLogger("srstudy.launch")


OUTCOMES = ("done", "pruned", "interrupted", "skipped", "error")


def trial_outcome(result: dict[str, Any] | None, *, error: bool, pruned: bool) -> str:
    """done | pruned | interrupted | skipped | error for a trial that is no longer running.

    ``result``: its last report; ``pruned``: ASHA stopped it (its MLflow run says
    ``pruned=true``). Not final and not pruned means the study was interrupted under it.
    """
    res = result or {}
    if error:
        return "error"
    if res.get("constraint_violated"):
        return "skipped"
    if res.get("final"):
        return "done"
    return "pruned" if pruned else "interrupted"


def run_was_pruned(tracking_uri: str, run_id: str | None) -> bool:
    """Whether the trial's MLflow run carries ``pruned=true`` (set when ASHA stopped it)."""
    if not run_id:
        return False
    try:
        return str(TrialRun(tracking_uri, run_id).data().tags.get("pruned", "")).lower() == "true"
    except Exception as e:  # noqa: BLE001 - a missing run is not a pruned one
        log.warning("could not read MLflow run %s: %s", run_id, e)
        return False


_restoring: StudyProgress | None = None  # this launch's progress while Tune restores a study


@contextlib.contextmanager
def restoring_as(progress: StudyProgress) -> Iterator[None]:
    """While restoring a study, Tune's pickled `StudyProgress` becomes `progress` (this launch's).

    Tune keeps the callbacks of the launch that started a study in its pickle and uses those
    on `Tuner.restore`, not the ones of the launch that resumes it.
    """
    global _restoring
    before, _restoring = _restoring, progress
    try:
        yield
    finally:
        _restoring = before


def close_forgotten_runs(tracking_uri: str, experiment: str, parent_run_id: str) -> list[str]:
    """After a study that ran to its end: end as KILLED (tags `forgotten=true` and why) the trial
    runs of this study still RUNNING. Tune saves its experiment state every few seconds, so a
    trial started just before the launcher was killed (kill -9) may be absent from it: `--resume`
    samples another trial in its place, and the first one's run would stay RUNNING forever.
    Returns their run ids. Not after an interrupted study (its open runs are resumed)."""
    from mlflow import MlflowClient

    from ..tracking import PARENT_TAG

    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    runs = client.search_runs([exp.experiment_id], filter_string=(
        f"tags.role = 'trial' and tags.`{PARENT_TAG}` = '{parent_run_id}' and attributes.status = 'RUNNING'"))
    for r in runs:
        TrialRun(tracking_uri, r.info.run_id).set_tags({
            "forgotten": "true", "forgotten_reason": "its Tune trial was not in the experiment state saved before "
                                                     "the launcher died; --resume ran another trial in its place"})
        TrialRun(tracking_uri, r.info.run_id).finish("KILLED")
    return [r.info.run_id for r in runs]


class StudyProgress(ray_api.Callback):
    """Prints a table of trials (status, config, objectives) every `every_s` and at the end;
    ends the MLflow runs of pruned trials as KILLED with `pruned=true`."""

    def __init__(self, study: StudyConfig, objectives: list[str], tracking_uri: str, console: Console,
                 every_s: float = 15.0) -> None:
        self.study, self.objectives, self.tracking_uri = study, objectives, tracking_uri
        self.console, self.every_s = console, every_s
        self._last = 0.0
        self._pruned: dict[str, bool] = {}  # trial id -> ASHA stopped it (MLflow looked up once)

    def __getstate__(self):  # Tune pickles its callbacks with the experiment state
        return {k: v for k, v in self.__dict__.items() if k != "console"}

    def __setstate__(self, state):
        """Tune's restore unpickles the callback of the launch that started the study, which may
        be an older srstudy (a missing attribute crashed a resumed H200 study) or another workdir
        path: inside :func:`restoring_as` it becomes this launch's, else a fresh one from the
        pickled settings (runtime caches start empty)."""
        if _restoring is not None:
            self.__dict__.update(_restoring.__dict__)
            return
        self.__init__(state["study"], state["objectives"], state["tracking_uri"], Console(stderr=True),
                      state.get("every_s", 15.0))

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if time.time() - self._last > self.every_s:
            self._last = time.time()
            self._print_table(trials)

    def _print_table(self, trials) -> None:
        """The live table; a failure to draw it is logged, never raised (an exception in a Tune
        callback ends `Tuner.fit`, the whole study: a resumed H200 study died so)."""
        try:
            self.console.print(trials_table(self.study, self.objectives, trials, self.was_pruned))
        except Exception as e:  # noqa: BLE001 - the display must not stop the study
            log.warning("could not print the trials table: %s: %s", type(e).__name__, e, exc_info=e)

    def was_pruned(self, trial) -> bool:
        """ASHA stopped this trial (in this launch, or in an earlier one per its MLflow run)."""
        if trial.trial_id not in self._pruned:
            self._pruned[trial.trial_id] = run_was_pruned(self.tracking_uri,
                                                          (trial.last_result or {}).get("mlflow_run_id"))
        return self._pruned[trial.trial_id]

    def on_trial_complete(self, iteration, trials, trial, **info):
        res = trial.last_result or {}
        run_id = res.get("mlflow_run_id")
        if not res.get("final") and not res.get("constraint_violated"):
            self._pruned[trial.trial_id] = True  # Tune calls this for a scheduler stop, not for an interruption
        if run_id and not res.get("final"):
            try:
                run = TrialRun(self.tracking_uri, run_id)
                run.set_tags({"pruned": "true", "pruned_at_iteration": res.get("iteration")})
                run.finish("KILLED")
            except Exception as e:  # noqa: BLE001 - bookkeeping must not stop the study
                log.warning("could not mark MLflow run %s as pruned: %s", run_id, e)

    def on_experiment_end(self, trials, **info):
        self._print_table(trials)


def _status(trial, was_pruned) -> str:
    res = trial.last_result or {}
    if trial.status == "TERMINATED":
        outcome = trial_outcome(res, error=False, pruned=(not res.get("final") and was_pruned(trial)))
        return {"skipped": "skipped (constraint)", "done": "done"}.get(outcome, f"{outcome} @ {res.get('iteration')}")
    return trial.status.lower()


def trials_table(study: StudyConfig, objectives: list[str], trials, was_pruned=lambda trial: True) -> Table:
    table = Table(title=f"study {study.name}: {len(trials)} trial(s)")
    table.add_column("trial")
    table.add_column("status")
    for key in study.search_space:
        table.add_column(key.rsplit(".", 1)[-1], justify="right")
    table.add_column("iter", justify="right")
    for m in objectives:
        table.add_column(m, justify="right")
    for t in trials:
        res = t.last_result or {}
        cfg = t.config or {}
        row = [t.trial_id, _status(t, was_pruned)]
        row += [_fmt(cfg.get(k)) for k in study.search_space]
        row.append(str(res.get("iteration", "")))
        row += [_fmt(res.get(m)) if res.get("final") or m == "val_psnr" else "" for m in objectives]
        table.add_row(*row)
    return table


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


# ---- failed trials ------------------------------------------------------------------------------
TUNE_ERROR_FILE = "error.txt"  # what Tune writes into an errored trial's folder (ray.tune.result.EXPR_ERROR_FILE)


def trial_error(result) -> dict[str, Any]:
    """`{"error": its last line, "error_file": Tune's error.txt}` for an errored Tune `Result`,
    else `{}`. The last line of the error file is the exception that ended the trial's last attempt."""
    if not result.error:
        return {}
    path = Path(result.path) / TUNE_ERROR_FILE if result.path else None
    text = path.read_text(errors="replace") if path is not None and path.is_file() else str(result.error)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return {"error": lines[-1] if lines else type(result.error).__name__,
            "error_file": str(path) if path is not None and path.is_file() else None}


def failed_trial_lines(rows: list[dict[str, Any]]) -> list[str]:
    """One line per errored trial: its id, the error's last line and where the full error is."""
    return [f"trial {r.get('trial_id')} failed: {r.get('error')} (full error: {r.get('error_file') or 'not written'})"
            for r in rows if r.get("status") == "error"]


def print_failed_trials(rows: list[dict[str, Any]], console: Console, workdir: Path) -> int:
    """Print a line per errored trial (unwrapped) and how to run them again; returns how many."""
    failed = failed_trial_lines(rows)
    for line in failed:
        console.print(f"[bold red]error:[/] {escape(line)}", soft_wrap=True)
    if failed:
        console.print(f"[bold red]{len(failed)} of {len(rows)} trial(s) failed[/]; fix the cause, then "
                      f"`srstudy launch --resume --workdir {workdir}` runs them again", soft_wrap=True)
    return len(failed)

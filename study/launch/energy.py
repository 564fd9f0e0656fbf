"""The launcher's side of GPU energy you can rank (docs/energy_attribution.md §1 and §4).

    open_study_energy(...)     idle baseline once per GPU per study, before the teacher task
                               or any trial touches the GPU (a resume only reads it)
    StudyEnergy.start()        the attribution sampler, right before Tuner.fit()
    StudyEnergy.stop()         in the launcher's finally, before Ray shuts down
    StudyEnergy.log_results()  each trial's `gpu_energy_attributed_j` to its MLflow run (and
                               its row), the study's totals and tags to the parent run

Energy accounting never fails a study nor loses a trial's result: each stage that fails is
logged as the parent run's tag `energy_accounting_error.<stage>` (the error's last line) and
the study goes on. A study that requests no GPU, or a node without NVML, gets the tag
`energy_accounting_unavailable_reason` instead, and nothing else runs (no NVML call on CPU).
"""
from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from typing import Any

from ..config import StudyConfig
from ..measure.study_session import StudyEnergySession
from ..tracking import TrialRun
from ..workdir import StudyDir

log = logging.getLogger("srstudy.launch")

__all__ = ["ERROR_TAG_PREFIX", "UNAVAILABLE_TAG", "StudyEnergy", "open_study_energy"]

UNAVAILABLE_TAG = "energy_accounting_unavailable_reason"
ERROR_TAG_PREFIX = "energy_accounting_error."


def _guarded(parent: TrialRun, stage: str, work: Callable[[], Any]) -> Any:
    """Run `work()`; on failure log it, tag the parent run with the error's last line, return None."""
    try:
        return work()
    except Exception as exc:  # noqa: BLE001 - energy accounting must never fail the study
        last = traceback.format_exception_only(type(exc), exc)[-1].strip()
        log.warning("energy accounting: %s failed (%s); the study goes on without it", stage, last, exc_info=exc)
        try:
            parent.set_tags({ERROR_TAG_PREFIX + stage: last[:500]})
        except Exception as tag_err:  # noqa: BLE001 - the warning above still says it
            log.warning("could not tag the study's run with the energy accounting error: %s", tag_err)
        return None


class StudyEnergy:
    """A `StudyEnergySession` whose every stage is guarded (see the module docstring)."""

    def __init__(self, session: StudyEnergySession, parent: TrialRun) -> None:
        self.session, self.parent = session, parent

    def start(self) -> None:
        """Start sampling each GPU for attribution (right before the trials start)."""
        _guarded(self.parent, "sampler_start", self.session.start)

    def stop(self) -> None:
        """Stop the samplers (each takes a last sample)."""
        _guarded(self.parent, "sampler_stop", self.session.stop)

    def log_results(self, rows: list[dict[str, Any]], tracking_uri: str) -> None:
        """Attribute the GPUs' energy to the trials; log it to the trials' runs, the totals to the parent run."""
        results = _guarded(self.parent, "attribution", self.session.results)
        if results is not None:
            log_attribution(*results, rows=rows, parent=self.parent, tracking_uri=tracking_uri)


def open_study_energy(study: StudyConfig, workdir: StudyDir, parent: TrialRun) -> StudyEnergy | None:
    """Take (or read) each GPU's idle baseline for the study and tag the parent run with it.

    Call before any GPU work of the study. None, with the parent's tag saying why, when the
    study requests no GPU or NVML cannot serve this node; None after a tagged failure.
    """
    if study.resources.gpu <= 0:
        _guarded(parent, "tags", lambda: parent.set_tags({UNAVAILABLE_TAG: "the study requests no GPU "
                                                                          "(resources.gpu = 0)"}))
        return None
    session = _guarded(parent, "open", lambda: StudyEnergySession.for_node(workdir.path))
    if isinstance(session, str):
        _guarded(parent, "tags", lambda: parent.set_tags({UNAVAILABLE_TAG: session}))
        return None
    if session is None:
        return None

    def baselines() -> bool:
        taken = session.take_idle_baselines()
        parent.set_tags({f"gpu_idle_power_w.{uuid}": (f"{b.idle_power_w:.3f}" if b.idle_power_w is not None
                                                       else f"absent: {b.reason}") for uuid, b in taken.items()})
        return True

    if not _guarded(parent, "idle_baseline", baselines):
        return None
    return StudyEnergy(session, parent)


def log_attribution(per_trial: dict[str, dict[str, float]], totals: dict[str, float], tags: dict[str, str], *,
                    rows: list[dict[str, Any]], parent: TrialRun, tracking_uri: str) -> None:
    """Log `StudyEnergySession.results()`: each row's trial (keyed by Tune's trial id) gets its
    metrics on its MLflow run (a finished run takes metrics; its status is unchanged) and in the
    row; the parent run gets the totals and tags. One trial's failure does not stop the others."""
    for row in rows:
        metrics = per_trial.get(row.get("trial_id") or "")
        if not metrics or not row.get("mlflow_run_id"):
            continue
        if _guarded(parent, f"trial_{row['trial_id']}",
                    lambda: TrialRun(tracking_uri, row["mlflow_run_id"]).log_metrics(metrics) or True):
            row.update(metrics)
    _guarded(parent, "totals", lambda: (parent.log_metrics(totals), parent.set_tags(tags)))

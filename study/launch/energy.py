"""The launcher's side of GPU energy you can rank (docs/energy_attribution.md §1 and §4).

    open_study_energy(...)     idle baseline once per GPU per study, on the launcher's node and
                               (through `node_energy`'s pinned actors) on every other GPU node,
                               before the teacher task or any trial touches a GPU (a resume
                               only reads it)
    StudyEnergy.start()        the attribution samplers, right before Tuner.fit()
    StudyEnergy.stop()         in the launcher's finally, before Ray shuts down; the other
                               nodes' attribution is computed on them and collected here
    StudyEnergy.log_results()  each trial's `gpu_energy_attributed_j` to its MLflow run (and
                               its row), the study's totals (summed over nodes) and tags to
                               the parent run

Energy accounting never fails a study nor loses a trial's result: each stage that fails is
logged as the parent run's tag `energy_accounting_error.<stage>` (the error's last line; a
remote node's stage ends in `.node-<node id>`) and the study goes on. A study that requests
no GPU gets the tag `energy_accounting_unavailable_reason` and nothing else runs (no NVML call
on CPU); a launcher's node without NVML gets the same tag, and the other nodes are still
accounted for; another node that cannot account gets
`energy_accounting_unavailable_reason.node-<node id>`.
"""
from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from typing import Any

from ..config import StudyConfig
from ..measure.idle import IdleBaseline
from ..measure.study_session import NodeEnergyResults, StudyEnergySession, merge_results
from ..tracking import TrialRun
from ..workdir import StudyDir
from .node_energy import RemoteNodeEnergy

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
    """The launcher's `StudyEnergySession` (None where its node cannot account) and the other GPU
    nodes' actors (`RemoteNodeEnergy`), every stage guarded (see the module docstring)."""

    def __init__(self, session: StudyEnergySession | None, parent: TrialRun,
                 remote: RemoteNodeEnergy | None = None) -> None:
        self.session, self.parent = session, parent
        self.remote = remote or RemoteNodeEnergy([], self._guard)
        self.remote_results: list[NodeEnergyResults] = []

    def _guard(self, stage: str, work: Callable[[], Any]) -> Any:
        return _guarded(self.parent, stage, work)

    def start(self) -> None:
        """Start sampling each GPU for attribution, on every node (right before the trials start)."""
        if self.session is not None:
            _guarded(self.parent, "sampler_start", self.session.start)
        self.remote.start()

    def stop(self) -> None:
        """Stop the samplers (each takes a last sample); collect the other nodes' attribution
        now, while Ray is still up."""
        if self.session is not None:
            _guarded(self.parent, "sampler_stop", self.session.stop)
        self.remote_results = self.remote.stop_and_collect()

    def log_results(self, rows: list[dict[str, Any]], tracking_uri: str) -> None:
        """Attribute the GPUs' energy to the trials (this node's here, the others' as collected by
        `stop`); log it to the trials' runs, the merged totals to the parent run."""
        parts = list(self.remote_results)
        if self.session is not None:
            local = _guarded(self.parent, "attribution", self.session.node_results)
            parts += [local] if local is not None else []
        results = _guarded(self.parent, "attribution_merge", lambda: merge_results(parts)) if parts else None
        if results is not None:
            log_attribution(*results, rows=rows, parent=self.parent, tracking_uri=tracking_uri)


def open_study_energy(study: StudyConfig, workdir: StudyDir, parent: TrialRun) -> StudyEnergy | None:
    """Take (or read) each GPU's idle baseline for the study, on every GPU node, and tag the parent run with it.

    Call before any GPU work of the study. The launcher's node gets its own session; every other
    alive GPU node of the cluster gets a pinned actor (`node_energy`). None, with the parent's tag
    saying why, when the study requests no GPU or no node can account; a node that cannot is
    tagged and left out.
    """
    if study.resources.gpu <= 0:
        _guarded(parent, "tags", lambda: parent.set_tags({UNAVAILABLE_TAG: "the study requests no GPU "
                                                                          "(resources.gpu = 0)"}))
        return None

    def tag(tags: dict[str, str]) -> None:
        _guarded(parent, "tags", lambda: parent.set_tags(tags))

    session = _guarded(parent, "open", lambda: StudyEnergySession.for_node(workdir.path))
    if isinstance(session, str):
        tag({UNAVAILABLE_TAG: session})
        session = None
    claimed = set(session.handles) if session is not None else set()
    remote = _guarded(parent, "remote_nodes", lambda: RemoteNodeEnergy.open(
        str(workdir.path), lambda stage, work: _guarded(parent, stage, work), tag, claimed=claimed))

    def tag_baselines(taken: dict[str, IdleBaseline]) -> bool:
        parent.set_tags({f"gpu_idle_power_w.{uuid}": (f"{b.idle_power_w:.3f}" if b.idle_power_w is not None
                                                       else f"absent: {b.reason}") for uuid, b in taken.items()})
        return True

    if session is not None and not _guarded(parent, "idle_baseline",
                                            lambda: tag_baselines(session.take_idle_baselines())):
        session = None
    if remote is not None and remote.nodes:
        _guarded(parent, "tags", lambda: tag_baselines(remote.take_idle_baselines()))
    if session is None and (remote is None or not remote.nodes):
        return None
    return StudyEnergy(session, parent, remote)


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

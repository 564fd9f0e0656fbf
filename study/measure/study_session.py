"""The launcher's side of GPU energy accounting: idle baselines first, a sampler per GPU, totals at the end.

Why in the launcher: the idle baseline must be taken before any trial puts a process on the
GPU, and the attribution sampler must watch the whole study — both outlive any one trial.
One session runs on each GPU node of the study, over the GPUs NVML sees there: the
launcher's own, and on a Ray cluster one per other GPU node inside a pinned Ray actor
(``srstudy.launch.node_energy``). Each does::

    energy = StudyEnergySession.for_node(workdir)     # the reason (str) where NVML is unavailable
    energy.take_idle_baselines()                      # before the teacher task and the Tuner
    energy.start()                                    # right before Tuner.fit()
    ...
    energy.stop()
    part = energy.node_results()                      # this node's GPUs, computed on this node

and the launcher merges the nodes' parts (:func:`merge_results`): per_trial[trial_id] → the
trial's run, the summed totals → the parent run. ``workdir`` is the study's folder as seen on
that node (node-local on a real cluster); every file in it is keyed by GPU UUID, so nodes that
share one folder (tests) never count each other's GPUs. Nodes that join after the study
started are not accounted for (docs/energy_attribution.md).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .attribution import AttributionSampler, attribute, load_trial_pids, read_samples, samples_path, trials_span
from .gpu_lock import lock_key, read_waits
from .idle import IdleBaseline, ensure_idle_baseline, read_idle_baseline
from .nvml import nvml_failure, open_nvml

__all__ = ["ADDITIVE_TOTALS", "NodeEnergyResults", "StudyEnergySession", "calibration_metrics", "calibration_sums",
           "merge_results", "node_results", "study_results"]

#: the study totals that add up over GPUs and nodes (the ratio and the overhead are recomputed)
ADDITIVE_TOTALS = ("gpu_energy_study_measured_j", "gpu_energy_attributed_sum_j", "gpu_energy_no_process_j",
                   "gpu_energy_unregistered_j")


def calibration_sums(workdir: str | os.PathLike, uuids: list[str] | None = None) -> dict[str, float]:
    """What exclusive windows cost, from the lock's waits log of the GPUs ``uuids`` (None: all).

    ``calibration_wait_s``: Σ time trials waited to get their windows; ``exclusive_window_s``:
    Σ time GPUs ran one trial alone for a window; ``exclusive_windows``: how many. Empty when
    no window was logged. Sums, so nodes' values add up.
    """
    keys = None if uuids is None else {lock_key(u) for u in uuids}
    windows = [w for w in read_waits(workdir)
               if w.get("label") == "energy_window" and (keys is None or w.get("gpu") in keys)]
    if not windows:
        return {}
    return {"calibration_wait_s": sum(w["wait_s"] for w in windows),
            "exclusive_window_s": sum(w.get("hold_s") or 0.0 for w in windows),
            "exclusive_windows": float(len(windows))}


def calibration_metrics(workdir: str | os.PathLike, span_s: float | None,
                        uuids: list[str] | None = None) -> dict[str, float]:
    """:func:`calibration_sums` plus ``calibration_overhead``: the wait ÷ the study's span
    (``span_s``, first trial start to last end)."""
    out = calibration_sums(workdir, uuids)
    if out and span_s:
        out["calibration_overhead"] = out["calibration_wait_s"] / span_s
    return out


class StudyEnergySession:
    """Idle baselines and attribution samplers for every GPU NVML sees on this node."""

    def __init__(self, workdir: str | os.PathLike, api, *, hz: float = 2.0, idle_kwargs: dict | None = None) -> None:
        self.workdir = Path(workdir).expanduser().resolve()
        self.api, self.hz, self.idle_kwargs = api, hz, idle_kwargs or {}
        self.handles = {api.uuid(h): h for h in api.handles()}
        self.samplers: dict[str, AttributionSampler] = {}

    @classmethod
    def for_node(cls, workdir: str | os.PathLike, **kwargs) -> "StudyEnergySession | str":
        """A session over this node's GPUs, or the reason there is none (no NVML, no GPU)."""
        api, reason = open_nvml()
        if api is None:
            return reason
        try:
            return cls(workdir, api, **kwargs)
        except Exception as err:  # noqa: BLE001 - pynvml.NVMLError and friends
            return nvml_failure(err)

    def take_idle_baselines(self) -> dict[str, IdleBaseline]:
        """Each GPU's idle baseline for the study (taken once, stored in ``<workdir>/gpu_idle.json``)."""
        return {uuid: ensure_idle_baseline(self.workdir, self.api, h, own_pids=[os.getpid()], **self.idle_kwargs)
                for uuid, h in self.handles.items()}

    def start(self) -> None:
        """Start one attribution sampler thread per GPU."""
        for uuid, h in self.handles.items():
            self.samplers[uuid] = AttributionSampler(self.api, h, samples_path(self.workdir, uuid), hz=self.hz).start()

    def stop(self) -> None:
        """Stop the samplers (each takes a last sample)."""
        for sampler in self.samplers.values():
            sampler.stop()

    def results(self) -> tuple[dict[str, dict[str, float]], dict[str, float], dict[str, str]]:
        """``(per_trial_metrics, study_metrics, study_tags)`` from the samples files of the study."""
        return study_results(self.workdir, list(self.handles))

    def node_results(self) -> NodeEnergyResults:
        """This node's part of the study's results, to merge with other nodes' (:func:`merge_results`)."""
        return node_results(self.workdir, list(self.handles))


@dataclass
class NodeEnergyResults:
    """One node's attribution, to be merged with the other nodes' (:func:`merge_results`).

    ``per_trial``: ``{trial: {"gpu_energy_attributed_j": J}}``; ``totals``: the additive study
    sums (measured, attributed, no process, unregistered, calibration wait/window/count);
    ``tags``: per-GPU reasons; ``span``: ``(first trial start, last end)`` on this node's GPUs.
    Plain data, so a node's actor can return it over Ray.
    """

    per_trial: dict[str, dict[str, float]] = field(default_factory=dict)
    totals: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    span: tuple[float, float] | None = None


def node_results(workdir: str | os.PathLike, uuids: list[str]) -> NodeEnergyResults:
    """Attribute each of ``uuids``' energy over the span of its trials (on the node that holds them).

    Only registrations, samples and lock waits of these GPUs count (every file is keyed by GPU
    UUID), so nodes that share one workdir folder never count each other's GPUs.
    """
    regs_all = load_trial_pids(workdir)
    out = NodeEnergyResults()
    spans = []
    for uuid in uuids:
        regs = [r for r in regs_all if r.get("gpu_uuid") in (uuid, None)]
        span = trials_span(regs)
        path = samples_path(workdir, uuid)
        if span is None or not path.exists():
            continue  # no trial used this GPU
        spans.append(span)
        idle = read_idle_baseline(workdir, uuid)
        att = attribute(read_samples(path)[1], idle.idle_power_w, regs, idle_reason=idle.reason,
                        start=span[0], end=span[1])
        if att.reason:
            out.tags[f"energy_attribution_unavailable_reason.gpu-{lock_key(uuid)}"] = att.reason
            continue
        for trial, joules in att.per_trial_j.items():
            row = out.per_trial.setdefault(trial, {"gpu_energy_attributed_j": 0.0})
            row["gpu_energy_attributed_j"] += joules
        _add(out.totals, {k: v for k, v in att.study_metrics().items() if k in ADDITIVE_TOTALS})
    if spans:
        out.span = (min(s for s, _ in spans), max(e for _, e in spans))
    _add(out.totals, calibration_sums(workdir, uuids))
    return out


def _add(into: dict[str, float], values: dict[str, float]) -> None:
    for k, v in values.items():
        into[k] = into.get(k, 0.0) + v


def merge_results(parts: list[NodeEnergyResults]
                  ) -> tuple[dict[str, dict[str, float]], dict[str, float], dict[str, str]]:
    """``(per_trial_metrics, study_metrics, study_tags)`` over nodes: per-trial joules and the
    study sums added up; the ratio ``gpu_energy_attributed_over_measured``, ``calibration_overhead``
    and ``energy_study_span_s`` recomputed from the sums and the nodes' joint span."""
    per_trial: dict[str, dict[str, float]] = {}
    study: dict[str, float] = {}
    tags: dict[str, str] = {}
    for part in parts:
        for trial, metrics in part.per_trial.items():
            _add(per_trial.setdefault(trial, {}), metrics)
        _add(study, part.totals)
        tags.update(part.tags)
    if study.get("gpu_energy_study_measured_j"):
        study["gpu_energy_attributed_over_measured"] = (study["gpu_energy_attributed_sum_j"]
                                                        / study["gpu_energy_study_measured_j"])
    spans = [p.span for p in parts if p.span is not None]
    span_s = (max(e for _, e in spans) - min(s for s, _ in spans)) if spans else None
    if span_s:
        study["energy_study_span_s"] = span_s
        if "calibration_wait_s" in study:
            study["calibration_overhead"] = study["calibration_wait_s"] / span_s
    return per_trial, study, tags


def study_results(workdir: str | os.PathLike,
                  uuids: list[str]) -> tuple[dict[str, dict[str, float]], dict[str, float], dict[str, str]]:
    """Attribute each GPU's energy over the span of its trials; sum per trial and over GPUs.

    Per trial: ``gpu_energy_attributed_j`` (absent for a trial on a GPU whose attribution
    failed). Study: the GPUs' measured total, the sum over trials, their ratio, the
    calibration cost; tags give each GPU's reason when its attribution is absent.
    """
    return merge_results([node_results(workdir, uuids)])

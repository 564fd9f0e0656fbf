"""A trial's side of GPU energy you can rank (docs/energy_attribution.md §2–§3), in one place.

On a CUDA device the trial opens a `TrialEnergySession` (`srstudy.measure.trial_session`)
right after its device is known and keeps it until its last GPU work is done: it holds the
GPU's lock shared (other trials' exclusive windows wait for a yield point), registers its PID
for the launcher's attribution, runs its exclusive window inside `loop.train` and measures
inference energy per image under the same lock. `training_energy` turns the session and the
whole-run counter into the trial's energy metrics and tags: the objective `gpu_energy_j` is
the window's joules per iteration × the iterations (or the whole-run counter when the trial
had the GPU alone all along, `energy_method=whole_run`).

On CPU nothing of this runs: no session, no NVML call, the whole-run meter's metrics as before
(absent, with the reason). On a CUDA device where the session cannot open (no NVML, the GPU not
found), the trial keeps the whole-run counter and the tag `energy_window_unavailable_reason` says
why its `gpu_energy_j` may include other trials' energy.
"""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from srstudy.config import TrialConfig
from srstudy.measure.energy import EnergyMeterBase, EnergyResult, energy_meter
from srstudy.measure.nvml import nvml_failure
from srstudy.measure.trial_session import TrialEnergySession, WindowSettings

log = logging.getLogger("srstudy.trial")

__all__ = ["TrialGpu", "inference_energy", "open_session", "teacher_share", "training_energy", "trial_gpu",
           "whole_run_meter"]

#: the tag saying why a CUDA trial has no exclusive window (its gpu_energy_j is the whole-run counter)
UNAVAILABLE_TAG = "energy_window_unavailable_reason"


@dataclass
class TrialGpu:
    """The trial's energy session (None on CPU, or when it could not open: `unavailable_reason`)."""

    session: TrialEnergySession | None = None
    unavailable_reason: str | None = None

    def tags(self) -> dict[str, str]:
        """The tag saying why there is no session on a CUDA device (empty otherwise)."""
        return {UNAVAILABLE_TAG: self.unavailable_reason} if self.unavailable_reason else {}


def window_settings(cfg: TrialConfig) -> WindowSettings:
    """The exclusive window's settings from the trial's config (`energy_window`, `energy_sample_hz`)."""
    return WindowSettings(**cfg.energy_window.model_dump(), sample_hz=cfg.energy_sample_hz)


def open_session(device: torch.device, workdir: str | Path, trial: str, cfg: TrialConfig) -> TrialEnergySession | None:
    """A (not yet entered) session for a CUDA `device`, None on any other device.

    `trial` must be the launcher's id for the trial (Tune's trial id), which keys the
    attribution; raises ImportError / LookupError / NVML errors where NVML cannot serve the GPU.
    """
    if device.type != "cuda":
        return None
    return TrialEnergySession.for_device(device, workdir, trial=trial, start_iteration=0,
                                         total_iterations=cfg.iterations, settings=window_settings(cfg))


@contextlib.contextmanager
def trial_gpu(device: torch.device, workdir: str | Path, trial: str, cfg: TrialConfig) -> Iterator[TrialGpu]:
    """Hold the trial's energy session (shared GPU lock, PID registration) for the `with` body.

    A session that cannot open never fails the trial: the body runs without it, and
    `TrialGpu.unavailable_reason` says why.
    """
    stack = contextlib.ExitStack()
    gpu = TrialGpu()
    try:
        session = open_session(device, workdir, trial, cfg)
        if session is not None:
            gpu.session = stack.enter_context(session)
    except Exception as err:  # noqa: BLE001 - ImportError, LookupError, pynvml.NVMLError, OSError
        gpu = TrialGpu(unavailable_reason=nvml_failure(err))
        log.warning("trial %s: no exclusive energy window (%s); its gpu_energy_j is the whole GPU's counter",
                    trial, gpu.unavailable_reason)
    with stack:
        yield gpu


def whole_run_meter(device: torch.device, cfg: TrialConfig, gpu: TrialGpu) -> EnergyMeterBase:
    """The counter over the whole training. With a session its idle power comes from the study's
    baseline (taken while the GPU was idle), so the meter takes none of its own: a baseline
    sampled here could see other trials training."""
    if gpu.session is not None:
        return energy_meter(device=device, sample_hz=cfg.energy_sample_hz, idle_baseline_s=0)
    return energy_meter(device=device, sample_hz=cfg.energy_sample_hz)


def teacher_share(teacher, *, alpha: float, sharers: int | None,
                  inherited: bool = False) -> tuple[float | None, dict[str, str]]:
    """This trial's share of the teacher work it caused, in joules, and the tag saying how.

    The teacher's training energy is measured once, where it trains (its cache entry's
    `energy.gpu_energy_j`). In a study the launcher trains it once for all trials, so each
    trial that distils from it (α > 0) or starts from its weights (`inherited`) takes 1/`sharers` of it (`sharers`: the study's
    num_samples, its planned trials: an allocation, not a measurement). A single trial takes
    all of it when it trained the teacher and 0 when it reused a cached one. None (absent) when
    there was no teacher work or its energy was not measured; the tag says why.
    """
    tag = "energy_teacher_share"
    if teacher is None or (alpha <= 0 and not inherited):
        return None, {tag: "none: no teacher (alpha = 0)"}
    if teacher.source == "checkpoint":
        return None, {tag: "none: the teacher came from a checkpoint, no teacher training"}
    meta = teacher.meta or {}
    joules = (meta.get("energy") or {}).get("gpu_energy_j")
    if joules is None:
        return None, {tag: "absent: the teacher's training energy was not measured"}
    if meta.get("iterations_this_run", meta.get("iterations")) != meta.get("iterations"):
        return None, {tag: "absent: the teacher's training was resumed, the energy of its first part is not recorded"}
    if sharers:
        return joules / sharers, {tag: f"teacher training energy / {sharers} (the study's planned trials)"}
    if teacher.source == "trained":
        return joules, {tag: "all: this trial trained the teacher"}
    return 0.0, {tag: "0: the teacher was reused from the cache (its training was charged where it ran)"}


def training_energy(gpu: TrialGpu, whole_run: EnergyResult, iterations: int,
                    teacher_energy_j: float | None = None) -> tuple[dict[str, float], dict[str, str]]:
    """The training's energy metrics and tags (see the module docstring).

    Without a session: the whole-run meter's, as before. With one: `session.finish` (the
    objective, the window, the study's idle baseline, time blocked by others' windows), the
    whole-run counter as `gpu_energy_whole_run_j`, and `gpu_avg_power_w` only when the trial
    had the GPU alone (else it is the whole GPU's). `iterations`: the training iterations
    this process ran. `teacher_energy_j` (`teacher_share`): added to the objective `gpu_energy_j`
    and logged as `gpu_energy_teacher_share_j`, whenever the objective is measured.
    """
    if gpu.session is None:
        metrics = whole_run.metrics(iterations=iterations or None)
        if teacher_energy_j is not None and metrics.get("gpu_energy_j") is not None:
            metrics["gpu_energy_j"] += teacher_energy_j
            metrics["gpu_energy_teacher_share_j"] = teacher_energy_j
        return metrics, {**whole_run.tags(), **gpu.tags()}
    tags = whole_run.tags()
    if reason := tags.pop("energy_unavailable_reason", None):
        tags["energy_whole_run_unavailable_reason"] = reason
    if iterations <= 0:
        return {}, {**tags, "energy_unavailable_reason": "no training iteration ran in this process "
                                                         "(resumed from the final checkpoint)"}
    metrics, window_tags = gpu.session.finish(whole_run, iterations, teacher_energy_j=teacher_energy_j)
    if window_tags.get("energy_method") == "whole_run" and whole_run.avg_power_w is not None:
        metrics["gpu_avg_power_w"] = whole_run.avg_power_w
    return metrics, {**tags, **window_tags}


def inference_energy(session: TrialEnergySession, student: torch.nn.Module, x: torch.Tensor,
                     ) -> tuple[dict[str, float], dict[str, str]]:
    """GPU energy per batch-1 inference of `student` on `x`, with the GPU alone (the session's lock)."""
    with torch.no_grad():
        return session.inference(lambda: student(x))

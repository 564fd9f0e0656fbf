"""A trial's own GPU energy per iteration, measured in an exclusive window, and the objective built on it.

Why: with several trials on one GPU, the energy counter over a trial's run is the whole
GPU's energy while it ran — twice the truth summed over four trials on an H200. The one
number that is a trial's own is its energy per iteration *while it has the GPU alone*. So
each trial, once warmed up, takes its GPU's lock (:mod:`srstudy.measure.gpu_lock`)
exclusively and runs K training iterations alone (K ≥ ``min_iterations`` and ≥
``min_seconds`` of GPU time), metered with the NVML energy counter, ``synchronize`` at both
edges. Then

* ``gpu_energy_per_iter_j`` = the window's joules per iteration (the exclusive figure);
* ``gpu_energy_j`` = that × the iterations the trial trained (+ its share of teacher work it
  caused, when given) — the objective the Pareto front ranks;
* a trial that had the GPU alone all along uses its whole-run counter instead
  (``energy_method=whole_run``), and the window and the whole run must agree: both are
  logged with their relative deviation ``gpu_energy_window_vs_whole_run_dev``.

Inference energy per image is measured under the same exclusive lock
(:func:`inference_energy_per_image`). A value that was not measured is absent, never 0; the
tag ``energy_unavailable_reason`` says why.
"""
from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .gpu_lock import GpuLock, SharedHold
from .meter import EnergyResult
from .nvml import NvmlEnergyMeter

__all__ = ["ExclusiveWindow", "WindowResult", "had_gpu_alone", "inference_energy_per_image",
           "run_exclusive_window", "trial_energy"]


@dataclass
class WindowResult:
    """What one exclusive window measured (``energy_j`` None: not measured, ``reason`` says why)."""

    iterations: int
    seconds: float | None
    energy_j: float | None
    wait_s: float  # how long the window waited for the exclusive lock
    energy_source: str | None = None  # "counter" | "power_integral"
    complete: bool = True  # reached min_iterations and min_seconds
    reason: str | None = None
    shared_processes: int | None = None  # other compute processes present (paused) at the edges
    temp_start_c: float | None = None  # GPU temperature when the window opened (leakage power grows with it)
    temp_end_c: float | None = None  # ... and when it closed

    @property
    def energy_per_iter_j(self) -> float | None:
        """Joules per iteration in the window, None when not measured."""
        if self.energy_j is None or self.iterations <= 0:
            return None
        return self.energy_j / self.iterations


class ExclusiveWindow:
    """The exclusive window as open / count / close, for a loop that keeps its own body inline.

    ::

        window = ExclusiveWindow(lock, api, handle, synchronize=sync, hold=hold)
        window.open()                      # steps out of ``hold``, waits for the GPU alone
        while not window.satisfied: step(); window.count()
        result = window.close()            # synchronize, read the counter, release, re-take ``hold``
    """

    def __init__(self, lock: GpuLock, api, handle, *, synchronize: Callable[[], None] = lambda: None,
                 min_iterations: int = 20, min_seconds: float = 5.0, hold: SharedHold | None = None,
                 sample_hz: float = 10.0, label: str = "energy_window",
                 clock: Callable[[], float] = time.perf_counter) -> None:
        if min_iterations < 1 or min_seconds < 0:
            raise ValueError(f"energy window needs min_iterations >= 1 and min_seconds >= 0, "
                             f"got {min_iterations} and {min_seconds}")
        self.lock, self.api, self.handle, self.synchronize = lock, api, handle, synchronize
        self.min_iterations, self.min_seconds = min_iterations, min_seconds
        self.hold, self.sample_hz, self.label, self.clock = hold, sample_hz, label, clock
        self.iterations = 0
        self._stack: contextlib.ExitStack | None = None
        self._meter: NvmlEnergyMeter | None = None

    @property
    def is_open(self) -> bool:
        return self._stack is not None

    def open(self) -> None:
        """Leave the shared hold (if any), take the GPU exclusively, synchronize, read the counter."""
        if self.is_open:
            raise RuntimeError("ExclusiveWindow.open() twice; close() it first")
        stack = contextlib.ExitStack()
        try:
            if self.hold is not None:
                stack.enter_context(self.hold.released())
            self._grant = stack.enter_context(self.lock.exclusive(self.label))
            self._meter = NvmlEnergyMeter(self.api, self.handle, sample_hz=self.sample_hz, idle_baseline_s=0,
                                          synchronize=self.synchronize)
            self._meter.start()
            self._temp0 = _temperature_c(self.api, self.handle)
        except BaseException:
            stack.close()
            raise
        self._stack, self.iterations, self._t0 = stack, 0, self.clock()

    def count(self, n: int = 1) -> None:
        """``n`` more iterations ran inside the window."""
        self.iterations += n

    @property
    def satisfied(self) -> bool:
        """Enough iterations and enough (host-side) seconds; the final synchronize only adds GPU time."""
        return self.iterations >= self.min_iterations and self.clock() - self._t0 >= self.min_seconds

    def close(self, *, ended_early: str | None = None) -> WindowResult:
        """Synchronize, read the counter, release the GPU, re-take the shared hold; the result.

        ``ended_early``: why the window stops before it is satisfied (e.g. the trial ran out
        of iterations); the result is then ``complete=False`` with that reason.
        """
        if not self.is_open:
            raise RuntimeError("ExclusiveWindow.close() without open()")
        stack, self._stack = self._stack, None
        complete = self.satisfied
        try:
            res: EnergyResult = self._meter.stop()
            temp1 = _temperature_c(self.api, self.handle)
        finally:
            stack.close()
        reason = res.reason if res.energy_j is None else None
        if not complete:
            note = ended_early or (f"window ended after {self.iterations} iterations, "
                                   f"before {self.min_iterations} iterations and {self.min_seconds:g} s")
            reason = f"{reason}; {note}" if reason else note
        return WindowResult(iterations=self.iterations, seconds=res.seconds, energy_j=res.energy_j,
                            wait_s=self._grant.wait_s, energy_source=res.energy_source, complete=complete,
                            reason=reason, shared_processes=res.shared_processes,
                            temp_start_c=self._temp0, temp_end_c=temp1)


def _temperature_c(api, handle) -> float | None:
    """The GPU's temperature (°C) where the NVML layer can read it, else None (never a guess)."""
    read = getattr(api, "temperature_c", None)
    return None if read is None else read(handle)


def run_exclusive_window(step: Callable[[], None], lock: GpuLock, api, handle, *,
                         synchronize: Callable[[], None] = lambda: None, min_iterations: int = 20,
                         min_seconds: float = 5.0, max_iterations: int | None = None,
                         hold: SharedHold | None = None, sample_hz: float = 10.0,
                         label: str = "energy_window", clock: Callable[[], float] = time.perf_counter) -> WindowResult:
    """Run ``step()`` (one training iteration) alone on the GPU until the window is satisfied.

    ``max_iterations``: the iterations the trial has left; the window stops there even if
    short (``complete=False``). The iterations run here are the trial's own training
    iterations, not extra work: count them in the trial's progress.
    """
    window = ExclusiveWindow(lock, api, handle, synchronize=synchronize, min_iterations=min_iterations,
                             min_seconds=min_seconds, hold=hold, sample_hz=sample_hz, label=label, clock=clock)
    window.open()
    try:
        while not window.satisfied and (max_iterations is None or window.iterations < max_iterations):
            step()
            window.count()
    except BaseException:
        window.close()
        raise
    short = None if window.satisfied else f"the trial had only {window.iterations} iterations left for its window"
    return window.close(ended_early=short)


def had_gpu_alone(whole_run: EnergyResult | None, observed_pid_sets: Iterable[Iterable[int]] = (),
                  own_pids: Iterable[int] = ()) -> bool:
    """True only if no other compute process was seen on the GPU during the run.

    ``whole_run.shared_processes`` covers the run's two edges; ``observed_pid_sets`` (e.g. the
    attribution sampler's process lists between the trial's start and end) cover the middle.
    Unknown (None) counts as not alone.
    """
    if whole_run is None or whole_run.shared_processes is None or whole_run.shared_processes > 0:
        return False
    own = set(own_pids)
    return all(not (set(pids) - own) for pids in observed_pid_sets)


def trial_energy(*, window: WindowResult | None, iterations: int, whole_run: EnergyResult | None = None,
                 alone_all_along: bool = False,
                 teacher_energy_j: float | None = None) -> tuple[dict[str, float], dict[str, str]]:
    """The trial's energy metrics and tags from its window and its whole-run counter.

    ``iterations``: the training iterations the whole-run meter covered (this process's).
    Returns ``(metrics, tags)``; see the module docstring for the rule.
    """
    if iterations <= 0:
        raise ValueError(f"iterations must be > 0 to compute energy per iteration, got {iterations}")
    metrics: dict[str, float] = {}
    tags: dict[str, str] = {}
    per_iter_window = window.energy_per_iter_j if window is not None else None
    whole_j = whole_run.energy_j if whole_run is not None else None
    if whole_j is not None:
        metrics["gpu_energy_whole_run_j"] = whole_j  # the whole GPU's energy while this trial ran
    if window is not None:
        tags.update(energy_window_s=f"{window.seconds:.3f}" if window.seconds is not None else "",
                    energy_window_iterations=str(window.iterations),
                    energy_window_complete=str(window.complete).lower())
        metrics["energy_window_wait_s"] = window.wait_s
        if window.seconds:
            metrics["energy_window_iterations_per_s"] = window.iterations / window.seconds
        for key, value in (("energy_window_temp_start_c", window.temp_start_c),
                           ("energy_window_temp_end_c", window.temp_end_c)):
            if value is not None:
                metrics[key] = value
        if per_iter_window is not None:
            metrics["gpu_energy_window_per_iter_j"] = per_iter_window

    if alone_all_along and whole_j is not None:
        per_iter, tags["energy_method"] = whole_j / iterations, "whole_run"
        if per_iter_window is not None and per_iter > 0:
            metrics["gpu_energy_window_vs_whole_run_dev"] = abs(per_iter_window - per_iter) / per_iter
    elif per_iter_window is not None:
        per_iter, tags["energy_method"] = per_iter_window, "exclusive_window"
    else:
        reasons = [r for r in ((window.reason if window else "no exclusive window ran"),
                               None if alone_all_along else "the GPU was shared, so the whole-run counter "
                                                             "is not this trial's own",
                               whole_run.reason if whole_run is not None and whole_j is None else None) if r]
        tags["energy_unavailable_reason"] = "; ".join(reasons)
        return metrics, tags
    metrics["gpu_energy_per_iter_j"] = per_iter
    metrics["gpu_energy_j"] = per_iter * iterations + (teacher_energy_j or 0.0)
    if teacher_energy_j is not None:
        metrics["gpu_energy_teacher_share_j"] = teacher_energy_j
    return metrics, tags


def inference_energy_per_image(run_once: Callable[[], None], lock: GpuLock, api, handle, *,
                               synchronize: Callable[[], None] = lambda: None, min_images: int = 20,
                               min_seconds: float = 1.0, hold: SharedHold | None = None,
                               sample_hz: float = 10.0) -> tuple[dict[str, float], dict[str, str]]:
    """GPU energy per image of batch-1 inference, measured with the GPU alone (same lock).

    ``run_once()`` runs the model on one image (the caller wraps ``torch.no_grad``). Returns
    ``({"gpu_inference_energy_per_image_j": …}, {})`` or ``({}, {"inference_energy_unavailable_reason": …})``.
    """
    res = run_exclusive_window(run_once, lock, api, handle, synchronize=synchronize, min_iterations=min_images,
                               min_seconds=min_seconds, hold=hold, sample_hz=sample_hz, label="inference_energy")
    if res.energy_per_iter_j is None:
        return {}, {"inference_energy_unavailable_reason": res.reason or "not measured"}
    return {"gpu_inference_energy_per_image_j": res.energy_per_iter_j}, {}

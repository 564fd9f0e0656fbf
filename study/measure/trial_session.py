"""A trial's side of GPU energy accounting, bundled so the training loop needs two calls per iteration.

Why one object: a trial sharing a GPU must (1) hold the GPU's lock shared while it trains,
stepping aside for other trials' windows, (2) once warmed up, train K iterations alone in an
exclusive window metered by the energy counter, (3) register its PID for the study's
attribution, (4) read the study's idle baseline, and (5) turn all that into its metrics and
tags. Wiring each piece into ``trials/loop.py`` separately would spread the protocol over the
loop; here the loop calls::

    session.before_iteration(it)                 # may open the exclusive window
    ... one training step ...
    session.after_iteration(it, boundary=...)    # counts it; closes the window or yields to writers

``boundary=True`` when validation or a checkpoint follows this iteration: the window pauses
there (its energy must be training only) and resumes at the next iteration, adding up
segments until it has ``min_iterations`` and ``min_seconds``.
"""
from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .attribution import register_trial_pids
from .gpu_lock import ExclusiveGrant, GpuLock
from .idle import read_idle_baseline
from .meter import EnergyResult
from .window import ExclusiveWindow, WindowResult, inference_energy_per_image, trial_energy

__all__ = ["TrialEnergySession", "WindowSettings"]


@dataclass
class WindowSettings:
    """When and how long a trial measures alone (defaults: issue 17's K ≥ 20 and ≥ 5 s)."""

    min_iterations: int = 20
    min_seconds: float = 5.0
    start_fraction: float = 0.1  # open the window after this share of the trial's iterations (warm-up)
    defer_fraction: float = 0.4  # while another window is open or queued, defer ours up to this share
    sample_hz: float = 10.0


class TrialEnergySession:
    """The lock, window, PID registration and idle baseline of one trial on one GPU."""

    def __init__(self, workdir: str | os.PathLike, trial: str, api, handle, *, start_iteration: int,
                 total_iterations: int, synchronize: Callable[[], None] = lambda: None,
                 settings: WindowSettings | None = None, pids: list[int] | None = None) -> None:
        self.workdir, self.trial, self.api, self.handle = Path(workdir), trial, api, handle
        self.pids = pids  # as NVML lists them; default: this process (pass host PIDs in a container)
        self.synchronize, self.settings = synchronize, settings or WindowSettings()
        self.uuid = api.uuid(handle)
        self.total_iterations = total_iterations
        self.set_start_iteration(start_iteration)
        self.lock: GpuLock | None = None
        self.hold = None
        self._window: ExclusiveWindow | None = None
        self._segments: list[WindowResult] = []
        self._window_s = 0.0  # host seconds inside window segments so far
        self.window_done = False
        self.deferred_iterations = 0  # iterations the window waited for another trial's window

    @classmethod
    def for_device(cls, device, workdir, trial: str, **kwargs) -> "TrialEnergySession":
        """Session for torch CUDA ``device`` (NVML handle matched by UUID; raises LookupError/ImportError)."""
        import torch  # noqa: PLC0415

        from .nvml import NvmlApi, nvml_handle_for  # noqa: PLC0415

        device = torch.device(device)
        api = NvmlApi()
        return cls(workdir, trial, api, nvml_handle_for(device, api),
                   synchronize=lambda: torch.cuda.synchronize(device), **kwargs)

    def set_start_iteration(self, start_iteration: int) -> None:
        """Where training starts (a resumed trial learns it from its checkpoint after the session
        opened): the window opens after ``start_fraction`` of the iterations left."""
        span = self.total_iterations - start_iteration
        self.window_start = start_iteration + int(span * self.settings.start_fraction)
        self.defer_until = self.window_start + int(span * self.settings.defer_fraction)

    # ---------------------------------------------------------------- lifecycle

    def __enter__(self) -> "TrialEnergySession":
        register_trial_pids(self.workdir, self.trial, self.pids, gpu_uuid=self.uuid)
        self.lock = GpuLock(self.workdir, self.uuid, owner=self.trial)
        self.hold = self.lock.hold_shared(self.synchronize)
        self.hold.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        try:
            if self._window is not None:
                self._close_segment()
            self.hold.__exit__(*exc)
        finally:
            self.lock.close()
            register_trial_pids(self.workdir, self.trial, pids=[], ended=True)

    # ---------------------------------------------------------------- per iteration

    def before_iteration(self, it: int) -> None:
        """Open (or resume) the exclusive window when it is due.

        Trials started together fall due together; queueing behind another trial's window
        would stall this one for that window's length (calibration overhead). So while
        another window is open or queued, ours is deferred, without blocking, to a later
        iteration (at most ``defer_fraction`` of the run); after that it queues."""
        if self.window_done or self._window is not None or it < self.window_start:
            return
        if it < self.defer_until and not self._segments and self.lock.writer_waiting():
            self.deferred_iterations += 1
            return
        self._window = ExclusiveWindow(self.lock, self.api, self.handle, synchronize=self.synchronize,
                                       min_iterations=1, min_seconds=0, hold=self.hold,
                                       sample_hz=self.settings.sample_hz, label="energy_window")
        self._window.open()
        self._t_segment = time.perf_counter()

    def after_iteration(self, it: int, *, boundary: bool = False) -> None:
        """Count the iteration; close the window when satisfied, pause it at a boundary, else yield to writers.

        ``it``: the iteration just finished (0-based); ``boundary``: validation or a
        checkpoint follows, which must not run inside the window.
        """
        if self._window is None:
            self.hold.between_iterations()
            return
        self._window.count()
        iters = sum(r.iterations for r in self._segments) + self._window.iterations
        secs = self._window_s + time.perf_counter() - self._t_segment
        last = it + 1 >= self.total_iterations
        if last or (iters >= self.settings.min_iterations and secs >= self.settings.min_seconds):
            self._close_segment()
            self.window_done = True
        elif boundary:
            self._close_segment()

    @contextlib.contextmanager
    def alone(self, label: str) -> Iterator[ExclusiveGrant]:
        """The GPU to this trial alone for the block: the study's other trials on it wait at their
        next iteration (their queued kernels done). For timings that other processes' kernels
        would stretch, e.g. the batch-1 latency after training (outside any energy window)."""
        if self._window is not None:
            raise RuntimeError(f"alone({label!r}) inside the open energy window: the window already has the GPU")
        with self.hold.released(), self.lock.exclusive(label) as grant:
            self.synchronize()
            yield grant

    def yield_point(self) -> None:
        """Outside the training loop (scoring, latency), let a waiting window in between two pieces of work."""
        if self._window is None:
            self.hold.between_iterations()

    def _close_segment(self) -> None:
        window, self._window = self._window, None
        self._window_s += time.perf_counter() - self._t_segment
        self._segments.append(window.close())

    @property
    def window(self) -> WindowResult | None:
        """The window's segments added up (None before any ran)."""
        if not self._segments:
            return None
        segs = self._segments
        energies = [r.energy_j for r in segs]
        iters = sum(r.iterations for r in segs)
        secs = sum(r.seconds or 0.0 for r in segs)
        s = self.settings
        complete = iters >= s.min_iterations and secs >= s.min_seconds
        reasons = [r.reason for r in segs if r.reason]
        if not complete:
            reasons.append(f"the window got {iters} iterations in {secs:.2f} s, short of {s.min_iterations} "
                           f"and {s.min_seconds:g} s: too few iterations after warm-up (lower "
                           "start_fraction or raise the trial's iterations)")
        return WindowResult(iterations=iters, seconds=secs,
                            energy_j=None if any(e is None for e in energies) else sum(energies),
                            wait_s=sum(r.wait_s for r in segs), energy_source=segs[-1].energy_source,
                            complete=complete, reason="; ".join(dict.fromkeys(reasons)) or None,
                            shared_processes=max((r.shared_processes or 0) for r in segs),
                            temp_start_c=segs[0].temp_start_c, temp_end_c=segs[-1].temp_end_c)

    # ---------------------------------------------------------------- results

    def inference(self, run_once: Callable[[], None], *, min_images: int = 20,
                  min_seconds: float = 1.0) -> tuple[dict[str, float], dict[str, str]]:
        """Inference energy per image under the same exclusive lock (after training)."""
        return inference_energy_per_image(run_once, self.lock, self.api, self.handle, synchronize=self.synchronize,
                                          min_images=min_images, min_seconds=min_seconds, hold=self.hold,
                                          sample_hz=self.settings.sample_hz)

    def finish(self, whole_run: EnergyResult | None, iterations: int, *, alone_all_along: bool | None = None,
               teacher_energy_j: float | None = None) -> tuple[dict[str, float], dict[str, str]]:
        """The trial's energy metrics and tags: objective, window, idle baseline, time blocked by others.

        ``alone_all_along`` defaults to what the whole-run meter saw at its edges
        (``shared_processes == 0``) and this trial never having waited for another's window.
        """
        if alone_all_along is None:
            alone_all_along = (whole_run is not None and whole_run.shared_processes == 0
                               and self.hold.yields == 0)
        metrics, tags = trial_energy(window=self.window, iterations=iterations, whole_run=whole_run,
                                     alone_all_along=alone_all_along, teacher_energy_j=teacher_energy_j)
        idle = read_idle_baseline(self.workdir, self.uuid)
        metrics.update(idle.metrics())
        tags.update(idle.tags())
        metrics["gpu_lock_blocked_s"] = self.hold.blocked_s
        return metrics, tags

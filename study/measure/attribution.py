"""Accounting of a whole GPU over a study: its measured energy apportioned among its processes.

Why: the exclusive window (:mod:`srstudy.measure.window`) gives each trial a rankable energy,
but says nothing about where the GPU's joules actually went while trials shared it. This
module splits the GPU's measured energy among the processes on it, the way Kepler does:

    for each sampling interval (energy E from the counter, length dt, idle power P_idle):
        idle share   = min(P_idle·dt, E)          split evenly among the processes present
        active share = E − idle share             split by each process's SM utilisation
                                                   (its SM % ÷ the sum over processes present;
                                                    evenly when all report 0 %)

so the processes' energies add up to the counter over every interval in which any process
was present; intervals with none go to ``no_process_j``. Processes are mapped to trials by
``<workdir>/trial_pids/<trial>.json`` (written by each trial); energy of a process that no
trial registered goes to ``unregistered_j`` (by PID), never to a trial.

Samples come from :class:`AttributionSampler`, a thread of the launcher writing one JSON line
per sample to ``<workdir>/energy_samples/gpu-<key>.jsonl``: wall time, energy counter (mJ),
board power (W), NVML's compute-process list and ``{pid: SM %}`` from
``nvmlDeviceGetProcessUtilization``. Where per-process utilisation, the idle baseline or any
energy reading is missing, the attribution is absent with a ``reason`` — never 0.
"""
from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .gpu_lock import lock_key
from .nvml import pick_power_reader

__all__ = ["Attribution", "AttributionSampler", "Sample", "attribute", "load_trial_pids", "read_samples",
           "register_trial_pids", "samples_path", "trials_span"]

SAMPLES_DIR = "energy_samples"
PIDS_DIR = "trial_pids"


@dataclass
class Sample:
    """One reading of the GPU: ``util`` None = per-process utilisation unsupported."""

    t: float  # wall time, s
    energy_mj: float | None
    power_w: float | None
    pids: list[int] | None  # NVML's compute-process list
    util: dict[int, float] | None  # SM % per PID over the interval that ends here


def samples_path(workdir: str | os.PathLike, uuid: str) -> Path:
    """``<workdir>/energy_samples/gpu-<key>.jsonl`` for the GPU ``uuid``."""
    return Path(workdir).expanduser().resolve() / SAMPLES_DIR / f"gpu-{lock_key(uuid)}.jsonl"


class AttributionSampler:
    """Background thread recording :class:`Sample` lines for one GPU (run by the launcher).

    ``sample_once()`` takes one sample now (tests drive it by hand). Lines are flushed one
    by one, so a crash loses at most the line being written.
    """

    def __init__(self, api, handle, path: str | os.PathLike, *, hz: float = 2.0,
                 clock: Callable[[], float] = time.time) -> None:
        if hz <= 0:
            raise ValueError(f"attribution sampler hz must be > 0, got {hz}")
        self.api, self.handle, self.path, self.period, self.clock = api, handle, Path(path), 1.0 / hz, clock
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.read_power, self.power_field = pick_power_reader(api, handle)
        self.errors = 0
        self._since_us: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps({"header": {"uuid": api.uuid(handle), "name": api.name(handle),
                                            "hz": hz, "power_field": self.power_field}}) + "\n")

    def sample_once(self) -> Sample:
        """Read counter, power, process list and per-process utilisation since the last sample; append it."""
        now = self.clock()
        since = self._since_us if self._since_us is not None else int((now - self.period) * 1e6)
        util = self.api.process_utilization(self.handle, since)
        s = Sample(t=now, energy_mj=self.api.total_energy_mj(self.handle), power_w=self.read_power(),
                   pids=self.api.compute_pids(self.handle), util=util)
        self._since_us = int(now * 1e6)
        line = {"t": s.t, "energy_mj": s.energy_mj, "power_w": s.power_w, "pids": s.pids,
                "util": None if util is None else {str(k): v for k, v in util.items()}}
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(line) + "\n")
        return s

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sample_once()
            except Exception:  # noqa: BLE001 - a lost sample must not stop the study
                self.errors += 1
            self._stop.wait(self.period)

    def start(self) -> "AttributionSampler":
        """Start sampling in a daemon thread."""
        self._thread = threading.Thread(target=self._run, name="attribution-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the thread and take one last sample (so the study's end is covered)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10.0)
        try:
            self.sample_once()
        except Exception:  # noqa: BLE001
            self.errors += 1


def read_samples(path: str | os.PathLike) -> tuple[dict, list[Sample]]:
    """``(header, samples)`` of a sampler file; a torn last line is skipped."""
    header: dict = {}
    samples: list[Sample] = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            d = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "header" in d:
            header = header or d["header"]
            continue
        util = None if d.get("util") is None else {int(k): float(v) for k, v in d["util"].items()}
        samples.append(Sample(t=d["t"], energy_mj=d.get("energy_mj"), power_w=d.get("power_w"),
                              pids=d.get("pids"), util=util))
    return header, samples


# --------------------------------------------------------------------------- PIDs of trials


def register_trial_pids(workdir: str | os.PathLike, trial: str, pids: Iterable[int] | None = None, *,
                        gpu_uuid: str | None = None, ended: bool = False,
                        clock: Callable[[], float] = time.time) -> Path:
    """Record that ``trial``'s processes are ``pids`` (default: this one) from now on.

    Call once when the trial's process starts using its GPU and again with ``ended=True``
    when it stops (the span keeps a PID reused by a later trial apart). In a container,
    NVML lists host PIDs: pass those too where known.
    """
    if not trial or "/" in trial:
        raise ValueError(f"trial name {trial!r} must be non-empty and contain no '/'")
    path = Path(workdir).expanduser().resolve() / PIDS_DIR / f"{trial}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    entry = json.loads(path.read_text()) if path.exists() else {"trial": trial, "pids": [], "started_at": clock()}
    entry["pids"] = sorted(set(entry["pids"]) | set(pids if pids is not None else [os.getpid()]))
    entry["gpu_uuid"] = gpu_uuid or entry.get("gpu_uuid")
    entry["ended_at"] = clock() if ended else entry.get("ended_at")
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(entry))
    tmp.replace(path)
    return path


def load_trial_pids(workdir: str | os.PathLike) -> list[dict]:
    """Every trial's registration: ``{"trial", "pids", "started_at", "ended_at", "gpu_uuid"}``."""
    folder = Path(workdir).expanduser().resolve() / PIDS_DIR
    out = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            out.append(json.loads(path.read_text()))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not valid JSON ({err}); the trial that wrote it crashed mid-write? "
                             "delete the file and re-run that trial") from None
    return out


def _trial_of(pid: int, t: float, registrations: list[dict], slack_s: float) -> str | None:
    """The trial whose registration holds ``pid`` at time ``t`` (± ``slack_s`` at the edges)."""
    for r in registrations:
        if pid in r["pids"] and r["started_at"] - slack_s <= t <= (r.get("ended_at") or float("inf")) + slack_s:
            return r["trial"]
    return None


def trials_span(registrations: list[dict]) -> tuple[float, float] | None:
    """``(first start, last end)`` over trial registrations (an unended one ends now); None if none."""
    if not registrations:
        return None
    return (min(r["started_at"] for r in registrations),
            max(r.get("ended_at") or time.time() for r in registrations))


# --------------------------------------------------------------------------- arithmetic


@dataclass
class Attribution:
    """The GPU's energy over the samples' span and its split; ``reason`` set: nothing attributed."""

    measured_j: float | None = None
    seconds: float | None = None
    per_trial_j: dict[str, float] = field(default_factory=dict)
    per_pid_j: dict[int, float] = field(default_factory=dict)
    no_process_j: float = 0.0  # intervals with no compute process on the GPU
    unregistered_j: dict[int, float] = field(default_factory=dict)  # PIDs no trial registered
    energy_source: str | None = None  # "counter" | "power_integral"
    reason: str | None = None

    @property
    def attributed_sum_j(self) -> float | None:
        """Σ over trials (None when not attributed)."""
        return None if self.reason else sum(self.per_trial_j.values())

    def trial_metrics(self, trial: str) -> dict[str, float]:
        """``{"gpu_energy_attributed_j": …}`` for a trial that was attributed energy, else empty."""
        if self.reason or trial not in self.per_trial_j:
            return {}
        return {"gpu_energy_attributed_j": self.per_trial_j[trial]}

    def study_metrics(self) -> dict[str, float]:
        """The parent run's totals: the GPU's measured energy, the sum over trials, the rest, their ratio."""
        if self.reason or self.measured_j is None:
            return {}
        out = {"gpu_energy_study_measured_j": self.measured_j, "gpu_energy_attributed_sum_j": self.attributed_sum_j,
               "gpu_energy_no_process_j": self.no_process_j,
               "gpu_energy_unregistered_j": sum(self.unregistered_j.values())}
        if self.measured_j > 0:
            out["gpu_energy_attributed_over_measured"] = self.attributed_sum_j / self.measured_j
        return out

    def tags(self) -> dict[str, str]:
        """How it was attributed, or why not."""
        if self.reason:
            return {"energy_attribution_unavailable_reason": self.reason}
        return {"energy_attribution": "sm_share_kepler", "energy_attribution_source": self.energy_source or ""}


def _interval_energy(a: Sample, b: Sample) -> tuple[float | None, str | None]:
    """Joules between two samples: counter difference, else trapezoid of power."""
    if a.energy_mj is not None and b.energy_mj is not None:
        return (b.energy_mj - a.energy_mj) / 1000.0, "counter"
    if a.power_w is not None and b.power_w is not None:
        return 0.5 * (a.power_w + b.power_w) * (b.t - a.t), "power_integral"
    return None, None


def attribute(samples: list[Sample], idle_power_w: float | None, registrations: list[dict] = (), *,
              idle_reason: str | None = None, slack_s: float = 2.0, start: float | None = None,
              end: float | None = None) -> Attribution:
    """Apportion the GPU's energy over ``samples`` among processes and trials (module docstring).

    ``idle_power_w``: the study's idle baseline for this GPU (:mod:`srstudy.measure.idle`);
    without it (``idle_reason`` says why) nothing is attributed. ``start``/``end`` (wall
    time): only the sampling intervals inside that span count (e.g. the study's trials,
    from the first start to the last end, see :func:`trials_span`).
    """
    samples = [s for s in samples if (start is None or s.t >= start) and (end is None or s.t <= end)]
    if len(samples) < 2:
        return Attribution(reason=f"{len(samples)} energy sample(s): at least 2 are needed to span an interval")
    if idle_power_w is None:
        return Attribution(reason=f"no idle baseline for this GPU ({idle_reason or 'not taken'}), so idle "
                                  "power cannot be split from active power")
    if any(s.util is None for s in samples[1:]):
        return Attribution(reason="per-process utilisation (nvmlDeviceGetProcessUtilization) is not "
                                  "supported on this GPU/driver")
    samples = sorted(samples, key=lambda s: s.t)
    out = Attribution(seconds=samples[-1].t - samples[0].t, measured_j=0.0)
    sources = set()
    for a, b in zip(samples, samples[1:]):
        energy, source = _interval_energy(a, b)
        if energy is None:
            return Attribution(reason=f"no energy counter and no power reading between t={a.t:.1f} and "
                                      f"t={b.t:.1f} (NVML supports neither on this GPU?)")
        sources.add(source)
        out.measured_j += energy
        present = sorted(set(b.pids or []) | set(b.util))
        if not present:
            out.no_process_j += energy
            continue
        idle_e = min(max(idle_power_w * (b.t - a.t), 0.0), max(energy, 0.0))
        active_e = energy - idle_e
        total_sm = sum(b.util.get(p, 0.0) for p in present)
        for p in present:
            share = b.util.get(p, 0.0) / total_sm if total_sm > 0 else 1.0 / len(present)
            e = idle_e / len(present) + active_e * share
            out.per_pid_j[p] = out.per_pid_j.get(p, 0.0) + e
            trial = _trial_of(p, b.t, list(registrations), slack_s)
            if trial is None:
                out.unregistered_j[p] = out.unregistered_j.get(p, 0.0) + e
            else:
                out.per_trial_j[trial] = out.per_trial_j.get(trial, 0.0) + e
    out.energy_source = "counter" if sources == {"counter"} else "power_integral"
    return out

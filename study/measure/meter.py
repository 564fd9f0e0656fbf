"""What every energy meter shares: the result, the meter base and null meter, trace integration,
and the per-process idle-power cache.

:class:`EnergyResult` is what one measurement found; a value that was not measured is ``None``
and absent from :meth:`EnergyResult.metrics`, with ``reason`` saying why. The meters
themselves are in :mod:`srstudy.measure.nvml` and :mod:`srstudy.measure.tegrastats`;
:func:`srstudy.measure.energy.energy_meter` picks one.
"""

from __future__ import annotations

import csv
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

__all__ = [
    "EnergyResult",
    "EnergyMeterBase",
    "NullEnergyMeter",
    "integrate_trace",
    "idle_baseline_w",
    "remember_idle_baseline",
]

log = logging.getLogger(__name__)

#: Idle power (W) per GPU UUID (or "tegrastats" for the Jetson module), once per process.
_IDLE_BASELINE_W: dict[str, float] = {}


def idle_baseline_w(key: str) -> float | None:
    """This process's idle power (W) of the GPU / module ``key`` (a UUID or "tegrastats"), if taken."""
    return _IDLE_BASELINE_W.get(key)


def remember_idle_baseline(key: str, watts: float) -> None:
    """Keep ``watts`` as the idle power of ``key`` for the rest of this process."""
    _IDLE_BASELINE_W[key] = watts


# --------------------------------------------------------------------------- result


@dataclass
class EnergyResult:
    """What one measurement found; ``None`` fields were not measured (``reason`` says why)."""

    energy_j: float | None = None
    seconds: float | None = None
    avg_power_w: float | None = None
    idle_power_w: float | None = None
    trace: list[tuple[float, float]] = field(default_factory=list)
    gpu_name: str | None = None
    gpu_uuid: str | None = None
    source: str = "none"  # "nvml" | "tegrastats" | "none"
    energy_source: str | None = None  # "counter" | "power_integral" | "tegrastats_vdd_in"
    shared_processes: int | None = None  # other compute processes on the GPU (ours excluded)
    reason: str | None = None
    power_field: str | None = None  # "instant" | "average" | "VDD_IN" | "POM_5V_IN"
    skipped_lines: int = 0  # tegrastats lines without a total-input rail

    def metrics(self, prefix: str = "gpu_", iterations: int | None = None) -> dict[str, float]:
        """Numeric metrics to log, ONLY those that were measured (empty for the null meter).

        Keys: ``{prefix}energy_j``, ``{prefix}avg_power_w``, ``{prefix}energy_per_iter_j``
        (when ``iterations`` > 0 is given) and ``{prefix}idle_power_w``.
        """
        out: dict[str, float] = {}
        if self.energy_j is not None:
            out[f"{prefix}energy_j"] = float(self.energy_j)
            if iterations:
                out[f"{prefix}energy_per_iter_j"] = float(self.energy_j) / iterations
        if self.avg_power_w is not None:
            out[f"{prefix}avg_power_w"] = float(self.avg_power_w)
        if self.idle_power_w is not None:
            out[f"{prefix}idle_power_w"] = float(self.idle_power_w)
        return out

    def tags(self) -> dict[str, str]:
        """String tags describing how (or why not) energy was measured."""
        out: dict[str, str] = {}
        if self.energy_source:
            out["energy_source"] = self.energy_source
        if self.gpu_name:
            out["gpu_name"] = self.gpu_name
        if self.shared_processes is not None:
            out["energy_shared"] = str(self.shared_processes > 0).lower()
        if self.energy_j is None and self.reason:
            out["energy_unavailable_reason"] = self.reason
        return out

    def write_trace_csv(self, path: str | os.PathLike) -> Path | None:
        """Write the power trace as CSV (``t_s,power_w``); returns the path, or None without a trace."""
        if not self.trace:
            return None
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["t_s", "power_w"])
            writer.writerows((f"{t:.4f}", f"{w:.3f}") for t, w in self.trace)
        return path

    def plot_trace(self, path: str | os.PathLike) -> Path | None:
        """Plot the power trace to a PNG (idle baseline dashed); returns the path, or None without a trace."""
        if not self.trace:
            return None
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure  # no pyplot: no global state, thread-safe

        fig = Figure(figsize=(7, 3.5))
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        ax.plot([t for t, _ in self.trace], [w for _, w in self.trace], lw=1.2, label="power")
        if self.idle_power_w is not None:
            ax.axhline(self.idle_power_w, color="grey", ls="--", lw=1, label=f"idle {self.idle_power_w:.1f} W")
        energy = f"{self.energy_j:.1f} J" if self.energy_j is not None else "energy n/a"
        ax.set_title(f"{self.gpu_name or 'unknown device'}: {energy}")
        ax.set_xlabel("time [s]")
        ax.set_ylabel("power [W]")
        ax.legend(loc="lower right")
        fig.tight_layout()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100)
        return path


def integrate_trace(trace: Sequence[tuple[float, float]], t_end: float) -> float | None:
    """Energy (J) of a ``(t_s, watts)`` trace over ``[0, t_end]`` by the trapezoid rule.

    The first/last samples are held flat back to 0 and on to ``t_end`` so a sampler that
    starts late or stops early does not under-count. None for an empty trace.
    """
    if not trace:
        return None
    pts = sorted(trace)
    energy = pts[0][1] * max(pts[0][0], 0.0) + pts[-1][1] * max(t_end - pts[-1][0], 0.0)
    for (t0, w0), (t1, w1) in zip(pts, pts[1:]):
        energy += 0.5 * (w0 + w1) * (t1 - t0)
    return energy


# --------------------------------------------------------------------------- meters


class EnergyMeterBase:
    """Common start/stop/context-manager plumbing; ``result`` holds the last :class:`EnergyResult`."""

    source = "none"

    def __init__(self) -> None:
        self.result: EnergyResult | None = None

    def start(self) -> "EnergyMeterBase":
        """Begin measuring (returns self)."""
        return self

    def stop(self) -> EnergyResult:
        """End measuring, store and return the :class:`EnergyResult`."""
        raise NotImplementedError

    def __enter__(self) -> "EnergyMeterBase":
        return self.start()

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            self.stop()
        else:  # never let a failing stop() hide the trial's own exception
            try:
                self.stop()
            except Exception:  # noqa: BLE001
                log.exception("energy meter stop() failed while handling %s", exc_type.__name__)
        return False


class NullEnergyMeter(EnergyMeterBase):
    """A meter that measures nothing; its result carries only ``seconds`` and a ``reason``."""

    def __init__(self, reason: str) -> None:
        super().__init__()
        self.reason = reason
        self._t0: float | None = None

    def start(self) -> "NullEnergyMeter":
        """Remember the start time (seconds are still reported)."""
        self._t0 = time.perf_counter()
        return self

    def stop(self) -> EnergyResult:
        """Return a result with no energy and the reason."""
        seconds = time.perf_counter() - self._t0 if self._t0 is not None else None
        self.result = EnergyResult(seconds=seconds, source="none", reason=self.reason)
        return self.result

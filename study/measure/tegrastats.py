"""Jetson boards: the one answer to "are we on a Jetson?", and module energy from ``tegrastats``.

``tegrastats`` reports the module's total input rail (VDD_IN / POM_5V_IN), i.e. CPU + GPU +
SoC + memory, not the GPU alone; the ``gpu_`` metric names are kept for one schema.
"""

from __future__ import annotations

import re
import shutil
import statistics
import subprocess
import threading
import time
from pathlib import Path
from typing import Sequence

import torch

from .meter import EnergyMeterBase, EnergyResult, idle_baseline_w, integrate_trace, remember_idle_baseline
from .timing import device_sync

__all__ = ["TegrastatsMeter", "jetson_model", "on_jetson", "parse_tegrastats_line", "read_text"]

#: Key of the Jetson module's idle power in the per-process idle-baseline cache.
_TEGRASTATS_KEY = "tegrastats"


# --------------------------------------------------------------------------- which board


def read_text(path: str) -> str | None:
    """A small system file's text (NULs dropped, stripped), or None when it is unreadable or empty."""
    try:
        return Path(path).read_text(errors="replace").replace("\x00", "").strip() or None
    except OSError:
        return None


def jetson_model() -> str | None:
    """"NVIDIA Jetson Orin Nano Developer Kit" and the like, on a Jetson; else None."""
    model = read_text("/proc/device-tree/model")
    if model and "jetson" in model.lower():
        return model
    if Path("/etc/nv_tegra_release").exists():
        return model or "NVIDIA Jetson"
    return None


def on_jetson() -> bool:
    """True on a Jetson: its device tree or ``/etc/nv_tegra_release`` says so, or ``tegrastats``
    is on PATH."""
    return jetson_model() is not None or shutil.which("tegrastats") is not None


# --------------------------------------------------------------------------- tegrastats


_TEGRA_RAIL = re.compile(r"\b(VDD_IN|POM_5V_IN)\s+(\d+)(?:mW)?/(\d+)(?:mW)?")


def parse_tegrastats_line(line: str) -> float | None:
    """Current total input power (W) of one tegrastats line, or None if it has no such rail.

    Handles Orin/Xavier NX ``VDD_IN 5704mW/5704mW`` and Nano/TX ``POM_5V_IN 2583/2583``
    (current/average, mW). Boards without a total-input rail (AGX Xavier) give None.
    """
    m = _TEGRA_RAIL.search(line)
    return int(m.group(2)) / 1000.0 if m else None


def _rail_name(line: str) -> str | None:
    m = _TEGRA_RAIL.search(line)
    return m.group(1) if m else None


_PERMISSION_HINT = ("run the trial with sudo, or add your user to the group allowed to run "
                    "tegrastats / read the power monitors (see `ls -l $(which tegrastats)`)")


class TegrastatsMeter(EnergyMeterBase):
    """Jetson module energy from ``tegrastats --interval <ms>``: trapezoid integral of the VDD_IN trace.

    ``command`` is the tegrastats executable (argv list or string); tests pass a script that
    prints recorded lines. ``--interval <ms>`` is appended.
    """

    source = "tegrastats"

    def __init__(self, *, command: Sequence[str] | str = "tegrastats", sample_hz: float = 10.0,
                 idle_baseline_s: float = 2.0, device: torch.device | str | None = None) -> None:
        super().__init__()
        if sample_hz <= 0:
            raise ValueError(f"sample_hz must be > 0, got {sample_hz}")
        self.command = [command] if isinstance(command, str) else list(command)
        self.interval_ms = max(1, int(round(1000.0 / sample_hz)))
        self.idle_baseline_s = idle_baseline_s
        self.synchronize = device_sync(device)
        self._proc: subprocess.Popen | None = None
        self._failed: str | None = None

    def _reader(self) -> None:
        for line in self._proc.stdout:
            w = parse_tegrastats_line(line)
            with self._lock:
                if w is None:
                    self._skipped += 1
                else:
                    self._rail = self._rail or _rail_name(line)
                    self._trace.append((time.perf_counter() - self._t0, w))

    def start(self) -> "TegrastatsMeter":
        """Launch tegrastats (and take the idle baseline, first time per process), then start the clock."""
        self._trace, self._skipped, self._rail = [], 0, None
        self._lock = threading.Lock()
        self.synchronize()
        self._t0 = time.perf_counter()
        try:
            self._proc = subprocess.Popen([*self.command, "--interval", str(self.interval_ms)],
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                          text=True, bufsize=1)
        except FileNotFoundError:
            self._failed = f"tegrastats not found (not a Jetson?): {self.command[0]!r}"
            return self
        except PermissionError as err:
            self._failed = f"permission denied starting tegrastats ({err}): {_PERMISSION_HINT}"
            return self
        self._thread = threading.Thread(target=self._reader, name="tegrastats-reader", daemon=True)
        self._thread.start()
        if idle_baseline_w(_TEGRASTATS_KEY) is None and self.idle_baseline_s > 0:
            time.sleep(self.idle_baseline_s)
            with self._lock:
                if self._trace:
                    remember_idle_baseline(_TEGRASTATS_KEY, statistics.median(w for _, w in self._trace))
                self._trace.clear()
                self._t0 = time.perf_counter()
        return self

    def stop(self) -> EnergyResult:
        """Synchronize, stop tegrastats and integrate its trace."""
        if self._failed:
            self.result = EnergyResult(source="none", reason=self._failed)
            return self.result
        if self._proc is None:
            raise RuntimeError("TegrastatsMeter.stop() before start(): use `with meter:` or call start() first")
        try:
            self.synchronize()
        finally:
            seconds = time.perf_counter() - self._t0
            self._proc.terminate()
            try:
                _, stderr = self._proc.communicate(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                _, stderr = self._proc.communicate()
            self._thread.join(timeout=5)
            self._proc = None
        with self._lock:
            trace, skipped = [(t, w) for t, w in self._trace if t <= seconds], self._skipped
        res = EnergyResult(seconds=seconds, trace=trace, source="tegrastats", gpu_name="Jetson module (VDD_IN)",
                           power_field=self._rail, skipped_lines=skipped,
                           idle_power_w=idle_baseline_w(_TEGRASTATS_KEY))
        if trace:
            res.energy_j, res.energy_source = integrate_trace(trace, seconds), "tegrastats_vdd_in"
            res.avg_power_w = res.energy_j / seconds if seconds > 0 else None
        elif any(s in (stderr or "").lower() for s in ("permission", "root", "not permitted")):
            res.reason = f"tegrastats refused ({stderr.strip()[:200]}): {_PERMISSION_HINT}"
        else:
            res.reason = (f"tegrastats gave no total-input (VDD_IN/POM_5V_IN) line in {seconds:.2f} s "
                          f"({skipped} other lines; stderr: {(stderr or '').strip()[:200]!r}); "
                          "measure longer or check the board's rail names")
        self.result = res
        return res

"""Energy of a training trial, measured on the GPU the trial actually runs on.

Use it as a context manager around the trial::

    meter = energy_meter(device=device)          # NVML, tegrastats or a null meter
    with meter:
        train(...)
    log_metrics(meter.result.metrics(iterations=n_iter)); set_tags(meter.result.tags())

Rules:

* A metric that was not measured is ABSENT from :meth:`EnergyResult.metrics` (never 0);
  ``result.reason`` / the ``energy_unavailable_reason`` tag say why.
* NVML: the torch CUDA device is mapped to its NVML handle by UUID (honours
  ``CUDA_VISIBLE_DEVICES``). Energy is the difference of the total-energy counter, with
  ``torch.cuda.synchronize`` at both edges; where the counter is unsupported the sampled power
  trace is integrated instead (``energy_source="power_integral"``).
* An idle-power baseline is sampled once per process per GPU (cached by UUID) before the
  first measurement. It is the GPU's power while *this* process launches no work, so it
  includes whatever other processes run there (see ``shared_processes``).
* Jetson: ``tegrastats`` reports the module's total input rail (VDD_IN / POM_5V_IN), i.e. CPU +
  GPU + SoC + memory, not the GPU alone; the ``gpu_`` metric names are kept for one schema.
"""

from __future__ import annotations

import csv
import logging
import os
import re
import shutil
import statistics
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch

__all__ = [
    "EnergyResult",
    "EnergyMeterBase",
    "NullEnergyMeter",
    "NvmlApi",
    "NvmlEnergyMeter",
    "TegrastatsMeter",
    "energy_meter",
    "gpu_compute_processes",
    "integrate_trace",
    "nvml_index_for_uuid",
    "parse_tegrastats_line",
    "pick_power_reader",
]

log = logging.getLogger(__name__)

#: Idle power (W) per GPU UUID (or "tegrastats" for the Jetson module), once per process.
_IDLE_BASELINE_W: dict[str, float] = {}
_TEGRASTATS_KEY = "tegrastats"


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


class _Sampler:
    """Background thread calling ``read() -> watts | None`` every ``1/hz`` s into ``trace``."""

    def __init__(self, read: Callable[[], float | None], hz: float, t0: float) -> None:
        self.read, self.period, self.t0 = read, 1.0 / hz, t0
        self.trace: list[tuple[float, float]] = []
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="energy-sampler", daemon=True)

    def _run(self) -> None:
        while True:
            try:
                w = self.read()
                if w is not None:
                    self.trace.append((time.perf_counter() - self.t0, w))
            except Exception:  # noqa: BLE001 - a lost sample must not kill the trial
                self.errors += 1
            if self._stop.wait(self.period):
                return

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> list[tuple[float, float]]:
        self._stop.set()
        self._thread.join(timeout=5.0)
        return list(self.trace)


def _sample_median(read: Callable[[], float | None], seconds: float, hz: float) -> float | None:
    """Median of ``read()`` sampled at ``hz`` for ``seconds`` (None when nothing was read)."""
    values, n = [], max(1, int(round(seconds * hz)))
    for i in range(n):
        w = _try(read)
        if w is not None:
            values.append(w)
        if i < n - 1:
            time.sleep(1.0 / hz)
    return statistics.median(values) if values else None


def _try(fn: Callable[[], float | None]) -> float | None:
    """``fn()``, or None if it raised (a lost reading must not break the trial)."""
    try:
        return fn()
    except Exception:  # noqa: BLE001
        log.debug("energy reading failed", exc_info=True)
        return None


def _synchronizer(device: torch.device | str | None) -> Callable[[], None]:
    """``torch.cuda.synchronize(device)`` for a CUDA device, else a no-op."""
    if device is not None and torch.device(device).type == "cuda":
        dev = torch.device(device)
        return lambda: torch.cuda.synchronize(dev)
    return lambda: None


# --------------------------------------------------------------------------- NVML


def _norm_uuid(uuid: str | bytes) -> str:
    """Lower-case UUID without the ``GPU-`` prefix (torch prints none, NVML prints one)."""
    if isinstance(uuid, bytes):
        uuid = uuid.decode()
    uuid = str(uuid).strip().lower()
    return uuid[4:] if uuid.startswith("gpu-") else uuid


def nvml_index_for_uuid(torch_uuid: str | bytes, nvml_uuids: Sequence[str | bytes]) -> int:
    """Index into ``nvml_uuids`` of the GPU whose UUID is ``torch_uuid`` (``GPU-`` prefix and bytes tolerated).

    Needed because torch's index 0 is whatever ``CUDA_VISIBLE_DEVICES`` lists first, which
    can be NVML index 3. Raises ``LookupError`` naming the UUID when there is no match
    (never falls back to index 0).
    """
    want = _norm_uuid(torch_uuid)
    for i, u in enumerate(nvml_uuids):
        if _norm_uuid(u) == want:
            return i
    raise LookupError(
        f"no NVML GPU has UUID {torch_uuid!r} (NVML sees {[_norm_uuid(u) for u in nvml_uuids]}); "
        "a MIG instance or a container whose NVML sees other GPUs? Check `nvidia-smi -L`."
    )


class NvmlApi:
    """Thin adapter over the few pynvml calls used here, so the arithmetic can be tested with a fake.

    Methods return None where NVML says "not supported" / "no permission"; other errors raise.
    """

    _initialised = False

    def __init__(self) -> None:
        import pynvml  # noqa: PLC0415 - optional dependency

        self.nv = pynvml
        if not NvmlApi._initialised:
            pynvml.nvmlInit()  # reference-counted by NVML; never shut down (process-wide)
            NvmlApi._initialised = True

    def _soft(self, fn, *args):
        try:
            return fn(*args)
        except self.nv.NVMLError as err:
            if err.value in (self.nv.NVML_ERROR_NOT_SUPPORTED, self.nv.NVML_ERROR_NO_PERMISSION):
                return None
            raise

    def handles(self) -> list:
        """Handles of all GPUs NVML sees, in NVML index order."""
        return [self.nv.nvmlDeviceGetHandleByIndex(i) for i in range(self.nv.nvmlDeviceGetCount())]

    def uuid(self, handle) -> str:
        """UUID string of the GPU (``GPU-...``)."""
        u = self.nv.nvmlDeviceGetUUID(handle)
        return u.decode() if isinstance(u, bytes) else u

    def name(self, handle) -> str:
        """Marketing name of the GPU."""
        n = self.nv.nvmlDeviceGetName(handle)
        return n.decode() if isinstance(n, bytes) else n

    def total_energy_mj(self, handle) -> int | None:
        """Total energy counter since driver load (mJ), or None when unsupported."""
        return self._soft(self.nv.nvmlDeviceGetTotalEnergyConsumption, handle)

    def instant_power_w(self, handle) -> float | None:
        """Instantaneous board power (W) from field ``NVML_FI_DEV_POWER_INSTANT``, or None."""
        values = self._soft(self.nv.nvmlDeviceGetFieldValues, handle, [self.nv.NVML_FI_DEV_POWER_INSTANT])
        if not values or values[0].nvmlReturn != self.nv.NVML_SUCCESS:
            return None
        return _field_value(values[0], self.nv) / 1000.0  # mW

    def average_power_w(self, handle) -> float | None:
        """Power (W) from ``nvmlDeviceGetPowerUsage`` (averaged over ~1 s on many GPUs), or None."""
        mw = self._soft(self.nv.nvmlDeviceGetPowerUsage, handle)
        return None if mw is None else mw / 1000.0

    def compute_pids(self, handle) -> list[int] | None:
        """PIDs of compute processes on the GPU, or None when NVML won't tell."""
        procs = self._soft(self.nv.nvmlDeviceGetComputeRunningProcesses, handle)
        return None if procs is None else [p.pid for p in procs]

    def process_utilization(self, handle, since_us: int) -> dict[int, float] | None:
        """Mean SM utilisation (%) per PID over NVML's samples newer than ``since_us``, or None.

        For apportioning the GPU's energy among processes (``srstudy.measure.attribution``).
        NVML keeps a short buffer of per-process samples stamped in CPU microseconds; a PID
        with several samples gets their mean. ``{}`` when no process has a sample since then
        (NVML answers NOT_FOUND); None where the GPU or driver does not support it.
        """
        try:
            samples = self.nv.nvmlDeviceGetProcessUtilization(handle, int(since_us))
        except self.nv.NVMLError as err:
            if err.value in (self.nv.NVML_ERROR_NOT_FOUND, self.nv.NVML_SUCCESS):
                return {}  # no samples in the period (SUCCESS: pynvml's wrapper on an empty buffer)
            if err.value in (self.nv.NVML_ERROR_NOT_SUPPORTED, self.nv.NVML_ERROR_NO_PERMISSION):
                return None
            raise
        per_pid: dict[int, list[float]] = {}
        for s in samples:
            if s.timeStamp > since_us:
                per_pid.setdefault(int(s.pid), []).append(float(s.smUtil))
        return {pid: sum(v) / len(v) for pid, v in per_pid.items()}


def _field_value(fv, nv) -> float:
    """Numeric value of a ``c_nvmlFieldValue_t`` according to its ``valueType``."""
    member = {
        nv.NVML_VALUE_TYPE_DOUBLE: "dVal",
        nv.NVML_VALUE_TYPE_UNSIGNED_INT: "uiVal",
        nv.NVML_VALUE_TYPE_UNSIGNED_LONG: "ulVal",
        nv.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG: "ullVal",
        nv.NVML_VALUE_TYPE_SIGNED_LONG_LONG: "sllVal",
        nv.NVML_VALUE_TYPE_SIGNED_INT: "siVal",
    }.get(fv.valueType, "uiVal")
    return float(getattr(fv.value, member))


def pick_power_reader(api, handle) -> tuple[Callable[[], float | None], str | None]:
    """``(read() -> watts | None, field)``: the instant-power field if it answers, else the
    averaged power usage, else a reader of nothing with field None. Shared by every NVML
    power sampler (the meter, the study's idle baseline and attribution sampler)."""
    if api.instant_power_w(handle) is not None:
        return (lambda: api.instant_power_w(handle)), "instant"
    if api.average_power_w(handle) is not None:
        return (lambda: api.average_power_w(handle)), "average"
    return (lambda: None), None


def _other_processes(pids: list[int] | None, own_pid: int) -> int | None:
    """How many compute processes besides ours are in ``pids`` (None if unknown).

    Called while we hold a CUDA context on the GPU, so one entry is us. In a container NVML
    lists host PIDs, where ``own_pid`` does not appear; we still count one entry as ours.
    """
    if pids is None:
        return None
    pids = set(pids)
    return len(pids - {own_pid}) if own_pid in pids else max(len(pids) - 1, 0)


def gpu_compute_processes(device: torch.device | str) -> list[int] | None:
    """PIDs of all compute processes on the GPU behind torch ``device`` (None where NVML can't say)."""
    api = NvmlApi()
    handle = _nvml_handle_for(torch.device(device), api)
    return api.compute_pids(handle)


def _nvml_handle_for(device: torch.device, api: NvmlApi):
    """NVML handle of torch CUDA ``device``, matched by UUID."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    torch_uuid = str(torch.cuda.get_device_properties(index).uuid)
    handles = api.handles()
    return handles[nvml_index_for_uuid(torch_uuid, [api.uuid(h) for h in handles])]


class NvmlEnergyMeter(EnergyMeterBase):
    """Energy of one NVIDIA GPU via NVML: counter difference, else integral of sampled power.

    Build with :meth:`for_device` (or :func:`energy_meter`); the plain constructor takes an
    NVML adapter and handle so tests can pass a fake.
    """

    source = "nvml"

    def __init__(self, api, handle, *, sample_hz: float = 10.0, idle_baseline_s: float = 2.0,
                 synchronize: Callable[[], None] = lambda: None) -> None:
        super().__init__()
        if sample_hz <= 0:
            raise ValueError(f"sample_hz must be > 0, got {sample_hz}")
        self.api, self.handle = api, handle
        self.sample_hz, self.idle_baseline_s = sample_hz, idle_baseline_s
        self.synchronize = synchronize
        self.uuid = api.uuid(handle)
        self.name = api.name(handle)
        self._read_power, self.power_field = self._pick_power_reader()
        self._sampler: _Sampler | None = None

    @classmethod
    def for_device(cls, device: torch.device | str, *, sample_hz: float = 10.0,
                   idle_baseline_s: float = 2.0, api: NvmlApi | None = None) -> "NvmlEnergyMeter":
        """Meter for torch CUDA ``device``; raises ``LookupError`` if its UUID is not seen by NVML."""
        device = torch.device(device)
        api = api or NvmlApi()
        return cls(api, _nvml_handle_for(device, api), sample_hz=sample_hz,
                   idle_baseline_s=idle_baseline_s, synchronize=_synchronizer(device))

    def _pick_power_reader(self) -> tuple[Callable[[], float | None], str | None]:
        return pick_power_reader(self.api, self.handle)

    def start(self) -> "NvmlEnergyMeter":
        """Synchronize, take the idle baseline (first time per GPU), read the counter, start sampling."""
        self.synchronize()
        if self.uuid not in _IDLE_BASELINE_W and self.idle_baseline_s > 0 and self.power_field:
            idle = _sample_median(self._read_power, self.idle_baseline_s, self.sample_hz)
            if idle is not None:
                _IDLE_BASELINE_W[self.uuid] = idle
        self._pids_start = self.api.compute_pids(self.handle)
        self._e0 = self.api.total_energy_mj(self.handle)
        self._t0 = time.perf_counter()
        self._sampler = _Sampler(self._read_power, self.sample_hz, self._t0)
        self._sampler.start()
        return self

    def stop(self) -> EnergyResult:
        """Synchronize, read the counter, stop sampling and compute the result."""
        sampler, self._sampler = self._sampler, None
        if sampler is None:
            raise RuntimeError("NvmlEnergyMeter.stop() before start(): use `with meter:` or call start() first")
        try:
            self.synchronize()
        finally:  # the sampler thread is stopped even if the trial left CUDA broken
            t1 = time.perf_counter()
            e1 = _try(lambda: self.api.total_energy_mj(self.handle)) if self._e0 is not None else None
            trace = sampler.stop()
        seconds = t1 - self._t0
        last = _try(self._read_power)
        if last is not None:
            trace.append((seconds, last))
        res = EnergyResult(seconds=seconds, trace=trace, gpu_name=self.name, gpu_uuid=self.uuid,
                           source="nvml", power_field=self.power_field,
                           idle_power_w=_IDLE_BASELINE_W.get(self.uuid))
        if self._e0 is not None and e1 is not None:
            res.energy_j, res.energy_source = (e1 - self._e0) / 1000.0, "counter"
        elif len(trace) >= 2:
            res.energy_j, res.energy_source = integrate_trace(trace, seconds), "power_integral"
        else:
            res.reason = ("NVML energy counter not supported and too few power samples "
                          f"({len(trace)}) to integrate; raise sample_hz or measure longer")
        if res.energy_j is not None and seconds > 0:
            res.avg_power_w = res.energy_j / seconds
        others = [_other_processes(p, os.getpid()) for p in (self._pids_start, self.api.compute_pids(self.handle))]
        known = [o for o in others if o is not None]
        res.shared_processes = max(known) if known else None
        self.result = res
        return res


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
        self.synchronize = _synchronizer(device)
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
        if _TEGRASTATS_KEY not in _IDLE_BASELINE_W and self.idle_baseline_s > 0:
            time.sleep(self.idle_baseline_s)
            with self._lock:
                if self._trace:
                    _IDLE_BASELINE_W[_TEGRASTATS_KEY] = statistics.median(w for _, w in self._trace)
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
                           idle_power_w=_IDLE_BASELINE_W.get(_TEGRASTATS_KEY))
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


# --------------------------------------------------------------------------- factory


def _on_jetson() -> bool:
    return shutil.which("tegrastats") is not None or Path("/etc/nv_tegra_release").exists()


def energy_meter(*, device: torch.device | str | None, sample_hz: float = 10.0, idle_baseline_s: float = 2.0,
                 backend: str = "auto", tegrastats_cmd: Sequence[str] | str = "tegrastats") -> EnergyMeterBase:
    """The right energy meter for a trial running on ``device``.

    ``backend="auto"``: a CUDA device on a Jetson → :class:`TegrastatsMeter`; a CUDA device
    with working NVML → :class:`NvmlEnergyMeter`; anything else → :class:`NullEnergyMeter`
    with the reason. ``"tegrastats"`` / ``"nvml"`` force one (``"nvml"`` raises if impossible),
    ``"none"`` disables measuring.
    """
    if backend not in ("auto", "nvml", "tegrastats", "none"):
        raise ValueError(f"backend must be 'auto', 'nvml', 'tegrastats' or 'none', got {backend!r}")
    if backend == "none":
        return NullEnergyMeter("energy measurement disabled (backend='none')")
    if backend == "tegrastats":
        cmd = [tegrastats_cmd] if isinstance(tegrastats_cmd, str) else list(tegrastats_cmd)
        if shutil.which(cmd[0]) is None:
            return NullEnergyMeter(f"tegrastats not found (not a Jetson?): {cmd[0]!r} is not on PATH")
        return TegrastatsMeter(command=cmd, sample_hz=sample_hz, idle_baseline_s=idle_baseline_s, device=device)

    reason = _nvml_unavailable(device)
    if reason is None and backend == "auto" and _on_jetson():
        return energy_meter(device=device, sample_hz=sample_hz, idle_baseline_s=idle_baseline_s,
                            backend="tegrastats", tegrastats_cmd=tegrastats_cmd)
    if reason is None:
        try:
            return NvmlEnergyMeter.for_device(device, sample_hz=sample_hz, idle_baseline_s=idle_baseline_s)
        except ImportError as err:
            reason = f"pynvml not importable: {err} (pip install nvidia-ml-py)"
        except LookupError as err:
            reason = str(err)
        except Exception as err:  # noqa: BLE001 - pynvml.NVMLError and friends
            reason = f"NVML init failed: {err!r} (is the NVIDIA driver loaded? try `nvidia-smi`)"
    if backend == "nvml":
        raise RuntimeError(f"NVML energy meter requested but unavailable: {reason}")
    return NullEnergyMeter(reason)


def _nvml_unavailable(device: torch.device | str | None) -> str | None:
    """Why ``device`` can't be an NVML-measured CUDA device (None if it can)."""
    if device is None:
        return "no device given (pass the trial's torch device)"
    device = torch.device(device)
    if device.type != "cuda":
        return f"no CUDA device (trial runs on {device.type})"
    if not torch.cuda.is_available():
        return "CUDA device requested but torch.cuda.is_available() is False"
    return None

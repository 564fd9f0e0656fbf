"""NVIDIA GPUs through NVML: the adapter, matching a torch device to its NVML handle by UUID,
the energy meter, the compute-process list, and the one answer to "can NVML be used here?".

* The torch CUDA device is mapped to its NVML handle by UUID (honours ``CUDA_VISIBLE_DEVICES``).
* Energy is the difference of the total-energy counter, with ``torch.cuda.synchronize`` at
  both edges; where the counter is unsupported the sampled power trace is integrated instead
  (``energy_source="power_integral"``).
* An idle-power baseline is sampled once per process per GPU (cached by UUID) before the first
  measurement. It is the GPU's power while *this* process launches no work, so it includes
  whatever other processes run there (see ``shared_processes``).
"""

from __future__ import annotations

import logging
import os
import statistics
import threading
import time
from typing import Callable, Sequence

import torch

from .meter import EnergyMeterBase, EnergyResult, idle_baseline_w, integrate_trace, remember_idle_baseline
from .timing import device_sync

__all__ = [
    "NvmlApi",
    "NvmlEnergyMeter",
    "gpu_compute_processes",
    "nvml_failure",
    "nvml_handle_for",
    "nvml_index_for_uuid",
    "nvml_unavailable_reason",
    "open_nvml",
    "other_processes",
    "pick_power_reader",
]

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- availability


def nvml_failure(err: Exception) -> str:
    """Why NVML cannot be used, from the error raised opening it (or finding a GPU through it)."""
    if isinstance(err, ImportError):
        return f"pynvml not importable: {err} (pip install nvidia-ml-py)"
    if isinstance(err, LookupError):
        return str(err)
    return f"NVML init failed: {err!r} (is the NVIDIA driver loaded? try `nvidia-smi`)"


def open_nvml() -> tuple["NvmlApi | None", str | None]:
    """``(api, None)`` when NVML answers and sees a GPU on this node, else ``(None, why not)``."""
    try:
        api = NvmlApi()
        if not api.handles():
            return None, "NVML sees no GPU on this node"
    except Exception as err:  # noqa: BLE001 - ImportError, pynvml.NVMLError and friends
        return None, nvml_failure(err)
    return api, None


def nvml_unavailable_reason() -> str | None:
    """Why NVML cannot measure any GPU on this node (None: it can)."""
    return open_nvml()[1]


# --------------------------------------------------------------------------- sampling


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

    def temperature_c(self, handle) -> float | None:
        """GPU die temperature (°C), or None when unsupported: logged with energy windows, since a
        hotter GPU draws more leakage power for the same work."""
        t = self._soft(self.nv.nvmlDeviceGetTemperature, handle, self.nv.NVML_TEMPERATURE_GPU)
        return None if t is None else float(t)

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


def other_processes(pids: list[int] | None, own_pid: int) -> int | None:
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
    handle = nvml_handle_for(torch.device(device), api)
    return api.compute_pids(handle)


def nvml_handle_for(device: torch.device, api: NvmlApi):
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
        return cls(api, nvml_handle_for(device, api), sample_hz=sample_hz,
                   idle_baseline_s=idle_baseline_s, synchronize=device_sync(device))

    def _pick_power_reader(self) -> tuple[Callable[[], float | None], str | None]:
        return pick_power_reader(self.api, self.handle)

    def start(self) -> "NvmlEnergyMeter":
        """Synchronize, take the idle baseline (first time per GPU), read the counter, start sampling."""
        self.synchronize()
        if idle_baseline_w(self.uuid) is None and self.idle_baseline_s > 0 and self.power_field:
            idle = _sample_median(self._read_power, self.idle_baseline_s, self.sample_hz)
            if idle is not None:
                remember_idle_baseline(self.uuid, idle)
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
                           idle_power_w=idle_baseline_w(self.uuid))
        if self._e0 is not None and e1 is not None:
            res.energy_j, res.energy_source = (e1 - self._e0) / 1000.0, "counter"
        elif len(trace) >= 2:
            res.energy_j, res.energy_source = integrate_trace(trace, seconds), "power_integral"
        else:
            res.reason = ("NVML energy counter not supported and too few power samples "
                          f"({len(trace)}) to integrate; raise sample_hz or measure longer")
        if res.energy_j is not None and seconds > 0:
            res.avg_power_w = res.energy_j / seconds
        others = [other_processes(p, os.getpid()) for p in (self._pids_start, self.api.compute_pids(self.handle))]
        known = [o for o in others if o is not None]
        res.shared_processes = max(known) if known else None
        self.result = res
        return res

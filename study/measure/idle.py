"""The idle-power baseline of each GPU, taken once per study while no process computes there.

Why: a trial's "idle" power sampled by the trial itself (the old per-process cache in
``srstudy.measure.nvml``) is whatever the *other* trials draw at that moment — 332 W on an H200 that
idles at 122 W. Here the baseline is taken once per GPU per study, by the launcher before
trials start, and only when

* NVML's compute-process list for that GPU is empty (or holds only the caller's own PIDs,
  which must have no work in flight), checked before every power reading and after the
  last: a process that appears discards the samples taken so far; and
* the GPU's lock (:mod:`srstudy.measure.gpu_lock`) is held exclusively, so no process of
  the study launches work during the sampling.

It is stored in ``<workdir>/gpu_idle.json``, keyed by NVML UUID::

    {"GPU-…": {"idle_power_w": 121.7, "taken_at": "2025-…Z", "seconds": 2.0, "samples": 20,
               "power_field": "instant", "waited_s": 0.4}}

and trials read it (:func:`read_idle_baseline`). When it cannot be taken — NVML cannot list
processes, the GPU reports no power, or processes stayed for ``max_wait_s`` — the entry has
``idle_power_w: null`` and a ``reason``; trials then log no idle power and tag the reason.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import statistics
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from .gpu_lock import GpuLock
from .nvml import pick_power_reader

__all__ = ["IDLE_FILE", "IdleBaseline", "ensure_idle_baseline", "read_idle_baseline", "take_idle_baseline"]

IDLE_FILE = "gpu_idle.json"


@dataclass
class IdleBaseline:
    """The idle power of one GPU in one study, or why there is none (``idle_power_w`` None)."""

    uuid: str
    idle_power_w: float | None = None
    reason: str | None = None
    taken_at: str | None = None  # ISO time, UTC
    seconds: float | None = None  # sampling span
    samples: int = 0
    power_field: str | None = None
    waited_s: float | None = None  # how long it waited for the GPU to be free of processes

    def metrics(self) -> dict[str, float]:
        """``{"gpu_idle_power_w": …}`` when measured, else empty (never 0)."""
        return {} if self.idle_power_w is None else {"gpu_idle_power_w": float(self.idle_power_w)}

    def tags(self) -> dict[str, str]:
        """Where the baseline came from, or why it is absent."""
        if self.idle_power_w is None:
            return {"gpu_idle_unavailable_reason": self.reason or "unknown"}
        return {"gpu_idle_baseline": "study", "gpu_idle_taken_at": self.taken_at or ""}


def _others(pids: list[int] | None, own_pids: set[int]) -> set[int] | None:
    return None if pids is None else set(pids) - own_pids


def take_idle_baseline(api, handle, lock: GpuLock, *, own_pids: Iterable[int] = (), seconds: float = 2.0,
                       hz: float = 10.0, max_wait_s: float = 120.0, poll_s: float = 0.5,
                       sleep: Callable[[float], None] = time.sleep,
                       clock: Callable[[], float] = time.monotonic) -> IdleBaseline:
    """Sample the GPU's idle power (median) while no other process is on it; see the module docstring.

    ``own_pids`` are processes of the caller that may appear in NVML's list (they must have
    no GPU work in flight). Waits up to ``max_wait_s`` for the list to empty, polling every
    ``poll_s`` without holding the lock; samples ``seconds`` at ``hz`` under the exclusive lock.
    """
    if seconds <= 0 or hz <= 0:
        raise ValueError(f"idle baseline needs seconds > 0 and hz > 0, got seconds={seconds}, hz={hz}")
    own = set(own_pids)
    uuid = api.uuid(handle)
    sampler = _IdleSampler(api, handle, own, n=max(1, round(seconds * hz)), period=1.0 / hz, sleep=sleep)
    t_start = clock()
    while True:
        others = _others(api.compute_pids(handle), own)
        if others is None:
            return IdleBaseline(uuid, reason="NVML cannot list this GPU's compute processes, so no moment "
                                             "can be proven idle (driver/permission: try `nvidia-smi`)")
        if not others:
            waited = clock() - t_start
            with lock.exclusive("idle_baseline"):
                values, others = sampler.sample()
            if sampler.field is None and not others:
                return IdleBaseline(uuid, reason="NVML reports no power reading (instant or average) for this GPU")
            if not others and values:
                return IdleBaseline(uuid, idle_power_w=statistics.median(values), samples=len(values),
                                    taken_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                                    seconds=sampler.n * sampler.period, power_field=sampler.field, waited_s=waited)
            if not others:
                return IdleBaseline(uuid, reason=f"all {sampler.n} power readings failed while the GPU was idle")
        if clock() - t_start >= max_wait_s:
            return IdleBaseline(uuid, reason=(f"compute processes {sorted(others)} stayed on the GPU for "
                                              f"{max_wait_s:g} s; the idle baseline is only taken while none "
                                              "runs (stop them, or raise max_wait_s)"))
        sleep(poll_s)


class _IdleSampler:
    """``n`` power readings, each preceded (and the last followed) by a process-list check.

    The power reader is picked on the first idle moment, because even picking it reads power.
    """

    def __init__(self, api, handle, own: set[int], *, n: int, period: float, sleep) -> None:
        self.api, self.handle, self.own, self.n, self.period, self.sleep = api, handle, own, n, period, sleep
        self.read_power: Callable[[], float | None] | None = None
        self.field: str | None = None

    def _busy(self) -> set[int]:
        """Other processes on the GPU now (a list NVML stopped giving counts as busy: {-1})."""
        others = _others(self.api.compute_pids(self.handle), self.own)
        return {-1} if others is None else others

    def sample(self) -> tuple[list[float], set[int]]:
        """``(values, set())`` if the GPU stayed free of other processes throughout, else
        ``([], the processes seen)``: samples from a moment when anything else ran are dropped.
        ``([], set())`` with ``field`` None: the GPU reports no power."""
        values: list[float] = []
        for i in range(self.n):
            busy = self._busy()
            if busy:
                return [], busy
            if self.read_power is None:
                self.read_power, self.field = pick_power_reader(self.api, self.handle)
                if self.field is None:
                    return [], set()
            with contextlib.suppress(Exception):  # a lost reading is skipped, not fatal
                w = self.read_power()
                if w is not None:
                    values.append(w)
            if i < self.n - 1:
                self.sleep(self.period)
        busy = self._busy()
        return ([], busy) if busy else (values, set())


# --------------------------------------------------------------------------- storage


@contextlib.contextmanager
def _file_lock(workdir: Path) -> Iterator[None]:
    """Serialises writers of ``gpu_idle.json`` (and baseline takers) across the study's processes."""
    with open(workdir / (IDLE_FILE + ".lock"), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def _read_all(workdir: Path) -> dict:
    path = workdir / IDLE_FILE
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); delete it to re-take the idle baselines") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold an object keyed by GPU UUID; delete it to re-take the baselines")
    return data


def _from_entry(uuid: str, entry: dict) -> IdleBaseline:
    fields = {k: entry.get(k) for k in IdleBaseline.__dataclass_fields__ if k != "uuid" and k in entry}
    return IdleBaseline(uuid=uuid, **fields)


def read_idle_baseline(workdir: str | os.PathLike, uuid: str) -> IdleBaseline:
    """The study's baseline for GPU ``uuid``; absent (with a reason) if none was taken."""
    workdir = Path(workdir).expanduser().resolve()
    entry = _read_all(workdir).get(uuid)
    if entry is None:
        return IdleBaseline(uuid, reason=f"no idle baseline for this GPU in {workdir / IDLE_FILE} "
                                         "(the launcher takes it before trials start)")
    return _from_entry(uuid, entry)


def ensure_idle_baseline(workdir: str | os.PathLike, api, handle, *, lock: GpuLock | None = None,
                         retry_unavailable: bool = False, **take_kwargs) -> IdleBaseline:
    """The study's baseline for this GPU: read it, or take and store it once.

    Concurrent callers are serialised by a file lock; the first takes it, the others read
    it. An entry stored as unavailable is returned as is unless ``retry_unavailable``.
    ``take_kwargs`` go to :func:`take_idle_baseline`.
    """
    workdir = Path(workdir).expanduser().resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    uuid = api.uuid(handle)
    with _file_lock(workdir):
        entry = _read_all(workdir).get(uuid)
        if entry is not None and (entry.get("idle_power_w") is not None or not retry_unavailable):
            return _from_entry(uuid, entry)
        own_lock = lock is None
        lock = lock or GpuLock(workdir, uuid, owner="idle-baseline")
        try:
            base = take_idle_baseline(api, handle, lock, **take_kwargs)
        finally:
            if own_lock:
                lock.close()
        data = _read_all(workdir)
        data[uuid] = {k: v for k, v in asdict(base).items() if k != "uuid"}
        tmp = workdir / (IDLE_FILE + ".tmp")
        tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
        tmp.replace(workdir / IDLE_FILE)
        return base

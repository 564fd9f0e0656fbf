"""A simulated NVIDIA GPU behind the :class:`srstudy.measure.nvml.NvmlApi` interface, for CPU tests.

The GPU's state lives in a JSON file so that several real processes (lock and idle-baseline
tests) see and change the same GPU: its idle power, the compute processes on it with their
SM utilisation and the power each adds, and which NVML features it supports. Power is
``idle_w + Σ active_w`` of the processes present; the energy counter integrates that power
over the clock, piecewise constant between changes, so counter and power always agree.

The clock is ``time.time`` across processes; in-process tests pass a :class:`ManualClock`
and script the trace step by step (``clock.advance(2.0); gpu.add_process(...)``).

Every read of the process list is counted in the state (``pid_reads``), and every power
read made while a process other than the reader's ``own_pids`` was present is counted in
``power_reads_while_busy`` — so a test can prove a baseline never looked at a busy GPU.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

HANDLE = "sim-gpu-0"


class ManualClock:
    """A clock a test advances by hand (seconds, like ``time.time``)."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class SimulatedNvml:
    """Duck of ``NvmlApi`` over a shared state file (see the module docstring)."""

    def __init__(self, state_path: str | os.PathLike, *, clock: Callable[[], float] = time.time,
                 own_pids: tuple[int, ...] = ()) -> None:
        self.path = Path(state_path)
        self.clock = clock
        self.own_pids = set(own_pids)  # the reader's own processes (for power_reads_while_busy)
        if not self.path.exists():
            raise FileNotFoundError(f"{self.path}: no simulated GPU here; create it with SimulatedNvml.create()")

    @classmethod
    def create(cls, state_path: str | os.PathLike, *, uuid: str = "GPU-5140a7ed-0000-4000-8000-000000000001",
               name: str = "Simulated H200", idle_w: float = 120.0, energy_counter: bool = True,
               power: bool = True, process_list: bool = True, process_util: bool = True,
               temperature: bool = True, clock: Callable[[], float] = time.time) -> "SimulatedNvml":
        """Write a fresh GPU state file and return an adapter on it."""
        state = {"uuid": uuid, "name": name, "idle_w": idle_w, "energy_mj": 0.0, "t_last": clock(),
                 "supports": {"energy_counter": energy_counter, "power": power, "process_list": process_list,
                              "process_util": process_util, "temperature": temperature},
                 "procs": {}, "pid_reads": 0, "power_reads_while_busy": 0}
        Path(state_path).write_text(json.dumps(state))
        return cls(state_path, clock=clock)

    # ---------------------------------------------------------------- state file

    @contextlib.contextmanager
    def _state(self, write: bool) -> Iterator[dict]:
        """The state under a file lock; with ``write`` the energy is integrated up to now first."""
        with open(self.path.with_suffix(".lk"), "a") as lk:
            fcntl.flock(lk, fcntl.LOCK_EX)
            state = json.loads(self.path.read_text())
            if write:
                now = self.clock()
                state["energy_mj"] += self._power(state) * (now - state["t_last"]) * 1000.0
                state["t_last"] = now
            yield state
            if write:
                tmp = self.path.with_suffix(".tmp")
                tmp.write_text(json.dumps(state))
                tmp.replace(self.path)

    @staticmethod
    def _power(state: dict) -> float:
        return state["idle_w"] + sum(p["active_w"] for p in state["procs"].values())

    # ---------------------------------------------------------------- scripting

    def add_process(self, pid: int, *, sm: float = 0.0, active_w: float = 0.0) -> None:
        """A compute process appears on the GPU (or changes its load): SM % and the watts it adds."""
        with self._state(write=True) as s:
            s["procs"][str(pid)] = {"sm": float(sm), "active_w": float(active_w)}

    def remove_process(self, pid: int) -> None:
        """The process leaves the GPU (its context is destroyed)."""
        with self._state(write=True) as s:
            s["procs"].pop(str(pid), None)

    def counters(self) -> dict:
        """Bookkeeping for assertions: ``pid_reads``, ``power_reads_while_busy``, processes."""
        with self._state(write=False) as s:
            return {"pid_reads": s["pid_reads"], "power_reads_while_busy": s["power_reads_while_busy"],
                    "procs": {int(k): v for k, v in s["procs"].items()}}

    def true_energy_j(self) -> float:
        """The simulated counter in joules, even when the GPU 'does not support' reading it."""
        with self._state(write=True) as s:
            return s["energy_mj"] / 1000.0

    # ---------------------------------------------------------------- NvmlApi duck

    def handles(self) -> list:
        return [HANDLE]

    def uuid(self, handle) -> str:
        with self._state(write=False) as s:
            return s["uuid"]

    def name(self, handle) -> str:
        with self._state(write=False) as s:
            return s["name"]

    def total_energy_mj(self, handle) -> int | None:
        with self._state(write=True) as s:
            return int(round(s["energy_mj"])) if s["supports"]["energy_counter"] else None

    def instant_power_w(self, handle) -> float | None:
        with self._state(write=True) as s:
            if not s["supports"]["power"]:
                return None
            if set(map(int, s["procs"])) - self.own_pids:
                s["power_reads_while_busy"] += 1
            return self._power(s)

    def temperature_c(self, handle) -> float | None:
        """A simple thermal model: 30 °C plus 0.1 °C a watt drawn."""
        with self._state(write=False) as s:
            return 30.0 + self._power(s) / 10.0 if s["supports"].get("temperature", True) else None

    def average_power_w(self, handle) -> float | None:
        return None  # the simulated GPU answers the instant-power field only

    def compute_pids(self, handle) -> list[int] | None:
        with self._state(write=True) as s:
            s["pid_reads"] += 1
            return sorted(map(int, s["procs"])) if s["supports"]["process_list"] else None

    def process_utilization(self, handle, since_us: int) -> dict[int, float] | None:
        with self._state(write=False) as s:
            if not s["supports"]["process_util"]:
                return None
            return {int(pid): p["sm"] for pid, p in s["procs"].items() if p["sm"] > 0}

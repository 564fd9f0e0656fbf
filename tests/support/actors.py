"""Real processes for the energy tests: ``support.lock_actor`` actors and their shared event log.

Also the fixtures both energy test modules use: ``actors`` (killed at the end) and ``sim``
(a fresh simulated GPU idling at 122 W).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .simulated_nvml import SimulatedNvml

TESTS = Path(__file__).resolve().parent.parent
UUID = "GPU-5140a7ed-0000-4000-8000-000000000001"


class Actors:
    """Starts ``support.lock_actor`` processes and reads their shared event log."""

    def __init__(self, tmp: Path) -> None:
        self.tmp, self.log, self.procs = tmp, tmp / "events.jsonl", []
        self.log.touch()

    def start(self, role: str, name: str, **spec) -> subprocess.Popen:
        spec = {"role": role, "name": name, "workdir": str(self.tmp), "uuid": UUID, "log": str(self.log), **spec}
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
        p = subprocess.Popen([sys.executable, "-m", "support.lock_actor", json.dumps(spec)], env=env)
        self.procs.append(p)
        return p

    def events(self, who: str | None = None, event: str | None = None) -> list[dict]:
        rows = [json.loads(x) for x in self.log.read_text().splitlines() if x.strip()]
        return [r for r in rows if (who is None or r["who"] == who) and (event is None or r["event"] == event)]

    def wait_event(self, who: str, event: str, timeout: float = 30.0) -> dict:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if found := self.events(who, event):
                return found[0]
            time.sleep(0.01)
        raise AssertionError(f"{who} never logged {event!r}; events: {self.events()}")

    def finish(self, timeout: float = 60.0) -> None:
        for p in self.procs:
            assert p.wait(timeout=timeout) == 0, f"actor {p.args[-1]} exited with {p.returncode}"

    def kill_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()

    def intervals(self, who: str) -> list[tuple[float, float]]:
        """``[acquired, released]`` spans an actor logged, in order."""
        out, start = [], None
        for r in self.events(who):
            if r["event"] == "acquired":
                start = r["t"]
            elif r["event"] == "released" and start is not None:
                out.append((start, r["t"]))
                start = None
        return out


def overlaps(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """Whether two [start, end] spans overlap."""
    return a[0] < b[1] and b[0] < a[1]


@pytest.fixture
def actors(tmp_path):
    """Actors in ``tmp_path``; any still running at the end are killed."""
    a = Actors(tmp_path)
    yield a
    a.kill_all()


@pytest.fixture
def sim(tmp_path):
    """A fresh simulated GPU (idle 122 W) with its state in ``tmp_path``."""
    return SimulatedNvml.create(tmp_path / "gpu.json", uuid=UUID, idle_w=122.0)

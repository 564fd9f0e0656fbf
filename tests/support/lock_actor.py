"""A separate process that uses a GPU lock (or a simulated GPU), driven by the energy tests.

    python -m support.lock_actor '<json spec>'        (PYTHONPATH=tests)

Spec keys: ``role`` ("reader" | "relay_reader" | "hold_reader" | "writer" | "gpu_process"), ``workdir``,
``uuid``, ``name``, ``log`` (JSONL of events ``{"who", "event", "t"}``), and

* ``wait_for``: a file whose appearance ends the hold (reader / writer) or the stay on the
  GPU (gpu_process); ``hold_s``: hold for this long instead;
* ``iterations`` / ``iter_s``: a reader's loop (reader: re-acquire per iteration;
  relay_reader: two readers, ``partner`` of each other, whose holds always overlap;
  hold_reader: one hold across the loop with ``between_iterations()``); ``stop_file`` ends
  the loop early;
* ``sim``: the simulated GPU's state file (gpu_process joins it with ``sm``/``active_w``).

Every wait is bounded (``timeout_s``, default 60): a broken lock fails the test instead of
hanging it.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path


def _log(spec: dict, event: str, **extra) -> None:
    line = json.dumps({"who": spec["name"], "event": event, "t": time.time(), "pid": os.getpid(), **extra})
    with open(spec["log"], "a") as fh:
        fh.write(line + "\n")


def _hold(spec: dict) -> None:
    """Wait for ``wait_for`` to exist, or ``hold_s`` seconds."""
    deadline = time.time() + spec.get("timeout_s", 60)
    if spec.get("wait_for"):
        while not Path(spec["wait_for"]).exists():
            if time.time() > deadline:
                _log(spec, "timeout")
                sys.exit(3)
            time.sleep(0.01)
    else:
        time.sleep(spec.get("hold_s", 0.0))


def _loop(spec: dict, body) -> None:
    stop = spec.get("stop_file")
    for i in range(spec.get("iterations", 1)):
        if stop and Path(stop).exists():
            break
        body(i)


def _put(path: Path, text: str) -> None:
    tmp = path.with_suffix(f".{os.getpid()}.tmp")  # both relay readers write the turn file
    tmp.write_text(text)
    tmp.replace(path)


def _get(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


def _relay(spec: dict, lock) -> None:
    """Two relay readers hand the lock on: one releases only while the other holds it, taking
    turns, so the lock file is never free of readers — unless a waiting writer makes a
    re-acquire block, after which the partner gives up waiting (``overlap_wait_s``) and releases."""
    folder = Path(spec["log"]).parent
    me, partner = folder / f"{spec['name']}.state", folder / f"{spec['partner']}.state"
    turn = folder / "relay.turn"
    lock.acquire_shared()
    _put(me, "held")
    _log(spec, "acquired", i=0)

    def one(i: int) -> None:
        deadline = time.time() + spec.get("overlap_wait_s", 0.3)
        while time.time() < deadline and not (_get(turn) == spec["name"] and _get(partner) == "held"):
            time.sleep(0.001)
        _put(me, "free")
        _log(spec, "released", i=i)
        lock.release_shared()
        lock.acquire_shared()
        _put(me, "held")
        _log(spec, "acquired", i=i + 1)
        _put(turn, spec["partner"])
    _loop(spec, one)
    _put(me, "free")
    _log(spec, "released", i=-1)
    lock.release_shared()


def main(spec: dict) -> None:
    role = spec["role"]
    if role == "gpu_process":
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        from support.simulated_nvml import SimulatedNvml

        gpu = SimulatedNvml(spec["sim"])
        gpu.add_process(os.getpid(), sm=spec.get("sm", 90.0), active_w=spec.get("active_w", 200.0))
        _log(spec, "joined")
        _hold(spec)
        gpu.remove_process(os.getpid())
        _log(spec, "left")
        return

    from srstudy.measure.gpu_lock import GpuLock

    lock = GpuLock(spec["workdir"], spec["uuid"], owner=spec["name"])
    if role == "writer":
        _log(spec, "requested")
        grant = lock.acquire_exclusive(spec["name"])
        _log(spec, "acquired", wait_s=grant.wait_s)
        _hold(spec)
        _log(spec, "released")  # logged before the release: no one else can log in between
        lock.release_exclusive()
    elif role == "reader":
        def one(i: int) -> None:
            _log(spec, "requested")
            lock.acquire_shared()
            _log(spec, "acquired", i=i)
            _hold(spec) if i == 0 else time.sleep(spec.get("iter_s", 0.0))
            _log(spec, "released", i=i)
            lock.release_shared()
        _loop(spec, one)
    elif role == "relay_reader":
        _relay(spec, lock)
    elif role == "hold_reader":
        _log(spec, "requested")
        with lock.hold_shared() as hold:
            _log(spec, "acquired")
            _hold(spec)

            def one(i: int) -> None:
                _log(spec, "iter", i=i)
                time.sleep(spec.get("iter_s", 0.01))
                _log(spec, "iter_end", i=i)
                if hold.lock.writer_waiting():
                    _log(spec, "released", i=i)
                    hold.between_iterations()
                    _log(spec, "acquired", i=i)
            _loop(spec, one)
            _log(spec, "released", yields=hold.yields)
    else:
        raise SystemExit(f"unknown role {role!r}")


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))

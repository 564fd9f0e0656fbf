"""A readers–writer lock per physical GPU, shared by every process of a study on one node.

Why: when several trials share a GPU, the energy counter measures all of them at once. A
trial can only measure *its own* energy per iteration while it has the GPU alone. So
training iterations hold the GPU's lock **shared** (any number of trials train together),
and a trial's measurement window (or the idle baseline) takes it **exclusively**.

Files, under ``<workdir>/locks/`` (``<key>`` = the NVML UUID, lower case, ``GPU-`` dropped):

* ``gpu-<key>.lock``   the lock itself: ``flock`` LOCK_SH for readers, LOCK_EX for the writer;
* ``gpu-<key>.intent`` the writer's "I am waiting" flag. ``flock`` has no writer preference,
  so a stream of overlapping readers would starve a writer forever. A writer first takes
  the intent file exclusively, then the lock; a reader takes the intent file *shared* just
  long enough to take the lock shared, so once a writer has announced itself no new reader
  gets in, the current readers drain, and the writer runs;
* ``gpu-<key>.waits.jsonl`` one line per exclusive hold: who, when, how long it waited and
  held (for the study's ``calibration_overhead``).

``flock`` (not POSIX ``lockf``) because its locks belong to the open file, not the process:
closing another descriptor of the file does not drop them, and the kernel drops them when
the holder dies (a killed trial never blocks the study). Consequences: use ONE
:class:`GpuLock` per GPU per process (two objects on one file exclude each other like two
processes), and never ask for the exclusive lock while the same object holds it shared
(this raises instead of deadlocking). Local filesystems only: every process of a study on
a node must see the same ``<workdir>/locks`` (NFS ``flock`` emulation is not relied upon).

Readers release the lock only between iterations, and CUDA runs asynchronously, so a
reader must ``torch.cuda.synchronize()`` before releasing (``before_release``); otherwise
its queued kernels would run inside the other trial's exclusive window.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ExclusiveGrant", "GpuLock", "SharedHold", "lock_key", "read_waits"]

LOCK_DIR = "locks"


def lock_key(uuid: str | bytes) -> str:
    """File-name key of a GPU: its UUID lower case without ``GPU-``, other characters than
    ``[a-z0-9-]`` (MIG UUIDs have ``/``) replaced by ``_``. Torch and NVML spellings agree."""
    if isinstance(uuid, bytes):
        uuid = uuid.decode()
    text = str(uuid).strip().lower()
    if not text:
        raise ValueError("GPU UUID is empty; pass the NVML UUID of the GPU (e.g. `nvidia-smi -L`)")
    text = text[4:] if text.startswith("gpu-") else text
    return re.sub(r"[^a-z0-9-]", "_", text)


@dataclass
class ExclusiveGrant:
    """One exclusive hold: how long the taker waited for it and (once released) held it."""

    label: str
    requested_at: float  # time.time() when asked
    wait_s: float
    hold_s: float | None = None


class GpuLock:
    """The readers–writer lock of one GPU (see the module docstring for the protocol)."""

    def __init__(self, workdir: str | os.PathLike, uuid: str | bytes, *, owner: str | None = None) -> None:
        self.dir = Path(workdir).expanduser().resolve() / LOCK_DIR
        self.dir.mkdir(parents=True, exist_ok=True)
        key = lock_key(uuid)
        self.uuid = uuid.decode() if isinstance(uuid, bytes) else str(uuid)
        self.path = self.dir / f"gpu-{key}.lock"
        self.intent_path = self.dir / f"gpu-{key}.intent"
        self.waits_path = self.dir / f"gpu-{key}.waits.jsonl"
        self.owner = owner or f"pid{os.getpid()}"
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        self._intent_fd = os.open(self.intent_path, os.O_RDWR | os.O_CREAT, 0o666)
        self.state = "free"  # "free" | "shared" | "exclusive"
        self._grant: ExclusiveGrant | None = None
        self._held_since = 0.0

    # ---------------------------------------------------------------- readers

    def acquire_shared(self) -> float:
        """Take the lock shared (waits while a writer holds or waits for it); returns seconds blocked."""
        self._expect("free", "acquire_shared")
        t0 = time.perf_counter()
        fcntl.flock(self._intent_fd, fcntl.LOCK_SH)  # blocks while a writer has announced itself
        try:
            fcntl.flock(self._fd, fcntl.LOCK_SH)
        finally:
            fcntl.flock(self._intent_fd, fcntl.LOCK_UN)
        self.state = "shared"
        return time.perf_counter() - t0

    def release_shared(self) -> None:
        """Drop the shared hold (synchronize the GPU before, see the module docstring)."""
        self._expect("shared", "release_shared")
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        self.state = "free"

    def writer_waiting(self) -> bool:
        """True while another process holds or waits for the lock exclusively (a cheap probe)."""
        if self.state == "exclusive":
            return False  # the writer is us; probing our own intent lock would convert it
        try:
            fcntl.flock(self._intent_fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(self._intent_fd, fcntl.LOCK_UN)
        return False

    def hold_shared(self, before_release: Callable[[], None] = lambda: None) -> "SharedHold":
        """A shared hold kept across iterations that steps aside when a writer waits."""
        return SharedHold(self, before_release)

    @contextlib.contextmanager
    def shared(self) -> Iterator[float]:
        """``with lock.shared() as blocked_s:`` hold the lock shared for the block."""
        blocked = self.acquire_shared()
        try:
            yield blocked
        finally:
            self.release_shared()

    # ---------------------------------------------------------------- writer

    def acquire_exclusive(self, label: str = "") -> ExclusiveGrant:
        """Announce, then take the lock exclusively once current readers have stepped aside.

        Returns the :class:`ExclusiveGrant` with the seconds waited. Raises if this object
        holds the lock shared (release it first, e.g. ``with hold.released():``).
        """
        if self.state == "shared":
            raise RuntimeError(f"{self.path}: exclusive lock requested while this process holds it shared; "
                               "release the shared hold first (`with hold.released(): ...`)")
        self._expect("free", "acquire_exclusive")
        requested_at, t0 = time.time(), time.perf_counter()
        fcntl.flock(self._intent_fd, fcntl.LOCK_EX)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        except BaseException:
            fcntl.flock(self._intent_fd, fcntl.LOCK_UN)
            raise
        self._held_since = time.perf_counter()
        self.state = "exclusive"
        self._grant = ExclusiveGrant(label=label, requested_at=requested_at, wait_s=self._held_since - t0)
        return self._grant

    def release_exclusive(self) -> ExclusiveGrant:
        """Release the exclusive hold, append it to the waits log and return the finished grant."""
        self._expect("exclusive", "release_exclusive")
        grant, self._grant = self._grant, None
        grant.hold_s = time.perf_counter() - self._held_since
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        fcntl.flock(self._intent_fd, fcntl.LOCK_UN)
        self.state = "free"
        line = json.dumps({"owner": self.owner, "pid": os.getpid(), "label": grant.label,
                           "requested_at": grant.requested_at, "wait_s": grant.wait_s, "hold_s": grant.hold_s})
        with open(self.waits_path, "a", encoding="utf-8") as fh:  # one short O_APPEND write per line
            fh.write(line + "\n")
        return grant

    @contextlib.contextmanager
    def exclusive(self, label: str = "") -> Iterator[ExclusiveGrant]:
        """``with lock.exclusive("window") as grant:`` the GPU alone for the block."""
        grant = self.acquire_exclusive(label)
        try:
            yield grant
        finally:
            self.release_exclusive()

    # ---------------------------------------------------------------- housekeeping

    def _expect(self, state: str, what: str) -> None:
        if self.state != state:
            raise RuntimeError(f"{self.path}: {what}() while the lock is {self.state} here (expected {state})")

    def close(self) -> None:
        """Close the files (which also drops any hold)."""
        for fd in (self._fd, self._intent_fd):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.state = "free"

    def __enter__(self) -> "GpuLock":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class SharedHold:
    """A reader's shared hold across many iterations; yields to a waiting writer in between.

    Usage in a training loop::

        with lock.hold_shared(before_release=torch.cuda.synchronize) as hold:
            for it in ...:
                step(it)
                hold.between_iterations()      # a probe; steps aside only if a writer waits

    ``blocked_s`` adds up the time this reader spent waiting for writers (other trials'
    windows and idle baselines); ``yields`` counts how often it stepped aside.
    """

    def __init__(self, lock: GpuLock, before_release: Callable[[], None]) -> None:
        self.lock, self.before_release = lock, before_release
        self.blocked_s = 0.0
        self.yields = 0

    def __enter__(self) -> "SharedHold":
        self.blocked_s += self.lock.acquire_shared()
        return self

    def __exit__(self, *exc) -> None:
        if self.lock.state == "shared":
            try:
                self.before_release()
            finally:
                self.lock.release_shared()

    def between_iterations(self) -> bool:
        """If a writer waits: synchronize, step aside until it is done, re-take. True if it stepped aside."""
        if not self.lock.writer_waiting():
            return False
        self.before_release()
        self.lock.release_shared()
        self.blocked_s += self.lock.acquire_shared()
        self.yields += 1
        return True

    @contextlib.contextmanager
    def released(self) -> Iterator[None]:
        """Let go of the shared hold for the block (e.g. to take this GPU exclusively), then re-take it."""
        self.before_release()
        self.lock.release_shared()
        try:
            yield
        finally:
            if self.lock.state == "exclusive":  # the block failed while holding it: do not leak it
                self.lock.release_exclusive()
            self.blocked_s += self.lock.acquire_shared()


def read_waits(workdir: str | os.PathLike) -> list[dict]:
    """Every exclusive hold logged under ``<workdir>/locks`` (all GPUs), with its ``gpu`` key added.

    A torn last line (a writer killed mid-write) is skipped, not fatal.
    """
    out: list[dict] = []
    for path in sorted((Path(workdir).expanduser().resolve() / LOCK_DIR).glob("gpu-*.waits.jsonl")):
        gpu = path.name[len("gpu-"):-len(".waits.jsonl")]
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                out.append({**json.loads(line), "gpu": gpu})
            except json.JSONDecodeError:
                continue
    return out

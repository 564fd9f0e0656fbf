"""One launcher per study folder: `<workdir>/launch.lock`, held for the whole `srstudy launch`.

The lock is an `fcntl.flock` on the lock file, so taking it is atomic and the kernel lets go
of it when its holder dies, however it dies (kill -9 included). The file also holds who took
it (host, PID, start time, command line), for the refusal message. A launcher that finds the
file but gets the lock took over from one that died without releasing it (a stale lock): it
says so, naming the dead holder. A clean release removes the file.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

LOCK_FILE = "launch.lock"


class WorkdirLockedError(RuntimeError):
    """Another launcher holds the study folder."""


def _describe(holder: dict) -> str:
    since = holder.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(since)) if isinstance(since, (int, float)) else "?"
    return (f"PID {holder.get('pid', '?')} on host {holder.get('host', '?')}, since {when} "
            f"(command: {holder.get('command', '?')})")


def _read(fd: int) -> dict:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = b""
    while chunk := os.read(fd, 65536):
        raw += chunk
    try:
        data = json.loads(raw.decode()) if raw.strip() else {}
    except (ValueError, UnicodeDecodeError):
        return {"pid": "?", "host": "?", "command": f"unreadable lock contents {raw[:80]!r}"}
    return data if isinstance(data, dict) else {}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class WorkdirLock:
    """A held lock; `stale` is the record of a dead launcher it took over from (else None)."""

    path: Path
    fd: int
    stale: dict | None = None

    def describe_stale(self) -> str:
        """A line saying whose stale lock was taken over."""
        holder = self.stale or {}
        gone = ""
        if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int):
            gone = "; that PID is no longer running" if not _alive(holder["pid"]) else ""
        return f"took over the lock {self.path} left by a launcher that is gone: {_describe(holder)}{gone}"

    def release(self) -> None:
        """Remove the lock file, then let go of the lock (idempotent)."""
        if self.fd < 0:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self.fd)  # closing the descriptor releases the flock
            self.fd = -1

    def __enter__(self) -> "WorkdirLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def acquire(workdir: Path, command: str | None = None) -> WorkdirLock:
    """Take `<workdir>/launch.lock` or raise `WorkdirLockedError` naming its holder."""
    path = Path(workdir) / LOCK_FILE
    command = command if command is not None else " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read(fd)
            os.close(fd)
            raise WorkdirLockedError(
                f"{workdir} is in use by another `srstudy launch`: {_describe(holder)}. Wait for it to finish, "
                f"or stop it (kill {holder.get('pid', '<PID>')} on host {holder.get('host', '?')}) and continue the "
                f"study with `srstudy launch --resume --workdir {workdir}`; or choose another --workdir") from None
        except OSError as e:
            os.close(fd)
            raise WorkdirLockedError(f"cannot lock {path} ({e}): the file system of {workdir} does not support "
                                     "file locks; choose a --workdir on a local disk") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # its holder removed the file between our open and our lock: try again
    previous = _read(fd)
    record = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time(), "command": command}
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, json.dumps(record).encode())
    os.fsync(fd)
    return WorkdirLock(path, fd, stale=previous or None)

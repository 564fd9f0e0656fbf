"""A study folder (`--workdir`, default `./srstudy-runs`): what lives where, in one place.

    srstudy-runs/
      study.json          the study: name, config identity, parent MLflow run, objectives
      study_trials.json   the last launch's trial rows and Pareto set
      mlflow.db           the default MLflow store (sqlite)   artifacts/   its artifacts
      optuna.db           the Optuna study (sqlite)            ray_results/ Tune's experiments
      trials/<id>/        one folder per trial (checkpoints, run.json, result.json)
      teachers/           the teacher cache shared by all trials
      launch.lock         held by the one `srstudy launch` working here

`StudyDir(path)` names these (and is `os.PathLike`, so anything taking a folder takes it);
`check_workdir` refuses a `--workdir` that is a file before any work starts; `missing_store`
says when an sqlite store is absent (MLflow would silently create an empty one).

One launcher per study folder: `StudyDir.lock()` is an `fcntl.flock` on `launch.lock`, so
taking it is atomic and the kernel lets go of it when its holder dies, however it dies
(kill -9 included). The file also holds who took it (host, PID, start time, command line), for
the refusal message. A launcher that finds the file but gets the lock took over from one that
died without releasing it (a stale lock): it says so, naming the dead holder. A clean release
removes the file.
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

DEFAULT_WORKDIR = Path("srstudy-runs")
STATE_FILE = "study.json"
TRIALS_SUMMARY_FILE = "study_trials.json"
LOCK_FILE = "launch.lock"
MLFLOW_DB = "mlflow.db"
SQLITE_PREFIX = "sqlite:///"


class WorkdirError(ValueError):
    """A `--workdir` that cannot be a study folder (a file is in the way)."""


class WorkdirLockedError(RuntimeError):
    """Another launcher holds the study folder."""


class StudyDir:
    """The folder of one study, resolved to an absolute path; nothing is created until
    `create()` (or a write) asks for it."""

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        self.path = Path(DEFAULT_WORKDIR if path is None else path).expanduser().resolve()

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:
        return str(self.path)

    def __repr__(self) -> str:
        return f"StudyDir({str(self.path)!r})"

    def create(self) -> StudyDir:
        """Make the folder (and its parents) if missing; returns self."""
        self.path.mkdir(parents=True, exist_ok=True)
        return self

    # ---- what lives where -------------------------------------------------------------------
    @property
    def mlflow_db(self) -> Path:
        return self.path / MLFLOW_DB

    @property
    def tracking_uri(self) -> str:
        """The study's default MLflow store, `sqlite:///<workdir>/mlflow.db`."""
        return f"{SQLITE_PREFIX}{self.mlflow_db}"

    @property
    def artifacts(self) -> Path:
        """Where MLflow stores the artifacts of runs created in the default store."""
        return self.path / "artifacts"

    @property
    def optuna_url(self) -> str:
        """The Optuna study's RDB storage, `sqlite:///<workdir>/optuna.db`."""
        return f"{SQLITE_PREFIX}{self.path / 'optuna.db'}"

    @property
    def ray_results(self) -> Path:
        return self.path / "ray_results"

    @property
    def trials(self) -> Path:
        return self.path / "trials"

    def trial(self, name: str) -> Path:
        """One trial's folder: `trials/<name>` (Tune's trial id, or the config hash)."""
        return self.trials / name

    @property
    def teachers(self) -> Path:
        return self.path / "teachers"

    @property
    def state_file(self) -> Path:
        return self.path / STATE_FILE

    @property
    def trials_summary(self) -> Path:
        return self.path / TRIALS_SUMMARY_FILE

    # ---- study.json ------------------------------------------------------------------------
    def read_state(self) -> dict | None:
        """The study's record (`study.json`), or None when no study was launched here."""
        return json.loads(self.state_file.read_text()) if self.state_file.exists() else None

    def write_state(self, state: dict) -> None:
        """Write `study.json` atomically (a crash leaves the old record or the new one)."""
        tmp = self.path / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(state, indent=1))
        tmp.replace(self.state_file)

    # ---- the launch lock ---------------------------------------------------------------------
    def lock(self, command: str | None = None) -> WorkdirLock:
        """Take `launch.lock` or raise `WorkdirLockedError` naming its holder (see the module
        docstring); `command` is recorded for the refusal message (default: this process's)."""
        path = self.path / LOCK_FILE
        command = command if command is not None else " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                raise WorkdirLockedError(
                    f"{self.path} is in use by another `srstudy launch`: {_describe(holder)}. Wait for it to "
                    f"finish, or stop it (kill {holder.get('pid', '<PID>')} on host {holder.get('host', '?')}) and "
                    f"continue the study with `srstudy launch --resume --workdir {self.path}`; or choose another "
                    "--workdir") from None
            except OSError as e:
                os.close(fd)
                raise WorkdirLockedError(f"cannot lock {path} ({e}): the file system of {self.path} does not "
                                         "support file locks; choose a --workdir on a local disk") from None
            try:
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # its holder removed the file between our open and our lock: try again
        previous = _read_holder(fd)
        record = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time(), "command": command}
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps(record).encode())
        os.fsync(fd)
        return WorkdirLock(path, fd, stale=previous or None)


def _describe(holder: dict) -> str:
    since = holder.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(since)) if isinstance(since, (int, float)) else "?"
    return (f"PID {holder.get('pid', '?')} on host {holder.get('host', '?')}, since {when} "
            f"(command: {holder.get('command', '?')})")


def _read_holder(fd: int) -> dict:
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

    def __enter__(self) -> WorkdirLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


# ---- checks at the edge ------------------------------------------------------------------------
def check_workdir(workdir: str | os.PathLike, what: str = "--workdir") -> Path:
    """A study folder must be a folder or not exist yet (then it is created later): a file
    there, or a file among its parents, raises `WorkdirError` naming it. Returns the path."""
    workdir = Path(workdir)
    for p in (workdir, *workdir.parents):
        if p.is_dir():
            break
        if p.exists():
            where = f"{what} {p}" if p == workdir else f"{what} {workdir}: its parent {p}"
            raise WorkdirError(f"{where} is a file, not a folder; give a folder (it is created if missing), "
                               f"e.g. --workdir {DEFAULT_WORKDIR}")
    return workdir


def missing_store(tracking_uri: str) -> str | None:
    """'no MLflow store at URI (PATH does not exist)' for an sqlite URI whose file is absent
    (MLflow would silently create an empty store there); None for any other store."""
    if not tracking_uri.startswith(SQLITE_PREFIX):
        return None
    path = tracking_uri[len(SQLITE_PREFIX):].split("?", 1)[0]
    if not path or path == ":memory:" or Path(path).exists():
        return None
    return f"no MLflow store at {tracking_uri} ({path} does not exist)"

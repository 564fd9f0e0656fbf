"""Checksummed cache files shared by concurrent trials (the teacher cache, teacher banks).

A cached file travels with a JSON meta file holding its sha256 (and how it was made). Readers
trust the file only when the checksum matches: a mismatch, or a meta file that is missing or
unreadable, is logged, both files are deleted, and the caller rebuilds — a corrupt file is
never loaded. Builders work under a file lock (`<cache>/<name>.lock`), so concurrent trials
wait for one build instead of each building their own.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from filelock import FileLock

log = logging.getLogger("srstudy.teacher")  # the caches hold teachers and their outputs


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def checked_meta(data: Path, meta: Path, *, what: str) -> dict[str, Any] | None:
    """The meta of `data` when the file matches the sha256 recorded in `meta`; None when
    neither exists, or when they do not match (logged as `<what> is corrupt`, both deleted)."""
    if not data.exists() and not meta.exists():
        return None
    try:
        info = json.loads(meta.read_text())
        if sha256_file(data) == info["sha256"]:
            return info
        problem = "checksum mismatch"
    except (OSError, ValueError, KeyError) as e:
        problem = f"{type(e).__name__}: {e}"
    log.warning("%s is corrupt (%s): deleting and rebuilding it", what, problem)
    for p in (data, meta):
        p.unlink(missing_ok=True)
    return None


def seal(data: Path, meta: Path, info: dict[str, Any]) -> dict[str, Any]:
    """Write `meta` for a freshly built `data`: its sha256, then `info`; returns what was written."""
    sealed = {"sha256": sha256_file(data), **info}
    meta.write_text(json.dumps(sealed, indent=1))
    return sealed


def cache_lock(cache_dir: Path, name: str, timeout_s: float) -> FileLock:
    """The file lock `<cache_dir>/<name>.lock` under which one process builds an entry; the others
    wait up to `timeout_s` for it."""
    return FileLock(str(cache_dir / f"{name}.lock"), timeout=timeout_s)

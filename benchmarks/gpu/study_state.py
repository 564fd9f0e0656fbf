"""Carry a study's state between device sittings (issue 16, item 4).

A device call lasts at most 10 minutes and a session has 30 device-minutes, so a GPU study
that does not fit one sitting is stopped, its state brought back, and continued later with
`srstudy launch --resume` in the same folder. The state is the study folder (MLflow store and
artifacts, Optuna storage, Tune's experiment, the trial folders, the launcher's energy files)
without the training checkpoints of trials that finished (they are never read again); a trial
that was running keeps its checkpoint, so it resumes where it stopped, and a finished trial
whose `result.json` still lists missing steps keeps its final checkpoint to complete them.
Teacher banks (`bank-<key>.npy` and its `.json`, 6 GB for the inherit study's 16,384 patches) stay
behind too: a bank is a cache the trials rebuild from the teacher and the data (same patches)
when it is missing (`srstudy.trials.teacher_bank`); a trained teacher's checkpoint travels.

    python benchmarks/gpu/study_state.py pack /tmp/gpu_study /tmp/out/gpu_study_state.tgz
    python benchmarks/gpu/study_state.py unpack .devstate/gpu_study_state.tgz   # back to /tmp/gpu_study

The archive records the folder's absolute path (Tune's experiment state names it), and
`unpack` restores it there; `--to` overrides (only for inspection, Tune cannot resume a moved
folder).
"""
from __future__ import annotations

import argparse
import json
import tarfile
from pathlib import Path

CHECKPOINT = "checkpoint.pth"
RESULT = "result.json"
ORIGIN = ".study_state_origin"


def finished_checkpoints(workdir: Path) -> list[Path]:
    """Training checkpoints of trials that finished with nothing left to do (safe to drop)."""
    out = []
    for ckpt in sorted((workdir / "trials").glob(f"*/{CHECKPOINT}")):
        result = ckpt.parent / RESULT
        if not result.is_file():
            continue  # still training (or stopped by ASHA): keep it
        try:
            missing = json.loads(result.read_text()).get("missing_steps") or []
        except (OSError, ValueError):
            continue  # unreadable record: keep the checkpoint, the re-run needs it
        if not missing:
            out.append(ckpt)
    return out


def is_teacher_bank(name: str) -> bool:
    """A teacher bank's array or its metadata (a rebuildable cache, not state)."""
    base = name.rsplit("/", 1)[-1]
    return base.startswith("bank-") and base.endswith((".npy", ".json"))


def pack(workdir: Path, archive: Path) -> dict:
    """Write `archive` (.tgz) of `workdir` without finished trials' checkpoints; a summary."""
    workdir = workdir.resolve()
    if not (workdir / "study.json").is_file():
        raise SystemExit(f"{workdir}: no study.json, not a study folder")
    drop = {p.resolve() for p in finished_checkpoints(workdir)}
    (workdir / ORIGIN).write_text(str(workdir))
    skipped, skipped_banks = [], []

    def keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        path = workdir.parent / info.name
        if path.resolve() in drop:
            skipped.append(info.name)
            return None
        if info.name.endswith((".lock", "launch.lock")):  # a lock's holder is gone with the machine
            return None
        if info.isfile() and is_teacher_bank(info.name):
            skipped_banks.append(info.name)
            return None
        return info

    archive.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(workdir, arcname=workdir.name, filter=keep)
    return {"archive": str(archive), "bytes": archive.stat().st_size, "dropped_checkpoints": skipped,
            "dropped_teacher_banks": skipped_banks}


def unpack(archive: Path, to: Path | None = None) -> Path:
    """Restore the folder to its recorded absolute path (or `to`); returns the folder."""
    with tarfile.open(archive, "r:gz") as tar:
        names = tar.getnames()
        top = names[0].split("/")[0]
        origin_member = tar.extractfile(f"{top}/{ORIGIN}")
        origin = Path(origin_member.read().decode()) if origin_member else None
        target = to or origin
        if target is None:
            raise SystemExit(f"{archive}: no {ORIGIN} inside; give --to")
        target.parent.mkdir(parents=True, exist_ok=True)
        tar.extractall(target.parent, filter="data")
        if target.name != top:
            (target.parent / top).rename(target)
    return target


def main() -> None:  # pragma: no cover - a command line
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack")
    p.add_argument("workdir", type=Path)
    p.add_argument("archive", type=Path)
    u = sub.add_parser("unpack")
    u.add_argument("archive", type=Path)
    u.add_argument("--to", type=Path)
    args = ap.parse_args()
    if args.cmd == "pack":
        print(json.dumps(pack(args.workdir, args.archive)))
    else:
        print(unpack(args.archive, args.to))


if __name__ == "__main__":
    main()

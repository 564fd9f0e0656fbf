"""Teacher outputs computed once for a fixed bank of training patches, reused by every trial.

With `teacher.bank_patches = K`, a student trains on a fixed bank of K patches instead of
fresh crops: bank item j is the dataset's patch (epoch j // n, index j % n) — the first K
crops of the patch stream — and iteration i's batch is the bank items that
`batches.batch_indices(K, batch, i, seed)` names (an epoch-wise shuffled pass over the bank).
The frozen teacher's SR of every bank item is computed once (batched, no grad, in the trial's
precision) and stored as float16 in `<cache>/bank-<key>.npy` with its sha256 beside it; every
trial with the same teacher and data memory-maps it. A distillation step then costs a student
step plus a gather: the teacher forward leaves the loop.

The trade-off: K fixed crops (with their flips) instead of a fresh crop per sample, and
float16 targets (spacing ≤ 4.9e-4 on [0.5, 1], about 1/8 of an 8-bit level). Without a bank
the loop is unchanged. The key hashes the teacher (its cache key, or the checkpoint file's
sha256), the training images, patch size, scale, patches per image, the trial seed, K and
the precision; a bank whose checksum does not match is deleted and rebuilt, never used.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from srstudy.data import PatchDataset

from .batches import bank_item, to_device
from .cache import cache_lock, checked_meta, seal, sha256_file
from .loop import autocast
from .teacher import Teacher

log = logging.getLogger("srstudy.teacher")


@dataclass
class TeacherBank:
    """K teacher outputs, float16 (K, 3, H, W), memory-mapped; `source` is `cache` or `built`."""

    targets: np.ndarray
    path: Path
    key: str
    source: str

    def __len__(self) -> int:
        return len(self.targets)


def bank_key(teacher: Teacher, data_id: str, *, patch_size: int, scale: int, patches_per_image: int,
             seed: int, patches: int, precision: str) -> str:
    """Hash of everything that determines the bank's targets."""
    who = teacher.key if teacher.key is not None else sha256_file(teacher.path)
    payload = {"teacher": who, "data": data_id, "patch_size": patch_size, "scale": scale,
               "patches_per_image": patches_per_image, "seed": seed, "patches": patches, "precision": precision}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


@torch.no_grad()
def _build(teacher: Teacher, dataset: PatchDataset, patches: int, path: Path, *, device: torch.device,
           precision: str, chunk: int) -> dict:
    """Run the teacher over every bank item into a float16 .npy (written to a temp file, then
    renamed); returns how it was made, for its meta file."""
    hr_side = dataset.hr_patch
    tmp = path.with_suffix(".tmp.npy")
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(patches, 3, hr_side, hr_side))
    model = teacher.model.to(device).eval()
    t0 = time.perf_counter()
    for start in range(0, patches, chunk):
        stop = min(patches, start + chunk)
        lr = torch.from_numpy(np.stack([bank_item(dataset, j)[0] for j in range(start, stop)]))
        with autocast(device, precision):
            sr = model(to_device(lr, device))
        out[start:stop] = sr.float().clamp_(0, 1).half().cpu().numpy()
    out.flush()
    del out
    tmp.replace(path)
    return {"patches": patches, "seconds": time.perf_counter() - t0,
            "device": str(device), "precision": precision, "created": time.strftime("%Y-%m-%dT%H:%M:%S")}


def get_teacher_bank(teacher: Teacher, dataset: PatchDataset, data_id: str, *, patches: int, seed: int,
                     precision: str, cache_dir: str | Path, device: torch.device, chunk: int = 64,
                     lock_timeout_s: float = 6 * 3600) -> TeacherBank:
    """The bank for this teacher and data: loaded from `cache_dir`, or built now (once, under a file lock)."""
    key = bank_key(teacher, data_id, patch_size=dataset.lr_patch, scale=dataset.scale,
                   patches_per_image=dataset.patches_per_image, seed=seed, patches=patches, precision=precision)
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    path, meta_path = cache_dir / f"bank-{key}.npy", cache_dir / f"bank-{key}.json"
    with cache_lock(cache_dir, f"bank-{key}", lock_timeout_s):
        source = "cache"
        if checked_meta(path, meta_path, what=f"teacher bank {path}") is None:
            log.info("computing teacher outputs for a bank of %d patches into %s", patches, path)
            seal(path, meta_path, _build(teacher, dataset, patches, path, device=device,
                                         precision=precision, chunk=chunk))
            source = "built"
    return TeacherBank(np.load(path, mmap_mode="r"), path, key, source)

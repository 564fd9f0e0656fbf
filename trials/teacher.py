"""The teacher: trained once, cached on disk, reused by every trial.

Cache entry: `<cache>/<key>/teacher.pth` + `meta.json` (its sha256 and how it was made).
The key hashes everything that changes the teacher: its architecture, the training images'
content, iterations, batch, patch size, learning rate, precision and seed. A file lock
(`<cache>/<key>.lock`) makes concurrent trials wait for one training instead of each
training its own; a crash mid-training leaves a resumable `partial.pth` beside it. An entry
whose checksum does not match is logged, deleted and rebuilt — never loaded (`cache`).

A given checkpoint (`teacher.checkpoint`, e.g. the official DVMSR file) skips all of this.
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from srstudy.config import TrialConfig
from srstudy.measure.energy import energy_meter
from srstudy.models.dvmsr import DVMSR, load_checkpoint, save_checkpoint
from srstudy.models.scan import resolve_backend

from . import inputs
from .cache import cache_lock, checked_meta, seal
from .loop import LoopSpec, load_training_checkpoint, train
from .memory import check_fits, teacher_estimate

log = logging.getLogger("srstudy.teacher")

WEIGHTS = "teacher.pth"
META = "meta.json"
PARTIAL = "partial.pth"


@dataclass
class Teacher:
    """A ready teacher and where it came from (`checkpoint`, `cache` or `trained`)."""

    model: DVMSR
    source: str
    path: Path
    key: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def teacher_key(cfg: TrialConfig, data_id: str) -> str:
    """Hash of everything that determines the trained teacher (not the student's optim.lr,
    schedule or warm-up: trials searching them share one teacher)."""
    t = cfg.teacher
    payload = {
        "arch": t.arch.model_dump(),
        "data": data_id,
        "iterations": t.iterations,
        "batch_size": t.batch_size or cfg.batch_size,
        "patch_size": cfg.patch_size,
        "patches_per_image": cfg.data.patches_per_image,
        "scale": cfg.scale,
        "lr": t.lr,
        # only what the teacher trains with: the student's lr / schedule / warm-up (searched) are not
        "optim": cfg.optim.model_dump(mode="json", exclude={"lr", "schedule", "warmup_iterations"}),
        "precision": cfg.precision,
        "seed": t.seed,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _train_teacher(cfg: TrialConfig, images, entry: Path, device: torch.device,
                   progress: Callable[[int], None] | None) -> dict[str, Any]:
    """Train the teacher into `entry` (resuming `partial.pth`); returns its meta."""
    t = cfg.teacher
    torch.manual_seed(t.seed)
    model = DVMSR(t.arch.to_model_config(cfg.scale)).to(device)
    if cfg.scan_backend:
        model.set_scan_backend(cfg.scan_backend)
    data = inputs.patch_dataset(images, scale=cfg.scale, patch_size=cfg.patch_size,
                                patches_per_image=cfg.data.patches_per_image, seed=t.seed)
    spec = LoopSpec(
        iterations=t.iterations, batch_size=t.batch_size or cfg.batch_size, base_lr=t.lr,
        milestones=cfg.optim.milestones_for(t.iterations), gamma=cfg.optim.gamma, betas=cfg.optim.betas,
        alpha=0.0, seed=t.seed, precision=cfg.precision,
        checkpoint_interval=max(1, min(cfg.checkpoint_interval, t.iterations)), val_interval=t.iterations + 1,
        prefetch=cfg.prefetch_batches,
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=t.lr, betas=spec.betas)
    partial = entry / PARTIAL
    state = load_training_checkpoint(partial, model, optimizer, device) if partial.exists() else None
    if state is not None:
        log.info("resuming teacher %s from iteration %d", entry.name, state.iteration)
    start_it = 0 if state is None else state.iteration
    losses: list[float] = []
    t0 = time.perf_counter()
    with energy_meter(device=device, sample_hz=cfg.energy_sample_hz) as meter:
        train(model, data, spec, device=device, checkpoint_path=partial, state=state, optimizer=optimizer,
              on_log=lambda it, m: losses.append(m["train_loss"]), progress=progress)
    seconds = time.perf_counter() - t0
    energy = meter.result
    weights = save_checkpoint(model, entry / WEIGHTS)
    meta = seal(weights, entry / META, {
        "config": t.model_dump(mode="json"),
        "params": model.param_count(),
        "iterations": t.iterations,
        "iterations_this_run": t.iterations - start_it,
        "seconds": seconds,
        "final_train_loss": losses[-1] if losses else None,
        "device": str(device),
        "energy": energy.metrics(iterations=t.iterations - start_it) if energy else {},
        "energy_tags": energy.tags() if energy else {},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    })
    partial.unlink(missing_ok=True)
    return meta


def get_teacher(
    cfg: TrialConfig,
    *,
    cache_dir: str | Path,
    device: torch.device,
    images: inputs.Images | None = None,
    progress: Callable[[int], None] | None = None,
    lock_timeout_s: float = 6 * 3600,
) -> Teacher:
    """The trial's teacher: from `teacher.checkpoint`, from the cache, or trained now (once).

    Concurrent callers asking for the same key wait on a file lock; the first trains, the
    others load its result. A teacher whose training step would not fit the device's free
    memory is refused before training (`memory.InsufficientMemoryError`).
    """
    if cfg.teacher.checkpoint is not None:
        model = load_checkpoint(cfg.teacher.checkpoint).to(device).eval()
        if model.cfg.scale != cfg.scale:
            raise ValueError(f"teacher.checkpoint {cfg.teacher.checkpoint} is ×{model.cfg.scale}, the trial is ×{cfg.scale}")
        return Teacher(model, "checkpoint", Path(cfg.teacher.checkpoint), meta={"params": model.param_count()})
    images = images if images is not None else inputs.train_images(cfg.data)
    key = teacher_key(cfg, inputs.images_identity(images))
    cache_dir = Path(cache_dir)
    entry = cache_dir / key
    entry.mkdir(parents=True, exist_ok=True)
    lock = cache_lock(cache_dir, key, lock_timeout_s)
    if lock.is_locked:
        log.info("teacher %s is being trained by another process: waiting for it", key)
    with lock:
        meta = checked_meta(entry / WEIGHTS, entry / META, what=f"teacher cache entry {entry}")
        source = "cache"
        if meta is None:
            backend = resolve_backend(cfg.scan_backend, device)
            check_fits(teacher_estimate(cfg, backend=backend), device)
            log.info("training teacher %s (%d iterations) into %s", key, cfg.teacher.iterations, entry)
            meta = _train_teacher(cfg, images, entry, device, progress)
            source = "trained"
        model = load_checkpoint(entry / WEIGHTS).to(device).eval()
    if cfg.scan_backend:
        model.set_scan_backend(cfg.scan_backend)
    return Teacher(model, source, entry / WEIGHTS, key=key, meta=meta)


def clear_cache(cache_dir: str | Path) -> None:
    """Delete every cached teacher."""
    shutil.rmtree(cache_dir, ignore_errors=True)

"""One distillation trial: teacher (cached) → student training → scores, latency, energy → MLflow.

    L = α·L1(S, T) + (1 − α)·L1(S, GT)        teacher frozen, in eval mode

A trial lives in a folder (`<workdir>/trials/<config hash>` for `srstudy trial`, Tune's
trial folder under Ray) holding `run.json` (its MLflow run id, written before training
starts), `checkpoint.pth` (model, optimiser, RNG, iteration, run id) and, once finished,
`result.json`. Restarted with the same config and workdir it resumes from the checkpoint
into the same MLflow run and ends at the same iteration count; a finished trial returns its
stored result.

Energy covers the training iterations this process ran (`energy_iterations` tag): after a
resume the iterations before the crash are not re-measured, and the per-iteration figure
stays honest.
"""
from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from srstudy.config import TrialConfig, flatten
from srstudy.energy import EnergyResult, energy_meter
from srstudy.evaluate import evaluate_set, model_upscaler
from srstudy.inference import resolve_device, super_resolve
from srstudy.models.dvmsr import DVMSR, save_checkpoint
from srstudy.models.scan import resolve_backend
from srstudy.tracking import TrialRun, default_tracking_uri

from . import inputs
from .loop import CHECKPOINT_NAME, LoopSpec, LoopState, load_training_checkpoint, measure_latency, train
from .teacher import get_teacher
from .teacher_bank import get_teacher_bank

log = logging.getLogger("srstudy.trial")

RUN_FILE = "run.json"
RESULT_FILE = "result.json"

Hook = Callable[[int, dict[str, float]], None]


@dataclass
class TrialResult:
    run_id: str
    metrics: dict[str, float]
    trial_dir: Path
    resumed_from: int | None = None


def trial_dir_for(cfg: TrialConfig, workdir: str | Path) -> Path:
    """`<workdir>/trials/<hash of the config>`: same config + workdir → same folder."""
    return Path(workdir).expanduser().resolve() / "trials" / cfg.identity()


def _sample_image(lr: np.ndarray, sr: np.ndarray, hr: np.ndarray, scale: int, path: Path) -> Path:
    """LR (nearest-upscaled) | SR | HR side by side, as one PNG."""
    up = np.repeat(np.repeat(lr, scale, axis=0), scale, axis=1)[: hr.shape[0], : hr.shape[1]]
    sr8 = np.round(np.clip(sr * 255, 0, 255)).astype(np.uint8)
    Image.fromarray(np.concatenate([up, sr8, hr], axis=1)).save(path)
    return path


def _inference_energy(model, *, device, height, width, seconds: float = 1.0, sample_hz: float) -> dict[str, float]:
    """GPU energy per batch-1 inference, from a loop of at least `seconds` (absent on CPU)."""
    meter = energy_meter(device=device, sample_hz=sample_hz)
    if meter.source == "none":
        return {}
    x = torch.rand(1, 3, height, width, device=device)
    n = 0
    with torch.no_grad(), meter:
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            model(x)
            n += 1
    res = meter.result
    return {} if res is None or res.energy_j is None else {"gpu_inference_energy_per_image_j": res.energy_j / n}


def _peak_gpu_memory(device: torch.device) -> dict[str, float]:
    """This process's peak GPU memory while training (MiB), to size fractional-GPU trials.

    `allocated`: tensors; `reserved`: what PyTorch's caching allocator held (what the GPU
    must have free). Absent on CPU.
    """
    if device.type != "cuda":
        return {}
    return {"gpu_peak_mem_allocated_mb": torch.cuda.max_memory_allocated(device) / 2**20,
            "gpu_peak_mem_reserved_mb": torch.cuda.max_memory_reserved(device) / 2**20}


def run_trial(
    cfg: TrialConfig,
    *,
    workdir: str | Path = "srstudy-runs",
    tracking_uri: str | None = None,
    trial_dir: str | Path | None = None,
    parent_run_id: str | None = None,
    run_name: str | None = None,
    teacher_cache: str | Path | None = None,
    on_validate: Hook | None = None,
    on_checkpoint: Callable[[int, Path], None] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> TrialResult:
    """Run (or resume, or return the finished result of) one trial; see the module docstring.

    Hooks, for the study launcher: `on_validate(it, {"val_psnr", "val_ssim", "iteration"})`
    after each validation, `on_checkpoint(it, trial_dir)` after each checkpoint.
    """
    wall0 = time.perf_counter()
    workdir = Path(workdir).expanduser().resolve()
    tracking_uri = tracking_uri or default_tracking_uri(workdir)
    tdir = Path(trial_dir) if trial_dir is not None else trial_dir_for(cfg, workdir)
    tdir.mkdir(parents=True, exist_ok=True)
    if (tdir / RESULT_FILE).exists():
        done = json.loads((tdir / RESULT_FILE).read_text())
        log.info("trial in %s already finished (MLflow run %s)", tdir, done["run_id"])
        if TrialRun(tracking_uri, done["run_id"]).ensure_finished():
            log.info("closed MLflow run %s, left open by a crash after the trial finished", done["run_id"])
        return TrialResult(done["run_id"], done["metrics"], tdir)

    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    backend = resolve_backend(cfg.scan_backend, device)

    # teacher: from a checkpoint, the cache, or trained now (once for all trials)
    images = inputs.train_images(cfg.data)
    teacher = None
    teacher_dir = Path(teacher_cache or workdir / "teachers")
    if cfg.alpha > 0:
        teacher = get_teacher(cfg, cache_dir=teacher_dir, device=device, images=images)

    student = DVMSR(cfg.student.to_model_config(cfg.scale)).to(device)
    student.set_scan_backend(backend)
    optimizer = torch.optim.Adam(student.parameters(), lr=cfg.optim.lr, betas=cfg.optim.betas)
    ckpt = tdir / CHECKPOINT_NAME
    state: LoopState | None = None
    if ckpt.exists():
        state = load_training_checkpoint(ckpt, student, optimizer, device)
        log.info("resuming trial %s from iteration %d", tdir.name, state.iteration)
    run_file = tdir / RUN_FILE
    run_id = json.loads(run_file.read_text())["run_id"] if run_file.exists() else None
    run = TrialRun.start(tracking_uri=tracking_uri, experiment=cfg.experiment, run_id=run_id,
                         run_name=run_name, parent_run_id=parent_run_id, artifact_root=workdir / "artifacts",
                         tags={"role": "trial", "trial_dir": str(tdir)})
    if run_id is None:
        tmp = run_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"run_id": run.run_id}))
        tmp.replace(run_file)  # before any training: a crash from here on resumes this run
    state = state or LoopState(extra={"run_id": run.run_id})
    resumed_from = state.iteration or None
    try:
        metrics = _train_and_score(cfg, run, student, optimizer, state, teacher, images, device, backend, tdir,
                                   on_validate, on_checkpoint, progress, teacher_dir)
    except KeyboardInterrupt:
        run.finish("KILLED")  # resumable: the next start reopens this run
        raise
    except Exception:
        run.finish("FAILED")
        raise
    metrics["wall_time_s"] = time.perf_counter() - wall0
    run.log_metrics({"wall_time_s": metrics["wall_time_s"]}, step=cfg.iterations)
    (tdir / RESULT_FILE).write_text(json.dumps({"run_id": run.run_id, "metrics": metrics}, indent=1))
    run.finish("FINISHED")
    return TrialResult(run.run_id, metrics, tdir, resumed_from)


def _train_and_score(cfg, run: TrialRun, student, optimizer, state, teacher, images, device, backend, tdir,
                     on_validate, on_checkpoint, progress, teacher_dir: Path) -> dict[str, float]:
    run.log_params(flatten(cfg.model_dump(mode="json")))
    run.set_tags({
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),  # set by Ray for GPU trials
        "scan_backend": backend,
        "precision": cfg.precision,
        "teacher_source": teacher.source if teacher else "none (alpha=0)",
        "teacher_key": teacher.key if teacher else None,
    })
    model_cfg = student.cfg
    static = {"params": float(model_cfg.param_count()),
              "flops": float(model_cfg.flops(cfg.latency.height, cfg.latency.width)),
              "teacher_params": float(teacher.model.param_count()) if teacher else None}
    run.log_metrics(static, step=0)

    data = inputs.patch_dataset(images, scale=cfg.scale, patch_size=cfg.patch_size,
                                patches_per_image=cfg.data.patches_per_image, seed=cfg.seed)
    bank = None
    if teacher is not None and cfg.teacher.bank_patches:  # teacher outputs computed once, shared
        bank = get_teacher_bank(teacher, data, inputs.images_identity(images), patches=cfg.teacher.bank_patches,
                                seed=cfg.seed, precision=cfg.precision, cache_dir=teacher_dir, device=device)
        run.set_tags({"teacher_bank": str(bank.path), "teacher_bank_source": bank.source,
                      "teacher_bank_patches": len(bank)})
    val = inputs.validation_set(cfg.data, scale=cfg.scale)
    up = model_upscaler(student, scale=cfg.scale, device=device)
    last_val: dict[str, float] = {}

    def validate(it: int) -> None:
        res = evaluate_set(up, val)
        last_val.update({"val_psnr": res["psnr"], "val_ssim": res["ssim"], "_at": it})
        scores = {k: v for k, v in last_val.items() if not k.startswith("_")}
        run.log_metrics(scores, step=it)
        if on_validate is not None:
            on_validate(it, {**scores, "iteration": it})

    spec = LoopSpec(
        iterations=cfg.iterations, batch_size=cfg.batch_size, base_lr=cfg.optim.lr,
        milestones=cfg.optim.milestones_for(cfg.iterations), gamma=cfg.optim.gamma, betas=cfg.optim.betas,
        alpha=cfg.alpha if teacher else 0.0, seed=cfg.seed, precision=cfg.precision,
        checkpoint_interval=cfg.checkpoint_interval, val_interval=cfg.val_interval,
        log_interval=max(1, min(10, cfg.iterations // 20)),
        prefetch=cfg.prefetch_batches,
    )
    start_it = state.iteration
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    with energy_meter(device=device, sample_hz=cfg.energy_sample_hz) as meter:
        train(student, data, spec, device=device, teacher=teacher.model if teacher and not bank else None, bank=bank,
              checkpoint_path=tdir / CHECKPOINT_NAME, state=state, optimizer=optimizer,
              on_log=lambda it, m: run.log_metrics(m, step=it), on_validate=validate,
              on_checkpoint=(lambda it: on_checkpoint(it, tdir)) if on_checkpoint else None,
              progress=(lambda it: progress(it, cfg.iterations)) if progress else None)
    train_s = time.perf_counter() - t0
    ran = cfg.iterations - start_it
    if last_val.get("_at") != cfg.iterations:  # resumed from the final checkpoint: score it now
        student.eval()
        validate(cfg.iterations)
    last_val.pop("_at")
    energy: EnergyResult = meter.result
    metrics: dict[str, float] = {k: v for k, v in static.items() if v is not None}
    metrics.update(last_val)
    metrics["train_time_s"] = train_s
    if ran:
        metrics["iterations_per_s"] = ran / train_s
    metrics.update(_peak_gpu_memory(device))
    metrics.update(energy.metrics(iterations=ran or None))
    run.set_tags({**energy.tags(), "energy_iterations": ran, "resumed_from": start_it or None})

    for bench in inputs.benchmark_sets(cfg.data, scale=cfg.scale):
        res = evaluate_set(up, bench)
        metrics[f"{bench.name}_psnr"], metrics[f"{bench.name}_ssim"] = res["psnr"], res["ssim"]
    lat = cfg.latency
    metrics.update(measure_latency(student, device=device, height=lat.height, width=lat.width,
                                   repeats=lat.repeats, warmup=lat.warmup))
    metrics.update(_inference_energy(student, device=device, height=lat.height, width=lat.width,
                                     sample_hz=cfg.energy_sample_hz))
    run.set_tags({"latency_device": str(device), "latency_input": f"1x3x{lat.height}x{lat.width}"})
    run.log_metrics({k: v for k, v in metrics.items() if k not in static and k not in last_val}, step=cfg.iterations)

    # artifacts: the student (state_dict + config JSON), power trace, a sample image
    art = tdir / "artifacts"
    art.mkdir(exist_ok=True)
    save_checkpoint(student, art / "student.pth")
    (art / "student_config.json").write_text(json.dumps(student.cfg.to_dict(), indent=1))
    for p in (energy.write_trace_csv(art / "power_trace.csv"), energy.plot_trace(art / "power_trace.png")):
        if p is not None:
            run.log_artifact(p, "energy")
    item = val[0]
    sr = super_resolve(student, item.lr, scale=cfg.scale, device=device)
    _sample_image(item.lr, sr, item.hr, cfg.scale, art / f"sample_{item.name}.png")
    for name in ("student.pth", "student_config.json", f"sample_{item.name}.png"):
        run.log_artifact(art / name, "student" if name.startswith("student") else "samples")
    return metrics

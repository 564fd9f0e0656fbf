"""One distillation trial: teacher (cached) → student training → scores, latency, energy → MLflow.

    L = α·L1(S, T) + (1 − α)·L1(S, GT)        teacher frozen, in eval mode

A trial lives in a folder (`<workdir>/trials/<config hash>` for `srstudy trial`, Tune's
trial folder under Ray) holding `run.json` (its MLflow run id, written before training
starts), `checkpoint.pth` (model, optimiser, RNG, iteration, run id) and, once training has
finished, `result.json` (its metrics and the steps after training still missing; see
`scoring`). Restarted with the same config and workdir it resumes from the checkpoint into
the same MLflow run and ends at the same iteration count; a trained trial with missing steps
completes them into the same run; a finished trial returns its stored result.

After training nothing is lost: the training's metrics and `student.pth` are logged first,
each later step (benchmarks, latency, inference energy, power trace, sample image) is
isolated, and the run ends FINISHED with the failed steps recorded (`TrialResult.missing_steps`,
the `post_training_failures` tag).

Energy covers the training iterations this process ran (`energy_iterations` tag): after a
resume the iterations before the crash are not re-measured, and the per-iteration figure
stays honest. On a GPU the trial holds its energy session (`gpu_energy`: the GPU's shared
lock, an exclusive measuring window inside the training, inference energy under the same
lock) from just after its device is known until its last GPU work is done.
"""
from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from srstudy.config import TrialConfig, flatten
from srstudy.measure.energy import EnergyResult
from srstudy.measure.evaluate import evaluate_set, model_upscaler
from srstudy.measure.inference import resolve_device
from srstudy.models.dvmsr import DVMSR
from srstudy.models.inherit import inherit_from_teacher
from srstudy.models.scan import resolve_backend
from srstudy.tracking import TrialRun
from srstudy.workdir import StudyDir

from . import inputs
from .device_batches import choose_batch_crops
from .gpu_energy import TrialGpu, teacher_share, training_energy, trial_gpu, whole_run_meter
from .loop import CHECKPOINT_NAME, LoopSpec, LoopState, load_training_checkpoint, train
from .memory import check_fits, student_estimate
from .scoring import RESULT_FILE, AfterTraining, new_record, read_record, write_record
from .teacher import Teacher, get_teacher
from .teacher_bank import get_teacher_bank
from .warmup import KernelWarmup

log = logging.getLogger("srstudy.trial")

RUN_FILE = "run.json"
__all__ = ["RESULT_FILE", "RUN_FILE", "TrialResult", "run_trial", "trial_dir_for"]

Hook = Callable[[int, dict[str, float]], None]


@dataclass
class TrialHooks:
    """The launcher's hooks into a trial's training (see `run_trial`)."""

    on_validate: Hook | None = None
    on_checkpoint: Callable[[int, Path], None] | None = None
    progress: Callable[[int, int], None] | None = None
    teacher_sharers: int | None = None  # the study's trials sharing the launcher's teacher (its energy share)


@dataclass
class TrialResult:
    """One trial's outcome. `missing_steps`: the steps after training that failed (step →
    the error's last line); the training and its metrics are kept, and running the same
    trial again completes them."""

    run_id: str
    metrics: dict[str, float]
    trial_dir: Path
    resumed_from: int | None = None
    missing_steps: dict[str, str] = field(default_factory=dict)


def trial_dir_for(cfg: TrialConfig, workdir: str | Path) -> Path:
    """`<workdir>/trials/<hash of the config>`: same config + workdir → same folder."""
    return StudyDir(workdir).trial(cfg.identity())


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
    workdir: str | Path | StudyDir | None = None,
    tracking_uri: str | None = None,
    trial_dir: str | Path | None = None,
    parent_run_id: str | None = None,
    run_name: str | None = None,
    run_tags: Mapping[str, str] | None = None,
    trial_id: str | None = None,
    teacher_cache: str | Path | None = None,
    on_validate: Hook | None = None,
    on_checkpoint: Callable[[int, Path], None] | None = None,
    progress: Callable[[int, int], None] | None = None,
    teacher_sharers: int | None = None,
) -> TrialResult:
    """Run (or resume, or complete, or return the finished result of) one trial; see the
    module docstring.

    `run_name`, `run_tags`: the name and extra tags of a new MLflow run (the study launcher's
    short name and Tune trial id). Hooks, for the study launcher: `on_validate(it, {"val_psnr", "val_ssim", "iteration"})`
    after each validation, `on_checkpoint(it, trial_dir)` after each checkpoint.
    `workdir`: the study folder (default `./srstudy-runs`). `trial_id`: the launcher's id of
    the trial (Tune's trial id), which keys the study's energy attribution; default `run_name`,
    else the trial folder's name. `teacher_sharers`: in a study, its num_samples — each trial
    that distils takes that fraction of the teacher's training energy into `gpu_energy_j`
    (`gpu_energy.teacher_share`).
    """
    wall0 = time.perf_counter()
    workdir = StudyDir(workdir)
    tracking_uri = tracking_uri or workdir.create().tracking_uri
    tdir = Path(trial_dir) if trial_dir is not None else trial_dir_for(cfg, workdir)
    tdir.mkdir(parents=True, exist_ok=True)
    record = read_record(tdir)
    if record is not None and not record["missing_steps"]:
        log.info("trial in %s already finished (MLflow run %s)", tdir, record["run_id"])
        if TrialRun(tracking_uri, record["run_id"]).ensure_finished():
            log.info("closed MLflow run %s, left open by a crash after the trial finished", record["run_id"])
        return TrialResult(record["run_id"], record["metrics"], tdir)

    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    backend = resolve_backend(cfg.scan_backend, device)
    with trial_gpu(device, workdir, trial_id or run_name or tdir.name, cfg) as gpu:  # until the last GPU work
        if record is None:
            run, student, record, resumed_from = _train_student(
                cfg, workdir=workdir, tracking_uri=tracking_uri, tdir=tdir, device=device, backend=backend,
                parent_run_id=parent_run_id, run_name=run_name, run_tags=run_tags, teacher_cache=teacher_cache,
                hooks=TrialHooks(on_validate, on_checkpoint, progress, teacher_sharers), gpu=gpu)
        else:  # trained before, but steps after training are missing: complete them into the same run
            log.info("trial in %s finished training; completing the missing step(s) %s into MLflow run %s",
                     tdir, ", ".join(record["missing_steps"]), record["run_id"])
            student = _trained_student(cfg, tdir, device, backend)
            run = TrialRun.start(tracking_uri=tracking_uri, experiment=cfg.experiment, run_id=record["run_id"])
            resumed_from = cfg.iterations
        trained_here = resumed_from != cfg.iterations
        try:
            write_record(tdir, record)
            after0 = time.perf_counter()
            missing = AfterTraining(cfg=cfg, run=run, student=student, device=device, trial_dir=tdir, record=record,
                                    rerun=not trained_here, gpu_session=gpu.session).run_missing()
            if trained_here:  # the whole trial ran in this process: its wall time means something
                timing = wall_time_split(wall_s=time.perf_counter() - wall0, after_s=time.perf_counter() - after0,
                                         train_s=record["metrics"].get("train_time_s"))
                record["metrics"].update(timing)
                write_record(tdir, record)
                try:
                    run.log_metrics(timing, step=cfg.iterations)
                except Exception as e:  # noqa: BLE001 — it is in the record
                    log.warning("wall_time_s not logged to MLflow run %s (%s); it is in %s", run.run_id, e,
                                RESULT_FILE)
        except BaseException:
            run.finish("KILLED")  # trained: never FAILED; the record lists what a re-run completes
            raise
    run.finish("FINISHED")
    return TrialResult(run.run_id, record["metrics"], tdir, resumed_from or None, missing)


def _teacher_role(cfg: TrialConfig) -> str:
    """What the teacher does in this trial: distils (α > 0), gives the student its first weights, or both."""
    roles = (["distils (alpha > 0)"] if cfg.alpha > 0 else []) + (
        ["its weights start the student"] if cfg.student_init == "teacher" else [])
    return "; ".join(roles)


def wall_time_split(*, wall_s: float, after_s: float, train_s: float | None) -> dict[str, float]:
    """Where a trial's wall time went: `wall_time_s`, `after_training_s` (scoring, latency,
    inference energy, artifacts) and, when the training time is known, `setup_s` = the rest
    (data, teacher, model, MLflow run: everything before the first iteration)."""
    out = {"wall_time_s": wall_s, "after_training_s": after_s}
    if train_s is not None:
        out["setup_s"] = max(wall_s - after_s - train_s, 0.0)
    return out


def _trained_student(cfg: TrialConfig, tdir: Path, device: torch.device, backend: str) -> DVMSR:
    """The trained student, from the trial's final checkpoint (to complete missing steps)."""
    ckpt = tdir / CHECKPOINT_NAME
    if not ckpt.exists():
        raise FileNotFoundError(f"{tdir / RESULT_FILE} lists missing steps but the final checkpoint {ckpt} is "
                                f"gone; delete the folder {tdir} to run the trial again from the start")
    obj = torch.load(ckpt, map_location=device, weights_only=True)
    if obj["iteration"] != cfg.iterations:
        raise RuntimeError(f"{ckpt} is at iteration {obj['iteration']}, not the trial's final {cfg.iterations}; "
                           f"delete {tdir / RESULT_FILE} to resume the training from it")
    student = DVMSR(cfg.student.to_model_config(cfg.scale)).to(device)
    student.load_state_dict(obj["model"])
    student.set_scan_backend(backend)
    return student.eval()


def _train_student(cfg: TrialConfig, *, workdir: StudyDir, tracking_uri: str, tdir: Path, device: torch.device,
                   backend: str, parent_run_id: str | None, run_name: str | None, run_tags: Mapping[str, str] | None,
                   teacher_cache: str | Path | None,
                   hooks: TrialHooks, gpu: TrialGpu) -> tuple[TrialRun, DVMSR, dict[str, Any], int | None]:
    """Teacher, then the student's training (resumed from its checkpoint); returns the run,
    the trained student, the trial's record and the iteration training resumed from."""
    # refused before any training (the teacher's too) when the student's step cannot fit
    check_fits(student_estimate(cfg, backend=backend, device_type=device.type), device)
    # teacher: from a checkpoint, the cache, or trained now (once for all trials)
    images = inputs.train_images(cfg.data)
    teacher = None
    teacher_dir = Path(teacher_cache or workdir.teachers)
    if cfg.alpha > 0 or cfg.student_init == "teacher":
        teacher = get_teacher(cfg, cache_dir=teacher_dir, device=device, images=images)

    student = DVMSR(cfg.student.to_model_config(cfg.scale)).to(device)
    student.set_scan_backend(backend)
    ckpt = tdir / CHECKPOINT_NAME
    init_tags = {"student_init": "random"}
    if cfg.student_init == "teacher":  # also on a resume: the checkpoint then overwrites it, the tags stay true
        init_tags = inherit_from_teacher(student, teacher.model).tags()
        log.info("student starts from the teacher's weights (%s)", ", ".join(f"{k}={v}" for k, v in init_tags.items()))
    optimizer = torch.optim.Adam(student.parameters(), lr=cfg.optim.lr, betas=cfg.optim.betas)
    # the step's kernels compile in a thread while the rest of the setup runs (joined before training)
    warmup = KernelWarmup(student, batch_size=cfg.batch_size, patch_size=cfg.patch_size, precision=cfg.precision,
                          device=device)
    state: LoopState | None = None
    if ckpt.exists():
        state = load_training_checkpoint(ckpt, student, optimizer, device)
        log.info("resuming trial %s from iteration %d", tdir.name, state.iteration)
    run_file = tdir / RUN_FILE
    run_id = json.loads(run_file.read_text())["run_id"] if run_file.exists() else None
    if run_id is None:  # killed between creating its run and recording it: adopt that run
        run_id = TrialRun.find_open(tracking_uri=tracking_uri, experiment=cfg.experiment,
                                    tags={"role": "trial", "trial_dir": str(tdir)})
        if run_id is not None:
            log.info("trial %s adopts MLflow run %s (created before a crash, not recorded in %s)",
                     tdir.name, run_id, RUN_FILE)
    run = TrialRun.start(tracking_uri=tracking_uri, experiment=cfg.experiment, run_id=run_id,
                         run_name=run_name, parent_run_id=parent_run_id, artifact_root=workdir.artifacts,
                         tags={**(run_tags or {}), "role": "trial", "trial_dir": str(tdir)})
    if not run_file.exists():
        tmp = run_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"run_id": run.run_id}))
        tmp.replace(run_file)  # before any training: a crash from here on resumes this run
    state = state or LoopState(extra={"run_id": run.run_id})
    resumed_from = state.iteration or None
    try:
        run.set_tags(init_tags)
        record = _train_and_measure(cfg, run, student=student, optimizer=optimizer, state=state, teacher=teacher,
                                    images=images, device=device, backend=backend, tdir=tdir,
                                    teacher_dir=teacher_dir, hooks=hooks, gpu=gpu, warmup=warmup)
    # SystemExit (Tune stopping the trial at a report: ASHA, or the study's SIGINT) passes with the
    # run left RUNNING: the launcher ends a pruned trial's run KILLED with pruned=true, and an
    # interrupted trial's stays open for `--resume` to continue (tests/test_launch.py)
    except KeyboardInterrupt:
        run.finish("KILLED")  # resumable: the next start reopens this run
        raise
    except Exception:
        run.finish("FAILED")
        raise
    return run, student, record, resumed_from


def _train_and_measure(cfg: TrialConfig, run: TrialRun, *, student: DVMSR, optimizer: torch.optim.Optimizer,
                       state: LoopState, teacher: Teacher | None, images: inputs.Images, device: torch.device,
                       backend: str, tdir: Path, teacher_dir: Path, hooks: TrialHooks,
                       gpu: TrialGpu, warmup: KernelWarmup) -> dict[str, Any]:
    """Train the student; returns the trial's record (what training measured, every step
    after training still to run)."""
    run.log_params(flatten(cfg.model_dump(mode="json")))
    run.set_tags({
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),  # set by Ray for GPU trials
        "scan_backend": backend,
        "precision": cfg.precision,
        "teacher_source": teacher.source if teacher else "none (alpha=0)",
        "teacher_role": _teacher_role(cfg) if teacher else None,
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
    if teacher is not None and cfg.alpha > 0 and cfg.teacher.bank_patches:  # teacher outputs computed once, shared
        bank = get_teacher_bank(teacher, data, inputs.images_identity(images), patches=cfg.teacher.bank_patches,
                                seed=cfg.seed, precision=cfg.precision, cache_dir=teacher_dir, device=device)
        run.set_tags({"teacher_bank": str(bank.path), "teacher_bank_source": bank.source,
                      "teacher_bank_patches": len(bank)})
    crops_on, why = choose_batch_crops(cfg.batch_crops, data, device)
    run.set_tags({"batch_crops": crops_on, "batch_crops_reason": why})
    val = inputs.validation_set(cfg.data, scale=cfg.scale)
    up = model_upscaler(student, scale=cfg.scale, device=device)
    last_val: dict[str, float] = {}

    def validate(it: int) -> None:
        res = evaluate_set(up, val)
        last_val.update({"val_psnr": res["psnr"], "val_ssim": res["ssim"], "_at": it})
        scores = {k: v for k, v in last_val.items() if not k.startswith("_")}
        run.log_metrics(scores, step=it)
        if hooks.on_validate is not None:
            hooks.on_validate(it, {**scores, "iteration": it})

    spec = LoopSpec(
        iterations=cfg.iterations, batch_size=cfg.batch_size, base_lr=cfg.optim.lr,
        milestones=cfg.optim.milestones_for(cfg.iterations), gamma=cfg.optim.gamma, betas=cfg.optim.betas,
        schedule=cfg.optim.schedule, warmup_iterations=cfg.optim.warmup_iterations,
        alpha=cfg.alpha if teacher else 0.0, seed=cfg.seed, precision=cfg.precision,
        checkpoint_interval=cfg.checkpoint_interval, val_interval=cfg.val_interval,
        log_interval=max(1, min(10, cfg.iterations // 20)),
        prefetch=cfg.prefetch_batches, batch_crops=crops_on,
    )
    start_it = state.iteration
    run.set_tags(warmup.join())  # before the energy meter: its idle baseline needs a quiet GPU
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    if gpu.session is not None:
        gpu.session.set_start_iteration(start_it)
    t0 = time.perf_counter()
    with whole_run_meter(device, cfg, gpu) as meter:
        train(student, data, spec, device=device, teacher=teacher.model if teacher and not bank else None, bank=bank,
              checkpoint_path=tdir / CHECKPOINT_NAME, state=state, optimizer=optimizer,
              on_log=lambda it, m: run.log_metrics(m, step=it), on_validate=validate,
              on_checkpoint=(lambda it: hooks.on_checkpoint(it, tdir)) if hooks.on_checkpoint else None,
              progress=(lambda it: hooks.progress(it, cfg.iterations)) if hooks.progress else None,
              gpu_session=gpu.session)
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
    share_j, share_tags = teacher_share(teacher, alpha=cfg.alpha, sharers=hooks.teacher_sharers,
                                        inherited=cfg.student_init == "teacher")
    energy_metrics, energy_tags = training_energy(gpu, energy, ran, teacher_energy_j=share_j)
    metrics.update(energy_metrics)
    final = {k: v for k, v in metrics.items() if k not in static and k not in last_val}  # not logged yet
    tags = {**energy_tags, **share_tags, "energy_iterations": ran, "resumed_from": start_it or None}
    return new_record(run.run_id, metrics, final_metrics=final, final_tags=tags, energy=energy)


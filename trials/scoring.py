"""After training: the steps that score and save a trained student, each one isolated.

Once a student's training has finished, nothing that follows may turn the trial into
nothing. The steps run in this order, each on its own:

    final_metrics     the training's metrics (time, energy, memory) and tags → MLflow
    student           student.pth + student_config.json → MLflow artifacts
    benchmarks        PSNR / SSIM on each of data.benchmark_sets
    latency           latency_ms, latency_p90_ms; with the energy session, timed with the GPU alone
    inference_energy  GPU joules per image (absent on CPU: nothing measured); with the trial's
                      energy session, measured with the GPU alone (its exclusive lock)
    energy_trace      the training's power trace, CSV + PNG (absent without a trace)
    sample_image      LR | SR | HR of the first validation image

Metrics are logged before artifacts: the artifact steps wait for `final_metrics`. A step
that fails is logged with the run (an `post_training_failures/<step>.txt` artifact holding
the traceback, tags `post_training_failures` and `post_training_error.<step>` holding the
error's last line) and the others still run; the run ends FINISHED either way.

The trial's record (`result.json`: run id, metrics, `missing_steps`) is written before the
first step and rewritten after each, so a failure — or a crash — leaves a record that the
next start of the same trial (same config, same workdir) reads to complete the missing
steps into the same MLflow run.

With a GPU energy session (`gpu_energy`), the trial still holds the GPU's shared lock here:
between steps (and benchmark sets) it lets other trials' exclusive windows in.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from srstudy.config import TrialConfig
from srstudy.data.names import safe_name
from srstudy.measure.energy import EnergyResult, energy_meter
from srstudy.measure.evaluate import evaluate_set, model_upscaler
from srstudy.measure.inference import super_resolve
from srstudy.models.dvmsr import save_checkpoint
from srstudy.tracking import TrialRun

from . import inputs
from .gpu_energy import inference_energy
from .loop import measure_latency

log = logging.getLogger("srstudy.trial")

RESULT_FILE = "result.json"
STEPS = ("final_metrics", "student", "benchmarks", "latency", "inference_energy", "energy_trace", "sample_image")
#: steps that log artifacts: they wait until the training's metrics are logged
ARTIFACT_STEPS = frozenset({"student", "energy_trace", "sample_image"})
NOT_RUN = "not run yet"
FAILURES_TAG = "post_training_failures"
ERROR_TAG_PREFIX = "post_training_error."


# ---- the record ---------------------------------------------------------------------------
def new_record(run_id: str, metrics: dict[str, float], *, final_metrics: dict[str, float],
               final_tags: dict[str, Any], energy: EnergyResult | None) -> dict[str, Any]:
    """The record of a freshly trained trial: every step still to run.

    `metrics`: all that was measured (also what `final_metrics` logs); `final_metrics` /
    `final_tags`: what that step logs at the last iteration; `energy`: kept while its trace
    has not been written (it lives nowhere else).
    """
    return {
        "run_id": run_id,
        "metrics": metrics,
        "missing_steps": {step: NOT_RUN for step in STEPS},
        "final": {"metrics": final_metrics, "tags": final_tags},
        "energy_trace": dataclasses.asdict(energy) if energy is not None and energy.trace else None,
    }


def read_record(trial_dir: Path) -> dict[str, Any] | None:
    """The trial's record, or None before its training finished (a record written by an
    older srstudy, without `missing_steps`, counts as complete)."""
    path = trial_dir / RESULT_FILE
    if not path.exists():
        return None
    record = json.loads(path.read_text())
    record.setdefault("missing_steps", {})
    return record


def write_record(trial_dir: Path, record: dict[str, Any]) -> None:
    """Write the record atomically (a crash leaves the old or the new one, never half)."""
    tmp = trial_dir / (RESULT_FILE + ".tmp")
    tmp.write_text(json.dumps(record, indent=1))
    tmp.replace(trial_dir / RESULT_FILE)


# ---- running the steps --------------------------------------------------------------------
@dataclass(kw_only=True)
class AfterTraining:
    """The missing steps of one trained trial (see the module docstring); built by keyword."""

    cfg: TrialConfig
    run: TrialRun
    student: torch.nn.Module
    device: torch.device
    trial_dir: Path
    record: dict[str, Any]
    rerun: bool = False  # completing the steps a previous start left missing
    gpu_session: Any = None  # the trial's TrialEnergySession on a GPU (None on CPU)

    def yield_gpu(self) -> None:
        """Between two pieces of GPU work: let another trial's exclusive energy window in."""
        if self.gpu_session is not None:
            self.gpu_session.yield_point()

    @property
    def art(self) -> Path:
        return self.trial_dir / "artifacts"

    def run_missing(self) -> dict[str, str]:
        """Run each missing step in order, isolated; returns the steps still missing
        (step → the error's last line). The record is saved after every step."""
        missing: dict[str, str] = self.record["missing_steps"]
        completed = []
        for step in STEPS:
            if step not in missing:
                continue
            self.yield_gpu()
            if step in ARTIFACT_STEPS and "final_metrics" in missing:
                missing[step] = "not run: waits for final_metrics (metrics are logged before artifacts)"
                continue
            try:
                new = _STEP_FUNCTIONS[step](self)
                if new:
                    self.run.log_metrics(new, step=self.cfg.iterations)
                    self.record["metrics"].update(new)
            except Exception as e:  # noqa: BLE001 — isolated on purpose: the training is kept
                missing[step] = self._record_failure(step, e)
            else:
                del missing[step]
                completed.append(step)
            write_record(self.trial_dir, self.record)
        self._tag_outcome(missing, completed)
        return dict(missing)

    def _record_failure(self, step: str, exc: Exception) -> str:
        """Log a failed step (console and MLflow); returns the error's last line."""
        last = traceback.format_exception_only(type(exc), exc)[-1].strip()
        log.error("trial %s: step %r failed after training (%s); the training and its metrics are kept, "
                  "run the same trial again to complete this step", self.trial_dir.name, step, last)
        log.debug("step %r failed with", step, exc_info=exc)  # the traceback is also in the run's error file
        try:
            path = self.art / "post_training_failures" / f"{step}.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"step: {step}\nerror: {last}\n\n" + "".join(traceback.format_exception(exc)))
            self.run.log_artifact(path, "post_training_failures")
        except Exception as e:  # noqa: BLE001 — the tags below still say it
            log.warning("could not log the error of step %r with the run: %s", step, e)
        return last

    def _tag_outcome(self, missing: dict[str, str], completed: list[str]) -> None:
        """Tags saying which steps are missing and why; cleared once a re-run completed them."""
        try:
            tags = self.run.data().tags
            stale = [k for k in tags if k.startswith(ERROR_TAG_PREFIX) and k[len(ERROR_TAG_PREFIX):] not in missing]
            if missing:
                self.run.set_tags({FAILURES_TAG: ",".join(missing),
                                   **{ERROR_TAG_PREFIX + s: msg[:500] for s, msg in missing.items()}})
            elif FAILURES_TAG in tags:
                stale.append(FAILURES_TAG)
            self.run.delete_tags(stale)
            if self.rerun and completed:
                self.run.set_tags({"post_training_completed_on_rerun": ",".join(completed)})
        except Exception as e:  # noqa: BLE001
            log.warning("could not tag the run with its missing steps %s: %s", sorted(missing), e)


# ---- the steps ----------------------------------------------------------------------------
def _final_metrics(ctx: AfterTraining) -> dict[str, float]:
    ctx.run.set_tags(ctx.record["final"]["tags"])
    ctx.run.log_metrics(ctx.record["final"]["metrics"], step=ctx.cfg.iterations)
    return {}


def _student(ctx: AfterTraining) -> dict[str, float]:
    ctx.art.mkdir(parents=True, exist_ok=True)
    save_checkpoint(ctx.student, ctx.art / "student.pth")
    (ctx.art / "student_config.json").write_text(json.dumps(ctx.student.cfg.to_dict(), indent=1))
    for name in ("student.pth", "student_config.json"):
        ctx.run.log_artifact(ctx.art / name, "student")
    return {}


def _benchmarks(ctx: AfterTraining) -> dict[str, float]:
    up = model_upscaler(ctx.student, scale=ctx.cfg.scale, device=ctx.device)
    out: dict[str, float] = {}
    for bench in inputs.benchmark_sets(ctx.cfg.data, scale=ctx.cfg.scale):
        ctx.yield_gpu()
        res = evaluate_set(up, bench)
        out[f"{bench.name}_psnr"], out[f"{bench.name}_ssim"] = res["psnr"], res["ssim"]
    return out


def _latency(ctx: AfterTraining) -> dict[str, float]:
    """Batch-1 latency; with the trial's energy session, timed with the GPU alone (trials that
    share it wait), else tagged as possibly shared on a GPU."""
    lat, session = ctx.cfg.latency, ctx.gpu_session
    out, how = measure_latency(ctx.student, device=ctx.device, height=lat.height, width=lat.width,
                               repeats=lat.repeats, warmup=lat.warmup,
                               alone=None if session is None else (lambda: session.alone("latency")))
    if session is None and ctx.device.type == "cuda":
        how["latency_gpu"] = ("not exclusive: no energy session (other processes on this GPU, if any, "
                              "lengthen it)")
    ctx.run.set_tags({"latency_device": str(ctx.device), "latency_input": f"1x3x{lat.height}x{lat.width}", **how})
    return out


def _inference_energy(ctx: AfterTraining, seconds: float = 1.0) -> dict[str, float]:
    """GPU energy per batch-1 inference, from a loop of at least `seconds` (absent on CPU).

    With the trial's energy session: measured with the GPU alone (the tag
    `inference_energy_unavailable_reason` says why when it could not be)."""
    if ctx.gpu_session is not None:
        x = torch.rand(1, 3, ctx.cfg.latency.height, ctx.cfg.latency.width, device=ctx.device)
        metrics, tags = inference_energy(ctx.gpu_session, ctx.student, x)
        ctx.run.set_tags(tags)
        return metrics
    meter = energy_meter(device=ctx.device, sample_hz=ctx.cfg.energy_sample_hz)
    if meter.source == "none":
        return {}
    x = torch.rand(1, 3, ctx.cfg.latency.height, ctx.cfg.latency.width, device=ctx.device)
    n = 0
    with torch.no_grad(), meter:
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            ctx.student(x)
            n += 1
    res = meter.result
    return {} if res is None or res.energy_j is None else {"gpu_inference_energy_per_image_j": res.energy_j / n}


def _energy_trace(ctx: AfterTraining) -> dict[str, float]:
    saved = ctx.record.get("energy_trace")
    if saved:
        energy = EnergyResult(**{**saved, "trace": [tuple(p) for p in saved["trace"]]})
        for p in (energy.write_trace_csv(ctx.art / "power_trace.csv"), energy.plot_trace(ctx.art / "power_trace.png")):
            if p is not None:
                ctx.run.log_artifact(p, "energy")
    ctx.record["energy_trace"] = None  # written: no need to keep it in the record
    return {}


def sample_image(lr: np.ndarray, sr: np.ndarray, hr: np.ndarray, scale: int, path: Path) -> Path:
    """LR (nearest-upscaled) | SR | HR side by side, as one PNG."""
    up = np.repeat(np.repeat(lr, scale, axis=0), scale, axis=1)[: hr.shape[0], : hr.shape[1]]
    sr8 = np.round(np.clip(sr * 255, 0, 255)).astype(np.uint8)
    Image.fromarray(np.concatenate([up, sr8, hr], axis=1)).save(path)
    return path


def _sample_image(ctx: AfterTraining) -> dict[str, float]:
    item = inputs.validation_set(ctx.cfg.data, scale=ctx.cfg.scale)[0]
    sr = super_resolve(ctx.student, item.lr, scale=ctx.cfg.scale, device=ctx.device)
    ctx.art.mkdir(parents=True, exist_ok=True)
    path = sample_image(item.lr, sr, item.hr, ctx.cfg.scale, ctx.art / f"sample_{safe_name(item.name)}.png")
    ctx.run.log_artifact(path, "samples")
    return {}


_STEP_FUNCTIONS: dict[str, Callable[[AfterTraining], dict[str, float]]] = {
    "final_metrics": _final_metrics, "student": _student, "benchmarks": _benchmarks, "latency": _latency,
    "inference_energy": _inference_energy, "energy_trace": _energy_trace, "sample_image": _sample_image,
}

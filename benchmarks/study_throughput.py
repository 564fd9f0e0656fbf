"""A study's aggregate trial throughput vs one trial alone on the same machine, one run.

1. The study's teacher is trained (or taken from the cache) first, so neither side pays for it.
2. **Alone:** the study's base trial runs by itself (no Ray): its training iterations/s.
3. **Study:** `srstudy launch` runs the study (fractional GPUs, `max_concurrent` at once).
   Aggregate throughput = Σ training iterations of its finished trials / the launch's wall
   time (Ray start-up and scoring included), and, as the steady-state view, the sum of the
   trials' own iterations/s.
4. Per trial: its config, PSNR, energy (tagged shared when trials shared a GPU), params,
   latency, peak GPU memory, the GPU it got — from its MLflow run.

    python benchmarks/study_throughput.py --config benchmarks/configs/gpu_study.yaml \
        --data-root ../shared/data --set num_samples=8 --workdir /tmp/gpu-study --out benchmarks/results/study_h100.json

ASHA is turned off here (every trial runs all its iterations). --data-root is `srstudy launch
--data-root` (train T91 + BSD200, validate Set5, a relative teacher.checkpoint under it);
without it the study keeps its own data settings (e.g. the bundled images).
Issue 9 uses the same script with `--set resources.gpu=0.5` on a 2-GPU host.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from mlflow import MlflowClient

from srstudy.config import load_study_config
from srstudy.launch import launch
from srstudy.trials.distill import run_trial
from srstudy.trials.teacher import get_teacher
from srstudy.workdir import StudyDir

PER_TRIAL = ("val_psnr", "Set5_psnr", "Set5_ssim", "params", "latency_ms", "gpu_energy_j", "gpu_avg_power_w",
             "gpu_energy_per_iter_j", "iterations_per_s", "train_time_s", "wall_time_s",
             "gpu_peak_mem_allocated_mb", "gpu_peak_mem_reserved_mb")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, help="study YAML")
    ap.add_argument("--data-root", help="folder with train/T91/HR, train/BSD200/HR, benchmarks/<Set>, checkpoints/")
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="study override key=value")
    args = ap.parse_args()
    work = Path(args.workdir).resolve()
    # every trial runs all its iterations: ASHA would cut the throughput this measures
    study = load_study_config(args.config, ["asha.enabled=false", *args.overrides, f"workdir={work / 'study'}"],
                              data_root=args.data_root)
    cfg = study.trial
    device = torch.device("cuda" if cfg.device in ("cuda", "auto") and torch.cuda.is_available() else "cpu")
    teachers = StudyDir(work / "study").teachers  # where the study's trials look for it

    t0 = time.perf_counter()
    teacher = get_teacher(cfg, cache_dir=teachers, device=device) if cfg.alpha > 0 else None
    teacher_s = time.perf_counter() - t0

    alone = run_trial(cfg, workdir=work / "alone", teacher_cache=teachers)
    alone_ips = alone.metrics["iterations_per_s"]
    print(f"alone: {alone_ips:.3f} it/s, PSNR {alone.metrics['val_psnr']:.3f}", flush=True)

    result = launch(study)
    client = MlflowClient(tracking_uri=result.tracking_uri)
    trials = []
    for row in result.rows:
        m = client.get_run(row["mlflow_run_id"]).data if row.get("mlflow_run_id") else None
        trials.append({
            "trial_id": row["trial_id"], "status": row["status"], "gpu_ids": row.get("gpu_ids"),
            "config": {k: row.get(k) for k in study.search_space},
            **({k: m.metrics.get(k) for k in PER_TRIAL} if m else {}),
            "energy_shared": (m.tags.get("energy_shared") if m else None),
        })
    done = [t for t in trials if t["status"] == "done"]
    total_its = len(done) * cfg.iterations
    aggregate = total_its / result.wall_s
    steady = sum(t["iterations_per_s"] or 0 for t in done)
    out = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "gpus": torch.cuda.device_count() if device.type == "cuda" else 0,
        "torch": torch.__version__,
        "study": study.model_dump(mode="json"),
        "teacher": {"source": teacher.source if teacher else None, "seconds_to_get": teacher_s},
        "alone": {"iterations_per_s": alone_ips, "run_id": alone.run_id,
                  **{k: alone.metrics.get(k) for k in PER_TRIAL}},
        "study_wall_s": result.wall_s, "finished_trials": len(done), "trial_iterations": total_its,
        "aggregate_iterations_per_s": aggregate,
        "aggregate_throughput_ratio": aggregate / alone_ips,
        "steady_state_iterations_per_s": steady,
        "steady_state_throughput_ratio": steady / alone_ips,
        "trials": trials,
        "pareto_run_ids": [r["mlflow_run_id"] for r in result.pareto],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1, default=str))
    print(f"study: {len(done)} trials in {result.wall_s:.0f} s: {aggregate:.3f} it/s aggregate "
          f"({aggregate / alone_ips:.2f}x one trial alone), steady state {steady:.3f} it/s "
          f"({steady / alone_ips:.2f}x)")


if __name__ == "__main__":
    main()

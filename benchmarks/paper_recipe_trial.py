"""MambaLiteSR's recipe as one srstudy trial, on T91 + BSD200, scored on Set5/Set14/BSD100.

Trains (or takes from the cache) the 60-dim 8×2 teacher, distils the 32-dim 4×2 rank-2
student (α = 0.8, batch 128, LR 64×64, 2500 iterations), and writes the student's
PSNR/SSIM per set, its training energy (J) and wall time, with bicubic and the paper's
student for comparison.

    python benchmarks/paper_recipe_trial.py --data-root ../shared/data --workdir /tmp/recipe \
        --out benchmarks/results/paper_recipe_h100.json [--set iterations=500 …] [--sets Set5,Set14]

`recipe_trial_seconds` is `run_trial`'s wall time end to end (data loading, training,
scoring, latency, artifacts); with `--set alpha=0` no teacher is trained.
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import torch

from srstudy.trials.distill import run_trial
from srstudy.trials.teacher import get_teacher
from srstudy.workdir import StudyDir

from recipe import recipe_config

PAPER_STUDENT_SET5 = 28.28
BICUBIC = {"Set5": 28.42, "Set14": 26.00, "BSD100": 25.96}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", required=True, help="folder with train/T91/HR, train/BSD200/HR, benchmarks/<Set>")
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--sets", default="Set5,Set14,BSD100", help="benchmark sets to score (under <data-root>/benchmarks)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    cfg = recipe_config(args.data_root, args.overrides, sets=args.sets)
    sets = args.sets.split(",")
    t0 = time.perf_counter()
    device = torch.device(cfg.device if cfg.device != "auto" else "cuda")
    teacher = None
    if cfg.alpha > 0:  # alpha = 0 trains no teacher (run_trial skips it too)
        teacher = get_teacher(cfg, cache_dir=StudyDir(args.workdir).teachers, device=device)
    teacher_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    result = run_trial(cfg, workdir=args.workdir)
    trial_s = time.perf_counter() - t1
    m = result.metrics
    out = {
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__,
        "config": cfg.model_dump(mode="json"),
        "triton": getattr(__import__("importlib").util.find_spec("triton"), "name", None)
        and __import__("triton").__version__,
        "teacher": ({"source": teacher.source, "seconds_to_get": teacher_s, **teacher.meta} if teacher
                    else {"source": "none (alpha=0)"}),
        "recipe_trial_seconds": trial_s,
        "iterations": cfg.iterations,
        "iterations_per_s": m.get("iterations_per_s"),
        "gpu_energy_j": m.get("gpu_energy_j"),
        **{f"{s}_psnr": m.get(f"{s}_psnr") for s in sets},
        **{f"{s}_ssim": m.get(f"{s}_ssim") for s in sets},
        "student": {k: m.get(k) for k in sorted(m)},
        "run_id": result.run_id,
        "paper_student_set5_psnr": PAPER_STUDENT_SET5,
        "bicubic_psnr": BICUBIC,
        "set5_vs_bicubic_db": m["Set5_psnr"] - BICUBIC["Set5"],
        "set5_vs_paper_student_db": m["Set5_psnr"] - PAPER_STUDENT_SET5,
    }
    Path(args.out).write_text(json.dumps(out, indent=1, default=str))
    for s in sets:
        print(f"{s}: {m[f'{s}_psnr']:.3f} dB / {m[f'{s}_ssim']:.4f} (bicubic {BICUBIC[s]})")
    print(f"energy {m.get('gpu_energy_j')} J, train {m['train_time_s']:.1f} s, trial {trial_s:.1f} s end to end")


if __name__ == "__main__":
    main()

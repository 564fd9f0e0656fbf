"""MambaLiteSR's Table III re-measured: teacher training at rank 2 vs rank 30, one run, one GPU.

For each rank: the same teacher (60-dim 8×2 by default) trained for the same iterations on
the same data; reports energy per iteration, average power, Set5 PSNR after training and
the parameter count.

    python benchmarks/rank_energy.py --data-root ../shared/data --ranks 2,30 \
        --set teacher.iterations=500 --out benchmarks/results/rank_energy_h100.json
"""
from __future__ import annotations

import argparse
import json
import logging
import tempfile
from pathlib import Path

import torch

from srstudy.measure.evaluate import evaluate_set, model_upscaler
from srstudy.trials import inputs
from srstudy.trials.teacher import get_teacher

from recipe import recipe_config

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", required=True)
    ap.add_argument("--ranks", default="2,30")
    ap.add_argument("--out", required=True)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    rows = []
    images = None
    for rank in [int(r) for r in args.ranks.split(",")]:
        cfg = recipe_config(args.data_root, args.overrides + [f"teacher.arch.rank={rank}"], sets="Set5")
        images = images or inputs.train_images(cfg.data)
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        with tempfile.TemporaryDirectory() as cache:
            t = get_teacher(cfg, cache_dir=cache, device=device, images=images)
        set5 = inputs.benchmark_sets(cfg.data, scale=cfg.scale)[0]
        res = evaluate_set(model_upscaler(t.model, scale=cfg.scale, device=device), set5)
        row = {"rank": rank, "params": t.model.param_count(), "iterations": cfg.teacher.iterations,
               "seconds": t.meta["seconds"], "set5_psnr": res["psnr"], "set5_ssim": res["ssim"],
               **t.meta["energy"], **t.meta["energy_tags"]}
        rows.append(row)
        print(json.dumps(row))
    out = {"device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
           "torch": torch.__version__, "rows": rows}
    if len(rows) == 2 and "gpu_energy_per_iter_j" in rows[0] and "gpu_energy_per_iter_j" in rows[1]:
        out["energy_per_iter_ratio_low_vs_high_rank"] = rows[0]["gpu_energy_per_iter_j"] / rows[1]["gpu_energy_per_iter_j"]
    Path(args.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

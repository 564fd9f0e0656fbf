"""Training-loop time with batches built in line vs by the prefetch thread, one run.

    python benchmarks/bench_loop_prefetch.py --device cuda --batch 128 --patch 64 \
        --out benchmarks/results/loop_prefetch_h100.json

Both sides train the same student from the same initial weights on the same batches
(bundled images by default, or --train DIR...), `--iterations` each after a warm-up; the JSON
holds seconds per iteration for prefetch depth 0 and each `--depths`, and their ratios.
"""
from __future__ import annotations

import argparse
import copy
import json
import platform
import time

import torch

from srstudy.data import PatchDataset, default_split
from srstudy.models.dvmsr import DVMSR, preset
from srstudy.trials.loop import LoopSpec, train


def seconds_per_iteration(model, data, device, *, iterations: int, batch: int, depth: int, warmup: int) -> float:
    """Seconds per iteration of `train` over `iterations` after `warmup` untimed ones."""
    spec = LoopSpec(iterations=warmup, batch_size=batch, base_lr=2e-4, milestones=[], prefetch=depth,
                    checkpoint_interval=10**9, val_interval=10**9, log_interval=10**9)
    state = train(model, data, spec, device=device)
    spec.iterations = warmup + iterations
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    train(model, data, spec, device=device, state=state)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - t0) / iterations


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--train", nargs="*", help="training image folders (default: the bundled images)")
    ap.add_argument("--preset", default="litesr_student")
    ap.add_argument("--arch", default="", help="preset overrides, e.g. embed_dim=8,n_groups=1")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--patch", type=int, default=64)
    ap.add_argument("--iterations", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--depths", default="2")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    device = torch.device(args.device)
    data = PatchDataset(args.train or default_split()[0], lr_patch=args.patch, patches_per_image=32, seed=0)
    torch.manual_seed(0)
    overrides = {k: int(v) for k, v in (kv.split("=") for kv in args.arch.split(",") if kv)}
    base = DVMSR(preset(args.preset, **overrides))
    out = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.machine(),
           "cpu_threads": torch.get_num_threads(), "torch": torch.__version__, "preset": args.preset, "arch_overrides": overrides,
           "batch": args.batch, "lr_patch": args.patch, "iterations": args.iterations, "s_per_it": {}}
    for depth in [0] + [int(d) for d in args.depths.split(",")]:
        s = seconds_per_iteration(copy.deepcopy(base), data, device, iterations=args.iterations,
                                  batch=args.batch, depth=depth, warmup=args.warmup)
        out["s_per_it"][f"prefetch_{depth}"] = s
        print(f"prefetch {depth}: {s * 1000:.1f} ms/iteration", flush=True)
    inline = out["s_per_it"]["prefetch_0"]
    for k, v in out["s_per_it"].items():
        if k != "prefetch_0":
            out[f"{k}_vs_inline_ratio"] = v / inline
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()

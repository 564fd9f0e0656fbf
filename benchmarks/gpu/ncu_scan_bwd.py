"""Run the Triton scan's forward + backward a few times at the training shape, for Nsight Compute.

Why: the bf16 backward runs ~28 % slower than the float32 one at the same launch options although
its SASS has float32's instruction mix (benchmarks/gpu/NOTES_issue15.md, session 10); the hardware
counters (stall reasons, memory traffic, occupancy) say where the time goes. Under ncu:

    ncu --clock-control none -k regex:_bwd_kernel -s 2 -c 1 --section SpeedOfLight --section Occupancy \
        --section LaunchStats --section SchedulerStats --section WarpStateStats \
        --section MemoryWorkloadAnalysis --section SourceCounters \
        python3 benchmarks/gpu/ncu_scan_bwd.py --dtype bf16 [--config '{"bwd_spread": true, ...}']

(`-s 2`: skip the warm-up's launches; the third is profiled.) Without ncu it just runs.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: bench_scan_tiles' inputs
from bench_scan_tiles import inputs  # noqa: E402
from srstudy.models import scan_triton  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dtype", choices=["fp32", "bf16"], default="bf16")
    ap.add_argument("--dim", type=int, default=64, help="D (the student's 64, the teacher's 120)")
    ap.add_argument("--config", default="{}", help="CONFIG entries to override, as JSON")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    scan_triton.CONFIG.update(json.loads(args.config))
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    x = inputs(128, args.dim, 4096, 16, dtype)
    names = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")
    leaves = {k: x[k].clone().requires_grad_() for k in names}
    gy = torch.randn(128, args.dim, 4096, device="cuda").to(dtype)
    for _ in range(args.runs):
        y = scan_triton.selective_scan_triton(*(leaves[k] for k in names), True)
        y.backward(gy)
    torch.cuda.synchronize()
    print(args.dtype, "D", args.dim, "ran", args.runs, "forward + backward; CONFIG", json.dumps(scan_triton.CONFIG))


if __name__ == "__main__":
    main()

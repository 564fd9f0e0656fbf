"""Where one training step's GPU time goes: torch.profiler over student steps (issue 15).

    python benchmarks/profile_step.py --impls triton,reference --precisions fp32,bf16 --out profile.txt

For each implementation (`bench_train_step.build`) × precision: 3 warm-up steps, then 3 profiled
steps of the student (L1 to HR, Adam) at batch 128, LR 64²; writes the operators and kernels by
total GPU time (per step) to `--out`, and prints the top rows.
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from bench_train_step import build, set_scan_tiles, step_fn


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--impls", default="triton")
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--rows", type=int, default=30)
    ap.add_argument("--scan-tiles", default="", help="fwd=T,G,W[,tok];bwd=T,G,W[,tok] for the Triton scan")
    ap.add_argument("--scan-config", default="", help="JSON object of other models/scan_triton.CONFIG entries")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    set_scan_tiles(args.scan_tiles, args.scan_config)
    device = torch.device("cuda")
    g = torch.Generator().manual_seed(0)
    lr = torch.rand(args.batch, 3, 64, 64, generator=g).to(device)
    hr = F.interpolate(lr, scale_factor=4, mode="bicubic").clamp(0, 1)
    with open(args.out, "w") as out:
        import triton  # the versions and card the profile was taken on head the file
        out.write(f"# {torch.cuda.get_device_name(device)}, torch {torch.__version__}, triton {triton.__version__}, "
                  f"scan CONFIG overrides {args.scan_config or 'none'}\n")
        for impl in args.impls.split(","):
            for precision in args.precisions.split(","):
                try:
                    torch.manual_seed(0)
                    student = build(impl, "litesr_student", device, rank=2).train()
                    opt = torch.optim.Adam(student.parameters(), lr=2e-4)
                    step = step_fn(student, None, opt, lr, hr, 0.0, device, precision)
                    for _ in range(3):
                        step()
                    torch.cuda.synchronize()
                    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                        for _ in range(3):
                            step()
                        torch.cuda.synchronize()
                    events = prof.key_averages()
                    total = sum(e.self_device_time_total for e in events) / 3 / 1000
                    table = events.table(sort_by="self_cuda_time_total", row_limit=args.rows, max_name_column_width=70)
                    head = f"==== {impl} / {precision}: GPU time per step {total:.1f} ms (sum of kernel self times / 3 steps)"
                except Exception as e:  # recorded; the other rows still run
                    head, table = f"==== {impl} / {precision}: {type(e).__name__}: {e}", ""
                print(head, flush=True)
                out.write(head + "\n" + table + "\n")
                print("\n".join(table.splitlines()[:14]), flush=True)
                student = opt = None
                torch.cuda.empty_cache()


if __name__ == "__main__":
    main()

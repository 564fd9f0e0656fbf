"""Training-step time of srstudy's networks vs the issue-8 reference (mamba_ssm.Mamba), one run.

A step is what `srstudy.trials.loop.train` does per iteration: the frozen teacher's forward
(distillation only), the student's forward and backward, the L1 losses and an Adam step, on a
batch already on the device (random LR patches, random weights, as the reference was measured).

    python benchmarks/bench_train_step.py --backends triton,cuda --precisions fp32,bf16 \
        --out benchmarks/results/train_step_h100.json

Writes, for each implementation (`srstudy[<scan backend>]`, `reference`) × precision × mode
(`distill`: live teacher; `distill_bank`: the teacher's outputs precomputed by a teacher bank
and copied in from pinned memory; `student`): median ms per step and peak GPU memory; then
`<mode>_step_ratio_<precision>` of srstudy's fastest backend to the reference's *live-teacher*
step for distillation modes and its student step otherwise, plus the ratio for every backend;
and the issue-15 headline ratios of the *default path* (`--default-backend`, what a GPU without
mamba-ssm runs) at the trial's default precision (`LoopSpec.precision`): `student_step_ratio`,
`distill_step_ratio` (live teacher) and `distill_bank_step_ratio` (teacher bank), each against
the reference's step in the same precision (goals: student ≤ 0.7, distillation ≤ 0.5).
`--scan-tiles fwd=T,G,W;bwd=T,G,W` sets the Triton scan's tiles and `--scan-config '{...}'` its other
entries (models/scan_triton.CONFIG; the report records the CONFIG the run used).
"""
from __future__ import annotations

import argparse
import json
import platform

import torch
import torch.nn.functional as F

from srstudy.models.dvmsr import DVMSR, preset
from srstudy.trials.loop import LoopSpec, autocast, distillation_loss
from timing import median_ms


def build(impl: str, name: str, device: torch.device, **overrides) -> torch.nn.Module:
    """srstudy's DVMSR with scan backend `impl`, or the reference network (`impl == "reference"`)."""
    cfg = preset(name, **overrides)
    if impl == "reference":
        from reference_net import reference_dvmsr

        return reference_dvmsr(cfg).to(device)
    return DVMSR(cfg).set_scan_backend(impl).to(device)


def add_verdict(report: dict) -> dict:
    """Each headline ratio against its goal: met, or by how much it is over (`report["verdict"]`)."""
    goals = {"student_step_ratio": 0.7, "distill_step_ratio": 0.5, "distill_bank_step_ratio": 0.5}
    report["verdict"] = {name: {"ratio": round(report[name], 4), "goal": goal, "met": report[name] <= goal,
                                "over_goal_by": round(max(0.0, report[name] - goal), 4)}
                         for name, goal in goals.items() if name in report}
    return report


def set_scan_tiles(spec: str, config: str = "") -> None:
    """Set the Triton scan's tiles from "fwd=T,G,W[,tok];bwd=T,G,W[,tok]" and other ``CONFIG`` entries
    from a JSON object, e.g. '{"bwd_stages": {"default": 2}}' (empty: keep the defaults)."""
    if spec or config:
        from srstudy.models import scan_triton

        for part in filter(None, spec.split(";")):
            which, tile = part.split("=")
            scan_triton.CONFIG[which.strip()] = tuple(int(v) for v in tile.split(","))
        scan_triton.CONFIG.update(json.loads(config) if config else {})


def step_fn(student, teacher, optimizer, lr, hr, alpha: float, device, precision: str, bank_targets=None):
    """One training step as the trial loop takes it (teacher None: student-only L1 to HR;
    `bank_targets`: the teacher bank's float16 outputs, copied from pinned host memory)."""
    def step():
        with autocast(device, precision):
            t_sr = None
            if bank_targets is not None:
                t_sr = bank_targets.to(device, non_blocking=True)
            elif teacher is not None:
                with torch.no_grad():
                    t_sr = teacher(lr)
            sr = student(lr)
            loss = distillation_loss(sr.float(), hr, None if t_sr is None else t_sr.float(), alpha)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--backends", default="triton,cuda", help="srstudy scan backends to time")
    ap.add_argument("--no-reference", action="store_true", help="skip the mamba_ssm.Mamba reference")
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument("--modes", default="distill,distill_bank,student",
                    help="distill: live teacher; distill_bank: precomputed teacher outputs; student: L1 to HR")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr-size", type=int, default=64)
    ap.add_argument("--student-rank", type=int, default=2)
    ap.add_argument("--alpha", type=float, default=0.8)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--default-backend", default="triton", help="the scan backend of the default path")
    ap.add_argument("--scan-tiles", default="", help="fwd=T,G,W;bwd=T,G,W for the Triton scan kernels")
    ap.add_argument("--scan-config", default="", help="JSON object of other models/scan_triton.CONFIG entries")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    set_scan_tiles(args.scan_tiles, args.scan_config)
    device = torch.device(args.device)
    impls = [b for b in args.backends.split(",") if b] + ([] if args.no_reference else ["reference"])
    report = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.machine(),
        "torch": torch.__version__, "cuda": torch.version.cuda,
        "shapes": {"batch": args.batch, "lr": args.lr_size, "student": f"litesr_student rank {args.student_rank}",
                   "teacher": "litesr_teacher"},
        "results": {},
    }
    try:
        import triton
        from srstudy.models import scan_triton

        report["triton"] = triton.__version__
        report["triton_scan_tiles"] = {k: list(v) if isinstance(v, tuple) else v for k, v in scan_triton.CONFIG.items()}
    except ImportError:
        report["triton"] = None
    try:
        import mamba_ssm
        from reference_net import uses_causal_conv1d
        report["mamba_ssm"] = mamba_ssm.__version__
        report["reference_uses_causal_conv1d"] = uses_causal_conv1d()
    except ImportError as e:
        report["mamba_ssm"] = f"unavailable: {e}"
    g = torch.Generator(device="cpu").manual_seed(0)
    s = args.lr_size
    lr = torch.rand(args.batch, 3, s, s, generator=g).to(device)
    hr = F.interpolate(lr, scale_factor=4, mode="bicubic").clamp(0, 1)
    for impl in impls:
        for precision in args.precisions.split(","):
            for mode in args.modes.split(","):
                if impl == "reference" and mode == "distill_bank":
                    continue
                key = f"{impl}/{precision}/{mode}"
                student = teacher = opt = None
                try:
                    torch.manual_seed(0)
                    student = build(impl, "litesr_student", device, rank=args.student_rank).train()
                    teacher = (build(impl, "litesr_teacher", device).eval().requires_grad_(False)
                               if mode == "distill" else None)
                    bank_targets = None
                    if mode == "distill_bank":  # teacher outputs precomputed (trials/teacher_bank.py)
                        bank_targets = hr.half().cpu()
                        bank_targets = bank_targets.pin_memory() if device.type == "cuda" else bank_targets
                    opt = torch.optim.Adam(student.parameters(), lr=2e-4)
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
                        torch.cuda.reset_peak_memory_stats(device)
                    ms = median_ms(step_fn(student, teacher, opt, lr, hr, args.alpha, device, precision, bank_targets),
                                   device, args.repeats, args.warmup)
                    res = {"median_ms": ms}
                    if device.type == "cuda":
                        res["peak_mem_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
                except Exception as e:  # a missing mamba_ssm, an OOM: recorded, the others still run
                    res = {"error": f"{type(e).__name__}: {e}"[:300]}
                report["results"][key] = res
                print(key, json.dumps(res), flush=True)
                del student, teacher, opt
    R = report["results"]
    for precision in args.precisions.split(","):
        for mode in args.modes.split(","):
            ref_mode = "distill" if mode.startswith("distill") else mode  # the reference has no bank
            ref = R.get(f"reference/{precision}/{ref_mode}", {}).get("median_ms")
            mine = {b: R.get(f"{b}/{precision}/{mode}", {}).get("median_ms") for b in impls if b != "reference"}
            mine = {b: v for b, v in mine.items() if v}
            if not (ref and mine):
                continue
            for b, v in mine.items():
                report[f"{mode}_step_ratio_{precision}_{b}"] = v / ref
            best = min(mine, key=mine.get)
            report[f"{mode}_step_ratio_{precision}"] = mine[best] / ref
            report[f"{mode}_step_best_backend_{precision}"] = best
    default_precision = LoopSpec.__dataclass_fields__["precision"].default
    report["default_path"] = {"backend": args.default_backend, "precision": default_precision,
                              "targets": {"student_step_ratio": 0.7, "distill_step_ratio": 0.5}}
    ms = lambda impl, mode, p=default_precision: R.get(f"{impl}/{p}/{mode}", {}).get("median_ms")
    for name, mine, ref in (("student_step_ratio", ms(args.default_backend, "student"), ms("reference", "student")),
                            ("distill_step_ratio", ms(args.default_backend, "distill"), ms("reference", "distill")),
                            ("distill_bank_step_ratio", ms(args.default_backend, "distill_bank"),
                             ms("reference", "distill"))):
        if mine and ref:  # a value that was not measured stays absent
            report[name] = mine / ref
    add_verdict(report)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=1)
    print(json.dumps({k: v for k, v in report.items() if k != "results"}, indent=1))


if __name__ == "__main__":
    main()

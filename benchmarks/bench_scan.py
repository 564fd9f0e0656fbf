#!/usr/bin/env python
"""Time the selective-scan backends (srstudy.models.scan) forward and forward+backward.

    python benchmarks/bench_scan.py --out results.json                 # GPU if present
    python benchmarks/bench_scan.py --device cpu --L 4096 --out cpu.json
    python benchmarks/bench_scan.py --within loop,stream,doubling --chunk-sizes 16,32,64  # design

Backends: ``chunked`` (its defaults, plus every --chunk-sizes x --within
combination when asked), ``cuda`` (mamba_ssm; recorded as skipped
with the reason when it cannot run) and ``reference`` (the Python loop over L;
only when L <= --reference-max-L).  Times are medians over --repeats after
--warmup runs, synchronised with CUDA events on GPUs.  Forward runs under
torch.no_grad(); forward+backward differentiates w.r.t. every input.  The JSON
holds the device, torch/mamba_ssm versions, shapes, times (ms), peak memory
(CUDA: torch.cuda.max_memory_allocated; CPU: not measured), max abs
differences to the most trusted backend run (reference, else cuda, else
chunked), and the ratios ``chunked_vs_cuda_ratio_fwd`` / ``_fwdbwd`` (and
``_vs_reference_``), ``triton_vs_cuda_ratio_*``, ``triton_vs_chunked_ratio_*``.
Nothing here raises on a missing mamba_ssm, an OOM or a failing backend: the
error is written into the JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
import traceback
from pathlib import Path

import torch

try:
    from srstudy.models import scan as S
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from models import scan as S  # type: ignore


def make_inputs(B, D, L, N, device, dtype, seed=0):
    """Mamba-like inputs: S4D-real A = -(1..N), dt bias in [1e-3, 1e-1] (softplus^-1)."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)
    dt = torch.exp(torch.rand(D, generator=g) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
    inputs = dict(
        u=r(B, D, L), delta=r(B, D, L) * 0.5,
        A=-torch.arange(1, N + 1, dtype=torch.float32).repeat(D, 1),
        B=r(B, N, L), C=r(B, N, L), D=torch.ones(D), z=r(B, D, L),
        delta_bias=dt + torch.log(-torch.expm1(-dt)),
    )
    out = {}
    for k, v in inputs.items():
        # mamba_ssm keeps A, D, delta_bias in fp32; activations in the run dtype
        keep_fp32 = k in ("A", "D", "delta_bias") and dtype != torch.float64
        out[k] = v.to(device=device, dtype=torch.float32 if keep_fp32 else dtype).contiguous()
    return out


def call(fn, inp):
    return fn(inp["u"], inp["delta"], inp["A"], inp["B"], inp["C"], inp["D"], inp["z"],
              inp["delta_bias"], True)


class Timer:
    def __init__(self, device):
        self.cuda = device.type == "cuda"

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize()

    def time(self, f, warmup, repeats, cap_s=None):
        """Median ms of f() over repeats after warm-up; stops early past cap_s."""
        t_start = time.perf_counter()
        for _ in range(warmup):
            f()
        self.sync()
        ts = []
        for _ in range(repeats):
            if self.cuda:
                e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                e0.record(); f(); e1.record(); e1.synchronize()
                ts.append(e0.elapsed_time(e1))
            else:
                t0 = time.perf_counter(); f(); ts.append((time.perf_counter() - t0) * 1e3)
            if cap_s is not None and time.perf_counter() - t_start > cap_s:
                break
        return {"median_ms": statistics.median(ts), "min_ms": min(ts), "n": len(ts)}


def bench_one(name, fn, inp, timer, args, device):
    res = {"name": name}
    cap = args.time_cap_s
    try:
        if device.type == "cuda":
            torch.cuda.empty_cache(); torch.cuda.reset_peak_memory_stats(device)
        warmup = 0 if name == "reference" else args.warmup  # a Python loop: nothing to warm up
        with torch.no_grad():
            y = call(fn, inp)
            res["fwd"] = timer.time(lambda: call(fn, inp), warmup, args.repeats, cap)
        if device.type == "cuda":
            res["fwd"]["peak_mem_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
        res["_y"] = y.detach().float()
    except Exception as e:  # OOM, unsupported, ...
        res["fwd"] = {"error": f"{type(e).__name__}: {e}"}
        traceback.print_exc()
        return res
    if args.no_backward:
        return res
    try:
        if device.type == "cuda":
            torch.cuda.empty_cache(); torch.cuda.reset_peak_memory_stats(device)
        leaves = {k: v.detach().requires_grad_(True) for k, v in inp.items()}
        gy = torch.randn(y.shape, generator=torch.Generator().manual_seed(1)).to(y)  # same for all

        def fb():
            for v in leaves.values():
                v.grad = None
            call(fn, leaves).backward(gy)

        res["fwdbwd"] = timer.time(fb, warmup, args.repeats, cap)
        if device.type == "cuda":
            res["fwdbwd"]["peak_mem_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
        res["_grads"] = {k: v.grad.detach().float() for k, v in leaves.items()}
    except Exception as e:
        res["fwdbwd"] = {"error": f"{type(e).__name__}: {e}"}
        traceback.print_exc()
    return res


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="bench_scan.json")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--L", type=int, default=65536)
    p.add_argument("--D", type=int, default=120)
    p.add_argument("--N", type=int, default=16)
    p.add_argument("--B", type=int, default=1)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16", "float64"])
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--chunk-sizes", default="", help="comma list of extra chunk sizes for 'chunked'")
    p.add_argument("--within", default="",
                   help="comma list of chunk-level algorithms to time for every chunk size "
                        "(loop, stream, doubling); default: only the automatic choice")
    p.add_argument("--reference-max-L", type=int, default=8192,
                   help="run the Python-loop reference only up to this L")
    p.add_argument("--time-cap-s", type=float, default=120.0,
                   help="stop repeating a measurement after this many seconds")
    p.add_argument("--no-backward", action="store_true")
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (CPU), 0 = default")
    args = p.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    timer = Timer(device)
    _, mamba_err = S._mamba_ssm_fn()
    try:
        import mamba_ssm  # noqa: F401
        mamba_version = getattr(mamba_ssm, "__version__", "unknown")
    except Exception:
        mamba_version = None
    report = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine()),
        "device_type": device.type,
        "cpu_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "mamba_ssm": mamba_version or f"unavailable: {mamba_err}",
        "shapes": {"B": args.B, "D": args.D, "L": args.L, "N": args.N},
        "dtype": args.dtype,
        "delta_softplus": True, "with_D_z_delta_bias": True,
        "default_chunk_size": S.default_chunk_size(device),
        "repeats": args.repeats, "warmup": args.warmup,
        "results": {},
    }
    inp = make_inputs(args.B, args.D, args.L, args.N, device, dtype)

    runs = []  # (name, fn)
    sizes = [S.default_chunk_size(device)] + [int(c) for c in args.chunk_sizes.split(",") if c.strip()]
    sizes = list(dict.fromkeys(sizes))
    runs.append(("chunked", S.selective_scan_chunked))  # defaults: what selective_scan runs
    for T in sizes:
        for within in [w.strip() for w in args.within.split(",") if w.strip()] or [None]:
            if T == S.default_chunk_size(device) and within is None:
                continue
            name = f"chunked[{within or 'auto'},T={T}]"
            runs.append((name, lambda *a, T=T, w=within: S.selective_scan_chunked(*a, chunk_size=T, within=w)))
    triton_why = S._triton_unavailable(device, dtype)
    if triton_why is None:
        runs.append(("triton", S.selective_scan_triton))
    else:
        report["results"]["triton"] = {"skipped": triton_why}
    cuda_why = S._cuda_unavailable(device, dtype)
    if cuda_why is None:
        runs.append(("cuda", S.selective_scan_cuda))
    else:
        report["results"]["cuda"] = {"skipped": cuda_why}
    if args.L <= args.reference_max_L:
        runs.append(("reference", S.selective_scan_reference))
    else:
        report["results"]["reference"] = {
            "skipped": f"L={args.L} > --reference-max-L={args.reference_max_L} (Python loop over L)"}

    outs = {}
    for name, fn in runs:
        print(f"[bench_scan] {name} ...", flush=True)
        r = bench_one(name, fn, inp, timer, args, device)
        outs[name] = (r.pop("_y", None), r.pop("_grads", None))
        report["results"][name] = r
        print(f"[bench_scan] {name}: {json.dumps({k: v for k, v in r.items() if k != 'name'})}", flush=True)

    # accuracy vs the most trusted backend that ran: reference, else cuda
    base = next((b for b in ("reference", "cuda", "chunked") if outs.get(b, (None,))[0] is not None), None)
    if base is not None:
        yb, gb = outs[base]
        for name, (y, g) in outs.items():
            if name == base or y is None:
                continue
            acc = {"vs": base, "y_max_abs": (y - yb).abs().max().item(),
                   "y_max_rel": ((y - yb).abs().max() / yb.abs().max().clamp_min(1e-30)).item()}
            if g is not None and gb is not None:
                acc["grad_max_rel"] = {k: ((g[k] - gb[k]).abs().max() / gb[k].abs().max().clamp_min(1e-30)).item()
                                       for k in g}
            report["results"][name]["accuracy"] = acc

    def t(name, phase):
        return report["results"].get(name, {}).get(phase, {}).get("median_ms")

    for mine, other in (("chunked", "cuda"), ("chunked", "reference"), ("triton", "cuda"), ("triton", "chunked")):
        for phase in ("fwd", "fwdbwd"):
            a, b = t(mine, phase), t(other, phase)
            report[f"{mine}_vs_{other}_ratio_{phase}"] = (a / b) if (a and b) else None
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if k != "results"}, indent=2))
    print(f"[bench_scan] wrote {args.out}")
    return report


if __name__ == "__main__":
    main()

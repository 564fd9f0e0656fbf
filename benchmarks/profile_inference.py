"""Where batch-1 eager DVMSR inference spends its *host* time, per scan backend (issue 15).

At LR 64² a forward launches ~100 small kernels; the GPU finishes each before the host issues
the next, so the forward's time is the Python and launch cost. This writes, per backend and size:

* ``wall_ms``: median synchronised forward (as `bench_dvmsr_inference.py` times it);
* ``host_ms``: median time to *issue* one forward (no synchronisation; the queue stays short
  because the GPU is faster than the host here);
* the top functions by own time (cProfile) and the top operators by CPU time (torch.profiler).

    python benchmarks/profile_inference.py --device cuda --backends triton,cuda,reference \
        --sizes 64 --out benchmarks/results/profile_inference_h200.json --text profile_inference_h200.txt
"""
from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import statistics
import time

import torch

from bench_dvmsr_inference import add_network_args, build_models, package_version
from srstudy.measure.inference import resolve_device
from timing import median_ms


def host_ms(fn, repeats: int) -> float:
    """Median milliseconds to issue `fn()` without waiting for the device (synchronised between calls)."""
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    torch.cuda.synchronize()
    return statistics.median(times)


def cprofile_top(fn, calls: int, rows: int) -> str:
    """cProfile's table of `calls` forwards, sorted by each function's own time."""
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(calls):
        fn()
    torch.cuda.synchronize()
    prof.disable()
    s = io.StringIO()
    pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(rows)
    return s.getvalue()


def torch_profile_top(fn, calls: int, rows: int) -> str:
    """torch.profiler's operator table (CPU side) of `calls` forwards."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as p:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
    return p.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_network_args(ap, device="cuda", sizes="64", backends="triton,cuda,reference")
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--rows", type=int, default=35)
    ap.add_argument("--out", required=True, help="JSON: wall and host times")
    ap.add_argument("--text", required=True, help="text: the cProfile and torch.profiler tables")
    args = ap.parse_args()
    device = resolve_device(args.device)
    if device.type != "cuda":
        raise SystemExit(f"--device must be a CUDA device (host time is what is measured), got {device}")
    out = {"device": torch.cuda.get_device_name(device), "torch": torch.__version__,
           "triton": package_version("triton"), "mamba_ssm": package_version("mamba_ssm"),
           "preset": args.preset, "times_ms": {}, "wall_ms": {}, "host_ms": {}}
    models = build_models(args, device, out)  # a backend that cannot run is in out["times_ms"], with why
    out["skipped"] = out.pop("times_ms")
    text = []
    for name, model in models.items():
        for s in (int(v) for v in args.sizes.split(",")):
            x = torch.rand(1, 3, s, s, device=device)
            fwd = lambda: model(x)  # noqa: E731
            with torch.no_grad():
                out["wall_ms"].setdefault(name, {})[f"lr{s}"] = median_ms(fwd, device, args.repeats, 5)
                out["host_ms"].setdefault(name, {})[f"lr{s}"] = host_ms(fwd, args.repeats)
                text.append(f"==== {name} LR {s}²: cProfile, 20 forwards ====\n" + cprofile_top(fwd, 20, args.rows))
                text.append(f"==== {name} LR {s}²: torch.profiler, 20 forwards ====\n" + torch_profile_top(fwd, 20, args.rows))
            print(name, s, "wall", round(out["wall_ms"][name][f"lr{s}"], 3), "host", round(out["host_ms"][name][f"lr{s}"], 3))
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
    with open(args.text, "w") as f:
        f.write("\n".join(text))


if __name__ == "__main__":
    main()

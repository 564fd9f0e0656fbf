"""ONNX export of DVMSR and a student, both sides measured on the same machine: graph size,
parity with PyTorch (fp32 and fp16 graphs), onnxruntime vs PyTorch batch-1 latency at LR 64²
and 256², and the `srstudy bench` loop (p50/p90, images/s, energy per image where a power
sensor is readable) for onnxruntime and for PyTorch on each device.

    python benchmarks/bench_export.py --checkpoint ../shared/data/checkpoints/DVMSR.pth \
        --student-preset litesr_student --image ../shared/data/benchmarks/Set5/LR_bicubic/X4/img_001x4.png \
        --devices cpu --out benchmarks/results/export_cpu.json
    # H100 (benchmarks/gpu/issue7.sh): --devices cpu,cuda --backends chunked,cuda

A student given as `--student-preset` has random weights (seeded): latency, graph size and
parity do not depend on training; `--student PATH` takes a trained one (e.g. the Pareto-best
trial's `student/student.pth`).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from srstudy.deploy.bench import run_benchmark, timed_calls
from srstudy.deploy.export import check_parity, parity_image
from srstudy.deploy.onnx import export_onnx, graph_stats
from srstudy.deploy.runtime import best_providers, cpu_name, ort_session, run_session
from srstudy.measure.energy import energy_meter
from srstudy.measure.timing import device_sync, time_ms
from srstudy.models.dvmsr import DVMSR, load_checkpoint, preset
from srstudy.models.scan import resolve_backend


def _stats(times: list[float]) -> dict:
    return {"median_ms": statistics.median(times), "p90_ms": float(np.percentile(times, 90)),
            "min_ms": min(times), "times_ms": [round(t, 3) for t in times]}


def torch_bench(model: DVMSR, device: torch.device, backend: str, size: int, samples: int, warmup: int) -> dict:
    """The `srstudy bench` loop for PyTorch: p50/p90/mean, images/s, NVML energy on a GPU."""
    net = model.to(device).eval().set_scan_backend(backend)
    x = torch.rand(1, 3, size, size, device=device, generator=None)
    sync = device_sync(device)
    with torch.no_grad():
        for _ in range(warmup):
            net(x)
        sync()
        lat, seconds, e = timed_calls(lambda: net(x), samples=samples, meter=energy_meter(device=device), sync=sync)
    out = {"runtime": "pytorch", "device": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
           "scan_backend": backend, "input": f"1x3x{size}x{size}", "samples": samples,
           "latency_p50_ms": float(np.percentile(lat, 50)), "latency_p90_ms": float(np.percentile(lat, 90)),
           "latency_mean_ms": float(np.mean(lat)), "images_per_s": samples / seconds}
    if e.energy_j is not None:
        out.update(avg_power_w=e.avg_power_w, idle_power_w=e.idle_power_w, energy_per_image_j=e.energy_j / samples,
                   energy_source=e.energy_source)
        if e.idle_power_w is not None:
            out["dynamic_power_w"] = e.avg_power_w - e.idle_power_w
            out["dynamic_energy_per_image_j"] = out["dynamic_power_w"] * e.seconds / samples
    else:
        out["energy_reason"] = e.reason
    return out


def measure(name: str, model: DVMSR, source: str, args, work: Path) -> dict:
    print(f"== {name}: {source}", flush=True)
    model = model.cpu().float().eval()
    res: dict = {"source": source, "params": int(model.param_count()), "config": model.cfg.to_dict()}
    t0 = time.perf_counter()
    path = export_onnx(model, work / f"{name}.onnx")
    res["export_s"] = time.perf_counter() - t0
    g = graph_stats(path)
    g["op_counts"] = dict(list(g["op_counts"].items())[:12])
    res["graph"] = g
    res["mixers"] = model.cfg.n_groups * model.cfg.blocks_per_group
    res["onnx_bytes"] = path.stat().st_size
    real = parity_image(args.image, scale=model.cfg.scale)
    res["parity"] = check_parity(model, ort_session(path), real=real)
    p16 = export_onnx(model, work / f"{name}_fp16.onnx", fp16=True)
    res["parity_fp16"] = check_parity(model, ort_session(p16), real=real)
    res["onnx_fp16_bytes"] = p16.stat().st_size
    print(f"   {g['nodes']} nodes ({g['nodes_non_constant']} besides Constant), export {res['export_s']:.1f} s; "
          f"max |diff| fp32 {max(v['max_abs_diff'] for v in res['parity'].values()):.2e}, "
          f"fp16 {max(v['max_abs_diff'] for v in res['parity_fp16'].values()):.2e}", flush=True)

    rows = []
    providers = best_providers()
    sessions = {p: ort_session(path, [p] if p == "CPUExecutionProvider" else [p, "CPUExecutionProvider"])
                for p in providers}
    for s in args.sizes:
        x = np.random.default_rng(s).random((1, 3, s, s), dtype=np.float32)
        for p, sess in sessions.items():
            used = sess.get_providers()[0]
            t = time_ms(lambda: run_session(sess, x), repeats=args.repeats, warmup=args.warmup)
            rows.append({"lr": f"{s}x{s}", "side": "onnxruntime", "provider": used, **_stats(t)})
            print(f"   LR {s}²  onnxruntime {used:<22} {rows[-1]['median_ms']:9.2f} ms", flush=True)
        for dev in args.devices:
            device = torch.device(dev)
            for b in args.backends:
                try:
                    backend = resolve_backend(b, device)
                except RuntimeError as e:
                    rows.append({"lr": f"{s}x{s}", "side": "pytorch", "device": dev, "scan_backend": b, "skipped": str(e)})
                    continue
                net = DVMSR(model.cfg)
                net.load_state_dict(model.state_dict())
                net = net.to(device).eval().set_scan_backend(backend)
                xt = torch.from_numpy(x).to(device)
                sync = device_sync(device)
                with torch.no_grad():
                    t = time_ms(lambda: net(xt), repeats=args.repeats, warmup=args.warmup, sync=sync)
                rows.append({"lr": f"{s}x{s}", "side": "pytorch", "device": dev, "scan_backend": backend, **_stats(t)})
                print(f"   LR {s}²  pytorch {dev}/{backend:<16} {rows[-1]['median_ms']:9.2f} ms", flush=True)
    res["latency"] = rows

    bench = []
    if args.bench_samples:
        r = run_benchmark(path.read_bytes(), samples=args.bench_samples, size=args.bench_size, warmup=args.warmup,
                          idle_s=2.0)
        bench.append({**r.summary(), "notes": r.notes})
        for dev in args.devices:
            for b in args.backends:
                try:
                    backend = resolve_backend(b, torch.device(dev))
                except RuntimeError:
                    continue
                net = DVMSR(model.cfg)
                net.load_state_dict(model.state_dict())
                bench.append(torch_bench(net, torch.device(dev), backend, args.bench_size, args.bench_samples,
                                         args.warmup))
        for b in bench:
            e = b.get("energy_per_image_j")
            print(f"   bench {b['runtime']:<11} {b.get('provider') or b.get('scan_backend'):<22} p50 "
                  f"{b['latency_p50_ms']:8.2f} ms, {b['images_per_s']:8.2f} img/s, "
                  f"{'%.4f J/img' % e if e is not None else 'energy n/a'}", flush=True)
    res["bench"] = bench
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", help="DVMSR (or any) checkpoint, e.g. the official DVMSR.pth")
    ap.add_argument("--student", help="a student checkpoint (srstudy format)")
    ap.add_argument("--student-preset", default=None, help="else a preset with random weights, e.g. litesr_student")
    ap.add_argument("--image", help="a real LR image for the parity check (default: scikit-image's astronaut)")
    ap.add_argument("--sizes", default="64,256")
    ap.add_argument("--devices", default="cpu", help="PyTorch devices, e.g. cpu,cuda")
    ap.add_argument("--backends", default="chunked", help="PyTorch scan backends, e.g. chunked,cuda")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--bench-samples", type=int, default=100, help="the bench loop's samples (0: skip)")
    ap.add_argument("--bench-size", type=int, default=64)
    ap.add_argument("--workdir", default="/tmp/srstudy-bench-export")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    args.sizes = [int(s) for s in args.sizes.split(",")]
    args.devices = [d for d in args.devices.split(",") if d]
    args.backends = [b for b in args.backends.split(",") if b]
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)

    import onnx
    import onnxruntime as ort

    out = {"machine": {"cpu": cpu_name(), "platform": platform.platform(), "torch": torch.__version__,
                       "onnx": onnx.__version__, "onnxruntime": ort.__version__,
                       "onnxruntime_providers": ort.get_available_providers(), "torch_threads": torch.get_num_threads(),
                       "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
                       "loadavg_start": os.getloadavg()},
           "settings": {k: v for k, v in vars(args).items() if k not in ("out", "workdir")}, "models": {}}
    models = []
    if args.checkpoint:
        models.append(("dvmsr", load_checkpoint(args.checkpoint), f"checkpoint {Path(args.checkpoint).name}"))
    if args.student:
        models.append(("student", load_checkpoint(args.student), f"checkpoint {args.student}"))
    elif args.student_preset:
        torch.manual_seed(0)
        models.append(("student", DVMSR(preset(args.student_preset)),
                       f"preset {args.student_preset}, random weights (seed 0)"))
    t0 = time.perf_counter()
    for name, model, source in models:
        out["models"][name] = measure(name, model, source, args, work)
    out["machine"]["loadavg_end"] = os.getloadavg()
    out["wall_s"] = time.perf_counter() - t0
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"wrote {args.out} ({out['wall_s']:.0f} s)")


if __name__ == "__main__":
    main()

"""DVMSR (official topology) batch-1 inference time per selective-scan backend, one run.

    python benchmarks/bench_dvmsr_inference.py --device cuda --sizes 64,256 \
        --backends chunked,triton,cuda,reference --out benchmarks/results/dvmsr_inference_h100.json

`reference` is the issue-8 reference network (benchmarks/reference_net.py: mamba_ssm.Mamba mixers,
PyTorch LayerNorms) with the same weights; `<backend>_vs_reference_ratio_lr<s>` compares to it.

`--cuda-graphs` also times each backend's forward replayed from a CUDA graph
(`srstudy.models.cuda_graph.capture_forward`, rows `<backend>+graph`, with the largest
|graph − eager| difference per size): batch-1 inference is bound by launching kernels.
"""
from __future__ import annotations

import argparse
import json

import torch

from srstudy.measure.inference import resolve_device
from srstudy.models.dvmsr import DVMSR, preset
from srstudy.models.scan import resolve_backend
from timing import median_ms


def package_version(package: str) -> str | None:
    """The installed version of `package`, or None when it is not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package.replace("_", "-"))
    except PackageNotFoundError:
        return None


def time_graphed(model, x: torch.Tensor, name: str, size: int, out: dict, args) -> None:
    """`<name>+graph` row: the forward captured into a CUDA graph for `x`'s shape, timed like
    the eager one, and its largest difference from the eager output (a capture that fails is
    recorded with its error, not hidden)."""
    from srstudy.models.cuda_graph import capture_forward

    row = out["times_ms"].setdefault(f"{name}+graph", {})
    try:
        run = capture_forward(model, x, warmup=max(args.warmup, 1))
        with torch.no_grad():
            diff = (run(x).clone() - model(x)).abs().max().item()
        out.setdefault("graph_max_abs_diff_vs_eager", {})[f"{name}_lr{size}"] = diff
        row[f"lr{size}"] = median_ms(lambda: run(x), x.device, args.repeats, args.warmup)
    except Exception as e:  # noqa: BLE001 — recorded in the results: which backend could not be captured, and why
        row[f"lr{size}"] = f"capture failed: {type(e).__name__}: {e}"[:300]
    print(f"{name}+graph", size, row[f"lr{size}"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--sizes", default="64,256")
    ap.add_argument("--backends", default="chunked,triton,cuda")
    ap.add_argument("--preset", default="dvmsr")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--cuda-graphs", action="store_true", help="also time each backend replayed from a CUDA graph")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    device = resolve_device(args.device)
    torch.manual_seed(0)
    model = DVMSR(preset(args.preset)).to(device).eval()
    out = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
           "torch": torch.__version__, "triton": package_version("triton"), "mamba_ssm": package_version("mamba_ssm"),
           "preset": args.preset, "times_ms": {}}
    if args.cuda_graphs and device.type != "cuda":
        out["cuda_graphs"] = f"not timed: CUDA graphs need a CUDA device, this run is on {device}"
        print(out["cuda_graphs"])
    x_check = torch.rand(1, 3, 48, 40, device=device)
    y_check = {}
    srstudy_model = model
    for name in args.backends.split(","):
        try:
            if name == "reference":  # same weights: mamba_ssm's Mamba keeps the mixer's parameter names
                from reference_net import reference_dvmsr

                model = reference_dvmsr(preset(args.preset)).to(device).eval()
                model.load_state_dict(srstudy_model.state_dict())
            else:
                model = srstudy_model
                model.set_scan_backend(resolve_backend(name, device))
        except (RuntimeError, ImportError) as e:
            out["times_ms"][name] = {"skipped": f"{type(e).__name__}: {e}"[:300]}
            continue
        out["times_ms"][name] = {}
        with torch.no_grad():
            y_check[name] = model(x_check)
        for s in (int(x) for x in args.sizes.split(",")):
            x = torch.rand(1, 3, s, s, device=device)
            with torch.no_grad():
                try:
                    out["times_ms"][name][f"lr{s}"] = median_ms(lambda: model(x), device, args.repeats, args.warmup)
                except torch.OutOfMemoryError as e:
                    out["times_ms"][name][f"lr{s}"] = f"OOM: {e}"[:200]
                    torch.cuda.empty_cache()
            print(name, s, out["times_ms"][name][f"lr{s}"])
            if args.cuda_graphs and device.type == "cuda":
                time_graphed(model, x, name, s, out, args)
    if "chunked" in y_check:  # same network, same input: every backend's output vs chunked's
        out["max_abs_diff_vs_chunked"] = {n: (y - y_check["chunked"]).abs().max().item()
                                          for n, y in y_check.items() if n != "chunked"}
    t = out["times_ms"]
    for mine, other in (("chunked", "cuda"), ("triton", "cuda"), ("triton", "chunked"), ("triton", "reference"),
                        ("cuda", "reference"), ("triton+graph", "reference"), ("triton+graph", "reference+graph"),
                        ("triton+graph", "triton"), ("cuda+graph", "reference+graph")):
        for s in args.sizes.split(","):
            a, b = t.get(mine, {}).get(f"lr{s}"), t.get(other, {}).get(f"lr{s}")
            if isinstance(a, float) and isinstance(b, float):
                out[f"{mine}_vs_{other}_ratio_lr{s}"] = a / b
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()

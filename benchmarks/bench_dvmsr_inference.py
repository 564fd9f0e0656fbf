"""DVMSR (official topology) batch-1 inference time per selective-scan backend, one run.

    python benchmarks/bench_dvmsr_inference.py --device cuda --sizes 64,256 \
        --backends chunked,triton,cuda,reference --out benchmarks/results/dvmsr_inference_h100.json

`reference` is the issue-8 reference network (benchmarks/reference_net.py: mamba_ssm.Mamba mixers,
PyTorch LayerNorms) with the same weights; `<backend>_vs_reference_ratio_lr<s>` compares to it.

`--cuda-graphs` also times each backend's forward replayed from a CUDA graph
(`srstudy.models.cuda_graph.capture_forward`, rows `<backend>+graph`, with the largest
|graph − eager| difference per size): batch-1 inference is bound by launching kernels.

Batch-1 eager forwards are bound by the host, whose speed drifts over seconds: the rows are timed
in turns, `--rounds` times `--repeats` forwards each, and each row's median is over all of them.
"""
from __future__ import annotations

import argparse
import copy
import functools
import json
import statistics

import torch

from srstudy.measure.inference import resolve_device
from srstudy.models.dvmsr import DVMSR, preset
from srstudy.measure.timing import device_sync, time_ms
from srstudy.models.scan import resolve_backend


def package_version(package: str) -> str | None:
    """The installed version of `package`, or None when it is not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package.replace("_", "-"))
    except PackageNotFoundError:
        return None


def build_models(args, device: torch.device, out: dict) -> dict[str, torch.nn.Module]:
    """One network per backend, all with the same weights: srstudy's on each scan backend (its own
    copy, so the backends can be timed in turns) and the mamba_ssm reference. A backend that cannot
    run here is recorded as skipped, with why."""
    torch.manual_seed(0)
    srstudy_model = DVMSR(preset(args.preset)).to(device).eval()
    models = {}
    for name in args.backends.split(","):
        try:
            if name == "reference":  # same weights: mamba_ssm's Mamba keeps the mixer's parameter names
                from reference_net import reference_dvmsr

                model = reference_dvmsr(preset(args.preset)).to(device).eval()
                model.load_state_dict(srstudy_model.state_dict())
            else:
                model = copy.deepcopy(srstudy_model).set_scan_backend(resolve_backend(name, device))
        except (RuntimeError, ImportError) as e:
            out["times_ms"][name] = {"skipped": f"{type(e).__name__}: {e}"[:300]}
            continue
        models[name] = model
    return models


def forwards(models: dict, sizes: list[int], device: torch.device, args, out: dict) -> dict[str, object]:
    """The callables to time, by row and size: each eager forward, and with `--cuda-graphs` each forward
    captured into a CUDA graph (`<backend>+graph`; a capture that fails is recorded with its error,
    not hidden, and the largest |graph − eager| difference is recorded per size)."""
    from srstudy.models.cuda_graph import capture_forward

    fns = {}
    for name, model in models.items():
        for s in sizes:
            x = torch.rand(1, 3, s, s, device=device, generator=torch.Generator(device).manual_seed(s))
            fns[(name, s)] = functools.partial(model, x)
            if not (args.cuda_graphs and device.type == "cuda"):
                continue
            try:
                run = capture_forward(model, x, warmup=max(args.warmup, 1))
                with torch.no_grad():
                    diff = (run(x).clone() - model(x)).abs().max().item()
                out.setdefault("graph_max_abs_diff_vs_eager", {})[f"{name}_lr{s}"] = diff
                fns[(f"{name}+graph", s)] = functools.partial(run, x)
            except Exception as e:  # noqa: BLE001 — recorded in the results: which backend could not be captured, and why
                out["times_ms"].setdefault(f"{name}+graph", {})[f"lr{s}"] = f"capture failed: {type(e).__name__}: {e}"[:300]
    return fns


def add_network_args(ap: argparse.ArgumentParser, *, device: str, sizes: str, backends: str) -> None:
    """The options naming what to run (device, LR sizes, backends, preset), shared with profile_inference.py."""
    ap.add_argument("--device", default=device)
    ap.add_argument("--sizes", default=sizes, help="LR sizes (square), comma-separated")
    ap.add_argument("--backends", default=backends, help="scan backends and/or 'reference', comma-separated")
    ap.add_argument("--preset", default="dvmsr")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_network_args(ap, device="auto", sizes="64,256", backends="chunked,triton,cuda")
    ap.add_argument("--repeats", type=int, default=20, help="timed forwards per row and size in each round")
    ap.add_argument("--rounds", type=int, default=5,
                    help="rounds over every row in turn (the host's speed drifts; each row's median is over all rounds)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--cuda-graphs", action="store_true", help="also time each backend replayed from a CUDA graph")
    ap.add_argument("--ln-aten-max-rows", type=int, default=None,
                    help="override models/norm_triton.py's ATEN_INFERENCE_MAX_ROWS (LayerNorms without autograd over "
                         "at most this many rows take PyTorch's kernel): 0 = the Triton norm always, 2**62 = never")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    device = resolve_device(args.device)
    from srstudy.models import norm_triton

    if args.ln_aten_max_rows is not None:
        norm_triton.ATEN_INFERENCE_MAX_ROWS = args.ln_aten_max_rows
    sizes = [int(v) for v in args.sizes.split(",")]
    out = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
           "torch": torch.__version__, "triton": package_version("triton"), "mamba_ssm": package_version("mamba_ssm"),
           "preset": args.preset, "ln_aten_inference_max_rows": norm_triton.ATEN_INFERENCE_MAX_ROWS,
           "ln_aten_max_rows_overridden": args.ln_aten_max_rows is not None, "rounds": args.rounds, "repeats_per_round": args.repeats, "times_ms": {}}
    if args.cuda_graphs and device.type != "cuda":
        out["cuda_graphs"] = f"not timed: CUDA graphs need a CUDA device, this run is on {device}"
        print(out["cuda_graphs"])
    models = build_models(args, device, out)
    x_check = torch.rand(1, 3, 48, 40, device=device)
    with torch.no_grad():
        y_check = {name: model(x_check) for name, model in models.items()}
        fns = forwards(models, sizes, device, args, out)
        samples = {key: [] for key in fns}
        for _ in range(args.rounds):  # every row in turn, so a slow spell of the host hits them all
            for key, fn in fns.items():
                try:
                    samples[key] += time_ms(fn, repeats=args.repeats, warmup=args.warmup, sync=device_sync(device))
                except torch.OutOfMemoryError as e:
                    samples[key] = f"OOM: {e}"[:200]
                    torch.cuda.empty_cache()
    for (name, s), got in samples.items():
        out["times_ms"].setdefault(name, {})[f"lr{s}"] = statistics.median(got) if isinstance(got, list) else got
        print(name, s, out["times_ms"][name][f"lr{s}"])
    if "chunked" in y_check:  # same network, same input: every backend's output vs chunked's
        out["max_abs_diff_vs_chunked"] = {n: (y - y_check["chunked"]).abs().max().item()
                                          for n, y in y_check.items() if n != "chunked"}
    t = out["times_ms"]
    for mine, other in (("chunked", "cuda"), ("triton", "cuda"), ("triton", "chunked"), ("triton", "reference"),
                        ("cuda", "reference"), ("triton+graph", "reference"), ("triton+graph", "reference+graph"),
                        ("triton+graph", "triton"), ("cuda+graph", "reference+graph")):
        for s in sizes:
            a, b = t.get(mine, {}).get(f"lr{s}"), t.get(other, {}).get(f"lr{s}")
            if isinstance(a, float) and isinstance(b, float):
                out[f"{mine}_vs_{other}_ratio_lr{s}"] = a / b
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()

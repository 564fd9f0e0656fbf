"""The selective scan at the training shapes, one run: mamba_ssm vs srstudy's Triton tiles (issue 15).

    python benchmarks/bench_scan_tiles.py --out scan_tiles.json [--extra name=path/to/scan_module.py ...]

Shapes: B 128 × L 4096 × D ∈ {64 (student), 120 (teacher)}, N 16, Δ softplus, with D, z and Δ bias
(the mixer's call). For each tile config of `models/scan_triton.py` ((tokens, channels, warps) of
the forward / backward kernels), and for mamba_ssm's CUDA kernel when it imports: the median ms
of the forward and of forward + backward (`triton.testing.do_bench`), the backward as their
difference, and the max relative error of y and of every gradient vs mamba_ssm (else vs the
first row). `--extra` times other modules with the same `selective_scan_triton` entry point (e.g.
an earlier version of the kernels). The first pass times every tile at D 64 fp32; the
`--keep` fastest (forward + backward) then run at every shape and dtype. `--configs` instead times
the shipped tiles under other ``CONFIG`` entries (the backward's pipelining stages, its register
cap) at every shape and dtype. Also the causal conv1d + SiLU (nn.Conv1d + F.silu vs the Triton
kernel) at (128, 64, 4096).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import traceback

import torch
import torch.nn.functional as F
import triton
from triton.testing import do_bench

from bench_dvmsr_inference import package_version
from srstudy.models import scan as S
from srstudy.models import scan_triton as ST

TILES = [  # forward / backward (T, G, warps[, token tiles]); the backward's T a multiple of the forward's
    ((32, 1, 1), (32, 1, 1)), ((32, 1, 1, 1), (32, 1, 1, 1)), ((16, 1, 1), (16, 1, 1)),
    ((16, 1, 1, 1), (16, 1, 1, 1)), ((32, 1, 1), (64, 1, 2)), ((16, 1, 1), (32, 1, 1, 1)),
    ((32, 1, 1, 1), (32, 1, 1)), ((32, 1, 2), (32, 1, 2)), ((16, 1, 2), (16, 1, 2)), ((32, 2, 1), (32, 1, 1, 1)),
]


def inputs(Bt, Dm, L, N, dtype, seed=0):
    """Mamba-like inputs on the GPU (contiguous (B, D, L) / (B, N, L)), as the mixer passes them."""
    g = torch.Generator(device="cuda").manual_seed(seed)
    r = lambda *s: torch.randn(*s, device="cuda", generator=g)
    x = dict(u=r(Bt, Dm, L).to(dtype), delta=(r(Bt, Dm, L) * 0.5).to(dtype),
             A=-(torch.rand(Dm, N, device="cuda", generator=g) * 1.9 + 0.1), B=r(Bt, N, L).to(dtype),
             C=r(Bt, N, L).to(dtype), D=r(Dm), z=r(Bt, Dm, L).to(dtype), delta_bias=r(Dm) * 0.5 - 2.0)
    return x


def time_scan(fn, x, gy):
    """(fwd ms, fwd+bwd ms, y, grads) of fn on inputs x (median of do_bench)."""
    names = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")
    with torch.no_grad():
        fwd = do_bench(lambda: fn(*(x[k] for k in names), True), warmup=20, rep=200, return_mode="median")
    leaves = {k: x[k].detach().clone().requires_grad_() for k in names}

    def fb():
        fn(*(leaves[k] for k in names), True).backward(gy)
    fwdbwd = do_bench(fb, warmup=20, rep=300, grad_to_none=list(leaves.values()), return_mode="median")
    for v in leaves.values():
        v.grad = None
    y = fn(*(leaves[k] for k in names), True)
    y.backward(gy)
    return fwd, fwdbwd, y.detach().float(), {k: v.grad.float() for k, v in leaves.items()}


def rel(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def triton_with(tiles, module=ST):
    def fn(*a):
        module.CONFIG["fwd"], module.CONFIG["bwd"] = tiles
        return module.selective_scan_triton(*a)
    return fn


def triton_config(overrides: dict):
    """The shipped kernels with ``CONFIG`` entries `overrides` (e.g. ``{"bwd_stages": {"default": 2}}``)
    in force for the call, the shipped values restored after it."""
    def fn(*a):
        saved = {k: ST.CONFIG[k] for k in overrides}
        ST.CONFIG.update(overrides)
        try:
            return ST.selective_scan_triton(*a)
        finally:
            ST.CONFIG.update(saved)
    return fn


def run_shape(rows, Bt, Dm, L, N, dtype, impls, report):
    x = inputs(Bt, Dm, L, N, dtype)
    gy = torch.randn(Bt, Dm, L, device="cuda", generator=torch.Generator(device="cuda").manual_seed(1)).to(dtype)
    base = None
    for name, fn in impls:
        key = f"D{Dm}/{str(dtype).split('.')[-1]}/{name}"
        try:
            fwd, fb, y, g = time_scan(fn, x, gy)
            res = {"fwd_ms": fwd, "fwdbwd_ms": fb, "bwd_ms": fb - fwd}
            if base is None:
                base = (name, y, g)
            else:
                res["err_vs"] = base[0]
                res["y_rel"] = rel(y, base[1])
                res["grad_rel_max"] = max(rel(g[k], base[2][k]) for k in g)
        except Exception as e:  # a tile that does not compile or fails: recorded, the others still run
            traceback.print_exc()
            res = {"error": f"{type(e).__name__}: {e}"[:300]}
        report["scan"][key] = res
        rows.append((key, res))
        print(key, json.dumps(res), flush=True)
        torch.cuda.empty_cache()


def bench_conv(report):
    from srstudy.models.conv_triton import causal_conv1d_silu

    for dtype in (torch.float32, torch.bfloat16):
        x = torch.randn(128, 64, 4096, device="cuda").to(dtype)
        w, b = torch.randn(64, 1, 4, device="cuda"), torch.randn(64, device="cuda")
        for name, fn in (("nn.Conv1d+silu", lambda x, w, b: F.silu(F.conv1d(x, w.to(x.dtype), b.to(x.dtype),
                                                                             padding=3, groups=64)[..., :4096])),
                         ("triton", causal_conv1d_silu)):
            with torch.no_grad():
                fwd = do_bench(lambda: fn(x, w, b), return_mode="median")
            leaves = [t.clone().requires_grad_() for t in (x, w, b)]
            gy = torch.randn_like(x)
            fb = do_bench(lambda: fn(*leaves).backward(gy), grad_to_none=leaves, return_mode="median")
            key = f"conv/{str(dtype).split('.')[-1]}/{name}"
            report["conv"][key] = {"fwd_ms": fwd, "fwdbwd_ms": fb}
            print(key, report["conv"][key], flush=True)


def _mamba_ssm_version() -> str:
    """mamba-ssm's installed version, or why its kernel cannot run here."""
    why = S._mamba_ssm_fn()[1]
    return f"unavailable: {why}" if why else (package_version("mamba_ssm") or "imports, version unknown")


def load_module(name, path):
    spec = importlib.util.spec_from_file_location(f"scan_variant_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--extra", action="append", default=[], help="name=path of another scan module to time")
    ap.add_argument("--keep", type=int, default=3, help="tiles kept for the other shapes and dtypes")
    ap.add_argument("--only-mamba", action="store_true", help="time mamba_ssm alone (the tiles were timed before)")
    ap.add_argument("--no-conv", action="store_true")
    ap.add_argument("--configs", default="", help="JSON list of CONFIG overrides of the shipped kernels, each "
                    "timed at every shape and dtype beside the shipped CONFIG (skips the tile sweep), e.g. "
                    "'[{\"bwd_stages\": {\"default\": 2}}]'")
    args = ap.parse_args()
    report = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
              "mamba_ssm": _mamba_ssm_version(), "shapes": "B 128, L 4096, N 16, D 64 / 120",
              "scan": {}, "conv": {}}
    mamba = [("mamba_ssm", S.selective_scan_cuda)] if S._mamba_ssm_fn()[0] is not None else []
    rows = []
    if args.configs:
        report["configs"] = json.loads(args.configs)
        impls = mamba + [("triton_default", ST.selective_scan_triton)]
        impls += [(f"triton{json.dumps(o, separators=(',', ':'))}", triton_config(o)) for o in report["configs"]]
        for Dm in (64, 120):
            for dtype in (torch.float32, torch.bfloat16):
                run_shape(rows, 128, Dm, 4096, 16, dtype, impls, report)
    elif args.only_mamba:
        for Dm in (64, 120):
            for dtype in (torch.float32, torch.bfloat16):
                run_shape(rows, 128, Dm, 4096, 16, dtype, mamba + [("triton_default", ST.selective_scan_triton)],
                          report)
    else:
        extras = []
        for spec in args.extra:
            name, path = spec.split("=", 1)
            mod = load_module(name, path)
            extras.append((name, mod.selective_scan_triton if not hasattr(mod, "CONFIG") else None, mod))
        impls = mamba + [(n, f) for n, f, m in extras if f is not None]
        for n, f, m in extras:  # modules with tile configs: the first sweep tiles
            if f is None:
                impls += [(f"{n}{list(t)}", triton_with(t, m)) for t in TILES[:3]]
        impls += [(f"triton{list(t)}", triton_with(t)) for t in TILES]
        run_shape(rows, 128, 64, 4096, 16, torch.float32, impls, report)
        timed = [(k.split("/")[-1], r["fwdbwd_ms"]) for k, r in rows if "fwdbwd_ms" in r]
        best = [n for n, _ in sorted(timed, key=lambda kv: kv[1]) if n != "mamba_ssm"][:args.keep]
        report["kept"] = best
        keep = mamba + [(n, f) for n, f in impls if n in best]
        run_shape(rows, 128, 64, 4096, 16, torch.bfloat16, keep, report)
        for dtype in (torch.float32, torch.bfloat16):
            run_shape(rows, 128, 120, 4096, 16, dtype, keep, report)
    if not args.no_conv:
        bench_conv(report)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=1)
    print(f"\n{'shape/dtype/impl':58s} {'fwd':>8s} {'bwd':>8s} {'fwd+bwd':>8s}  err")
    for key, r in rows:
        if "error" in r:
            print(f"{key:58s} {r['error'][:60]}")
        else:
            print(f"{key:58s} {r['fwd_ms']:8.3f} {r['bwd_ms']:8.3f} {r['fwdbwd_ms']:8.3f}  "
                  f"{max(r.get('y_rel', 0), r.get('grad_rel_max', 0)):.1e}")


if __name__ == "__main__":
    main()

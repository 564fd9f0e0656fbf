"""DVMSR's published ×4 numbers re-measured: the official checkpoint and plain bicubic.

Writes one JSON with, per set, our PSNR/SSIM, the paper's, and the differences; Set14 is
scored under both grey conventions (img_003 is single-channel; see README).

    python benchmarks/reproduce_published.py --data-root ../shared/data/benchmarks \
        --checkpoint ../shared/data/checkpoints/DVMSR.pth --device cpu \
        --out benchmarks/results/reproduce_published_cpu.json
"""
from __future__ import annotations

import json
import time

import torch

from srstudy.measure.evaluate import bicubic_upscaler, evaluate, model_upscaler
from srstudy.models.scan import resolve_backend

from checkpoint_eval import checkpoint_eval_parser, open_checkpoint_and_sets

PAPER = {  # DVMSR Table 1, ×4
    "dvmsr": {"Set5": (32.19, 0.8955), "Set14": (28.61, 0.7823), "BSD100": (27.58, 0.7379)},
    "bicubic": {"Set5": (28.42, 0.8104), "Set14": (26.00, 0.7027), "BSD100": (25.96, 0.6675)},
}


def summarise(res: dict, paper: dict) -> dict:
    out = {}
    for name, v in res.items():
        p = paper[name]
        out[name] = {"psnr": v["psnr"], "ssim": v["ssim"], "n": v["n"], "seconds": v["seconds"],
                     "paper_psnr": p[0], "paper_ssim": p[1],
                     "delta_psnr": v["psnr"] - p[0], "delta_ssim": v["ssim"] - p[1]}
    return out


def main() -> None:
    ap = checkpoint_eval_parser(__doc__, sets="Set5,Set14,BSD100", device="cpu", out_required=True)
    ap.add_argument("--backend", default="chunked")
    args = ap.parse_args()
    names = args.sets.split(",")
    device, model, sets, device_name = open_checkpoint_and_sets(args)
    backend = resolve_backend(args.backend, device)
    model.set_scan_backend(backend)
    result = {
        "device": device_name,
        "torch": torch.__version__, "backend": backend, "checkpoint": args.checkpoint,
        "protocol": "Y (BT.601), crop 4, SR rounded to uint8; grey img_003: rgb (BasicSR) unless noted",
    }
    t0 = time.perf_counter()
    dv = evaluate(model_upscaler(model, scale=4, device=device), sets)
    result["dvmsr"] = summarise(dv, PAPER["dvmsr"])
    result["dvmsr_seconds"] = time.perf_counter() - t0
    bic = evaluate(bicubic_upscaler(4), sets)
    result["bicubic"] = summarise(bic, PAPER["bicubic"])
    if "Set14" in names:
        s14 = [s for s in sets if s.name == "Set14"]
        result["dvmsr_set14_grey_raw"] = summarise(
            evaluate(model_upscaler(model, scale=4, device=device), s14, grey_convention="raw"), PAPER["dvmsr"])["Set14"]
        result["bicubic_set14_grey_raw"] = summarise(
            evaluate(bicubic_upscaler(4), s14, grey_convention="raw"), PAPER["bicubic"])["Set14"]
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    for k in ("dvmsr", "bicubic"):
        for s, v in result[k].items():
            print(f"{k:8s} {s:7s} {v['psnr']:.3f} dB ({v['delta_psnr']:+.3f})  SSIM {v['ssim']:.4f} ({v['delta_ssim']:+.4f})")
    for k in ("dvmsr_set14_grey_raw", "bicubic_set14_grey_raw"):
        if k in result:
            print(f"{k}: {result[k]['psnr']:.3f} dB, SSIM {result[k]['ssim']:.4f}")


if __name__ == "__main__":
    main()

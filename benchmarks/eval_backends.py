"""Score one checkpoint with several selective-scan backends on the same device, in one run.

Shows that the fast paths compute the same network: mean Y-PSNR/SSIM per set per backend,
the largest PSNR difference to the first backend, and the wall time of each evaluation.

    python benchmarks/eval_backends.py --checkpoint DVMSR.pth --data-root DIR \
        --sets Set5 --backends chunked,cuda --device cuda --out results/eval_backends.json
"""
from __future__ import annotations

import json
import time

import torch

from srstudy.measure.evaluate import evaluate, model_upscaler
from srstudy.models.scan import resolve_backend

from checkpoint_eval import checkpoint_eval_parser, open_checkpoint_and_sets


def main() -> None:
    ap = checkpoint_eval_parser(__doc__, sets="Set5", device="auto", out_required=False)
    ap.add_argument("--backends", default="chunked,cuda")
    args = ap.parse_args()

    device, model, sets, device_name = open_checkpoint_and_sets(args)
    out: dict = {
        "checkpoint": args.checkpoint,
        "device": device_name,
        "torch": torch.__version__,
        "results": {},
    }
    for name in args.backends.split(","):
        try:
            resolved = resolve_backend(name, device)
        except RuntimeError as e:
            out["results"][name] = {"skipped": str(e)}
            print(f"{name}: skipped ({e})")
            continue
        model.set_scan_backend(resolved)
        start = time.perf_counter()
        res = evaluate(model_upscaler(model, scale=model.cfg.scale, device=device), sets)
        out["results"][name] = {
            "backend": resolved,
            "seconds": time.perf_counter() - start,
            "sets": {k: {"psnr": v["psnr"], "ssim": v["ssim"], "n": v["n"], "per_image": v["per_image"]} for k, v in res.items()},
        }
        print(name, {k: (round(v["psnr"], 4), round(v["ssim"], 4)) for k, v in res.items()})
    done = [r for r in out["results"].values() if "sets" in r]
    if len(done) > 1:
        first = done[0]["sets"]
        out["max_abs_psnr_diff_db"] = max(
            abs(r["sets"][s]["psnr"] - first[s]["psnr"]) for r in done[1:] for s in first
        )
        print("max |ΔPSNR| between backends:", out["max_abs_psnr_diff_db"])
    if args.out:
        with open(args.out, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()

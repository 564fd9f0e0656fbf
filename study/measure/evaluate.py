"""Scoring an upscaler on benchmark sets: mean Y-PSNR / SSIM per set, the papers' protocol.

Protocol (DVMSR and MambaLiteSR tables): SR output clipped to [0, 1] and rounded to uint8,
Y channel (BT.601, 16–235), `crop_border = scale`, HR mod-cropped to the scale. Grey
images (Set14 `img_003`) follow `grey_convention` (see `srstudy.measure.metrics.score_pair`):
"rgb" by default — BasicSR's reading — with "raw" giving the published bicubic figure.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from srstudy.data.benchmarks import BenchmarkSet
from srstudy.data.imresize import imresize

from .inference import super_resolve
from .metrics import GreyConvention, score_pair

Upscaler = Callable[[np.ndarray], np.ndarray]  # uint8 LR H×W×3 → float HR in [0, 1]

STANDARD_SETS = ("Set5", "Set14", "BSD100")


def bicubic_upscaler(scale: int) -> Upscaler:
    """Plain MATLAB-bicubic upscaling (float between passes), the papers' baseline."""

    def up(lr: np.ndarray) -> np.ndarray:
        return np.clip(imresize(lr.astype(np.float64), scale) / 255.0, 0.0, 1.0)

    return up


def model_upscaler(model: torch.nn.Module, *, scale: int, device: torch.device, tile: int | None = None) -> Upscaler:
    """Wrap a network as an upscaler of uint8 LR images (see `inference.super_resolve`)."""
    return lambda lr: super_resolve(model, lr, scale=scale, device=device, tile=tile)


def evaluate_set(
    upscaler: Upscaler,
    bench: BenchmarkSet,
    *,
    grey_convention: GreyConvention = "rgb",
    on_image: Callable[[str, float, float], None] | None = None,
) -> dict[str, Any]:
    """Mean PSNR/SSIM of one set: `{"psnr", "ssim", "n", "per_image", "seconds"}`."""
    per_image: dict[str, dict[str, float]] = {}
    start = time.perf_counter()
    for item in bench:
        sr = upscaler(item.lr)
        psnr, ssim = score_pair(sr, item.hr, scale=bench.scale, grey_convention=grey_convention, is_grey=item.is_grey)
        per_image[item.name] = {"psnr": psnr, "ssim": ssim}
        if on_image is not None:
            on_image(item.name, psnr, ssim)
    if not per_image:
        raise ValueError(f"benchmark set {bench.name!r} holds no images")
    return {
        "psnr": float(np.mean([v["psnr"] for v in per_image.values()])),
        "ssim": float(np.mean([v["ssim"] for v in per_image.values()])),
        "n": len(per_image),
        "per_image": per_image,
        "seconds": time.perf_counter() - start,
    }


BUNDLED_ROOT = "bundled"


def open_sets(root: str | Path, names: Iterable[str], *, scale: int) -> list[BenchmarkSet]:
    """Open `<root>/<name>` benchmark folders; a missing one is an error naming it.

    `root="bundled"` needs no download: one set, `bundled`, of scikit-image's validation
    photos (`srstudy.data.bundled.default_split`), LR made with MATLAB bicubic.
    """
    if str(root) == BUNDLED_ROOT:
        from srstudy.data.bundled import default_split

        return [BenchmarkSet.from_images(default_split()[1], scale=scale, name=BUNDLED_ROOT)]
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"--data-root {root} is not a folder (expected <root>/<Set>/HR)")
    return [BenchmarkSet(root, name, scale=scale) for name in names]


def evaluate(
    upscaler: Upscaler,
    sets: Iterable[BenchmarkSet],
    *,
    grey_convention: GreyConvention = "rgb",
    on_image: Callable[[str, str, float, float], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """Score an upscaler on several sets: `{set: {"psnr", "ssim", "n", …}}`."""
    results = {}
    for bench in sets:
        cb = None if on_image is None else (lambda name, p, s, _b=bench.name: on_image(_b, name, p, s))
        results[bench.name] = evaluate_set(upscaler, bench, grey_convention=grey_convention, on_image=cb)
    return results

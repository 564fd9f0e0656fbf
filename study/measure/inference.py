"""Running a trained network on whole images: device choice, tiling, memory errors."""
from __future__ import annotations

import numpy as np
import torch

from srstudy.data.images import to_tensor


def resolve_device(device: str | None) -> torch.device:
    """`auto`/None → cuda when available, else cpu; `cuda` without a GPU is an error."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device={device!r} was asked for but torch sees no CUDA GPU; use --device cpu")
    return dev


def to_image(t: torch.Tensor) -> np.ndarray:
    """(1, 3, H, W) float in [0, 1] → float64 H×W×3 in [0, 1] (clipped, not rounded)."""
    return t[0].clamp(0, 1).permute(1, 2, 0).double().cpu().numpy()


def _tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    if size <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, size - tile, stride))
    return starts + [size - tile]


@torch.no_grad()
def super_resolve(
    model: torch.nn.Module,
    lr: np.ndarray,
    *,
    scale: int,
    device: torch.device,
    tile: int | None = None,
    tile_overlap: int = 16,
) -> np.ndarray:
    """Upscale one uint8 H×W×3 LR image; returns float64 H·s×W·s×3 in [0, 1].

    With `tile`, the LR image is cut into overlapping tile×tile pieces whose outputs are
    averaged where they overlap (SwinIR-style). A Mamba scan sees the whole image as one
    sequence, so tiling changes the result slightly: it is for images too large for
    memory, and off by default. Running out of memory without it raises an error saying so.
    """
    x = to_tensor(lr, device)[None]  # (1, 3, H, W)
    if tile is None:
        try:
            return to_image(model(x))
        except (torch.OutOfMemoryError, MemoryError) as e:
            h, w = lr.shape[:2]
            raise MemoryError(
                f"out of memory super-resolving a {w}×{h} LR image on {device}; "
                f"retry with tiles, e.g. --tile 128 (tile_overlap {tile_overlap})"
            ) from e
    if tile <= tile_overlap:
        raise ValueError(f"tile ({tile}) must be larger than tile_overlap ({tile_overlap})")
    _, _, h, w = x.shape
    out = torch.zeros(1, 3, h * scale, w * scale, device=device)
    weight = torch.zeros_like(out)
    for top in _tile_starts(h, tile, tile_overlap):
        for left in _tile_starts(w, tile, tile_overlap):
            piece = model(x[..., top : top + tile, left : left + tile])
            sl = (..., slice(top * scale, top * scale + piece.shape[-2]), slice(left * scale, left * scale + piece.shape[-1]))
            out[sl] += piece
            weight[sl] += 1
    return to_image(out / weight)

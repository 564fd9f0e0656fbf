"""MATLAB-compatible bicubic ``imresize`` in plain numpy.

Why a re-implementation: the benchmark LR images (Set5/Set14/BSD100 ``LR_bicubic/X4``) were made by
MATLAB ``imresize(HR, 1/4, 'bicubic')``, and published PSNR/SSIM numbers assume that operator. PIL,
OpenCV and ``torch.nn.functional.interpolate`` differ from it (no antialiasing, other kernel,
other border), so training pairs made with them come from a different degradation.

What MATLAB does (and this module reproduces):

* cubic kernel with a = -0.5 (Keys), support 4;
* on downscaling (scale < 1) with antialiasing the kernel is stretched by 1/scale
  (``h(x) = scale * cubic(scale * x)``, support ``4 / scale``);
* output size ``ceil(in * scale)``; output pixel ``x`` (1-based) samples input position
  ``u = x / scale + 0.5 * (1 - 1 / scale)``; weights are normalised to sum to 1 per output pixel;
* separable: one 1-D pass per dimension, the dimension with the smaller scale first
  (MATLAB ``sort(scale)``; for equal scales rows = axis 0 first);
* for uint8 input each pass returns uint8, i.e. the first pass is rounded (half away from zero)
  and clipped to [0, 255] before the second pass;
* border: older MATLAB releases (the ones that made the shipped LR files) *replicate* edge
  pixels; newer releases mirror them (``border="symmetric"``, kept only for comparison).

Each 1-D pass is a dense ``(out, in)`` weight matrix applied with one matrix product, so a
480x320x3 image takes a few milliseconds.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

__all__ = ["imresize", "cubic", "resize_weights"]

Border = Literal["replicate", "symmetric"]


def cubic(x: np.ndarray) -> np.ndarray:
    """MATLAB's bicubic kernel (Keys, a = -0.5), evaluated elementwise on ``x`` (float64)."""
    ax = np.abs(x)
    ax2 = ax * ax
    ax3 = ax2 * ax
    return (1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1) + (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * (
        (ax > 1) & (ax <= 2)
    )


def resize_weights(
    in_len: int, out_len: int, scale: float, *, antialias: bool = True, border: Border = "replicate"
) -> np.ndarray:
    """Dense 1-D resampling matrix ``W`` (out_len, in_len), float64, so that ``out = W @ in``.

    Follows MATLAB ``imresize>contributions``; indices falling outside the image are folded back
    by ``border`` (replicate = clamp to the edge, symmetric = mirror), and the weights of
    repeated indices add up.
    """
    if in_len < 1 or out_len < 1:
        raise ValueError(f"resize_weights: lengths must be >= 1, got in_len={in_len}, out_len={out_len}")
    kernel_width = 4.0
    if scale < 1 and antialias:
        kernel_width = kernel_width / scale

        def h(t: np.ndarray) -> np.ndarray:
            return scale * cubic(scale * t)
    else:
        h = cubic
    x = np.arange(1, out_len + 1, dtype=np.float64)  # (out,) 1-based output coordinates
    u = x / scale + 0.5 * (1.0 - 1.0 / scale)  # (out,) input position in 1-based coordinates
    left = np.floor(u - kernel_width / 2.0)  # (out,)
    p = int(np.ceil(kernel_width)) + 2  # taps per output pixel
    idx = left[:, None] + np.arange(p)[None, :]  # (out, p) 1-based input indices
    w = h(u[:, None] - idx)  # (out, p)
    w = w / w.sum(axis=1, keepdims=True)
    idx0 = idx.astype(np.int64) - 1  # 0-based
    if border == "replicate":
        idx0 = np.clip(idx0, 0, in_len - 1)
    elif border == "symmetric":
        period = 2 * in_len  # aux = [0..n-1, n-1..0]
        m = np.mod(idx0, period)
        idx0 = np.where(m < in_len, m, period - 1 - m)
    else:
        raise ValueError(f"resize_weights: border must be 'replicate' or 'symmetric', got {border!r}")
    mat = np.zeros((out_len, in_len), dtype=np.float64)
    rows = np.broadcast_to(np.arange(out_len)[:, None], idx0.shape)
    np.add.at(mat, (rows, idx0), w)
    return mat


def _round_clip_uint8(a: np.ndarray) -> np.ndarray:
    """MATLAB double->uint8 conversion: clip to [0, 255], round half away from zero."""
    return np.floor(np.clip(a, 0.0, 255.0) + 0.5).astype(np.uint8)


def _resize_axis(img: np.ndarray, weights: np.ndarray, axis: int) -> np.ndarray:
    """Apply ``weights`` (out, in) along ``axis`` of ``img`` (float64); returns float64."""
    moved = np.moveaxis(img, axis, 0)  # (in, ...)
    flat = moved.reshape(moved.shape[0], -1)  # (in, rest)
    out = weights @ flat  # (out, rest)
    return np.moveaxis(out.reshape((weights.shape[0],) + moved.shape[1:]), 0, axis)


def imresize(
    img: np.ndarray,
    scale: float,
    *,
    round_between_passes: bool | None = None,
    antialias: bool = True,
    border: Border = "replicate",
) -> np.ndarray:
    """Resize ``img`` by ``scale`` exactly like MATLAB ``imresize(img, scale, 'bicubic')``.

    Args:
        img: (H, W) or (H, W, C) array. uint8 (values 0..255) or float (any range, typically
            0..255 or 0..1; no clipping is applied to float output).
        scale: resize factor, e.g. 0.25 for x4 downscaling, 4 for x4 upscaling. Output size is
            ``ceil(H * scale), ceil(W * scale)``.
        round_between_passes: round + clip the first 1-D pass to uint8 before the second pass,
            as MATLAB does for uint8 images. ``None`` (default) means True for uint8 input and
            False for float input.
        antialias: stretch the kernel when downscaling (MATLAB default: on).
        border: "replicate" (older MATLAB, which made the shipped benchmark LR) or
            "symmetric" (newer MATLAB).

    Returns:
        uint8 array for uint8 input (rounded half away from zero, clipped), else float64.
        Shape (ceil(H*scale), ceil(W*scale)[, C]).
    """
    arr = np.asarray(img)
    if arr.ndim not in (2, 3):
        raise ValueError(f"imresize: img must be (H, W) or (H, W, C), got shape {arr.shape}")
    if not np.isfinite(scale) or scale <= 0:
        raise ValueError(f"imresize: scale must be a positive finite number, got {scale!r}")
    is_uint8 = arr.dtype == np.uint8
    if not is_uint8 and not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(
            f"imresize: img dtype must be uint8 or float, got {arr.dtype}; convert with .astype(np.float64)"
        )
    if round_between_passes is None:
        round_between_passes = is_uint8
    h, w = arr.shape[:2]
    if h < 1 or w < 1:
        raise ValueError(f"imresize: the image is {h}x{w} (HxW); it needs at least 1 pixel on each side")
    out_hw = (int(np.ceil(h * scale)), int(np.ceil(w * scale)))
    # MATLAB resizes the dimension with the smallest scale first; equal scales -> rows (axis 0) first.
    out = arr.astype(np.float64)
    for n_pass, axis in enumerate((0, 1)):
        wmat = resize_weights(out.shape[axis], out_hw[axis], scale, antialias=antialias, border=border)
        out = _resize_axis(out, wmat, axis)
        if n_pass == 0 and round_between_passes:
            out = _round_clip_uint8(out).astype(np.float64)
    if is_uint8:
        return _round_clip_uint8(out)
    return out

"""Y-channel PSNR / SSIM exactly as the super-resolution literature reports them.

Conventions (the ones behind the published Set5/Set14/BSD100 tables, and BasicSR's
``calculate_psnr`` / ``calculate_ssim`` with ``test_y_channel=True``):

* both images are uint8 first (a float SR output in [0, 1] is ``round(clip(x * 255))``);
* Y = BT.601 luma of MATLAB ``rgb2ycbcr``, range 16..235, computed in float64;
* ``crop_border`` pixels (= the scale) are shaved on every side before scoring;
* PSNR with peak 255; SSIM of Wang et al. (2004) with an 11x11 Gaussian window, sigma 1.5,
  'valid' filtering, C1 = (0.01*255)^2, C2 = (0.03*255)^2, mean of the SSIM map.

Grey images (Set14 ``img_003``) have two conventions, see :func:`score_pair`.
"""

from __future__ import annotations

import logging
from typing import Literal

import numpy as np

__all__ = [
    "GreyConvention",
    "to_uint8",
    "rgb_to_y",
    "psnr_y",
    "ssim_y",
    "score_pair",
]

log = logging.getLogger(__name__)

GreyConvention = Literal["rgb", "raw"]

# MATLAB rgb2ycbcr, Y row, for RGB in [0, 255]: Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255
_Y_COEF = np.array([65.481, 128.553, 24.966], dtype=np.float64) / 255.0


def to_uint8(img) -> np.ndarray:
    """Return ``img`` as a uint8 (H, W) or (H, W, C) array.

    uint8 passes through unchanged. Float input is taken to be in [0, 1] (network output) and
    becomes ``round(clip(x * 255, 0, 255))`` -- the quantisation every published number includes.
    A torch tensor (C, H, W) or (1, C, H, W) is moved to numpy HWC first.
    """
    if hasattr(img, "detach"):  # torch.Tensor, without importing torch here
        t = img.detach().cpu()
        if t.ndim == 4:
            if t.shape[0] != 1:
                raise ValueError(f"to_uint8: a 4-D tensor must have batch size 1, got shape {tuple(t.shape)}")
            t = t[0]
        if t.ndim == 3:
            t = t.permute(1, 2, 0)  # CHW -> HWC
        img = t.numpy()
    arr = np.asarray(img)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3):
        raise ValueError(f"to_uint8: expected an (H, W) or (H, W, C) image, got shape {arr.shape}")
    if arr.dtype == np.uint8:
        return arr
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(
            f"to_uint8: image dtype {arr.dtype} not supported; pass uint8 in [0, 255] or float in [0, 1]"
        )
    if arr.size and float(np.nanmax(arr)) > 2.0:
        log.warning(
            "to_uint8: float image has max %.3g > 2; floats are taken to be in [0, 1] and are clipped. "
            "Pass uint8 for images in [0, 255].",
            float(np.nanmax(arr)),
        )
    return np.round(np.clip(arr.astype(np.float64) * 255.0, 0.0, 255.0)).astype(np.uint8)


def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """BT.601 luma of MATLAB ``rgb2ycbcr`` (range 16..235), float64 (H, W).

    ``img`` is (H, W, 3) RGB with values in [0, 255] (uint8 or float). Why: all SR benchmarks
    score luma only, with this exact formula.
    """
    arr = np.asarray(img)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"rgb_to_y: expected an (H, W, 3) RGB image, got shape {arr.shape}")
    return 16.0 + arr.astype(np.float64) @ _Y_COEF  # (H, W)


def _shave(a: np.ndarray, crop_border: int) -> np.ndarray:
    if crop_border < 0:
        raise ValueError(f"crop_border must be >= 0, got {crop_border}")
    if crop_border == 0:
        return a
    if a.shape[0] <= 2 * crop_border or a.shape[1] <= 2 * crop_border:
        raise ValueError(f"image of shape {a.shape} is too small for crop_border={crop_border}")
    return a[crop_border:-crop_border, crop_border:-crop_border]


def _check_same(a: np.ndarray, b: np.ndarray, fn: str) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"{fn}: sr shape {a.shape} != hr shape {b.shape}; crop HR to a multiple of the scale "
            "(srstudy.data.mod_crop) and check the SR output size"
        )


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a - b) ** 2))
    if mse == 0.0:
        return float("inf")
    return float(10.0 * np.log10(255.0 * 255.0 / mse))


def _gaussian_1d(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    """Same as ``cv2.getGaussianKernel(11, 1.5)`` (normalised to sum 1), float64 (size,)."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(x * x) / (2.0 * sigma * sigma))
    return g / g.sum()


def _filter_valid(a: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable 'valid' correlation of (H, W) ``a`` with ``outer(g, g)``: (H-k+1, W-k+1)."""
    win = np.lib.stride_tricks.sliding_window_view(a, g.size, axis=0)  # (H-k+1, W, k)
    a = win @ g  # (H-k+1, W)
    win = np.lib.stride_tricks.sliding_window_view(a, g.size, axis=1)  # (H-k+1, W-k+1, k)
    return win @ g


def _ssim(a: np.ndarray, b: np.ndarray) -> float:
    """BasicSR ``_ssim`` on float64 (H, W) images in [0, 255]."""
    if min(a.shape) < 11:
        raise ValueError(f"ssim: image of shape {a.shape} is smaller than the 11x11 window")
    c1 = (0.01 * 255) ** 2
    c2 = (0.03 * 255) ** 2
    g = _gaussian_1d()
    mu1 = _filter_valid(a, g)
    mu2 = _filter_valid(b, g)
    mu1_sq, mu2_sq, mu12 = mu1 * mu1, mu2 * mu2, mu1 * mu2
    s1 = _filter_valid(a * a, g) - mu1_sq
    s2 = _filter_valid(b * b, g) - mu2_sq
    s12 = _filter_valid(a * b, g) - mu12
    ssim_map = ((2 * mu12 + c1) * (2 * s12 + c2)) / ((mu1_sq + mu2_sq + c1) * (s1 + s2 + c2))
    return float(ssim_map.mean())


def _luma(img: np.ndarray, *, grey: bool, grey_convention: GreyConvention) -> np.ndarray:
    """Luma plane (H, W) float64 of a uint8 image according to the grey convention."""
    if grey_convention not in ("rgb", "raw"):
        raise ValueError(f"grey_convention must be 'rgb' or 'raw', got {grey_convention!r}")
    if img.ndim == 2:
        if grey_convention == "raw":
            return img.astype(np.float64)
        img = np.repeat(img[:, :, None], 3, axis=2)  # grey read as three equal channels
    if img.shape[2] != 3:
        raise ValueError(f"expected 1 or 3 channels, got shape {img.shape}")
    y = rgb_to_y(img)
    if grey and grey_convention == "raw":
        # full-range luma 0.299R + 0.587G + 0.114B: equals the stored grey value when R = G = B
        return (y - 16.0) * (255.0 / 219.0)
    return y


def _shaved_lumas(sr, hr, crop_border: int, grey_convention: GreyConvention, grey: bool | None, fn: str):
    """The Y planes (or grey values) of sr and hr, checked alike and shaved by crop_border."""
    a, b = to_uint8(sr), to_uint8(hr)
    grey = b.ndim == 2 if grey is None else grey
    ya = _luma(a, grey=grey, grey_convention=grey_convention)
    yb = _luma(b, grey=grey, grey_convention=grey_convention)
    _check_same(ya, yb, fn)
    return _shave(ya, crop_border), _shave(yb, crop_border)


def psnr_y(sr, hr, crop_border: int, *, grey_convention: GreyConvention = "rgb", grey: bool | None = None) -> float:
    """Y-channel PSNR in dB (``inf`` for identical images) after shaving ``crop_border`` px.

    ``sr`` / ``hr``: uint8 or float-in-[0, 1] images (see :func:`to_uint8`), (H, W, 3) or grey
    (H, W). ``grey`` marks a grey source image (default: True when ``hr`` is 2-D); see
    :func:`score_pair` for ``grey_convention``.
    """
    ya, yb = _shaved_lumas(sr, hr, crop_border, grey_convention, grey, "psnr_y")
    return _psnr(ya, yb)


def ssim_y(sr, hr, crop_border: int, *, grey_convention: GreyConvention = "rgb", grey: bool | None = None) -> float:
    """Y-channel SSIM (BasicSR ``calculate_ssim``, test_y_channel=True) after shaving ``crop_border`` px.

    Same inputs as :func:`psnr_y`. Identical images give exactly 1.0.
    """
    ya, yb = _shaved_lumas(sr, hr, crop_border, grey_convention, grey, "ssim_y")
    return _ssim(ya, yb)


def score_pair(
    sr,
    hr,
    *,
    scale: int,
    grey_convention: GreyConvention = "rgb",
    is_grey: bool | None = None,
) -> tuple[float, float]:
    """(PSNR_Y dB, SSIM_Y) of one SR/HR pair with ``crop_border = scale``.

    ``is_grey``: the source image was single-channel (``BenchmarkSet`` yields this flag; by
    default True when ``hr`` is 2-D). Only matters for ``grey_convention``:

    * ``"rgb"`` (default, BasicSR): a grey image is read as three equal channels and converted
      RGB->Y like any other (bicubic x4 Set14 = 26.09 dB).
    * ``"raw"``: a grey image is scored on its grey values directly (0..255, no 16..235
      compression); a 3-channel SR output of it is reduced to full-range luma
      0.299R + 0.587G + 0.114B, which equals the grey value when the channels are equal
      (bicubic x4 Set14 = 26.00 dB, the number most papers print).
    """
    ya, yb = _shaved_lumas(sr, hr, scale, grey_convention, is_grey, "score_pair")
    return _psnr(ya, yb), _ssim(ya, yb)

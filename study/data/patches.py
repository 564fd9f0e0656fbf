"""Training patches: HR cropped to the scale, LR by MATLAB bicubic, random aligned crops.

* :func:`mod_crop`, :func:`make_lr`: HR cropped to a multiple of the scale, LR by MATLAB bicubic
  (:func:`srstudy.data.imresize.imresize`), the degradation of the benchmark LR files.
* :class:`PatchDataset`: random aligned LR/HR training patches with dihedral augmentation,
  deterministic in (seed, epoch, index).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping

import numpy as np
import torch
from torch.utils.data import Dataset

from .images import ImageSource, collect_images, to_tensor
from .imresize import imresize

__all__ = ["check_scale", "mod_crop", "make_lr", "PatchDataset"]


def check_scale(scale: int) -> int:
    """``scale`` as an int, or ``ValueError`` naming it when it is not a positive integer."""
    if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale!r}")
    return int(scale)


def mod_crop(img: np.ndarray, scale: int) -> np.ndarray:
    """Crop the bottom/right of (H, W[, C]) ``img`` so H and W are multiples of ``scale``.

    Why: LR = HR / scale exactly, so SR output and HR align pixel for pixel (benchmark convention).
    """
    scale = check_scale(scale)
    h, w = img.shape[:2]
    return img[: h - h % scale, : w - w % scale]


def make_lr(hr: np.ndarray, scale: int) -> np.ndarray:
    """MATLAB bicubic LR of uint8 (H, W, 3) ``hr``: ``imresize(mod_crop(hr), 1/scale)``, uint8.

    Same operator (replicated border, uint8 rounding between passes) that made the benchmark LR
    files -- bit-identical on Set5/Set14/BSD100.
    """
    if hr.dtype != np.uint8:
        raise ValueError(f"make_lr: hr must be uint8, got {hr.dtype}")
    return imresize(mod_crop(hr, scale), 1.0 / check_scale(scale))


class PatchDataset(Dataset):
    """Random aligned (LR, HR) training patches, LR made by MATLAB bicubic on the fly.

    Args:
        sources: a folder, an image file, a uint8 array, a (name, array) pair, a mapping
            name -> array, or a list of any of these (e.g. ``[".../T91/HR", ".../BSD200/HR"]`` or
            ``default_split()[0]``). All images are decoded into memory at construction.
        scale: SR factor (default 4).
        lr_patch: LR patch side (default 64); the HR patch side is ``lr_patch * scale`` (256).
        patches_per_image: patches drawn per image per pass; ``len = n_images * patches_per_image``.
        seed: base seed (>= 0). Patch ``i`` of epoch ``e`` depends only on ``(seed, e, i)``, so the
            result is the same with any number of DataLoader workers or any shuffle.
        augment: random horizontal flip, vertical flip and transpose (together: all 8 rotations /
            flips, incl. 90-degree rotations), applied identically to LR and HR.

    Each HR is cropped to a multiple of ``scale`` and its LR (``make_lr``) is computed once and
    kept in memory (uint8). Images smaller than the HR patch on either side are **skipped with a
    warning** listing them (after mod-crop); ``ValueError`` if none remain. Note that only 19 of
    the 91 T91 images are >= 256 px on both sides, so with the default patch most of T91 is
    skipped; use BSD200 (481x321) as well, or a smaller ``lr_patch``.

    Items: ``(lr, hr)`` float32 tensors in [0, 1], shapes (3, lr_patch, lr_patch) and
    (3, lr_patch*scale, lr_patch*scale). Call :meth:`set_epoch` before each epoch; DataLoader
    workers see the new epoch when they are (re)started at ``iter(loader)``, so do not use
    ``persistent_workers=True`` with it.
    """

    def __init__(
        self,
        sources: ImageSource | Iterable[ImageSource] | Mapping[str, np.ndarray],
        *,
        scale: int = 4,
        lr_patch: int = 64,
        patches_per_image: int = 8,
        seed: int = 0,
        augment: bool = True,
    ) -> None:
        self.scale = check_scale(scale)
        if int(lr_patch) < 1:
            raise ValueError(f"lr_patch must be >= 1, got {lr_patch}")
        if int(patches_per_image) < 1:
            raise ValueError(f"patches_per_image must be >= 1, got {patches_per_image}")
        if int(seed) < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self.lr_patch = int(lr_patch)
        self.hr_patch = self.lr_patch * self.scale
        self.patches_per_image = int(patches_per_image)
        self.seed = int(seed)
        self.augment = bool(augment)
        self.epoch = 0

        self.names: list[str] = []
        self.hr: list[np.ndarray] = []  # uint8 (H, W, 3), H and W multiples of scale
        self.lr: list[np.ndarray] = []  # uint8 (H/scale, W/scale, 3)
        self.skipped: list[tuple[str, tuple[int, int]]] = []  # (name, (H, W)) too small
        for name, img, _ in collect_images(sources):
            hr = mod_crop(img, self.scale)
            if hr.shape[0] < self.hr_patch or hr.shape[1] < self.hr_patch:
                self.skipped.append((name, (img.shape[0], img.shape[1])))
                continue
            self.names.append(name)
            self.hr.append(np.ascontiguousarray(hr))
            self.lr.append(imresize(hr, 1.0 / self.scale))
        if self.skipped:
            listing = ", ".join(f"{n} ({h}x{w})" for n, (h, w) in self.skipped)
            msg = (
                f"PatchDataset: {len(self.skipped)} image(s) smaller than the HR patch "
                f"{self.hr_patch}x{self.hr_patch} (lr_patch={self.lr_patch} x scale={self.scale}) "
                f"were skipped (HxW): {listing}"
            )
            if not self.hr:
                raise ValueError(msg + "; no image left -- use larger images or a smaller lr_patch")
            warnings.warn(msg, UserWarning, stacklevel=2)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch (>= 0) whose random crops / flips ``__getitem__`` returns."""
        if int(epoch) < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.hr) * self.patches_per_image

    def crop(self, index: int) -> tuple[int, int, int, int, int, int]:
        """Where patch ``index`` of the current epoch comes from: (image, top, left, hflip, vflip,
        transpose), the LR crop's corner and the flips (0/1). `patch` cuts it on the host; a
        batch builder on the GPU cuts the same pixels from images held there
        (`srstudy.trials.device_batches`)."""
        if not 0 <= index < len(self):
            raise IndexError(f"PatchDataset index {index} out of range [0, {len(self)})")
        k = index // self.patches_per_image
        rng = np.random.default_rng((self.seed, self.epoch, int(index)))
        p = self.lr_patch
        top = int(rng.integers(0, self.lr[k].shape[0] - p + 1))
        left = int(rng.integers(0, self.lr[k].shape[1] - p + 1))
        hflip, vflip, transpose = (int(f) for f in rng.integers(0, 2, size=3)) if self.augment else (0, 0, 0)
        return k, top, left, hflip, vflip, transpose

    def patch(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Patch ``index`` of the current epoch as uint8 (p, p, 3) LR and (p*s, p*s, 3) HR views.

        Cheap (no copy, no float conversion): batch builders stack these and convert on the
        training device, which moves a quarter of the bytes of float32 patches.
        """
        k, top, left, hflip, vflip, transpose = self.crop(index)
        p, s = self.lr_patch, self.scale
        lr = self.lr[k][top : top + p, left : left + p]  # (p, p, 3)
        hr = self.hr[k][top * s : (top + p) * s, left * s : (left + p) * s]  # (p*s, p*s, 3)
        if hflip:
            lr, hr = lr[:, ::-1], hr[:, ::-1]
        if vflip:
            lr, hr = lr[::-1], hr[::-1]
        if transpose:  # with a flip this is a 90-degree rotation
            lr, hr = lr.transpose(1, 0, 2), hr.transpose(1, 0, 2)
        return lr, hr

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        lr, hr = self.patch(index)
        return to_tensor(lr), to_tensor(hr)

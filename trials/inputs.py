"""A trial's images, resolved from its `DataConfig`, and their identity for cache keys."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from srstudy.config import DataConfig
from srstudy.data import BenchmarkSet, PatchDataset, default_split, list_images, load_image
from srstudy.data.names import file_image_names

Images = list[tuple[str, np.ndarray]]


def _folder_images(folders: list[Path]) -> Images:
    """Every image in the folders, named by its short, safe, unique file stem (never its path:
    the name ends up in artifact file names)."""
    files = [f for folder in folders for f in list_images(folder)]
    return [(name, load_image(f)) for name, f in zip(file_image_names(files), files)]


def train_images(data: DataConfig) -> Images:
    """HR training images: the bundled photos' train split, or every image in the folders."""
    return default_split()[0] if data.train == "default" else _folder_images(data.train)


def val_images(data: DataConfig) -> Images:
    """HR validation images (at most `val_max_images`)."""
    images = default_split()[1] if data.val == "default" else _folder_images(data.val)
    return images[: data.val_max_images] if data.val_max_images else images


def patch_dataset(images: Images, *, scale: int, patch_size: int, patches_per_image: int, seed: int) -> PatchDataset:
    """Training patches (LR patch_size², HR patch_size·scale²), flips/rotations, seeded."""
    return PatchDataset(images, scale=scale, lr_patch=patch_size, patches_per_image=patches_per_image, seed=seed)


def validation_set(data: DataConfig, *, scale: int) -> BenchmarkSet:
    """The validation images as a benchmark set (LR made by MATLAB bicubic)."""
    return BenchmarkSet.from_images(val_images(data), scale=scale, name="val")


def benchmark_sets(data: DataConfig, *, scale: int) -> list[BenchmarkSet]:
    """The configured benchmark sets (`benchmark_root/<Set>`), possibly none."""
    if data.benchmark_root is None:
        return []
    return [BenchmarkSet(data.benchmark_root, name, scale=scale) for name in data.benchmark_sets]


def images_identity(images: Images) -> str:
    """Content hash of a list of images (names, shapes and pixels): a cache-key ingredient."""
    h = hashlib.sha256()
    for name, arr in images:
        h.update(Path(name).name.encode())
        h.update(str(arr.shape).encode())
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()[:16]

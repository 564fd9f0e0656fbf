"""Images, training patches and benchmark pairs for x4 super-resolution (``srstudy.data``)."""

from .images import (BUNDLED_IMAGES, DEFAULT_VALIDATION, IMAGE_EXTENSIONS, BenchmarkItem, BenchmarkSet,
                     PatchDataset, bundled_images, check_benchmark_size, default_split, list_images, load_image,
                     make_lr, min_benchmark_side, mod_crop, read_image, to_tensor)
from .imresize import imresize

__all__ = [
    "IMAGE_EXTENSIONS", "read_image", "load_image", "list_images", "imresize", "mod_crop", "make_lr",
    "min_benchmark_side", "check_benchmark_size", "to_tensor", "PatchDataset", "BenchmarkItem", "BenchmarkSet",
    "BUNDLED_IMAGES", "DEFAULT_VALIDATION", "bundled_images", "default_split",
]

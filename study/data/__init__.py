"""Images, training patches and benchmark pairs for x4 super-resolution (``srstudy.data``).

Modules, one job each:

* :mod:`~srstudy.data.images`: read / list / check image files and arrays, ``to_tensor``;
* :mod:`~srstudy.data.imresize`: MATLAB-compatible bicubic ``imresize`` (the benchmark LR operator);
* :mod:`~srstudy.data.names`: short, safe, unique image names;
* :mod:`~srstudy.data.patches`: ``mod_crop``, ``make_lr``, :class:`PatchDataset`;
* :mod:`~srstudy.data.benchmarks`: :class:`BenchmarkSet` and the size checks;
* :mod:`~srstudy.data.bundled`: scikit-image's bundled photos, ``default_split`` (no download).

The public names are re-exported here (``from srstudy.data import PatchDataset``). Note that
``srstudy.data.imresize`` is therefore the *function*; import the module's other names with
``from srstudy.data.imresize import resize_weights``.
"""

from .benchmarks import BenchmarkItem, BenchmarkSet, check_benchmark_size, min_benchmark_side
from .bundled import BUNDLED_IMAGES, DEFAULT_VALIDATION, bundled_images, default_split
from .images import IMAGE_EXTENSIONS, list_images, load_image, read_image, to_tensor
from .imresize import imresize
from .patches import PatchDataset, make_lr, mod_crop

__all__ = [
    "IMAGE_EXTENSIONS",
    "read_image",
    "load_image",
    "list_images",
    "imresize",
    "mod_crop",
    "make_lr",
    "min_benchmark_side",
    "check_benchmark_size",
    "to_tensor",
    "PatchDataset",
    "BenchmarkItem",
    "BenchmarkSet",
    "BUNDLED_IMAGES",
    "DEFAULT_VALIDATION",
    "bundled_images",
    "default_split",
]

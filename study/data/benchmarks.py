"""Benchmark sets: Set5 / Set14 / BSD100 style folders (``HR`` + ``LR_bicubic/X{scale}``) or
in-memory images, as (LR, HR) pairs for scoring; images too small to score are refused early.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np

from .images import ImageSource, PathLike, collect_images, header_size, list_images, load_image, read_image
from .imresize import imresize
from .patches import check_scale, mod_crop

__all__ = ["SSIM_WINDOW", "min_benchmark_side", "check_benchmark_size", "BenchmarkItem", "BenchmarkSet"]

log = logging.getLogger(__name__)

#: Side of the SSIM window (srstudy.measure.metrics.ssim_y): a scored image must keep this much after
#: its border (= the scale) is shaved on every side.
SSIM_WINDOW = 11


def min_benchmark_side(scale: int) -> int:
    """Smallest HR side (a multiple of ``scale``) that can be scored: the crop border (``scale``
    px) on both sides plus the SSIM window must fit; 20 px at x4."""
    scale = check_scale(scale)
    return -(-(2 * scale + SSIM_WINDOW) // scale) * scale


def check_benchmark_size(label: str, hw: tuple[int, int], scale: int) -> None:
    """Refuse an image too small to make an LR and be scored at ``scale``, naming it and its size
    (instead of an error deep in the resizer or the metrics that names neither)."""
    need = min_benchmark_side(scale)
    h, w = hw
    if h - h % scale < need or w - w % scale < need:
        raise ValueError(
            f"image {label} is {h}x{w} px (HxW), too small for scale {scale}: scoring needs at least "
            f"{need}x{need} (LR {need // scale}x{need // scale}; border {scale} px shaved per side, "
            f"{SSIM_WINDOW}-px SSIM window); remove it or use a larger image"
        )


class BenchmarkItem(NamedTuple):
    """One benchmark pair: uint8 (H/scale, W/scale, 3) LR and mod-cropped (H, W, 3) HR."""

    name: str  # file stem, e.g. "img_003"
    lr: np.ndarray
    hr: np.ndarray
    is_grey: bool  # the HR file was single-channel (scored by metrics' grey_convention)


class BenchmarkSet(Sequence[BenchmarkItem]):
    """A benchmark folder ``<root>/<name>/HR/*.png`` + ``<root>/<name>/LR_bicubic/X{scale}/<stem>x{scale}.png``.

    HR is cropped to a multiple of ``scale``. ``lr_source``:

    * ``"auto"`` (default): read the LR files if the ``LR_bicubic/X{scale}`` folder exists,
      else make LR from HR with :func:`make_lr` (MATLAB bicubic, identical to the shipped files
      where they exist);
    * ``"files"``: the LR folder must exist;
    * ``"bicubic"``: always make LR from HR.

    With LR files, every HR must have its LR file of exactly HR-size / scale, else
    ``FileNotFoundError`` / ``ValueError`` naming the file. Items are decoded on first access
    and cached. Iterating yields :class:`BenchmarkItem` ``(name, lr, hr, is_grey)``.
    """

    def __init__(
        self,
        root: PathLike,
        name: str,
        *,
        scale: int = 4,
        lr_source: Literal["auto", "files", "bicubic"] = "auto",
    ) -> None:
        self.scale = check_scale(scale)
        self.name = name
        set_dir = Path(root) / name
        hr_dir = set_dir / "HR"
        self.hr_dir = hr_dir
        self.lr_dir: Path | None = set_dir / "LR_bicubic" / f"X{self.scale}"
        if lr_source not in ("auto", "files", "bicubic"):
            raise ValueError(f"lr_source must be 'auto', 'files' or 'bicubic', got {lr_source!r}")
        if not hr_dir.is_dir():
            raise FileNotFoundError(f"benchmark HR folder not found: {hr_dir} (expected <root>/<set>/HR)")
        if lr_source == "bicubic" or (lr_source == "auto" and not self.lr_dir.is_dir()):
            if lr_source == "auto":
                log.info("%s: no LR folder %s, making LR from HR with MATLAB bicubic", name, self.lr_dir)
            self.lr_dir = None
        elif not self.lr_dir.is_dir():
            raise FileNotFoundError(f"benchmark LR folder not found: {self.lr_dir} (lr_source='files')")
        self._hr_files = list_images(hr_dir)
        self._lr_files: list[Path | None] = []
        for f in self._hr_files:
            if self.lr_dir is None:
                self._lr_files.append(None)
                continue
            lr_f = self.lr_dir / f"{f.stem}x{self.scale}{f.suffix}"
            if not lr_f.is_file():
                raise FileNotFoundError(
                    f"{name}: LR file {lr_f} for HR {f} is missing; add it, or pass lr_source='bicubic' "
                    "to make every LR from HR"
                )
            self._lr_files.append(lr_f)
        for f in self._hr_files:  # sizes from the file headers: too-small images fail now, not mid-evaluation
            size = header_size(f)
            if size is not None:
                check_benchmark_size(str(f), size, self.scale)
        self._arrays: list[tuple[str, np.ndarray, bool]] | None = None
        self._cache: dict[int, BenchmarkItem] = {}

    @classmethod
    def from_images(
        cls,
        images: ImageSource | Iterable[ImageSource] | Mapping[str, np.ndarray],
        *,
        scale: int = 4,
        name: str = "images",
    ) -> "BenchmarkSet":
        """A benchmark from in-memory images / files / folders, LR made with :func:`make_lr`.

        E.g. ``BenchmarkSet.from_images(default_split()[1])`` for the no-download validation set.
        ``is_grey`` is True for 2-D (grey) arrays.
        """
        self = cls.__new__(cls)
        self.scale = check_scale(scale)
        self.name = name
        self.hr_dir = None
        self.lr_dir = None
        self._hr_files, self._lr_files = [], []
        self._arrays = collect_images(images)
        for stem, img, _ in self._arrays:
            check_benchmark_size(repr(stem), img.shape[:2], self.scale)
        self._cache = {}
        return self

    def __len__(self) -> int:
        return len(self._arrays) if self._arrays is not None else len(self._hr_files)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"{self.name}: index {i} out of range for {n} images")
        i %= n
        if i in self._cache:
            return self._cache[i]
        if self._arrays is not None:
            stem, img, is_grey = self._arrays[i]
        else:
            f = self._hr_files[i]
            stem = f.stem
            img, is_grey = read_image(f)
        hr = mod_crop(img, self.scale)
        lr_f = self._lr_files[i] if self._arrays is None else None
        if lr_f is None:
            lr = imresize(hr, 1.0 / self.scale)
        else:
            lr = load_image(lr_f)
            want = (hr.shape[0] // self.scale, hr.shape[1] // self.scale)
            if lr.shape[:2] != want:
                raise ValueError(
                    f"{self.name}: LR file {lr_f} is {lr.shape[0]}x{lr.shape[1]} (HxW) but HR "
                    f"{self._hr_files[i]} mod-cropped is {hr.shape[0]}x{hr.shape[1]}, so LR must be "
                    f"{want[0]}x{want[1]} for scale {self.scale}"
                )
        item = BenchmarkItem(stem, np.ascontiguousarray(lr), np.ascontiguousarray(hr), bool(is_grey))
        self._cache[i] = item
        return item

    def __iter__(self) -> Iterator[BenchmarkItem]:
        for i in range(len(self)):
            yield self[i]

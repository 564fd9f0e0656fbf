"""Images, training patches and benchmark pairs for x4 super-resolution.

* :func:`read_image` / :func:`load_image`: any 8-bit image file -> uint8 (H, W, 3) RGB.
* :func:`list_images`: the image files of a folder.
* :func:`mod_crop`, :func:`make_lr`: HR cropped to a multiple of the scale, LR by MATLAB bicubic
  (:func:`srstudy.imresize.imresize`), the degradation of the benchmark LR files.
* :class:`PatchDataset`: random aligned LR/HR training patches with dihedral augmentation,
  deterministic in (seed, epoch, index).
* :class:`BenchmarkSet`: Set5 / Set14 / BSD100 style folders (``HR`` + ``LR_bicubic/X{scale}``).
* :func:`bundled_images`, :func:`default_split`: colour photos shipped inside the scikit-image
  wheel, so a study runs with no download at all.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Literal, NamedTuple, Union

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from .names import file_image_names, unique_names
from .imresize import imresize

__all__ = [
    "IMAGE_EXTENSIONS",
    "read_image",
    "load_image",
    "list_images",
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

log = logging.getLogger(__name__)

#: File extensions (lower case) that :func:`list_images` considers; anything else is ignored.
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})

PathLike = Union[str, os.PathLike]
#: What PatchDataset / BenchmarkSet.from_images accept per entry: a folder, an image file,
#: a uint8 array, or a (name, uint8 array) pair.
ImageSource = Union[PathLike, np.ndarray, tuple[str, np.ndarray]]


# ----------------------------------------------------------------------------------------------
# reading images


def read_image(path: PathLike) -> tuple[np.ndarray, bool]:
    """Decode an image file to ``(uint8 (H, W, 3) RGB, is_grey)``.

    Why one function: every consumer (training, benchmarks, metrics) must see the same pixels.
    Conversions (``is_grey`` is True for the first two, so metrics can apply their grey rule):

    * L (grey) and 1 (bi-level): the grey value is copied into three equal channels;
    * LA: alpha dropped (not composited), then as L -- logged warning naming the file;
    * RGBA: alpha dropped (not composited) -- logged warning naming the file;
    * P (palette): palette -> RGB (alpha dropped if the palette has transparency) -- logged;
    * CMYK / YCbCr / LAB / HSV: Pillow's conversion to RGB -- logged;
    * 16-bit (I;16 grey PNG/TIFF, 48-bit RGB PNG): reduced to 8 bits by keeping the high byte
      (``v >> 8``, what Pillow does for 48-bit RGB) -- logged warning;
    * 32-bit integer (I) or float (F) images: ``ValueError`` (no unambiguous 8-bit mapping).

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` naming the file for
    anything Pillow cannot decode (not an image, truncated, unsupported mode).
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"image file not found: {p}")
    try:
        with Image.open(p) as im:
            # the decoder's raw mode (e.g. "RGB;16B" for a 48-bit PNG) is in im.tile, which
            # im.load() empties: read it first
            args = getattr(im.tile[0], "args", None) if im.tile else None
            rawmode = args if isinstance(args, str) else ""
            im.load()  # force decoding now so truncated files fail here, naming the file
            mode = im.mode
            if mode == "RGB":
                if ";16" in rawmode:
                    log.warning("%s: 16-bit RGB image reduced to 8 bits (high byte kept)", p)
                arr = np.asarray(im)
            elif mode in ("L", "1", "LA"):
                if mode == "LA":
                    log.warning("%s: grey+alpha image, alpha channel dropped", p)
                arr = np.asarray(im.convert("L"))
            elif mode.startswith("I;16"):
                log.warning("%s: 16-bit grey image (%s) reduced to 8 bits (high byte kept)", p, mode)
                arr = (np.asarray(im).astype(np.uint16) >> 8).astype(np.uint8)
            elif mode in ("I", "F"):
                raise ValueError(
                    f"{p}: {mode} ({'32-bit integer' if mode == 'I' else 'float'}) images are not "
                    "supported; convert the file to 8-bit RGB or grey first"
                )
            elif mode == "RGBA":
                log.warning("%s: RGBA image, alpha channel dropped", p)
                arr = np.asarray(im)[:, :, :3]
            elif mode == "P":
                has_alpha = "transparency" in im.info
                log.info("%s: palette image converted to RGB%s", p, " (transparency dropped)" if has_alpha else "")
                arr = np.asarray(im.convert("RGBA"))[:, :, :3] if has_alpha else np.asarray(im.convert("RGB"))
            else:
                log.info("%s: %s image converted to RGB", p, mode)
                arr = np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ValueError(f"cannot decode image file {p}: {exc}") from exc
    arr = np.asarray(arr, dtype=np.uint8)
    is_grey = arr.ndim == 2
    if is_grey:
        arr = np.repeat(arr[:, :, None], 3, axis=2)  # (H, W) -> (H, W, 3), equal channels
    return np.ascontiguousarray(arr), is_grey


def load_image(path: PathLike) -> np.ndarray:
    """Decode an image file to uint8 (H, W, 3) RGB; see :func:`read_image` for the conversions."""
    return read_image(path)[0]


def list_images(folder: PathLike) -> list[Path]:
    """Sorted image files (by name) directly inside ``folder`` (not recursive).

    Only files whose extension is in :data:`IMAGE_EXTENSIONS` (case-insensitive) are returned;
    other files (``.txt``, ``.DS_Store``, sub-folders) are ignored with a debug log. Decoding is
    not attempted here: a file with an image extension that fails to decode raises later, in
    :func:`read_image`, naming it. Raises ``FileNotFoundError`` / ``NotADirectoryError`` for a
    missing folder and ``ValueError`` if it holds no image file.
    """
    d = Path(folder)
    if not d.exists():
        raise FileNotFoundError(f"image folder not found: {d}")
    if not d.is_dir():
        raise NotADirectoryError(f"not a folder: {d} (expected a folder of images)")
    files: list[Path] = []
    for f in sorted(d.iterdir()):
        if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS:
            files.append(f)
        else:
            log.debug("list_images: ignoring %s (not a file with an image extension)", f)
    if not files:
        raise ValueError(
            f"no image files in {d}; expected files ending in {', '.join(sorted(IMAGE_EXTENSIONS))}"
        )
    return files


# ----------------------------------------------------------------------------------------------
# LR/HR helpers


def _check_scale(scale: int) -> int:
    if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale!r}")
    return int(scale)


#: Side of the SSIM window (srstudy.metrics.ssim_y): a scored image must keep this much after
#: its border (= the scale) is shaved on every side.
SSIM_WINDOW = 11


def min_benchmark_side(scale: int) -> int:
    """Smallest HR side (a multiple of ``scale``) that can be scored: the crop border (``scale``
    px) on both sides plus the SSIM window must fit; 20 px at x4."""
    scale = _check_scale(scale)
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


def mod_crop(img: np.ndarray, scale: int) -> np.ndarray:
    """Crop the bottom/right of (H, W[, C]) ``img`` so H and W are multiples of ``scale``.

    Why: LR = HR / scale exactly, so SR output and HR align pixel for pixel (benchmark convention).
    """
    scale = _check_scale(scale)
    h, w = img.shape[:2]
    return img[: h - h % scale, : w - w % scale]


def make_lr(hr: np.ndarray, scale: int) -> np.ndarray:
    """MATLAB bicubic LR of uint8 (H, W, 3) ``hr``: ``imresize(mod_crop(hr), 1/scale)``, uint8.

    Same operator (replicated border, uint8 rounding between passes) that made the benchmark LR
    files -- bit-identical on Set5/Set14/BSD100.
    """
    if hr.dtype != np.uint8:
        raise ValueError(f"make_lr: hr must be uint8, got {hr.dtype}")
    return imresize(mod_crop(hr, scale), 1.0 / _check_scale(scale))


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) -> float32 tensor (3, H, W) in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float().div_(255.0)


def _as_rgb_uint8(arr: np.ndarray, name: str) -> np.ndarray:
    """Validate an in-memory image; (H, W) grey -> 3 channels, (H, W, 4) -> alpha dropped."""
    a = np.asarray(arr)
    if a.dtype != np.uint8:
        raise ValueError(
            f"image {name!r}: dtype {a.dtype}, expected uint8 in [0, 255]; "
            "convert with np.round(np.clip(x * 255, 0, 255)).astype(np.uint8)"
        )
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    elif a.ndim == 3 and a.shape[2] == 4:
        log.warning("image %r: RGBA array, alpha channel dropped", name)
        a = a[:, :, :3]
    elif a.ndim == 3 and a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    if a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"image {name!r}: shape {a.shape}, expected (H, W, 3) or (H, W)")
    return np.ascontiguousarray(a)


def _collect(
    sources: ImageSource | Iterable[ImageSource] | Mapping[str, np.ndarray],
) -> list[tuple[str, np.ndarray, bool]]:
    """Expand folders / files / arrays / (name, array) pairs into (name, uint8 HxWx3, is_grey).

    Files are named by their file stem made short and safe (``srstudy.image_names``), never by
    their path; arrays by their pair name or ``array[i]``; a repeated name gets a ``-2``, ``-3``
    … suffix, so every image has its own name. ``is_grey``: a grey file (see
    :func:`read_image`) or a 2-D / 1-channel array.
    """
    if isinstance(sources, Mapping):
        items: list = [(str(k), v) for k, v in sources.items()]
    elif isinstance(sources, (str, os.PathLike, np.ndarray)) or _is_pair(sources):
        items = [sources]
    else:
        items = list(sources)

    out: list[tuple[str, np.ndarray, bool]] = []
    for i, src in enumerate(items):
        if isinstance(src, np.ndarray) or _is_pair(src):
            name, arr = (f"array[{i}]", src) if isinstance(src, np.ndarray) else (str(src[0]), src[1])
            grey = arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 1)
            out.append((name, _as_rgb_uint8(arr, name), grey))
        elif isinstance(src, (str, os.PathLike)):
            p = Path(src)
            files = list_images(p) if p.is_dir() else [p]
            out.extend((name, *read_image(f)) for name, f in zip(file_image_names(files), files))
        else:
            raise TypeError(
                f"image source #{i} has type {type(src).__name__}; expected a folder or file path, "
                "a uint8 array, or a (name, array) pair"
            )
    if not out:
        raise ValueError("no images given (the list of sources is empty)")
    names = unique_names(name for name, _, _ in out)
    return [(name, arr, grey) for name, (_, arr, grey) in zip(names, out)]


def _header_size(f: Path) -> tuple[int, int] | None:
    """(H, W) of an image file from its header (cheap, nothing decoded); None when Pillow cannot
    read it -- decoding it later (read_image) then raises, naming the file."""
    try:
        with Image.open(f) as im:
            return im.size[1], im.size[0]
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError):
        return None


def _is_pair(x) -> bool:
    return isinstance(x, tuple) and len(x) == 2 and isinstance(x[0], str) and isinstance(x[1], np.ndarray)


# ----------------------------------------------------------------------------------------------
# training patches


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
        self.scale = _check_scale(scale)
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
        for name, img, _ in _collect(sources):
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

    def patch(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Patch ``index`` of the current epoch as uint8 (p, p, 3) LR and (p*s, p*s, 3) HR views.

        Cheap (no copy, no float conversion): batch builders stack these and convert on the
        training device, which moves a quarter of the bytes of float32 patches.
        """
        if not 0 <= index < len(self):
            raise IndexError(f"PatchDataset index {index} out of range [0, {len(self)})")
        k = index // self.patches_per_image
        lr_img, hr_img = self.lr[k], self.hr[k]
        rng = np.random.default_rng((self.seed, self.epoch, int(index)))
        p, s = self.lr_patch, self.scale
        top = int(rng.integers(0, lr_img.shape[0] - p + 1))
        left = int(rng.integers(0, lr_img.shape[1] - p + 1))
        lr = lr_img[top : top + p, left : left + p]  # (p, p, 3)
        hr = hr_img[top * s : (top + p) * s, left * s : (left + p) * s]  # (p*s, p*s, 3)
        if self.augment:
            hflip, vflip, transpose = rng.integers(0, 2, size=3)
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


# ----------------------------------------------------------------------------------------------
# benchmark sets


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
        self.scale = _check_scale(scale)
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
            size = _header_size(f)
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
        self.scale = _check_scale(scale)
        self.name = name
        self.hr_dir = None
        self.lr_dir = None
        self._hr_files, self._lr_files = [], []
        self._arrays = _collect(images)
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


# ----------------------------------------------------------------------------------------------
# bundled default data (no download)

#: (name, file inside the ``skimage.data`` package) of colour photos shipped in the wheel.
#: Files that scikit-image fetches with pooch on demand are deliberately not used.
BUNDLED_IMAGES: tuple[tuple[str, str], ...] = (
    ("astronaut", "astronaut.png"),  # 512x512
    ("chelsea", "chelsea.png"),  # 300x451
    ("coffee", "coffee.png"),  # 400x600
    ("rocket", "rocket.jpg"),  # 427x640
    ("motorcycle_left", "motorcycle_left.png"),  # 500x741
    ("hubble_deep_field", "hubble_deep_field.jpg"),  # 872x1000
    ("immunohistochemistry", "ihc.png"),  # 512x512
)
#: Names of the bundled images held out for validation by :func:`default_split`.
DEFAULT_VALIDATION: tuple[str, ...] = ("chelsea", "coffee")


def bundled_images() -> list[tuple[str, np.ndarray]]:
    """Colour sample photos that ship inside the scikit-image wheel, as (name, uint8 HxWx3).

    Why: a default training / validation set that needs no network and no shared data. The
    files are read straight from the installed ``skimage/data`` package folder (never through
    ``skimage.data``'s pooch fetcher), so this cannot trigger a download. Order: BUNDLED_IMAGES.
    """
    base = resources.files("skimage.data")
    out = []
    for name, fname in BUNDLED_IMAGES:
        ref = base / fname
        with resources.as_file(ref) as p:
            if not Path(p).is_file():
                raise FileNotFoundError(
                    f"bundled image {fname!r} not found in the installed scikit-image ({p}); "
                    "reinstall scikit-image (>= 0.22 ships it in the wheel)"
                )
            out.append((name, load_image(p)))
    return out


def default_split() -> tuple[list[tuple[str, np.ndarray]], list[tuple[str, np.ndarray]]]:
    """(train, validation) lists of (name, uint8 HxWx3) from :func:`bundled_images`.

    Deterministic: validation = :data:`DEFAULT_VALIDATION` (chelsea, coffee), train = the other
    five, in :data:`BUNDLED_IMAGES` order. All are >= 300 px, so the default 256 px HR patches fit.
    """
    images = bundled_images()
    train = [(n, a) for n, a in images if n not in DEFAULT_VALIDATION]
    val = [(n, a) for n, a in images if n in DEFAULT_VALIDATION]
    return train, val

"""Reading images: any 8-bit image file or in-memory array -> uint8 (H, W, 3) RGB.

* :func:`read_image` / :func:`load_image`: an image file, with the grey / alpha / 16-bit rules.
* :func:`list_images`: the image files of a folder (:data:`IMAGE_EXTENSIONS`).
* :func:`collect_images`: folders, files, arrays and (name, array) pairs -> named uint8 images,
  the one way PatchDataset and BenchmarkSet take their images.
* :func:`to_tensor`: uint8 (H, W, 3) -> float32 (3, H, W) in [0, 1], for training and inference.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Union

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .names import file_image_names, unique_names

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageSource",
    "read_image",
    "load_image",
    "list_images",
    "collect_images",
    "header_size",
    "to_tensor",
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


def to_tensor(img: np.ndarray, device: torch.device | str | None = None) -> torch.Tensor:
    """uint8 (H, W, 3) -> float32 tensor (3, H, W) in [0, 1], moved to ``device`` when given.

    Why one function: training patches and inference inputs must be scaled the same way.
    Callers that need a batch add the axis (``to_tensor(lr, device)[None]``).
    """
    chw = np.ascontiguousarray(np.asarray(img, dtype=np.uint8).transpose(2, 0, 1))  # (3, H, W)
    t = torch.from_numpy(chw).float().div_(255.0)
    return t if device is None else t.to(device)


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


def collect_images(
    sources: ImageSource | Iterable[ImageSource] | Mapping[str, np.ndarray],
) -> list[tuple[str, np.ndarray, bool]]:
    """Expand folders / files / arrays / (name, array) pairs into (name, uint8 HxWx3, is_grey).

    Files are named by their file stem made short and safe (:mod:`srstudy.data.names`), never by
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


def header_size(f: Path) -> tuple[int, int] | None:
    """(H, W) of an image file from its header (cheap, nothing decoded); None when Pillow cannot
    read it -- decoding it later (read_image) then raises, naming the file."""
    try:
        with Image.open(f) as im:
            return im.size[1], im.size[0]
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError):
        return None


def _is_pair(x) -> bool:
    return isinstance(x, tuple) and len(x) == 2 and isinstance(x[0], str) and isinstance(x[1], np.ndarray)

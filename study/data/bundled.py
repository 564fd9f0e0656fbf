"""Colour photos shipped inside the scikit-image wheel: a default data set with no download."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np

from .images import load_image

__all__ = ["BUNDLED_IMAGES", "DEFAULT_VALIDATION", "bundled_images", "default_split"]

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

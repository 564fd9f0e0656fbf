"""Short, safe, unique names for images read from files.

An image's name ends up in file names (a trial's `sample_<name>.png` artifact), MLflow
artifact paths, per-image score tables and log lines. A name taken from a full path
(`/home/me/Set5/HR/baby.png`) breaks all of those, so images read from files are named by
their file stem, reduced to letters, digits, `.`, `_` and `-`, and made unique with a
`-2`, `-3`, … suffix when two folders (or two extensions) hold the same stem.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

#: Longest name kept; longer stems are cut (then made unique like any other clash).
MAX_NAME_LENGTH = 64

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(text: str, *, max_length: int = MAX_NAME_LENGTH) -> str:
    """`text` as a name usable in a file name: runs of other characters become `_`, no
    leading dot or `_`, at most `max_length` characters; `image` when nothing is left."""
    name = _UNSAFE.sub("_", str(text)).lstrip("._")[:max_length].rstrip("_")
    return name or "image"


def unique_names(names: Iterable[str]) -> list[str]:
    """The names in order, a later repeat of a name suffixed `-2`, `-3`, … (never clashing
    with a name already taken, given or made)."""
    names = list(names)
    taken: set[str] = set()
    out = []
    for name in names:
        candidate, n = name, 1
        while candidate in taken:
            n += 1
            candidate = f"{name}-{n}"
        taken.add(candidate)
        out.append(candidate)
    return out


def file_image_names(files: Iterable[str | Path]) -> list[str]:
    """One short, safe, unique name per image file: its stem (see the module docstring)."""
    return unique_names(safe_name(Path(f).stem) for f in files)

"""Non-dominated sorting, hypervolume and knee point over any objectives with directions.

A point dominates another when it is at least as good in every objective and strictly
better in one. Equal points (duplicates) do not dominate each other, so they share a rank.
Rows with a missing (NaN/None) objective are not ranked here — callers exclude and count them
(`srstudy.analysis.front.analyse` does).

Every function takes `values` of shape (n, k) and `directions`, k strings 'min' or 'max';
internally 'max' columns are negated so smaller is better everywhere.

Hypervolume is exact: a sweep in 2-D and recursive slicing (HSO: slice along the last
objective, sum slab depth × the (k−1)-D hypervolume of the points above the slab) in 3-D and
up, on the non-dominated points only — fine for the few hundred trials of a study.

The knee is the front member farthest below the hyperplane through the extremes after
min–max normalisation: each objective is mapped to [0, 1] over the front (0 = the best value
on the front, 1 = the worst), and the knee minimises Σ f̂ᵢ, i.e. has the largest distance
(Σ f̂ᵢ − 1)/√k below the hyperplane Σ f̂ᵢ = 1 through the unit points. For two objectives that
plane is the line through the two extreme members of the front (Das 1999; Deb & Gupta 2011,
"reflex angle"/"distance to the extreme line" knee). Objectives constant over the front are
ignored (f̂ = 0); ties go to the first row.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _as_minimisation(values, directions: Sequence[str]) -> np.ndarray:
    """(n, k) values with every 'max' column negated, so smaller is better everywhere."""
    pts = np.asarray(values, dtype=np.float64)
    if pts.ndim == 1 and len(directions) == 1:
        pts = pts.reshape(-1, 1)
    if pts.size == 0:
        pts = pts.reshape(0, len(directions))
    if pts.ndim != 2 or pts.shape[1] != len(directions):
        raise ValueError(f"values of shape {pts.shape} do not match {len(directions)} directions")
    bad = [d for d in directions if d not in ("min", "max")]
    if bad:
        raise ValueError(f"directions must be 'min' or 'max', got {bad}")
    if np.isnan(pts).any():
        raise ValueError("values contain NaN: drop rows with missing objectives first")
    sign = np.array([1.0 if d == "min" else -1.0 for d in directions])
    return pts * sign


def dominates(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether a dominates b (both already in minimisation form)."""
    return bool(np.all(a <= b) and np.any(a < b))


def pareto_ranks(values, directions: Sequence[str]) -> np.ndarray:
    """Rank of each row: 0 for the front, 1 for the front once rank 0 is removed, …"""
    pts = _as_minimisation(values, directions)
    n = len(pts)
    # dominated_by[i, j]: j dominates i
    le = np.all(pts[None, :, :] <= pts[:, None, :], axis=2)
    lt = np.any(pts[None, :, :] < pts[:, None, :], axis=2)
    dominated_by = le & lt
    ranks = np.full(n, -1)
    remaining = np.ones(n, dtype=bool)
    rank = 0
    while remaining.any():
        front = remaining & ~np.any(dominated_by[:, remaining], axis=1)
        ranks[front] = rank
        remaining &= ~front
        rank += 1
    return ranks


def pareto_front(values, directions: Sequence[str]) -> np.ndarray:
    """Boolean mask of the non-dominated rows."""
    return pareto_ranks(values, directions) == 0


# ---- hypervolume --------------------------------------------------------------------------
def _nondominated_unique(pts: np.ndarray) -> np.ndarray:
    """The distinct non-dominated rows of a minimisation point set."""
    if len(pts) <= 1:
        return pts
    pts = np.unique(pts, axis=0)
    le = np.all(pts[None, :, :] <= pts[:, None, :], axis=2)
    lt = np.any(pts[None, :, :] < pts[:, None, :], axis=2)
    return pts[~np.any(le & lt, axis=1)]


def _hv2(pts: np.ndarray, ref: np.ndarray) -> float:
    """Exact 2-D hypervolume (minimisation; every point strictly better than ref)."""
    order = np.lexsort((pts[:, 1], pts[:, 0]))  # by x, then y
    p = pts[order]
    best_y = np.minimum.accumulate(p[:, 1])
    # a staircase: each x step covers [x_i, x_{i+1}) × [best_y_i, ref_y)
    xs = np.append(p[:, 0], ref[0])
    return float(np.sum((xs[1:] - xs[:-1]) * (ref[1] - best_y)))


def _hv(pts: np.ndarray, ref: np.ndarray) -> float:
    k = pts.shape[1]
    if len(pts) == 0:
        return 0.0
    if k == 1:
        return float(ref[0] - pts[:, 0].min())
    if k == 2:
        return _hv2(pts, ref)
    pts = _nondominated_unique(pts)
    # slice along the last objective: between consecutive z levels, the covered (k-1)-D
    # region is that of every point whose z is at or below the slab's lower edge
    order = np.argsort(pts[:, -1], kind="stable")
    p = pts[order]
    zs = np.append(p[:, -1], ref[-1])
    total = 0.0
    for i in range(len(p)):
        depth = zs[i + 1] - zs[i]
        if depth > 0:
            total += depth * _hv(_nondominated_unique(p[: i + 1, :-1]), ref[:-1])
    return total


def hypervolume(values, directions: Sequence[str], reference) -> float:
    """Exact hypervolume dominated by `values` and bounded by the `reference` point.

    `reference` is given in the objectives' own units and directions (e.g. a PSNR floor for
    a 'max' objective, a parameter ceiling for a 'min' one). Points that are not strictly
    better than the reference in every objective contribute nothing.
    """
    pts = _as_minimisation(values, directions)
    ref = np.asarray(reference, dtype=np.float64).reshape(-1)
    if ref.shape != (len(directions),):
        raise ValueError(f"reference point has {ref.size} values for {len(directions)} objectives")
    if np.isnan(ref).any():
        raise ValueError("reference point contains NaN")
    ref = ref * np.array([1.0 if d == "min" else -1.0 for d in directions])
    pts = pts[np.all(pts < ref, axis=1)]
    return _hv(_nondominated_unique(pts), ref)


def default_reference(values, directions: Sequence[str], margin: float = 0.1) -> np.ndarray:
    """A reference point just beyond the worst value of each objective: worst − margin·range
    for 'max' objectives, worst + margin·range for 'min' ones (range 0 → margin·|worst|, or
    margin when that is 0 too), so every given point contributes to the hypervolume."""
    pts = _as_minimisation(values, directions)
    if len(pts) == 0:
        raise ValueError("no points to derive a reference point from")
    worst, best = pts.max(axis=0), pts.min(axis=0)
    span = worst - best
    span = np.where(span > 0, span, np.where(np.abs(worst) > 0, np.abs(worst), 1.0))
    ref = worst + margin * span
    return ref * np.array([1.0 if d == "min" else -1.0 for d in directions])


# ---- knee -----------------------------------------------------------------------------------
def normalise(values, directions: Sequence[str]) -> np.ndarray:
    """Min–max normalised minimisation form: 0 = best over the rows, 1 = worst; constant
    columns become 0."""
    pts = _as_minimisation(values, directions)
    if len(pts) == 0:
        return pts
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    span = hi - lo
    return np.where(span > 0, (pts - lo) / np.where(span > 0, span, 1.0), 0.0)


def knee_index(values, directions: Sequence[str]) -> int:
    """Row index of the knee of `values` (meant for the front's rows; see the module
    docstring): the largest distance below the hyperplane through the normalised extremes."""
    pts = np.asarray(values, dtype=np.float64)
    if len(pts) == 0:
        raise ValueError("no points: the knee of an empty front is undefined")
    f = normalise(pts, directions)
    return int(np.argmin(f.sum(axis=1)))  # first minimum on ties


def knee_distance(values, directions: Sequence[str]) -> np.ndarray:
    """Signed distance of each row below the hyperplane Σ f̂ᵢ = 1 (larger = more of a knee)."""
    f = normalise(values, directions)
    return (1.0 - f.sum(axis=1)) / np.sqrt(max(f.shape[1], 1))

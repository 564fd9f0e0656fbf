"""Non-dominated sorting over any objectives with directions.

A point dominates another when it is at least as good in every objective and strictly
better in one. Equal points (duplicates) do not dominate each other, so they share a rank.
Rows with a missing (NaN/None) objective are not ranked here — callers exclude and count them.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _as_minimisation(values, directions: Sequence[str]) -> np.ndarray:
    """(n, k) values with every 'max' column negated, so smaller is better everywhere."""
    pts = np.asarray(values, dtype=np.float64)
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

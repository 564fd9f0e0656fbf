"""Median wall-clock time of a callable on CPU or CUDA (synchronised), shared by the benchmarks.

The timing itself is srstudy's one latency timer, :func:`srstudy.measure.timing.time_ms`.
"""
from __future__ import annotations

import statistics

import torch

from srstudy.measure.timing import device_sync, time_ms


def median_ms(fn, device: torch.device, repeats: int, warmup: int) -> float:
    """Median milliseconds of `fn()` over `repeats` calls after `warmup` untimed ones."""
    return statistics.median(time_ms(fn, repeats=repeats, warmup=warmup, sync=device_sync(device)))

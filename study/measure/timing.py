"""The one latency timer: wall time of a callable, per call, after warm-up, device synchronised.

Every latency srstudy reports comes from :func:`time_ms`: a trial's ``latency_ms``
(``trials.loop.measure_latency``), ``srstudy export``'s ONNX-vs-PyTorch table, ``srstudy bench``'s
timed loop and the benchmark scripts. A GPU runs asynchronously, so a call's time only covers
its work when the device is synchronised after it: pass :func:`device_sync` of the device.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

__all__ = ["device_sync", "time_ms"]


def device_sync(device: torch.device | str | None) -> Callable[[], None]:
    """``torch.cuda.synchronize(device)`` for a CUDA device, else a no-op."""
    if device is not None and torch.device(device).type == "cuda":
        dev = torch.device(device)
        return lambda: torch.cuda.synchronize(dev)
    return lambda: None


def time_ms(fn: Callable[[], Any], *, repeats: int, warmup: int = 0,
            sync: Callable[[], None] | None = None) -> list[float]:
    """Wall time of ``fn()`` in ms, ``repeats`` times after ``warmup`` untimed calls.

    ``sync`` (e.g. :func:`device_sync`) runs after the warm-up and after each timed call, so
    every time covers the call's own work and nothing queued before it.
    """
    sync = sync or (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        out.append((time.perf_counter() - t0) * 1e3)
    return out

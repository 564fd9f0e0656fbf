"""Wall-clock timing of a callable on CPU or CUDA (synchronised), shared by the benchmarks."""
from __future__ import annotations

import statistics
import time

import torch


def median_ms(fn, device: torch.device, repeats: int, warmup: int) -> float:
    """Median milliseconds of `fn()` over `repeats` calls after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)

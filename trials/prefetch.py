"""Batches built ahead in a background thread, so cropping and stacking leave the GPU's critical path.

A batch is a pure function of (seed, iteration) (`batches.make_batch`), so building it early in
another thread changes nothing about what the model sees: the prefetched stream is the same
batches in the same order, and a resumed run still starts at its checkpoint's iteration.
Built on the host as uint8 (a quarter of float32's bytes), pinned when the consumer is a CUDA
device so the copy to it can overlap compute (`non_blocking=True`).
"""
from __future__ import annotations

import queue
import threading
from collections.abc import Callable

from .batches import Batch


class BatchPrefetcher:
    """Builds the batches of iterations `start, start+1, …, stop-1` up to `depth` ahead.

    `build(iteration)` makes one batch; `next(iteration)` returns it (iterations must be asked
    for in order). An error in the builder is raised by `next`. Use as a context manager, or
    call `close()`: the thread stops and queued batches are dropped.
    """

    def __init__(self, build: Callable[[int], Batch], *, start: int, stop: int, depth: int = 2,
                 pin: bool = False) -> None:
        if depth < 1:
            raise ValueError(f"prefetch depth must be >= 1, got {depth}")
        self._build, self._pin = build, pin
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(start, stop), name="srstudy-prefetch", daemon=True)
        self._thread.start()

    def _run(self, start: int, stop: int) -> None:
        for it in range(start, stop):
            try:
                batch = self._build(it)
                if self._pin:
                    batch = batch.pin_memory()
                item = (it, batch, None)
            except BaseException as e:  # handed to the consumer, which raises it
                item = (it, None, e)
            while not self._stop.is_set():
                try:
                    self._queue.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if self._stop.is_set() or item[2] is not None:
                return

    def next(self, iteration: int) -> Batch:
        """The batch of `iteration` (the next one in order)."""
        while True:
            try:
                it, batch, err = self._queue.get(timeout=1.0)
                break
            except queue.Empty:
                if not self._thread.is_alive():
                    raise RuntimeError("the batch prefetch thread ended early") from None
        if err is not None:
            raise err
        if it != iteration:
            raise RuntimeError(f"prefetched batch of iteration {it} where {iteration} was expected")
        return batch

    def close(self) -> None:
        """Stop the thread and drop what it built ahead."""
        self._stop.set()
        self._thread.join(timeout=10)

    def __enter__(self) -> "BatchPrefetcher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

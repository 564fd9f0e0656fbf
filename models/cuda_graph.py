"""A network's inference forward replayed from one CUDA graph, for one input shape.

Why: a batch-1 forward at LR 64×64 is bound by the host launching kernels, not by the GPU: the
DVMSR topology launches several kernels per block (LayerNorms, the causal conv1d, the scan,
matmuls), and Triton's Python launcher costs tens of microseconds each. A CUDA graph records
the launches once and replays them with one call, so latency measures the GPU's work.

    run = capture_forward(model, torch.rand(1, 3, 64, 64, device="cuda"))
    y = run(x)            # x of the captured shape; y is the graph's output buffer (clone to keep)

Only for inference (no autograd) and for inputs of the captured shape and dtype; another shape
is refused, naming both. On a CPU there is nothing to capture: refused with the device named.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["capture_forward"]


def capture_forward(model: torch.nn.Module, example: torch.Tensor, *,
                    warmup: int = 3) -> Callable[[torch.Tensor], torch.Tensor]:
    """`model`'s no-grad forward for inputs shaped like `example`, captured into one CUDA graph.

    The warm-up forwards run on a side stream before capture (PyTorch's recipe), so lazy
    work — Triton compiling or autotuning a kernel for this shape, cuBLAS picking an
    algorithm — happens outside the graph. The returned callable copies its input into the
    graph's static input, replays the graph and returns the static output (overwritten by the
    next call: clone it to keep it).
    """
    if example.device.type != "cuda":
        raise ValueError(f"CUDA graphs need a CUDA input; the example is on {example.device} "
                         "(run the model eagerly there)")
    if warmup < 1:
        raise ValueError(f"warmup must be >= 1 (lazy kernel compilation must happen before capture), got {warmup}")
    static_in = example.detach().clone()
    side = torch.cuda.Stream(device=example.device)
    side.wait_stream(torch.cuda.current_stream(example.device))
    with torch.no_grad(), torch.cuda.stream(side):
        for _ in range(warmup):
            model(static_in)
    torch.cuda.current_stream(example.device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    # thread_local: CUDA calls of other threads of the process (a Ray worker's, a sampler's) do
    # not invalidate this thread's capture
    with torch.no_grad(), torch.cuda.graph(graph, capture_error_mode="thread_local"):
        static_out = model(static_in)

    def run(x: torch.Tensor) -> torch.Tensor:
        """Replay the captured forward on `x` (the captured shape, dtype and device)."""
        if x.shape != static_in.shape or x.dtype != static_in.dtype or x.device != static_in.device:
            raise ValueError(f"this CUDA graph was captured for {tuple(static_in.shape)} {static_in.dtype} on "
                             f"{static_in.device}; got {tuple(x.shape)} {x.dtype} on {x.device} "
                             "(capture another graph for that shape)")
        static_in.copy_(x)
        graph.replay()
        return static_out

    return run

"""Host-side layout helpers of the Triton kernels: which strided tensors a kernel takes as they are.

The kernels index activations by a few strides with the tokens innermost, so a channel-major
view passes without a copy (:func:`tokens_inner`); tensors that share one row offset in a kernel
must share strides (:func:`like`); an absent optional tensor still needs a valid pointer
(:func:`or_placeholder`).
"""
from __future__ import annotations

import torch

__all__ = ["dense", "like", "or_placeholder", "tokens_inner"]


def like(x: torch.Tensor | None, ref: torch.Tensor) -> torch.Tensor | None:
    """`x` with `ref`'s strides (one kernel row offset serves u, Δ, z, y, dy): a copy only if they differ."""
    if x is None or x.stride() == ref.stride():
        return x
    return torch.empty_like(ref, dtype=x.dtype).copy_(x)


def dense(x: torch.Tensor) -> bool:
    """Whether `x`'s elements fill one gap-free block of memory in some order of its axes (then
    ``torch.empty_like(x)`` has `x`'s strides): size-1 axes aside, its strides sorted are 1 and
    the running products of the sizes."""
    expected = 1
    for stride, size in sorted((st, sz) for st, sz in zip(x.stride(), x.shape) if sz != 1):
        if stride != expected:
            return False
        expected *= size
    return True


def tokens_inner(x: torch.Tensor) -> torch.Tensor:
    """`x` as it is if its tokens (last axis) are contiguous and its layout dense, else a contiguous copy."""
    return x if (x.stride(-1) == 1 and (x.is_contiguous() or dense(x))) else x.contiguous()


def or_placeholder(x: torch.Tensor | None, placeholder: torch.Tensor) -> torch.Tensor:
    """A valid pointer for an absent optional tensor (the kernel never reads it: its HAS_* flag is False)."""
    return placeholder if x is None else x

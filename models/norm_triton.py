"""LayerNorm over a few dozen channels as Triton kernels (forward, backward) for the network's norms.

DVMSR normalises every token's C = 32…60 channels (B·L ≈ 0.5 M rows a batch). PyTorch's kernel
spends one thread block on each such short row (~0.8 ms a call on an H200 at batch 128, LR 64²);
these kernels normalise ``ROWS`` rows per program in registers, read x through any (row, channel)
strides (so the channel-major mixer output needs no copy first) and write y contiguous. The
backward recomputes x̂ from the saved per-row mean and 1/σ, writes dx, and sums dw, db per
program into a (programs, C) buffer that one torch.sum reduces (no atomics: deterministic).
Same numbers as ``F.layer_norm`` (fp32 inside; under autocast the output is fp32, as autocast
makes layer_norm's). CUDA tensors, or CPU under ``TRITON_INTERPRET=1`` (tests).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import triton
import triton.language as tl

from .grad_mode import records_grad
from .scan import _exporting

__all__ = ["layer_norm", "fused_layer_norm"]

TILE = 4096  # rows × channels (padded to a power of two) per program


@triton.jit
def _rows(pid, M, C, ROWS: tl.constexpr, C_P2: tl.constexpr):
    r = pid * ROWS + tl.arange(0, ROWS)[:, None]                  # (ROWS, 1)
    c = tl.arange(0, C_P2)[None, :]                               # (1, C)
    return r, c, (r < M) & (c < C)


@triton.jit
def _fwd_kernel(x_ptr, w_ptr, b_ptr, y_ptr, mean_ptr, rstd_ptr, M, C, sx_r, sx_c, eps,
                ROWS: tl.constexpr, C_P2: tl.constexpr, STATS: tl.constexpr):
    r, c, m = _rows(tl.program_id(0), M, C, ROWS, C_P2)
    x = tl.load(x_ptr + r.to(tl.int64) * sx_r + c.to(tl.int64) * sx_c, mask=m, other=0.0).to(tl.float32)
    mean = tl.sum(x, axis=1, keep_dims=True) / C
    xc = tl.where(m, x - mean, 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(xc * xc, axis=1, keep_dims=True) / C + eps)
    w = tl.load(w_ptr + c, mask=c < C, other=0.0).to(tl.float32)
    b = tl.load(b_ptr + c, mask=c < C, other=0.0).to(tl.float32)
    tl.store(y_ptr + r.to(tl.int64) * C + c, (xc * rstd * w + b).to(y_ptr.dtype.element_ty), mask=m)
    if STATS:  # for the backward (inference stores none)
        tl.store(mean_ptr + r, mean, mask=r < M)
        tl.store(rstd_ptr + r, rstd, mask=r < M)


@triton.jit
def _bwd_kernel(x_ptr, w_ptr, dy_ptr, mean_ptr, rstd_ptr, dx_ptr, dw_ptr, db_ptr, M, C,
                sx_r, sx_c, sdy_r, sdy_c, ROWS: tl.constexpr, C_P2: tl.constexpr):
    pid = tl.program_id(0)
    r, c, m = _rows(pid, M, C, ROWS, C_P2)
    x = tl.load(x_ptr + r.to(tl.int64) * sx_r + c.to(tl.int64) * sx_c, mask=m, other=0.0).to(tl.float32)
    dy = tl.load(dy_ptr + r.to(tl.int64) * sdy_r + c.to(tl.int64) * sdy_c, mask=m, other=0.0).to(tl.float32)
    mean = tl.load(mean_ptr + r, mask=r < M, other=0.0)
    rstd = tl.load(rstd_ptr + r, mask=r < M, other=0.0)
    w = tl.load(w_ptr + c, mask=c < C, other=0.0).to(tl.float32)
    xhat = tl.where(m, (x - mean) * rstd, 0.0)
    wdy = w * dy
    c1 = tl.sum(xhat * wdy, axis=1, keep_dims=True) / C
    c2 = tl.sum(wdy, axis=1, keep_dims=True) / C
    tl.store(dx_ptr + r.to(tl.int64) * C + c, ((wdy - (xhat * c1 + c2)) * rstd).to(dx_ptr.dtype.element_ty), mask=m)
    cc = tl.arange(0, C_P2)
    tl.store(dw_ptr + pid * C + cc, tl.sum(dy * xhat, axis=0), mask=cc < C)
    tl.store(db_ptr + pid * C + cc, tl.sum(dy, axis=0), mask=cc < C)


def _tile(C: int) -> tuple[int, int]:
    C_P2 = triton.next_power_of_2(C)
    return max(1, TILE // C_P2), C_P2


def _forward(x, weight, bias, eps, out_dtype, stats: bool):
    """Launch the forward kernel: (y, x as (rows, C), mean, 1/σ). `stats`: also store each row's mean
    and 1/σ, which the backward reads (else they are None)."""
    C = x.shape[-1]
    x2 = x if x.dim() == 2 else _rows_view(x)
    M = x2.shape[0]
    ROWS, C_P2 = _tile(C)
    y = torch.empty(M, C, device=x.device, dtype=out_dtype)
    mean, rstd = (torch.empty(M, device=x.device, dtype=torch.float32) for _ in range(2)) if stats else (None, None)
    _fwd_kernel[(triton.cdiv(M, ROWS),)](x2, weight, bias, y, y if mean is None else mean, y if rstd is None else rstd,
                                         M, C, x2.stride(0), x2.stride(1), eps, ROWS=ROWS, C_P2=C_P2, STATS=stats,
                                         num_warps=4)
    return y.view(x.shape), x2, mean, rstd


class _LayerNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, eps, out_dtype):
        y, x2, mean, rstd = _forward(x, weight, bias, eps, out_dtype, stats=True)
        ctx.save_for_backward(x2, weight, mean, rstd)
        ctx.x_shape = x.shape
        return y

    @staticmethod
    def backward(ctx, dy):
        x2, weight, mean, rstd = ctx.saved_tensors
        M, C = x2.shape
        dy2 = _rows_view(dy)
        ROWS, C_P2 = _tile(C)
        grid = triton.cdiv(M, ROWS)
        dx = torch.empty(M, C, device=x2.device, dtype=x2.dtype)
        dw = torch.empty(grid, C, device=x2.device, dtype=torch.float32)
        db = torch.empty(grid, C, device=x2.device, dtype=torch.float32)
        _bwd_kernel[(grid,)](x2, weight, dy2, mean, rstd, dx, dw, db, M, C, x2.stride(0), x2.stride(1),
                             dy2.stride(0), dy2.stride(1), ROWS=ROWS, C_P2=C_P2, num_warps=4)
        return dx.view(ctx.x_shape), dw.sum(0).to(weight.dtype), db.sum(0).to(weight.dtype), None, None


def _rows_view(x: torch.Tensor) -> torch.Tensor:
    """x as (rows, C) without a copy when its leading dims merge into one row stride, else a copy."""
    try:
        return x.view(-1, x.shape[-1])
    except RuntimeError:
        return x.reshape(-1, x.shape[-1])


def layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """LayerNorm over the last axis with the Triton kernels (see the module docstring)."""
    out_dtype = torch.float32 if torch.is_autocast_enabled(x.device.type) else x.dtype
    if records_grad(x, weight, bias):
        return _LayerNorm.apply(x, weight, bias, eps, out_dtype)
    return _forward(x, weight, bias, eps, out_dtype, stats=False)[0]  # inference


#: Without autograd, norms over at most this many rows go through PyTorch's kernel: at batch-1 LR 64²
#: (4,096 rows) eager DVMSR inference is bound by the host, and a Triton launch costs ~45 µs more host
#: time than ATen's (H200: 3.06 / 3.13 ms a forward against 3.56 / 3.61 with the Triton norm, in turns
#: with the reference; dvmsr_inference_h200_lr64_ln_*.json). At 256² (65,536 rows) the GPU bounds it and
#: the Triton norm is faster (6.71 against 7.31 ms a forward). Session 12 (dvmsr_inference_h200_ln_*.json,
#: two turns each): PyTorch's norm is still faster at 160² (25,600 rows: 3.35 / 3.22 against 3.56 / 3.55 ms),
#: Triton's at 192² (36,864 rows: 3.99 / 3.99 against 4.35 / 4.30 ms); at 176² (30,976 rows, one run each)
#: PyTorch's still (3.84 against 3.96 ms; dvmsr_inference_h200_ln_lr176.json). 32,768 lies between.
ATEN_INFERENCE_MAX_ROWS = 32768


def fused_layer_norm(norm: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    """`norm(x)`: through the Triton kernels on CUDA when :func:`triton_norm_wanted`, else through PyTorch."""
    if x.is_cuda and triton_norm_wanted(norm, x):
        return layer_norm(x, norm.weight, norm.bias, norm.eps)
    return norm(x)


def triton_norm_wanted(norm: nn.LayerNorm, x: torch.Tensor) -> bool:
    """Whether `norm(x)` should take the Triton kernels (on a CUDA tensor): an affine norm over the last
    axis, not being exported, and either recorded by autograd or over more than
    :data:`ATEN_INFERENCE_MAX_ROWS` rows (fewer rows without autograd: PyTorch's kernel, fewer host µs)."""
    if not (norm.elementwise_affine and len(norm.normalized_shape) == 1 and norm.bias is not None) or _exporting():
        return False
    return records_grad(x, norm.weight, norm.bias) or x.numel() > ATEN_INFERENCE_MAX_ROWS * x.shape[-1]

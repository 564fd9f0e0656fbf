"""Causal depthwise conv1d + SiLU as Triton kernels (forward, backward): the mixer's short conv.

    x : (Bt, Dm, L), tokens innermost (any batch/channel strides)   w : (Dm, K)   bias : (Dm,)
    u[b, d, t] = silu(bias[d] + Σ_k w[d, k] · x[b, d, t − K + 1 + k])      (x = 0 before t = 0)

It is what ``F.silu(nn.Conv1d(Dm, Dm, K, groups=Dm, padding=K−1)(x)[..., :L])`` computes, in
one pass over x instead of a padded conv, a slice and an activation (and their copies), and
the output keeps x's layout, so the mixer's channel-major ``(Dm, Bt·L)`` activations go in
and out without a transpose.  The backward recomputes the pre-activation from x (no extra
tensor is saved) and writes dx; dw and dbias are summed per program and added with relaxed
fp32 atomics.  Each program walks ``SPAN`` tokens of one (sequence, channel) row in blocks of
``BLOCK`` tokens.  Runs on CUDA tensors, and on CPU under ``TRITON_INTERPRET=1`` (tests).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .grad_mode import records_grad
from .layouts import tokens_inner

__all__ = ["causal_conv1d_silu"]

BLOCK = {"fwd": 1024, "bwd": 512}  # tokens per step of a program
SPAN = 4096                          # tokens per program (a row of L tokens takes ceil(L / SPAN) programs)


@triton.jit
def _pre(x_ptr, w_ptr, bias, d, tt, L, K: tl.constexpr):
    """The conv's pre-activation at tokens tt (fp32)."""
    acc = tl.zeros(tt.shape, tl.float32) + bias
    for k in tl.static_range(K):
        src = tt - (K - 1) + k
        xv = tl.load(x_ptr + src, mask=(src >= 0) & (src < L), other=0.0).to(tl.float32)
        acc += tl.load(w_ptr + d * K + k).to(tl.float32) * xv
    return acc


@triton.jit
def _fwd_kernel(x_ptr, w_ptr, b_ptr, u_ptr, Dm, L, sx_b, sx_d,
                K: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK: tl.constexpr, SPAN: tl.constexpr):
    row, part = tl.program_id(0), tl.program_id(1)
    b, d = (row // Dm).to(tl.int64), row % Dm
    off = b * sx_b + d.to(tl.int64) * sx_d
    bias = tl.load(b_ptr + d).to(tl.float32) if HAS_BIAS else 0.0
    for i in range(SPAN // BLOCK):
        tt = part * SPAN + i * BLOCK + tl.arange(0, BLOCK)
        pre = _pre(x_ptr + off, w_ptr, bias, d, tt, L, K)
        tl.store(u_ptr + off + tt, (pre * tl.sigmoid(pre)).to(u_ptr.dtype.element_ty), mask=tt < L)


@triton.jit
def _bwd_kernel(x_ptr, w_ptr, b_ptr, du_ptr, dx_ptr, dw_ptr, db_ptr, Dm, L, sx_b, sx_d,
                K: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK: tl.constexpr, SPAN: tl.constexpr):
    row, part = tl.program_id(0), tl.program_id(1)
    b, d = (row // Dm).to(tl.int64), row % Dm
    off = b * sx_b + d.to(tl.int64) * sx_d
    bias = tl.load(b_ptr + d).to(tl.float32) if HAS_BIAS else 0.0
    kk = tl.arange(0, K)
    dw_acc = tl.zeros([K, BLOCK], tl.float32)
    db_acc = tl.zeros([BLOCK], tl.float32)
    for i in range(SPAN // BLOCK):
        tt = part * SPAN + i * BLOCK + tl.arange(0, BLOCK)
        dx = tl.zeros([BLOCK], tl.float32)
        for j in tl.static_range(K):  # dpre at t + j feeds dx[t] through w[K-1-j]
            s = tt + j
            pre = _pre(x_ptr + off, w_ptr, bias, d, s, L, K)
            sg = tl.sigmoid(pre)
            g = tl.load(du_ptr + off + s, mask=s < L, other=0.0).to(tl.float32) * sg * (1.0 + pre * (1.0 - sg))
            dx += tl.load(w_ptr + d * K + (K - 1 - j)).to(tl.float32) * g
            if j == 0:  # this block's own dpre: dbias and dw[k] = Σ_t dpre[t]·x[t − K + 1 + k]
                db_acc += g
                src = tt[None, :] - (K - 1) + kk[:, None]                       # (K, BLOCK)
                xs = tl.load(x_ptr + off + src, mask=(src >= 0) & (src < L), other=0.0).to(tl.float32)
                dw_acc += g[None, :] * xs
        tl.store(dx_ptr + off + tt, dx.to(dx_ptr.dtype.element_ty), mask=tt < L)
    tl.atomic_add(dw_ptr + d * K + kk, tl.sum(dw_acc, axis=1), sem="relaxed")
    if HAS_BIAS:
        tl.atomic_add(db_ptr + d, tl.sum(db_acc, axis=0), sem="relaxed")


def _launch_shape(x: torch.Tensor) -> tuple[int, int]:
    Bt, Dm, L = x.shape
    return Bt * Dm, triton.cdiv(L, SPAN)


def _forward(x, weight, bias):
    """Launch the forward kernel: (u, x as launched, the (Dm, K) weight)."""
    x = tokens_inner(x)  # tokens innermost and a dense layout: the kernels index rows by two strides
    Bt, Dm, L = x.shape
    w = weight.reshape(Dm, -1).contiguous()
    u = torch.empty_like(x)
    _fwd_kernel[_launch_shape(x)](x, w, w if bias is None else bias, u, Dm, L, x.stride(0), x.stride(1),
                                  K=w.shape[1], HAS_BIAS=bias is not None, BLOCK=BLOCK["fwd"], SPAN=SPAN)
    return u, x, w


class _CausalConvSiLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias):
        u, x, w = _forward(x, weight, bias)
        ctx.save_for_backward(x, w, bias)
        ctx.weight_shape = weight.shape
        return u

    @staticmethod
    def backward(ctx, du):
        x, w, bias = ctx.saved_tensors
        Bt, Dm, L = x.shape
        if du.stride() != x.stride():
            du = torch.empty_like(x, dtype=du.dtype).copy_(du)
        dx = torch.empty_like(x)
        dw = torch.zeros(w.shape, device=x.device, dtype=torch.float32)
        db = None if bias is None else torch.zeros(Dm, device=x.device, dtype=torch.float32)
        _bwd_kernel[_launch_shape(x)](x, w, w if bias is None else bias, du, dx, dw, dw if db is None else db,
                                      Dm, L, x.stride(0), x.stride(1),
                                      K=w.shape[1], HAS_BIAS=bias is not None, BLOCK=BLOCK["bwd"], SPAN=SPAN)
        return (dx, dw.to(w.dtype).reshape(ctx.weight_shape),
                None if db is None else db.to(bias.dtype))


def causal_conv1d_silu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """silu(causal depthwise conv1d(x)) with the Triton kernels; x : (Bt, Dm, L), weight : (Dm, 1, K) or (Dm, K).

    The output has x's dtype and layout (computed in fp32).  CUDA tensors (or CPU under
    TRITON_INTERPRET=1)."""
    if x.dim() != 3 or weight.numel() % x.shape[1]:
        raise ValueError(f"causal_conv1d_silu needs x (Bt, Dm, L) and a (Dm, 1, K) weight; got x {tuple(x.shape)}, "
                         f"weight {tuple(weight.shape)}")
    if records_grad(x, weight, bias):
        return _CausalConvSiLU.apply(x, weight, bias)
    return _forward(x, weight, bias)[0]  # inference

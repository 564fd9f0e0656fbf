"""Selective scan as two Triton kernels (forward, backward): the fast path without mamba-ssm.

Same contract as :func:`srstudy.models.scan.selective_scan` (``backend="triton"``)::

    u, delta, z : (Bt, Dm, L)     A : (Dm, N)      B, C : (Bt, N, L)
    D, delta_bias : (Dm,)         y : (Bt, Dm, L)  (dtype of u; computed in fp32)

Design (the layout of mamba_ssm's CUDA kernel, written in Triton):

* one program per (sequence, channel) — ``grid = Bt·Dm`` — holding the state
  ``h : (N,)`` in registers and walking L in chunks of ``BLOCK_L`` tokens;
* inside a chunk, the recurrence ``h_t = a_t·h_{t-1} + b_t`` with
  ``a_t = exp(Δ_t·A)`` and ``b_t = Δ_t·u_t·B_t`` is one ``tl.associative_scan``
  over the (N, BLOCK_L) tile with the first-order combine
  ``(a1, b1) ∘ (a2, b2) = (a1·a2, a2·b1 + b2)``; the carried state enters as
  ``h_t = (Π a)·h_in + scan_b``.  Nothing (Bt, Dm, N, L)-sized is ever written:
  y is reduced over N in registers (``y_t = Σ_n C_t,n·h_t,n``);
* the forward stores the state entering every chunk, ``(Bt, Dm, n_chunks, N)``
  (1/BLOCK_L of a full state history), so the backward recomputes each chunk's
  states from its entry state instead of replaying the sequence;
* the backward walks the chunks in reverse with the adjoint recurrence
  ``g_t = C_t·dy_t + a_{t+1}·g_{t+1}`` (``g = ∂loss/∂h``) as a reverse
  ``associative_scan`` with the same combine, carrying ``g`` between chunks.
  With ``m_t = a_t·h_{t-1} = h_t − b_t`` (no division, no shift):
  ``∂/∂(Δ_t·A_n) = g_t,n·m_t,n``, hence ``dA_n = Σ_t Δ_t·g·m``,
  ``dΔ_t = Σ_n A_n·g·m + u_t·Σ_n g·B``, ``du_t = Δ_t·Σ_n g·B (+ D·dy)``,
  ``dB_t = g·Δ_t·u_t``, ``dC_t = dy_t·h_t``.  dB and dC are shared by the Dm
  channels of a sequence, and dA, dD, dΔ_bias by its Bt sequences: those are
  accumulated with fp32 atomics (summation order varies between runs in the
  last bits, as with mamba_ssm).

Runs on CUDA tensors; on CPU only under ``TRITON_INTERPRET=1`` (Triton's
interpreter: the test suite checks both kernels against the reference
recurrence that way).  fp32/fp16/bf16 inputs; float64 is not supported (use
``chunked`` or ``reference``).
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

__all__ = ["selective_scan_triton", "triton_unavailable", "BLOCK_L"]

#: Tokens per chunk (one associative scan over an (N, BLOCK_L) tile per step).
BLOCK_L = 128


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


def triton_unavailable(device: torch.device, dtype: torch.dtype | None) -> str | None:
    """None when the Triton kernels can run for tensors on `device` of `dtype`, else why not."""
    if device.type != "cuda" and not (device.type == "cpu" and _interpreting()):
        return (f"tensors are on {device.type}; the Triton kernels need CUDA tensors "
                "(or CPU tensors under TRITON_INTERPRET=1, Triton's interpreter, for testing)")
    if dtype is not None and dtype not in (torch.float32, torch.float16, torch.bfloat16):
        return f"the Triton kernels take fp32/fp16/bf16 inputs, not {dtype}"
    return None


@triton.jit
def _first_order(a1, b1, a2, b2):
    # (a1, b1) then (a2, b2):  h -> a2·(a1·h + b1) + b2
    return a1 * a2, b1 * a2 + b2


@triton.jit
def _load_delta(dt_row, bias, tt, L, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr):
    """Δ at tokens tt (0 beyond L: a = 1, b = 0, the identity step) and its pre-softplus value."""
    m = tt < L
    raw = tl.load(dt_row + tt, mask=m, other=0.0).to(tl.float32)
    if HAS_BIAS:
        raw = raw + bias
    dt = raw
    if SOFTPLUS:
        dt = tl.where(raw <= 20.0, tl.log(1.0 + tl.exp(raw)), raw)
    return tl.where(m, dt, 0.0), raw


@triton.jit
def _program(A_ptr, D_ptr, bias_ptr, Dm, N, su_b, su_d, sB_b, sB_n,
             HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr, N_P2: tl.constexpr, BLOCK: tl.constexpr):
    """This program's (sequence b, channel d), index ranges, per-channel parameters and row offsets."""
    pid = tl.program_id(0)
    b = (pid // Dm).to(tl.int64)  # 64-bit offsets: Bt·Dm·L may pass 2**31
    d = pid % Dm
    n = tl.arange(0, N_P2)
    t = tl.arange(0, BLOCK)
    nm = n < N
    A = tl.load(A_ptr + d * N + n, mask=nm, other=0.0).to(tl.float32)          # A : (N,)
    bias = tl.load(bias_ptr + d).to(tl.float32) if HAS_BIAS else 0.0
    Dd = tl.load(D_ptr + d).to(tl.float32) if HAS_D else 0.0
    row = b * su_b + d * su_d                                                  # u, Δ, z, y rows
    bc_rows = b * sB_b + n[:, None] * sB_n                                     # B, C rows : (N, 1)
    return b, d, n, t, nm, A, bias, Dd, row, bc_rows


@triton.jit
def _chunk_states(u_ptr, dt_ptr, B_ptr, C_ptr, row, bc_rows, c, t, nm, A, bias, h_in, L,
                  HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, BLOCK: tl.constexpr):
    """Chunk c's inputs and its states h_t : (N, T) from the state h_in entering it."""
    tt = c * BLOCK + t
    tm = tt < L
    m2 = nm[:, None] & tm[None, :]
    u = tl.load(u_ptr + row + tt, mask=tm, other=0.0).to(tl.float32)           # u : (T,)
    dt, raw = _load_delta(dt_ptr + row, bias, tt, L, HAS_BIAS, SOFTPLUS)
    Bv = tl.load(B_ptr + bc_rows + tt[None, :], mask=m2, other=0.0).to(tl.float32)  # B : (N, T)
    Cv = tl.load(C_ptr + bc_rows + tt[None, :], mask=m2, other=0.0).to(tl.float32)
    a = tl.exp(dt[None, :] * A[:, None])                                       # a : (N, T)
    bb = (dt * u)[None, :] * Bv
    pa, pb = tl.associative_scan((a, bb), axis=1, combine_fn=_first_order)
    hs = pa * h_in[:, None] + pb                                               # h_t : (N, T)
    return tt, tm, m2, u, dt, raw, Bv, Cv, bb, hs


@triton.jit
def _fwd_kernel(u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, y_ptr, hc_ptr,
               Dm, L, N, n_chunks,
               su_b, su_d, sB_b, sB_n,
               HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr,
               SOFTPLUS: tl.constexpr, N_P2: tl.constexpr, BLOCK: tl.constexpr):
    b, d, n, t, nm, A, bias, Dd, row, bc_rows = _program(A_ptr, D_ptr, bias_ptr, Dm, N, su_b, su_d, sB_b, sB_n,
                                                         HAS_D, HAS_BIAS, N_P2, BLOCK)
    h = tl.zeros([N_P2], dtype=tl.float32)                                     # h : (N,)
    for c in range(n_chunks):
        tl.store(hc_ptr + ((b * Dm + d) * n_chunks + c) * N + n, h, mask=nm)  # state entering chunk c
        tt, tm, m2, u, dt, raw, Bv, Cv, bb, hs = _chunk_states(
            u_ptr, dt_ptr, B_ptr, C_ptr, row, bc_rows, c, t, nm, A, bias, h, L, HAS_BIAS, SOFTPLUS, BLOCK)
        y = tl.sum(hs * Cv, axis=0)                                            # y : (T,)
        if HAS_D:
            y += Dd * u
        if HAS_Z:
            zv = tl.load(z_ptr + row + tt, mask=tm, other=0.0).to(tl.float32)
            y = y * zv * tl.sigmoid(zv)
        tl.store(y_ptr + row + tt, y.to(y_ptr.dtype.element_ty), mask=tm)
        h = tl.sum(tl.where(t[None, :] == BLOCK - 1, hs, 0.0), axis=1)         # padded steps are identities


@triton.jit
def _bwd_kernel(u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, hc_ptr, dy_ptr,
               du_ptr, ddt_ptr, dA_ptr, dB_ptr, dC_ptr, dD_ptr, dz_ptr, dbias_ptr,
               Dm, L, N, n_chunks,
               su_b, su_d, sB_b, sB_n,
               HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr,
               SOFTPLUS: tl.constexpr, N_P2: tl.constexpr, BLOCK: tl.constexpr):
    b, d, n, t, nm, A, bias, Dd, row, bc_rows = _program(A_ptr, D_ptr, bias_ptr, Dm, N, su_b, su_d, sB_b, sB_n,
                                                         HAS_D, HAS_BIAS, N_P2, BLOCK)
    g_in = tl.zeros([N_P2], dtype=tl.float32)         # ∂loss/∂h at the first token of the next chunk
    dA_acc = tl.zeros([N_P2], dtype=tl.float32)
    dD_acc = 0.0
    dbias_acc = 0.0
    for ci in range(n_chunks):
        c = n_chunks - 1 - ci
        h0 = tl.load(hc_ptr + ((b * Dm + d) * n_chunks + c) * N + n, mask=nm, other=0.0)
        # recompute the chunk's states from its entry state
        tt, tm, m2, u, dt, raw, Bv, Cv, bb, hs = _chunk_states(
            u_ptr, dt_ptr, B_ptr, C_ptr, row, bc_rows, c, t, nm, A, bias, h0, L, HAS_BIAS, SOFTPLUS, BLOCK)
        dt_next, _r = _load_delta(dt_ptr + row, bias, tt + 1, L, HAS_BIAS, SOFTPLUS)
        dy = tl.load(dy_ptr + row + tt, mask=tm, other=0.0).to(tl.float32)
        if HAS_Z:  # y = (Σ C·h + D·u)·silu(z)
            zv = tl.load(z_ptr + row + tt, mask=tm, other=0.0).to(tl.float32)
            sz = tl.sigmoid(zv)
            y_pre = tl.sum(hs * Cv, axis=0)
            if HAS_D:
                y_pre += Dd * u
            tl.store(dz_ptr + row + tt, (dy * y_pre * sz * (1.0 + zv * (1.0 - sz))).to(dz_ptr.dtype.element_ty),
                     mask=tm)
            dy = dy * zv * sz
        du = tl.zeros([BLOCK], dtype=tl.float32)
        if HAS_D:
            dD_acc += tl.sum(dy * u, axis=0)
            du = dy * Dd
        tl.atomic_add(dC_ptr + bc_rows + tt[None, :], dy[None, :] * hs, mask=m2)
        # adjoint: g_t = C_t·dy_t + a_{t+1}·g_{t+1}, reverse scan, g_in carried from the next chunk
        a_next = tl.exp(dt_next[None, :] * A[:, None])
        qa, qb = tl.associative_scan((a_next, Cv * dy[None, :]), axis=1, combine_fn=_first_order, reverse=True)
        g = qb + qa * g_in[:, None]                                            # g_t : (N, T)
        g_in = tl.sum(tl.where(t[None, :] == 0, g, 0.0), axis=1)
        gm = g * (hs - bb)                                                     # ∂/∂(Δ_t·A_n)
        dA_acc += tl.sum(gm * dt[None, :], axis=1)
        gB = tl.sum(g * Bv, axis=0)                                            # (T,)
        ddt = tl.sum(gm * A[:, None], axis=0) + u * gB
        du += dt * gB
        tl.atomic_add(dB_ptr + bc_rows + tt[None, :], g * (dt * u)[None, :], mask=m2)
        if SOFTPLUS:
            ddt = tl.where(raw <= 20.0, ddt * tl.sigmoid(raw), ddt)
        ddt = tl.where(tm, ddt, 0.0)
        dbias_acc += tl.sum(ddt, axis=0)
        tl.store(du_ptr + row + tt, du.to(du_ptr.dtype.element_ty), mask=tm)
        tl.store(ddt_ptr + row + tt, ddt.to(ddt_ptr.dtype.element_ty), mask=tm)
    tl.atomic_add(dA_ptr + d * N + n, dA_acc, mask=nm)
    if HAS_D:
        tl.atomic_add(dD_ptr + d, dD_acc)
    if HAS_BIAS:
        tl.atomic_add(dbias_ptr + d, dbias_acc)


def _next_pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def _c(x: torch.Tensor | None) -> torch.Tensor | None:
    return None if x is None else x.contiguous()


class _TritonScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus, block):
        u, delta, B, C, z = map(_c, (u, delta, B, C, z))     # the kernels index tokens with stride 1
        Bt, Dm, L = u.shape
        N = A.shape[1]
        n_chunks = max(1, -(-L // block))
        Af = A.float().contiguous()
        Df = None if D is None else D.float().contiguous()
        bf = None if delta_bias is None else delta_bias.float().contiguous()
        y = torch.empty_like(u)
        hc = torch.empty(Bt, Dm, n_chunks, N, device=u.device, dtype=torch.float32)  # chunk entry states
        _fwd_kernel[(Bt * Dm,)](
            u, delta, Af, B, C, _or(Df, Af), _or(z, u), _or(bf, Af), y, hc,
            Dm, L, N, n_chunks, u.stride(0), u.stride(1), B.stride(0), B.stride(1),
            HAS_D=Df is not None, HAS_Z=z is not None, HAS_BIAS=bf is not None,
            SOFTPLUS=bool(delta_softplus), N_P2=_next_pow2(N), BLOCK=block, num_warps=4,
        )
        ctx.save_for_backward(u, delta, Af, B, C, Df, z, bf, hc)
        ctx.meta = (bool(delta_softplus), block, n_chunks, A.dtype,
                    None if D is None else D.dtype, None if delta_bias is None else delta_bias.dtype)
        return y

    @staticmethod
    def backward(ctx, dy):
        u, delta, Af, B, C, Df, z, bf, hc = ctx.saved_tensors
        softplus, block, n_chunks, A_dtype, D_dtype, bias_dtype = ctx.meta
        Bt, Dm, L = u.shape
        N = Af.shape[1]
        dy = dy.contiguous()
        du, ddelta = torch.empty_like(u), torch.empty_like(delta)
        dz = None if z is None else torch.empty_like(z)
        f32 = dict(device=u.device, dtype=torch.float32)
        dA = torch.zeros(Dm, N, **f32)                      # atomically accumulated: zero-initialised
        dB, dC = torch.zeros(B.shape, **f32), torch.zeros(C.shape, **f32)
        dD = None if Df is None else torch.zeros(Dm, **f32)
        dbias = None if bf is None else torch.zeros(Dm, **f32)
        _bwd_kernel[(Bt * Dm,)](
            u, delta, Af, B, C, _or(Df, Af), _or(z, u), _or(bf, Af), hc, dy,
            du, ddelta, dA, dB, dC, _or(dD, dA), _or(dz, du), _or(dbias, dA),
            Dm, L, N, n_chunks, u.stride(0), u.stride(1), B.stride(0), B.stride(1),
            HAS_D=Df is not None, HAS_Z=z is not None, HAS_BIAS=bf is not None,
            SOFTPLUS=softplus, N_P2=_next_pow2(N), BLOCK=block, num_warps=4,
        )
        cast = lambda g, dtype: None if g is None else g.to(dtype)
        return (du, ddelta, dA.to(A_dtype), dB.to(B.dtype), dC.to(C.dtype), cast(dD, D_dtype), dz,
                cast(dbias, bias_dtype), None, None)


def _or(x: torch.Tensor | None, placeholder: torch.Tensor) -> torch.Tensor:
    """A valid pointer for an absent optional tensor (the kernel never reads it: HAS_* is False)."""
    return placeholder if x is None else x


def selective_scan_triton(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                          *, chunk_size: int | None = None, **_ignored):
    """Selective scan with the Triton kernels (forward and backward); see the module docstring.

    ``chunk_size``: tokens per associative-scan tile (a power of two; default :data:`BLOCK_L`).
    """
    block = chunk_size or BLOCK_L
    if block < 2 or block & (block - 1):
        raise ValueError(f"chunk_size for backend 'triton' must be a power of two >= 2, got {block}")
    err = triton_unavailable(u.device, u.dtype)
    if err:
        raise RuntimeError(f"backend 'triton' unavailable: {err}")
    if B.dim() == 4:
        B = B[:, 0]
    if C.dim() == 4:
        C = C[:, 0]
    return _TritonScan.apply(u, delta, A, B, C, D, z, delta_bias, delta_softplus, block)

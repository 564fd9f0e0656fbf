"""The Triton building blocks of the scan kernels (:mod:`scan_triton`): one program's channels and
index tiles, a chunk's inputs and states, Δ (also from its rank-R rows), per-token loads.

Shapes as in :mod:`scan_triton`: G channels a program, N states, T tokens a chunk; per-token
values are (G, 1, T) tiles (or (G, N, T) with TOK = N), states (G, N, T).
"""
from __future__ import annotations

import triton
import triton.language as tl

from .scan_adjoint import first_order

LOG2E = tl.constexpr(1.4426950408889634)  # exp(x) = exp2(x·log2 e)


@triton.jit
def _delta(dt_ptr, offs, m, n, bias, SOFTPLUS: tl.constexpr, SPREAD: tl.constexpr):
    """Δ at offsets `offs` (0 where masked: a = 1, b = 0, the identity step) and its pre-softplus value."""
    return _activate(_load_tok(dt_ptr, offs, m, n, SPREAD) + bias, m, SOFTPLUS)


@triton.jit
def _delta_lowrank(low_ptr, W_ptr, wrow, lrow, sl_k, tt, m, bias, SOFTPLUS: tl.constexpr, R: tl.constexpr):
    """Δ = W·Δ_low + bias at tokens tt for the channels whose W rows start at `wrow` : (G, 1, 1), from
    the R rows of Δ_low (row k at ``lrow + k·sl_k``): the rank-R Δ path without its matmul."""
    raw = bias + tl.zeros(m.shape, dtype=tl.float32)
    for k in tl.static_range(R):
        w = tl.load(W_ptr + wrow + k, mask=m, other=0.0)                          # W[d, k] : (G, 1, T)
        raw += w * tl.load(low_ptr + lrow + k * sl_k + tt, mask=m, other=0.0).to(tl.float32)
    return _activate(raw, m, SOFTPLUS)


@triton.jit
def _activate(raw, m, SOFTPLUS: tl.constexpr):
    """(Δ, raw): softplus(raw) (or raw), 0 where masked, and the pre-activation value."""
    dt = raw
    if SOFTPLUS:
        dt = tl.where(raw <= 20.0, tl.log(1.0 + tl.exp(raw)), raw)
    return tl.where(m, dt, 0.0), raw


@triton.jit
def _load_tok(ptr, offs, m, n, SPREAD: tl.constexpr):
    """A per-token row (G, 1, T) at `offs` (0 where masked), in fp32.

    SPREAD: loaded as a (G, N, T) tile with only row n = 0 live, then summed over N: the result
    has the (G, N, T) state tiles' layout (sliced along N), so broadcasting it against them and
    reducing them over N need no layout conversion; the sum costs log2(lanes along N) shuffles."""
    if SPREAD:
        x = tl.load(ptr + offs + n * 0, mask=m & (n == 0), other=0.0).to(tl.float32)
        return tl.sum(x, axis=1, keep_dims=True)
    return tl.load(ptr + offs, mask=m, other=0.0).to(tl.float32)


@triton.jit
def _program(A_ptr, D_ptr, bias_ptr, Dm, N, n_groups, su_b, su_d, sB_b, sB_n,
             HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr, N_P2: tl.constexpr, BLOCK: tl.constexpr,
             G: tl.constexpr, VEC: tl.constexpr):
    """This program's sequence b, channels d : (G,1,1), index tiles, per-channel parameters, row offsets."""
    pid = tl.program_id(0)
    b = (pid // n_groups).to(tl.int64)  # 64-bit offsets: Bt·Dm·L may pass 2**31
    d = (pid % n_groups) * G + tl.arange(0, G)[:, None, None]                   # (G, 1, 1)
    n = tl.arange(0, N_P2)[None, :, None]                                       # (1, N, 1)
    t = tl.arange(0, BLOCK)
    if VEC > 0:  # the same values, seen by the compiler as runs of VEC contiguous tokens (see CONFIG["bwd_vec"])
        t = (t // VEC) * VEC + t % VEC
    t = t[None, None, :]                                                        # (1, 1, T)
    dm, nm = d < Dm, n < N
    A2 = tl.load(A_ptr + d * N + n, mask=dm & nm, other=0.0) * LOG2E             # A·log2(e) : (G, N, 1)
    bias = tl.load(bias_ptr + d, mask=dm, other=0.0) if HAS_BIAS else 0.0
    Dd = tl.load(D_ptr + d, mask=dm, other=0.0) if HAS_D else 0.0
    row = b * su_b + d.to(tl.int64) * su_d                                       # u, Δ, z, y rows : (G,1,1)
    bc = b * sB_b + n.to(tl.int64) * sB_n                                        # B, C rows : (1, N, 1)
    return b, d, n, t, dm, nm, A2, bias, Dd, row, bc


@triton.jit
def _row0(mask, n, TOK: tl.constexpr):
    """A per-token mask restricted to row n = 0 when tokens are held as (G, N, T) tiles."""
    if TOK > 1:
        return mask & (n == 0)
    return mask


@triton.jit
def _row0_value(x, n, TOK: tl.constexpr):
    """A per-token value kept in row n = 0 only (0 elsewhere) when tokens are held as (G, N, T) tiles."""
    if TOK > 1:
        return tl.where(n == 0, x, 0.0)
    return x


@triton.jit
def _chunk(u_ptr, dt_ptr, B_ptr, C_ptr, row, bc, c, n, t, dm, nm, A2, bias, h_in, L,
           SOFTPLUS: tl.constexpr, BLOCK: tl.constexpr, TOK: tl.constexpr, SPREAD: tl.constexpr,
           W_ptr=None, wrow=None, lrow=None, sl_k=None, R: tl.constexpr = 0):
    """Chunk c's inputs and its states h_t : (G, N, T) from the states h_in : (G, N, 1) entering it.

    TOK = 1: per-token values (u, Δ, …) are (G, 1, T) tiles; TOK = N: they are loaded as (G, N, T)
    tiles (every row the same), which gives them the state tiles' layout: fewer layout conversions
    for more registers and special-function work."""
    tt = c * BLOCK + t                                                          # (1, 1, T)
    if TOK > 1:
        tt = tt + nm.to(tl.int32) * 0                                           # (1, N, T)
    tm = tt < L
    m1 = dm & tm                                                                # (G, TOK, T)
    u = _load_tok(u_ptr, row + tt, m1, n, SPREAD)
    if R > 0:  # dt_ptr holds the rank-R rows Δ_low (inference)
        dt, raw = _delta_lowrank(dt_ptr, W_ptr, wrow, lrow, sl_k, tt, m1, bias, SOFTPLUS, R)
    else:
        dt, raw = _delta(dt_ptr, row + tt, m1, n, bias, SOFTPLUS, SPREAD)
    mB = nm & tm                                                                # (1, N, T)
    Bv = tl.load(B_ptr + bc + tt, mask=mB, other=0.0).to(tl.float32)
    Cv = tl.load(C_ptr + bc + tt, mask=mB, other=0.0).to(tl.float32)
    a = tl.exp2(dt * A2)                                                        # a : (G, N, T)
    dtu = dt * u
    bb = dtu * Bv
    # h_in folded into the first token's b: the scan's product output is not needed
    _pa, hs = tl.associative_scan((a, bb + tl.where(t == 0, a * h_in, 0.0)), axis=2, combine_fn=first_order)
    return tt, tm, m1, mB, u, dt, raw, dtu, Bv, Cv, bb, hs


@triton.jit
def _total(acc):
    """(G, TOK, T) accumulator -> (G, 1, 1) per-channel sum."""
    return tl.sum(tl.sum(acc, axis=2, keep_dims=True), axis=1, keep_dims=True)

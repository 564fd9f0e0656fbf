"""Scan variant "seq" (issue 15): the shipped forward, a backward that walks tokens one at a time.

For `bench_scan_tiles.py --extra scan_triton_seq=<this file>`; same entry point and contract as
`srstudy.models.scan_triton` (``selective_scan_triton``)::

    u, delta, z : (Bt, Dm, L)     A : (Dm, N)      B, C : (Bt, N, L)
    D, delta_bias : (Dm,)         y : (Bt, Dm, L)  (dtype of u; computed in fp32)

Forward: the shipped kernel unchanged (chunks of ``T_fwd`` = 32 tokens as one
``tl.associative_scan``; it stores the state entering every chunk, ``(Bt, Dm, n_chunks, N)``).

Backward (why it should be faster).  The shipped backward holds a 32-token chunk of one channel
across the lanes and spends its time in the scans' warp shuffles (sm_90, Triton 3.6: 460 SHFL per
512 (token, state) elements, 320 of them the lane mirroring 3.6 emits for ``reverse=True`` — it
does so even when the scanned axis lies inside one thread).  Here no tile has a token axis:

* one warp per (sequence, ``G`` = 8 channels); every tile is (G, N) = (8, 16) with 8 lanes along
  the channels, 4 along the states and 4 states a thread; per-token rows (u, Δ, dy, z, du, dΔ,
  dz) are (G, 1) tiles in the same layout;
* the recurrences run token by token inside each thread: ``h_t = a_t·h_{t-1} + b_t`` and the
  adjoint ``g_t = C_t·dy_t + a_{t+1}·g_{t+1}`` (``g = ∂loss/∂h``) are one FFMA per element and
  need no shuffle at all; ``a_{t+1}`` is the previous step's ``a`` (one exp per element in the
  walk back, where the shipped kernel computes a and a_next);
* the only shuffles are the reductions: over N for y (dz), Σ g·B and Σ g·m·A (4 states in-thread,
  then 2 lane steps) and over each half of the 8 channels for dB and dC (2 lane steps; the third
  step would cost more than a second atomic) — 88 SHFL per 512 (token, state) elements instead of
  460 (sm_90, Triton 3.6: variants/seq_sass.txt); dB and dC are then added with one relaxed atomic
  per (b, n, t) per 4 channels (the shipped: one per channel);
* the walk back needs the states in reverse token order.  Per segment of ``SEG`` = 32 tokens
  (the forward's chunk, whose entry state it stored), pass 1 runs the recurrence forward and
  stores the state entering each 4-token sub-chunk in a small scratch buffer ``ck`` (the
  program's own, ``(SEG/4, G, N)`` floats, read back by the same threads: L1/L2-resident); pass
  2 takes the sub-chunks in reverse, recomputes their 4 states from ``ck`` into registers and
  walks them backwards with the adjoint, storing du, dΔ, dz and adding dB, dC per token;
* with ``m_t = a_t·h_{t-1} = h_t − b_t``: ``∂/∂(Δ_t·A_n) = g_t,n·m_t,n``, so
  ``dA_n = Σ_t Δ_t·g·m``, ``dΔ_t = Σ_n A_n·g·m + u_t·Σ_n g·B``, ``du_t = Δ_t·Σ_n g·B (+ D·dy)``,
  ``dB_t = Σ_d g·Δ_t·u_t``, ``dC_t = Σ_d dy_t·h_t``; dA, dD, dΔ_bias are accumulated in
  registers over the whole sequence and added once per program.  Summation order varies
  between runs in the last bits (atomics), as with mamba_ssm.

Costs paid for it: the states are recomputed twice (pass 1 and pass 2: two exps per element, as
the shipped kernel), per-token math (softplus, sigmoids) is repeated on the 4 state lanes of a
channel, and the loads are per token (4-byte rows, L1 hits after the first token of a line).
Tile: :data:`SEQ_CONFIG`.  Runs on CUDA tensors; on CPU only under ``TRITON_INTERPRET=1``
(tests/test_scan_variant.py checks it against the reference recurrence that way).
fp32/fp16/bf16 inputs.
"""
from __future__ import annotations

import math
import os

import torch
import triton
import triton.language as tl

__all__ = ["selective_scan_triton", "triton_unavailable", "SEQ_CONFIG", "BLOCK_L"]

#: The forward kernel's (tokens per chunk, channels per program, warps[, token tiles]) as shipped
#: (``*_few``: launches of fewer than ``min_programs`` programs); the backward's channels per
#: program ``bwd_channels`` (8: the (G, N) tiles get 8 lanes along G, 4 along N, 4 states a thread)
#: and warps.  Named SEQ_CONFIG, not CONFIG: `bench_scan_tiles.py` sweeps the shipped tiles
#: through a module's CONFIG, and this backward has no token tile to sweep.
SEQ_CONFIG = {"fwd": (32, 2, 1), "fwd_few": (128, 1, 4), "min_programs": 512, "bwd_channels": 8, "bwd_warps": 1}
BLOCK_L = SEQ_CONFIG["fwd"][0]
LOG2E = tl.constexpr(1.4426950408889634)  # exp(x) = exp2(x·log2 e)


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
def _delta(dt_ptr, offs, m, n, bias, SOFTPLUS: tl.constexpr, SPREAD: tl.constexpr):
    """Δ at offsets `offs` (0 where masked: a = 1, b = 0, the identity step) and its pre-softplus value."""
    raw = _load_tok(dt_ptr, offs, m, n, SPREAD) + bias
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
             G: tl.constexpr):
    """This program's sequence b, channels d : (G,1,1), index tiles, per-channel parameters, row offsets."""
    pid = tl.program_id(0)
    b = (pid // n_groups).to(tl.int64)  # 64-bit offsets: Bt·Dm·L may pass 2**31
    d = (pid % n_groups) * G + tl.arange(0, G)[:, None, None]                   # (G, 1, 1)
    n = tl.arange(0, N_P2)[None, :, None]                                       # (1, N, 1)
    t = tl.arange(0, BLOCK)[None, None, :]                                      # (1, 1, T)
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
def _chunk(u_ptr, dt_ptr, B_ptr, C_ptr, row, bc, c, n, t, dm, nm, A2, bias, h_in, L,
           SOFTPLUS: tl.constexpr, BLOCK: tl.constexpr, TOK: tl.constexpr, SPREAD: tl.constexpr):
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
    dt, raw = _delta(dt_ptr, row + tt, m1, n, bias, SOFTPLUS, SPREAD)
    mB = nm & tm                                                                # (1, N, T)
    Bv = tl.load(B_ptr + bc + tt, mask=mB, other=0.0).to(tl.float32)
    Cv = tl.load(C_ptr + bc + tt, mask=mB, other=0.0).to(tl.float32)
    a = tl.exp2(dt * A2)                                                        # a : (G, N, T)
    dtu = dt * u
    bb = dtu * Bv
    pa, pb = tl.associative_scan((a, bb), axis=2, combine_fn=_first_order)
    hs = pa * h_in + pb                                                         # h_t : (G, N, T)
    return tt, tm, m1, mB, u, dt, raw, dtu, Bv, Cv, bb, hs


@triton.jit
def _fwd_kernel(u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, y_ptr, hc_ptr,
                Dm, L, N, n_chunks, n_groups, su_b, su_d, sB_b, sB_n,
                HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr,
                SOFTPLUS: tl.constexpr, N_P2: tl.constexpr, BLOCK: tl.constexpr, G: tl.constexpr,
                TOK: tl.constexpr):
    b, d, n, t, dm, nm, A2, bias, Dd, row, bc = _program(
        A_ptr, D_ptr, bias_ptr, Dm, N, n_groups, su_b, su_d, sB_b, sB_n, HAS_D, HAS_BIAS, N_P2, BLOCK, G)
    hc_rows = ((b * Dm + d) * n_chunks) * N + n                                 # (G, N, 1)
    h = tl.zeros([G, N_P2, 1], dtype=tl.float32)
    for c in range(n_chunks):
        tl.store(hc_ptr + hc_rows + c * N, h, mask=dm & nm)                     # state entering chunk c
        tt, tm, m1, mB, u, dt, raw, dtu, Bv, Cv, bb, hs = _chunk(
            u_ptr, dt_ptr, B_ptr, C_ptr, row, bc, c, n, t, dm, nm, A2, bias, h, L, SOFTPLUS, BLOCK, TOK, False)
        y = tl.sum(hs * Cv, axis=1, keep_dims=True)                             # y : (G, 1, T)
        if HAS_D:
            y += Dd * u
        if HAS_Z:
            zv = tl.load(z_ptr + row + tt, mask=m1, other=0.0).to(tl.float32)
            y = y * zv * tl.sigmoid(zv)
        tl.store(y_ptr + row + tt, y.to(y_ptr.dtype.element_ty), mask=_row0(m1, n, TOK))
        h = tl.sum(tl.where(t == BLOCK - 1, hs, 0.0), axis=2, keep_dims=True)  # padded steps are identities


@triton.jit
def _before(mask, t, L):
    """`mask` where token t < L (t spelled as a tile: Triton's interpreter mis-types tile & scalar masks)."""
    return mask & ((mask.to(tl.int32) * 0 + t) < L)


@triton.jit
def _tok(u_ptr, dt_ptr, B_ptr, row, bcg, t, dm, nm, A2, bias, L, SOFTPLUS: tl.constexpr):
    """Token t's inputs: u, Δ, dΔ/dΔ_raw : (G, 1), B_t : (G, N) (every channel the same row), and the
    step h -> a·h + bb with a = exp(Δ·A), bb = Δ·u·B_t : (G, N).  Past L: Δ = 0, the identity step."""
    m1 = _before(dm, t, L)                                                     # (G, 1)
    u = tl.load(u_ptr + row + t, mask=m1, other=0.0).to(tl.float32)
    raw = tl.load(dt_ptr + row + t, mask=m1, other=0.0).to(tl.float32) + bias
    dt, dsp = raw, 1.0
    if SOFTPLUS:  # Δ = log(1 + e^raw), dΔ/draw = e^raw / (1 + e^raw): one exp for both (pass 1 drops dsp)
        e = tl.exp(raw)
        small = raw <= 20.0
        dt = tl.where(small, tl.log(1.0 + e), raw)
        dsp = tl.where(small, e / (1.0 + e), 1.0)
    dt = tl.where(m1, dt, 0.0)
    Bv = tl.load(B_ptr + bcg + t, mask=_before(nm, t, L), other=0.0).to(tl.float32)
    a = tl.exp2(dt * A2)
    return u, dt, dsp, Bv, a, dt * u * Bv


@triton.jit
def _channel_sum(x):
    """(G, N) -> (2, N): sums over the two halves of the channels (one lane step fewer than a full
    sum over G; the two halves are added by two atomics)."""
    return tl.sum(tl.reshape(x, [2, x.shape[0] // 2, x.shape[1]]), axis=1)


@triton.jit
def _grad_tok(C_ptr, z_ptr, dy_ptr, du_ptr, ddt_ptr, dB_ptr, dC_ptr, dz_ptr, row, bcg, bc1, t, dm, nm, L,
              A, Dd, u, dt, dsp, Bv, bb, h, g, a_nx, dA_acc, dD_acc, dbias_acc,
              HAS_D: tl.constexpr, HAS_Z: tl.constexpr):
    """The adjoint step at token t (g : (G, N) = ∂loss/∂h_{t+1} in, ∂loss/∂h_t out; a_nx = a_{t+1})
    and every gradient of token t: du, dΔ, dz stored, dB, dC added atomically (summed over each
    half of the G channels first), dA, dD, dΔ_bias accumulated (dsp = dΔ/dΔ_raw)."""
    m1 = _before(dm, t, L)                                                     # (G, 1)
    bm = _before(nm, t, L)                                                     # (1, N)
    Cv = tl.load(C_ptr + bcg + t, mask=bm, other=0.0).to(tl.float32)           # (G, N)
    dy = tl.load(dy_ptr + row + t, mask=m1, other=0.0).to(tl.float32)         # (G, 1)
    if HAS_Z:  # y = (Σ C·h + D·u)·silu(z)
        zv = tl.load(z_ptr + row + t, mask=m1, other=0.0).to(tl.float32)
        sz = tl.sigmoid(zv)
        y_pre = tl.sum(h * Cv, axis=1, keep_dims=True)
        if HAS_D:
            y_pre += Dd * u
        tl.store(dz_ptr + row + t, (dy * y_pre * sz * (1.0 + zv * (1.0 - sz))).to(dz_ptr.dtype.element_ty), mask=m1)
        dy = dy * zv * sz
    du = tl.zeros_like(dy)
    if HAS_D:
        dD_acc += dy * u
        du = dy * Dd
    half = tl.arange(0, 2)[:, None] * 0                                        # (2, 1): both halves' rows
    bm2 = bm & (half == 0)                                                     # (2, N)
    tl.atomic_add(dC_ptr + bc1 + t + half, _channel_sum(dy * h), mask=bm2, sem="relaxed")
    g = Cv * dy + a_nx * g                                                     # g_t = C_t·dy_t + a_{t+1}·g_{t+1}
    gm = g * (h - bb)                                                          # ∂/∂(Δ_t·A_n): m_t = a_t·h_{t-1}
    dA_acc += gm * dt
    gB = tl.sum(g * Bv, axis=1, keep_dims=True)                                # (G, 1)
    ddt = tl.sum(gm * A, axis=1, keep_dims=True) + u * gB
    du += dt * gB
    tl.atomic_add(dB_ptr + bc1 + t + half, _channel_sum(g * (dt * u)), mask=bm2, sem="relaxed")
    ddt = tl.where(m1, ddt * dsp, 0.0)
    dbias_acc += ddt
    tl.store(du_ptr + row + t, du.to(du_ptr.dtype.element_ty), mask=m1)
    tl.store(ddt_ptr + row + t, ddt.to(ddt_ptr.dtype.element_ty), mask=m1)
    return g, dA_acc, dD_acc, dbias_acc


@triton.jit
def _bwd_kernel(u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, hc_ptr, dy_ptr,
                du_ptr, ddt_ptr, dA_ptr, dB_ptr, dC_ptr, dD_ptr, dz_ptr, dbias_ptr, ck_ptr,
                Dm, L, N, n_segs, n_groups, su_b, su_d, sB_b, sB_n, hc_chunks, hc_every,
                HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr,
                SOFTPLUS: tl.constexpr, N_P2: tl.constexpr, SEG: tl.constexpr, G: tl.constexpr):
    """Tiles are (G channels, N states): lanes along G first (8 for G = 8), then N; tokens one at a time."""
    pid = tl.program_id(0)
    b = (pid // n_groups).to(tl.int64)
    d = (pid % n_groups) * G + tl.arange(0, G)[:, None]                        # (G, 1)
    n = tl.arange(0, N_P2)[None, :]                                            # (1, N)
    dm, nm = d < Dm, n < N
    # n·one with one = 1 unknown to the compiler: the (G, N) loads and stores of A, the stored states and
    # the scratch then look non-contiguous along N like the B and C loads, so every (G, N) tile gets one
    # layout (else Triton vectorises them along N and converts every state tile through shared memory)
    nn = n * ((N + N_P2 - 1) // N_P2)
    A = tl.load(A_ptr + d * N + nn, mask=dm & nm, other=0.0)                   # (G, N)
    A2 = A * LOG2E
    bias = tl.load(bias_ptr + d, mask=dm, other=0.0) if HAS_BIAS else 0.0
    Dd = tl.load(D_ptr + d, mask=dm, other=0.0) if HAS_D else 0.0
    row = b * su_b + d.to(tl.int64) * su_d                                     # u, Δ, z, dy rows : (G, 1)
    bc1 = b * sB_b + n.to(tl.int64) * sB_n                                     # B, C rows : (1, N)
    bcg = bc1 + d * 0                                                          # the same, as (G, N)
    hc_rows = ((b * Dm + d) * hc_chunks) * N + nn                              # (G, N)
    NSUB: tl.constexpr = SEG // 4
    ck = ck_ptr + pid.to(tl.int64) * (NSUB * G * N_P2) + (tl.arange(0, G)[:, None] * N_P2 + nn)  # (G, N)
    g = tl.zeros([G, N_P2], dtype=tl.float32)          # ∂loss/∂h at the token after the current one
    a_nx = tl.zeros([G, N_P2], dtype=tl.float32)       # a at that token (g = 0 past the end)
    dA_acc = tl.zeros([G, N_P2], dtype=tl.float32)
    dD_acc = tl.zeros([G, 1], dtype=tl.float32)
    dbias_acc = tl.zeros([G, 1], dtype=tl.float32)
    for si in range(n_segs):
        s = n_segs - 1 - si
        # pass 1: the states entering each 4-token sub-chunk of segment s, from the forward's entry state
        h = tl.load(hc_ptr + hc_rows + s * hc_every * N, mask=dm & nm, other=0.0)
        tl.store(ck, h)
        for j in range(NSUB - 1):
            for k in tl.static_range(4):
                u, dt, dsp, Bv, a, bb = _tok(u_ptr, dt_ptr, B_ptr, row, bcg, s * SEG + j * 4 + k, dm, nm, A2,
                                             bias, L, SOFTPLUS)
                h = a * h + bb
            tl.store(ck + (j + 1) * (G * N_P2), h)
        # pass 2: sub-chunks in reverse; each recomputes its 4 states, then walks them backwards
        for ji in range(NSUB):
            j = NSUB - 1 - ji
            t0 = s * SEG + j * 4
            h = tl.load(ck + j * (G * N_P2))
            u0, dt0, dsp0, B0, a0, bb0 = _tok(u_ptr, dt_ptr, B_ptr, row, bcg, t0, dm, nm, A2, bias, L, SOFTPLUS)
            h0 = a0 * h + bb0
            u1, dt1, dsp1, B1, a1, bb1 = _tok(u_ptr, dt_ptr, B_ptr, row, bcg, t0 + 1, dm, nm, A2, bias, L, SOFTPLUS)
            h1 = a1 * h0 + bb1
            u2, dt2, dsp2, B2, a2, bb2 = _tok(u_ptr, dt_ptr, B_ptr, row, bcg, t0 + 2, dm, nm, A2, bias, L, SOFTPLUS)
            h2 = a2 * h1 + bb2
            u3, dt3, dsp3, B3, a3, bb3 = _tok(u_ptr, dt_ptr, B_ptr, row, bcg, t0 + 3, dm, nm, A2, bias, L, SOFTPLUS)
            h3 = a3 * h2 + bb3
            g, dA_acc, dD_acc, dbias_acc = _grad_tok(
                C_ptr, z_ptr, dy_ptr, du_ptr, ddt_ptr, dB_ptr, dC_ptr, dz_ptr, row, bcg, bc1, t0 + 3, dm, nm, L,
                A, Dd, u3, dt3, dsp3, B3, bb3, h3, g, a_nx, dA_acc, dD_acc, dbias_acc, HAS_D, HAS_Z)
            g, dA_acc, dD_acc, dbias_acc = _grad_tok(
                C_ptr, z_ptr, dy_ptr, du_ptr, ddt_ptr, dB_ptr, dC_ptr, dz_ptr, row, bcg, bc1, t0 + 2, dm, nm, L,
                A, Dd, u2, dt2, dsp2, B2, bb2, h2, g, a3, dA_acc, dD_acc, dbias_acc, HAS_D, HAS_Z)
            g, dA_acc, dD_acc, dbias_acc = _grad_tok(
                C_ptr, z_ptr, dy_ptr, du_ptr, ddt_ptr, dB_ptr, dC_ptr, dz_ptr, row, bcg, bc1, t0 + 1, dm, nm, L,
                A, Dd, u1, dt1, dsp1, B1, bb1, h1, g, a2, dA_acc, dD_acc, dbias_acc, HAS_D, HAS_Z)
            g, dA_acc, dD_acc, dbias_acc = _grad_tok(
                C_ptr, z_ptr, dy_ptr, du_ptr, ddt_ptr, dB_ptr, dC_ptr, dz_ptr, row, bcg, bc1, t0, dm, nm, L,
                A, Dd, u0, dt0, dsp0, B0, bb0, h0, g, a1, dA_acc, dD_acc, dbias_acc, HAS_D, HAS_Z)
            a_nx = a0
    tl.atomic_add(dA_ptr + d * N + nn, dA_acc, mask=dm & nm, sem="relaxed")
    if HAS_D:
        tl.atomic_add(dD_ptr + d, dD_acc, mask=dm, sem="relaxed")
    if HAS_BIAS:
        tl.atomic_add(dbias_ptr + d, dbias_acc, mask=dm, sem="relaxed")


def _next_pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def _like(x: torch.Tensor | None, ref: torch.Tensor) -> torch.Tensor | None:
    """`x` with `ref`'s strides (one kernel row offset serves u, Δ, z, y, dy): a copy only if they differ."""
    if x is None or x.stride() == ref.stride():
        return x
    return torch.empty_like(ref, dtype=x.dtype).copy_(x)


def _tokens_inner(x: torch.Tensor) -> torch.Tensor:
    """`x` as it is if its tokens (last axis) are contiguous and its layout dense, else a contiguous copy."""
    dense = x.is_contiguous() or torch.empty_like(x).stride() == x.stride()
    return x if (x.stride(-1) == 1 and dense) else x.contiguous()


def _few_programs(Bt: int, Dm: int, on_gpu: bool) -> bool:
    """Whether a launch on these shapes has too few programs for the forward's main tiles (see SEQ_CONFIG)."""
    return on_gpu and Bt * math.ceil(Dm / min(SEQ_CONFIG["fwd"][1], _next_pow2(Dm))) < SEQ_CONFIG["min_programs"]


def _tile(which: str, Dm: int, N: int, block: int | None, few: bool) -> tuple[int, int, int, int]:
    """(tokens per chunk, channels per program, warps, token-tile rows) for the `which` kernel
    ("fwd"/"bwd"; `few`: the *_few tiles); `block` overrides the tokens per chunk."""
    T, G, warps, *tok = SEQ_CONFIG[which + ("_few" if few else "")]
    return (block or T), min(G, _next_pow2(Dm)), warps, (_next_pow2(N) if tok and tok[0] else 1)


class _TritonScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus, block):
        u = _tokens_inner(u)
        delta, z = _like(delta, u), _like(z, u)
        B, C = _tokens_inner(B), _tokens_inner(C)
        C = _like(C, B)
        Bt, Dm, L = u.shape
        N = A.shape[1]
        few = _few_programs(Bt, Dm, u.is_cuda)
        T, G, warps, TOK = _tile("fwd", Dm, N, block, few)
        n_chunks, n_groups = max(1, math.ceil(L / T)), math.ceil(Dm / G)
        Af = A.float().contiguous()
        Df = None if D is None else D.float().contiguous()
        bf = None if delta_bias is None else delta_bias.float().contiguous()
        y = torch.empty_like(u)
        hc = torch.empty(Bt, Dm, n_chunks, N, device=u.device, dtype=torch.float32)  # chunk entry states
        _fwd_kernel[(Bt * n_groups,)](
            u, delta, Af, B, C, _or(Df, Af), _or(z, u), _or(bf, Af), y, hc,
            Dm, L, N, n_chunks, n_groups, u.stride(0), u.stride(1), B.stride(0), B.stride(1),
            HAS_D=Df is not None, HAS_Z=z is not None, HAS_BIAS=bf is not None,
            SOFTPLUS=bool(delta_softplus), N_P2=_next_pow2(N), BLOCK=T, G=G, TOK=TOK, num_warps=warps,
        )
        ctx.save_for_backward(u, delta, Af, B, C, Df, z, bf, hc)
        ctx.meta = (bool(delta_softplus), T, block, few, A.dtype,
                    None if D is None else D.dtype, None if delta_bias is None else delta_bias.dtype)
        return y

    @staticmethod
    def backward(ctx, dy):
        u, delta, Af, B, C, Df, z, bf, hc = ctx.saved_tensors
        softplus, T_fwd, block, few, A_dtype, D_dtype, bias_dtype = ctx.meta
        Bt, Dm, L = u.shape
        N, N_P2 = Af.shape[1], _next_pow2(Af.shape[1])
        G = max(2, min(SEQ_CONFIG["bwd_channels"], _next_pow2(Dm)))  # 2 halves for `_channel_sum`
        SEG = max(T_fwd, 4)  # tokens between the states read from the forward: whole 4-token sub-chunks
        n_segs, n_groups = max(1, math.ceil(L / SEG)), math.ceil(Dm / G)
        dy = _like(_tokens_inner(dy), u)
        du, ddelta = torch.empty_like(u), torch.empty_like(u, dtype=delta.dtype)
        dz = None if z is None else torch.empty_like(u, dtype=z.dtype)
        f32 = dict(device=u.device, dtype=torch.float32)
        dA = torch.zeros(Dm, N, **f32)                      # atomically accumulated: zero-initialised
        dB, dC = torch.zeros_like(B, dtype=torch.float32), torch.zeros_like(B, dtype=torch.float32)
        dD = None if Df is None else torch.zeros(Dm, **f32)
        dbias = None if bf is None else torch.zeros(Dm, **f32)
        # each program's states at its segment's 4-token sub-chunk starts (written, then read back by itself)
        ck = torch.empty(Bt * n_groups, SEG // 4, G, N_P2, **f32)
        _bwd_kernel[(Bt * n_groups,)](
            u, delta, Af, B, C, _or(Df, Af), _or(z, u), _or(bf, Af), hc, dy,
            du, ddelta, dA, dB, dC, _or(dD, dA), _or(dz, du), _or(dbias, dA), ck,
            Dm, L, N, n_segs, n_groups, u.stride(0), u.stride(1), B.stride(0), B.stride(1),
            hc.shape[2], SEG // T_fwd,
            HAS_D=Df is not None, HAS_Z=z is not None, HAS_BIAS=bf is not None,
            SOFTPLUS=softplus, N_P2=N_P2, SEG=SEG, G=G, num_warps=SEQ_CONFIG["bwd_warps"],
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

    ``chunk_size``: the forward's tokens per associative-scan tile (a power of two; default from
    :data:`SEQ_CONFIG`); the backward's segments are ``max(chunk_size, 4)`` tokens.
    """
    if chunk_size is not None and (chunk_size < 2 or chunk_size & (chunk_size - 1)):
        raise ValueError(f"chunk_size for backend 'triton' must be a power of two >= 2, got {chunk_size}")
    err = triton_unavailable(u.device, u.dtype)
    if err:
        raise RuntimeError(f"backend 'triton' unavailable: {err}")
    if B.dim() == 4:
        B = B[:, 0]
    if C.dim() == 4:
        C = C[:, 0]
    return _TritonScan.apply(u, delta, A, B, C, D, z, delta_bias, delta_softplus, chunk_size)

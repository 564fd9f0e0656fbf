"""Selective scan as two Triton kernels (forward, backward): the fast path without mamba-ssm.

Same contract as :func:`srstudy.models.scan.selective_scan` (``backend="triton"``)::

    u, delta, z : (Bt, Dm, L)     A : (Dm, N)      B, C : (Bt, N, L)
    D, delta_bias : (Dm,)         y : (Bt, Dm, L)  (dtype of u; computed in fp32)

Any strides with the tokens (L) innermost are taken as they are (u, delta, z, the output
and its gradient share u's strides; B and C share theirs), so a mixer that keeps the
channel-major ``(Dm, Bt·L)`` layout passes its activations without a copy.

Design (mamba_ssm's algorithm, written in Triton):

* one program per (sequence, group of ``G`` channels) — ``grid = Bt·Dm/G`` — holding the
  states ``h : (G, N)`` in registers and walking L in chunks of ``BLOCK`` tokens; the
  ``G`` channels of a program share one load of B and C;
* inside a chunk, the recurrence ``h_t = a_t·h_{t-1} + b_t`` with ``a_t = exp(Δ_t·A)``
  and ``b_t = Δ_t·u_t·B_t`` is one ``tl.associative_scan`` over the (G, N, BLOCK) tile
  with the first-order combine ``(a1, b1) ∘ (a2, b2) = (a1·a2, a2·b1 + b2)``; the carried
  state enters folded into the first token's b (``b_0 + a_0·h_in``).  Nothing (Bt, Dm, N, L)-sized is ever
  written: y is reduced over N in registers (``y_t = Σ_n C_t,n·h_t,n``);
* the forward stores the state entering every chunk, ``(Bt, Dm, n_chunks, N)``, so the
  backward recomputes each chunk's states from its entry state (without autograd, for
  inference, it stores none and no autograd node is made);
* the backward walks the chunks in reverse with the adjoint recurrence
  ``g_t = C_t·dy_t + a_{t+1}·g_{t+1}`` (``g = ∂loss/∂h``), a reverse scan with the same
  combine, carrying ``g`` between chunks (:mod:`scan_adjoint`: by default a forward scan
  between two flips of the token axis, which Triton 3.6 makes far cheaper than its own
  reverse scan).
  With ``m_t = a_t·h_{t-1} = h_t − b_t`` (no division, no shift):
  ``∂/∂(Δ_t·A_n) = g_t,n·m_t,n``, hence ``dA_n = Σ_t Δ_t·g·m``,
  ``dΔ_t = Σ_n A_n·g·m + u_t·Σ_n g·B``, ``du_t = Δ_t·Σ_n g·B (+ D·dy)``,
  ``dB_t = Σ_d g·Δ_t·u_t``, ``dC_t = Σ_d dy_t·h_t``.  dB and dC are summed over the
  program's G channels in registers, then added with relaxed fp32 atomics (G times fewer
  than one per channel); dA, dD, dΔ_bias are accumulated per element over the whole
  sequence and added once per program.  Summation order varies between runs in the last
  bits, as with mamba_ssm.

Tile shape: :data:`CONFIG` (tokens per chunk, channels per program, warps) by input
dtype; ``chunk_size=`` overrides the tokens per chunk.  Runs on CUDA tensors; on CPU only
under ``TRITON_INTERPRET=1`` (Triton's interpreter: the test suite checks both kernels
against the reference recurrence that way).  fp32/fp16/bf16 inputs; float64 is not
supported (use ``chunked`` or ``reference``).
"""
from __future__ import annotations

import math
import os

import torch
import triton
import triton.language as tl

from .grad_mode import records_grad
from .layouts import dense, like, or_placeholder, tokens_inner
from .scan_adjoint import adjoint, choose_flip
from .scan_tiles import LOG2E, _chunk, _delta, _load_tok, _program, _row0, _row0_value, _total

__all__ = ["selective_scan_triton", "selective_scan_triton_lowrank", "triton_unavailable", "CONFIG", "BLOCK_L", "dense", "tokens_inner"]

#: (tokens per chunk, channels per program, warps per program[, token tiles]) of the forward and
#: backward kernels; the backward's tokens per chunk must be a multiple of the forward's (it
#: reads the states the forward stored at its chunk starts).  Token tiles (a 4th entry, 1): per-token
#: values held as (G, N, T) tiles, see `_chunk`.
#: A launch of fewer programs than ``min_programs`` (batch-1 inference: Bt·Dm/G ≈ 60) takes the
#: ``*_few`` tiles instead: longer chunks and more warps per program, or the GPU idles.
CONFIG = {"fwd": (32, 2, 1), "bwd": (32, 1, 1),  # fastest at B 128 × L 4096 × D 64/120 on an H200
          # batch 1, LR 256² (B 1 × L 65,536 × D 120): forward 0.46 ms (mamba_ssm 0.78, (128, 1, 4) 1.01)
          "fwd_few": (1024, 1, 16), "bwd_few": (128, 1, 8), "min_programs": 512,
          # The backward, by input dtype. bwd_spread: per-token rows spread over N (`_load_tok`; fewer
          # shuffles). bwd_stages: its chunk loop software-pipelined over this many stages
          # (`tl.range(num_stages=)`, cp.async loads; 1: not). bwd_maxnreg: registers a thread (None:
          # the compiler's ~230, 8 one-warp programs an SM; 128: 16). bwd_vec: token offsets written as
          # runs of this many tokens, which gives 16-bit inputs float32's 4-a-thread layout (without it
          # bf16 gets 8 a thread and a slower backward). bwd_flip: how the reverse recurrence is scanned
          # (scan_adjoint.py): "scan" Triton's reverse scan (Triton 3.6: 460 shuffles a chunk), "gather"
          # / "lanes" a forward scan between token flips (lanes: 172; its layout checked on the compiled
          # kernel). On an H200, fwd+bwd at D 64 against mamba_ssm's 4.57 / 3.70 ms (fp32 / bf16):
          # "scan" 3.59 / 3.53 ms, "lanes" 3.16 / 3.03 with 128 registers (168: 3.46 / 3.19).
          # Measurements, SASS counts, ncu reports: benchmarks/gpu/NOTES_issue15.md,
          # benchmarks/results/scan_configs*_h200.json, ncu_scan_bwd_h200_*.txt.
          "bwd_spread": ("float32", "bfloat16"),
          "bwd_stages": {"default": 1},
          "bwd_maxnreg": {"default": None, "float32": 128, "bfloat16": 128},
          "bwd_vec": {"default": 0, "bfloat16": 4},
          "bwd_flip": {"default": "lanes"}}
BLOCK_L = CONFIG["fwd"][0]


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
def _fwd_kernel(u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, y_ptr, hc_ptr, W_ptr,
                Dm, L, N, n_chunks, n_groups, su_b, su_d, sB_b, sB_n, sl_b, sl_k,
                HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr,
                SOFTPLUS: tl.constexpr, N_P2: tl.constexpr, BLOCK: tl.constexpr, G: tl.constexpr,
                TOK: tl.constexpr, STATES: tl.constexpr, R: tl.constexpr, A_LOG: tl.constexpr):
    # R > 0: dt_ptr holds Δ_low, (Bt, R, L) at strides (sl_b, sl_k, 1), and Δ = W·Δ_low (W : (Dm, R) at W_ptr);
    # A_LOG: A_ptr holds log(−A) (inference: `selective_scan_triton_lowrank`)
    b, d, n, t, dm, nm, A2, bias, Dd, row, bc = _program(
        A_ptr, D_ptr, bias_ptr, Dm, N, n_groups, su_b, su_d, sB_b, sB_n, HAS_D, HAS_BIAS, N_P2, BLOCK, G, 0)
    if A_LOG:
        A2 = tl.where(dm & nm, -tl.exp(A2 / LOG2E) * LOG2E, 0.0)                 # A = −exp(A_log)
    wrow, lrow = d * R, b * sl_b
    hc_rows = ((b * Dm + d) * n_chunks) * N + n                                 # (G, N, 1)
    h = tl.zeros([G, N_P2, 1], dtype=tl.float32)
    for c in range(n_chunks):
        if STATES:  # for the backward (inference stores none)
            tl.store(hc_ptr + hc_rows + c * N, h, mask=dm & nm)                 # state entering chunk c
        tt, tm, m1, mB, u, dt, raw, dtu, Bv, Cv, bb, hs = _chunk(
            u_ptr, dt_ptr, B_ptr, C_ptr, row, bc, c, n, t, dm, nm, A2, bias, h, L, SOFTPLUS, BLOCK, TOK, False,
            W_ptr, wrow, lrow, sl_k, R)
        y = tl.sum(hs * Cv, axis=1, keep_dims=True)                             # y : (G, 1, T)
        if HAS_D:
            y += Dd * u
        if HAS_Z:
            zv = tl.load(z_ptr + row + tt, mask=m1, other=0.0).to(tl.float32)
            y = y * zv * tl.sigmoid(zv)
        tl.store(y_ptr + row + tt, y.to(y_ptr.dtype.element_ty), mask=_row0(m1, n, TOK))
        h = tl.sum(tl.where(t == BLOCK - 1, hs, 0.0), axis=2, keep_dims=True)  # padded steps are identities


@triton.jit
def _bwd_kernel(u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, hc_ptr, dy_ptr,
                du_ptr, ddt_ptr, dA_ptr, dB_ptr, dC_ptr, dD_ptr, dz_ptr, dbias_ptr,
                Dm, L, N, n_chunks, n_groups, su_b, su_d, sB_b, sB_n, hc_chunks, hc_every,
                HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr,
                SOFTPLUS: tl.constexpr, N_P2: tl.constexpr, BLOCK: tl.constexpr, G: tl.constexpr,
                TOK: tl.constexpr, SPREAD: tl.constexpr, STAGES: tl.constexpr, VEC: tl.constexpr,
                FLIP: tl.constexpr = 0):
    b, d, n, t, dm, nm, A2, bias, Dd, row, bc = _program(
        A_ptr, D_ptr, bias_ptr, Dm, N, n_groups, su_b, su_d, sB_b, sB_n, HAS_D, HAS_BIAS, N_P2, BLOCK, G, VEC)
    A = A2 / LOG2E
    hc_rows = ((b * Dm + d) * hc_chunks) * N + n      # the forward stored a state every hc_every of our chunks
    g_in = tl.zeros([G, N_P2, 1], dtype=tl.float32)   # ∂loss/∂h at the first token of the next chunk
    dA_acc = tl.zeros([G, N_P2, BLOCK], dtype=tl.float32)
    dD_acc = tl.zeros([G, TOK, BLOCK], dtype=tl.float32)
    dbias_acc = tl.zeros([G, TOK, BLOCK], dtype=tl.float32)
    for ci in tl.range(n_chunks, num_stages=STAGES):
        c = n_chunks - 1 - ci
        h0 = tl.load(hc_ptr + hc_rows + c * hc_every * N, mask=dm & nm, other=0.0)
        # recompute the chunk's states from its entry state
        tt, tm, m1, mB, u, dt, raw, dtu, Bv, Cv, bb, hs = _chunk(
            u_ptr, dt_ptr, B_ptr, C_ptr, row, bc, c, n, t, dm, nm, A2, bias, h0, L, SOFTPLUS, BLOCK, TOK, SPREAD)
        ms = _row0(m1, n, TOK)                                                  # per-token stores
        dt_next, _r = _delta(dt_ptr, row + tt + 1, dm & (tt + 1 < L), n, bias, SOFTPLUS, SPREAD)
        dy = _load_tok(dy_ptr, row + tt, m1, n, SPREAD)                         # (G, TOK, T)
        if HAS_Z:  # y = (Σ C·h + D·u)·silu(z)
            zv = _load_tok(z_ptr, row + tt, m1, n, SPREAD)
            sz = tl.sigmoid(zv)
            y_pre = tl.sum(hs * Cv, axis=1, keep_dims=True)
            if HAS_D:
                y_pre += Dd * u
            tl.store(dz_ptr + row + tt, (dy * y_pre * sz * (1.0 + zv * (1.0 - sz))).to(dz_ptr.dtype.element_ty),
                     mask=ms)
            dy = dy * zv * sz
        du = tl.zeros([G, TOK, BLOCK], dtype=tl.float32)
        if HAS_D:
            dD_acc += _row0_value(dy * u, n, TOK)
            du = dy * Dd
        tl.atomic_add(dC_ptr + bc + tt, tl.sum(dy * hs, axis=0, keep_dims=True), mask=mB, sem="relaxed")
        # adjoint: g_t = C_t·dy_t + a_{t+1}·g_{t+1}, reverse scan, g_in carried from the next chunk
        a_next = tl.exp2(dt_next * A2)
        g = adjoint(a_next, Cv * dy, g_in, t, G, N_P2, BLOCK, FLIP)             # g_t : (G, N, T)
        g_in = tl.sum(tl.where(t == 0, g, 0.0), axis=2, keep_dims=True)
        gm = g * (hs - bb)                                                      # ∂/∂(Δ_t·A_n)
        dA_acc += gm * dt
        gB = tl.sum(g * Bv, axis=1, keep_dims=True)                             # (G, 1, T)
        ddt = tl.sum(gm * A, axis=1, keep_dims=True) + u * gB
        du += dt * gB
        tl.atomic_add(dB_ptr + bc + tt, tl.sum(g * dtu, axis=0, keep_dims=True), mask=mB, sem="relaxed")
        if SOFTPLUS:
            ddt = tl.where(raw <= 20.0, ddt * tl.sigmoid(raw), ddt)
        ddt = tl.where(m1, ddt, 0.0)
        dbias_acc += _row0_value(ddt, n, TOK)
        tl.store(du_ptr + row + tt, du.to(du_ptr.dtype.element_ty), mask=ms)
        tl.store(ddt_ptr + row + tt, ddt.to(ddt_ptr.dtype.element_ty), mask=ms)
    tl.atomic_add(dA_ptr + d * N + n, tl.sum(dA_acc, axis=2, keep_dims=True), mask=dm & nm, sem="relaxed")
    if HAS_D:
        tl.atomic_add(dD_ptr + d, _total(dD_acc), mask=dm, sem="relaxed")
    if HAS_BIAS:
        tl.atomic_add(dbias_ptr + d, _total(dbias_acc), mask=dm, sem="relaxed")


def _next_pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def _few_programs(Bt: int, Dm: int, on_gpu: bool) -> bool:
    """Whether a launch on these shapes has too few programs for the main tiles (see CONFIG)."""
    return on_gpu and Bt * math.ceil(Dm / min(CONFIG["fwd"][1], _next_pow2(Dm))) < CONFIG["min_programs"]


def _spread_backward(dtype: torch.dtype) -> bool:
    """Whether the backward of a scan on `dtype` inputs loads its per-token rows spread over N
    (``CONFIG["bwd_spread"]``: True, False, or the dtype names it is on for)."""
    spread = CONFIG["bwd_spread"]
    if isinstance(spread, bool):
        return spread
    return str(dtype).removeprefix("torch.") in spread


def _by_dtype(key: str, dtype: torch.dtype):
    """``CONFIG[key]``'s entry for `dtype` (its name, e.g. "float32", else "default")."""
    table = CONFIG[key]
    return table.get(str(dtype).removeprefix("torch."), table["default"])


def _tile(which: str, Dm: int, N: int, block: int | None, few: bool) -> tuple[int, int, int, int]:
    """(tokens per chunk, channels per program, warps, token-tile rows) for the `which` kernel
    ("fwd"/"bwd"; `few`: the *_few tiles); `block` overrides the tokens per chunk."""
    T, G, warps, *tok = CONFIG[which + ("_few" if few else "")]
    return (block or T), min(G, _next_pow2(Dm)), warps, (_next_pow2(N) if tok and tok[0] else 1)


def _forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus, block, states: bool, dt_proj=None, A_log=False):
    """Launch the forward kernel: (y, the kernels' inputs as launched, tile facts). `states`: also store
    the state entering every chunk, (Bt, Dm, n_chunks, N), which the backward starts from (else None).
    `dt_proj` (Dm, R): `delta` is Δ_low (Bt, R, L) and Δ = dt_proj·Δ_low; `A_log`: `A` holds log(−A)."""
    u = tokens_inner(u)
    delta = tokens_inner(delta) if dt_proj is not None else like(delta, u)
    z = like(z, u)
    B, C = tokens_inner(B), tokens_inner(C)
    C = like(C, B)
    Bt, Dm, L = u.shape
    N = A.shape[1]
    few = _few_programs(Bt, Dm, u.is_cuda)
    T, G, warps, TOK = _tile("fwd", Dm, N, block, few)
    n_chunks, n_groups = max(1, math.ceil(L / T)), math.ceil(Dm / G)
    Af = A.float().contiguous()
    Df = None if D is None else D.float().contiguous()
    bf = None if delta_bias is None else delta_bias.float().contiguous()
    W = None if dt_proj is None else dt_proj.float().contiguous()
    y = torch.empty_like(u)
    hc = torch.empty(Bt, Dm, n_chunks, N, device=u.device, dtype=torch.float32) if states else None
    _fwd_kernel[(Bt * n_groups,)](
        u, delta, Af, B, C, or_placeholder(Df, Af), or_placeholder(z, u), or_placeholder(bf, Af), y,
        or_placeholder(hc, Af), or_placeholder(W, Af),
        Dm, L, N, n_chunks, n_groups, u.stride(0), u.stride(1), B.stride(0), B.stride(1),
        delta.stride(0), delta.stride(1),
        HAS_D=Df is not None, HAS_Z=z is not None, HAS_BIAS=bf is not None,
        SOFTPLUS=bool(delta_softplus), N_P2=_next_pow2(N), BLOCK=T, G=G, TOK=TOK, STATES=states,
        R=0 if W is None else W.shape[1], A_LOG=bool(A_log), num_warps=warps,
    )
    return y, (u, delta, Af, B, C, Df, z, bf, hc), T, few


class _TritonScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus, block):
        y, saved, T, few = _forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus, block, states=True)
        ctx.save_for_backward(*saved)
        Dm, N = A.shape
        # the backward's CONFIG is read now: autograd runs it later, maybe under another CONFIG
        ctx.launch = dict(tile=_tile("bwd", Dm, N, block, few), spread=_spread_backward(u.dtype),
                          stages=_by_dtype("bwd_stages", u.dtype), vec=_by_dtype("bwd_vec", u.dtype),
                          registers=_registers(u), flip=_by_dtype("bwd_flip", u.dtype))
        ctx.meta = (bool(delta_softplus), T, A.dtype,
                    None if D is None else D.dtype, None if delta_bias is None else delta_bias.dtype)
        return y

    @staticmethod
    def backward(ctx, dy):
        u, delta, Af, B, C, Df, z, bf, hc = ctx.saved_tensors
        softplus, T_fwd, A_dtype, D_dtype, bias_dtype = ctx.meta
        launch = ctx.launch
        Bt, Dm, L = u.shape
        N = Af.shape[1]
        T, G, warps, TOK = launch["tile"]
        if T % T_fwd:  # the forward stored the state entering every T_fwd tokens: read every T/T_fwd-th
            T = T_fwd
        n_chunks, n_groups = max(1, math.ceil(L / T)), math.ceil(Dm / G)
        dy = like(tokens_inner(dy), u)
        du, ddelta = torch.empty_like(u), torch.empty_like(u, dtype=delta.dtype)
        dz = None if z is None else torch.empty_like(u, dtype=z.dtype)
        f32 = dict(device=u.device, dtype=torch.float32)
        dA = torch.zeros(Dm, N, **f32)                      # atomically accumulated: zero-initialised
        dB, dC = torch.zeros_like(B, dtype=torch.float32), torch.zeros_like(B, dtype=torch.float32)
        dD = None if Df is None else torch.zeros(Dm, **f32)
        dbias = None if bf is None else torch.zeros(Dm, **f32)
        grid = (Bt * n_groups,)
        args = (u, delta, Af, B, C, or_placeholder(Df, Af), or_placeholder(z, u), or_placeholder(bf, Af), hc, dy,
                du, ddelta, dA, dB, dC, or_placeholder(dD, dA), or_placeholder(dz, du), or_placeholder(dbias, dA),
                Dm, L, N, n_chunks, n_groups, u.stride(0), u.stride(1), B.stride(0), B.stride(1),
                hc.shape[2], T // T_fwd)
        kw = dict(HAS_D=Df is not None, HAS_Z=z is not None, HAS_BIAS=bf is not None,
                  SOFTPLUS=softplus, N_P2=_next_pow2(N), BLOCK=T, G=G, TOK=TOK, SPREAD=launch["spread"] and TOK == 1,
                  STAGES=launch["stages"], VEC=launch["vec"], num_warps=warps, **launch["registers"])
        flip = choose_flip(_bwd_kernel, launch["flip"], T, args, kw, grid, interpreting=_interpreting())
        _bwd_kernel[grid](*args, **kw, FLIP=flip)
        cast = lambda g, dtype: None if g is None else g.to(dtype)
        return (du, ddelta, dA.to(A_dtype), dB.to(B.dtype), dC.to(C.dtype), cast(dD, D_dtype), dz,
                cast(dbias, bias_dtype), None, None)


def _registers(u: torch.Tensor) -> dict:
    """The backward's launch option capping registers a thread (``CONFIG["bwd_maxnreg"]``), if any:
    compiled code only (Triton's interpreter takes no such option)."""
    cap = _by_dtype("bwd_maxnreg", u.dtype)
    return {"maxnreg": cap} if cap is not None and u.is_cuda else {}


def selective_scan_triton_lowrank(u, dt_low, dt_proj_weight, A_log, B, C, D=None, z=None, delta_bias=None,
                                  delta_softplus=False, *, chunk_size: int | None = None):
    """The selective scan for inference with Mamba's parameters as stored: Δ = dt_proj_weight · dt_low
    (+ delta_bias) and A = −exp(A_log) are computed inside the forward kernel, so a batch-1 forward
    launches no matmul and no exp/neg kernels for them (the mixer's eager inference path).

    dt_low : (Bt, R, L) with tokens innermost (any other strides); dt_proj_weight : (Dm, R);
    A_log : (Dm, N); the rest as :func:`selective_scan_triton`. Inference only: raises if autograd
    would record the call (train with :func:`selective_scan_triton` on A and Δ)."""
    if records_grad(u, dt_low, dt_proj_weight, A_log, B, C, D, z, delta_bias):
        raise RuntimeError("selective_scan_triton_lowrank computes no gradients: call it under torch.no_grad(), "
                           "or train with selective_scan(u, dt_proj_weight @ dt_low, -exp(A_log), ...)")
    err = triton_unavailable(u.device, u.dtype)
    if err:
        raise RuntimeError(f"backend 'triton' unavailable: {err}")
    if dt_low.shape[1] != dt_proj_weight.shape[1] or dt_proj_weight.shape[0] != u.shape[1]:
        raise ValueError(f"dt_low {tuple(dt_low.shape)} and dt_proj_weight {tuple(dt_proj_weight.shape)} do not "
                         f"make Δ for u {tuple(u.shape)}: need dt_low (Bt, R, L) and dt_proj_weight (Dm, R)")
    return _forward(u, dt_low, A_log, B, C, D, z, delta_bias, delta_softplus, chunk_size, states=False,
                    dt_proj=dt_proj_weight, A_log=True)[0]


def selective_scan_triton(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                          *, chunk_size: int | None = None, **_ignored):
    """Selective scan with the Triton kernels (forward and backward); see the module docstring.

    ``chunk_size``: tokens per associative-scan tile (a power of two; default from :data:`CONFIG`).
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
    if records_grad(u, delta, A, B, C, D, z, delta_bias):
        return _TritonScan.apply(u, delta, A, B, C, D, z, delta_bias, delta_softplus, chunk_size)
    return _forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus, chunk_size, states=False)[0]  # inference

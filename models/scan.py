"""Mamba-1 selective scan with explicit, logged backends.

One entry point, :func:`selective_scan`, with the argument order and meaning of
``mamba_ssm.ops.selective_scan_interface.selective_scan_fn`` so that the
``cuda`` backend is a pass-through::

    y = selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                       delta_softplus=False, *, backend=None, chunk_size=None)

    u, delta, z : (Bt, Dm, L)     A : (Dm, N)      B, C : (Bt, N, L)
    D, delta_bias : (Dm,)         y : (Bt, Dm, L)  (dtype of u)

Semantics: ``Δ = delta (+ delta_bias)``, optionally ``softplus(Δ)``;
``h_t = exp(Δ_t·A) ⊙ h_{t-1} + Δ_t·B_t·u_t`` with state ``h : (Bt, Dm, N)``;
``y_t = Σ_n C_{t,n} h_{t,n} + D·u_t``; if ``z`` is given ``y = y·silu(z)``.
bf16/fp16/fp32 inputs are computed in float32 and returned in ``u.dtype``
(as mamba_ssm does); float64 inputs are computed in float64.

Backends
--------
Chosen by ``backend=``, else the env var ``SRSTUDY_SCAN_BACKEND``, else
``"auto"``: ``cuda`` when mamba_ssm imports and the tensors are fp32/fp16/bf16
on CUDA, else ``triton`` when triton imports and they are on CUDA, otherwise
``chunked``.  The automatic choice is logged once per
(device type, choice) on the ``srstudy.scan`` logger.  Nothing falls back
silently: an explicit backend that cannot run raises ``RuntimeError`` saying
why and how to fix it; unknown names raise ``ValueError``.  Use
:func:`resolve_backend` to learn the name that will run (e.g. for an MLflow
tag) and :func:`available_backends` for what can run here.  New backends are
added with :func:`register_backend`.

* ``reference`` – the sequential recurrence, a Python loop over L.  The oracle.
* ``chunked``   – pure PyTorch, differentiable, ONNX-exportable (opset ≥ 17,
  standard ops, dynamic L, graph size independent of L).  See below.
* ``cuda``      – mamba_ssm's fused kernel (``pip install 'srstudy[cuda]'``).
* ``triton``    – srstudy's Triton kernels, forward and backward
  (``models/scan_triton.py``): mamba_ssm's design without a compile step;
  CUDA tensors (CPU only under ``TRITON_INTERPRET=1``, for testing).

The chunked algorithm
---------------------
L is zero-padded to a multiple of the chunk size T (Δ = u = B = C = 0 there,
so a = exp(0·A) = 1 and b = 0: identity elements; the padding is sliced off at
the end).  The inputs are laid out *step-major inside the chunk*, batch and
chunk index merged: step t of every chunk of every sequence is one contiguous
(Bt·nc, Dm, N) slab, with N innermost so that y_t = Σ_n C_t,n·h_t,n is a
batched mat-vec.  Then ("state passing"):

1. sweep 1: ``h = a_t·h + b_t`` for t = 0..T-1 from h = 0 (one fused
   ``addcmul`` per step over all chunks at once) gives every chunk's end state;
   its log-decay is A·ΣΔ_chunk.
2. across chunks: (decay, end state) pairs obey the same linear recurrence
   over nc.  A 16-ary tree scans it: inside groups of 16 chunks a Hillis–Steele
   doubling scan (4 steps), the group totals recursively, then
   ``h += cumdecay·carry``; an exclusive shift gives each chunk's carry-in.
   (Work: a few passes over Bt·Dm·N·nc = 1/T of the data.)
3. sweep 2: ``h = a_t·h + b_t`` again from the carry-in, ``y_t = C_t·h`` each
   step; the (Bt·nc, Dm) outputs are concatenated.

The Python loops run T (a constant) and log16(L/T) times: nothing grows with
L but tensor sizes; every op is batched over all chunks.  No ``exp`` of a
positive cumulative sum is ever taken (decays are exp(Δ·A), exp(A·ΣΔ) or exp
of sums of such non-positive log-decays), so any decay is stable (tested with
Δ·|A| up to 50 per step).  Under autograd every op is a plain differentiable
torch op.  ``within=`` picks how a and b are made: ``"loop"`` builds them
once as (T, Bt·nc, Dm, N) tensors (few large kernels: the GPU default),
``"stream"`` computes each step's slab when the sweep needs it, twice (no large
tensors to allocate: the CPU default, ~1.5× faster there).

Export (symbolic shapes, i.e. torch.jit.trace / torch.onnx.export /
torch.export): the tree across chunks has a fixed depth from ``max_len``
(default 2**22 tokens per sequence; longer inputs raise a shape error,
never give silently wrong numbers) so the graph does not depend on L, and each level solves its
group of 16 (then 32) in closed form — a lower-triangular decay matrix
exp(Σ_{j<k<=i} λ_k) from a masked cumsum (no differences of large sums, -inf
masking before exp) applied by one mat-vec — ~12 ONNX ops a level instead of
~7 per doubling step.  The default T there is 16 (the sweeps are unrolled).
With the TorchScript exporter (``dynamo=False``, opset 17) a scan is 516
ONNX nodes (299 besides Constant literals; torch 2.13), the same at any L; no
Loop, Scan or If.  The torch.export-based exporter (``dynamo=True``, needs
onnxscript) is not supported: the fixed tree's symbolic shape arithmetic
makes torch.export specialise L to the example's value.

Design measurements (Bt=1, Dm=120, N=16, fp32, delta_softplus, median ms)
------------------------------------------------------------------------
This repo's 2-core CPU, L=16,384, forward (torch 2.13; noisy machine, quiet
runs; benchmarks/bench_scan.py ``--within ... --chunk-sizes ...``):

    reference (Python loop over L)              441
    chunked, T-step sweeps, stream  T=16/32/64/128   101 / 89 / 83 / 73
    chunked, T-step sweeps, loop    T=16/32/64/128   138 / 126 / 125 / 120
    chunked, log-depth doubling     T=16/32          1450 / 2200
    forward+backward, stream        T=32/64/128      443 / 418 / 498
    L=4,096 forward, stream         T=32/64/128      19.0 / 15.7 / 16.3
    L=4,096 default (stream, T=64) fwd / fwd+bwd      16.7 / 92
    L=4,096 reference              fwd / fwd+bwd      111 / 1780

H100 (torch 2.11), forward / forward+backward (two runs where they differ):

    L=65,536  loop   T=16 / 32 / 64   4.6 / 4.2 / 3.8-5.7   19.8 / 18.8-20.1 / 29-30
    L=65,536  stream T=16 / 32 / 64   5.9 / 7.3 / 12.0      25.2 / 24.2 / 54.8
    L=65,536  doubling T=16 / 32 / 64   44 / 53 / 72 (before the final tree)
    L=65,536  default (loop, T=32), bf16 inputs   4.3 / 19.1
    L=16,384  loop   T=16 / 32 / 64   2.5 / 2.2 / 3.3       16.0 / 15.7 / 36.1
    L=4,096   loop   T=16 / 32        1.6 / 1.8-2.1         10.1 / 11.8-13.9
    L=4,096   reference               377-421               2008-2348

Hence: T-step sweeps, not a log-depth scan inside chunks (each doubling step
re-reads and re-writes the whole (Bt, Dm, N, L) tensor — shift copies plus
three multiply/adds — i.e. ~log2 T times the memory traffic and activation
memory, 10-20× slower on both devices); T = 32 on CUDA, 64 on CPU, 16 when
exporting (:data:`DEFAULT_CHUNK_SIZES`).  A plain Python loop over 64-token
chunks (one small kernel per chunk) was 3.4 s for a whole DVMSR forward at
L=65,536 on an H100; this scan is 4.2 ms per call there.

Memory: the chunked path materialises (Bt, Dm, N, L)-sized tensors: a and b
(``within="loop"``) and, under autograd, the per-step states of both sweeps.
Measured peaks on the H100 at Bt=1, Dm=120, N=16, L=65,536 (one such tensor is
0.5 GB in fp32): 1.3 GB forward, 3.1 GB forward+backward (T=32).  mamba_ssm
keeps the state in registers and stores none of it.  If memory is tight, call
the scan on slices of the batch or channels (it is independent per batch
element and per channel), use ``within="stream"`` for inference (0.7 GB), or
wrap the calling block in torch.utils.checkpoint.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import warnings
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F

__all__ = [
    "selective_scan",
    "selective_scan_reference",
    "selective_scan_chunked",
    "selective_scan_cuda",
    "selective_scan_triton",
    "resolve_backend",
    "available_backends",
    "register_backend",
    "ENV_VAR",
    "DEFAULT_CHUNK_SIZES",
    "default_chunk_size",
]

logger = logging.getLogger("srstudy.scan")

ENV_VAR = "SRSTUDY_SCAN_BACKEND"
#: Default chunk size T (tokens per chunk) of the chunked backend by context,
#: chosen by measurement (module docstring): CUDA eager, CPU eager, and while
#: tracing/exporting (the graph unrolls the T-step sweeps: smaller T, smaller graph).
DEFAULT_CHUNK_SIZES = {"cuda": 32, "cpu": 64, "export": 16}
#: Group size of the tree scan across chunks (eager mode).
UPPER_CHUNK_SIZE = 16
#: Group sizes of the fixed tree used with symbolic shapes: the first level,
#: then every level above (the first level's decay matrices hold 16x its data).
EXPORT_TREE_GROUPS = (16, 32)
#: Length bound used for the tree depth when tracing/exporting with symbolic L.
DEFAULT_MAX_LEN = 2**22

_FAST_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


# --------------------------------------------------------------------------- #
# shared input handling
# --------------------------------------------------------------------------- #
def _compute_dtype(u: torch.Tensor) -> torch.dtype:
    return torch.float64 if u.dtype == torch.float64 else torch.float32


def _check_shapes(u, delta, A, B, C, D, z, delta_bias):
    if u.dim() != 3:
        raise ValueError(f"u must be (Bt, Dm, L), got shape {tuple(u.shape)}")
    if delta.shape != u.shape:
        raise ValueError(f"delta {tuple(delta.shape)} must match u {tuple(u.shape)}")
    if A.dim() != 2 or A.shape[0] != u.shape[1]:
        raise ValueError(f"A must be (Dm, N) with Dm={u.shape[1]}, got {tuple(A.shape)}")
    for name, t in (("B", B), ("C", C)):
        if t.dim() == 4 and t.shape[1] == 1:
            continue
        if t.dim() != 3:
            raise NotImplementedError(
                f"{name} must be (Bt, N, L) (or (Bt, 1, N, L)); shape {tuple(t.shape)} "
                "(constant or multi-group B/C) is only supported by backend='cuda'"
            )
        if t.shape[0] != u.shape[0] or t.shape[1] != A.shape[1]:
            raise ValueError(f"{name} must be (Bt, N, L) = ({u.shape[0]}, {A.shape[1]}, L), got {tuple(t.shape)}")
    if z is not None and z.shape != u.shape:
        raise ValueError(f"z {tuple(z.shape)} must match u {tuple(u.shape)}")
    for name, t in (("D", D), ("delta_bias", delta_bias)):
        if t is not None and t.shape != (u.shape[1],):
            raise ValueError(f"{name} must be (Dm,) = ({u.shape[1]},), got {tuple(t.shape)}")


def _prepare(u, delta, A, B, C, D, z, delta_bias, delta_softplus):
    """Cast to the compute dtype and apply delta_bias / softplus."""
    if isinstance(u.shape[-1], int):  # skip while tracing (sizes are tensors there)
        _check_shapes(u, delta, A, B, C, D, z, delta_bias)
    cd = _compute_dtype(u)
    if B.dim() == 4:
        B = B[:, 0]
    if C.dim() == 4:
        C = C[:, 0]
    cast = lambda t: t if (t is None or t.dtype == cd) else t.to(cd)  # no-op Casts bloat exports
    u, delta, A, B, C, D, z, delta_bias = map(cast, (u, delta, A, B, C, D, z, delta_bias))
    if delta_bias is not None:
        delta = delta + delta_bias[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    return u, delta, A, B, C, D, z


def _finish(y, u, D, z, out_dtype):
    if D is not None:
        y = y + D[:, None] * u
    if z is not None:
        y = y * F.silu(z)
    return y if y.dtype == out_dtype else y.to(out_dtype)


# --------------------------------------------------------------------------- #
# reference: the plain recurrence
# --------------------------------------------------------------------------- #
def selective_scan_reference(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                             delta_softplus=False, **_ignored):
    """Sequential recurrence, one Python step per token. The test oracle."""
    out_dtype = u.dtype
    u, delta, A, B, C, D, z = _prepare(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    Bt, Dm, L = u.shape
    h = u.new_zeros(Bt, Dm, A.shape[1])
    ys = []
    for t in range(L):
        dt = delta[:, :, t, None]                                  # (Bt, Dm, 1)
        h = torch.exp(dt * A) * h + (dt * u[:, :, t, None]) * B[:, None, :, t]
        ys.append((h * C[:, None, :, t]).sum(-1))                  # (Bt, Dm)
    y = torch.stack(ys, dim=-1)
    return _finish(y, u, D, z, out_dtype)


# --------------------------------------------------------------------------- #
# chunked: pure PyTorch, batched over chunks, exportable
# --------------------------------------------------------------------------- #
def _is_symbolic(x: torch.Tensor) -> bool:
    """True while tracing/exporting with shapes that are not Python ints."""
    if not isinstance(x.shape[-1], int):  # Tensor under torch.jit.trace, SymInt under torch.export
        return True
    try:
        return bool(torch.compiler.is_compiling())
    except AttributeError:  # pragma: no cover - very old torch
        return False


def _static_int(d) -> int:
    """A dimension that is static by construction (Dm, N: weight shapes) as a
    Python int, also under torch.jit.trace where sizes are traced tensors."""
    if isinstance(d, int):
        return d
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        return int(d)


def default_chunk_size(device="cpu", symbolic: bool = False) -> int:
    """The chunk size the chunked backend uses when none is given."""
    if symbolic:
        return DEFAULT_CHUNK_SIZES["export"]
    return DEFAULT_CHUNK_SIZES["cpu" if torch.device(device).type == "cpu" else "cuda"]


def _pad_last(x: torch.Tensor, T: int, symbolic: bool) -> torch.Tensor:
    """Zero-pad the last dim up to a multiple of T.  With symbolic shapes:
    append T zeros, then slice to ceil(n/T)*T (no shape-dependent pad amount)."""
    n = x.shape[-1]
    if not symbolic:
        p = (-n) % T
        return F.pad(x, (0, p)) if p else x
    if torch.jit.is_tracing():  # TorchScript ONNX exporter: cat is ~3 nodes, F.pad ~11
        x = torch.cat([x, x[..., :1] * x.new_zeros(T)], -1)
    else:                       # torch.export: x[..., :1] would be Min(1, n) wide
        x = F.pad(x, (0, T))
    n_up = n + (T - 1)
    return x[..., : n_up - n_up % T]                               # (Add, Mod, Sub: no Casts)


def _shift1(x: torch.Tensor, symbolic: bool = False) -> torch.Tensor:
    """x shifted right by one along the last dim, zero first."""
    if not (symbolic and torch.jit.is_tracing()):
        return F.pad(x, (1, 0))[..., :-1]
    return torch.cat([x[..., :1] * 0.0, x[..., :-1]], -1)         # fewer TorchScript-exported nodes


def _fma(b: torch.Tensor, a: torch.Tensor, h: torch.Tensor, symbolic: bool) -> torch.Tensor:
    """b + a*h: one fused kernel in eager mode, two plain ONNX nodes when exporting."""
    return b + a * h if symbolic else torch.addcmul(b, a, h)


def _tree_scan_doubling(a: torch.Tensor, b: torch.Tensor, G: int) -> torch.Tensor:
    """Inclusive states of g_i = a_i·g_{i-1} + b_i along dim 0 of (n, M) tensors
    (g_{-1} = 0, decays 0 <= a <= 1), for eager mode.

    A G-ary tree: a Hillis–Steele doubling scan inside each group of G
    consecutive elements (log2 G steps of ``b += a·shift(b, k); a *= shift(a, k)``
    on (m, G, M) tensors: every slice keeps M contiguous, so all kernels are
    vectorised), then the group totals recurse and ``b += a·carry``.
    """
    n, M = a.shape
    if n == 1:
        return b
    G = min(G, n)
    p = (-n) % G
    if p:  # zero padding sits after all real data: harmless, sliced off
        a, b = F.pad(a, (0, 0, 0, p)), F.pad(b, (0, 0, 0, p))
    a, b = a.reshape(-1, G, M), b.reshape(-1, G, M)                # (m, G, M)
    k = 1
    while k < G:
        b = torch.cat([b[:, :k], torch.addcmul(b[:, k:], a[:, k:], b[:, :-k])], 1)
        a = torch.cat([a[:, :k], a[:, k:] * a[:, :-k]], 1)
        k *= 2
    if a.shape[0] > 1:
        up = _tree_scan_doubling(a[:, -1], b[:, -1], G)            # (m, M) states at group ends
        carry = F.pad(up, (0, 0, 1, 0))[:-1]                       # state entering each group
        b = torch.addcmul(b, a, carry.unsqueeze(1))
    return b.reshape(-1, M)[:n]


def _tree_scan_segsum(x: torch.Tensor, groups: list, M, pad: bool = True) -> torch.Tensor:
    """Inclusive states of g_i = exp(lam_i)·g_{i-1} + beta_i along the last dim,
    x = stack([lam, beta]) : (2, M, n) (g_{-1} = 0; lam = log-decays).

    For symbolic shapes (export): one tree level per entry of ``groups`` (the
    group sizes), a fixed structure, so the graph does not depend on n;
    surplus levels act on one padded group.  Inside each group the recurrence
    is solved in closed form, g_i = Σ_{j<=i} exp(Σ_{j<k<=i} lam_k)·beta_j: a
    (G, G) lower-triangular decay matrix per row from a masked cumsum (no
    subtraction of large cumulative sums, so no cancellation; entries above
    the diagonal are set to -inf *before* exp, so they are exactly 0 with zero
    gradient), applied by one batched mat-vec: ~12 ONNX ops a level, where a
    doubling scan needs ~7 per step.  ``pad=False``: n is already a multiple
    of groups[0].
    """
    G = groups[0]
    n = x.shape[-1]
    x = (_pad_last(x, G, True) if pad else x).reshape(2, M, -1, G)  # (2, M, m, G)
    lg, bg = x[0], x[1]
    keep = torch.ones(G, G, dtype=torch.bool, device=x.device).tril(-1)  # j < i
    seg = torch.where(keep, lg.unsqueeze(-1), 0.0).cumsum(-2)      # [i,j] = Σ_{j<k<=i} lam_k
    cum = seg[..., 0] + lg[..., :1]                                # Σ_{k<=i} lam_k: decay from group start
    seg = torch.where(keep | torch.eye(G, dtype=torch.bool, device=x.device), seg, -math.inf)
    g = torch.matmul(torch.exp(seg), bg.unsqueeze(-1)).squeeze(-1)  # (M, m, G)
    if len(groups) > 1:
        up = _tree_scan_segsum(torch.stack([cum, g])[..., -1], groups[1:], M)  # group totals
        g = g + torch.exp(cum) * _shift1(up, True).unsqueeze(-1)
    else:
        # top level: one group, unless the input exceeded max_len; then keeping
        # only the first group makes the shapes disagree downstream: an error
        # (in PyTorch and onnxruntime), never silently dropped carries
        g = g[:, :1]
    return g.reshape(M, -1)[..., :n]


def _export_groups(T: int, max_len: int) -> list:
    """Group sizes of the fixed tree used with symbolic shapes, level by level,
    until max_len/T chunks are covered."""
    groups, max_chunks = [EXPORT_TREE_GROUPS[0]], -(-max_len // T)
    while math.prod(groups) < max_chunks:
        groups.append(EXPORT_TREE_GROUPS[1])
    return groups


def _carry_in(lam: torch.Tensor, h_end: torch.Tensor, Bt, symbolic: bool, T: int, max_len: int):
    """State entering each chunk (zero for a sequence's first chunk).

    lam: chunk log-decays, h_end: chunk end states from zero, both (Bt*nc, Dm, N)
    with the chunk index fastest; returns the carry-in states, same shape."""
    R, Dm, N = lam.shape
    Dm, N = _static_int(Dm), _static_int(N)
    if not symbolic:
        # scan-first (nc, Bt*Dm*N) layout: free for Bt = 1
        x = torch.stack([lam, h_end]).reshape(2, Bt, -1, Dm * N).transpose(1, 2).reshape(2, -1, Bt * Dm * N)
        carry = _tree_scan_doubling(torch.exp(x[0]), x[1], UPPER_CHUNK_SIZE)
        carry = F.pad(carry, (0, 0, 1, 0))[:-1]                    # exclusive: state entering each chunk
        return carry.reshape(-1, Bt, Dm * N).transpose(0, 1).reshape(-1, Dm, N)
    # rows layout (2, Bt*Dm*N, nc) for the export tree; nc is a multiple of
    # EXPORT_TREE_GROUPS[0] here (selective_scan_chunked pads L accordingly)
    x = torch.stack([lam, h_end]).reshape(2, Bt, -1, Dm * N).transpose(2, 3).reshape(2, Bt * (Dm * N), -1)
    carry = _tree_scan_segsum(x, _export_groups(T, max_len), Bt * (Dm * N), pad=False)
    return _shift1(carry, True).reshape(Bt, Dm * N, -1).transpose(1, 2).reshape(-1, Dm, N)


def _chunk_loop(dt, w, Bs, Cs, A, Bt, symbolic, max_len, stream=False):
    """Level 1 with two sequential T-step sweeps (see the module docstring).

    dt, w: (T, R, Dm), Bs, Cs: (T, R, N) with R = Bt*nc (batch and chunk
    merged, chunk fastest).  Returns y: (T, R, Dm).  ``stream=False``: a =
    exp(Δ·A) and b = Δ·u·B are built once as (T, R, Dm, N) tensors (few, large
    kernels: GPUs, and small export graphs); ``stream=True``: each step's slab
    is computed when needed, twice (no (T, R, Dm, N) tensors: CPUs, where the
    large fresh allocations cost more than the recomputation)."""
    T, R = _static_int(dt.shape[0]), dt.shape[1]
    if stream:
        dts, ws, Bss = dt.unsqueeze(-1).split(1, 0), w.unsqueeze(-1).split(1, 0), Bs.unsqueeze(-2).split(1, 0)
        step = lambda t: (torch.exp(dts[t] * A), ws[t] * Bss[t])   # (1, R, Dm, N) each
    else:
        a = (dt.unsqueeze(-1) * A).exp_()                          # (T, R, Dm, N)
        b = w.unsqueeze(-1) * Bs.unsqueeze(-2)                     # (T, R, Dm, N)
        a_s, b_s = a.split(1, 0), b.split(1, 0)                    # (1, R, Dm, N) slabs
        step = lambda t: (a_s[t], b_s[t])
    C_s = Cs.unsqueeze(-1).split(1, 0)                             # (1, R, N, 1)
    h = None                                                       # zero state
    if symbolic or R != Bt:                                        # more than one chunk: carries
        for t in range(T):                                         # sweep 1: chunk end states
            a_t, b_t = step(t)
            h = b_t if h is None else _fma(b_t, a_t, h, symbolic)
        lam = dt.sum(0).unsqueeze(-1) * A                          # (R, Dm, N) chunk log-decay
        h = _carry_in(lam, h[0], Bt, symbolic, T, max_len).unsqueeze(0)
    ys = []
    for t in range(T):                                             # sweep 2: outputs
        a_t, b_t = step(t)
        h = b_t if h is None else _fma(b_t, a_t, h, symbolic)
        ys.append(torch.matmul(h, C_s[t]))                         # (1, R, Dm, 1)
    return torch.cat(ys, 0).squeeze(-1)                            # (T, R, Dm)


def _chunk_doubling(dt, w, Bs, Cs, A, Bt, symbolic, max_len):
    """Level-1 alternative, for comparison: log-depth Hillis–Steele scan inside
    the chunk (b += a·shift(b, k); a *= shift(a, k)), same inputs/outputs."""
    T, R = _static_int(dt.shape[0]), dt.shape[1]
    if T & (T - 1):
        raise ValueError(f"within='doubling' needs a power-of-two chunk_size, got {T}")
    dt, w, Bs, Cs = (x.permute(1, 2, 0) for x in (dt, w, Bs, Cs))  # time last
    a = torch.exp(dt.unsqueeze(2) * A[:, :, None])                 # (R, Dm, N, T)
    b = w.unsqueeze(2) * Bs.unsqueeze(1)
    k = 1
    while k < T:
        b = torch.addcmul(b, a, F.pad(b, (k, 0))[..., :-k])
        a = a * F.pad(a, (k, 0), value=1.0)[..., :-k]
        k *= 2
    if symbolic or R != Bt:
        lam = dt.sum(-1).unsqueeze(-1) * A                         # (R, Dm, N)
        carry = _carry_in(lam, b[..., -1], Bt, symbolic, T, max_len)
        b = torch.addcmul(b, a, carry.unsqueeze(-1))
    return (b * Cs.unsqueeze(1)).sum(2).permute(2, 0, 1)           # (T, R, Dm)


_LEVEL1 = {
    "loop": _chunk_loop,
    "stream": functools.partial(_chunk_loop, stream=True),
    "doubling": _chunk_doubling,
}


def selective_scan_chunked(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                           delta_softplus=False, *, chunk_size=None, within=None,
                           max_len=DEFAULT_MAX_LEN, _symbolic=None):
    """Pure-PyTorch chunked selective scan (see the module docstring).

    ``chunk_size``: tokens per chunk T (default: :func:`default_chunk_size`).
    ``within``: the algorithm inside a chunk: ``"loop"`` (T-step sweeps over
    precomputed a, b; the default on GPUs and when exporting), ``"stream"``
    (the same sweeps computing each step's a, b on the fly; the default on
    CPUs) or ``"doubling"`` (log-depth Hillis–Steele; slower everywhere, kept
    for benchmarks).  ``max_len``: used only with symbolic shapes (export):
    the longest L (per sequence) the traced graph must handle; longer inputs
    raise a shape error (also in onnxruntime), never silently wrong numbers.
    """
    symbolic = _is_symbolic(u) if _symbolic is None else _symbolic  # _symbolic: tests only
    T = int(chunk_size or default_chunk_size(u.device, symbolic))
    if T < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if within is None:
        within = "stream" if (u.device.type == "cpu" and not symbolic) else "loop"
    if within not in _LEVEL1:
        raise ValueError(f"within must be one of {sorted(_LEVEL1)}, got {within!r}")
    out_dtype = u.dtype
    u, delta, A, B, C, D, z = _prepare(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    Bt, L = u.shape[0], u.shape[-1]
    Dm, N = _static_int(A.shape[0]), _static_int(A.shape[1])
    # one (Bt, 2Dm+2N, L) tensor -> zero-pad to nc*T (delta = 0: a = 1, b = 0, identity)
    # -> (T, Bt*nc, 2Dm+2N), step-major inside chunks
    # (symbolic shapes: to a multiple of T*EXPORT_TREE_GROUPS[0], so the export
    # tree's first level needs no padding)
    x = _pad_last(torch.cat([delta, delta * u, B, C], 1), T * EXPORT_TREE_GROUPS[0] if symbolic else T,
                  symbolic)
    x = x.transpose(1, 2).reshape(-1, T, 2 * Dm + 2 * N).transpose(0, 1).contiguous()
    dt, w, Bs, Cs = x.split([Dm, Dm, N, N], dim=-1)
    y = _LEVEL1[within](dt, w, Bs, Cs, A, Bt, symbolic, max_len)   # (T, Bt*nc, Dm)
    y = y.transpose(0, 1).reshape(Bt, -1, Dm).transpose(1, 2)[..., :L]
    return _finish(y, u, D, z, out_dtype)


# --------------------------------------------------------------------------- #
# cuda: mamba_ssm pass-through
# --------------------------------------------------------------------------- #
_CUDA_HINT = "pip install 'srstudy[cuda]' (mamba-ssm) on a machine with an NVIDIA GPU"


@functools.lru_cache(maxsize=None)
def _mamba_ssm_fn():
    """(selective_scan_fn, None) or (None, reason it cannot be imported)."""
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except Exception as e:  # ImportError, or a broken CUDA extension (OSError, ...)
        kind = "not installed" if isinstance(e, ModuleNotFoundError) else "failed to import"
        return None, f"mamba_ssm {kind} ({type(e).__name__}: {e})"
    return selective_scan_fn, None


def _cuda_unavailable(device: torch.device, dtype: Optional[torch.dtype]) -> Optional[str]:
    fn, err = _mamba_ssm_fn()
    if fn is None:
        return err
    if device.type != "cuda":
        return f"tensors are on {device.type}, the mamba_ssm kernel needs CUDA tensors"
    if dtype is not None and dtype not in _FAST_DTYPES:
        return f"mamba_ssm supports fp32/fp16/bf16 inputs, not {dtype}"
    return None


def selective_scan_cuda(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                        delta_softplus=False, **_ignored):
    """mamba_ssm's fused CUDA kernel (A, D and delta_bias are passed as fp32)."""
    fn, err = _mamba_ssm_fn()
    if fn is None:
        raise RuntimeError(f"backend 'cuda' unavailable: {err}; {_CUDA_HINT}")
    return fn(u, delta, A.float(), B, C,
              None if D is None else D.float(), z,
              None if delta_bias is None else delta_bias.float(),
              delta_softplus)


# --------------------------------------------------------------------------- #
# registry and selection
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class _Backend:
    fn: Callable
    #: (device, dtype) -> None if it can run, else the reason it cannot
    unavailable: Callable[[torch.device, Optional[torch.dtype]], Optional[str]]
    hint: str = ""


def _always(device, dtype):
    return None


# --------------------------------------------------------------------------- #
# triton: srstudy's own kernels (models/scan_triton.py), imported on first use
# --------------------------------------------------------------------------- #
_TRITON_HINT = "pip install triton (shipped with CUDA builds of torch) on a machine with an NVIDIA GPU"


@functools.lru_cache(maxsize=None)
def _triton_module():
    """(srstudy.models.scan_triton, None) or (None, reason it cannot be imported)."""
    try:
        from . import scan_triton
    except Exception as e:  # ImportError, or a triton that fails to initialise
        kind = "not installed" if isinstance(e, ModuleNotFoundError) else "failed to import"
        return None, f"triton {kind} ({type(e).__name__}: {e})"
    return scan_triton, None


def _triton_unavailable(device: torch.device, dtype: Optional[torch.dtype]) -> Optional[str]:
    mod, err = _triton_module()
    return err if mod is None else mod.triton_unavailable(device, dtype)


def selective_scan_triton(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                          delta_softplus=False, **kwargs):
    """srstudy's Triton kernels (forward and backward; models/scan_triton.py)."""
    mod, err = _triton_module()
    if mod is None:
        raise RuntimeError(f"backend 'triton' unavailable: {err}; {_TRITON_HINT}")
    return mod.selective_scan_triton(u, delta, A, B, C, D, z, delta_bias, delta_softplus, **kwargs)


# name -> backend, in the order "auto" prefers them (see _auto)
_BACKENDS: dict[str, _Backend] = {
    "cuda": _Backend(selective_scan_cuda, _cuda_unavailable, _CUDA_HINT),
    "triton": _Backend(selective_scan_triton, _triton_unavailable, _TRITON_HINT),
    "chunked": _Backend(selective_scan_chunked, _always),
    "reference": _Backend(selective_scan_reference, _always),
}
_AUTO_LOGGED: set = set()


def register_backend(name: str, fn: Callable, unavailable=None, hint: str = "") -> None:
    """Add (or replace) a backend. ``fn`` takes selective_scan's arguments (plus
    ``chunk_size=``); ``unavailable(device, dtype)`` returns None or a reason."""
    if name == "auto":
        raise ValueError("'auto' is reserved")
    _BACKENDS[name] = _Backend(fn, unavailable or _always, hint)


def available_backends(device=None, dtype: Optional[torch.dtype] = None) -> list[str]:
    """Backends that can run here for tensors on ``device`` (default: CUDA if
    present, else CPU) and of ``dtype`` (None: any)."""
    device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    return [n for n, b in _BACKENDS.items() if b.unavailable(device, dtype) is None]


def _exporting() -> bool:
    for probe in (getattr(torch.jit, "is_tracing", None),
                  getattr(torch.onnx, "is_in_onnx_export", None),
                  getattr(torch.compiler, "is_exporting", None)):
        try:
            if probe is not None and probe():
                return True
        except Exception:  # pragma: no cover
            pass
    return False


def _auto(device: torch.device, dtype: Optional[torch.dtype]) -> tuple[str, str]:
    if _exporting():
        return "chunked", "tracing/exporting: the chunked scan is the exportable one"
    why = _cuda_unavailable(device, dtype)
    if why is None:
        return "cuda", f"mamba_ssm imported and tensors are on {device}: using its fused CUDA kernel"
    if device.type != "cuda":
        return "chunked", f"{why}: using the pure-PyTorch chunked scan"
    why_triton = _triton_unavailable(device, dtype)
    if why_triton is None:
        return "triton", f"{why}: using srstudy's Triton kernels ({_CUDA_HINT} for mamba_ssm's)"
    return "chunked", f"{why}; {why_triton}: using the pure-PyTorch chunked scan ({_CUDA_HINT} for the CUDA kernel)"


def resolve_backend(backend: Optional[str] = None, device="cpu",
                    dtype: Optional[torch.dtype] = None) -> str:
    """The backend name :func:`selective_scan` will use for tensors on ``device``.

    ``backend``: a registered name, ``"auto"`` or None (then the env var
    ``SRSTUDY_SCAN_BACKEND``, else ``"auto"``).  Raises ValueError for unknown
    names and RuntimeError when an explicitly requested backend cannot run.
    """
    device = torch.device(device)
    source = "argument"
    if backend is None:
        backend, source = os.environ.get(ENV_VAR) or "auto", f"${ENV_VAR}"
    name = backend.strip().lower()
    if name == "auto":
        choice, why = _auto(device, dtype)
        key = (device.type, choice)
        if key not in _AUTO_LOGGED:
            _AUTO_LOGGED.add(key)
            logger.info("selective_scan backend auto -> %r on %s: %s", choice, device.type, why)
        return choice
    if name not in _BACKENDS:
        raise ValueError(
            f"unknown selective-scan backend {backend!r} (from {source}); "
            f"valid: {', '.join(['auto', *_BACKENDS])}")
    b = _BACKENDS[name]
    why = b.unavailable(device, dtype)
    if why is not None:
        fix = f"; fix: {b.hint}" if b.hint else ""
        raise RuntimeError(
            f"selective-scan backend {name!r} was requested (from {source}) but cannot run: "
            f"{why}{fix}; or use backend='chunked' (pure PyTorch)")
    return name


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   *, backend: Optional[str] = None, chunk_size: Optional[int] = None):
    """Mamba-1 selective scan (same arguments as mamba_ssm's ``selective_scan_fn``).

    u, delta, z: (Bt, Dm, L); A: (Dm, N); B, C: (Bt, N, L); D, delta_bias: (Dm,).
    Returns y: (Bt, Dm, L) in u's dtype.  ``backend``: ``"cuda"``,
    ``"chunked"``, ``"reference"``, any registered name or ``"auto"``; None
    reads ``$SRSTUDY_SCAN_BACKEND``, else ``"auto"`` (see :func:`resolve_backend`).
    ``chunk_size``: tokens per chunk for ``chunked`` (None: :func:`default_chunk_size`).
    Raises ValueError for an unknown backend, RuntimeError for one that cannot
    run here (never a silent fallback).
    """
    name = resolve_backend(backend, u.device, u.dtype)
    return _BACKENDS[name].fn(u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                              chunk_size=chunk_size)

"""The ``chunked`` selective scan: pure PyTorch, differentiable, ONNX-exportable.

``models/scan.py`` holds the dispatch, the input contract (shapes, dtypes, ``delta_bias``
and softplus, ``D``, ``z``) and the public :func:`srstudy.models.scan.selective_scan_chunked`;
this module is the algorithm on prepared inputs (:func:`chunked_scan`) and the choice of
its chunk size and within-chunk algorithm (:func:`chunked_options`).  The timings behind
the choices below are in ``benchmarks/README.md``.

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

Design choices (measured: ``benchmarks/README.md``): T-step sweeps, not a log-depth scan
inside chunks (each doubling step re-reads and re-writes the whole (Bt, Dm, N, L) tensor —
shift copies plus three multiply/adds — i.e. ~log2 T times the memory traffic and
activation memory, 10-20× slower on CPU and GPU); T = 32 on CUDA, 64 on CPU, 16 when
exporting (:data:`DEFAULT_CHUNK_SIZES`).

Memory: the chunked path materialises (Bt, Dm, N, L)-sized tensors: a and b
(``within="loop"``) and, under autograd, the per-step states of both sweeps (measured
peaks: ``benchmarks/README.md``).  mamba_ssm keeps the state in registers and stores none
of it.  If memory is tight, call the scan on slices of the batch or channels (it is
independent per batch element and per channel), use ``within="stream"`` for inference, or
wrap the calling block in torch.utils.checkpoint.
"""

from __future__ import annotations

import functools
import math
import warnings

import torch
import torch.nn.functional as F

#: Default chunk size T (tokens per chunk) of the chunked backend by context,
#: chosen by measurement (benchmarks/README.md): CUDA eager, CPU eager, and while
#: tracing/exporting (the graph unrolls the T-step sweeps: smaller T, smaller graph).
DEFAULT_CHUNK_SIZES = {"cuda": 32, "cpu": 64, "export": 16}
#: Group size of the tree scan across chunks (eager mode).
UPPER_CHUNK_SIZE = 16
#: Group sizes of the fixed tree used with symbolic shapes: the first level,
#: then every level above (the first level's decay matrices hold 16x its data).
EXPORT_TREE_GROUPS = (16, 32)
#: Length bound used for the tree depth when tracing/exporting with symbolic L.
DEFAULT_MAX_LEN = 2**22


def is_symbolic(x: torch.Tensor) -> bool:
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


def chunked_options(device, symbolic: bool, chunk_size=None, within=None) -> tuple[int, str]:
    """The chunk size T and the within-chunk algorithm for tensors on ``device``:
    ``chunk_size`` or :func:`default_chunk_size`; ``within`` or ``"stream"`` on a CPU in
    eager mode, else ``"loop"``.  Raises ValueError for T < 1 or an unknown ``within``."""
    T = int(chunk_size or default_chunk_size(device, symbolic))
    if T < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if within is None:
        within = "stream" if (torch.device(device).type == "cpu" and not symbolic) else "loop"
    if within not in _LEVEL1:
        raise ValueError(f"within must be one of {sorted(_LEVEL1)}, got {within!r}")
    return T, within


def chunked_scan(u, delta, A, B, C, *, T: int, within: str, symbolic: bool, max_len: int = DEFAULT_MAX_LEN):
    """y_t = Σ_n C_t,n·h_t,n for prepared inputs (``scan._prepare``: compute dtype, Δ with
    its bias and softplus applied; u, delta: (Bt, Dm, L), A: (Dm, N), B, C: (Bt, N, L)),
    before ``D·u`` and the ``z`` gate.  Returns y: (Bt, Dm, L).  ``T``, ``within``: from
    :func:`chunked_options`; ``symbolic``: :func:`is_symbolic` (tracing/exporting);
    ``max_len``: the longest L a traced graph must handle."""
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
    return y

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

The chunked algorithm, its design choices and memory use: ``models/scan_chunked.py``;
benchmark tables: ``benchmarks/README.md``.
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from .scan_chunked import (DEFAULT_CHUNK_SIZES, DEFAULT_MAX_LEN, chunked_options, chunked_scan, default_chunk_size,
                           is_symbolic)

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
# chunked: pure PyTorch, exportable (the algorithm: models/scan_chunked.py)
# --------------------------------------------------------------------------- #
def selective_scan_chunked(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                           delta_softplus=False, *, chunk_size=None, within=None,
                           max_len=DEFAULT_MAX_LEN, _symbolic=None):
    """Pure-PyTorch chunked selective scan (the algorithm: ``models/scan_chunked.py``).

    ``chunk_size``: tokens per chunk T (default: :func:`default_chunk_size`).
    ``within``: the algorithm inside a chunk: ``"loop"`` (T-step sweeps over
    precomputed a, b; the default on GPUs and when exporting), ``"stream"``
    (the same sweeps computing each step's a, b on the fly; the default on
    CPUs) or ``"doubling"`` (log-depth Hillis–Steele; slower everywhere, kept
    for benchmarks).  ``max_len``: used only with symbolic shapes (export):
    the longest L (per sequence) the traced graph must handle; longer inputs
    raise a shape error (also in onnxruntime), never silently wrong numbers.
    """
    symbolic = is_symbolic(u) if _symbolic is None else _symbolic  # _symbolic: tests only
    T, within = chunked_options(u.device, symbolic, chunk_size, within)
    out_dtype = u.dtype
    u, delta, A, B, C, D, z = _prepare(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    y = chunked_scan(u, delta, A, B, C, T=T, within=within, symbolic=symbolic, max_len=max_len)
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

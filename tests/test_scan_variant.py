"""The scan-backward variant benchmarks/gpu/variants/scan_triton_v3.py against the reference recurrence.

The variant is the shipped models/scan_triton.py with CONFIG["bwd_spread"] on: its backward holds
per-token rows in the state tiles' layout (see NOTES_issue15.md); the GPU benchmark times it
against the shipped default (`bench_scan_tiles.py --extra scan_triton_v3=...`), so its forward
and every gradient must be right first.
On a CPU machine the kernels run in Triton's interpreter, which needs TRITON_INTERPRET=1 before
triton is imported: one driver test re-runs this file in a subprocess with it set, as
test_scan_triton.py does.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import torch

from scan_cases import make_inputs, rel_err, run_interpreted, value_and_grads
from srstudy.models import scan as S

VARIANT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu" / "variants" / "scan_triton_v3.py"
INTERPRETING = os.environ.get("TRITON_INTERPRET") == "1"
HAS_TRITON = S._triton_module()[0] is not None
interpreted = pytest.mark.skipif(not INTERPRETING, reason="runs in the TRITON_INTERPRET=1 subprocess")

CASES = [  # Bt, Dm, L, N, T (tokens per chunk)
    (2, 3, 1, 4, 8),       # L = 1
    (1, 2, 5, 3, 8),       # one partial chunk, N not a power of two
    (2, 3, 37, 4, 16),     # L not a multiple of T
    (1, 4, 64, 16, 16),    # Mamba's N = 16
    (2, 2, 300, 8, 32),    # ten chunks: state and adjoint carried across chunks
]
FLAGS = [  # with_D, with_z, with_bias, softplus
    (True, True, True, True), (False, False, False, False), (True, False, True, False), (False, True, False, True),
]
N_INTERPRETED = len(CASES) * len(FLAGS) + 1


def _variant():
    spec = importlib.util.spec_from_file_location("scan_triton_v3", VARIANT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _errors(fn, shape, flags, seed=0):
    """Max relative error of `fn` (fp32; value and every gradient) vs the float64 reference recurrence."""
    Bt, Dm, L, N, T = shape
    with_D, with_z, with_bias, softplus = flags
    x = make_inputs(Bt, Dm, L, N, seed=seed, with_D=with_D, with_z=with_z, with_bias=with_bias)
    if not softplus:  # Δ > 0 (decays < 1), as in Mamba; else fp32 overflows over hundreds of steps
        x["delta"] = x["delta"].abs()
        x["delta_bias"] = None if x["delta_bias"] is None else x["delta_bias"].abs()
    x = {k: (None if v is None else v.float().double()) for k, v in x.items()}
    y_ref, g_ref = value_and_grads(S.selective_scan_reference, x, softplus)
    y, g = value_and_grads(fn, {k: (None if v is None else v.float()) for k, v in x.items()}, softplus,
                           chunk_size=T)
    assert y.dtype == torch.float32 and set(g) == set(g_ref)
    return {"y": rel_err(y, y_ref), **{k: rel_err(g[k], g_ref[k]) for k in g}}


@interpreted
@pytest.mark.parametrize("shape", CASES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("flags", FLAGS, ids=lambda f: "".join("DzbS"[i] if v else "-" for i, v in enumerate(f)))
def test_interpreted_variant_forward_and_gradients_match_reference(shape, flags):
    errs = _errors(_variant().selective_scan_triton, shape, flags)
    assert max(errs.values()) <= 2e-5, errs


@interpreted
def test_interpreted_variant_channel_groups_and_longer_backward_chunks():
    """G channels per program (more than Dm: masked channels), a backward chunk twice the forward's, token tiles."""
    mod = _variant()
    tiles, spread = (mod.CONFIG["fwd"], mod.CONFIG["bwd"]), mod.CONFIG["bwd_spread"]
    try:
        for fwd, bwd in [((8, 2, 1), (16, 4, 1)), ((8, 1, 1, 1), (16, 2, 1, 1)), ((8, 2, 1), (8, 1, 1))]:
            mod.CONFIG["fwd"], mod.CONFIG["bwd"] = fwd, bwd
            for shape in [(2, 3, 37, 4, None), (1, 5, 64, 16, None)]:
                for flags in FLAGS[:2]:
                    errs = _errors(mod.selective_scan_triton, shape, flags)
                    assert max(errs.values()) <= 2e-5, (fwd, bwd, shape, flags, errs)
    finally:
        mod.CONFIG["fwd"], mod.CONFIG["bwd"] = tiles
    assert mod.CONFIG["bwd_spread"] == spread  # the shipped default is back after every call


@pytest.mark.skipif(not HAS_TRITON, reason="triton not importable")
@pytest.mark.skipif(INTERPRETING or torch.cuda.is_available(), reason="the driver of the interpreted cases, on CPU")
def test_variant_in_the_interpreter_matches_reference():
    """Re-run this file with TRITON_INTERPRET=1: every interpreted case must pass."""
    run_interpreted(__file__, N_INTERPRETED)


@pytest.mark.skipif(not HAS_TRITON, reason="triton not importable")
def test_spread_backward_is_on_for_the_dtypes_config_names(monkeypatch):
    """The shipped default spreads the backward for the dtypes it names (float32 and bfloat16, both
    faster so on an H200; not float16, never timed); a tuple picks dtypes, True / False all of them."""
    from srstudy.models import scan_triton as ST

    assert ST._spread_backward(torch.float32) and ST._spread_backward(torch.bfloat16)
    assert not ST._spread_backward(torch.float16)
    monkeypatch.setitem(ST.CONFIG, "bwd_spread", ("float32",))
    assert ST._spread_backward(torch.float32) and not ST._spread_backward(torch.bfloat16)
    monkeypatch.setitem(ST.CONFIG, "bwd_spread", True)
    assert ST._spread_backward(torch.bfloat16)
    monkeypatch.setitem(ST.CONFIG, "bwd_spread", False)
    assert not ST._spread_backward(torch.float32)

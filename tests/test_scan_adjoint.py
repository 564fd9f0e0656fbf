"""The scan backward's reverse recurrence (models/scan_adjoint.py): the token flips and the layout check.

On a CPU machine the kernels run in Triton's interpreter, where the lane butterfly (inline PTX)
cannot run: "lanes" takes "gather" there, and every flip is checked against the float64 reference
recurrence (one driver test re-runs this file with TRITON_INTERPRET=1). The layout check is pure
text work on a compiled kernel's TTGIR: checked on hand-written layouts, and on the real backward
compiled for sm_90 by Triton's own compiler (no GPU needed). On a GPU (`cuda` marker) the compiled
butterfly runs against the reference, and a failed check falls back to the reverse scan, saying so.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import torch

from scan_cases import make_inputs, rel_err, run_interpreted, value_and_grads
from srstudy.models import scan as S

INTERPRETING = os.environ.get("TRITON_INTERPRET") == "1"
CUDA = torch.cuda.is_available()
HAS_TRITON = S._triton_module()[0] is not None
needs_triton = pytest.mark.skipif(not HAS_TRITON, reason=f"triton not importable: {S._triton_module()[1]}")
interpreted = pytest.mark.skipif(not INTERPRETING, reason="runs in the TRITON_INTERPRET=1 subprocess")
on_gpu = pytest.mark.skipif(not CUDA or INTERPRETING, reason="needs an NVIDIA GPU")
FLIP_NAMES = ("scan", "gather", "lanes")
SHAPES = [  # Bt, Dm, L, N, tokens per chunk
    (2, 3, 37, 4, 4),      # 4-token chunks: one run, nothing to reorder across lanes
    (1, 2, 5, 3, 8),       # one partial chunk, N not a power of two
    (2, 3, 70, 16, 16),
    (2, 2, 300, 8, 32),    # ten chunks: the adjoint carried across them (g_in folded into the last token)
]
N_INTERPRETED = len(FLIP_NAMES) * len(SHAPES) + 1


def _max_err(shape, flip, monkeypatch, *, dtype=torch.float32, device="cpu"):
    """Max relative error (y and every gradient) of the Triton scan with CONFIG["bwd_flip"] = `flip`."""
    from srstudy.models import scan_triton

    monkeypatch.setitem(scan_triton.CONFIG, "bwd_flip", {"default": flip})
    Bt, Dm, L, N, T = shape
    x = {k: (None if v is None else v.to(dtype).double()) for k, v in make_inputs(Bt, Dm, L, N, seed=5).items()}
    y_ref, g_ref = value_and_grads(S.selective_scan_reference, x, True)
    xt = {k: (None if v is None else v.to(device=device, dtype=dtype if k in "u delta B C z" else torch.float32))
          for k, v in x.items()}
    y, g = value_and_grads(S.selective_scan, xt, True, backend="triton", chunk_size=T)
    return max([rel_err(y.cpu(), y_ref)] + [rel_err(g[k].cpu(), g_ref[k]) for k in g_ref])


@interpreted
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("flip", FLIP_NAMES)
def test_interpreted_every_flip_matches_reference(shape, flip, monkeypatch):
    assert _max_err(shape, flip, monkeypatch) <= 2e-5


@interpreted
def test_interpreted_lanes_take_the_gather_twin():
    from srstudy.models.scan_adjoint import FLIPS, choose_flip

    assert choose_flip(None, "lanes", 32, (), {}, (1,), interpreting=True) == FLIPS["gather"]


@needs_triton
@pytest.mark.skipif(INTERPRETING or CUDA, reason="the driver of the interpreted cases, on CPU machines")
def test_flips_in_the_interpreter_match_reference():
    """Re-run this file with TRITON_INTERPRET=1: every interpreted case must pass."""
    run_interpreted(__file__, N_INTERPRETED)


@needs_triton
def test_chunks_under_four_tokens_take_the_reverse_scan_and_say_so():
    from srstudy.models.scan_adjoint import FLIPS, choose_flip

    with pytest.warns(RuntimeWarning, match="2-token chunks"):
        assert choose_flip(None, "lanes", 2, (), {}, (1,), interpreting=False) == FLIPS["scan"]
    assert choose_flip(None, "scan", 32, (), {}, (1,), interpreting=False) == FLIPS["scan"]
    assert choose_flip(None, "lanes", 4, (), {}, (1,), interpreting=False) == FLIPS["lanes"]  # no lanes to move


# --- the layout check on TTGIR text -------------------------------------------------------------

def _ttgir(layout: str, mask: int = 7, shape: str = "1x16x32") -> str:
    return (f"#blocked = {layout}\n#loc = loc(unknown)\nmodule {{\n"
            f'  %y = tt.elementwise_inline_asm "shfl.sync.bfly.b32 $0, $1, {mask}, 31, -1;" '
            f'{{constraints = "=r,r", packed_element = 1 : i32, pure = true}} %x : tensor<{shape}xf32, #blocked> '
            f"-> tensor<{shape}xf32, #blocked> loc(#loc)\n}}\n")


FP32_LAYOUT = "#ttg.blocked<{sizePerThread = [1, 1, 4], threadsPerWarp = [1, 4, 8], warpsPerCTA = [1, 1, 1], order = [2, 1, 0]}>"
LINEAR_OK = ("#ttg.linear<{register = [[0, 0, 1], [0, 0, 2], [0, 4, 0], [0, 8, 0]], lane = [[0, 0, 4], [0, 0, 8], "
             "[0, 0, 16], [0, 1, 0], [0, 2, 0]], warp = [], block = []}>")
# bf16 without CONFIG["bwd_vec"]: 8 tokens a thread, so lane bit 2 moves along N (Triton 3.6's own choice)
LINEAR_BF16_VEC0 = ("#ttg.linear<{register = [[0, 0, 1], [0, 0, 2], [0, 0, 4], [0, 8, 0]], lane = [[0, 0, 8], "
                    "[0, 0, 16], [0, 1, 0], [0, 2, 0], [0, 4, 0]], warp = [], block = []}>")


def test_lane_flip_check_accepts_4_tokens_a_thread_on_the_lowest_lanes():
    from srstudy.models.scan_adjoint import lane_flip_problem

    assert lane_flip_problem(_ttgir(FP32_LAYOUT), 32) is None
    assert lane_flip_problem(_ttgir(LINEAR_OK), 32) is None
    assert lane_flip_problem(_ttgir(FP32_LAYOUT.replace("order = [2, 1, 0]", "order = [2, 0, 1]")), 32) is None
    small = "#ttg.blocked<{sizePerThread = [1, 1, 4], threadsPerWarp = [1, 8, 4], warpsPerCTA = [1, 1, 1], order = [2, 1, 0]}>"
    assert lane_flip_problem(_ttgir(small, mask=3, shape="1x8x16"), 16) is None  # 16-token chunks: 4 lanes


def test_lane_flip_check_names_what_is_wrong():
    from srstudy.models.scan_adjoint import lane_flip_problem

    assert "moves elements by [0, 1, 24]" in lane_flip_problem(_ttgir(LINEAR_BF16_VEC0), 32)
    n_first = FP32_LAYOUT.replace("order = [2, 1, 0]", "order = [1, 2, 0]")  # N on the lowest lanes
    assert "a flip needs [0, 0, 28]" in lane_flip_problem(_ttgir(n_first), 32)
    wide = FP32_LAYOUT.replace("sizePerThread = [1, 1, 4]", "sizePerThread = [1, 1, 8]")  # 8 tokens a thread
    assert lane_flip_problem(_ttgir(wide), 32) is not None
    assert "butterfly by 3" in lane_flip_problem(_ttgir(FP32_LAYOUT, mask=3), 32)
    assert "could not be read" in lane_flip_problem(_ttgir("#ttg.amd_mfma<{version = 3}>"), 32)
    assert lane_flip_problem("module {}", 32) == "no lane butterfly found in the compiled kernel"


# --- the check on the real backward, compiled for sm_90 without a GPU ----------------------------

def _sass_counts():
    spec = importlib.util.spec_from_file_location(
        "sass_counts", Path(__file__).resolve().parents[1] / "benchmarks" / "gpu" / "sass_counts.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@needs_triton
@pytest.mark.skipif(INTERPRETING, reason="compiles with Triton's own compiler")
def test_compiled_backward_passes_the_check_with_the_shipped_layouts():
    """The shipped launches (float32; bf16 with its token runs of 4) lay 4 tokens a thread on the lowest
    lanes, so the butterfly is a flip; bf16 without `bwd_vec` does not, and the check says so."""
    from srstudy.models import scan_triton
    from srstudy.models.scan_adjoint import lane_flip_problem

    sc = _sass_counts()
    try:
        compile_ = lambda dtype, vec, reg: sc.compile_kernel(  # noqa: E731
            scan_triton, "bwd", scan_triton.CONFIG["bwd"], {"SPREAD": True, "VEC": vec, "FLIP": 2}, dtype, reg)
        shipped = {d: compile_(d, v, r) for d, v, r in (("fp32", 0, 128), ("bf16", 4, 168))}
    except Exception as err:  # no CUDA backend in this Triton build: nothing to check here
        pytest.skip(f"cannot compile for sm_90 here: {type(err).__name__}: {err}"[:200])
    for dtype, kernel in shipped.items():
        assert "shfl.sync.bfly.b32" in kernel.asm["ttgir"], dtype
        assert lane_flip_problem(kernel.asm["ttgir"], scan_triton.CONFIG["bwd"][0]) is None, dtype
    assert lane_flip_problem(compile_("bf16", 0, 168).asm["ttgir"], scan_triton.CONFIG["bwd"][0]) is not None


# --- on the GPU ----------------------------------------------------------------------------------

@pytest.mark.cuda
@on_gpu
@needs_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("flip", FLIP_NAMES)
def test_compiled_flips_match_reference(flip, dtype, monkeypatch):
    """Every flip, compiled, at the shipped tiles and at small chunks; "lanes" really takes the butterfly
    for the shipped training launch (its check passed)."""
    from srstudy.models import scan_adjoint, scan_triton

    monkeypatch.setitem(scan_triton.CONFIG, "min_programs", 0)  # the main tiles at every shape
    monkeypatch.setattr(scan_adjoint, "LANE_FLIP_CHECKED", {})
    tol = 2e-5 if dtype == torch.float32 else 1.5e-2
    for shape in SHAPES + [(3, 64, 1000, 16, None), (1, 5, 37, 4, None), (2, 64, 1024, 16, None)]:
        assert _max_err(shape, flip, monkeypatch, dtype=dtype, device="cuda") <= tol, shape
    if flip == "lanes":  # L = 1024, a multiple of 16: the training launch's layout, so the check passed
        assert None in scan_adjoint.LANE_FLIP_CHECKED.values(), scan_adjoint.LANE_FLIP_CHECKED


@pytest.mark.cuda
@on_gpu
@needs_triton
def test_a_failed_layout_check_takes_the_reverse_scan_and_says_so(monkeypatch):
    from srstudy.models import scan_adjoint

    monkeypatch.setattr(scan_adjoint, "LANE_FLIP_CHECKED", {})
    monkeypatch.setattr(scan_adjoint, "lane_flip_problem", lambda ttgir, block: "a layout for the test")
    with pytest.warns(RuntimeWarning, match="a layout for the test"):
        err = _max_err((2, 64, 1024, 16, None), "lanes", monkeypatch, device="cuda")
    assert err <= 2e-5

"""The Triton scan backward's reverse recurrence (the adjoint), and the check that keeps its fast form correct.

The backward needs ``g_t = x_t + a_{t+1}·g_{t+1}`` over each chunk of tokens: a *reverse* scan.
Triton 3.6 (torch 2.11's) lowers ``tl.associative_scan(reverse=True)`` by mirroring all 32 lanes in
5 butterfly shuffles for each of the scan's inputs and outputs: 320 of the backward's 460 shuffles
a chunk (SASS, sm_90; Triton 3.9 lowers it natively). A forward scan between two flips of the
token axis computes the same thing. How the flip is made (``FLIP``, ``CONFIG["bwd_flip"]`` in
:mod:`scan_triton`):

* 0, ``"scan"``: no flip, Triton's reverse scan;
* 1, ``"gather"``: each run of 4 tokens reversed in place (``tl.split``/``tl.join``: register
  renaming when a thread holds the run), then the order of the runs reversed with ``tl.gather``
  (portable; Triton 3.6 sends it through shared memory);
* 2, ``"lanes"``: the runs reversed in place as in 1, then their order reversed with one lane
  butterfly a value (``shfl.sync.bfly`` by T/4 − 1). That is a flip only when the tensor's layout
  puts 4 consecutive tokens in a thread and the runs on the lowest T/4 lanes, which the compiler
  chooses, not the code: :func:`lane_flip_problem` reads the layout from the compiled kernel's
  TTGIR before the kernel first runs, and the backward falls back to ``"scan"`` (and says so)
  when the check fails. Triton's interpreter cannot run the butterfly: there ``"lanes"`` takes
  ``"gather"``, its semantic twin.
"""
from __future__ import annotations

import math
import re
import warnings

import triton
import triton.language as tl

__all__ = ["FLIPS", "BUTTERFLY", "adjoint", "choose_flip", "first_order", "lane_flip_problem"]

#: CONFIG["bwd_flip"] names -> the kernel's FLIP constexpr
FLIPS = {"scan": 0, "gather": 1, "lanes": 2}
#: the lane butterfly's instruction (found again in the TTGIR by :func:`lane_flip_problem`)
BUTTERFLY = "shfl.sync.bfly.b32"


@triton.jit
def first_order(a1, b1, a2, b2):
    # (a1, b1) then (a2, b2):  h -> a2·(a1·h + b1) + b2
    return a1 * a2, b1 * a2 + b2


@triton.jit
def _swap_halves(x):
    """x : (..., 2) with its two entries along the last (in-thread) axis swapped."""
    lo, hi = tl.split(x)
    return tl.join(hi, lo)


@triton.jit
def flip_tokens(x, G: tl.constexpr, N: tl.constexpr, BLOCK: tl.constexpr, FLIP: tl.constexpr):
    """x : (G, N, T) with its token axis reversed (t -> T-1-t): each run of 4 tokens reversed in
    place, then the order of the T/4 runs reversed (FLIP 1: gather; FLIP 2: lane butterfly)."""
    J: tl.constexpr = BLOCK // 4
    lo, hi = tl.split(tl.reshape(x, (G, N, J, 2, 2)))                          # (G, N, J, 2) each
    y = tl.reshape(tl.join(_swap_halves(hi), _swap_halves(lo)), (G, N, BLOCK))  # each run reversed in place
    if J == 1:
        return y
    if FLIP == 1:
        y = tl.reshape(y, (G, N, J, 4))
        j = tl.arange(0, J)[None, None, :, None] + tl.zeros((G, N, J, 4), tl.int32)
        y = tl.reshape(tl.gather(y, J - 1 - j, axis=2), (G, N, BLOCK))
    else:  # lane l takes lane l ^ (J-1)'s value: the runs' order reversed (see lane_flip_problem)
        y = tl.inline_asm_elementwise(f"shfl.sync.bfly.b32 $0, $1, {J - 1}, 31, -1;", "=r,r", [y],
                                      dtype=tl.float32, is_pure=True, pack=1)
    return y


@triton.jit
def adjoint(a_next, x, g_in, t, G: tl.constexpr, N: tl.constexpr, BLOCK: tl.constexpr, FLIP: tl.constexpr):
    """g : (G, N, T), the reverse recurrence g_t = x_t + a_{t+1}·g_{t+1} over a chunk (`a_next`
    holds a_{t+1}; t : (1, 1, T) the token index), entering with g_in : (G, N, 1) after its last
    token. g_in is folded into the last token's x, so the scan's product output is not needed
    (88 shuffles a chunk fewer on Triton 3.6 than scanning it and adding ``Π a · g_in``)."""
    x = x + tl.where(t == BLOCK - 1, a_next * g_in, 0.0)
    if FLIP == 0:
        _prod, g = tl.associative_scan((a_next, x), axis=2, combine_fn=first_order, reverse=True)
        return g
    _prod, g = tl.associative_scan((flip_tokens(a_next, G, N, BLOCK, FLIP), flip_tokens(x, G, N, BLOCK, FLIP)),
                                   axis=2, combine_fn=first_order)
    return flip_tokens(g, G, N, BLOCK, FLIP)


# --- the layout check -------------------------------------------------------------------------

_ASM = re.compile(r'tt\.elementwise_inline_asm\s+"' + re.escape(BUTTERFLY) +
                  r' \$0, \$1, (\d+), 31, -1;".*?:\s*tensor<([0-9x]+)x[a-z0-9]+,\s*(#[\w.]+)>')


def _layout_defs(ttgir: str) -> dict[str, str]:
    """'#name' -> its definition's body, from the TTGIR's header lines ``#name = #ttg.kind<{...}>``."""
    return {m.group(1): m.group(2) for m in re.finditer(r"^(#[\w.]+) = (#ttg\.\w+<\{.*\}>)\s*$", ttgir, re.M)}


def _ints(text: str) -> list[int]:
    return [int(v) for v in re.findall(r"-?\d+", text)]


def _field(body: str, name: str) -> str:
    m = re.search(name + r"\s*=\s*(\[[^=]*?\]\]|\[[^\[\]]*\])", body)
    if not m:
        raise ValueError(f"no {name} in layout {body}")
    return m.group(1)


def lane_bases(body: str, shape: list[int]) -> list[list[int]]:
    """For a ``#ttg.blocked`` or ``#ttg.linear`` layout of a tensor of `shape`: per lane-id bit, the
    coordinates (one per axis) it moves an element by. Linear layouts are XOR-linear: the element a
    lane holds is at the XOR of the bases of its set lane bits (and of its register and warp bits)."""
    if body.startswith("#ttg.linear"):
        m = re.search(r"lane\s*=\s*\[(.*?)\]\s*,\s*warp", body)
        if not m:
            raise ValueError(f"no lane bases in layout {body}")
        return [_ints(v) for v in re.findall(r"\[([-\d,\s]*)\]", m.group(1))]
    if not body.startswith("#ttg.blocked"):
        raise ValueError(f"layout kind not understood: {body[:40]}")
    per_thread, lanes, order = (_ints(_field(body, k)) for k in ("sizePerThread", "threadsPerWarp", "order"))
    bases = []
    for axis in order:  # lane bits fill the axes fastest-first
        for i in range(int(math.log2(lanes[axis]))):
            step = per_thread[axis] << i
            bases.append([step if (a == axis and step < shape[a]) else 0 for a in range(len(shape))])
    return bases


def lane_flip_problem(ttgir: str, block: int) -> str | None:
    """None when every lane butterfly in a compiled backward's TTGIR reverses the order of the
    runs of 4 tokens of a (G, N, `block`) tensor — the XOR of the lane bases its mask flips moves
    an element by exactly 4·(block/4 − 1) tokens and nothing else — else what is wrong."""
    defs = _layout_defs(ttgir)
    found = 0
    for m in _ASM.finditer(ttgir):
        mask, shape, name = int(m.group(1)), [int(v) for v in m.group(2).split("x")], m.group(3)
        found += 1
        if mask != block // 4 - 1 or shape[-1] != block:
            return f"a butterfly by {mask} on a tensor of shape {shape} (tokens per chunk {block})"
        try:
            bases = lane_bases(defs[name], shape)
        except (KeyError, ValueError) as err:
            return f"the layout {name} could not be read ({err})"
        moved = [0] * len(shape)
        for bit, basis in enumerate(bases):
            if mask >> bit & 1:
                moved = [x ^ y for x, y in zip(moved, basis)]
        want = [0] * (len(shape) - 1) + [4 * (block // 4 - 1)]
        if moved != want:
            return f"layout {name} ({defs[name]}): the butterfly moves elements by {moved}, a flip needs {want}"
    return None if found else "no lane butterfly found in the compiled kernel"


#: compiled backward's hash -> why its lane flip is no flip (None: it is one)
LANE_FLIP_CHECKED: dict[str, str | None] = {}


def choose_flip(kernel, name: str, T: int, args: tuple, kw: dict, grid: tuple, interpreting: bool) -> int:
    """The FLIP constexpr of a launch of the backward `kernel` (a JITFunction; `args`, `kw`, `grid` as
    the launch will pass them) for ``CONFIG["bwd_flip"]`` = `name`, with T-token chunks. "lanes" is
    taken only once its compiled layout passes :func:`lane_flip_problem` (read before the kernel first
    runs: ``kernel.warmup`` compiles without launching); a failed check, or chunks under 4 tokens,
    take the reverse scan, with a warning saying so."""
    flip = FLIPS[name]
    if flip and T < 4:
        warnings.warn(f"scan backward: {T}-token chunks cannot be flipped in runs of 4; "
                      "using Triton's reverse scan (bwd_flip 'scan')", RuntimeWarning)
        return FLIPS["scan"]
    if flip != FLIPS["lanes"] or T == 4:  # 4-token chunks: one run a thread, no butterfly in the kernel
        return flip
    if interpreting:
        return FLIPS["gather"]  # the interpreter runs no inline assembly: the butterfly's semantic twin
    compiled = kernel.warmup(*args, grid=grid, **kw, FLIP=flip)
    compiled = compiled.result() if hasattr(compiled, "result") else compiled
    if compiled.hash not in LANE_FLIP_CHECKED:
        LANE_FLIP_CHECKED[compiled.hash] = problem = lane_flip_problem(compiled.asm["ttgir"], T)
        if problem:
            warnings.warn(f"scan backward: the compiled lane flip would not reverse the tokens ({problem}); "
                          "using Triton's reverse scan (bwd_flip 'scan') for this launch", RuntimeWarning)
    return flip if LANE_FLIP_CHECKED[compiled.hash] is None else FLIPS["scan"]

"""Random selective-scan inputs and value/gradient helpers shared by the scan tests."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import torch

NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


def make_inputs(Bt, Dm, L, N, *, dtype=torch.float64, device="cpu", seed=0,
                with_D=True, with_z=True, with_bias=True, decay=1.0):
    """Random Mamba-like inputs; ``decay`` scales A (|A| in [0.1, 2]*decay)."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)
    x = dict(
        u=r(Bt, Dm, L), delta=r(Bt, Dm, L) * 0.5,
        A=-(torch.rand(Dm, N, generator=g, dtype=torch.float64) * 1.9 + 0.1) * decay,
        B=r(Bt, N, L), C=r(Bt, N, L),
        D=r(Dm) if with_D else None, z=r(Bt, Dm, L) if with_z else None,
        delta_bias=r(Dm) * 0.5 if with_bias else None,
    )
    return {k: (None if v is None else v.to(device=device, dtype=dtype)) for k, v in x.items()}


def call(fn, x, softplus, **kw):
    return fn(*(x[k] for k in NAMES), softplus, **kw)


def value_and_grads(fn, x, softplus, gy_seed=1, **kw):
    leaves = {k: (None if v is None else v.detach().clone().requires_grad_(True)) for k, v in x.items()}
    y = call(fn, leaves, softplus, **kw)
    gy = torch.randn(y.shape, generator=torch.Generator().manual_seed(gy_seed), dtype=torch.float64)
    y.backward(gy.to(y))
    return y.detach(), {k: v.grad for k, v in leaves.items() if v is not None}


def rel_err(a, b):
    """max |a - b| / max(1, max |b|): absolute for O(1) values, relative for large ones."""
    return ((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1.0)).item()


def run_interpreted(test_file: str, expected_passed: int) -> None:
    """Re-run `test_file`'s `interpreted` cases with TRITON_INTERPRET=1 (it must be set before
    triton is imported, hence a subprocess); all `expected_passed` of them must pass."""
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    res = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "interpreted", test_file],
        capture_output=True, text=True, env=env, cwd=Path(test_file).parent, timeout=900)
    tail = (res.stdout + res.stderr)[-4000:]
    assert res.returncode == 0, tail
    found = re.search(r"(\d+) passed", res.stdout)
    assert found and int(found.group(1)) == expected_passed, tail

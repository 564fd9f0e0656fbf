"""Scan variant v3 for `bench_scan_tiles.py --extra scan_triton_v3=<this file>` (issue 15).

The shipped Triton scan (`srstudy.models.scan_triton`) with ``CONFIG["bwd_spread"]`` on: the
backward loads its per-token rows (u, Δ, Δ at t+1, dy, z) as (G, N, T) tiles with only row
n = 0 live and sums them over N (`_load_tok`), so Triton lays the backward's state tiles out
like the B and C loads (4 tokens a thread, 8 lanes along T, 4 along N) and its associative
scans shuffle per-thread totals only. sm_90 SASS with Triton 3.6: 690 → 478 shuffles a chunk
(benchmarks/gpu/sass_counts.py; NOTES_issue15.md). Timed on an H200 (session 5,
benchmarks/results/scan_tiles_variants_h200.json): faster in float32, slower in bfloat16, so the
shipped default is on for float32 inputs only; this wrapper turns it on for every dtype.
``CONFIG`` is the shipped module's, so the benchmark's tile sweep applies.
"""
from __future__ import annotations

from srstudy.models import scan_triton as _shipped

CONFIG = _shipped.CONFIG


def selective_scan_triton(*args, **kwargs):
    """The shipped scan with the spread backward (the switch is read at the forward call)."""
    before = CONFIG["bwd_spread"]
    CONFIG["bwd_spread"] = True
    try:
        return _shipped.selective_scan_triton(*args, **kwargs)
    finally:
        CONFIG["bwd_spread"] = before

"""Where the GPU idles inside srstudy's training loop, read from a torch.profiler Chrome trace.

Used by benchmarks/profile_trial_loop.py. The trace holds the loop's `record_function`
ranges ("loop/iteration" and one per phase, `srstudy.trials.loop.PHASES`) on the training
thread, the CPU ops, the CUDA launches (runtime or driver API: Triton launches through the
driver) and the GPU's kernels, copies and memsets, all on one clock (µs).

Each GPU event belongs to the iteration whose host range launched it (matched by the launch's
`correlation` id). The GPU's period is measured from the first GPU event of the first profiled
iteration to the first GPU event of the last one (so `profiled − 1` whole iterations, none cut
by the profiler's start or stop); its busy time is the UNION of the GPU events' intervals (streams
may overlap), idle = period − busy. A gap is a stretch of idle GPU longer than `gap_ms`; for each,
the host's phase and CPU op at the gap's start and the kernel that ends it, with the phase that
launched that kernel and whether the launch came late (the GPU waited for the CPU: `launch_late`)
or the kernel was already queued (it waited for something else, e.g. a copy or a sync).
"""
from __future__ import annotations

import bisect
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

GPU_CATEGORIES = ("kernel", "gpu_memcpy", "gpu_memset")
LAUNCH_CATEGORIES = ("cuda_runtime", "cuda_driver")
ITERATION = "loop/iteration"


def load_events(trace: str | Path) -> list[dict[str, Any]]:
    """The complete ("X") events of a Chrome trace written by `torch.profiler.profile.export_chrome_trace`."""
    with open(trace) as f:
        return [e for e in json.load(f)["traceEvents"] if e.get("ph") == "X" and "ts" in e]


def _end(e: dict[str, Any]) -> float:
    return e["ts"] + e.get("dur", 0.0)


def _innermost(events: list[dict[str, Any]], starts: list[float], t: float, scan: int = 5000) -> dict[str, Any] | None:
    """The innermost of one thread's nested ranges `events` (sorted by start, `starts` their
    starts) that contains time `t`: of the ranges containing t, the one that started last."""
    k = bisect.bisect_right(starts, t)
    for i in range(k - 1, max(-1, k - 1 - scan), -1):
        if _end(events[i]) >= t:
            return events[i]
    return None


def _union(intervals: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Merged, sorted intervals."""
    out: list[list[float]] = []
    for a, b in sorted(intervals):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


class _Host:
    """The training thread's loop ranges and CPU ops, for "what ran on the host at time t"."""

    def __init__(self, events: list[dict[str, Any]]) -> None:
        iters = sorted((e for e in events if e.get("cat") == "user_annotation" and e["name"] == ITERATION),
                       key=lambda e: e["ts"])
        self.tid = iters[0]["tid"] if iters else None
        self.iterations = iters
        self.iteration_starts = [e["ts"] for e in iters]
        mine = [e for e in events if e.get("tid") == self.tid]
        self.phases = sorted((e for e in mine if e.get("cat") == "user_annotation" and e["name"].startswith("loop/")
                              and e["name"] != ITERATION), key=lambda e: e["ts"])
        self.phase_starts = [e["ts"] for e in self.phases]
        self.ops = sorted((e for e in mine if e.get("cat") == "cpu_op"), key=lambda e: e["ts"])
        self.op_starts = [e["ts"] for e in self.ops]

    def iteration_at(self, t: float) -> int | None:
        """Index (0-based, among the profiled iterations) of the last iteration started by time t."""
        k = bisect.bisect_right(self.iteration_starts, t) - 1
        return k if k >= 0 else None

    def phase_at(self, t: float) -> str:
        e = _innermost(self.phases, self.phase_starts, t)
        if e is not None:
            return e["name"].removeprefix("loop/")
        k = self.iteration_at(t)
        return "unlabelled" if k is not None and t <= _end(self.iterations[k]) else "between_iterations"

    def op_at(self, t: float) -> str | None:
        e = _innermost(self.ops, self.op_starts, t)
        return None if e is None else e["name"]


def host_phases(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Host ms per profiled iteration in each loop phase (under the profiler) and the other
    threads' CPU-op time (the union of their top-level ops: e.g. the batch prefetch thread)."""
    host = _Host(events)
    n = len(host.iterations)
    if not n:
        return {"profiled_iterations": 0}
    per: dict[str, float] = defaultdict(float)
    for e in host.phases:
        per[e["name"].removeprefix("loop/")] += e.get("dur", 0.0) / 1000
    span = (_end(host.iterations[-1]) - host.iterations[0]["ts"]) / 1000
    others: dict[Any, list[tuple[float, float]]] = defaultdict(list)
    for e in events:
        if e.get("cat") == "cpu_op" and e.get("tid") != host.tid:
            others[e["tid"]].append((e["ts"], _end(e)))
    return {
        "profiled_iterations": n,
        "iteration_ms": span / n,
        "phase_ms_per_iteration": {k: v / n for k, v in sorted(per.items())},
        "other_threads_cpu_op_ms_per_iteration": {
            str(tid): sum(b - a for a, b in _union(iv)) / 1000 / n for tid, iv in sorted(others.items(), key=str)},
    }


def gpu_idle(events: list[dict[str, Any]], *, gap_ms: float = 0.2, top: int = 15) -> dict[str, Any] | None:
    """GPU busy / idle per iteration, idle by the phase that launched the kernel ending each gap,
    and the `top` largest gaps (module docstring). None when the trace has no GPU events (CPU)."""
    gpu = sorted((e for e in events if e.get("cat") in GPU_CATEGORIES), key=lambda e: e["ts"])
    if not gpu:
        return None
    host = _Host(events)
    n = len(host.iterations)
    if n < 2:
        raise ValueError(f"the trace has {n} profiled iteration(s) ({ITERATION!r} ranges); GPU idle needs >= 2")
    launches = {e["args"]["correlation"]: e for e in events
                if e.get("cat") in LAUNCH_CATEGORIES and "correlation" in e.get("args", {})}

    def launch_of(e: dict[str, Any]) -> dict[str, Any] | None:
        return launches.get(e.get("args", {}).get("correlation"))

    def iteration_of(e: dict[str, Any]) -> int | None:
        la = launch_of(e)
        return host.iteration_at(la["ts"] if la is not None else e["ts"])

    first_of: dict[int, float] = {}
    for e in gpu:
        k = iteration_of(e)
        if k is not None and k not in first_of:
            first_of[k] = e["ts"]
    if 0 not in first_of or n - 1 not in first_of:
        raise ValueError("no GPU work launched in the first or last profiled iteration; profile more iterations")
    t0, t1 = first_of[0], first_of[n - 1]
    whole = n - 1
    busy = _union([(max(e["ts"], t0), min(_end(e), t1)) for e in gpu if _end(e) > t0 and e["ts"] < t1])
    busy_us = sum(b - a for a, b in busy)
    by_kind: dict[str, float] = defaultdict(float)
    for e in gpu:
        if t0 <= e["ts"] < t1:
            by_kind[e["cat"]] += e.get("dur", 0.0) / 1000 / whole
    starts = [e["ts"] for e in gpu]
    gaps, idle_by_phase, small_idle = [], defaultdict(float), 0.0
    for (a, b), (c, _) in zip(busy, [*busy[1:], (t1, t1)]):  # the last gap ends at the period's end
        idle = (c - b) / 1000
        if idle <= gap_ms:
            small_idle += idle
            continue
        nxt = gpu[bisect.bisect_left(starts, c)]
        la = launch_of(nxt)
        phase = host.phase_at(la["ts"]) if la is not None else None
        idle_by_phase[phase or "unknown"] += idle / whole
        gaps.append({
            "host_iteration_at_start": host.iteration_at(b), "at_ms": (b - t0) / 1000, "idle_ms": idle,
            "host_phase_at_start": host.phase_at(b), "host_op_at_start": host.op_at(b),
            "host_phase_at_end": host.phase_at(c),
            "next_gpu_event": nxt["name"][:120], "next_launched_in_phase": phase,
            "next_launch_op": None if la is None else host.op_at(la["ts"]),
            "launch_late": None if la is None else la["ts"] >= b,
        })
    gaps.sort(key=lambda g: -g["idle_ms"])
    period = (t1 - t0) / 1000
    return {
        "measured_iterations": whole,
        "gpu_period_ms_per_iteration": period / whole,
        "gpu_busy_ms_per_iteration": busy_us / 1000 / whole,
        "gpu_idle_ms_per_iteration": (period - busy_us / 1000) / whole,
        "gpu_idle_fraction": 1 - busy_us / 1000 / period if period > 0 else None,
        "gpu_time_ms_per_iteration_by_kind": dict(by_kind),  # a sum: overlapping streams count twice
        "gap_threshold_ms": gap_ms,
        "idle_ms_per_iteration_in_gaps_by_next_launch_phase": dict(sorted(idle_by_phase.items(), key=lambda kv: -kv[1])),
        "idle_ms_per_iteration_in_small_gaps": small_idle / whole,
        "gaps_over_threshold": len(gaps),
        "top_gaps": gaps[:top],
        "top_kernels_ms_per_iteration": _top_kernels(gpu, t0, t1, whole),
    }


def _top_kernels(gpu: list[dict[str, Any]], t0: float, t1: float, whole: int, rows: int = 12) -> dict[str, float]:
    """GPU ms per iteration of the most expensive kernels (sum of their durations in the period)."""
    per: dict[str, float] = defaultdict(float)
    for e in gpu:
        if t0 <= e["ts"] < t1:
            per[e["name"][:100]] += e.get("dur", 0.0) / 1000 / whole
    return dict(sorted(per.items(), key=lambda kv: -kv[1])[:rows])

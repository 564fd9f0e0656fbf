"""Each full-budget trial's batch-1 latency timed again, one student at a time on an idle GPU.

Why: before srstudy took the GPU's lock for it (session 8), a trial timed its latency while the
study's other trials trained on the same GPU, so the figure measured them too: in the inherit
study on two H200s at 0.25 GPU per trial, students of 100k-150k params came out at 0.17 to
7.2 ms. Latency is one of the study's objectives, so a stretched figure moves trials on and off
the front. After the study the GPU is idle: this times every full-budget student again with the
trial's own method (`srstudy.trials.loop.measure_latency`: the LR size, repeats and warm-up of
its `latency` config, replayed from a CUDA graph on CUDA) and ranks the front on those figures.

`benchmarks/gpu_study_report.py --remeasure-latency` uses it; alone:

    python benchmarks/study_latency.py --workdir W [--device cuda] [--out latency.json]

Nothing is logged to the study's runs: the trials' own figures stay as measured.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from srstudy.analysis.load import load_runs, resolve_source
from srstudy.measure.inference import resolve_device
from srstudy.models.dvmsr import load_checkpoint
from srstudy.trials.loop import measure_latency

#: the trial config's `latency` section, as its MLflow runs record it (flat params), and its defaults
LATENCY_KEYS = {"height": 64, "width": 64, "repeats": 50, "warmup": 10}
COLUMN = "latency_ms"


def latency_settings(trial_config: dict[str, Any]) -> dict[str, int]:
    """The trials' latency settings from the study's flat trial config (`latency.height`, ...)."""
    return {k: int(trial_config.get(f"latency.{k}", default)) for k, default in LATENCY_KEYS.items()}


def student_of(tracking_uri: str, run_id: str) -> torch.nn.Module:
    """The trained student of a run (its `student/student.pth` artifact)."""
    from srstudy.deploy.sources import student_checkpoint

    with tempfile.TemporaryDirectory(prefix="study-latency-") as tmp:
        return load_checkpoint(student_checkpoint(tracking_uri, run_id, tmp))


def remeasure(tracking_uri: str, run_ids: list[str], settings: dict[str, int],
              device: torch.device) -> dict[str, dict[str, Any]]:
    """run id -> {latency_ms, latency_p90_ms, latency_method, device}: each student timed alone,
    one after the other, in this process (the GPU must be otherwise idle; `gpu_processes`
    says how many other compute processes NVML saw on it, None where NVML cannot tell)."""
    out = {}
    for run_id in run_ids:
        net = student_of(tracking_uri, run_id).to(device)
        metrics, tags = measure_latency(net, device=device, **settings)
        out[run_id] = {**metrics, "latency_method": tags.get("latency_method"), "device": str(device),
                       "gpu_processes": other_gpu_processes(device)}
        del net
    return out


def other_gpu_processes(device: torch.device) -> int | None:
    """Compute processes on `device` besides this one (NVML), or None (CPU, NVML unable)."""
    if device.type != "cuda":
        return None
    from srstudy.measure.nvml import other_processes, gpu_compute_processes

    try:
        return other_processes(gpu_compute_processes(device), os.getpid())
    except Exception:  # noqa: BLE001 - NVML absent or unable: not known, said as None
        return None


def with_remeasured(runs: pd.DataFrame, measured: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """`runs` with `latency_ms` replaced by the re-measured figure where there is one (others
    untouched): the frame `analysis.select.analyse_study(runs=...)` ranks."""
    runs = runs.copy()
    for run_id, m in measured.items():
        runs.loc[runs["run_id"] == run_id, COLUMN] = m["latency_ms"]
    return runs


def main(argv: list[str] | None = None) -> int:  # pragma: no cover - a command line
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", required=True, type=Path)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    source = resolve_source(args.workdir)
    runs = load_runs(source)
    done = runs[(runs["status"] == "FINISHED") & ~runs["pruned"]]
    first = done.iloc[0] if len(done) else None
    trial_cfg = {c.removeprefix("param."): first[c] for c in runs.attrs.get("param_columns", [])} if first is not None else {}
    measured = remeasure(source.tracking_uri, list(done["run_id"]), latency_settings(trial_cfg),
                         resolve_device(args.device))
    for run_id, m in measured.items():
        was = done.loc[done["run_id"] == run_id, COLUMN]
        print(f"{run_id}: {m['latency_ms']:.3f} ms alone (in the study: {float(was.iloc[0]) if len(was) else float('nan'):.3f})")
    if args.out:
        args.out.write_text(json.dumps(measured, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

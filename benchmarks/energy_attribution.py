"""Issue 17 on one GPU: energy you can rank, also when trials share the GPU.

1. **Study:** `srstudy launch` runs a study of ≥ 4 trials at a fraction of one GPU, all at once
   (benchmarks/configs/energy_attribution.yaml: bundled photos, short trials). Each trial
   measures its energy per iteration in an exclusive window; the launcher takes the idle
   baseline first and samples the GPU for attribution.
2. **Alone:** each finished trial's configuration is run again by itself, so its whole-run
   counter is its own energy. `--alone ray` (the default) runs it as a Ray task with the
   study's per-trial resources (CPUs, GPU fraction: the same worker environment, thread
   counts included, as a trial of the study), so only the sharing differs; `--alone process`
   runs it in this process (no Ray); `--alone both` runs both and reports the Ray one as the
   headline, the other beside it (`alone_process_*`).
3. **Report** (`--out`, e.g. benchmarks/results/energy_attribution_h200.json):
   * `trials_sharing_gpu`: most trials registered on the GPU at one moment (goal ≥ 4);
   * `attributed_over_measured_total`: Σ gpu_energy_attributed_j ÷ the GPU's counter energy
     from the first trial's start to the last one's end (goal 1 ± 0.05);
   * `max_shared_vs_alone_energy_per_iter_dev`: worst |shared-window J/iter − alone J/iter| ÷
     alone (goal ≤ 0.10; alone J/iter = the alone run's objective, its whole-run counter);
   * `calibration_overhead`: Σ time trials waited for their exclusive windows ÷ that span
     (goal ≤ 0.05);
   * one row per trial with the three energy numbers: `gpu_energy_j` (shared study, the
     objective), `gpu_energy_attributed_j` (its share of the GPU's measured energy) and
     `alone_gpu_energy_j` (the same configuration alone).

    python benchmarks/energy_attribution.py --workdir /tmp/ea \
        --out benchmarks/results/energy_attribution_h200.json \
        [--set 'trial.data.train=[/tmp/small/T91]' --set 'trial.data.val=[/tmp/small/Set5]']

`--set key=value` overrides the study config (keys as in `srstudy launch --set`); image
folders given this way replace the bundled photos, which need scikit-image. The config is
checked first (a bad `--set` is a one-line error), then a CUDA GPU with NVML is required.
If the study ran but a trial's run or the workdir lacks what the hooks of
docs/energy_attribution.md produce, it stops and names what is missing. The arithmetic
(`summarise`, `trial_row`, `max_concurrent`, `missing_hooks`) is tested on CPU in
tests/test_energy_window.py and tests/test_energy_wiring.py.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DEFAULT_CONFIG = HERE / "configs" / "energy_attribution.yaml"

#: what a trial's MLflow run must hold once the hooks are wired (docs/energy_attribution.md)
HOOK_METRICS = {"gpu_energy_j": "trial: objective from the exclusive window (§2)",
                "gpu_energy_per_iter_j": "trial: objective from the exclusive window (§2)",
                "gpu_energy_window_per_iter_j": "trial: exclusive window (§2)",
                "energy_window_wait_s": "trial: exclusive window (§2)"}
HOOK_FILES = {"gpu_idle.json": "launcher: idle baseline (§1)", "energy_samples": "launcher: sampler (§4)",
              "trial_pids": "trial: PID registration (§3)", "locks": "trial: GPU lock (§2)"}
GOALS = {"trials_sharing_gpu": ">= 4", "attributed_over_measured_total": "1 +- 0.05",
         "max_shared_vs_alone_energy_per_iter_dev": "<= 0.10", "calibration_overhead": "<= 0.05"}


# --------------------------------------------------------------------------- alone runs (tested on CPU)


def alone_runner(via: str, *, cpus: float, gpu_fraction: float):
    """A function ``(cfg, **run_trial_kwargs) -> TrialResult`` running one trial alone.

    ``via="ray"``: a Ray task asking for the study's per-trial resources, so the trial runs
    in the same kind of worker as in the study (Ray sets its CUDA device and CPU thread
    counts); ``via="process"``: :func:`run_trial` in this process. Ray is started on
    127.0.0.1 on first use when it is not running.
    """
    from srstudy.trials.distill import run_trial  # noqa: PLC0415

    if via == "process":
        return run_trial
    if via != "ray":
        raise ValueError(f"--alone must be ray, process or both, not {via!r}")
    from srstudy import ray_api  # noqa: PLC0415

    def run(cfg, **kwargs):
        if not ray_api.is_initialized():
            ray_api.init_local()
        task = ray_api.remote(run_trial, num_cpus=cpus, num_gpus=gpu_fraction, max_retries=0)
        return ray_api.get(task.remote(cfg, **kwargs))

    return run


# --------------------------------------------------------------------------- arithmetic (tested on CPU)


def max_concurrent(spans: list[tuple[float, float]]) -> int:
    """Most spans ``(start, end)`` open at one moment (an end at t closes before a start at t)."""
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans], key=lambda x: (x[0], x[1]))
    most = now = 0
    for _, step in events:
        now += step
        most = max(most, now)
    return most


def trial_row(trial_id: str, config: dict, shared: dict[str, float], shared_tags: dict[str, str],
              attributed_j: float | None, alone: dict[str, float], alone_tags: dict[str, str]) -> dict[str, Any]:
    """One trial's row: its three energy numbers and the shared-window vs alone deviation.

    ``shared``/``alone``: the MLflow metrics of the trial in the study and of its
    configuration run alone. A number that was not measured is None, and so is the deviation.
    """
    window = shared.get("gpu_energy_window_per_iter_j")
    alone_per_iter = alone.get("gpu_energy_per_iter_j")
    dev = abs(window - alone_per_iter) / alone_per_iter if window is not None and alone_per_iter else None
    return {
        "trial_id": trial_id, "config": config,
        "gpu_energy_j": shared.get("gpu_energy_j"),
        "gpu_energy_attributed_j": attributed_j,
        "alone_gpu_energy_j": alone.get("gpu_energy_j"),
        "gpu_energy_per_iter_j": shared.get("gpu_energy_per_iter_j"),
        "shared_window_energy_per_iter_j": window,
        "alone_energy_per_iter_j": alone_per_iter,
        "alone_window_energy_per_iter_j": alone.get("gpu_energy_window_per_iter_j"),
        "shared_vs_alone_energy_per_iter_dev": dev,
        "gpu_energy_whole_run_j": shared.get("gpu_energy_whole_run_j"),
        # in gpu_energy_j: the trial's share of the study's teacher training (absent: none measured)
        "gpu_energy_teacher_share_j": shared.get("gpu_energy_teacher_share_j"),
        "alone_gpu_energy_teacher_share_j": alone.get("gpu_energy_teacher_share_j"),
        "energy_teacher_share": shared_tags.get("energy_teacher_share"),
        "energy_method": shared_tags.get("energy_method"), "alone_energy_method": alone_tags.get("energy_method"),
        "energy_window_s": _float(shared_tags.get("energy_window_s")),
        "energy_window_iterations": _float(shared_tags.get("energy_window_iterations")),
        "energy_window_wait_s": shared.get("energy_window_wait_s"),
        "gpu_lock_blocked_s": shared.get("gpu_lock_blocked_s"),
        "alone_window_vs_whole_run_dev": alone.get("gpu_energy_window_vs_whole_run_dev"),
        # what can move joules per iteration between two windows of the same work: speed and heat
        **{f"{side}_window_{key}": m.get(f"energy_window_{key}") for side, m in (("shared", shared), ("alone", alone))
           for key in ("iterations_per_s", "temp_start_c", "temp_end_c")},
    }


def _float(text: str | None) -> float | None:
    try:
        return float(text) if text not in (None, "") else None
    except ValueError:
        return None


def summarise(rows: list[dict[str, Any]], totals: dict[str, float], spans: list[tuple[float, float]]) -> dict:
    """The issue's four numbers (None where an input was not measured) and whether each meets its goal."""
    devs = [r["shared_vs_alone_energy_per_iter_dev"] for r in rows]
    attributed = [r["gpu_energy_attributed_j"] for r in rows]
    measured = totals.get("gpu_energy_study_measured_j")
    out = {
        "trials_sharing_gpu": max_concurrent(spans) if spans else None,
        "attributed_over_measured_total": (sum(attributed) / measured
                                           if measured and rows and None not in attributed else None),
        "max_shared_vs_alone_energy_per_iter_dev": max(devs) if devs and None not in devs else None,
        "calibration_overhead": totals.get("calibration_overhead"),
    }
    checks = {"trials_sharing_gpu": lambda v: v >= 4,
              "attributed_over_measured_total": lambda v: abs(v - 1.0) <= 0.05,
              "max_shared_vs_alone_energy_per_iter_dev": lambda v: v <= 0.10,
              "calibration_overhead": lambda v: v <= 0.05}
    out["goals"] = GOALS
    out["goals_met"] = {k: (None if out[k] is None or (isinstance(out[k], float) and math.isnan(out[k]))
                            else bool(check(out[k]))) for k, check in checks.items()}
    return out


def missing_hooks(study_dir: Path, run_metrics: dict[str, float]) -> list[str]:
    """What the study did not produce that the hooks would have (empty: all there)."""
    missing = [f"{k} ({why})" for k, why in HOOK_METRICS.items() if k not in run_metrics]
    missing += [f"{study_dir / f} ({why})" for f, why in HOOK_FILES.items() if not (study_dir / f).exists()]
    return missing


# --------------------------------------------------------------------------- the run (GPU)


def gpu_missing() -> str | None:
    """Why this machine cannot run the benchmark (no CUDA GPU, no NVML), None when it can."""
    import torch

    from srstudy.measure.nvml import open_nvml

    if not torch.cuda.is_available():
        return "no CUDA GPU is visible (torch.cuda.is_available() is False)"
    return open_nvml()[1]


def main() -> None:  # pragma: no cover - needs a GPU
    import torch
    from mlflow import MlflowClient

    from srstudy.config import ConfigError, load_study_config
    from srstudy.launch import launch
    from srstudy.measure.attribution import load_trial_pids, read_samples
    from srstudy.measure.study_session import study_results
    from srstudy.workdir import StudyDir

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(DEFAULT_CONFIG), help="study YAML")
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--alone", choices=["ray", "process", "both"], default="ray",
                    help="how each configuration runs alone (see the module docstring)")
    ap.add_argument("--set", dest="overrides", action="append", default=[],
                    help="study override key=value, e.g. 'trial.data.train=[/data/T91]' (repeatable)")
    args = ap.parse_args()
    work = Path(args.workdir).resolve()
    study_dir = work / "study"
    try:
        study = load_study_config(args.config, args.overrides + [f"workdir={study_dir}"])
    except ConfigError as err:
        raise SystemExit(f"energy_attribution: {err}") from None
    if reason := gpu_missing():
        raise SystemExit(f"energy_attribution needs a CUDA GPU with NVML's energy counter: {reason}")
    if study.max_concurrent < 4 or not 0 < study.resources.gpu <= 0.25:
        raise SystemExit(f"the study must run >= 4 trials on one GPU at once: max_concurrent={study.max_concurrent} "
                         f"(need >= 4) and resources.gpu={study.resources.gpu} (need <= 0.25)")

    result = launch(study)
    client = MlflowClient(tracking_uri=result.tracking_uri)
    done = [r for r in result.rows if r["status"] == "done" and r.get("mlflow_run_id")]
    if not done:
        raise SystemExit(f"no trial of the study finished; see {study_dir}")
    runs = {r["trial_id"]: client.get_run(r["mlflow_run_id"]).data for r in done}
    if missing := missing_hooks(study_dir, next(iter(runs.values())).metrics):
        raise SystemExit("the study ran without the energy hooks of docs/energy_attribution.md; missing:\n  "
                         + "\n  ".join(missing))
    uuids = [read_samples(p)[0]["uuid"] for p in sorted((study_dir / "energy_samples").glob("gpu-*.jsonl"))]
    per_trial_att, totals, att_tags = study_results(study_dir, uuids)
    spans = [(r["started_at"], r["ended_at"]) for r in load_trial_pids(study_dir) if r.get("ended_at")]

    vias = ["ray", "process"] if args.alone == "both" else [args.alone]
    runners = {v: alone_runner(v, cpus=study.resources.cpu, gpu_fraction=study.resources.gpu) for v in vias}
    rows = []
    for r in done:
        tid = r["trial_id"]
        params = {k: r[k] for k in study.search_space}
        alone_runs = {}
        for via, runner in runners.items():
            where = work / f"alone-{via}"
            uri = StudyDir(where).create().tracking_uri
            res = runner(study.trial_config(params), workdir=where, tracking_uri=uri, trial_dir=where / tid,
                         teacher_cache=StudyDir(study_dir).teachers, run_name=f"alone-{via}-{tid}")
            alone_runs[via] = (res.metrics, MlflowClient(tracking_uri=uri).get_run(res.run_id).data.tags)
        head, *rest = vias
        row = trial_row(tid, params, runs[tid].metrics, runs[tid].tags,
                        per_trial_att.get(tid, {}).get("gpu_energy_attributed_j"), *alone_runs[head])
        row["alone_via"] = head
        for via in rest:  # the same configuration alone another way, beside the headline
            other = trial_row(tid, params, runs[tid].metrics, runs[tid].tags, None, *alone_runs[via])
            row.update({k.replace("alone_", f"alone_{via}_", 1): v for k, v in other.items() if k.startswith("alone_")})
            row[f"shared_vs_alone_{via}_energy_per_iter_dev"] = other["shared_vs_alone_energy_per_iter_dev"]
        rows.append(row)
        print(json.dumps(rows[-1]), flush=True)

    out = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
           "study": study.model_dump(mode="json"), "study_wall_s": result.wall_s,
           **summarise(rows, totals, spans), "study_totals": totals, "attribution_tags": att_tags,
           "trials": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1, default=str))
    print(json.dumps({k: out[k] for k in (*GOALS, "goals_met")}, indent=1))


if __name__ == "__main__":
    main()

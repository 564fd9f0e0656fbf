r"""Issue 16: what the paper's study on one GPU found, from its study folder (finished or not).

Reads the folder of `srstudy launch --config benchmarks/configs/gpu_study.yaml --data-root DIR
--workdir W` (its MLflow runs, and Tune's experiment state for the trials that never got a run)
and writes:

* `--out` (JSON): the device and versions; the study's name and config (the flat settings its
  MLflow runs recorded); `trials`, one row per trial Tune sampled (finished / pruned / skipped /
  failed / unfinished) with its searched settings, iterations, params, PSNR/SSIM, energy, latency,
  peak GPU memory, run id and name; `counts`; `front`, the Pareto front of the full-budget trials
  over the study's objectives (`analysis.select.analyse_study`, what `srstudy pareto` shows) and
  its `knee`; `best_student`, the highest Set5 PSNR with params <= 150,000 among full-budget
  trials, with its BSD100 scores (evaluated here under `--data-root DIR/benchmarks/BSD100` when
  its run has none) and `deploy` (ONNX export with the parity check, batch-1 latency at LR 64x64
  of PyTorch on `--device` and of onnxruntime); `comparison` with bicubic, the paper's student
  and FSRCNN. A value that was not measured is null, never 0.
* `--best-checkpoint`: the best student's `student.pth` from its run (srstudy's format: the
  network's state dict and its config; `srstudy eval --checkpoint` reads it) and `<stem>.json`
  beside it, the network config (`DVMSRConfig.from_dict` reads it).
* `--front-png`: the pairwise front plot (`analysis.plots.pairwise_front`).

    python benchmarks/gpu_study_report.py --workdir W [--data-root DIR] \
        --out benchmarks/results/gpu_study_h200.json \
        [--best-checkpoint benchmarks/results/gpu_study_best_student.pth] \
        [--front-png benchmarks/results/gpu_study_front.png] [--device auto|cpu|cuda] [--no-export] \
        [--export-dir DIR]   # keep model.onnx and export.json (default: a temporary folder)
        [--remeasure-latency]  # each full-budget student timed again alone; the front ranks those

The study's store is only read: nothing is logged to its runs.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import math
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import yaml

from paper_recipe_trial import BICUBIC, PAPER_STUDENT_SET5
from study_latency import latency_settings, remeasure, with_remeasured
from srstudy.analysis.front import fmt
from srstudy.analysis.load import SourceError, load_runs, resolve_source
from srstudy.analysis.select import analyse_study
from srstudy.measure.evaluate import STANDARD_SETS, evaluate, model_upscaler, open_sets
from srstudy.measure.inference import resolve_device
from srstudy.models.dvmsr import load_checkpoint
from srstudy.objectives import ObjectiveError
from srstudy.tracking import TUNE_TRIAL_TAG
from srstudy.workdir import StudyDir

PARAMS_LIMIT = 150_000
FSRCNN = {"Set5": 30.71, "Set14": 27.59, "BSD100": 26.98}  # published x4 (Dong et al. 2016)
LATENCY_LR = 64
SCORES = [f"{s}_{m}" for s in STANDARD_SETS for m in ("psnr", "ssim")]
ROW_METRICS = ["params", "val_psnr", "val_ssim", *SCORES, "gpu_energy_j", "gpu_energy_per_iter_j",
               "gpu_energy_attributed_j", "gpu_energy_whole_run_j", "gpu_energy_teacher_share_j",
               "energy_window_iterations_per_s", "iterations_per_s", "latency_ms", "gpu_peak_mem_allocated_mb",
               "gpu_peak_mem_reserved_mb", "train_time_s", "wall_time_s"]
#: the study run's GPU accounting (docs/energy_attribution.md): the GPU's total and where it went
STUDY_ENERGY = ["gpu_energy_study_measured_j", "gpu_energy_attributed_sum_j", "gpu_energy_no_process_j",
                "gpu_energy_unregistered_j", "gpu_energy_attributed_over_measured", "energy_study_span_s"]
ROW_TAGS = ["energy_method", "energy_unavailable_reason", "device_name", "post_training_failures"]
STUDY_PREFIX, SPACE_PREFIX = "study.", "study.search_space."


def clean(v: Any) -> Any:
    """JSON-ready: numpy scalars to Python, NaN/inf and pandas' NA to None (never 0)."""
    if isinstance(v, dict):
        return {str(k): clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [clean(x) for x in v]
    if v is None or v is pd.NA or v is pd.NaT:
        return None
    if hasattr(v, "item") and not isinstance(v, (str, bytes)):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def parse_param(text: Any) -> Any:
    """An MLflow param (a string) back to its value: numbers, lists, booleans; "None" → None."""
    if not isinstance(text, str):
        return clean(text)
    if text == "None":
        return None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


# ---- the trials ----------------------------------------------------------------------------------
def tune_trials(experiment_path: str | None, notices: list[str]) -> dict[str, dict[str, Any]]:
    """Every trial Tune sampled (`trial id → {tune_status, config, last_result}`), from the
    study's Tune experiment states: the only record of trials skipped before training (they
    have no MLflow run). Each launch of a resumed study wrote its own `experiment_state-*.json`;
    all are read and each trial keeps its furthest record (`_furthest`), since neither the
    files' names nor their mtimes order them when the study moved between machines (a device
    sitting's clock; an archive unpacked). Absent: a notice, and only runs are listed."""
    states = sorted(Path(experiment_path).glob("experiment_state-*.json")) if experiment_path else []
    if not states:
        notices.append(f"no Tune experiment state under {experiment_path}: trials without an MLflow run "
                       "(skipped by the params constraint, or not started) are not listed")
        return {}
    out: dict[str, dict[str, Any]] = {}
    for path in states:
        for state, meta in json.loads(path.read_text())["trial_data"]:
            trial, meta = json.loads(state), json.loads(meta)
            number = str(trial.get("experiment_tag", "")).split("_", 1)[0]  # "3_alpha=…": the 3rd sampled
            record = {"tune_status": trial.get("status"), "config": trial.get("config") or {},
                      "last_result": meta.get("last_result") or {},
                      "sampled": int(number) if number.isdigit() else None}
            if trial["trial_id"] not in out or _furthest(record) > _furthest(out[trial["trial_id"]]):
                out[trial["trial_id"]] = record
    return dict(sorted(out.items(), key=lambda kv: (kv[1]["sampled"] is None, kv[1]["sampled"] or 0)))


def _furthest(record: dict[str, Any]) -> tuple[bool, int]:
    """How far a Tune record of a trial got: ended (TERMINATED / ERROR) beats not ended, then the
    later iteration."""
    return record["tune_status"] in ("TERMINATED", "ERROR"), int(record["last_result"].get("iteration") or 0)


def trial_status(mlflow_status: str | None, pruned: bool, tune_status: str | None, last: dict[str, Any]) -> str:
    """finished / pruned / skipped / failed / unfinished, from the MLflow run's status and `pruned`
    tag (what `analysis.front.finished_mask` reads), then Tune's record (`constraint_violated`:
    skipped before training, no run; TERMINATED without `final`: stopped by ASHA)."""
    if tune_status == "ERROR" or mlflow_status == "FAILED":
        return "failed"
    if pruned:
        return "pruned"
    if mlflow_status == "FINISHED":
        return "finished"
    if last.get("constraint_violated"):
        return "skipped"
    if tune_status == "TERMINATED" and not last.get("final"):
        return "pruned"  # stopped by ASHA, its run not tagged yet (the launcher stopped first)
    # not finished when this report was written: running now, or interrupted with the launcher
    # (`srstudy launch --resume` continues it): RUNNING / PENDING in Tune, or a run left RUNNING
    return "unfinished"


def study_config(runs: pd.DataFrame, parent_params: dict[str, str]) -> tuple[dict[str, Any], list[str]]:
    """({"study": …, "trial": …}, searched keys): the study's settings as its MLflow runs hold
    them (flat dotted keys: the study run's params, a trial run's params less the searched keys)."""
    study = {k[len(STUDY_PREFIX):]: parse_param(v) for k, v in sorted(parent_params.items())
             if k.startswith(STUDY_PREFIX)}
    keys = [k[len(SPACE_PREFIX):-len(".type")] for k in parent_params
            if k.startswith(SPACE_PREFIX) and k.endswith(".type")]
    trial = {}
    if len(runs):
        first = runs.iloc[0]
        trial = {c.removeprefix("param."): parse_param(clean(first[c])) for c in runs.attrs.get("param_columns", [])
                 if c.removeprefix("param.") not in keys}
    return {"study": study, "trial": trial}, keys


def trial_rows(runs: pd.DataFrame, tune: dict[str, dict[str, Any]], keys: list[str], budget: int | None) -> list[dict]:
    """One row per trial: Tune's trials in the order sampled, each with its MLflow run (tag
    `tune_trial_id`), then any run Tune's record lacks."""
    id_tag = f"tag.{TUNE_TRIAL_TAG}"
    records = [r for _, r in runs.iterrows()]
    tid_of = [r[id_tag] if id_tag in runs.columns and isinstance(r[id_tag], str) else None for r in records]
    by_trial = {tid: r for tid, r in zip(tid_of, records) if tid is not None}
    pairs = [(tid, by_trial.get(tid)) for tid in tune]
    pairs += [(tid, r) for tid, r in zip(tid_of, records) if tid is None or tid not in tune]
    return [trial_row(tid, run, tune.get(tid, {}), runs, keys, budget) for tid, run in pairs]


def trial_row(tid: str | None, run: pd.Series | None, tune: dict[str, Any], runs: pd.DataFrame, keys: list[str],
              budget: int | None) -> dict[str, Any]:
    """One trial's row (see the module docstring). Iterations: the budget for a finished trial,
    the pruning point for a pruned one, 0 for a skipped one, else the last iteration Tune saw."""
    last = tune.get("last_result", {})
    status = trial_status(None if run is None else run["status"], bool(run is not None and run["pruned"]),
                          tune.get("tune_status"), last)
    config = {k: tune["config"][k] for k in keys if k in tune.get("config", {})}
    for k in keys:
        column = k if k in runs.columns else f"param.{k}"
        if k not in config and run is not None and column in runs.columns:
            config[k] = clean(run[column])
    iterations = {"finished": budget, "skipped": 0}.get(status)
    if status == "pruned" and run is not None and "tag.pruned_at_iteration" in runs.columns:
        iterations = parse_param(run["tag.pruned_at_iteration"])
    if iterations is None and last.get("iteration"):
        iterations = int(last["iteration"])
    row = {"trial_id": tid, "sampled": tune.get("sampled"), "status": status, "config": config,
           "iterations": iterations, "run_id": None, "run_name": None, "mlflow_status": None,
           "tune_status": tune.get("tune_status")}
    if run is not None:
        row.update(run_id=run["run_id"], run_name=run["run_name"], mlflow_status=run["status"])
    for m in ROW_METRICS:
        row[m] = clean(run[m]) if run is not None and m in runs.columns else None
    if row["params"] is None and last.get("params") is not None:
        row["params"] = clean(float(last["params"]))  # analytic, reported before a skipped trial
    for tag in ROW_TAGS:
        value = run.get(f"tag.{tag}") if run is not None else None
        row[tag] = value if isinstance(value, str) else None
    if last.get("constraint"):
        row["constraint"] = last["constraint"]
    row["full_budget"] = status == "finished" and budget is not None and iterations == budget
    return row


def counts(rows: list[dict]) -> dict[str, int]:
    """How many trials were sampled, trained (an MLflow run), ran the full budget, and by status."""
    out = {"sampled": len(rows), "trained": sum(r["run_id"] is not None for r in rows),
           "full_budget": sum(r["full_budget"] for r in rows)}
    out.update({s: sum(r["status"] == s for r in rows) for s in ("finished", "pruned", "skipped", "failed", "unfinished")})
    return out


def best_student(rows: list[dict]) -> dict | None:
    """The full-budget trial with the highest Set5 PSNR among those with params <= 150,000."""
    fit = [r for r in rows if r["full_budget"] and r["Set5_psnr"] is not None and r["params"] is not None
           and r["params"] <= PARAMS_LIMIT]
    return max(fit, key=lambda r: r["Set5_psnr"]) if fit else None


# ---- the front -----------------------------------------------------------------------------------
def front(source, rows: list[dict], png: Path | None, notices: list[str],
          runs: pd.DataFrame | None = None) -> tuple[list[dict], dict | None, Any]:
    """(front records, knee record, FrontResult): `srstudy pareto`'s ranking of the study's runs
    (or of `runs`: latency re-measured) over its objectives (only finished, unpruned runs: the
    full-budget trials); the plot at `png`."""
    try:
        _, result = analyse_study(source, say=notices.append, runs=runs)
    except (SourceError, ObjectiveError) as e:
        notices.append(f"no front: {e}")
        return [], None, None
    configs = {r["run_id"]: r["config"] for r in rows if r["run_id"]}
    records = [{**rec, "config": configs.get(rec["run_id"])} for rec in result.to_records(front_only=True)]
    knee = next((r for r in records if r["knee"]), None)
    if png is not None and not len(result.ranked):
        notices.append(f"front plot {png} not written: no full-budget trial has every objective")
    elif png is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from srstudy.analysis.plots import pairwise_front

        plt.close(pairwise_front(result, png, title=f"{source.study}: {len(result.front)} on the front of "
                                 f"{len(result.ranked)} full-budget trials ({len(result.excluded)} excluded)"))
    return clean(records), clean(knee), result


# ---- the winner ----------------------------------------------------------------------------------
def fetch_student(tracking_uri: str, run_id: str, dst: Path | None):
    """The best student's network, from its run's `student/student.pth`; copied to `dst` with
    `<stem>.json` (its `DVMSRConfig`) beside it when `dst` is given."""
    from srstudy.deploy.sources import student_checkpoint

    with tempfile.TemporaryDirectory(prefix="gpu-study-report-") as tmp:
        path = student_checkpoint(tracking_uri, run_id, tmp)
        net = load_checkpoint(path)
        if dst is not None:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, dst)
            dst.with_suffix(".json").write_text(json.dumps(net.cfg.to_dict(), indent=1))
    return net


def score_bsd100(net, data_root: Path | None, device: torch.device) -> dict[str, Any] | None:
    """Y-PSNR/SSIM of the network on `DIR/benchmarks/BSD100` (the trials' protocol), or None
    when that folder is absent."""
    root = Path(data_root) / "benchmarks" if data_root else None
    if root is None or not (root / "BSD100").is_dir():
        return None
    res = evaluate(model_upscaler(net.to(device), scale=net.cfg.scale, device=device),
                   open_sets(root, ["BSD100"], scale=net.cfg.scale))["BSD100"]
    return {"BSD100_psnr": res["psnr"], "BSD100_ssim": res["ssim"], "n": res["n"], "device": str(device)}


def deploy(net, device: torch.device, out_dir: Path) -> dict[str, Any]:
    """ONNX export with the project's parity check, and batch-1 latency at LR 64x64 of PyTorch on
    `device` and of onnxruntime (its best provider here): `deploy.export.export`."""
    from srstudy.deploy.export import export

    report = export(net.cpu(), out_dir, latency_sizes=(LATENCY_LR,), latency_repeats=20, latency_warmup=3,
                    latency_device=device, tensorrt=False, say=print)
    lat = report.latency[0]
    return {"onnx_nodes": report.graph["nodes"], "opset": report.graph["opset"], "parity": report.parity,
            "max_abs_diff": report.max_abs_diff, "tolerance": report.tolerance,
            "latency_lr64_batch1": {k: lat[k] for k in ("pytorch_ms", "pytorch_device", "pytorch_scan_backend",
                                                         "onnxruntime_ms", "onnxruntime_provider", "repeats")},
            "versions": report.versions}


def winner(best: dict, tracking_uri: str, args, device: torch.device, notices: list[str]) -> tuple[dict, bool]:
    """The best student's row completed: its checkpoint copied out, BSD100 scored here when its
    run has none, its export (unless --no-export). Returns (row, whether a step failed)."""
    from srstudy.deploy.onnx import ExportError

    best = {**best, "BSD100_source": "study run" if best["BSD100_psnr"] is not None else None}
    try:
        net = fetch_student(tracking_uri, best["run_id"], args.best_checkpoint)
    except ExportError as e:  # the run lacks student.pth (its `student` step failed): said, exit 1
        notices.append(f"best student not loaded: {e}")
        return best, True
    if args.best_checkpoint is not None:
        best["checkpoint"] = str(args.best_checkpoint)
    if best["BSD100_psnr"] is None:
        scored = score_bsd100(net, args.data_root, device)
        if scored is None:
            notices.append("BSD100 not scored: the best run has none and no --data-root DIR with "
                           "DIR/benchmarks/BSD100 was given")
        else:
            best.update(BSD100_psnr=scored["BSD100_psnr"], BSD100_ssim=scored["BSD100_ssim"],
                        BSD100_source=f"evaluated by this report on {scored['device']} ({scored['n']} images)")
    if args.no_export:
        return best, False
    with tempfile.TemporaryDirectory(prefix="gpu-study-export-") as tmp:
        try:
            best["deploy"] = deploy(net, device, args.export_dir or Path(tmp))
        except ExportError as e:  # e.g. the parity check failed: said in the JSON, exit 1
            best["deploy"] = {"error": str(e)}
            return best, True
    if args.export_dir is not None:
        best["deploy"]["onnx"] = str(args.export_dir / "model.onnx")
    return best, False


def knee_export(knee: dict | None, best: dict | None, tracking_uri: str, args, device: torch.device) -> dict | None:
    """The knee's export (issue 16 item 5 asks for the best student *and* the knee): the same
    ONNX + parity + latency as the best student's, or a pointer when the knee is that student."""
    from srstudy.deploy.onnx import ExportError

    if knee is None or args.no_export:
        return None
    if best is not None and knee.get("run_id") == best.get("run_id"):
        return {"same_as": "best_student"}
    try:
        net = fetch_student(tracking_uri, knee["run_id"], None)
        with tempfile.TemporaryDirectory(prefix="gpu-study-knee-") as tmp:
            out = args.export_dir / "knee" if args.export_dir is not None else Path(tmp)
            return deploy(net, device, out)
    except ExportError as e:
        return {"error": str(e)}


def comparison(best: dict | None) -> list[dict]:
    """PSNR on Set5 / Set14 / BSD100: the best student, bicubic (as `paper_recipe_trial` records
    it), the paper's student (only Set5 published) and FSRCNN (published x4)."""
    sets = list(STANDARD_SETS)
    student = {s: best.get(f"{s}_psnr") if best else None for s in sets}
    return [{"model": "best student (this study)", **student},
            {"model": "bicubic", **{s: BICUBIC.get(s) for s in sets}},
            {"model": "MambaLiteSR student (paper)", **{s: PAPER_STUDENT_SET5 if s == "Set5" else None for s in sets}},
            {"model": "FSRCNN (published)", **{s: FSRCNN[s] for s in sets}}]


def versions() -> dict[str, str | None]:
    """torch, triton (when importable), onnxruntime and srstudy versions of this environment."""
    out = {"torch": torch.__version__, "srstudy": importlib.metadata.version("srstudy")}
    for mod in ("triton", "onnxruntime"):
        out[mod] = importlib.import_module(mod).__version__ if importlib.util.find_spec(mod) else None
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", required=True, type=Path, help="the study folder (study.json, mlflow.db, ray_results)")
    ap.add_argument("--data-root", type=Path, help="the study's data root: BSD100 under DIR/benchmarks/BSD100")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--best-checkpoint", type=Path)
    ap.add_argument("--front-png", type=Path)
    ap.add_argument("--device", default="auto", help="auto, cpu or cuda: BSD100 scoring and PyTorch latency")
    ap.add_argument("--no-export", action="store_true", help="skip the ONNX export and the latency comparison")
    ap.add_argument("--export-dir", type=Path, help="keep model.onnx and export.json here (default: a temporary folder)")
    ap.add_argument("--remeasure-latency", action="store_true",
                    help="time each full-budget student again, alone on --device, and rank the front on those")
    args = ap.parse_args(argv)
    try:
        source = resolve_source(args.workdir)
        device = resolve_device(args.device)
    except (SourceError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    notices: list[str] = []
    client = source.client()
    state = StudyDir(args.workdir).read_state()
    runs = load_runs(source)
    parent = client.get_run(state["parent_run_id"]).data
    config, keys = study_config(runs, parent.params)
    budget = config["trial"].get("iterations")
    rows = trial_rows(runs, tune_trials(state.get("experiment_path"), notices), keys, budget)
    if args.remeasure_latency:  # each full-budget student timed again alone; the front ranks those
        alone = remeasure(source.tracking_uri, [r["run_id"] for r in rows if r["full_budget"]],
                          latency_settings(config["trial"]), device)
        for r in rows:
            r["latency_remeasured"] = alone.get(r["run_id"])
        runs = with_remeasured(runs, alone)
        notices.append(f"latency_ms of the front and knee: timed again by this report, each student alone on "
                       f"{device} ({len(alone)} full-budget trials; rows: latency_remeasured)")
    front_records, knee, _ = front(source, rows, args.front_png, notices,
                                   runs=runs if args.remeasure_latency else None)
    best = best_student(rows)
    out: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "study_devices": sorted({r["device_name"] for r in rows if r["device_name"]}),
        "versions": versions(), "study": source.study, "workdir": str(source.workdir),
        "objectives": state.get("objectives"), "config": config, "iteration_budget": budget,
        # proposals the searcher rejected before they became trials (analytic constraints; the
        # study run's metric, absent for a study from before srstudy screened proposals)
        "counts": {**counts(rows), "rejected_proposals": parent.metrics.get("proposals_rejected")},
        "trials": rows, "front": front_records, "knee": knee,
        "study_energy": {k: parent.metrics.get(k) for k in STUDY_ENERGY},
    }
    failed = False
    if best is None:
        notices.append(f"no best student: no full-budget trial with a Set5 PSNR and params <= {PARAMS_LIMIT}")
    else:
        best, failed = winner(best, source.tracking_uri, args, device, notices)
    if (knee_deploy := knee_export(knee, best, source.tracking_uri, args, device)) is not None:
        out["knee"] = {**knee, "deploy": knee_deploy}
        failed = failed or "error" in knee_deploy
    out.update(best_student=clean(best), comparison=comparison(best), notices=notices)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(clean(out), indent=1, default=str))
    print(f"{out['study']}: {out['counts']}; front {len(front_records)} run(s)")
    if best is not None:
        print(f"best student {best['run_name']} ({best['run_id']}): " + ", ".join(
            f"{s} {fmt(best.get(f'{s}_psnr')) or '-'}" for s in STANDARD_SETS) + f" dB, {fmt(best['params'])} params")
    for n in notices:
        print(f"notice: {n}")
    print(f"wrote {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

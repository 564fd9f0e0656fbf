"""`srstudy launch`: a Ray Tune study — Optuna multi-objective search, ASHA, fractional GPUs,
crash-safe resume.

    study config ─► OptunaSearch (TPE, multi-objective, RDB storage <workdir>/optuna.db)
                    └ ConcurrencyLimiter(max_concurrent)
                 ─► ASHA on val_psnr (time attribute: iteration)
                 ─► Tuner(with_resources(trial, {cpu, gpu}))  ─► one MLflow run per trial,
                                                                  under a parent run for the study

Pruned trials: a trial that ASHA stops early is told to Optuna as PRUNED, never as COMPLETE
with truncated objective values, so it cannot pollute the Pareto front; its MLflow run is ended
KILLED and tagged `pruned=true`.

Analytic constraints (params, FLOPs): the searcher checks each proposal before it becomes a Tune
trial; one that breaks a constraint is told to Optuna as PRUNED (user attr
`srstudy_status=constraint_violated`) and the sampler is asked again, so `num_samples` counts
trials that can train. After `search.MAX_REJECTED_PROPOSALS` rejections in a row the next
proposal runs anyway and is skipped before training (told PRUNED too), with a warning. The
study's run logs `proposals_rejected`; constraints on measured metrics are checked after training.

Resume: `<workdir>/study.json` records the study. After a crash (even kill -9 of the launcher
and Ray), `srstudy launch --resume` restores the Tuner from `<workdir>/ray_results/<name>`
with the Optuna study from its storage; finished trials are kept, unfinished ones restart and
continue from their own checkpoints (`<workdir>/trials/<trial id>`) into the same MLflow runs.
One launcher at a time: `<workdir>/launch.lock` (see `srstudy.workdir`) is held throughout.

GPU energy (docs/energy_attribution.md; `energy`, `node_energy`): on a study that requests GPUs,
the launcher takes each GPU's idle baseline before any GPU work, samples the GPUs while the
trials run and logs each trial's share of the measured energy (`gpu_energy_attributed_j`) and
the study's totals; on a Ray cluster it does so on every GPU node through an actor pinned to
each; a failure of this accounting is a tag on the study's run, never a failed study.

The package: this module (`launch`, `StudyResult`, `StudyExistsError`: the public entry),
`search` (the Optuna glue), `trainable` (`tune_trial`, what Tune runs per trial),
`progress` (the live table, the failed-trial summary), `energy` (the GPU energy accounting) and
`node_energy` (its actors on the cluster's other GPU nodes).
"""
from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console

from .. import ray_api
from ..config import RESUME_MAY_CHANGE, StudyConfig, flatten, without_resume_settings
from ..objectives import Objective, measurable_here
from ..tracking import TrialRun
from ..workdir import StudyDir
from .energy import open_study_energy
from .progress import (OUTCOMES, StudyProgress, close_forgotten_runs, restoring_as, run_was_pruned, trial_error,
                       trial_outcome)
from .search import name_objectives, reconcile_optuna, rejected_proposals, screen_restored, study_searcher
from .trainable import tune_trial

log = logging.getLogger("srstudy.launch")


class StudyExistsError(RuntimeError):
    """The workdir already holds a study and --resume was not given."""


@dataclass
class StudyResult:
    """A study's outcome: one row per trial (status, searched settings, objectives, error), the
    objectives it was searched on, the Pareto-best finished rows, the study's MLflow run and how
    many proposals the searcher rejected for breaking an analytic constraint."""

    rows: list[dict[str, Any]]
    objectives: list[Objective]
    pareto: list[dict[str, Any]] = field(default_factory=list)
    parent_run_id: str | None = None
    tracking_uri: str = ""
    wall_s: float = 0.0
    rejected_proposals: int = 0  # proposals that broke an analytic constraint: never trials (all launches)


def _prepare_teacher(study: StudyConfig, study_dir: StudyDir) -> None:
    """Train (or find) the shared teacher once, before any trial, on a worker with the
    trials' resources — so concurrent trials never queue on the teacher lock."""
    if study.trial.teacher.checkpoint is not None:
        return

    def build(study_json: str, workdir: str) -> str:
        from srstudy.measure.inference import resolve_device
        from srstudy.trials.teacher import get_teacher

        s = StudyConfig.model_validate_json(study_json)
        t = get_teacher(s.trial, cache_dir=StudyDir(workdir).teachers, device=resolve_device(s.trial.device))
        return t.source

    task = ray_api.remote(build, num_cpus=study.resources.cpu, num_gpus=study.resources.gpu)
    source = ray_api.get(task.remote(study.model_dump_json(), str(study_dir)))
    log.info("teacher ready (%s)", source)


def config_differences(before: dict[str, Any] | None, now: dict[str, Any], limit: int = 6) -> str:
    """` (key: started with → now, …)` for a refused resume, or "" when the folder predates
    storing its config."""
    if not before:
        return ""
    old, new = flatten(without_resume_settings(before)), flatten(now)
    keys = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    shown = [f"{k}: {old.get(k, '(absent)')!r} → {new.get(k, '(absent)')!r}" for k in keys[:limit]]
    more = f", and {len(keys) - limit} more" if len(keys) > limit else ""
    return " (" + "; ".join(shown) + more + ")"


def _logged_resume_settings(tracking_uri: str, state: dict[str, Any]) -> dict[str, Any]:
    """The settings a resume may change (`max_concurrent`) as the study's MLflow run logged them
    at its start, for a folder whose study.json predates storing its config ({} otherwise)."""
    if state.get("config") is not None or not state.get("parent_run_id"):
        return {}
    params = TrialRun(tracking_uri, state["parent_run_id"]).params_if_exists() or {}
    return {k: json.loads(params[f"study.{k}"]) for k in RESUME_MAY_CHANGE if f"study.{k}" in params}


def _check_resources(study: StudyConfig) -> None:
    have = ray_api.cluster_resources()
    need = {"CPU": study.resources.cpu, "GPU": study.resources.gpu, **study.resources.custom}
    missing = [f"{k}={v:g} (cluster has {have.get(k, 0):g})" for k, v in need.items() if v > 0 and have.get(k, 0) < v]
    if missing:
        raise ValueError("no node can run a trial: it asks for " + ", ".join(missing) +
                         "; lower resources.* or join a cluster that has them (--address)")


def launch(study: StudyConfig, *, resume: bool = False, address: str | None = None,
           console: Console | None = None) -> StudyResult:
    """Run (or resume) a study to `num_samples` finished trials; see the module docstring.
    Holds `<workdir>/launch.lock` throughout: a second launcher on the same folder is refused
    (`workdir.WorkdirLockedError`, naming the holder)."""
    console = console or Console(stderr=True)
    if not console.is_terminal:
        console.width = max(console.width, 160)
    study_dir = StudyDir(study.workdir).create()
    with study_dir.lock() as lock:
        if lock.stale is not None:
            console.print(f"[yellow]notice:[/] {lock.describe_stale()}")
        return _run_locked(study, study_dir, resume=resume, address=address, console=console)


def _run_locked(study: StudyConfig, workdir: StudyDir, *, resume: bool, address: str | None,
                console: Console) -> StudyResult:
    t0 = time.perf_counter()
    tracking_uri = study.tracking_uri or workdir.tracking_uri
    state = workdir.read_state()
    exp_path = workdir.ray_results / study.name
    if state is not None and not resume:
        raise StudyExistsError(
            f"{workdir} already holds study {state['name']!r}; resume it with `srstudy launch --resume "
            f"--workdir {workdir}`, or choose another --workdir")
    if state is not None and not study.is_study_of(state, ran_with=_logged_resume_settings(tracking_uri, state)):
        raise StudyExistsError(
            f"{workdir} holds study {state['name']!r} with a different configuration"
            f"{config_differences(state.get('config'), study.identity_payload())}; resume it with the "
            "config it was started with (and the same --data-root contents), or choose another --workdir")
    if resume and state is None:
        console.print(f"[yellow]--resume: no study in {workdir} yet, starting a new one[/]")

    objectives = measurable_here(study.objectives, study.constraints, study.resources.gpu,
                                 lambda msg: console.print(f"[yellow]notice:[/] {msg}"), on_cluster=bool(address))
    obj_names = [o.metric for o in objectives]
    storage_url = workdir.optuna_url

    if state is None:
        study_tags = {"role": "study", "study": study.name, "study_dir": str(workdir.path)}
        # a launcher killed between creating the study's run and writing study.json left that run: adopt it
        orphan = TrialRun.find_open(tracking_uri=tracking_uri, experiment=study.trial.experiment, tags=study_tags)
        parent = TrialRun.start(tracking_uri=tracking_uri, experiment=study.trial.experiment, run_id=orphan,
                                run_name=f"study-{study.name}", artifact_root=workdir.artifacts, tags=study_tags)
        parent.log_params(flatten({"study": study.model_dump(mode="json", exclude={"trial"})}))
        state = {"name": study.name, "identity": study.identity(), "parent_run_id": parent.run_id,
                 "experiment_path": str(exp_path), "objectives": [str(o) for o in objectives],
                 "config": study.identity_payload()}
        workdir.write_state(state)
    else:
        parent = TrialRun.start(tracking_uri=tracking_uri, experiment=study.trial.experiment,
                                run_id=state["parent_run_id"])

    if address:
        ray_api.connect(address)
    else:
        ray_api.init_local()
    energy = None
    try:
        _check_resources(study)
        energy = open_study_energy(study, workdir, parent)  # idle baselines: before any GPU work
        _prepare_teacher(study, workdir)
        trainable = ray_api.with_resources(
            ray_api.with_parameters(tune_trial, study_json=study.model_dump_json(), workdir=str(workdir),
                                 tracking_uri=tracking_uri, parent_run_id=state["parent_run_id"],
                                 objectives=obj_names),
            {"cpu": study.resources.cpu, "gpu": study.resources.gpu, **study.resources.custom},
        )
        progress = StudyProgress(study, obj_names, tracking_uri, console)
        if exp_path.exists() and ray_api.can_restore(str(exp_path)):
            console.print(f"resuming study {study.name!r} from {exp_path}")
            with restoring_as(progress):  # Tune's pickled callback becomes this launch's
                tuner = ray_api.restore_tuner(str(exp_path), trainable)
            screen_restored(ray_api.restored_searcher(tuner), study)
            started_with = ray_api.restored_searcher(tuner).max_concurrent
            if started_with != study.max_concurrent:
                console.print(f"max_concurrent: {study.max_concurrent} trials at once (the study ran {started_with})")
                ray_api.restored_searcher(tuner).max_concurrent = study.max_concurrent
                parent.set_tags({"max_concurrent_resumed": study.max_concurrent})  # its param: the start's
        else:
            scheduler = None
            if study.asha.enabled:
                scheduler = ray_api.ASHAScheduler(
                    time_attr="iteration", metric="val_psnr", mode="max", max_t=study.trial.iterations,
                    grace_period=min(study.asha.grace_period or study.trial.val_interval, study.trial.iterations),
                    reduction_factor=study.asha.reduction_factor)
            tuner = ray_api.Tuner(
                trainable,
                tune_config=ray_api.TuneConfig(
                    search_alg=study_searcher(study, objectives, storage_url),
                    scheduler=scheduler, num_samples=study.num_samples, reuse_actors=False),
                run_config=ray_api.RunConfig(
                    name=study.name, storage_path=str(workdir.ray_results), verbose=0,
                    callbacks=[progress], failure_config=ray_api.FailureConfig(max_failures=1)),
            )
        if energy is not None:
            energy.start()
        grid = tuner.fit()
        rows = _rows(grid, study, obj_names, tracking_uri)
    finally:
        if energy is not None:
            energy.stop()
        ray_api.shutdown()
    if energy is not None:  # each trial's gpu_energy_attributed_j, the study's totals
        energy.log_results(rows, tracking_uri)
    interrupted = any(r["status"] == "interrupted" for r in rows)
    orphans = 0 if interrupted else reconcile_optuna(storage_url, study.name)
    forgotten = [] if interrupted else close_forgotten_runs(tracking_uri, study.trial.experiment, state["parent_run_id"])
    if forgotten:
        console.print(f"[yellow]notice:[/] {len(forgotten)} trial run(s) started before the launcher died were not in "
                      "Tune's saved state; ended as KILLED with forgotten=true: " + ", ".join(forgotten))
    name_objectives(storage_url, study.name, obj_names)
    result = StudyResult(rows, objectives, parent_run_id=state["parent_run_id"], tracking_uri=tracking_uri,
                         wall_s=time.perf_counter() - t0,
                         rejected_proposals=rejected_proposals(storage_url, study.name))
    result.pareto = pareto_rows(rows, objectives)
    _summarise(parent, result, workdir, orphans, study, console)
    return result


def _rows(grid, study: StudyConfig, objectives: list[str], tracking_uri: str) -> list[dict[str, Any]]:
    rows = []
    for res in grid:
        m = res.metrics or {}
        cfg = res.config or {}
        status = trial_outcome(m, error=bool(res.error),
                               pruned=not m.get("final") and run_was_pruned(tracking_uri, m.get("mlflow_run_id")))
        row = {"trial_id": m.get("trial_id"), "status": status, "mlflow_run_id": m.get("mlflow_run_id"),
               "iteration": m.get("iteration"), "node_id": m.get("node_id"), "gpu_ids": m.get("gpu_ids"),
               **{k: cfg.get(k) for k in study.search_space}}
        row.update({o: m.get(o) for o in objectives})
        row["val_psnr"] = m.get("val_psnr")
        row.update(trial_error(res))
        rows.append(row)
    return rows


def pareto_rows(rows: list[dict[str, Any]], objectives: list[Objective]) -> list[dict[str, Any]]:
    """The non-dominated finished trials (those with every objective measured)."""
    from srstudy.analysis.pareto import pareto_front

    done = [r for r in rows if r["status"] == "done"
            and all(r.get(o.metric) is not None and math.isfinite(r[o.metric]) for o in objectives)]
    if not done:
        return []
    mask = pareto_front([[r[o.metric] for o in objectives] for r in done], [o.direction for o in objectives])
    return [r for r, keep in zip(done, mask) if keep]


def _summarise(parent: TrialRun, result: StudyResult, workdir: StudyDir, orphans: int, study: StudyConfig,
               console: Console) -> None:
    from srstudy.analysis.study_run import publish_front

    counts = {s: sum(r["status"] == s for r in result.rows) for s in OUTCOMES}
    parent.log_metrics({f"trials_{k}": v for k, v in counts.items()} | {
        "pareto_size": len(result.pareto), "study_wall_s": result.wall_s, "optuna_orphans_failed": orphans,
        "proposals_rejected": result.rejected_proposals})
    out = workdir.trials_summary
    out.write_text(json.dumps({"rows": result.rows, "pareto": result.pareto}, indent=1, default=str))
    parent.log_artifact(out, "study")
    try:  # the front, its plot and the study's description, on the study run; pareto_rank on trial runs
        publish_front(result.tracking_uri, parent.run_id, objectives=result.objectives, constraints=study.constraints,
                      search_space=study.model_dump(mode="json")["search_space"], trials=counts, study=study.name)
    except Exception as e:  # noqa: BLE001 — every trial and run is kept; `srstudy pareto` ranks them again
        console.print(f"[yellow]warning:[/] the front was not logged to the study run {parent.run_id}: {e}")
    parent.finish("FINISHED")

"""`srstudy launch`: a Ray Tune study — Optuna multi-objective search, ASHA, fractional GPUs,
crash-safe resume.

    study config ─► OptunaSearch (TPE, multi-objective, RDB storage <workdir>/optuna.db)
                    └ ConcurrencyLimiter(max_concurrent)
                 ─► ASHA on val_psnr (time attribute: iteration)
                 ─► Tuner(with_resources(trial, {cpu, gpu}))  ─► one MLflow run per trial,
                                                                  under a parent run for the study

Pruned trials: a trial that ASHA stops early — or that breaks an analytic constraint and is
skipped before training — is told to Optuna as PRUNED, never as COMPLETE with truncated
objective values, so it cannot pollute the Pareto front; its MLflow run is ended KILLED and
tagged `pruned=true`.

Resume: `<workdir>/study.json` records the study. After a crash (even kill -9 of the launcher
and Ray), `srstudy launch --resume` restores the Tuner from `<workdir>/ray_results/<name>`
with the Optuna study from its storage; finished trials are kept, unfinished ones restart and
continue from their own checkpoints (`<workdir>/trials/<trial id>`) into the same MLflow runs.
One launcher at a time: `<workdir>/launch.lock` (see `srstudy.workdir`) is held throughout.
"""
from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console

from . import _ray
from .config import StudyConfig, flatten
from .objectives import ANALYTIC_METRICS, Objective, measurable_here
from .progress import StudyProgress, trial_error
from .tracking import TUNE_TRIAL_TAG, TrialRun, trial_run_name
from .workdir import StudyDir

log = logging.getLogger("srstudy.launch")


class StudyExistsError(RuntimeError):
    """The workdir already holds a study and --resume was not given."""


# ---- Optuna side ----------------------------------------------------------------------------
def optuna_space(study: StudyConfig) -> dict[str, Any]:
    """The search space as Optuna distributions, keyed by trial-setting path."""
    import optuna.distributions as d

    space = {}
    for key, p in study.search_space.items():
        if p.type == "categorical":
            space[key] = d.CategoricalDistribution(p.choices)
        elif p.type == "int":
            space[key] = d.IntDistribution(int(p.low), int(p.high), step=int(p.step or 1), log=p.log)
        else:
            space[key] = d.FloatDistribution(p.low, p.high, step=p.step, log=p.log)
    return space


class PruneAwareOptunaSearch(_ray.OptunaSearch):
    """OptunaSearch that tells early-stopped or skipped trials as PRUNED.

    Stock OptunaSearch tells Optuna a trial stopped by ASHA as COMPLETE with its last,
    truncated values (or fails to tell it at all when the other objectives are missing).
    Here only a result carrying `final=True` and every objective completes an Optuna trial.
    """

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        if trial_id in self._completed_trials:
            return super().on_trial_complete(trial_id, result, error)
        if trial_id not in self._ot_trials and not self._recover(trial_id, result):
            log.warning("trial %s completed but its Optuna trial is unknown and has no config to rebuild it", trial_id)
            return
        from optuna.trial import TrialState

        ot_trial = self._ot_trials[trial_id]
        metrics = self.metric if isinstance(self.metric, list) else [self.metric]
        values = [None if not result else result.get(m) for m in metrics]
        complete = (not error and result and result.get("final")
                    and all(v is not None and math.isfinite(float(v)) for v in values))
        if complete:
            return super().on_trial_complete(trial_id, result, error)
        reason = "error" if error else (
            "constraint_violated" if result and result.get("constraint_violated") else "stopped_early")
        ot_trial.set_user_attr("srstudy_status", reason)
        self._ot_study.tell(ot_trial, state=TrialState.FAIL if error else TrialState.PRUNED)
        self._completed_trials.add(trial_id)

    def _recover(self, trial_id: str, result: dict | None) -> bool:
        """Re-attach a Tune trial whose Optuna trial the restored searcher state no longer
        knows (a crash between Optuna's `ask` and Tune's experiment checkpoint): reuse the
        RUNNING Optuna trial with the same parameters, else ask one with those parameters."""
        import optuna
        from optuna.trial import TrialState

        params = (result or {}).get("config")
        if not isinstance(params, dict):
            return False
        params = {k: params[k] for k in self._space if k in params}
        claimed = {t._trial_id for t in self._ot_trials.values()}
        for frozen in self._ot_study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if frozen._trial_id not in claimed and frozen.params == params:
                self._ot_trials[trial_id] = optuna.Trial(self._ot_study, frozen._trial_id)
                log.info("re-attached trial %s to Optuna trial #%d after a restore", trial_id, frozen.number)
                return True
        self._ot_study.enqueue_trial(params)
        self._ot_trials[trial_id] = self._ot_study.ask(fixed_distributions=self._space)
        log.info("re-created Optuna trial for %s after a restore", trial_id)
        return True


class ResumableConcurrencyLimiter(_ray.ConcurrencyLimiter):
    """ConcurrencyLimiter that still forwards the completion of a trial it lost track of in a
    crash (Tune restores it, the limiter's restored state never saw it) — the stock one drops
    it, and the Optuna study would never learn the trial's result."""

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        if self._limit_concurrency and trial_id not in self.live_trials:
            return self.searcher.on_trial_complete(trial_id, result=result, error=error)
        return super().on_trial_complete(trial_id, result=result, error=error)


# ---- the Tune trainable -----------------------------------------------------------------------
def _report_objectives(metrics: dict[str, float], objectives: list[str]) -> dict[str, float]:
    return {m: metrics[m] for m in objectives if m in metrics}


def tune_trial(params: dict[str, Any], *, study_json: str, workdir: str, tracking_uri: str,
               parent_run_id: str | None, objectives: list[str]) -> None:
    """One Tune trial = one `run_trial` = one MLflow run (resumed after a crash)."""
    import torch

    from srstudy.trials.distill import RUN_FILE, run_trial

    study = StudyConfig.model_validate_json(study_json)
    cfg = study.trial_config(params)
    torch.set_num_threads(max(1, int(study.resources.cpu)))
    tid = _ray.trial_id()
    study_dir = StudyDir(workdir)
    tdir = study_dir.trial(tid)
    # where it ran: the node, and the GPU(s) Ray gave it there (CUDA_VISIBLE_DEVICES)
    base = {"iteration": 0, "trial_dir": str(tdir), "node_id": _ray.node_id(), "gpu_ids": ",".join(_ray.gpu_ids())}

    # analytic constraints: checked before any training
    analytic = {"params": cfg.student.param_count(cfg.scale),
                "flops": cfg.student.to_model_config(cfg.scale).flops(cfg.latency.height, cfg.latency.width)}
    broken = [str(c) for c in study.constraints if c.metric in ANALYTIC_METRICS and not c.holds(analytic[c.metric])]
    if broken:
        _ray.report({**base, **analytic, "final": True, "constraint_violated": True,
                     "constraint": "; ".join(broken), "val_psnr": float("nan")})
        return

    def run_id() -> str | None:
        f = tdir / RUN_FILE
        return json.loads(f.read_text())["run_id"] if f.exists() else None

    def on_validate(it: int, m: dict[str, float]) -> None:
        if it >= cfg.iterations:  # the final report carries it, with every objective
            return
        _ray.report({**base, **m, "iteration": it, "final": False, "mlflow_run_id": run_id()})

    result = run_trial(cfg, workdir=workdir, tracking_uri=tracking_uri, trial_dir=tdir,
                       parent_run_id=parent_run_id, teacher_cache=study_dir.teachers,
                       run_name=trial_run_name({k: params[k] for k in study.search_space if k in params}),
                       run_tags={TUNE_TRIAL_TAG: tid},
                       on_validate=on_validate)
    m = result.metrics
    final = {**base, **m, "iteration": cfg.iterations, "final": True, "mlflow_run_id": result.run_id}
    broken = [str(c) for c in study.constraints if c.metric in m and not c.holds(m[c.metric])]
    if broken:
        final.update(constraint_violated=True, constraint="; ".join(broken))
    _ray.report(final)


# ---- the launcher ---------------------------------------------------------------------------
@dataclass
class StudyResult:
    rows: list[dict[str, Any]]
    objectives: list[Objective]
    pareto: list[dict[str, Any]] = field(default_factory=list)
    parent_run_id: str | None = None
    tracking_uri: str = ""
    wall_s: float = 0.0


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

    task = _ray.remote(build, num_cpus=study.resources.cpu, num_gpus=study.resources.gpu)
    source = _ray.get(task.remote(study.model_dump_json(), str(study_dir)))
    log.info("teacher ready (%s)", source)


def _check_resources(study: StudyConfig) -> None:
    have = _ray.cluster_resources()
    need = {"CPU": study.resources.cpu, "GPU": study.resources.gpu, **study.resources.custom}
    missing = [f"{k}={v:g} (cluster has {have.get(k, 0):g})" for k, v in need.items() if v > 0 and have.get(k, 0) < v]
    if missing:
        raise ValueError("no node can run a trial: it asks for " + ", ".join(missing) +
                         "; lower resources.* or join a cluster that has them (--address)")


def _reconcile_optuna(storage_url: str, name: str) -> int:
    """After Tune has finished every trial, Optuna trials still RUNNING were asked for by a
    searcher state lost in a crash (no Tune trial owns them): mark them FAIL."""
    import optuna
    from optuna.trial import TrialState

    st = optuna.storages.RDBStorage(storage_url)
    study_id = st.get_study_id_from_name(name)
    n = 0
    for t in st.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
        st.set_trial_user_attr(t._trial_id, "srstudy_status", "orphaned_by_crash")
        st.set_trial_state_values(t._trial_id, TrialState.FAIL)
        n += 1
    return n


def _name_objectives(storage_url: str, name: str, metrics: list[str]) -> None:
    """Name the Optuna study's objectives after their metrics, so Optuna Dashboard shows
    `val_psnr`, `params`, … instead of "Objective 0", "Objective 1", …"""
    import warnings

    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # set_metric_names: experimental
        optuna.load_study(study_name=name, storage=storage_url).set_metric_names(metrics)


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
    import optuna

    t0 = time.perf_counter()
    tracking_uri = study.tracking_uri or workdir.tracking_uri
    state = workdir.read_state()
    exp_path = workdir.ray_results / study.name
    if state is not None and not resume:
        raise StudyExistsError(
            f"{workdir} already holds study {state['name']!r}; resume it with `srstudy launch --resume "
            f"--workdir {workdir}`, or choose another --workdir")
    if state is not None and state["identity"] != study.identity():
        raise StudyExistsError(
            f"{workdir} holds study {state['name']!r} with a different configuration; resume it with the "
            "config it was started with, or choose another --workdir")
    if resume and state is None:
        console.print(f"[yellow]--resume: no study in {workdir} yet, starting a new one[/]")

    objectives = measurable_here(study.objectives, study.constraints, study.resources.gpu,
                                 lambda msg: console.print(f"[yellow]notice:[/] {msg}"))
    obj_names = [o.metric for o in objectives]
    storage_url = workdir.optuna_url

    if state is None:
        parent = TrialRun.start(tracking_uri=tracking_uri, experiment=study.trial.experiment,
                                run_name=f"study-{study.name}", artifact_root=workdir.artifacts,
                                tags={"role": "study", "study": study.name})
        parent.log_params(flatten({"study": study.model_dump(mode="json", exclude={"trial"})}))
        state = {"name": study.name, "identity": study.identity(), "parent_run_id": parent.run_id,
                 "experiment_path": str(exp_path), "objectives": [str(o) for o in objectives]}
        workdir.write_state(state)
    else:
        parent = TrialRun.start(tracking_uri=tracking_uri, experiment=study.trial.experiment,
                                run_id=state["parent_run_id"])

    if address:
        _ray.connect(address)
    else:
        _ray.init_local()
    try:
        _check_resources(study)
        _prepare_teacher(study, workdir)
        trainable = _ray.with_resources(
            _ray.with_parameters(tune_trial, study_json=study.model_dump_json(), workdir=str(workdir),
                                 tracking_uri=tracking_uri, parent_run_id=state["parent_run_id"],
                                 objectives=obj_names),
            {"cpu": study.resources.cpu, "gpu": study.resources.gpu, **study.resources.custom},
        )
        progress = StudyProgress(study, obj_names, tracking_uri, console)
        if exp_path.exists() and _ray.can_restore(str(exp_path)):
            console.print(f"resuming study {study.name!r} from {exp_path}")
            tuner = _ray.restore_tuner(str(exp_path), trainable)
        else:
            searcher = PruneAwareOptunaSearch(
                space=optuna_space(study), metric=obj_names, mode=[o.direction for o in objectives],
                storage=optuna.storages.RDBStorage(storage_url), study_name=study.name,
                sampler=optuna.samplers.TPESampler(seed=study.seed, multivariate=True),
            )
            scheduler = None
            if study.asha.enabled:
                scheduler = _ray.ASHAScheduler(
                    time_attr="iteration", metric="val_psnr", mode="max", max_t=study.trial.iterations,
                    grace_period=min(study.asha.grace_period or study.trial.val_interval, study.trial.iterations),
                    reduction_factor=study.asha.reduction_factor)
            tuner = _ray.Tuner(
                trainable,
                tune_config=_ray.TuneConfig(
                    search_alg=ResumableConcurrencyLimiter(searcher, max_concurrent=study.max_concurrent),
                    scheduler=scheduler, num_samples=study.num_samples, reuse_actors=False),
                run_config=_ray.RunConfig(
                    name=study.name, storage_path=str(workdir.ray_results), verbose=0,
                    callbacks=[progress], failure_config=_ray.FailureConfig(max_failures=1)),
            )
        grid = tuner.fit()
        rows = _rows(grid, study, obj_names)
    finally:
        _ray.shutdown()
    orphans = _reconcile_optuna(storage_url, study.name)
    _name_objectives(storage_url, study.name, obj_names)
    result = StudyResult(rows, objectives, parent_run_id=state["parent_run_id"], tracking_uri=tracking_uri,
                         wall_s=time.perf_counter() - t0)
    result.pareto = pareto_rows(rows, objectives)
    _summarise(parent, result, workdir, orphans, study, console)
    return result


def _rows(grid, study: StudyConfig, objectives: list[str]) -> list[dict[str, Any]]:
    rows = []
    for res in grid:
        m = res.metrics or {}
        cfg = res.config or {}
        status = ("error" if res.error else "skipped" if m.get("constraint_violated")
                  else "done" if m.get("final") else "pruned")
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

    counts = {s: sum(r["status"] == s for r in result.rows) for s in ("done", "pruned", "skipped", "error")}
    parent.log_metrics({f"trials_{k}": v for k, v in counts.items()} | {
        "pareto_size": len(result.pareto), "study_wall_s": result.wall_s, "optuna_orphans_failed": orphans})
    out = workdir.trials_summary
    out.write_text(json.dumps({"rows": result.rows, "pareto": result.pareto}, indent=1, default=str))
    parent.log_artifact(out, "study")
    try:  # the front, its plot and the study's description, on the study run; pareto_rank on trial runs
        publish_front(result.tracking_uri, parent.run_id, objectives=result.objectives, constraints=study.constraints,
                      search_space=study.model_dump(mode="json")["search_space"], trials=counts, study=study.name)
    except Exception as e:  # noqa: BLE001 — every trial and run is kept; `srstudy pareto` ranks them again
        console.print(f"[yellow]warning:[/] the front was not logged to the study run {parent.run_id}: {e}")
    parent.finish("FINISHED")

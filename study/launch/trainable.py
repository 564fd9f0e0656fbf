"""The function Tune runs for each trial: one Tune trial = one `run_trial` = one MLflow run.

Tune pickles it by its module path (`srstudy.launch.trainable.tune_trial`) into the
experiment state, so `srstudy launch --resume` finds it here.
"""
from __future__ import annotations

import atexit
import json
import threading
from typing import Any

from .. import ray_api
from ..config import StudyConfig, TrialConfig
from ..objectives import ANALYTIC_METRICS, Constraint
from ..tracking import TUNE_TRIAL_TAG, trial_run_name
from ..workdir import StudyDir


def analytic_check(study: StudyConfig, cfg: TrialConfig) -> tuple[dict[str, int], list[Constraint]]:
    """The student's analytic metrics (params, FLOPs: from its config alone, no network built)
    and the study's analytic constraints they break. One rule for the searcher, which rejects a
    proposal that breaks one before any Tune trial exists, and for the trial, which is skipped
    before training when the searcher let such a proposal through."""
    analytic = cfg.analytic_metrics()
    broken = [c for c in study.constraints if c.metric in ANALYTIC_METRICS and not c.holds(analytic[c.metric])]
    return analytic, broken


#: how long a trial's process waits at exit for its training thread to finish unwinding
UNWIND_TIMEOUT_S = 30.0


def join_at_exit(thread: threading.Thread, timeout_s: float = UNWIND_TIMEOUT_S) -> None:
    """Make this process wait, when it exits, for `thread` to end (at most `timeout_s`).

    Why: when a scheduler stops a trial (ASHA), Tune raises SystemExit in the training thread at
    its next report and lets the actor's process exit without waiting for that thread. The
    thread, still unwinding its GPU work (prefetch threads, the GPU lock, CUDA tensors), is then
    stopped by the interpreter's shutdown inside a C++ call, and the process aborts (`Fatal
    Python error: Aborted` and a native stack in the study log, for every pruned trial on the
    H200 in session 8). `atexit` handlers run before that shutdown."""
    if thread is not threading.main_thread():
        atexit.register(thread.join, timeout_s)


def tune_trial(params: dict[str, Any], *, study_json: str, workdir: str, tracking_uri: str,
               parent_run_id: str | None, objectives: list[str]) -> None:
    """One Tune trial = one `run_trial` = one MLflow run (resumed after a crash).

    A trial that breaks an analytic constraint (params, FLOPs; the searcher let it through only
    when it found no feasible proposal within its cap) reports `constraint_violated` before any
    training; intermediate reports carry the validation scores, the final one
    (`final=True`) every metric the trial measured."""
    import torch

    from srstudy.trials.distill import RUN_FILE, run_trial

    join_at_exit(threading.current_thread())  # Tune's training thread: a pruned trial unwinds before exit
    study = StudyConfig.model_validate_json(study_json)
    cfg = study.trial_config(params)
    torch.set_num_threads(max(1, int(study.resources.cpu)))
    tid = ray_api.trial_id()
    study_dir = StudyDir(workdir)
    tdir = study_dir.trial(tid)
    # where it ran: the node, and the GPU(s) Ray gave it there (CUDA_VISIBLE_DEVICES)
    base = {"iteration": 0, "trial_dir": str(tdir), "node_id": ray_api.node_id(), "gpu_ids": ",".join(ray_api.gpu_ids())}

    # analytic constraints: checked before any training (the searcher rejects such proposals;
    # one gets here only when it found no feasible point within its cap)
    analytic, broken = analytic_check(study, cfg)
    if broken:
        ray_api.report({**base, **analytic, "final": True, "constraint_violated": True,
                        "constraint": "; ".join(map(str, broken)), "val_psnr": float("nan")})
        return

    def run_id() -> str | None:
        f = tdir / RUN_FILE
        return json.loads(f.read_text())["run_id"] if f.exists() else None

    def on_validate(it: int, m: dict[str, float]) -> None:
        if it >= cfg.iterations:  # the final report carries it, with every objective
            return
        ray_api.report({**base, **m, "iteration": it, "final": False, "mlflow_run_id": run_id()})

    result = run_trial(cfg, workdir=workdir, tracking_uri=tracking_uri, trial_dir=tdir,
                       parent_run_id=parent_run_id, trial_id=tid, teacher_cache=study_dir.teachers,
                       run_name=trial_run_name({k: params[k] for k in study.search_space if k in params}),
                       run_tags={TUNE_TRIAL_TAG: tid},
                       on_validate=on_validate, teacher_sharers=study.num_samples)
    m = result.metrics
    final = {**base, **m, "iteration": cfg.iterations, "final": True, "mlflow_run_id": result.run_id}
    broken = [str(c) for c in study.constraints if c.metric in m and not c.holds(m[c.metric])]
    if broken:
        final.update(constraint_violated=True, constraint="; ".join(broken))
    ray_api.report(final)

"""The one place that imports Ray APIs that move between releases (written against Ray 2.60).

Everything else in srstudy imports Tune, the Optuna searcher, ASHA and friends from here,
so a Ray upgrade that renames or moves them is a one-file change. That includes the private
state of Tune's `OptunaSearch` and `ConcurrencyLimiter` that srstudy's searcher needs (see
"Searcher internals" below): nothing outside this module touches a Ray object's private
attribute. The test-only helpers (local multi-node clusters, `cluster.yaml` validation) live
in `tests/support/ray_cluster.py`.
"""
from __future__ import annotations

import os
from typing import Any

import ray
from ray import tune
from ray.tune import (  # noqa: F401  (re-exported)
    Callback,
    CheckpointConfig,
    FailureConfig,
    RunConfig,
    TuneConfig,
    Tuner,
    get_context,
    report,
    with_parameters,
    with_resources,
)
from ray.tune.schedulers import ASHAScheduler  # noqa: F401
from ray.tune.search import ConcurrencyLimiter  # noqa: F401
from ray.tune.search.optuna import OptunaSearch  # noqa: F401
from ray.exceptions import GetTimeoutError  # noqa: F401  (re-exported: what `get` raises past its timeout)

LOOPBACK = "127.0.0.1"


def init_local(*, num_cpus: int | None = None, num_gpus: int | None = None, resources: dict[str, float] | None = None) -> None:
    """Start a private single-node Ray bound to 127.0.0.1, dashboard off.

    Ray turns a loopback node address into the machine's routable IP unless clustering is
    disabled, so that is switched off for this process (and its workers) first.
    """
    quiet_env()
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    loopback_only()
    ray.init(
        runtime_env={"env_vars": {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}},
        num_cpus=num_cpus,
        num_gpus=num_gpus,
        resources=resources,
        include_dashboard=False,
        _node_ip_address=LOOPBACK,
        configure_logging=True,
        logging_level="WARNING",
        log_to_driver=True,
    )


def connect(address: str) -> None:
    """Join an existing cluster (`auto` or `host:port`)."""
    quiet_env()
    if address.rsplit(":", 1)[0] in (LOOPBACK, "localhost"):
        loopback_only()
    ray.init(address=address, logging_level="WARNING")


def loopback_only() -> None:
    """Keep this process's Ray, and the Ray processes it starts, on 127.0.0.1.

    Ray reads RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER once, when it is imported: while it is
    enabled (the Linux default) a loopback node or GCS address is replaced by the machine's
    routable IP. This module imports Ray before any caller could set the variable, so the
    constant is switched off here too (Ray looks it up on its module at each use).
    """
    from ray._private import ray_constants

    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False


def quiet_env() -> None:
    """No usage-stats upload; no strict metric check (intermediate Tune results carry only the
    fidelity metric, val_psnr; the other objectives arrive with the final result)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")


def shutdown() -> None:
    if ray.is_initialized():
        ray.shutdown()


def is_initialized() -> bool:
    return ray.is_initialized()


def cluster_resources() -> dict[str, float]:
    return dict(ray.cluster_resources())


def node_id() -> str:
    """The Ray node id (hex) of the calling process: where a task or trial actually runs."""
    return ray.get_runtime_context().get_node_id()


def gpu_ids() -> list[str]:
    """The GPU ids Ray assigned to the calling task or trial (what it sets CUDA_VISIBLE_DEVICES to)."""
    return [str(i) for i in ray.get_runtime_context().get_accelerator_ids().get("GPU", [])]


def trial_id() -> str:
    """The running Tune trial's id (stable across `Tuner.restore`)."""
    return get_context().get_trial_id()


def remote(fn, **options: Any):
    """`ray.remote(**options)(fn)`."""
    return ray.remote(**options)(fn)


def get(ref, timeout: float | None = None):
    """`ray.get`; past `timeout` s it raises `GetTimeoutError` (a `TimeoutError`)."""
    return ray.get(ref, timeout=timeout)


def cancel(ref, *, force: bool = True) -> None:
    """Cancel a task (force: kill its worker even while it runs native code); never raises."""
    try:
        ray.cancel(ref, force=force)
    except Exception:  # noqa: BLE001 - already finished, or its owner gone
        pass


def alive_nodes() -> list[dict[str, Any]]:
    """The cluster's live nodes: ``{"node_id", "address", "resources"}`` each (`ray.nodes()`)."""
    return [{"node_id": n["NodeID"], "address": n.get("NodeManagerAddress"),
             "resources": dict(n.get("Resources") or {})} for n in ray.nodes() if n.get("Alive")]


def pinned_to_node(node_id: str):
    """A scheduling strategy that runs a task or actor on `node_id` only (never elsewhere: soft=False)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return NodeAffinitySchedulingStrategy(node_id=node_id, soft=False)


def available_resources() -> dict[str, float]:
    """Resources free right now (`cluster_resources` minus what running tasks hold)."""
    return dict(ray.available_resources())


def restore_tuner(path: str, trainable) -> Tuner:
    """Tuner.restore resuming unfinished and errored trials."""
    return Tuner.restore(path, trainable=trainable, resume_unfinished=True, resume_errored=True)


def restored_searcher(tuner: Tuner):
    """The search algorithm a restored Tuner will run (ray 2.60: unpickled with its TuneConfig
    into `_local_tuner._tune_config`), to change how many trials it lets run at once."""
    return tuner._local_tuner._tune_config.search_alg


def can_restore(path: str) -> bool:
    return Tuner.can_restore(path)


# ---- Searcher internals ----------------------------------------------------------------------
# Tune's OptunaSearch keeps the Tune-trial → Optuna-trial map, the Optuna study, the set of
# trials it already told and the search space in private attributes, and ConcurrencyLimiter
# whether it limits at all; srstudy's prune-aware searcher and resumable limiter
# (`srstudy.launch.search`) need them. Checked against ray 2.60
# (ray/tune/search/optuna/optuna_search.py, ray/tune/search/concurrency_limiter.py): on a
# Ray upgrade, check these names there.
def optuna_study_of(searcher: OptunaSearch):
    """The `optuna.Study` the searcher asks and tells (ray 2.60: `_ot_study`)."""
    return searcher._ot_study


def searched_space(searcher: OptunaSearch) -> dict[str, Any]:
    """The searcher's space, Optuna distributions by parameter name (ray 2.60: `_space`)."""
    return searcher._space


def optuna_trial_of(searcher: OptunaSearch, trial_id: str):
    """The `optuna.Trial` asked for a Tune trial, or None if the searcher never saw (or lost)
    it (ray 2.60: `_ot_trials`)."""
    return searcher._ot_trials.get(trial_id)


def optuna_trials_of(searcher: OptunaSearch) -> list:
    """Every `optuna.Trial` the searcher holds for a live Tune trial (ray 2.60: `_ot_trials`)."""
    return list(searcher._ot_trials.values())


def attach_optuna_trial(searcher: OptunaSearch, trial_id: str, ot_trial) -> None:
    """Make `ot_trial` the Optuna trial of Tune trial `trial_id` (ray 2.60: `_ot_trials`)."""
    searcher._ot_trials[trial_id] = ot_trial


def is_told(searcher: OptunaSearch, trial_id: str) -> bool:
    """Whether the searcher already told Optuna how the trial ended (ray 2.60: `_completed_trials`)."""
    return trial_id in searcher._completed_trials


def tell_ended(searcher: OptunaSearch, trial_id: str, state) -> None:
    """Tell Optuna the trial ended in `state` (PRUNED or FAIL: no values) and remember it as told,
    as the stock `on_trial_complete` does after its own tell (ray 2.60: `_ot_study`,
    `_ot_trials`, `_completed_trials`)."""
    searcher._ot_study.tell(searcher._ot_trials[trial_id], state=state)
    searcher._completed_trials.add(trial_id)


def mark_told(searcher: OptunaSearch, trial_id: str) -> None:
    """Remember the trial as told without telling Optuna anything (ray 2.60: `_completed_trials`,
    `_ot_trials`): its Optuna trial already ended."""
    searcher._completed_trials.add(trial_id)
    searcher._ot_trials.pop(trial_id, None)


def limiter_lost_track_of(limiter: ConcurrencyLimiter, trial_id: str) -> bool:
    """Whether a limiter that limits concurrency does not know the trial (restored after a crash
    without it) — the stock limiter then drops its completion (ray 2.60: `_limit_concurrency`,
    `live_trials`)."""
    return limiter._limit_concurrency and trial_id not in limiter.live_trials


__all__ = [
    "ASHAScheduler", "Callback", "CheckpointConfig", "ConcurrencyLimiter", "FailureConfig", "OptunaSearch",
    "RunConfig", "TuneConfig", "Tuner", "tune", "report", "with_parameters", "with_resources",
    "init_local", "connect", "shutdown", "trial_id", "restore_tuner", "can_restore",
    "node_id", "cancel", "available_resources", "alive_nodes", "pinned_to_node", "GetTimeoutError", "LOOPBACK",
    "quiet_env", "loopback_only",
    "optuna_study_of", "searched_space", "optuna_trial_of", "optuna_trials_of", "attach_optuna_trial",
    "is_told", "tell_ended", "limiter_lost_track_of",
]

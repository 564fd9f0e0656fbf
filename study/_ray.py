"""The one place that imports Ray APIs that move between releases (written against Ray 2.60).

Everything else in srstudy imports Tune, the Optuna searcher, ASHA and friends from here,
so a Ray upgrade that renames or moves them is a one-file change.
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

LOOPBACK = "127.0.0.1"


def init_local(*, num_cpus: int | None = None, num_gpus: int | None = None, resources: dict[str, float] | None = None) -> None:
    """Start a private single-node Ray bound to 127.0.0.1, dashboard off.

    Ray turns a loopback node address into the machine's routable IP unless clustering is
    disabled, so that is switched off for this process (and its workers) first.
    """
    _quiet_env()
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
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
    _quiet_env()
    ray.init(address=address, logging_level="WARNING")


def _quiet_env() -> None:
    # no usage-stats upload; intermediate Tune results carry only the fidelity metric
    # (val_psnr), the other objectives arrive with the final result
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")


def shutdown() -> None:
    if ray.is_initialized():
        ray.shutdown()


def is_initialized() -> bool:
    return ray.is_initialized()


def cluster_resources() -> dict[str, float]:
    return dict(ray.cluster_resources())


def trial_id() -> str:
    """The running Tune trial's id (stable across `Tuner.restore`)."""
    return get_context().get_trial_id()


def remote(fn, **options: Any):
    """`ray.remote(**options)(fn)`."""
    return ray.remote(**options)(fn)


def get(ref, timeout: float | None = None):
    return ray.get(ref, timeout=timeout)


def restore_tuner(path: str, trainable) -> Tuner:
    """Tuner.restore resuming unfinished and errored trials."""
    return Tuner.restore(path, trainable=trainable, resume_unfinished=True, resume_errored=True)


def can_restore(path: str) -> bool:
    return Tuner.can_restore(path)


__all__ = [
    "ASHAScheduler", "Callback", "CheckpointConfig", "ConcurrencyLimiter", "FailureConfig", "OptunaSearch",
    "RunConfig", "TuneConfig", "Tuner", "tune", "report", "with_parameters", "with_resources",
    "init_local", "connect", "shutdown", "trial_id", "restore_tuner", "can_restore",
]

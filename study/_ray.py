"""The one place that imports Ray APIs that move between releases (written against Ray 2.60).

Everything else in srstudy imports Tune, the Optuna searcher, ASHA and friends from here,
so a Ray upgrade that renames or moves them is a one-file change.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
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
    _quiet_env()
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    _loopback_only()
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
    if address.rsplit(":", 1)[0] in (LOOPBACK, "localhost"):
        _loopback_only()
    ray.init(address=address, logging_level="WARNING")


def _loopback_only() -> None:
    """Keep this process's Ray, and the Ray processes it starts, on 127.0.0.1.

    Ray reads RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER once, when it is imported: while it is
    enabled (the Linux default) a loopback node or GCS address is replaced by the machine's
    routable IP. This module imports Ray before any caller could set the variable, so the
    constant is switched off here too (Ray looks it up on its module at each use).
    """
    from ray._private import ray_constants

    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False


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


def node_id() -> str:
    """The Ray node id (hex) of the calling process: where a task or trial actually runs."""
    return ray.get_runtime_context().get_node_id()


def gpu_ids() -> list[str]:
    """The GPU ids Ray assigned to the calling task or trial (what it sets CUDA_VISIBLE_DEVICES to)."""
    return [str(i) for i in ray.get_runtime_context().get_accelerator_ids().get("GPU", [])]


def nodes() -> list[dict[str, Any]]:
    """The cluster's live nodes, as `ray.nodes()` reports them (NodeID, NodeManagerAddress,
    Resources, ...)."""
    return [n for n in ray.nodes() if n.get("Alive")]


@dataclass
class LocalCluster:
    """A multi-node Ray cluster on this machine (see `local_cluster`)."""

    address: str
    head_id: str
    worker_ids: list[str] = field(default_factory=list)


@contextlib.contextmanager
def local_cluster(head: dict[str, Any], workers: list[dict[str, Any]] = ()) -> Iterator[LocalCluster]:
    """Several Ray nodes on this machine (`ray.cluster_utils.Cluster`), for tests.

    `head` and each of `workers` are node arguments (`num_cpus`, `num_gpus`, `resources`);
    every node is bound to 127.0.0.1 with the dashboard off. Ray files live in a private
    temp dir (RAY_TMPDIR), so the cluster does not become the default `ray.init()` target
    of other Ray users on the machine. Nothing is connected: join with `connect(address)`.
    Shut down on exit (RAY_TMPDIR restored; this process stays loopback-only).
    """
    from ray.cluster_utils import Cluster

    saved_tmpdir = os.environ.get("RAY_TMPDIR")
    tmp = tempfile.mkdtemp(prefix="rc", dir="/tmp")  # short: Ray's socket paths are length-limited
    pinned = {"node_ip_address": LOOPBACK, "include_dashboard": False}
    cluster = None
    try:
        os.environ["RAY_TMPDIR"] = tmp
        _quiet_env()
        _loopback_only()
        cluster = Cluster(initialize_head=True, head_node_args={**head, **pinned})
        added = [cluster.add_node(**{**w, **pinned}) for w in workers]
        cluster.wait_for_nodes()
        yield LocalCluster(cluster.address, cluster.head_node.node_id, [n.node_id for n in added])
    finally:
        if ray.is_initialized():
            ray.shutdown()
        if cluster is not None:
            cluster.shutdown()
        if saved_tmpdir is None:
            os.environ.pop("RAY_TMPDIR", None)
        else:
            os.environ["RAY_TMPDIR"] = saved_tmpdir
        shutil.rmtree(tmp, ignore_errors=True)


def validate_cluster_config(config: dict[str, Any]) -> dict[str, Any]:
    """A cluster-launcher config (`ray up` YAML, as a dict) checked the way `ray up` does:
    `prepare_config` (provider defaults merged, local-provider node types filled in), then
    `validate_config` (Ray's JSON schema, `ray-schema.json`, plus its consistency checks).
    Returns the prepared config; raises `jsonschema.ValidationError`, `ValueError` or
    `RuntimeError` on an invalid one. Contacts no node."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(config)
    validate_config(prepared)
    return prepared


def ray_start_options(command: str) -> dict[str, Any]:
    """The options of the `ray start ...` in a shell command line (e.g. a cluster.yaml
    `*_start_ray_commands` entry), as Ray's own CLI parses them; nothing is started.
    Raises `click.UsageError` for an option `ray start` does not have."""
    import shlex

    from ray.scripts.scripts import start

    lex = shlex.shlex(command, posix=True, punctuation_chars=";&|")
    lex.whitespace_split = True
    segments, cur = [], []
    for tok in lex:
        if tok and set(tok) <= set(";&|"):
            segments.append(cur)
            cur = []
        else:
            cur.append(tok)
    segments.append(cur)
    starts = [seg for seg in segments if seg[:2] == ["ray", "start"]]
    if not starts:
        raise ValueError(f"no `ray start` in {command!r}")
    return dict(start.make_context("ray start", starts[-1][2:]).params)


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


def available_resources() -> dict[str, float]:
    """Resources free right now (`cluster_resources` minus what running tasks hold)."""
    return dict(ray.available_resources())


def restore_tuner(path: str, trainable) -> Tuner:
    """Tuner.restore resuming unfinished and errored trials."""
    return Tuner.restore(path, trainable=trainable, resume_unfinished=True, resume_errored=True)


def can_restore(path: str) -> bool:
    return Tuner.can_restore(path)


__all__ = [
    "ASHAScheduler", "Callback", "CheckpointConfig", "ConcurrencyLimiter", "FailureConfig", "OptunaSearch",
    "RunConfig", "TuneConfig", "Tuner", "tune", "report", "with_parameters", "with_resources",
    "init_local", "connect", "shutdown", "trial_id", "restore_tuner", "can_restore",
    "node_id", "nodes", "LocalCluster", "local_cluster", "validate_cluster_config", "ray_start_options",
    "cancel", "available_resources", "GetTimeoutError",
]

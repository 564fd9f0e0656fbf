"""Ray clusters for tests: several Ray nodes on this machine, bound to 127.0.0.1, and the
checks of `cluster.yaml` that `ray up` would make (nothing is contacted).

Test-only, so it may import Ray directly; srstudy itself reaches Ray through `srstudy.ray_api`,
whose loopback and environment settings these clusters reuse.
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

from srstudy.ray_api import LOOPBACK, loopback_only, quiet_env


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


SIM_NODE_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sim_node")
TESTS_PATH = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@contextlib.contextmanager
def _node_env(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The node's Ray arguments, with the environment its processes inherit set while it starts.

    `sim_gpu` (a `SimulatedNvml` state file): the node's srstudy processes see that simulated
    GPU (`support.sim_gpu_node`); `sim_nvml_unavailable` (text): there NVML "cannot be opened"
    for energy accounting, with that reason."""
    node = dict(node)
    env = {}
    if sim_gpu := node.pop("sim_gpu", None):
        env = {"SRSTUDY_SIM_GPU": str(sim_gpu),
               "PYTHONPATH": os.pathsep.join([SIM_NODE_PATH, TESTS_PATH, os.environ.get("PYTHONPATH", "")])}
        if reason := node.pop("sim_nvml_unavailable", None):
            env["SRSTUDY_SIM_NVML_UNAVAILABLE"] = reason
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield node
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def local_cluster(head: dict[str, Any], workers: list[dict[str, Any]] = ()) -> Iterator[LocalCluster]:
    """Several Ray nodes on this machine (`ray.cluster_utils.Cluster`), for tests.

    `head` and each of `workers` are node arguments (`num_cpus`, `num_gpus`, `resources`,
    and for tests of energy accounting `sim_gpu` / `sim_nvml_unavailable`, see `_node_env`);
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
        quiet_env()
        loopback_only()
        with _node_env(head) as args:
            cluster = Cluster(initialize_head=True, head_node_args={**args, **pinned})
        added = []
        for w in workers:
            with _node_env(w) as args:
                added.append(cluster.add_node(**{**args, **pinned}))
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

"""GPU energy accounting on the cluster's other GPU nodes: one small Ray actor per node.

Why an actor per node: NVML only sees the GPUs of the machine it runs on, the idle baseline
must be taken on that machine before its trials start, and the GPU locks, PID registrations
and samples the trials write live in the study's workdir *as seen on that node* (node-local
on a real cluster: ``flock`` over NFS is not relied upon). So for every alive node that has
GPUs and is not the launcher's, the launcher starts a :class:`NodeEnergyActor` pinned to it
(``soft=False``, ``num_cpus=0``). It runs a ``StudyEnergySession`` over that node's GPUs with
the study's workdir path, and the launcher drives it through the same stages as its own:

    RemoteNodeEnergy.open(...)      start the actors; take each node's idle baselines
    .start()                        the attribution samplers, right before Tuner.fit()
    .stop_and_collect()             stop them; each node attributes its GPUs' energy ON the node
                                    and returns its ``NodeEnergyResults`` over Ray (before Ray
                                    shuts down); the launcher merges them with its own

A node whose actor cannot start, or where NVML is unavailable, is tagged
``energy_accounting_unavailable_reason.node-<node id>`` on the study's run and dropped: its
trials get no ``gpu_energy_attributed_j`` (absent, never 0). A stage that fails later is
tagged ``energy_accounting_error.<stage>.node-<node id>``; the study goes on. Nodes that join
after the study started are not accounted for.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import ray_api
from ..measure.idle import IdleBaseline
from ..measure.study_session import NodeEnergyResults, StudyEnergySession

log = logging.getLogger("srstudy.launch")

__all__ = ["NODE_UNAVAILABLE_TAG_PREFIX", "NodeEnergyActor", "RemoteNodeEnergy", "remote_gpu_nodes"]

NODE_UNAVAILABLE_TAG_PREFIX = "energy_accounting_unavailable_reason.node-"
OPEN_TIMEOUT_S = 180.0  # a worker process starts on the node, imports srstudy, opens NVML
IDLE_TIMEOUT_S = 300.0  # take_idle_baselines waits up to 120 s per GPU for processes to leave
CALL_TIMEOUT_S = 120.0  # start / stop
RESULTS_TIMEOUT_S = 600.0  # reads the node's samples files

#: `guard(stage, work)`: run `work()`, on failure tag the study's run and return None
Guard = Callable[[str, Callable[[], Any]], Any]


class NodeEnergyActor:
    """Runs on one node: a ``StudyEnergySession`` over the GPUs NVML sees there (or why none)."""

    def __init__(self, workdir: str) -> None:
        opened = StudyEnergySession.for_node(workdir)
        self.session = None if isinstance(opened, str) else opened
        self.reason = opened if isinstance(opened, str) else None

    def open(self) -> tuple[list[str], str | None]:
        """``(GPU UUIDs, None)``, or ``([], why NVML cannot serve this node)``."""
        return ([], self.reason) if self.session is None else (list(self.session.handles), None)

    def take_idle_baselines(self) -> dict[str, IdleBaseline]:
        """Each GPU's idle baseline for the study (taken once, in ``<workdir>/gpu_idle.json`` on this node)."""
        return self.session.take_idle_baselines()

    def start(self) -> None:
        """Start the node's attribution samplers."""
        self.session.start()

    def stop(self) -> None:
        """Stop the samplers (each takes a last sample)."""
        self.session.stop()

    def results(self) -> NodeEnergyResults:
        """This node's attribution, computed here from its own files."""
        return self.session.node_results()


def remote_gpu_nodes() -> list[dict[str, Any]]:
    """Alive nodes with GPUs other than the launcher's (none when Ray is not connected)."""
    if not ray_api.is_initialized():
        return []
    here = ray_api.node_id()
    return [n for n in ray_api.alive_nodes() if n["node_id"] != here and n["resources"].get("GPU", 0) > 0]


def _get(ref, timeout: float):
    """``ray_api.get``, re-raising a remote method's own exception (its message, not Ray's wrapper)."""
    try:
        return ray_api.get(ref, timeout=timeout)
    except Exception as err:  # noqa: BLE001 - RayTaskError wraps the actor's exception as .cause
        cause = getattr(err, "cause", None)
        if isinstance(cause, Exception):
            raise cause from err
        raise


@dataclass
class _Node:
    node_id: str
    address: str | None
    actor: Any
    uuids: list[str]


class RemoteNodeEnergy:
    """The energy actors of the cluster's other GPU nodes (see the module docstring)."""

    def __init__(self, nodes: list[_Node], guard: Guard) -> None:
        self.nodes, self.guard = nodes, guard

    @classmethod
    def open(cls, workdir: str, guard: Guard, tag: Callable[[dict[str, str]], None], *,
             claimed: set[str] = frozenset()) -> "RemoteNodeEnergy":
        """Start one actor per remote GPU node; tag (and drop) each node that cannot account.

        ``claimed``: GPU UUIDs already accounted for (the launcher's own); a node reporting
        one of them (two Ray nodes on one machine) is dropped so no GPU is counted twice.
        """
        actor_cls = ray_api.remote(NodeEnergyActor, num_cpus=0, max_restarts=0)
        pending = []
        for n in guard("remote_nodes", remote_gpu_nodes) or []:
            actor = actor_cls.options(scheduling_strategy=ray_api.pinned_to_node(n["node_id"])).remote(workdir)
            pending.append((n, actor, actor.open.remote()))
        nodes, claimed = [], set(claimed)
        for n, actor, ref in pending:
            where = f"node {n['node_id']} ({n['address']})"
            try:
                uuids, reason = _get(ref, OPEN_TIMEOUT_S)
            except Exception as err:  # noqa: BLE001 - a node that cannot account must not fail the study
                uuids, reason = [], f"its energy actor did not start: {type(err).__name__}: {err}"
            if not reason and claimed & set(uuids):
                reason = f"its GPUs {sorted(claimed & set(uuids))} are already accounted for by another node"
            if reason:
                log.warning("energy accounting: %s is not accounted for: %s", where, reason)
                tag({NODE_UNAVAILABLE_TAG_PREFIX + n["node_id"]: f"{where}: {reason}"[:5000]})
                continue
            claimed |= set(uuids)
            nodes.append(_Node(n["node_id"], n["address"], actor, uuids))
        return cls(nodes, guard)

    def _each(self, stage: str, method: str, timeout: float) -> dict[str, Any]:
        """Call ``method`` on every node's actor at once; ``{node_id: result}`` of those that answered."""
        refs = [(n, getattr(n.actor, method).remote()) for n in self.nodes]
        out = {}
        for n, ref in refs:
            result = self.guard(f"{stage}.node-{n.node_id}", lambda ref=ref: (_get(ref, timeout),))
            if result is not None:
                out[n.node_id] = result[0]
        return out

    def take_idle_baselines(self) -> dict[str, IdleBaseline]:
        """Every remote GPU's idle baseline, keyed by UUID (UUIDs are unique across nodes)."""
        out: dict[str, IdleBaseline] = {}
        for taken in self._each("idle_baseline", "take_idle_baselines", IDLE_TIMEOUT_S).values():
            out.update(taken)
        return out

    def start(self) -> None:
        """Start every node's samplers."""
        self._each("sampler_start", "start", CALL_TIMEOUT_S)

    def stop_and_collect(self) -> list[NodeEnergyResults]:
        """Stop every node's samplers, then fetch each node's attribution (call before Ray shuts down)."""
        self._each("sampler_stop", "stop", CALL_TIMEOUT_S)
        return list(self._each("attribution", "results", RESULTS_TIMEOUT_S).values())

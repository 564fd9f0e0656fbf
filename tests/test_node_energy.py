"""GPU energy accounting on every GPU node of a Ray cluster, not only the launcher's.

A real three-node Ray cluster on 127.0.0.1 (`support.ray_cluster.local_cluster`): the head,
where the launcher's driver joins, has no GPU; worker A and worker B each have one simulated
GPU (`support.sim_gpu_node`: their own UUIDs), and on B NVML "cannot be opened" for energy
accounting. A tiny study whose two trials need one CPU each lands one trial on each worker.
The launcher's pinned actor on A takes A's idle baseline before the trials, samples A while
they run and attributes A's energy on A; B is tagged and its trial's attributed energy stays
absent. All nodes share one workdir folder here (every file is keyed by GPU UUID).
"""
from __future__ import annotations

import json

import pytest
from mlflow import MlflowClient

from srstudy.config import StudyConfig
from srstudy.launch import launch
from srstudy.launch.energy import ERROR_TAG_PREFIX
from srstudy.launch.node_energy import NODE_UNAVAILABLE_TAG_PREFIX
from support import ray_cluster
from support.simulated_nvml import SimulatedNvml
from tiny import tiny_study_config

UUID_A = "GPU-5140a7ed-0000-4000-8000-00000000000a"
UUID_B = "GPU-5140a7ed-0000-4000-8000-00000000000b"
NO_NVML = "simulated: NVML Shared Library Not Found on this node"
IDLE_W = 110.0


@pytest.fixture(scope="module")
def study_on_two_gpu_nodes(tmp_path_factory):
    """Run the study once; yield what the tests look at."""
    tmp = tmp_path_factory.mktemp("node_energy")
    gpus = {u: SimulatedNvml.create(tmp / f"{u[-1]}.json", uuid=u, idle_w=IDLE_W) for u in (UUID_A, UUID_B)}
    workers = [{"num_cpus": 1, "num_gpus": 1, "sim_gpu": gpus[UUID_A].path},
               {"num_cpus": 1, "num_gpus": 1, "sim_gpu": gpus[UUID_B].path, "sim_nvml_unavailable": NO_NVML}]
    with ray_cluster.local_cluster({"num_cpus": 1}, workers) as cluster:
        study = StudyConfig.model_validate(tiny_study_config(
            tmp / "runs", name="nodes", experiment="node-energy", num_samples=2, max_concurrent=2,
            objectives=["psnr:max", "energy:min", "params:min"], resources={"cpu": 1, "gpu": 0.5},
            asha={"enabled": False},
            **{"trial.iterations": 6, "trial.val_interval": 3,
               "trial.energy_window": {"min_iterations": 2, "min_seconds": 0.0, "start_fraction": 0.0}}))
        result = launch(study, address=cluster.address)
        node_a, node_b = cluster.worker_ids
    client = MlflowClient(result.tracking_uri)
    by_node = {r["node_id"]: r for r in result.rows}
    assert [r["status"] for r in result.rows] == ["done", "done"], result.rows
    assert set(by_node) == {node_a, node_b}, "each worker node (1 CPU) runs one of the two trials"
    yield {"result": result, "client": client, "workdir": tmp / "runs", "gpus": gpus,
           "a": by_node[node_a], "b": by_node[node_b], "node_b": node_b,
           "parent": client.get_run(result.parent_run_id).data}


def test_a_worker_nodes_gpu_gets_its_idle_baseline_and_attribution(study_on_two_gpu_nodes):
    s = study_on_two_gpu_nodes
    row, parent = s["a"], s["parent"]
    idle = json.loads((s["workdir"] / "gpu_idle.json").read_text())
    assert idle[UUID_A]["idle_power_w"] == pytest.approx(IDLE_W)  # taken on node A, before the trials
    assert parent.tags[f"gpu_idle_power_w.{UUID_A}"] == f"{IDLE_W:.3f}"
    trial = s["client"].get_run(row["mlflow_run_id"]).data
    assert trial.metrics["gpu_idle_power_w"] == pytest.approx(IDLE_W)  # the trial read node A's baseline
    assert trial.tags["gpu_idle_baseline"] == "study" and trial.metrics["gpu_energy_j"] > 0
    attributed = trial.metrics["gpu_energy_attributed_j"]
    assert attributed > 0 and row["gpu_energy_attributed_j"] == attributed
    # node A's totals reach the parent run: one trial on A, so all of A's energy over its span is its
    m = parent.metrics
    assert m["gpu_energy_attributed_sum_j"] == pytest.approx(attributed)
    assert m["gpu_energy_attributed_over_measured"] == pytest.approx(1.0, abs=1e-6)
    assert m["gpu_energy_no_process_j"] == pytest.approx(0.0, abs=1e-6) and m["gpu_energy_unregistered_j"] == 0
    # the trial's window drew ≥ idle power: the study's measured joules cover at least idle × span
    assert m["gpu_energy_study_measured_j"] >= IDLE_W * m["energy_study_span_s"] * 0.9
    assert m["gpu_energy_study_measured_j"] <= s["gpus"][UUID_A].true_energy_j()
    assert m["exclusive_windows"] == 1  # A's window only: B's lock log in the shared folder is not A's
    assert not [k for k in parent.tags if k.startswith(ERROR_TAG_PREFIX)], parent.tags
    # the launcher's machine has no NVML, the GPU nodes do: the study keeps its energy objective
    assert "gpu_energy_j:min" in json.loads((s["workdir"] / "study.json").read_text())["objectives"]


def test_a_node_without_nvml_is_tagged_and_its_trials_attribution_stays_absent(study_on_two_gpu_nodes):
    s = study_on_two_gpu_nodes
    row, parent = s["b"], s["parent"]
    reason = parent.tags[NODE_UNAVAILABLE_TAG_PREFIX + s["node_b"]]
    assert NO_NVML in reason and s["node_b"] in reason
    trial = s["client"].get_run(row["mlflow_run_id"]).data
    assert "gpu_energy_attributed_j" not in trial.metrics and "gpu_energy_attributed_j" not in row  # absent, not 0
    assert trial.metrics["gpu_energy_j"] > 0  # its exclusive-window objective does not need the launcher
    assert "gpu_idle_power_w" not in trial.metrics and trial.tags["gpu_idle_unavailable_reason"]
    assert UUID_B not in json.loads((s["workdir"] / "gpu_idle.json").read_text())
    assert not any(UUID_B in k for k in parent.tags)  # no baseline tag, no attribution for B's GPU


def test_merging_nodes_adds_their_sums_and_recomputes_the_ratio_and_overhead():
    from srstudy.measure.study_session import NodeEnergyResults, merge_results

    a = NodeEnergyResults(per_trial={"t1": {"gpu_energy_attributed_j": 90.0}},
                          totals={"gpu_energy_study_measured_j": 100.0, "gpu_energy_attributed_sum_j": 90.0,
                                  "gpu_energy_no_process_j": 10.0, "gpu_energy_unregistered_j": 0.0,
                                  "calibration_wait_s": 1.0, "exclusive_windows": 1.0},
                          tags={"gpu_tag.a": "x"}, span=(10.0, 30.0))
    b = NodeEnergyResults(per_trial={"t2": {"gpu_energy_attributed_j": 300.0}},
                          totals={"gpu_energy_study_measured_j": 300.0, "gpu_energy_attributed_sum_j": 300.0,
                                  "gpu_energy_no_process_j": 0.0, "gpu_energy_unregistered_j": 0.0,
                                  "calibration_wait_s": 3.0, "exclusive_windows": 1.0},
                          tags={"gpu_tag.b": "y"}, span=(20.0, 50.0))
    per_trial, study, tags = merge_results([a, b])
    assert per_trial == {"t1": {"gpu_energy_attributed_j": 90.0}, "t2": {"gpu_energy_attributed_j": 300.0}}
    assert study["gpu_energy_study_measured_j"] == 400.0 and study["gpu_energy_attributed_sum_j"] == 390.0
    assert study["gpu_energy_attributed_over_measured"] == pytest.approx(390.0 / 400.0)  # not the mean of 0.9 and 1
    assert study["energy_study_span_s"] == 40.0 and study["calibration_overhead"] == pytest.approx(4.0 / 40.0)
    assert study["exclusive_windows"] == 2.0 and tags == {"gpu_tag.a": "x", "gpu_tag.b": "y"}
    assert merge_results([]) == ({}, {}, {})  # nothing measured: nothing logged, no zeros

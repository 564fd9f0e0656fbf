"""The cluster: `cluster.yaml` passes Ray's own cluster-launcher validation (and broken copies
don't), and a real three-node Ray cluster on 127.0.0.1 — a head, a node declaring one (fake)
GPU and a node declaring the `jetson` resource — places tasks and study trials by the
resources they ask for. Nothing here contacts the addresses written in cluster.yaml."""
from __future__ import annotations

import copy
import ipaddress
import json
import time
from importlib.metadata import version
from pathlib import Path

import click
import jsonschema
import pytest
import yaml

from srstudy import ray_api
from srstudy.config import StudyConfig
from srstudy.launch import launch
from support import ray_cluster

CLUSTER_YAML = Path(__file__).resolve().parents[1] / "cluster.yaml"
LOCAL_NODE_TYPE = "local.cluster.node"  # the single node type Ray's local provider fills in
DOC_RANGES = [ipaddress.ip_network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")]

# tests/test_trial.py's tiny trial: seconds on a CPU
TINY = {
    "experiment": "tiny-cluster",
    "iterations": 6,
    "batch_size": 2,
    "patch_size": 16,
    "val_interval": 3,
    "checkpoint_interval": 2,
    "device": "cpu",  # the "GPU" node's GPU is only declared to Ray; torch stays on the CPU
    "student": {"embed_dim": 8, "n_groups": 1, "blocks_per_group": 1, "rank": 2},
    "teacher": {"arch": {"embed_dim": 8, "n_groups": 1, "blocks_per_group": 1, "rank": 2}, "iterations": 4},
    "data": {"val_max_images": 1},
    "latency": {"height": 16, "width": 16, "repeats": 3, "warmup": 1},
}


def raw_config() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


# ---- cluster.yaml -----------------------------------------------------------------------------
def test_cluster_yaml_passes_ray_validation_and_declares_gpu_head_and_jetson_worker():
    raw = raw_config()
    cfg = ray_cluster.validate_cluster_config(raw)  # prepare_config + validate_config, as `ray up` does

    provider = cfg["provider"]
    assert provider["type"] == "local"
    ips = [provider["head_ip"], *provider["worker_ips"]]
    assert len(provider["worker_ips"]) == 1 and len(set(ips)) == 2
    # placeholders only: documentation addresses that no test (or anyone) can reach
    assert all(any(ipaddress.ip_address(ip) in net for net in DOC_RANGES) for ip in ips), ips
    node_type = cfg["available_node_types"][LOCAL_NODE_TYPE]
    assert cfg["head_node_type"] == LOCAL_NODE_TYPE
    assert node_type["min_workers"] == node_type["max_workers"] == cfg["max_workers"] == 1
    assert cfg["auth"]["ssh_user"]

    head = ray_cluster.ray_start_options(cfg["head_start_ray_commands"][-1])
    assert head["head"] is True and head["port"] == 6379 and head["num_gpus"] == 1
    assert head["include_dashboard"] is False and head["dashboard_host"] == "127.0.0.1"
    assert head["autoscaling_config"] == "~/ray_bootstrap_config.yaml"
    assert not head["resources"] or "jetson" not in json.loads(head["resources"])

    worker = ray_cluster.ray_start_options(cfg["worker_start_ray_commands"][-1])
    assert json.loads(worker["resources"]) == {"jetson": 1}
    assert worker["num_gpus"] == 0  # fractional-GPU trials are never placed on the Jetson
    assert worker["address"] == "$RAY_HEAD_IP:6379" and not worker["head"]
    assert cfg["head_start_ray_commands"][0] == cfg["worker_start_ray_commands"][0] == "ray stop"

    # setup (after merge_setup_commands): srstudy with its extras on both, the same Ray as here
    for cmds in (cfg["head_setup_commands"], cfg["worker_setup_commands"]):
        assert any("srstudy[study,export]" in c for c in cmds)
        assert any(f'"ray[default,tune]=={version("ray")}"' in c for c in cmds)
    assert any("tensorrt" in c for c in cfg["worker_setup_commands"])
    assert not any("tensorrt" in c for c in cfg["head_setup_commands"])
    assert cfg["file_mounts"] == {"~/srstudy": "."}
    text = CLUSTER_YAML.read_text()
    assert "ray up cluster.yaml" in text and "--address auto" in text and "sudoers" in text


def _unquoted_jetson_command(raw: dict) -> dict:
    # the classic mistake: `- ray start ... --resources='{"jetson": 1}'` unquoted; YAML reads
    # the ': ' as a mapping key, so the "command" is a dict
    text = CLUSTER_YAML.read_text()
    quoted = next(line for line in text.splitlines() if "--resources=" in line and not line.lstrip().startswith("#"))
    unquoted = quoted.replace('"ray start', "ray start").replace('\\"', '"').rstrip()[:-1]
    return yaml.safe_load(text.replace(quoted, unquoted))


@pytest.mark.parametrize("breaks, message", [
    (lambda c: c.update(worker_start_ray_command=c.pop("worker_start_ray_commands")), "worker_start_ray_command"),
    (lambda c: c["auth"].update(ssh_usr=c["auth"].pop("ssh_user")), "ssh_usr"),
    (lambda c: c.update(head_start_ray_commands="ray start --head"), "is not of type 'array'"),
    (lambda c: c.update(_unquoted_jetson_command(c)), "is not of type 'string'"),
], ids=["misspelt-section", "misspelt-auth-field", "command-not-a-list", "unquoted-resources-json"])
def test_broken_copies_fail_ray_validation(breaks, message):
    broken = copy.deepcopy(raw_config())
    breaks(broken)
    with pytest.raises(jsonschema.ValidationError, match=message.replace("'", ".").replace("[", ".")):
        ray_cluster.validate_cluster_config(broken)


def test_a_misspelt_ray_start_option_is_rejected_by_rays_cli():
    cmd = raw_config()["worker_start_ray_commands"][-1]
    assert "--resources=" in cmd
    with pytest.raises(click.UsageError, match="--resource"):
        ray_cluster.ray_start_options(cmd.replace("--resources=", "--resource="))


# ---- a real multi-node cluster on 127.0.0.1 ---------------------------------------------------
@pytest.fixture(scope="module")
def cluster():
    """head (1 CPU) + "GPU" node (2 CPUs, 1 declared GPU) + "Jetson" node (1 CPU, jetson: 1)."""
    with ray_cluster.local_cluster({"num_cpus": 1}, [{"num_cpus": 2, "num_gpus": 1},
                                              {"num_cpus": 1, "resources": {"jetson": 1}}]) as c:
        yield c


@pytest.fixture
def connected(cluster):
    ray_api.connect(cluster.address)
    try:
        yield cluster
    finally:
        ray_api.shutdown()


def ids(cluster) -> tuple[str, str, str]:
    gpu, jetson = cluster.worker_ids
    return cluster.head_id, gpu, jetson


def test_every_node_is_bound_to_loopback_and_declares_its_resources(connected):
    head, gpu, jetson = ids(connected)
    assert connected.address.startswith("127.0.0.1:")
    nodes = {n["NodeID"]: n for n in ray_cluster.nodes()}
    assert set(nodes) == {head, gpu, jetson}
    assert {n["NodeManagerAddress"] for n in nodes.values()} == {"127.0.0.1"}
    res = {k: n["Resources"] for k, n in nodes.items()}
    assert res[gpu]["GPU"] == 1 and "jetson" not in res[gpu]
    assert res[jetson]["jetson"] == 1 and "GPU" not in res[jetson]
    assert "GPU" not in res[head] and "jetson" not in res[head] and res[head]["CPU"] == 1
    assert ray_api.node_id() == head  # the driver joins the head node


def test_tasks_land_on_the_node_with_their_resources(connected):
    head, gpu, jetson = ids(connected)
    where = ray_api.remote(ray_api.node_id, num_cpus=0)
    assert ray_api.get(where.options(resources={"jetson": 1}).remote(), timeout=60) == jetson
    assert ray_api.get(where.options(num_gpus=0.5).remote(), timeout=60) == gpu
    # a resource no node has: the task stays pending, the test does not hang
    assert "tpu_pod" not in ray_api.cluster_resources()
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):  # ray.exceptions.GetTimeoutError
        ray_api.get(where.options(resources={"tpu_pod": 1}).remote(), timeout=2)
    assert time.monotonic() - t0 < 15


def test_study_trials_are_placed_on_the_gpu_node(cluster, tmp_path):
    head, gpu, jetson = ids(cluster)
    study = StudyConfig.model_validate({
        "name": "cluster", "workdir": str(tmp_path / "runs"), "trial": TINY,
        "search_space": {"alpha": {"type": "float", "low": 0.0, "high": 1.0}},
        "objectives": ["psnr:max", "params:min"],
        "num_samples": 2, "max_concurrent": 2,
        "resources": {"cpu": 1, "gpu": 0.5},  # both fit on the GPU node's 2 CPUs + 1 GPU only
        "asha": {"enabled": False},
    })
    result = launch(study, address=cluster.address)

    assert len(result.rows) == 2
    assert [r["status"] for r in result.rows] == ["done", "done"], result.rows
    assert [r["node_id"] for r in result.rows] == [gpu, gpu]  # not a private local Ray's node
    assert all(r["mlflow_run_id"] and r["val_psnr"] > 0 for r in result.rows)
    # launch() disconnected its driver; the cluster outlives it, all three nodes still up
    assert not ray_api.is_initialized()
    ray_api.connect(cluster.address)
    try:
        assert {n["NodeID"] for n in ray_cluster.nodes()} == {head, gpu, jetson}
    finally:
        ray_api.shutdown()

"""A study spread over the GPUs of one host (issue 9), as far as a CPU machine can show it:
a real Ray cluster on 127.0.0.1 whose worker declares 2 GPUs. Four trials at 0.5 GPU run
at once; Ray gives each one GPU id (its CUDA_VISIBLE_DEVICES), two trials per GPU, and
each trial's MLflow run records the id it got. Energy per GPU needs real GPUs (NVML): the
mapping from a trial's CUDA device to its NVML handle by UUID is tested in test_energy."""
from __future__ import annotations

from collections import Counter

from mlflow import MlflowClient

from srstudy.config import StudyConfig
from srstudy.launch import launch
from support.ray_cluster import local_cluster
from test_cluster import TINY


def test_trials_at_half_a_gpu_share_both_gpus_of_a_two_gpu_node(tmp_path):
    with local_cluster({"num_cpus": 1}, [{"num_cpus": 4, "num_gpus": 2}]) as cluster:
        (host,) = cluster.worker_ids
        study = StudyConfig.model_validate({
            "name": "two-gpus", "workdir": str(tmp_path / "runs"),
            "trial": {**TINY, "iterations": 12, "experiment": "two-gpus"},
            "search_space": {"alpha": {"type": "float", "low": 0.0, "high": 1.0}},
            "objectives": ["psnr:max", "params:min"],
            "num_samples": 4, "max_concurrent": 4,
            "resources": {"cpu": 1, "gpu": 0.5},
            "asha": {"enabled": False},
        })
        result = launch(study, address=cluster.address)

    rows = result.rows
    assert [r["status"] for r in rows] == ["done"] * 4, rows
    assert {r["node_id"] for r in rows} == {host}
    # fractional GPUs are packed: each trial holds one GPU id, and 4 × 0.5 needs both GPUs
    assert all(r["gpu_ids"] in ("0", "1") for r in rows), rows
    assert Counter(r["gpu_ids"] for r in rows) == {"0": 2, "1": 2}, rows
    client = MlflowClient(tracking_uri=result.tracking_uri)
    for r in rows:  # the trial's run says which GPU the trial was given
        assert client.get_run(r["mlflow_run_id"]).data.tags["cuda_visible_devices"] == r["gpu_ids"]

"""The edge benchmark: latency/energy arithmetic in-process, a real 2-node Ray cluster on
127.0.0.1 whose second node carries `jetson: 1` (the task lands there, its metrics land in the
right MLflow run), and clear, bounded failures when no node has the resource or the task
takes too long."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from srstudy import ray_api
from srstudy.cli import app
from srstudy.deploy.bench import BenchTimeout, NoJetsonError, bench_on_node, run_benchmark
from srstudy.deploy.onnx import export_onnx
from srstudy.measure import meter as meter_module
from srstudy.measure.tegrastats import parse_tegrastats_line
from srstudy.models.dvmsr import DVMSR, preset, save_checkpoint
from srstudy.tracking import TrialRun
from support.ray_cluster import local_cluster

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

ORIN = Path(__file__).parent / "fixtures" / "tegrastats_orin_nano.txt"
ORIN_WATTS = [w for w in map(parse_tegrastats_line, ORIN.read_text().splitlines()) if w is not None]
FAKE_TEGRASTATS = """
import itertools, sys, time
lines = open(sys.argv[1]).read().splitlines()
interval = int(sys.argv[sys.argv.index("--interval") + 1]) / 1000.0
for line in itertools.cycle(lines):
    print(line, flush=True)
    time.sleep(interval)
"""


def tiny_student() -> DVMSR:
    torch.manual_seed(0)
    return DVMSR(preset("litesr_student", embed_dim=8, n_groups=1, blocks_per_group=1, rank=2)).eval()


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory) -> bytes:
    return export_onnx(tiny_student(), tmp_path_factory.mktemp("edge") / "tiny.onnx").read_bytes()


@pytest.fixture
def fake_tegrastats(tmp_path, monkeypatch) -> list[str]:
    monkeypatch.setattr(meter_module, "_IDLE_BASELINE_W", {})  # this process's idle baseline: measured afresh
    script = tmp_path / "tegrastats.py"
    script.write_text(FAKE_TEGRASTATS)
    return [sys.executable, str(script), str(ORIN)]


def cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


# ---- in this process ---------------------------------------------------------------------------
def test_local_bench_on_cpu_reports_latency_and_leaves_energy_absent(tiny_onnx):
    res = run_benchmark(tiny_onnx, samples=25, size=16, warmup=2)
    assert res.runtime == "onnxruntime" and res.provider == "CPUExecutionProvider"
    assert len(res.latencies_ms) == 25 and all(t > 0 for t in res.latencies_ms)
    assert min(res.latencies_ms) <= res.latency_p50_ms <= res.latency_p90_ms <= max(res.latencies_ms)
    assert res.images_per_s == pytest.approx(25 / res.seconds)
    assert 1e3 / res.latency_mean_ms >= res.images_per_s * 0.9  # the loop adds next to nothing
    m = res.metrics()
    assert set(m) == {"edge_latency_p50_ms", "edge_latency_p90_ms", "edge_latency_mean_ms", "edge_images_per_s",
                      "edge_latency_ms"}
    assert m["edge_latency_ms"] == m["edge_latency_p50_ms"]  # `srstudy pareto`'s edge_latency objective
    tags = res.tags()
    assert "CPU" in tags["edge_energy_unavailable_reason"] and "edge_energy_source" not in tags
    assert any("TensorRT" in n for n in res.notes)  # not installed here: said, then onnxruntime
    assert res.metrics("bench_").keys() == {k.replace("edge_", "bench_") for k in m}


def test_local_bench_power_arithmetic_with_tegrastats(tiny_onnx, fake_tegrastats):
    res = run_benchmark(tiny_onnx, samples=20, size=16, warmup=1, energy="tegrastats",
                        tegrastats_cmd=fake_tegrastats, idle_s=0.3, sample_hz=20)
    assert res.energy_source == "tegrastats_vdd_in" and res.power_field == "VDD_IN" and res.power_trace
    low, high = min(ORIN_WATTS) - 1e-9, max(ORIN_WATTS) + 1e-9  # a time-weighted mean of equal samples may round
    assert low <= res.idle_power_w <= high
    assert low <= res.avg_power_w <= high
    assert res.dynamic_power_w == pytest.approx(res.avg_power_w - res.idle_power_w)
    assert res.energy_per_image_j == pytest.approx(res.energy_j / 20)
    assert res.energy_j == pytest.approx(res.avg_power_w * res.energy_seconds)
    assert res.dynamic_energy_per_image_j == pytest.approx(res.dynamic_power_w * res.energy_seconds / 20)
    m = res.metrics()
    for k in ("edge_avg_power_w", "edge_idle_power_w", "edge_dynamic_power_w", "edge_energy_per_image_j",
              "edge_dynamic_energy_per_image_j", "edge_energy_j"):
        assert np.isfinite(m[k])


# ---- a real Ray cluster: head + a "Jetson" ------------------------------------------------------
@pytest.fixture(scope="module")
def cluster():
    """head (1 CPU) + a node carrying the custom resource `jetson` (1 CPU)."""
    with local_cluster({"num_cpus": 1}, [{"num_cpus": 1, "resources": {"jetson": 1}}]) as c:
        yield c


def test_bench_on_jetson_runs_on_that_node_and_logs_to_the_trial_run(cluster, tmp_path, fake_tegrastats):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    runs = {}
    for name in ("student", "bystander"):
        run = TrialRun.start(tracking_uri=uri, experiment="edge", run_name=name, artifact_root=tmp_path / "art",
                             tags={"role": "trial"})
        run.log_artifact(save_checkpoint(tiny_student(), tmp_path / name / "student.pth"), "student")
        run.finish()
        runs[name] = run.run_id
    # --run-id: the run has no exported graph yet, so its student is exported on the driver and
    # the bytes travel to the Jetson task; tegrastats is a fake printing recorded Orin lines
    res = cli("bench", "--run-id", runs["student"], "--tracking-uri", uri, "--on", "jetson",
              "--address", cluster.address, "--samples", 30, "--size", 16, "--warmup", 2,
              "--energy", "tegrastats", "--tegrastats-cmd", " ".join(fake_tegrastats), "--idle-s", 0.3, "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout.strip().splitlines()[-1])
    (jetson,) = cluster.worker_ids
    assert out["node_id"] == jetson != cluster.head_id
    assert out["run_id"] == runs["student"] and out["samples"] == 30 and out["input"] == "1x3x16x16"
    assert out["runtime"] == "onnxruntime" and out["provider"] == "CPUExecutionProvider"

    data = TrialRun(uri, runs["student"]).data()
    assert data.metrics == pytest.approx(out["metrics_logged"])
    assert data.metrics["edge_latency_p50_ms"] == pytest.approx(out["latency_p50_ms"])
    assert data.metrics["edge_energy_per_image_j"] == pytest.approx(out["energy_per_image_j"])
    assert min(ORIN_WATTS) <= data.metrics["edge_avg_power_w"] <= max(ORIN_WATTS)
    assert {"edge_latency_p90_ms", "edge_latency_mean_ms", "edge_images_per_s", "edge_dynamic_power_w",
            "edge_idle_power_w", "edge_dynamic_energy_per_image_j"} <= set(data.metrics)
    assert data.tags["edge_node_id"] == jetson and data.tags["edge_energy_source"] == "tegrastats_vdd_in"
    assert "edge/edge_bench.json" in TrialRun(uri, runs["student"]).artifact_paths()
    assert not any(k.startswith("edge_") for k in TrialRun(uri, runs["bystander"]).data().metrics)

    # `srstudy pareto` ranks by the edge metrics: the benched run, the other one excluded (not 0)
    res = cli("pareto", "--tracking-uri", uri, "--experiment", "edge", "--objectives",
              "edge_latency:min,edge_energy:min", "--json", "--no-tag")
    assert res.exit_code == 0, res.output
    (front,) = json.loads(res.stdout)
    assert front["run_id"] == runs["student"] and front["knee"]
    assert front["edge_latency_ms"] == pytest.approx(out["latency_p50_ms"])
    assert front["edge_energy_per_image_j"] == pytest.approx(out["energy_per_image_j"])


def test_a_bench_that_overruns_its_timeout_is_cancelled(cluster, tiny_onnx):
    ray_api.connect(cluster.address)
    try:
        t0 = time.monotonic()
        with pytest.raises(BenchTimeout, match="did not finish within 1 s"):
            bench_on_node(tiny_onnx, timeout_s=1, samples=100000, size=16, warmup=0, energy="none")
        assert time.monotonic() - t0 < 15
    finally:
        ray_api.shutdown()


def test_no_jetson_node_is_a_clear_error_after_a_bounded_wait(tmp_path, tiny_onnx):
    onnx = tmp_path / "tiny.onnx"
    onnx.write_bytes(tiny_onnx)
    with local_cluster({"num_cpus": 1}) as plain:  # no node carries `jetson`
        t0 = time.monotonic()
        res = cli("bench", "--onnx", onnx, "--on", "jetson", "--address", plain.address, "--wait", 1)
        waited = time.monotonic() - t0
        assert res.exit_code == 2
        msg = " ".join(res.output.split())
        assert "no node of this Ray cluster offers the resource 'jetson'" in msg
        assert "ray start --address=" in msg and "--resources='{\"jetson\": 1}'" in msg
        assert waited < 20
        ray_api.connect(plain.address)  # the library call: the same error, no task submitted
        try:
            with pytest.raises(NoJetsonError, match="waited 0 s"):
                bench_on_node(tiny_onnx, wait_s=0)
        finally:
            ray_api.shutdown()

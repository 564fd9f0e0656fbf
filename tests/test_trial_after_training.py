"""Nothing is lost once a trial's training has finished (issue 12): a validation folder of the
user's own images, and a failure in a step after training, with a real sqlite MLflow store."""
from __future__ import annotations

import numpy as np
import pytest
from mlflow import MlflowClient
from PIL import Image
from typer.testing import CliRunner

from srstudy.cli import app
from srstudy.config import load_trial_config
from srstudy.trials import scoring
from srstudy.trials.distill import run_trial
from tiny import TINY_TRIAL, with_overrides, write_yaml


def _client(workdir):
    return MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}")


def _artifacts(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    out: set[str] = set()
    for info in client.list_artifacts(run_id, path):
        out |= _artifacts(client, run_id, info.path) if info.is_dir else {info.path}
    return out


def test_a_validation_folder_of_user_images_ends_finished_with_its_sample(tmp_path):
    """Named by their full path, such images made the sample artifact
    `sample_/full/path/img.png.png`: every trial FAILED at the very end."""
    val = tmp_path / "my photos" / "holiday 2024" / "val"
    val.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ("beach day.png", "z.png"):
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(val / name)
    cfg = load_trial_config(write_yaml(tmp_path / "t.yaml", with_overrides(
        TINY_TRIAL, {"data.val": [str(val)], "iterations": 2, "val_interval": 2})))
    workdir = tmp_path / "runs"
    result = run_trial(cfg, workdir=workdir)
    client = _client(workdir)
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED" and result.missing_steps == {}
    assert "samples/sample_beach_day.png" in _artifacts(client, result.run_id)
    assert "student/student.pth" in _artifacts(client, result.run_id)
    assert sorted(p.name for p in val.iterdir()) == ["beach day.png", "z.png"]  # nothing written there


def test_a_failure_after_training_keeps_the_training_and_a_rerun_completes_it(tmp_path, monkeypatch):
    workdir = tmp_path / "runs"
    cfg_path = write_yaml(tmp_path / "t.yaml", TINY_TRIAL)
    cfg = load_trial_config(cfg_path)

    def broken_latency(*args, **kwargs):
        raise RuntimeError("latency probe exploded")

    monkeypatch.setattr(scoring, "measure_latency", broken_latency)
    first = run_trial(cfg, workdir=workdir)
    client = _client(workdir)
    run = client.get_run(first.run_id)
    assert run.info.status == "FINISHED"  # never FAILED after training finished
    assert set(first.missing_steps) == {"latency"} and "latency probe exploded" in first.missing_steps["latency"]
    m = run.data.metrics
    assert 0 < m["val_psnr"] < 60 and m["train_time_s"] > 0 and m["iterations_per_s"] > 0
    assert "latency_ms" not in m and "latency_ms" not in first.metrics  # not measured: absent, never 0
    arts = _artifacts(client, first.run_id)
    assert {"student/student.pth", "student/student_config.json", "post_training_failures/latency.txt"} <= arts
    assert any(a.startswith("samples/sample_") for a in arts)  # the steps after it still ran
    assert run.data.tags["post_training_failures"] == "latency"
    assert "latency probe exploded" in run.data.tags["post_training_error.latency"]
    error_file = client.download_artifacts(first.run_id, "post_training_failures/latency.txt", str(tmp_path))
    assert "step: latency" in open(error_file).read()

    # the CLI says so: a re-run with the fault still there completes nothing, exits 1, keeps the run FINISHED
    res = CliRunner().invoke(app, ["trial", "--config", str(cfg_path), "--workdir", str(workdir)])
    out = " ".join(res.output.split())
    assert res.exit_code == 1 and "latency: RuntimeError: latency probe exploded" in out
    assert "run the same command again" in out and client.get_run(first.run_id).info.status == "FINISHED"

    monkeypatch.undo()
    again = run_trial(cfg, workdir=workdir)
    assert again.run_id == first.run_id and again.missing_steps == {}
    run = client.get_run(first.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["latency_ms"] > 0 and again.metrics["latency_ms"] == run.data.metrics["latency_ms"]
    assert run.data.metrics["val_psnr"] == pytest.approx(m["val_psnr"])
    assert "post_training_failures" not in run.data.tags and "post_training_error.latency" not in run.data.tags
    assert run.data.tags["post_training_completed_on_rerun"] == "latency"
    exp = client.get_experiment_by_name("tiny")
    assert len(client.search_runs([exp.experiment_id])) == 1  # completed into the same run
    assert len(client.get_metric_history(first.run_id, "latency_ms")) == 1
    # and now it is finished: a third start returns it as it is
    assert run_trial(cfg, workdir=workdir).metrics == again.metrics

"""Energy you can rank (issue 17), wired in: the trial's session in `run_trial` / `train` /
scoring, and the launcher's idle baseline, sampler and attribution logging.

On CPU with the simulated GPU of tests/support/simulated_nvml.py and real sqlite MLflow runs:
the only seam is `srstudy.trials.gpu_energy.open_session`, which on a real GPU builds the same
`TrialEnergySession` over the real NVML API.
"""
from __future__ import annotations

import importlib.util
import json
import os
import threading
import time
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from srstudy.config import StudyConfig, load_trial_config
from srstudy.launch.energy import ERROR_TAG_PREFIX, UNAVAILABLE_TAG, StudyEnergy, open_study_energy
from srstudy.measure.energy import NvmlEnergyMeter
from srstudy.measure.gpu_lock import read_waits
from srstudy.measure.study_session import StudyEnergySession
from srstudy.measure.trial_session import TrialEnergySession, WindowSettings
from srstudy.tracking import TrialRun
from srstudy.trials import gpu_energy
from srstudy.trials.distill import run_trial
from srstudy.workdir import StudyDir
from support.actors import UUID, sim  # noqa: F401 - sim: fixture
from support.simulated_nvml import HANDLE
from tiny import TINY_TRIAL, tiny_study_config, with_overrides, write_yaml

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "energy_attribution.py"


def _benchmark_module():
    spec = importlib.util.spec_from_file_location("energy_attribution_bench", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------- the trial


def test_trial_on_a_simulated_gpu_logs_the_window_objective(tmp_path, sim, monkeypatch):
    workdir = tmp_path / "study"
    StudyEnergySession(workdir, sim, idle_kwargs={"seconds": 0.1, "hz": 20}).take_idle_baselines()
    opened = []

    def sim_session(device, wd, trial, cfg):  # what open_session builds on a GPU, over the simulated one
        opened.append((Path(wd), trial))
        return TrialEnergySession(wd, trial, sim, HANDLE, start_iteration=0, total_iterations=cfg.iterations,
                                  settings=gpu_energy.window_settings(cfg), pids=[os.getpid()])

    monkeypatch.setattr(gpu_energy, "open_session", sim_session)
    sim.add_process(os.getpid(), sm=90.0, active_w=200.0)  # the trial's context on the GPU
    cfg = load_trial_config(write_yaml(tmp_path / "t.yaml", with_overrides(TINY_TRIAL, {
        "energy_window": {"min_iterations": 2, "min_seconds": 0.0, "start_fraction": 0.0}})))
    result = run_trial(cfg, workdir=workdir, run_name="r2-a0.80-c8-g1", trial_id="tune_00000")
    assert opened == [(workdir, "tune_00000")]  # attribution is keyed by the trial id, not the display name

    run = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}").get_run(result.run_id)
    m, tags = run.data.metrics, run.data.tags
    assert run.info.status == "FINISHED" and not tags.get("post_training_failures")
    assert tags["energy_method"] == "exclusive_window" and tags["energy_window_iterations"] == "2"
    assert tags["energy_window_complete"] == "true" and tags["gpu_idle_baseline"] == "study"
    assert m["gpu_energy_j"] == pytest.approx(m["gpu_energy_per_iter_j"] * cfg.iterations)
    assert m["gpu_energy_per_iter_j"] == m["gpu_energy_window_per_iter_j"] > 0
    assert m["gpu_idle_power_w"] == pytest.approx(122.0) and m["energy_window_wait_s"] >= 0
    assert m["gpu_inference_energy_per_image_j"] > 0 and "gpu_lock_blocked_s" in m
    # the latency was timed with the GPU alone: its own exclusive hold in the lock's log, and said so
    assert tags["latency_gpu"].startswith("alone") and m["latency_ms"] > 0
    assert [w["label"] for w in read_waits(workdir)].count("latency") == 1
    # the whole-run counter is absent here (the trial's torch device is the CPU): said so, not 0
    assert "gpu_energy_whole_run_j" not in m and "gpu_avg_power_w" not in m
    assert "cpu" in tags["energy_whole_run_unavailable_reason"] and "energy_unavailable_reason" not in tags
    assert result.metrics["gpu_energy_j"] == m["gpu_energy_j"]  # what the launcher reports to Tune
    # the trial's PID registration is closed, under the Tune trial id
    reg = json.loads((workdir / "trial_pids" / "tune_00000.json").read_text())
    assert reg["gpu_uuid"] == UUID and reg.get("ended_at") and os.getpid() in reg["pids"]
    # the benchmark's checks of the trial's side (the launcher's sampler file is the one missing)
    missing = _benchmark_module().missing_hooks(workdir, m)
    assert len(missing) == 1 and "energy_samples" in missing[0], missing


def test_a_session_that_cannot_open_leaves_the_whole_run_counter_with_a_reason(tmp_path, monkeypatch):
    def no_nvml(*args):
        raise LookupError("GPU-1234 not among NVML's devices")

    monkeypatch.setattr(gpu_energy, "open_session", no_nvml)
    cfg = load_trial_config(write_yaml(tmp_path / "t.yaml", TINY_TRIAL))
    with gpu_energy.trial_gpu(torch.device("cpu"), tmp_path, "t", cfg) as gpu:
        assert gpu.session is None
    assert "GPU-1234" in gpu.tags()[gpu_energy.UNAVAILABLE_TAG]
    from srstudy.measure.energy import EnergyResult

    whole = EnergyResult(energy_j=500.0, seconds=2.0, avg_power_w=250.0, source="nvml", shared_processes=1)
    metrics, tags = gpu_energy.training_energy(gpu, whole, 10)  # as before the hooks, and tagged why
    assert metrics["gpu_energy_j"] == 500.0 and tags["energy_shared"] == "true"
    assert "GPU-1234" in tags[gpu_energy.UNAVAILABLE_TAG] and "energy_method" not in tags
    monkeypatch.undo()
    assert gpu_energy.open_session(torch.device("cpu"), tmp_path, "t", cfg) is None  # CPU: no session at all
    assert not (tmp_path / "locks").exists() and not (tmp_path / "trial_pids").exists()


def test_energy_window_config_is_validated(tmp_path):
    from srstudy.config import ConfigError

    for bad, field in (({"min_iterations": 0}, "min_iterations"), ({"min_seconds": -1}, "min_seconds"),
                       ({"start_fraction": 1.0}, "start_fraction")):
        with pytest.raises(ConfigError, match=f"energy_window.{field}"):
            load_trial_config(write_yaml(tmp_path / "t.yaml", with_overrides(TINY_TRIAL, {"energy_window": bad})))
    base = load_trial_config(write_yaml(tmp_path / "t.yaml", TINY_TRIAL))
    tuned = load_trial_config(write_yaml(tmp_path / "t.yaml", with_overrides(TINY_TRIAL, {
        "energy_window": {"min_seconds": 1.0}})))
    assert tuned.identity() == base.identity()  # how energy is measured changes no trial folder
    assert gpu_energy.window_settings(tuned) == WindowSettings(min_iterations=20, min_seconds=1.0,
                                                               start_fraction=0.1, sample_hz=10.0)


# --------------------------------------------------------------------------- the launcher


def _trial_on(sim, workdir: Path, name: str, pid: int, active_w: float) -> None:
    settings = WindowSettings(min_iterations=5, min_seconds=0.05, start_fraction=0.2, sample_hz=50)
    with TrialEnergySession(workdir, name, sim, HANDLE, start_iteration=0, total_iterations=30,
                            settings=settings, pids=[pid]) as session:
        sim.add_process(pid, sm=active_w / 2, active_w=active_w)
        with NvmlEnergyMeter(sim, HANDLE, sample_hz=20, idle_baseline_s=0):
            for it in range(30):
                session.before_iteration(it)
                time.sleep(0.01)
                session.after_iteration(it)
        sim.remove_process(pid)


def test_launcher_logs_attribution_to_trial_runs_and_totals_to_the_parent(tmp_path, sim):
    workdir = StudyDir(tmp_path / "study").create()
    uri = workdir.tracking_uri
    parent = TrialRun.start(tracking_uri=uri, experiment="e", run_name="study-x", tags={"role": "study"})
    trials = {}
    for tid in ("tune_a", "tune_b"):
        run = TrialRun.start(tracking_uri=uri, experiment="e", run_name=f"display-{tid}", parent_run_id=parent.run_id)
        run.finish("FINISHED")
        trials[tid] = run.run_id
    energy = StudyEnergy(StudyEnergySession(workdir.path, sim, hz=50, idle_kwargs={"seconds": 0.1, "hz": 20}), parent)
    energy.session.take_idle_baselines()
    energy.start()
    threads = [threading.Thread(target=_trial_on, args=(sim, workdir.path, tid, pid, w))
               for tid, pid, w in (("tune_a", 101, 150.0), ("tune_b", 202, 50.0))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    energy.stop()
    rows = [{"trial_id": tid, "mlflow_run_id": rid} for tid, rid in trials.items()]
    rows.append({"trial_id": "tune_c", "mlflow_run_id": "0" * 32})  # no registration: nothing to log, no error
    energy.log_results(rows, uri)

    client = MlflowClient(uri)
    got = {tid: client.get_run(rid) for tid, rid in trials.items()}
    assert all(r.info.status == "FINISHED" for r in got.values())  # a finished run takes metrics, status kept
    a, b = (got[t].data.metrics["gpu_energy_attributed_j"] for t in ("tune_a", "tune_b"))
    assert a > b > 0 and rows[0]["gpu_energy_attributed_j"] == a and "gpu_energy_attributed_j" not in rows[2]
    p = client.get_run(parent.run_id).data
    assert p.metrics["gpu_energy_attributed_sum_j"] == pytest.approx(a + b)
    assert 0 < p.metrics["gpu_energy_attributed_over_measured"] <= 1 + 1e-9
    assert p.metrics["exclusive_windows"] == 2 and "calibration_overhead" in p.metrics
    assert not [k for k in p.tags if k.startswith(ERROR_TAG_PREFIX)]

    # a trial whose run cannot take the metric: tagged on the parent; the other trial still gets its own
    rows = [{"trial_id": "tune_a", "mlflow_run_id": "f" * 32},
            {"trial_id": "tune_b", "mlflow_run_id": trials["tune_b"]}]
    energy.log_results(rows, uri)
    assert "gpu_energy_attributed_j" in rows[1] and "gpu_energy_attributed_j" not in rows[0]
    assert client.get_run(parent.run_id).data.tags[ERROR_TAG_PREFIX + "trial_tune_a"]
    # attribution itself failing (an unreadable samples file): a tag, never an exception
    samples = next((workdir.path / "energy_samples").glob("gpu-*.jsonl"))
    samples.unlink()
    samples.mkdir()
    energy.log_results([{"trial_id": "tune_a", "mlflow_run_id": trials["tune_a"]}], uri)
    assert "IsADirectoryError" in client.get_run(parent.run_id).data.tags[ERROR_TAG_PREFIX + "attribution"]


def test_launcher_energy_is_off_without_a_gpu_and_says_why(tmp_path):
    workdir = StudyDir(tmp_path / "study").create()
    parent = TrialRun.start(tracking_uri=workdir.tracking_uri, experiment="e", run_name="study")
    cpu_study = StudyConfig.model_validate(tiny_study_config(workdir.path))
    assert open_study_energy(cpu_study, workdir, parent) is None
    assert "no GPU" in parent.data().tags[UNAVAILABLE_TAG]
    assert not (workdir.path / "gpu_idle.json").exists()  # nothing sampled, no NVML call
    if torch.cuda.is_available():
        return
    gpu_study = StudyConfig.model_validate(tiny_study_config(workdir.path, resources={"cpu": 1, "gpu": 0.5}))
    assert open_study_energy(gpu_study, workdir, parent) is None  # this node has no NVML GPU: the reason
    assert parent.data().tags[UNAVAILABLE_TAG] and "no GPU" not in parent.data().tags[UNAVAILABLE_TAG]


def test_teacher_share_is_the_teacher_work_a_trial_caused():
    """Issue 17 §2: gpu_energy_j = exclusive J/iteration × iterations + the trial's share of the
    teacher work it caused; the rule names itself in a tag; unmeasured stays absent."""
    from pathlib import Path

    from srstudy.measure.energy import EnergyResult
    from srstudy.trials.gpu_energy import TrialGpu, teacher_share, training_energy
    from srstudy.trials.teacher import Teacher

    def teacher(source, joules=9000.0, iterations=300, this_run=300):
        meta = {"iterations": iterations, "iterations_this_run": this_run,
                "energy": {} if joules is None else {"gpu_energy_j": joules}}
        return Teacher(model=None, source=source, path=Path("t.pth"), meta=meta)

    assert teacher_share(teacher("cache"), alpha=0.5, sharers=4)[0] == 2250.0  # in a study: 1/num_samples
    assert teacher_share(teacher("trained"), alpha=0.5, sharers=None)[0] == 9000.0  # it trained it
    share, tags = teacher_share(teacher("cache"), alpha=0.5, sharers=None)
    assert share == 0.0 and "reused" in tags["energy_teacher_share"]
    # α = 0 but the student started from the teacher's weights: it takes its share too
    assert teacher_share(teacher("cache"), alpha=0.0, sharers=4, inherited=True)[0] == 2250.0
    for t, alpha, why in ((teacher("cache"), 0.0, "alpha = 0"), (None, 0.5, "alpha = 0"),
                          (teacher("checkpoint"), 0.5, "checkpoint"), (teacher("cache", joules=None), 0.5, "not measured"),
                          (teacher("cache", this_run=100), 0.5, "resumed")):
        share, tags = teacher_share(t, alpha=alpha, sharers=4)
        assert share is None and why in tags["energy_teacher_share"]
    # without a session (a GPU without the window), the whole-run objective takes the share too
    whole = EnergyResult(energy_j=4000.0, seconds=10.0, shared_processes=0)
    m, _ = training_energy(TrialGpu(), whole, 100, teacher_energy_j=250.0)
    assert m["gpu_energy_j"] == 4250.0 and m["gpu_energy_teacher_share_j"] == 250.0
    blind = EnergyResult(energy_j=None, seconds=10.0, reason="no NVML")
    m, _ = training_energy(TrialGpu(), blind, 100, teacher_energy_j=250.0)
    assert "gpu_energy_j" not in m and "gpu_energy_teacher_share_j" not in m  # absent, not 250

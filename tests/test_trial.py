"""One distillation trial on the bundled images with a real sqlite MLflow store:
params, metrics, artifacts, no invented energy, kill -9 + resume, the teacher cache."""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient
from typer.testing import CliRunner

from srstudy.cli import app
from srstudy.config import ConfigError, load_trial_config
from srstudy.trials.distill import RUN_FILE, run_trial, trial_dir_for
from srstudy.trials.batches import batch_indices
from srstudy.trials.loop import CHECKPOINT_NAME, lr_at
from srstudy.trials.teacher import WEIGHTS, get_teacher
from tiny import TINY_TRIAL, with_overrides, write_yaml

def tiny(tmp_path: Path, **overrides) -> Path:
    return write_yaml(tmp_path / "trial.yaml", with_overrides(TINY_TRIAL, overrides))


def runs_of(workdir: Path, experiment: str = "tiny"):
    client = MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}")
    exp = client.get_experiment_by_name(experiment)
    return client, client.search_runs([exp.experiment_id], filter_string="tags.role = 'trial'")


def test_tiny_trial_logs_params_metrics_artifacts_and_no_energy(tmp_path):
    workdir = tmp_path / "runs"
    cfg = load_trial_config(tiny(tmp_path))
    result = run_trial(cfg, workdir=workdir)
    client, runs = runs_of(workdir)
    assert [r.info.run_id for r in runs] == [result.run_id]
    run = runs[0]
    assert run.info.status == "FINISHED"
    p = run.data.params
    assert p["student.rank"] == "2" and p["student.embed_dim"] == "8" and p["alpha"] == "0.8"
    assert p["teacher.arch.embed_dim"] == "8" and p["optim.lr"] == "0.0002"
    m = run.data.metrics
    assert 0 < m["val_psnr"] < 60 and 0 < m["val_ssim"] <= 1
    assert m["params"] == cfg.student.param_count() and m["flops"] > 0
    assert m["latency_ms"] > 0 and m["iterations_per_s"] > 0 and m["wall_time_s"] > 0
    assert run.data.tags["latency_method"] == "eager"  # on a GPU: cuda_graph (tests/test_cuda_graph.py)
    # where the wall time went: setup (data, model, run) + training + after training
    assert m["after_training_s"] > 0 and m["setup_s"] >= 0
    assert m["setup_s"] + m["train_time_s"] + m["after_training_s"] == pytest.approx(m["wall_time_s"], abs=1e-6)
    history = client.get_metric_history(run.info.run_id, "val_psnr")
    assert sorted(h.step for h in history) == [3, 6]
    assert len(client.get_metric_history(run.info.run_id, "train_loss")) >= 2
    # never invented: no GPU here, so no energy metric at all, and a tag says why
    assert not [k for k in m if "energy" in k or k.startswith("gpu_")]  # no GPU memory either
    assert "cpu" in run.data.tags["energy_unavailable_reason"]
    assert "energy_method" not in run.data.tags  # no GPU energy session on CPU: no lock, no PID registration
    assert "not measured" in run.data.tags["energy_teacher_share"]  # the teacher trained here, on CPU: no joules
    assert not (workdir / "locks").exists() and not (workdir / "trial_pids").exists()
    assert run.data.tags["scan_backend"] == "chunked" and run.data.tags["device"] == "cpu"
    arts = set()
    for top in client.list_artifacts(run.info.run_id):
        arts |= {a.path for a in client.list_artifacts(run.info.run_id, top.path)}
    assert {"student/student.pth", "student/student_config.json"} <= arts
    assert any(a.startswith("samples/sample_") and a.endswith(".png") for a in arts)
    # the student checkpoint is a loadable network
    from srstudy.models.dvmsr import load_checkpoint

    assert load_checkpoint(result.trial_dir / "artifacts" / "student.pth").param_count() == m["params"]


def test_second_trial_with_the_same_teacher_trains_no_teacher(tmp_path):
    workdir = tmp_path / "runs"
    run_trial(load_trial_config(tiny(tmp_path)), workdir=workdir)
    entries = list((workdir / "teachers").glob("*/" + WEIGHTS))
    assert len(entries) == 1
    mtime = entries[0].stat().st_mtime_ns
    other = load_trial_config(tiny(tmp_path, **{"student.rank": 1, "alpha": 0.5}))
    run_trial(other, workdir=workdir)
    assert list((workdir / "teachers").glob("*/" + WEIGHTS)) == entries
    assert entries[0].stat().st_mtime_ns == mtime
    _, runs = runs_of(workdir)
    assert sorted(r.data.tags["teacher_source"] for r in runs) == ["cache", "trained"]


def test_corrupt_teacher_cache_entry_is_rebuilt_not_loaded(tmp_path, caplog):
    cfg = load_trial_config(tiny(tmp_path))
    cpu = torch.device("cpu")
    first = get_teacher(cfg, cache_dir=tmp_path / "t", device=cpu)
    assert first.source == "trained"
    assert get_teacher(cfg, cache_dir=tmp_path / "t", device=cpu).source == "cache"
    with open(first.path, "r+b") as f:  # flip bytes in the middle of the weights
        f.seek(first.path.stat().st_size // 2)
        f.write(b"\x00\x01\x02\x03" * 8)
    again = get_teacher(cfg, cache_dir=tmp_path / "t", device=cpu)
    assert again.source == "trained"
    assert "corrupt" in caplog.text


def _teacher_worker(cfg_path: str, cache: str, out: str) -> None:
    cfg = load_trial_config(cfg_path)
    t = get_teacher(cfg, cache_dir=cache, device=torch.device("cpu"))
    Path(out).write_text(t.source)


def test_concurrent_trials_train_the_teacher_once(tmp_path):
    cfg_path = str(tiny(tmp_path, **{"teacher.iterations": 8}))
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_teacher_worker, args=(cfg_path, str(tmp_path / "t"), str(tmp_path / f"o{i}")))
             for i in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
        assert p.exitcode == 0
    assert sorted((tmp_path / f"o{i}").read_text() for i in range(2)) == ["cache", "trained"]


def test_official_dvmsr_checkpoint_works_as_teacher(tmp_path, shared_data):
    ckpt = shared_data / "checkpoints" / "DVMSR.pth"
    cfg = load_trial_config(tiny(tmp_path, **{"teacher.checkpoint": str(ckpt), "iterations": 2, "val_interval": 2}))
    result = run_trial(cfg, workdir=tmp_path / "runs")
    _, runs = runs_of(tmp_path / "runs")
    assert runs[0].data.tags["teacher_source"] == "checkpoint"
    assert result.metrics["teacher_params"] == 424_428


def test_kill_9_mid_trial_then_restart_resumes_the_same_run(tmp_path):
    workdir = tmp_path / "runs"
    cfg_path = tiny(tmp_path, **{"iterations": 40, "checkpoint_interval": 2, "val_interval": 20, "patch_size": 24})
    cfg = load_trial_config(cfg_path)
    tdir = trial_dir_for(cfg, workdir)
    cmd = [sys.executable, "-m", "srstudy.cli", "trial", "--config", str(cfg_path), "--workdir", str(workdir)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 240
        while time.time() < deadline:  # wait for a checkpoint past the start
            ck = tdir / CHECKPOINT_NAME
            if ck.exists():
                try:
                    if 4 <= torch.load(ck, weights_only=True)["iteration"] < 40:
                        break
                except Exception:  # being replaced right now
                    pass
            assert proc.poll() is None, "trial ended before it could be killed"
            time.sleep(0.05)
        else:
            pytest.fail("no checkpoint appeared")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    killed_at = torch.load(tdir / CHECKPOINT_NAME, weights_only=True)["iteration"]
    assert 4 <= killed_at < 40
    run_id = json.loads((tdir / RUN_FILE).read_text())["run_id"]

    result = run_trial(cfg, workdir=workdir)
    assert result.run_id == run_id
    assert result.resumed_from is not None and result.resumed_from >= killed_at
    assert torch.load(tdir / CHECKPOINT_NAME, weights_only=True)["iteration"] == 40
    client, runs = runs_of(workdir)
    assert [r.info.run_id for r in runs] == [run_id]  # no duplicate run
    assert runs[0].info.status == "FINISHED"
    assert max(h.step for h in client.get_metric_history(run_id, "train_loss")) == 40
    # and a third start returns the finished result without training again
    assert run_trial(cfg, workdir=workdir).run_id == run_id


def test_run_created_but_not_recorded_before_a_kill_is_adopted_not_duplicated(tmp_path):
    """kill -9 between creating the trial's MLflow run and writing run.json (seen in CI: a
    study resumed after kill -9 had 5 runs for 4 trials): the restarted trial adopts that run."""
    from srstudy.tracking import TrialRun
    from srstudy.workdir import StudyDir

    workdir = tmp_path / "runs"
    cfg = load_trial_config(tiny(tmp_path, iterations=2, val_interval=2))
    tdir = trial_dir_for(cfg, workdir)
    # what the trial does first (its experiment's artifacts under the workdir, as the trial makes it:
    # without artifact_root MLflow would put them in ./mlruns of the current folder)
    orphan = TrialRun.start(tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}", experiment=cfg.experiment,
                            artifact_root=StudyDir(workdir).artifacts, tags={"role": "trial", "trial_dir": str(tdir)})
    other = TrialRun.start(tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}", experiment=cfg.experiment,
                           tags={"role": "trial", "trial_dir": str(tdir) + "-other"})  # another trial's: not adopted
    assert not (tdir / RUN_FILE).exists()
    result = run_trial(cfg, workdir=workdir)
    assert result.run_id == orphan.run_id
    assert json.loads((tdir / RUN_FILE).read_text())["run_id"] == orphan.run_id
    _, runs = runs_of(workdir)
    assert sorted(r.info.run_id for r in runs) == sorted([orphan.run_id, other.run_id])
    assert {r.info.run_id: r.info.status for r in runs}[orphan.run_id] == "FINISHED"


def test_resume_from_the_final_checkpoint_still_scores_the_student(tmp_path):
    """Killed after the last checkpoint but before the result was written: the restart
    trains nothing and must still report validation scores (the study's objective)."""
    workdir = tmp_path / "runs"
    cfg = load_trial_config(tiny(tmp_path))
    first = run_trial(cfg, workdir=workdir)
    (first.trial_dir / "result.json").unlink()  # as if killed right after the final checkpoint
    again = run_trial(cfg, workdir=workdir)
    assert again.run_id == first.run_id and again.resumed_from == cfg.iterations
    assert again.metrics["val_psnr"] == pytest.approx(first.metrics["val_psnr"])
    assert "val_ssim" in again.metrics


def test_run_left_open_by_a_crash_after_the_result_is_closed_on_restart(tmp_path):
    """Killed between writing result.json and closing the MLflow run: the restart trains
    nothing and closes the run, so the MLflow browser shows no phantom RUNNING trial."""
    workdir = tmp_path / "runs"
    cfg = load_trial_config(tiny(tmp_path))
    first = run_trial(cfg, workdir=workdir)
    client, _ = runs_of(workdir)
    client.update_run(first.run_id, status="RUNNING")  # the state such a kill leaves
    mtime = (first.trial_dir / "result.json").stat().st_mtime_ns
    again = run_trial(cfg, workdir=workdir)
    assert again.run_id == first.run_id and again.resumed_from is None
    assert (first.trial_dir / "result.json").stat().st_mtime_ns == mtime
    assert client.get_run(first.run_id).info.status == "FINISHED"


def test_cli_trial_prints_run_id_and_config_errors_name_the_field(tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["trial", "--config", str(tiny(tmp_path)), "--workdir", str(tmp_path / "w"),
                              "--set", "student.embed_dim=-1"])
    assert res.exit_code == 2 and "student.embed_dim" in res.output and "-1" in res.output
    res = runner.invoke(app, ["trial", "--config", str(tiny(tmp_path)), "--set", "student.embedd_dim=4"])
    assert res.exit_code == 2 and "student.embedd_dim" in res.output
    res = runner.invoke(app, ["trial", "--config", str(tmp_path / "missing.yaml")])
    assert res.exit_code == 2 and "missing.yaml" in res.output
    res = runner.invoke(app, ["trial", "--config", str(tiny(tmp_path)), "--set", "data.train=[/no/such/folder]"])
    assert res.exit_code == 2 and "data.train" in res.output and "/no/such/folder" in res.output
    res = runner.invoke(app, ["trial", "--config", str(tiny(tmp_path)), "--workdir", str(tmp_path / "w"),
                              "--set", "iterations=2", "--set", "val_interval=2"])
    assert res.exit_code == 0, res.output
    assert "run_id:" in res.output and "val_psnr" in res.output


def test_overrides_parse_yaml_values():
    cfg = load_trial_config(None, ["student.embed_dim=16", "data.benchmark_sets=[]", "precision=bf16"])
    assert cfg.student.embed_dim == 16 and cfg.precision == "bf16"
    with pytest.raises(ConfigError, match="alpha"):
        load_trial_config(None, ["alpha=1.5"])
    with pytest.raises(ConfigError, match="key=value"):
        load_trial_config(None, ["alpha"])


def test_batches_and_schedule_are_pure_functions_of_the_iteration():
    assert batch_indices(10, 4, 3, seed=1) == batch_indices(10, 4, 3, seed=1)
    assert batch_indices(10, 4, 3, seed=1) != batch_indices(10, 4, 3, seed=2)
    epochs = [e for e, _ in batch_indices(5, 4, 1, seed=0)]  # positions 4..7 span epochs 0 and 1
    assert epochs == [0, 1, 1, 1]
    assert sorted(i for e, i in batch_indices(5, 5, 0, seed=0)) == list(range(5))
    assert lr_at(0, 1.0, [2, 4], 0.5) == 1.0 and lr_at(2, 1.0, [2, 4], 0.5) == 0.5 and lr_at(9, 1.0, [2, 4], 0.5) == 0.25


def test_prefetched_batches_are_the_loop_batches_in_order_and_errors_surface():
    from srstudy.data import PatchDataset, default_split
    from srstudy.trials.batches import make_batch
    from srstudy.trials.prefetch import BatchPrefetcher

    data = PatchDataset(default_split()[0], lr_patch=16, patches_per_image=2, seed=4)
    build = lambda i: make_batch(data, 3, i, 4)  # noqa: E731
    expected = {i: build(i) for i in range(5, 9)}
    with BatchPrefetcher(build, start=5, stop=9, depth=2) as ahead:
        for i in range(5, 9):
            batch = ahead.next(i)
            assert torch.equal(batch.lr, expected[i].lr) and torch.equal(batch.hr, expected[i].hr)
            assert batch.teacher_sr is None

    def broken(i):
        if i == 2:
            raise OSError("disk gone at 2")
        return build(i)

    with BatchPrefetcher(broken, start=0, stop=5) as ahead:
        ahead.next(0), ahead.next(1)
        with pytest.raises(OSError, match="disk gone at 2"):
            ahead.next(2)
    with BatchPrefetcher(build, start=0, stop=5) as ahead, pytest.raises(RuntimeError, match="iteration 0 where 3"):
        ahead.next(3)
    ahead = BatchPrefetcher(build, start=0, stop=10**6, depth=1)
    ahead.close()  # stops a thread that would otherwise build a million batches
    assert not ahead._thread.is_alive()


def test_a_trial_with_prefetched_batches_trains_the_same_student(tmp_path):
    cfg = load_trial_config(tiny(tmp_path))
    inline = run_trial(cfg.model_copy(update={"prefetch_batches": 0}), workdir=tmp_path / "a")
    ahead = run_trial(cfg.model_copy(update={"prefetch_batches": 3}), workdir=tmp_path / "b")
    assert ahead.metrics["val_psnr"] == inline.metrics["val_psnr"]
    a = torch.load(inline.trial_dir / CHECKPOINT_NAME, weights_only=True)["model"]
    b = torch.load(ahead.trial_dir / CHECKPOINT_NAME, weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_teacher_bank_is_computed_once_shared_by_trials_and_rebuilt_when_corrupt(tmp_path, caplog):
    import numpy as np

    from srstudy.trials import inputs
    from srstudy.trials.batches import bank_item, to_device

    workdir = tmp_path / "runs"
    cfg = load_trial_config(tiny(tmp_path, **{"teacher.bank_patches": 10}))
    tags_of = lambda r: MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}").get_run(r.run_id).data.tags  # noqa: E731
    first = run_trial(cfg, workdir=workdir)
    tags = tags_of(first)
    assert tags["teacher_bank_source"] == "built" and tags["teacher_bank_patches"] == "10"
    bank_path = Path(tags["teacher_bank"])
    targets = np.load(bank_path)
    assert targets.shape == (10, 3, 64, 64) and targets.dtype == np.float16  # patch 16 × scale 4
    # the targets are the cached teacher's SR of the bank's LR patches
    teacher = get_teacher(cfg, cache_dir=workdir / "teachers", device=torch.device("cpu"))
    data = inputs.patch_dataset(inputs.train_images(cfg.data), scale=cfg.scale, patch_size=cfg.patch_size,
                                patches_per_image=cfg.data.patches_per_image, seed=cfg.seed)
    for j in (0, 9):
        lr = torch.from_numpy(np.ascontiguousarray(bank_item(data, j)[0])[None])
        with torch.no_grad():
            sr = teacher.model(to_device(lr, torch.device("cpu"))).clamp(0, 1)[0]
        assert (sr - torch.from_numpy(targets[j]).float()).abs().max() <= 1e-3
    # another trial with the same teacher and data reuses it
    second = run_trial(cfg.model_copy(update={"alpha": 0.5}), workdir=workdir)
    assert tags_of(second)["teacher_bank_source"] == "cache" and tags_of(second)["teacher_bank"] == str(bank_path)
    # a corrupt bank is rebuilt, never used
    with open(bank_path, "r+b") as f:
        f.seek(-8, 2)
        f.write(b"\x7f" * 8)
    third = run_trial(cfg.model_copy(update={"alpha": 0.3}), workdir=workdir)
    assert tags_of(third)["teacher_bank_source"] == "built" and "corrupt" in caplog.text
    assert np.array_equal(np.load(bank_path), targets)


def test_tf32_precision_turns_tf32_matmuls_on_only_inside_the_step():
    """`precision: tf32` = fp32 tensors with TF32 matmuls on CUDA, inside the training step only
    (validation and benchmarks stay exact fp32); the process's flag is restored, also on error;
    on a CPU it is plain fp32."""
    from srstudy.trials.loop import autocast

    cfg = load_trial_config(None, ["precision=tf32"])
    assert cfg.precision == "tf32"
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with autocast(torch.device("cuda"), "tf32"):
            assert torch.backends.cuda.matmul.allow_tf32 is True
        assert torch.backends.cuda.matmul.allow_tf32 is False
        with pytest.raises(RuntimeError, match="boom"):
            with autocast(torch.device("cuda"), "tf32"):
                raise RuntimeError("boom")
        assert torch.backends.cuda.matmul.allow_tf32 is False
        with autocast(torch.device("cpu"), "tf32"):
            assert torch.backends.cuda.matmul.allow_tf32 is False
            assert not torch.is_autocast_enabled("cpu")
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


def test_a_trial_stopped_at_a_report_is_never_failed_and_resumes_in_its_run(tmp_path):
    """Tune stops a trial (ASHA, or the study's SIGINT) by raising SystemExit in its training
    thread at a report: the MLflow run is not FAILED but left RUNNING (the launcher ends a pruned
    one KILLED, an interrupted one stays open), and a later start of the same trial continues
    that run and finishes it."""
    workdir = tmp_path / "runs"
    cfg = load_trial_config(tiny(tmp_path, val_interval=2))

    def stop(it, metrics):  # what ray.train.report does once Tune has decided to stop the trial
        raise SystemExit(0)

    with pytest.raises(SystemExit):
        run_trial(cfg, workdir=workdir, on_validate=stop)
    client, runs = runs_of(workdir)
    assert [r.info.status for r in runs] == ["RUNNING"]
    again = run_trial(cfg, workdir=workdir)
    assert again.run_id == runs[0].info.run_id  # the same run, continued
    assert client.get_run(again.run_id).info.status == "FINISHED"

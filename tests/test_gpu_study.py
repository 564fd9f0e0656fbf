"""The paper's GPU study (benchmarks/configs/gpu_study.yaml) built on a CPU: the learning-rate
schedules it searches, `--data-root`, the config itself, and one tiny trial of it distilled
from the official DVMSR checkpoint (no teacher trained)."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from srstudy.cli import app
from srstudy.config import ConfigError, load_study_config, load_trial_config
from srstudy.trials.distill import run_trial
from srstudy.trials.loop import lr_at
from srstudy.trials.teacher import WEIGHTS, teacher_key
from tiny import TINY_TRIAL, with_overrides, write_yaml

GPU_STUDY = Path(__file__).resolve().parents[1] / "benchmarks" / "configs" / "gpu_study.yaml"
TINY_STUDY_TRIAL = [  # the study's trial made tiny: CPU, 4 iterations of batch 2, a 1-block student
    "trial.device=cpu", "trial.iterations=4", "trial.batch_size=2", "trial.patch_size=16",
    "trial.val_interval=4", "trial.checkpoint_interval=2", "trial.optim.warmup_iterations=1",
    "trial.student={embed_dim: 8, n_groups: 1, blocks_per_group: 1, rank: 2}",
    "trial.data.val_max_images=1", "trial.data.benchmark_sets=[Set5]",
    "trial.latency={height: 16, width: 16, repeats: 2, warmup: 0}",
    "trial.teacher.bank_patches=64",  # the study's bank of 16,384 teacher outputs, made tiny
]


# ---- the schedules ------------------------------------------------------------------------------
def test_step_schedule_is_the_paper_halving_and_ignores_the_warmup():
    for it in range(0, 30):
        today = 2e-4 * 0.5 ** sum(1 for m in [10, 20, 25] if it >= m)  # the formula before schedules existed
        assert lr_at(it, 2e-4, [10, 20, 25], 0.5) == today
        assert lr_at(it, 2e-4, [10, 20, 25], 0.5, schedule="step", warmup=5, total=30) == today


def test_cosine_schedule_warms_up_linearly_then_decays_to_zero():
    def cos(it):
        return lr_at(it, 1.0, [50], 0.5, schedule="cosine", warmup=4, total=104)

    assert [cos(i) for i in range(4)] == [0.25, 0.5, 0.75, 1.0]  # (i+1)/warmup
    assert cos(4) == 1.0  # the decay starts at the base rate
    assert cos(29) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.25)))
    assert cos(54) == pytest.approx(0.5)  # half-way through the decay
    assert cos(103) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.99)))
    assert cos(104) == pytest.approx(0.0, abs=1e-12)
    assert lr_at(0, 1.0, [], 0.5, schedule="cosine", total=10) == 1.0  # no warm-up
    with pytest.raises(ValueError, match="step or cosine"):
        lr_at(0, 1.0, [], 0.5, schedule="linear", total=10)


def test_schedule_settings_are_validated_with_the_field_named():
    assert load_trial_config(None, ["optim.schedule=cosine", "optim.warmup_iterations=5"]).optim.schedule == "cosine"
    with pytest.raises(ConfigError, match=r"optim\.schedule"):
        load_trial_config(None, ["optim.schedule=linear"])
    with pytest.raises(ConfigError, match=r"optim\.warmup_iterations"):
        load_trial_config(None, ["optim.warmup_iterations=-1"])
    with pytest.raises(ConfigError, match=r"optim\.warmup_iterations \(60\) must be below iterations \(60\)"):
        load_trial_config(None, ["iterations=60", "optim.schedule=cosine", "optim.warmup_iterations=60"])


def test_students_lr_and_schedule_do_not_change_the_teacher_key():
    base = load_trial_config(None)
    searched = load_trial_config(None, ["optim.lr=1e-3", "optim.schedule=cosine", "optim.warmup_iterations=3"])
    assert teacher_key(base, "data") == teacher_key(searched, "data")  # one shared teacher for the study
    assert teacher_key(base, "data") != teacher_key(load_trial_config(None, ["optim.gamma=0.25"]), "data")


def test_a_trial_trains_with_the_cosine_schedule_it_names(tmp_path):
    cfg = load_trial_config(write_yaml(tmp_path / "t.yaml", with_overrides(TINY_TRIAL, {
        "iterations": 5, "val_interval": 5, "teacher.iterations": 2,
        "optim": {"lr": 1e-3, "schedule": "cosine", "warmup_iterations": 2}})))
    result = run_trial(cfg, workdir=tmp_path / "runs")
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    logged = {h.step: h.value for h in client.get_metric_history(result.run_id, "lr")}
    # logged at step it: the rate iteration it−1 trained with
    assert logged == {it: pytest.approx(lr_at(it - 1, 1e-3, [], 0.5, schedule="cosine", warmup=2, total=5))
                      for it in range(1, 6)}
    assert logged[1] == pytest.approx(5e-4) and logged[2] == pytest.approx(1e-3) and logged[4] < logged[3]


# ---- --data-root ----------------------------------------------------------------------------------
def _layout(root: Path, *, bsd100: bool) -> Path:
    for rel in ("train/T91/HR", "train/BSD200/HR", "benchmarks/Set5/HR", "benchmarks/Set14/HR", "checkpoints"):
        (root / rel).mkdir(parents=True)
    if bsd100:
        (root / "benchmarks/BSD100/HR").mkdir(parents=True)
    (root / "checkpoints/DVMSR.pth").write_bytes(b"x")  # only its existence is validated here
    return root


def test_data_root_fills_the_data_and_a_relative_teacher_checkpoint(tmp_path):
    root = _layout(tmp_path / "data", bsd100=False)
    cfg = load_trial_config(None, [], data_root=root)
    assert cfg.data.train == [root / "train/T91/HR", root / "train/BSD200/HR"]
    assert cfg.data.val == [root / "benchmarks/Set5/HR"] and cfg.data.benchmark_root == root / "benchmarks"
    assert cfg.data.benchmark_sets == ["Set5", "Set14"]  # BSD100 only when present
    assert cfg.teacher.checkpoint is None  # unset stays unset: the teacher is trained and cached
    trial = write_yaml(tmp_path / "t.yaml", {"teacher": {"checkpoint": "checkpoints/DVMSR.pth"}})
    assert load_trial_config(trial, [], data_root=root).teacher.checkpoint == root / "checkpoints/DVMSR.pth"
    other = tmp_path / "elsewhere.pth"
    other.write_bytes(b"x")
    absolute = write_yaml(tmp_path / "a.yaml", {"teacher": {"checkpoint": str(other)}})
    assert load_trial_config(absolute, [], data_root=root).teacher.checkpoint == other
    # --set still wins over --data-root
    assert load_trial_config(None, ["data.benchmark_sets=[Set5]"], data_root=root).data.benchmark_sets == ["Set5"]
    with_bsd = _layout(tmp_path / "full", bsd100=True)
    assert load_trial_config(None, [], data_root=with_bsd).data.benchmark_sets == ["Set5", "Set14", "BSD100"]


def test_data_root_without_the_layout_names_the_missing_folder(tmp_path):
    root = tmp_path / "data"
    (root / "train/T91/HR").mkdir(parents=True)
    with pytest.raises(ConfigError, match=r"train/BSD200/HR not found; the data root should hold"):
        load_study_config(GPU_STUDY, [], data_root=root)
    with pytest.raises(ConfigError, match="no such folder"):
        load_trial_config(None, [], data_root=tmp_path / "absent")


def test_gpu_study_without_data_root_says_to_give_it():
    with pytest.raises(ConfigError, match=r"teacher checkpoint file not found: checkpoints/DVMSR\.pth .*--data-root"):
        load_study_config(GPU_STUDY)


def test_cli_data_root_errors_are_one_line(tmp_path):
    for command in ("launch", "trial"):
        args = [command, "--data-root", str(tmp_path / "absent"), "--workdir", str(tmp_path / "w")]
        res = CliRunner().invoke(app, args + (["--config", str(GPU_STUDY)] if command == "launch" else []))
        assert res.exit_code == 2, res.output
        assert "error:" in res.output and "no such folder" in res.output and "Traceback" not in res.output


# ---- the shipped config, on the shared data -------------------------------------------------------
@pytest.mark.data
def test_gpu_study_config_validates_on_the_shared_data(shared_data):
    study = load_study_config(GPU_STUDY, [], data_root=shared_data)
    trial = study.trial
    assert study.name == "paper-study" and study.num_samples == 22 and study.max_concurrent == 4 and trial.precision == "tf32"
    assert (study.resources.cpu, study.resources.gpu) == (3, 0.25)
    assert trial.teacher.checkpoint == (shared_data / "checkpoints" / "DVMSR.pth").resolve()
    assert trial.data.benchmark_sets == ["Set5", "Set14", "BSD100"]
    assert trial.data.val == [(shared_data / "benchmarks/Set5/HR").resolve()]
    assert [str(c) for c in study.constraints] == ["params<=150000"]
    assert study.asha.enabled and trial.val_interval * 2 <= study.asha.grace_period < trial.iterations
    assert set(study.search_space) == {"student.rank", "alpha", "student.embed_dim", "student.n_groups",
                                       "student.blocks_per_group", "optim.lr", "optim.schedule"}
    assert study.search_space["optim.lr"].log and study.search_space["optim.schedule"].choices == ["step", "cosine"]
    for key, spec in study.search_space.items():  # every end of every range is a trial this study can run
        for _, value in spec.extremes():
            assert study.trial_config({key: value}).model_dump(mode="json")  # raises if invalid
    assert trial.student.param_count() <= 150_000  # the base trial (the paper's student) is inside the constraint


@pytest.mark.data
def test_one_tiny_trial_of_the_gpu_study_distills_from_a_bank_of_the_dvmsr_checkpoint(tmp_path, shared_data):
    t91_only = f"trial.data.train=[{shared_data.resolve() / 'train/T91/HR'}]"  # fewer images to downscale
    study = load_study_config(GPU_STUDY, TINY_STUDY_TRIAL + [t91_only, f"workdir={tmp_path / 'study'}"],
                              data_root=shared_data)
    cfg = study.trial_config({"optim.schedule": "cosine", "optim.lr": 1e-3, "student.rank": 1, "alpha": 0.8})
    workdir = tmp_path / "runs"
    result = run_trial(cfg, workdir=workdir)
    client = MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}")
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["teacher_source"] == "checkpoint"
    assert run.data.params["teacher.checkpoint"] == str(shared_data.resolve() / "checkpoints" / "DVMSR.pth")
    assert result.metrics["teacher_params"] == 424_428 and run.data.tags["teacher_bank_patches"] == "64"
    assert not list(workdir.glob(f"**/{WEIGHTS}"))  # no teacher trained or cached
    assert 0 < result.metrics["Set5_psnr"] < 60 and 0 < result.metrics["val_psnr"] < 60
    logged = [h.value for h in sorted(client.get_metric_history(result.run_id, "lr"), key=lambda h: h.step)]
    assert logged == pytest.approx([lr_at(i, 1e-3, [], 0.5, schedule="cosine", warmup=1, total=4) for i in range(4)])


def test_study_state_carries_everything_but_finished_trials_checkpoints(tmp_path):
    """Between device sittings the study folder travels without the checkpoints of trials that
    finished with nothing left to do; running trials and ones with missing steps keep theirs,
    and the folder comes back at its recorded absolute path (Tune's experiment names it)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "study_state", Path(__file__).resolve().parents[1] / "benchmarks" / "gpu" / "study_state.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    ws = tmp_path / "study"
    for tid, record in (("done", {"missing_steps": []}), ("partial", {"missing_steps": ["latency_ms"]}),
                        ("running", None)):
        (ws / "trials" / tid).mkdir(parents=True)
        (ws / "trials" / tid / "checkpoint.pth").write_bytes(b"weights")
        if record is not None:
            (ws / "trials" / tid / "result.json").write_text(json.dumps(record))
    (ws / "study.json").write_text("{}")
    (ws / "mlflow.db").write_bytes(b"sqlite")
    (ws / "launch.lock").write_text("pid 1")
    (ws / "teachers" / "t1").mkdir(parents=True)
    for name in ("bank-abc.npy", "bank-abc.json", "teacher.pth"):
        (ws / "teachers" / "t1" / name).write_bytes(b"x")
    summary = mod.pack(ws, tmp_path / "out" / "state.tgz")
    assert summary["dropped_checkpoints"] == ["study/trials/done/checkpoint.pth"]
    assert sorted(summary["dropped_teacher_banks"]) == ["study/teachers/t1/bank-abc.json", "study/teachers/t1/bank-abc.npy"]
    shutil.rmtree(ws)
    assert mod.unpack(tmp_path / "out" / "state.tgz") == ws
    assert (ws / "mlflow.db").read_bytes() == b"sqlite" and not (ws / "launch.lock").exists()
    assert not (ws / "trials" / "done" / "checkpoint.pth").exists()
    assert (ws / "trials" / "done" / "result.json").exists()
    assert (ws / "trials" / "partial" / "checkpoint.pth").exists() and (ws / "trials" / "running" / "checkpoint.pth").exists()
    assert (ws / "teachers" / "t1" / "teacher.pth").exists() and not (ws / "teachers" / "t1" / "bank-abc.npy").exists()


# ---- the study's report (benchmarks/gpu_study_report.py) ------------------------------------------
REPORT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_study_report.py"
TINY_REPORT_STUDY = TINY_STUDY_TRIAL + [  # 6 tiny trials, 2 at a time on CPU; ASHA at iteration 2
    "trial.val_interval=2", "trial.data.benchmark_sets=[Set5,Set14]",
    "search_space={student.embed_dim: {type: categorical, choices: [8, 16]}, "
    "student.rank: {type: int, low: 1, high: 2}, alpha: {type: float, low: 0.0, high: 1.0}}",
    "constraints=['params <= 15540']",  # rejects the 16-dim rank-2 students (15,568 params): never trials
    "num_samples=6", "max_concurrent=2", "resources={cpu: 1, gpu: 0}", "seed=0",
    "asha={enabled: true, grace_period: 2, reduction_factor: 2}",
]
LAUNCHER_STATUS = {"done": "finished", "pruned": "pruned", "skipped": "skipped", "error": "failed"}


def _report_module(monkeypatch):
    import importlib.util

    monkeypatch.syspath_prepend(str(REPORT.parent))  # it imports paper_recipe_trial's bicubic numbers
    spec = importlib.util.spec_from_file_location("gpu_study_report", REPORT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_report_status_of_a_trial_follows_its_run_then_tunes_record(monkeypatch):
    status = _report_module(monkeypatch).trial_status
    assert status("FINISHED", False, "TERMINATED", {"final": True}) == "finished"
    assert status("KILLED", True, "TERMINATED", {"final": False}) == "pruned"  # tagged pruned=true by the launcher
    assert status("KILLED", False, "TERMINATED", {"final": False, "iteration": 1000}) == "pruned"  # not tagged yet
    assert status(None, False, "TERMINATED", {"final": True, "constraint_violated": True}) == "skipped"
    assert status("FAILED", False, "ERROR", {}) == "failed" and status(None, False, "ERROR", {}) == "failed"
    assert status("RUNNING", False, "RUNNING", {"iteration": 250}) == "unfinished"
    assert status("KILLED", False, "PAUSED", {}) == "unfinished"  # stopped at a sitting's deadline, resumes
    assert status(None, False, "PENDING", {}) == "unfinished"


def test_report_lists_the_trials_of_every_launch_whatever_the_files_clocks(tmp_path, monkeypatch):
    """A study resumed on another machine has one Tune experiment state per launch; the H200
    report of session 6 listed 19 of 22 trials because it read only the file with the newest
    mtime, and an archive unpacked there had given the first launch's file the newest one. Every
    file is read and each trial keeps its furthest record."""
    import os

    tune_trials = _report_module(monkeypatch).tune_trials

    def state(name: str, trials: list[tuple[str, int, str, int]], mtime: float) -> None:
        data = [[json.dumps({"trial_id": tid, "experiment_tag": f"{n}_alpha=0.5", "status": status, "config": {}}),
                 json.dumps({"last_result": {"iteration": it}})] for tid, n, status, it in trials]
        path = tmp_path / f"experiment_state-{name}.json"
        path.write_text(json.dumps({"trial_data": data}))
        os.utime(path, (mtime, mtime))

    state("2026-11-29_15-39-48", [("a", 1, "TERMINATED", 2500), ("b", 2, "PAUSED", 500)], mtime=2e9)  # 1st launch
    state("2026-11-29_20-41-51", [("a", 1, "TERMINATED", 2500), ("b", 2, "TERMINATED", 2000),
                                  ("c", 3, "TERMINATED", 0)], mtime=1e9)  # the resume, older by its mtime
    state("2026-11-29_09-00-00", [("b", 2, "RUNNING", 750)], mtime=3e9)  # a sitting whose clock ran behind
    trials = tune_trials(str(tmp_path), [])
    assert list(trials) == ["a", "b", "c"]
    assert trials["b"]["tune_status"] == "TERMINATED" and trials["b"]["last_result"]["iteration"] == 2000


@pytest.mark.data
def test_report_of_a_tiny_gpu_study_on_cpu(tmp_path, shared_data):
    """A real tiny study of the GPU study's config (Ray, Optuna, MLflow, the DVMSR teacher),
    then the report script on its folder: every trial has a row, the best student is the
    full-budget trial with the highest Set5 PSNR, its checkpoint loads and `srstudy eval` scores
    it as its run did, the front is `srstudy pareto`'s, nothing unmeasured is 0."""
    import subprocess
    import sys

    import optuna
    import torch

    from srstudy.launch import launch
    from srstudy.models.dvmsr import DVMSR, DVMSRConfig

    workdir = tmp_path / "study"
    t91_only = f"trial.data.train=[{shared_data.resolve() / 'train/T91/HR'}]"
    study = load_study_config(GPU_STUDY, TINY_REPORT_STUDY + [t91_only, f"workdir={workdir}"], data_root=shared_data)
    launched = launch(study)
    out, pth, png = tmp_path / "r" / "report.json", tmp_path / "r" / "best.pth", tmp_path / "r" / "front.png"
    proc = subprocess.run([sys.executable, str(REPORT), "--workdir", str(workdir), "--data-root", str(shared_data),
                           "--out", str(out), "--best-checkpoint", str(pth), "--front-png", str(png), "--device", "cpu"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    rows = report["trials"]

    # every trial Tune sampled has one row, with the launcher's own verdict
    launcher = {r["trial_id"]: LAUNCHER_STATUS[r["status"]] for r in launched.rows}
    assert {r["trial_id"]: r["status"] for r in rows} == launcher and len(rows) == study.num_samples
    assert "finished" in set(launcher.values()) and "skipped" not in set(launcher.values())
    c = report["counts"]
    assert (c["sampled"], c["skipped"], c["pruned"]) == (6, 0, sum(s == "pruned" for s in launcher.values()))
    assert c["trained"] == c["sampled"] and c["full_budget"] == c["finished"]
    # the 16-dim rank-2 proposals were rejected before they became trials: PRUNED in Optuna, not run
    ot = optuna.load_study(study_name=study.name, storage=f"sqlite:///{workdir / 'optuna.db'}").trials
    rejected = [t for t in ot if t.user_attrs.get("srstudy_proposal_rejected")]
    assert rejected and len(rejected) == launched.rejected_proposals and len(ot) == 6 + len(rejected)
    assert c["rejected_proposals"] == len(rejected)  # the report reads the study run's count
    assert {t.user_attrs["srstudy_constraint"] for t in rejected} == {"params<=15540 (params = 15568)"}
    for r in rows:
        assert set(r["config"]) == set(study.search_space)
        if r["status"] == "pruned":
            assert r["run_id"] and 0 < r["iterations"] < 4 and r["Set5_psnr"] is None
        if r["status"] == "finished":
            assert r["full_budget"] and r["iterations"] == 4 and r["Set5_psnr"] > 0 and r["latency_ms"] > 0
        # a value that was not measured is null, never 0 (no GPU here: no energy, no GPU memory)
        for key in ("params", "val_psnr", "val_ssim", "Set5_psnr", "Set5_ssim", "Set14_psnr", "BSD100_psnr",
                    "gpu_energy_j", "gpu_energy_per_iter_j", "gpu_energy_attributed_j", "latency_ms",
                    "gpu_peak_mem_allocated_mb"):
            assert r[key] is None or r[key] != 0, (key, r)
        assert r["gpu_energy_j"] is None and r["gpu_peak_mem_allocated_mb"] is None

    # the best student: the full-budget trial with the highest Set5 PSNR (params <= 150,000)
    best = report["best_student"]
    full = [r for r in rows if r["full_budget"]]
    assert best["run_id"] == max(full, key=lambda r: r["Set5_psnr"])["run_id"] and best["params"] <= 150_000
    assert best["BSD100_source"].startswith("evaluated by this report") and best["BSD100_psnr"] > 0
    assert best["deploy"]["max_abs_diff"] <= best["deploy"]["tolerance"]
    lat = best["deploy"]["latency_lr64_batch1"]
    assert lat["pytorch_ms"] > 0 and lat["onnxruntime_ms"] > 0 and lat["onnxruntime_provider"] == "CPUExecutionProvider"
    table = {row["model"]: row for row in report["comparison"]}
    assert table["best student (this study)"]["Set5"] == best["Set5_psnr"] and table["bicubic"]["Set5"] == 28.42
    assert table["MambaLiteSR student (paper)"]["Set14"] is None and table["FSRCNN (published)"]["BSD100"] == 26.98

    # the checkpoint: the network's state dict, loadable with weights_only=True, its config beside it
    saved = torch.load(pth, map_location="cpu", weights_only=True)
    net = DVMSR(DVMSRConfig.from_dict(json.loads(pth.with_suffix(".json").read_text())))
    net.load_state_dict(saved["state_dict"], strict=True)
    assert net.param_count() == best["params"]
    res = CliRunner().invoke(app, ["eval", "--checkpoint", str(pth), "--data-root", str(shared_data / "benchmarks"),
                                   "--sets", "Set5", "--device", "cpu", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout.strip().splitlines()[-1])["Set5"]["psnr"] == pytest.approx(best["Set5_psnr"], abs=1e-3)

    # the front and its knee are `srstudy pareto`'s
    res = CliRunner().invoke(app, ["pareto", "--workdir", str(workdir), "--json", "--no-tag"])
    assert res.exit_code == 0, res.output
    pareto = json.loads(res.stdout[res.stdout.index("["): res.stdout.rindex("]") + 1])
    assert [r["run_id"] for r in report["front"]] == [r["run_id"] for r in pareto]
    assert report["knee"]["run_id"] == next(r["run_id"] for r in pareto if r["knee"])
    knee_deploy = report["knee"]["deploy"]  # the knee is exported too (or is the best student)
    assert knee_deploy == {"same_as": "best_student"} if report["knee"]["run_id"] == best["run_id"] else (
        knee_deploy["max_abs_diff"] <= knee_deploy["tolerance"] and knee_deploy["latency_lr64_batch1"]["onnxruntime_ms"] > 0)
    assert png.stat().st_size > 10_000

    # --remeasure-latency: each full-budget student timed again here, the front ranked on those;
    # the study's runs keep the figures their trials measured
    again = tmp_path / "r" / "again.json"
    proc = subprocess.run([sys.executable, str(REPORT), "--workdir", str(workdir), "--out", str(again), "--device", "cpu",
                           "--no-export", "--remeasure-latency"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    redo = json.loads(again.read_text())
    alone = {r["run_id"]: r["latency_remeasured"] for r in redo["trials"] if r["full_budget"]}
    assert alone and all(m["latency_ms"] > 0 and m["latency_method"] == "eager" for m in alone.values())
    assert all(r.get("latency_remeasured") is None for r in redo["trials"] if not r["full_budget"])
    assert {r["run_id"]: r["latency_ms"] for r in redo["front"]} == {
        rid: alone[rid]["latency_ms"] for rid in (r["run_id"] for r in redo["front"])}
    assert any("timed again by this report" in n for n in redo["notices"])
    assert {r["run_id"]: r["latency_ms"] for r in redo["trials"]} == {r["run_id"]: r["latency_ms"] for r in rows}


# ---- the second study: students that start from DVMSR's weights ---------------------------------
GPU_STUDY_INHERIT = GPU_STUDY.with_name("gpu_study_inherit.yaml")


def test_inherit_study_config_validates_and_every_searched_shape_can_inherit(shared_data):
    from srstudy.models.inherit import inheritance_problem
    from srstudy.models.dvmsr import config_from_state_dict, extract_state_dict
    import torch

    study = load_study_config(GPU_STUDY_INHERIT, [], data_root=shared_data)
    trial = study.trial
    assert trial.student_init == "teacher" and trial.student.param_count() <= 150_000
    assert trial.teacher.checkpoint == (shared_data / "checkpoints" / "DVMSR.pth").resolve()
    assert [str(c) for c in study.constraints] == ["params<=150000"] and study.num_samples >= 16
    dvmsr = config_from_state_dict(extract_state_dict(torch.load(trial.teacher.checkpoint, weights_only=True))[0])
    fits = 0
    assert "student.n_groups" not in study.search_space and trial.student.n_groups == 1
    for g in (1,):
        for b in (1, 2):
            for lowrank in (False, True):
                for r in range(1, 9):
                    cfg = study.trial_config({"student.n_groups": g, "student.blocks_per_group": b,
                                              "student.lowrank_proj": lowrank, "student.rank": r})
                    assert inheritance_problem(cfg.student.to_model_config(cfg.scale), dvmsr) is None
                    fits += cfg.student.param_count() <= 150_000
    assert fits == 25  # as its header says: 25 of the 32 shapes are within the constraint
    # it starts from the 31.12 dB student of session 7 (1 x 2 blocks, Δ rank 1, full projections)
    first = study.trial_config(study.points_to_evaluate[0])
    assert first.student.param_count() == 149_928 and first.student_init == "teacher" and not first.student.lowrank_proj


@pytest.mark.data
def test_a_tiny_trial_of_the_inherit_study_starts_from_dvmsr(tmp_path, shared_data):
    t91_only = f"trial.data.train=[{shared_data.resolve() / 'train/T91/HR'}]"
    tiny = [o for o in TINY_STUDY_TRIAL if not o.startswith("trial.student=")]
    study = load_study_config(GPU_STUDY_INHERIT, tiny + [t91_only, "trial.iterations=2", "trial.val_interval=2",
                                                         f"workdir={tmp_path / 'study'}"], data_root=shared_data)
    cfg = study.trial_config({"optim.lr": 1e-12, "alpha": 0.0})  # the student as it starts
    result = run_trial(cfg, workdir=tmp_path / "runs")
    run = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}").get_run(result.run_id)
    assert run.data.tags["student_init"] == "teacher" and run.data.tags["student_init_groups"] == "0"
    assert run.data.tags["teacher_source"] == "checkpoint" and "teacher_bank" not in run.data.tags  # α = 0: no bank
    # DVMSR's group 0 at Δ rank 1 super-resolves before any training (29.5 dB on all of Set5); a random
    # 60-dim student of DVMSR's init does not come close
    assert result.metrics["val_psnr"] > 26

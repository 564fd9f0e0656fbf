"""`srstudy launch`: Ray Tune + Optuna multi-objective + ASHA on real local Ray, a real
Optuna RDB storage and a real sqlite MLflow store; kill -9 of the launcher and Ray, resume."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import psutil
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState

from srstudy.config import ConfigError, load_study_config
from srstudy.launch import StudyExistsError, launch
from srstudy.launch.search import PruneAwareOptunaSearch, ResumableConcurrencyLimiter, optuna_space
from tiny import tiny_study_config, write_yaml


def tiny_study(tmp_path: Path, **top) -> Path:
    return write_yaml(tmp_path / "study.yaml", tiny_study_config(tmp_path / "study", **top))


def trial_runs(workdir: Path, experiment: str = "tiny-study"):
    client = MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}")
    exp = client.get_experiment_by_name(experiment)
    return client, client.search_runs([exp.experiment_id], filter_string="tags.role = 'trial'", max_results=1000)


def optuna_trials(workdir: Path, name: str = "tiny"):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{workdir / 'optuna.db'}").get_trials(deepcopy=False)


def test_asha_multi_objective_study_keeps_pruned_trials_off_the_front(tmp_path):
    # params <= 7000 rejects the widest students' proposals before they become trials (analytic constraint)
    study = load_study_config(tiny_study(tmp_path, num_samples=6), ["constraints=['params <= 7000']"])
    res = launch(study)
    workdir = study.workdir.resolve()
    assert len(res.rows) == 6
    # energy cannot be measured on CPU: dropped from the search, never filled with 0
    assert [o.metric for o in res.objectives] == ["val_psnr", "params", "latency_ms"]
    client, runs = trial_runs(workdir)
    by_run = {r.info.run_id: r for r in runs}
    every = optuna_trials(workdir)  # the 6 trials' Optuna trials and the rejected proposals (PRUNED, never run)
    ot = {t.number: t for t in every if not t.user_attrs.get("srstudy_proposal_rejected")}
    assert len(ot) == 6
    complete = [t for t in ot.values() if t.state == TrialState.COMPLETE]
    assert len(complete) == sum(r["status"] == "done" for r in res.rows)
    for row in res.rows:
        if row["status"] == "done":
            run = by_run[row["mlflow_run_id"]]
            assert run.info.status == "FINISHED"
            final = [run.data.metrics["val_psnr"], run.data.metrics["params"], run.data.metrics["latency_ms"]]
            # the Optuna trial holding these values is a COMPLETE one: no truncated values
            assert any(t.values == pytest.approx(final) for t in complete)
            assert run.data.metrics["params"] <= 7000
        elif row["status"] == "pruned":
            run = by_run[row["mlflow_run_id"]]
            assert run.data.tags["pruned"] == "true" and run.info.status == "KILLED"
            assert row["iteration"] < 12
        else:
            pytest.fail(f"a trial that did not train: {row}")  # its proposal was rejected and sampled again
    # every non-complete Optuna trial is PRUNED with a reason, none COMPLETE with partial values
    for t in every:
        if t.state != TrialState.COMPLETE:
            assert t.state == TrialState.PRUNED and t.values is None
            assert t.user_attrs["srstudy_status"] in ("stopped_early", "constraint_violated")
    assert any(t.user_attrs.get("srstudy_status") == "constraint_violated" for t in every)
    # the front holds only finished trials and is non-dominated
    assert res.pareto and all(r["status"] == "done" for r in res.pareto)
    # one MLflow run per trial that trained, all children of the study's parent run
    parent = client.get_run(res.parent_run_id)
    assert parent.data.tags["role"] == "study" and parent.data.metrics["trials_done"] == len(complete)
    assert all(r.data.tags["mlflow.parentRunId"] == res.parent_run_id for r in runs)
    trained = [r for r in res.rows if r["status"] in ("done", "pruned")]
    assert len(runs) == len(trained)


def test_prune_aware_searcher_tells_stopped_trials_as_pruned(tmp_path):
    study = load_study_config(tiny_study(tmp_path))
    searcher = PruneAwareOptunaSearch(
        space=optuna_space(study), metric=["val_psnr", "params"], mode=["max", "min"],
        storage=optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'o.db'}"), study_name="s", seed=0)
    for tid in ("a", "b", "c"):
        assert searcher.suggest(tid)
    searcher.on_trial_complete("a", {"val_psnr": 20.0, "iteration": 4, "final": False})  # ASHA stopped it
    searcher.on_trial_complete("b", {"val_psnr": 25.0, "params": 900.0, "iteration": 12, "final": True})
    searcher.on_trial_complete("c", None, error=True)
    states = {t.number: (t.state, t.values) for t in optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'o.db'}").trials}
    assert states[0] == (TrialState.PRUNED, None)
    assert states[1] == (TrialState.COMPLETE, [25.0, 900.0])
    assert states[2][0] == TrialState.FAIL


def test_searcher_restored_without_a_trial_reattaches_its_optuna_trial(tmp_path):
    """A crash between Optuna's ask and Tune's experiment checkpoint: the restored searcher
    does not know the trial; its completion must still reach Optuna, without a duplicate."""
    study = load_study_config(tiny_study(tmp_path))
    url = f"sqlite:///{tmp_path / 'o.db'}"

    def searcher():
        return PruneAwareOptunaSearch(space=optuna_space(study), metric=["val_psnr", "params"], mode=["max", "min"],
                                      storage=optuna.storages.RDBStorage(url), study_name="s", seed=0)

    params = searcher().suggest("lost")  # asked, then the launcher died
    restored = ResumableConcurrencyLimiter(searcher(), max_concurrent=2)
    restored.on_trial_complete("lost", {"val_psnr": 21.0, "params": 800.0, "final": True, "config": params})
    trials = optuna.load_study(study_name="s", storage=url).trials
    assert [(t.state, t.values) for t in trials] == [(TrialState.COMPLETE, [21.0, 800.0])]
    # a trial whose Optuna twin vanished entirely is re-created from its config
    restored.on_trial_complete("other", {"val_psnr": 22.0, "params": 700.0, "final": True,
                                         "config": {**params, "alpha": 0.5}})
    trials = optuna.load_study(study_name="s", storage=url).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.COMPLETE]
    assert trials[1].params["alpha"] == 0.5


def test_a_trial_told_complete_before_a_crash_is_not_told_twice(tmp_path):
    """kill -9 after the searcher told a trial's result to Optuna but before Tune saved its
    state: the resume runs the trial again (it reads back its recorded result) with a searcher
    restored from before the tell. CI saw 5 COMPLETE Optuna trials for 4 trials; the result
    is told once."""
    study = load_study_config(tiny_study(tmp_path))
    url = f"sqlite:///{tmp_path / 'o.db'}"

    def searcher():
        return PruneAwareOptunaSearch(space=optuna_space(study), metric=["val_psnr", "params"], mode=["max", "min"],
                                      storage=optuna.storages.RDBStorage(url), study_name="s", seed=0)

    before = searcher()
    assert before.suggest("t1")
    before.save(str(tmp_path / "searcher.pkl"))  # Tune's saved state: t1 asked, not told
    result = {"val_psnr": 21.0, "params": 800.0, "final": True}
    before.on_trial_complete("t1", result)  # told, then the kill
    restored = searcher()
    restored.restore(str(tmp_path / "searcher.pkl"))
    ResumableConcurrencyLimiter(restored, max_concurrent=2).on_trial_complete("t1", result)
    trials = optuna.load_study(study_name="s", storage=url).trials
    assert [(t.state, t.values) for t in trials] == [(TrialState.COMPLETE, [21.0, 800.0])]


def test_existing_study_needs_resume_and_the_same_config(tmp_path):
    study = load_study_config(tiny_study(tmp_path))
    workdir = study.workdir.resolve()
    workdir.mkdir(parents=True)
    (workdir / "study.json").write_text(json.dumps({"name": "tiny", "identity": study.identity(),
                                                    "parent_run_id": "x", "experiment_path": "y"}))
    with pytest.raises(StudyExistsError, match="--resume"):
        launch(study)
    other = load_study_config(tiny_study(tmp_path), ["num_samples=9"])
    with pytest.raises(StudyExistsError, match="different configuration"):
        launch(other, resume=True)
    # a folder that stored its config names what changed (e.g. a data root that gained BSD100)
    (workdir / "study.json").write_text(json.dumps({"name": "tiny", "identity": study.identity(), "parent_run_id": "x",
                                                    "experiment_path": "y", "config": study.identity_payload()}))
    with pytest.raises(StudyExistsError, match=r"num_samples: 4 → 9") as err:
        launch(other, resume=True)
    assert "trial.student" not in str(err.value)  # only what differs


def test_study_run_created_before_a_kill_is_adopted_by_the_next_launch(tmp_path):
    """A launcher killed between creating the study's MLflow run and writing study.json left an
    open run; the next launch in that folder adopts it (one study run, not two). The launch
    stops right after (no node has the resource it asks for), which is all this needs."""
    from srstudy.tracking import TrialRun

    study = load_study_config(tiny_study(tmp_path), ["resources.custom={no_such_device: 1}"])
    workdir = study.workdir.resolve()
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    workdir.mkdir(parents=True)
    orphan = TrialRun.start(tracking_uri=uri, experiment=study.trial.experiment,
                            tags={"role": "study", "study": study.name, "study_dir": str(workdir)})
    elsewhere = TrialRun.start(tracking_uri=uri, experiment=study.trial.experiment,  # another folder's: not adopted
                               tags={"role": "study", "study": study.name, "study_dir": str(tmp_path / "other")})
    with pytest.raises(ValueError, match="no_such_device"):
        launch(study)
    assert json.loads((workdir / "study.json").read_text())["parent_run_id"] == orphan.run_id
    runs = MlflowClient(uri).search_runs([MlflowClient(uri).get_experiment_by_name(study.trial.experiment).experiment_id],
                                         filter_string="tags.role = 'study'")
    assert sorted(r.info.run_id for r in runs) == sorted([orphan.run_id, elsewhere.run_id])


def test_study_config_errors_name_the_field(tmp_path):
    with pytest.raises(ConfigError, match="search_space key 'student.rnk'"):
        load_study_config(tiny_study(tmp_path, search_space={"student.rnk": {"type": "int", "low": 1, "high": 2}}))
    with pytest.raises(ConfigError, match="low"):
        load_study_config(tiny_study(tmp_path), ["search_space={alpha: {type: float, low: 2, high: 1}}"])
    with pytest.raises(ConfigError, match="objectives"):
        load_study_config(tiny_study(tmp_path), ["objectives=[psnr]"])
    with pytest.raises(ConfigError, match="constraints"):
        load_study_config(tiny_study(tmp_path), ["constraints=['params is small']"])
    with pytest.raises(ConfigError, match="resources.gpu"):
        load_study_config(tiny_study(tmp_path), ["resources.gpu=-1"])
    default = load_study_config()
    assert default.trial.device == "cpu" and default.trial.data.train == "default"


def _descendants_and_self(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def _signal_all(processes: list[psutil.Process], sig: int) -> None:
    for p in processes:
        try:
            p.send_signal(sig)
        except psutil.NoSuchProcess:
            pass


def _finished(trial_dir: Path) -> bool:
    """Whether a trial has finished: its record lists no missing step (the record is written
    when training ends, before the steps after training run, and rewritten after each)."""
    try:
        return not json.loads((trial_dir / "result.json").read_text())["missing_steps"]
    except (OSError, ValueError, KeyError):
        return False


def test_kill_9_of_launcher_and_ray_then_resume_loses_nothing(tmp_path):
    # the constraint rejects the proposals of students wider than 4: rejected proposals live through the kill too
    cfg_path = tiny_study(tmp_path, num_samples=4, constraints=["params <= 3000"],
                          **{"trial.iterations": 60, "asha.enabled": False})
    study = load_study_config(cfg_path)
    workdir = study.workdir.resolve()
    cmd = [sys.executable, "-m", "srstudy.cli", "launch", "--config", str(cfg_path)]
    log = open(tmp_path / "first.log", "w")
    # Tune saves its experiment state every >= 10 s by default; every second here, so the trials
    # killed mid-way are in it (one started since is covered by the `forgotten` check below)
    env = {**os.environ, "TUNE_GLOBAL_CHECKPOINT_S": "1"}
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)

    def state():  # (finished trials, trials mid-way for over 1.5 s: a checkpoint, no result yet)
        trials = list((workdir / "trials").glob("*")) if (workdir / "trials").exists() else []
        return ([t for t in trials if _finished(t)],
                [t for t in trials if (t / "checkpoint.pth").exists() and not (t / "result.json").exists()
                 and time.time() - (t / "run.json").stat().st_mtime > 1.5])

    victims: list[psutil.Process] = []
    try:
        deadline = time.time() + 400
        while time.time() < deadline:
            done, midway = state()
            if done and midway:  # freeze everything, then check again: the kill lands on this state
                victims = _descendants_and_self(proc.pid)
                _signal_all(victims, signal.SIGSTOP)
                done, midway = state()
                if done and midway:
                    break
                _signal_all(victims, signal.SIGCONT)
                victims = []
            assert proc.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            time.sleep(0.2)
        else:
            pytest.fail("no finished + mid-way trial pair appeared")
        assert len(victims) > 3  # the launcher, Ray's GCS, raylet and trial workers
    finally:
        _signal_all(victims or (_descendants_and_self(proc.pid) if proc.poll() is None else []), signal.SIGKILL)
        proc.wait()
    time.sleep(1)
    assert not [p for p in victims if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert [t for t in midway if not (t / "result.json").exists()], "the mid-way trial finished before the kill"
    finished_before = {t.name: (t / "result.json").stat().st_mtime_ns for t in done}
    run_ids_before = {t.name: json.loads((t / "run.json").read_text())["run_id"]
                      for t in (workdir / "trials").glob("*") if (t / "run.json").exists()}

    # relaunch without --resume: a clear refusal; with --resume: it finishes
    again = subprocess.run(cmd, capture_output=True, text=True)
    assert again.returncode == 2 and "--resume" in again.stderr
    resumed = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert "Pareto-best" in resumed.stdout and "mlflow ui --backend-store-uri" in resumed.stdout

    summary = json.loads((workdir / "study_trials.json").read_text())
    assert len(summary["rows"]) == 4 and all(r["status"] == "done" for r in summary["rows"])
    for name, mtime in finished_before.items():  # finished trials were kept, not re-run
        assert (workdir / "trials" / name / "result.json").stat().st_mtime_ns == mtime
    client, runs = trial_runs(workdir)
    # a trial Tune had not saved before the kill is run again under another id: its first run is
    # closed as forgotten (KILLED), never left RUNNING
    forgotten = [r for r in runs if r.data.tags.get("forgotten") == "true"]
    assert all(r.info.status == "KILLED" for r in forgotten)
    runs = [r for r in runs if r not in forgotten]
    assert len(runs) == 4  # no duplicate MLflow run
    assert len({r.data.tags["trial_dir"] for r in runs}) == 4
    for name, run_id in run_ids_before.items():  # unfinished trials continued in their own runs
        assert json.loads((workdir / "trials" / name / "run.json").read_text())["run_id"] == run_id
    assert all(r.info.status == "FINISHED" for r in runs), [(r.info.run_id, r.info.status, r.data.tags.get("trial_dir")) for r in runs]
    assert any(r.data.tags.get("resumed_from") not in (None, "None") for r in runs)
    every_run = {r.data.tags["trial_dir"]: r for r in trial_runs(workdir)[1]}
    for t in midway:  # each trial killed mid-way resumed from its checkpoint, or was closed as forgotten
        r = every_run[str(t)]
        assert r.data.tags.get("resumed_from") not in (None, "None") or r.data.tags.get("forgotten") == "true"
    complete = [t for t in optuna_trials(workdir) if t.state == TrialState.COMPLETE]
    assert len(complete) == 4
    # rejected proposals stay PRUNED (never FAIL orphans, never re-attached to a trial)
    rejected = [t for t in optuna_trials(workdir) if t.user_attrs.get("srstudy_proposal_rejected")]
    assert rejected and all(t.state == TrialState.PRUNED and t.params["student.embed_dim"] > 4 for t in rejected)


def launch_then_ctrl_c_mid_way(cfg_path: Path, workdir: Path) -> tuple[list[str], str]:
    """`srstudy launch --config cfg_path` in a subprocess, SIGINT once a trial has a checkpoint
    but no result; checks the launcher exits 130 and returns (its command, its output)."""
    cmd = [sys.executable, "-m", "srstudy.cli", "launch", "--config", str(cfg_path)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    deadline = time.time() + 400
    while time.time() < deadline:
        trials = list((workdir / "trials").glob("*")) if (workdir / "trials").exists() else []
        if [t for t in trials if (t / "checkpoint.pth").exists() and not (t / "result.json").exists()]:
            break
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        time.sleep(0.2)
    else:
        pytest.fail("no trial got mid-way")
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 130, out[-4000:]
    return cmd, out


def test_ctrl_c_leaves_running_trials_interrupted_not_pruned_and_resume_finishes_them(tmp_path):
    """SIGINT to the launcher (Ctrl+C, or a device sitting's deadline): Tune saves the running
    trials as RUNNING and stops them without a scheduler decision. They are reported
    `interrupted` (not `pruned`), their MLflow runs stay RUNNING without `pruned=true`, the
    launcher exits 130 saying how to continue, and `--resume` finishes them in their own runs."""
    cfg_path = tiny_study(tmp_path, num_samples=2, max_concurrent=2, **{"trial.iterations": 40, "asha.enabled": False})
    workdir = load_study_config(cfg_path).workdir.resolve()
    cmd, out = launch_then_ctrl_c_mid_way(cfg_path, workdir)
    assert "study interrupted" in out and "--resume" in out and "pruned @" not in out
    rows = json.loads((workdir / "study_trials.json").read_text())["rows"]
    interrupted = [r for r in rows if r["status"] == "interrupted"]
    assert interrupted and not [r for r in rows if r["status"] == "pruned"]
    client, runs = trial_runs(workdir)
    open_runs = {r.info.run_id for r in runs if r.info.status == "RUNNING"}
    assert open_runs and not [r for r in runs if "pruned" in r.data.tags]  # mid-way runs stay open, unpruned
    # their Optuna trials stay RUNNING too (they were marked FAIL "orphaned_by_crash" before session 5)
    storage = optuna.storages.RDBStorage(f"sqlite:///{workdir / 'optuna.db'}")
    study_id = storage.get_study_id_from_name("tiny")
    running = storage.get_all_trials(study_id, states=(TrialState.RUNNING,))
    assert len(running) == len(interrupted), [t.state for t in storage.get_all_trials(study_id)]
    # a folder left by that older srstudy: resuming must still get the trials' results into Optuna
    for t in running:
        storage.set_trial_user_attr(t._trial_id, "srstudy_status", "orphaned_by_crash")
        storage.set_trial_state_values(t._trial_id, TrialState.FAIL)

    resumed = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    rows = json.loads((workdir / "study_trials.json").read_text())["rows"]
    assert len(rows) == 2 and all(r["status"] == "done" for r in rows)
    client, runs = trial_runs(workdir)
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)
    assert open_runs <= {r.info.run_id for r in runs}  # the interrupted trials continued in their own runs
    complete = storage.get_all_trials(study_id, states=(TrialState.COMPLETE,))
    assert len(complete) == 2, [(t.number, t.state, t.user_attrs) for t in storage.get_all_trials(study_id)]
    assert {t.user_attrs.get("srstudy_continues_trial") for t in complete} >= {t.number for t in running}


def test_resume_may_run_more_trials_at_once_also_in_a_folder_from_before_that_was_allowed(tmp_path):
    """A study started one trial at a time goes on with two at once (`--set max_concurrent=2`,
    e.g. resumed on a machine with more GPUs): `max_concurrent` is no part of its identity, the
    restored limiter takes this launch's value, and trials then overlap. The folder is rewritten
    as srstudy wrote it before (study.json without its config, the identity hashing
    max_concurrent): the resume reads the value it ran with from the study's MLflow run."""
    from srstudy.config import _payload_hash

    # trials long enough (~10 s here) to outlast the ~6 s a Ray worker takes to start one
    cfg_path = tiny_study(tmp_path, num_samples=4, max_concurrent=1, **{"trial.iterations": 200, "asha.enabled": False})
    study = load_study_config(cfg_path)
    workdir = study.workdir.resolve()
    cmd, out = launch_then_ctrl_c_mid_way(cfg_path, workdir)
    state = json.loads((workdir / "study.json").read_text())
    assert "max_concurrent" not in state["config"]
    legacy = {k: v for k, v in state.items() if k != "config"}
    legacy["identity"] = _payload_hash(study.identity_payload() | {"max_concurrent": 1})
    (workdir / "study.json").write_text(json.dumps(legacy))
    resumed_at = time.time() * 1000

    # a changed setting that is part of the study is still refused, naming nothing it cannot know
    refused = subprocess.run(cmd + ["--resume", "--set", "max_concurrent=2", "--set", "seed=4"], capture_output=True,
                             text=True, timeout=300)
    assert refused.returncode != 0 and "different configuration" in refused.stdout + refused.stderr
    resumed = subprocess.run(cmd + ["--resume", "--set", "max_concurrent=2"], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-4000:]
    assert "max_concurrent: 2 trials at once (the study ran 1)" in resumed.stdout + resumed.stderr
    study_run = MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}").get_run(state["parent_run_id"])
    assert study_run.data.tags["max_concurrent_resumed"] == "2" and study_run.data.params["study.max_concurrent"] == "1"
    rows = json.loads((workdir / "study_trials.json").read_text())["rows"]
    assert len(rows) == 4 and all(r["status"] == "done" for r in rows)
    _, runs = trial_runs(workdir)
    assert len(runs) == 4 and all(r.info.status == "FINISHED" for r in runs)
    spans = [(max(r.info.start_time, resumed_at), r.info.end_time) for r in runs]  # while the resumed launch ran
    overlapping = [(a, b) for i, a in enumerate(spans) for b in spans[i + 1:] if a[0] < b[1] and b[0] < a[1]]
    assert overlapping, spans  # with max_concurrent 1 they would have run one after the other


def test_a_folder_whose_stored_config_holds_max_concurrent_resumes_with_another():
    """study.json of srstudy before session 6: the stored config and the identity include
    max_concurrent. Another max_concurrent still matches; another seed does not; a stored config
    that is not what the identity hashed (edited by hand) does not either."""
    from srstudy.config import _payload_hash

    def study(**top):
        return load_study_config(None, [f"{k}={v}" for k, v in top.items()])

    old_payload = study().identity_payload() | {"max_concurrent": 4}
    state = {"name": "srstudy", "identity": _payload_hash(old_payload), "config": old_payload}
    assert study(max_concurrent=8).is_study_of(state) and study(max_concurrent=4).is_study_of(state)
    assert not study(max_concurrent=8, seed=1).is_study_of(state)
    assert not study().is_study_of({**state, "config": old_payload | {"num_samples": 99}})


def test_trial_outcome_is_one_rule_for_table_and_rows():
    from srstudy.launch.progress import trial_outcome

    assert trial_outcome({"final": True}, error=False, pruned=False) == "done"
    assert trial_outcome({"constraint_violated": True, "final": True}, error=False, pruned=False) == "skipped"
    assert trial_outcome({"iteration": 8}, error=False, pruned=True) == "pruned"
    assert trial_outcome({"iteration": 8}, error=False, pruned=False) == "interrupted"
    assert trial_outcome(None, error=True, pruned=False) == "error"


def test_resumed_study_uses_this_launchs_progress_not_the_pickled_one(tmp_path):
    """Tune restores the callbacks pickled by the launch that started a study. One pickled by an
    older srstudy (no `_pruned` cache) crashed a resumed H200 study in `was_pruned`; now the
    pickle becomes this launch's progress (its tracking URI too), or, outside a restore, a
    fresh one built from the pickled settings."""
    import pickle

    from rich.console import Console

    from srstudy.launch.progress import StudyProgress, restoring_as

    study = load_study_config(write_yaml(tmp_path / "s.yaml", tiny_study_config(tmp_path / "w")))
    old = StudyProgress(study, ["psnr"], "sqlite:///old/mlflow.db", Console())
    del old.__dict__["_pruned"]  # as pickled by the srstudy that started the study
    blob = pickle.dumps(old)

    now = StudyProgress(study, ["psnr"], "sqlite:///new/mlflow.db", Console())
    with restoring_as(now):
        restored = pickle.loads(blob)
    assert restored.tracking_uri == "sqlite:///new/mlflow.db" and restored.console is now.console

    class T:  # the two attributes `was_pruned` reads of a Tune trial
        trial_id, last_result = "t1", {}
    fresh = pickle.loads(blob)  # outside a restore: rebuilt from the pickled settings
    assert fresh.tracking_uri == "sqlite:///old/mlflow.db" and fresh.was_pruned(T()) is False

    # and a table that cannot be drawn is logged, never raised into Tune (which would end the study)
    class Broken:
        trial_id, status, last_result, config = "t2", "TERMINATED", {"iteration": 3}, {}
    fresh.was_pruned = lambda trial: 1 / 0
    fresh.on_trial_result(0, [Broken()], Broken(), {})
    fresh.on_experiment_end([Broken()])


def test_forgotten_trial_runs_of_a_finished_study_are_closed_not_left_running(tmp_path):
    """A trial Tune had not saved before the launcher was killed is sampled again under another
    id on --resume; its first run is ended KILLED with forgotten=true (only this study's)."""
    from srstudy.launch.progress import close_forgotten_runs
    from srstudy.tracking import TrialRun

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    study = TrialRun.start(tracking_uri=uri, experiment="e", tags={"role": "study"})
    lost = TrialRun.start(tracking_uri=uri, experiment="e", parent_run_id=study.run_id, tags={"role": "trial"})
    done = TrialRun.start(tracking_uri=uri, experiment="e", parent_run_id=study.run_id, tags={"role": "trial"})
    done.finish("FINISHED")
    other = TrialRun.start(tracking_uri=uri, experiment="e", parent_run_id="another-study", tags={"role": "trial"})
    assert close_forgotten_runs(uri, "e", study.run_id) == [lost.run_id]
    client = MlflowClient(uri)
    assert client.get_run(lost.run_id).info.status == "KILLED" and lost.data().tags["forgotten"] == "true"
    assert client.get_run(done.run_id).info.status == "FINISHED"
    assert client.get_run(other.run_id).info.status == "RUNNING"
    assert close_forgotten_runs(uri, "no-such-experiment", study.run_id) == []

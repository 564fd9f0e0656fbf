"""Analytic constraints (params, FLOPs) screen the searcher's proposals: a proposal that breaks
one is told to Optuna as PRUNED and never becomes a Tune trial, so `num_samples` counts trials
that train; a space where no point is feasible still ends (skipped trials, a warning); a
crash and a restore do not misread the rejected proposals. Real Ray, real Optuna storage, real
MLflow (sqlite)."""
from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import optuna
from mlflow import MlflowClient
from optuna.trial import TrialState

from srstudy.config import StudyConfig, load_study_config
from srstudy.launch import launch
from srstudy.launch.search import (MAX_REJECTED_PROPOSALS, REJECTED_ATTR, PruneAwareOptunaSearch,
                                   ResumableConcurrencyLimiter, optuna_space, reconcile_optuna, rejected_proposals,
                                   screen_restored)
from srstudy.launch.trainable import analytic_check
from tiny import tiny_study_config, write_yaml

# the tiny study's students: embed_dim 4 has 2,760-2,792 params, 8 has 6,240-6,304, 12 has 10,488-10,584
ONLY_THE_NARROWEST = "params <= 3000"  # 2 of the 3 widths (and 6 of the 9 shapes) break it


def tiny_study(tmp_path: Path, **top) -> Path:
    return write_yaml(tmp_path / "study.yaml", tiny_study_config(tmp_path / "study", **top))


def optuna_trials(workdir: Path, name: str = "tiny"):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{workdir / 'optuna.db'}").get_trials(deepcopy=False)


def test_proposals_that_break_an_analytic_constraint_are_sampled_again_not_run(tmp_path):
    """On a space that is mostly infeasible, every Tune trial trains: no trial is skipped,
    `num_samples` trials have MLflow runs, and the rejected proposals are PRUNED Optuna trials
    with the constraint they broke (before, such proposals were skipped trials)."""
    study = load_study_config(tiny_study(tmp_path, num_samples=4), [f"constraints=['{ONLY_THE_NARROWEST}']"])
    res = launch(study)
    workdir = study.workdir.resolve()
    assert len(res.rows) == study.num_samples
    assert {r["status"] for r in res.rows} <= {"done", "pruned"}, [r["status"] for r in res.rows]
    assert all(r["student.embed_dim"] == 4 for r in res.rows)

    client = MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}")
    exp = client.get_experiment_by_name("tiny-study")
    runs = client.search_runs([exp.experiment_id], filter_string="tags.role = 'trial'")
    assert sorted(r.info.run_id for r in runs) == sorted(r["mlflow_run_id"] for r in res.rows)

    trials = optuna_trials(workdir)
    rejected = [t for t in trials if t.user_attrs.get(REJECTED_ATTR)]
    ran = [t for t in trials if not t.user_attrs.get(REJECTED_ATTR)]
    assert len(ran) == study.num_samples and rejected
    for t in rejected:
        params = analytic_check(study, study.trial_config(t.params))[0]["params"]
        assert t.state == TrialState.PRUNED and t.values is None and params > 3000
        assert t.user_attrs["srstudy_status"] == "constraint_violated"
        assert t.user_attrs["srstudy_constraint"] == f"params<=3000 (params = {params})"
    assert all(t.user_attrs.get("srstudy_status") != "constraint_violated" for t in ran)
    # counted for the summary and on the study's run
    assert res.rejected_proposals == len(rejected) == rejected_proposals(f"sqlite:///{workdir / 'optuna.db'}", "tiny")
    assert client.get_run(res.parent_run_id).data.metrics["proposals_rejected"] == len(rejected)


def test_a_space_with_no_feasible_point_ends_with_skipped_trials_and_a_warning(tmp_path):
    """No student of the space meets the constraint: each suggestion rejects its cap of
    proposals, then lets the next one through; that trial is skipped before training as
    before, the study ends, and the launcher warns naming the constraint."""
    cfg = tiny_study(tmp_path, num_samples=2, max_concurrent=2, constraints=["params <= 1000"])
    proc = subprocess.run([sys.executable, "-m", "srstudy.cli", "launch", "--config", str(cfg)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    warnings = [ln for ln in proc.stderr.splitlines() if ln.startswith("WARNING srstudy.launch")]
    assert len(warnings) == 2, proc.stderr[-4000:]
    assert all(f"{MAX_REJECTED_PROPOSALS} points in a row that break params<=1000" in w for w in warnings)
    assert "'skipped': 2" in proc.stdout, proc.stdout[-3000:]
    assert f"{2 * MAX_REJECTED_PROPOSALS} proposal(s) broke params<=1000 and were not run" in proc.stdout

    workdir = tmp_path / "study"
    trials = optuna_trials(workdir)
    assert len(trials) == 2 * MAX_REJECTED_PROPOSALS + 2 and all(t.state == TrialState.PRUNED for t in trials)
    skipped = [t for t in trials if not t.user_attrs.get(REJECTED_ATTR)]  # the trials Tune ran (and skipped)
    assert [t.user_attrs["srstudy_status"] for t in skipped] == ["constraint_violated"] * 2
    client = MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}")
    exp = client.get_experiment_by_name("tiny-study")
    assert client.search_runs([exp.experiment_id], filter_string="tags.role = 'trial'") == []


def _searcher(study: StudyConfig, url: str) -> PruneAwareOptunaSearch:
    return PruneAwareOptunaSearch(space=optuna_space(study), metric=["val_psnr", "params"], mode=["max", "min"],
                                  storage=optuna.storages.RDBStorage(url), study_name="s",
                                  sampler=optuna.samplers.TPESampler(seed=0, multivariate=True))


def test_rejected_proposals_survive_a_crash_and_a_restore(tmp_path):
    """Tune saves the searcher (without the study config it screens with), more proposals are
    rejected, a trial is told, then the launcher dies; the restored searcher screens again
    (set by the launch), does not tell the trial twice, and the reconciliation after the study
    fails only the trial a lost searcher state asked for, never a rejected proposal."""
    study = load_study_config(tiny_study(tmp_path), [f"constraints=['{ONLY_THE_NARROWEST}']"])
    url = f"sqlite:///{tmp_path / 'o.db'}"
    before = _searcher(study, url)
    before.screen_proposals(study)
    for tid in ("t1", "t2"):
        assert before.suggest(tid)["student.embed_dim"] == 4
    before.save(str(tmp_path / "searcher.pkl"))  # Tune's saved state: t1, t2 asked
    assert before.suggest("t3")["student.embed_dim"] == 4  # asked after the save: lost in the crash
    result = {"val_psnr": 21.0, "params": 2776.0, "final": True}
    before.on_trial_complete("t1", result)  # told, then the kill
    rejected_before = rejected_proposals(url, "s")
    assert rejected_before > 0

    with open(tmp_path / "searcher.pkl", "rb") as f:
        assert not [v for v in pickle.load(f).values() if isinstance(v, StudyConfig)]  # no study config saved
    restored = _searcher(study, url)
    restored.restore(str(tmp_path / "searcher.pkl"))
    limiter = ResumableConcurrencyLimiter(restored, max_concurrent=4)
    screen_restored(limiter, study)
    limiter.on_trial_complete("t1", result)  # Tune ran t1 again: it read back its result
    limiter.on_trial_complete("t2", {"val_psnr": 20.0, "params": 2760.0, "final": True})
    assert restored.suggest("t4")["student.embed_dim"] == 4
    limiter.on_trial_complete("t4", {"val_psnr": 19.0, "params": 2792.0, "iteration": 4, "final": False})

    assert reconcile_optuna(url, "s") == 1  # t3's Optuna trial: no Tune trial owns it
    trials = optuna.load_study(study_name="s", storage=url).trials
    ran = [t for t in trials if not t.user_attrs.get(REJECTED_ATTR)]
    assert [(t.state, t.user_attrs.get("srstudy_status")) for t in ran] == [
        (TrialState.COMPLETE, None), (TrialState.COMPLETE, None), (TrialState.FAIL, "orphaned_by_crash"),
        (TrialState.PRUNED, "stopped_early")]
    assert rejected_proposals(url, "s") >= rejected_before
    assert all(t.state == TrialState.PRUNED for t in trials if t.user_attrs.get(REJECTED_ATTR))


def test_a_rejection_cut_off_before_its_tell_is_pruned_by_the_reconciliation(tmp_path):
    """A crash between writing a rejected proposal's user attrs and telling it PRUNED leaves it
    RUNNING: after the study it becomes PRUNED (what it was), not a FAIL orphan, and no Tune
    trial re-attaches to it."""
    study = load_study_config(tiny_study(tmp_path))
    url = f"sqlite:///{tmp_path / 'o.db'}"
    ot = _searcher(study, url)
    ot_study = optuna.load_study(study_name="s", storage=url)
    cut = ot_study.ask(fixed_distributions=optuna_space(study))
    cut.set_user_attr(REJECTED_ATTR, True)  # the searcher's rejection, cut off before its tell
    restored = ResumableConcurrencyLimiter(ot, max_concurrent=2)
    restored.on_trial_complete("lost", {"val_psnr": 21.0, "params": 800.0, "final": True, "config": cut.params})
    assert reconcile_optuna(url, "s") == 0
    trials = optuna.load_study(study_name="s", storage=url).trials
    assert [(t.number, t.state) for t in trials] == [(0, TrialState.PRUNED), (1, TrialState.COMPLETE)]

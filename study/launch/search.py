"""The Optuna side of a study: the search space as Optuna distributions, the searcher that
rejects proposals breaking an analytic constraint before they become trials and tells
early-stopped or skipped trials as PRUNED, the concurrency limiter that survives a restore,
and the reconciliation of Optuna's storage after a crash.

Tune's searcher internals are reached only through `srstudy.ray_api` (`optuna_study_of`,
`tell_ended`, …); this module touches no private attribute of a Ray object.
"""
from __future__ import annotations

import logging
import math
from typing import Any

from .. import ray_api
from ..config import ConfigError, StudyConfig
from ..objectives import ANALYTIC_METRICS, Objective
from .trainable import analytic_check

log = logging.getLogger("srstudy.launch")

# Per suggestion, at most this many proposals that break an analytic constraint are rejected
# (told PRUNED, sampled again); the next one becomes a trial whatever it is (skipped before
# training, as before the searcher screened), so a space with no feasible point cannot hang a study.
MAX_REJECTED_PROPOSALS = 200
REJECTED_ATTR = "srstudy_proposal_rejected"  # user attr of a rejected proposal's Optuna trial (no Tune trial)


def optuna_space(study: StudyConfig) -> dict[str, Any]:
    """The search space as Optuna distributions, keyed by trial-setting path."""
    import optuna.distributions as d

    space = {}
    for key, p in study.search_space.items():
        if p.type == "categorical":
            space[key] = d.CategoricalDistribution(p.choices)
        elif p.type == "int":
            space[key] = d.IntDistribution(int(p.low), int(p.high), step=int(p.step or 1), log=p.log)
        else:
            space[key] = d.FloatDistribution(p.low, p.high, step=p.step, log=p.log)
    return space


class PruneAwareOptunaSearch(ray_api.OptunaSearch):
    """OptunaSearch that rejects proposals breaking an analytic constraint and tells
    early-stopped or skipped trials as PRUNED.

    Stock OptunaSearch tells Optuna a trial stopped by ASHA as COMPLETE with its last,
    truncated values (or fails to tell it at all when the other objectives are missing).
    Here only a result carrying `final=True` and every objective completes an Optuna trial.

    With `screen_proposals(study)`, a proposal whose student breaks one of the study's
    analytic constraints (params, FLOPs) is told PRUNED at once (user attrs `srstudy_status`,
    `srstudy_constraint`, `srstudy_proposal_rejected`) and the sampler is asked again: no Tune
    trial is spent on it, so `num_samples` counts trials that can train.
    """

    _screen: StudyConfig | None = None  # the study whose analytic constraints proposals must meet

    def screen_proposals(self, study: StudyConfig) -> None:
        """Reject proposals that break `study`'s analytic constraints from now on (none to check:
        no screening). Not saved with the searcher's state: each launch (a `--resume` too) sets
        it from its own config."""
        self._screen = study if any(c.metric in ANALYTIC_METRICS for c in study.constraints) else None

    def save(self, checkpoint_path: str) -> None:
        """Tune's save of the searcher's state, without the study config it screens with."""
        screen = self.__dict__.pop("_screen", None)
        try:
            super().save(checkpoint_path)
        finally:
            if screen is not None:
                self._screen = screen

    def __getstate__(self) -> dict:  # Tune pickles the searcher into the Tuner's state, too
        return {k: v for k, v in self.__dict__.items() if k != "_screen"}

    def suggest(self, trial_id: str) -> dict | None:
        """The parameters of a new trial: Optuna's next proposal that meets every analytic
        constraint; after `MAX_REJECTED_PROPOSALS` rejections in a row, the next proposal as it is."""
        if self._screen is not None and ray_api.optuna_trial_of(self, trial_id) is None:
            ray_api.attach_optuna_trial(self, trial_id, self._feasible_proposal(trial_id))
        return super().suggest(trial_id)

    def _feasible_proposal(self, trial_id: str):
        """Ask Optuna until a proposal meets the analytic constraints; tell each one that breaks
        one as PRUNED (no Tune trial maps to it). Returns the asked `optuna.Trial` to run."""
        from optuna.trial import TrialState

        study = ray_api.optuna_study_of(self)
        rejected, broke = 0, set()  # how many proposals were rejected; the constraints they broke
        last = ""
        while True:
            ot_trial = study.ask(fixed_distributions=ray_api.searched_space(self))
            broken = self._broken_constraints(ot_trial.params)
            if not broken:
                break
            if rejected >= MAX_REJECTED_PROPOSALS:
                log.warning("trial %s: the sampler proposed %d points in a row that break %s; this one runs and is "
                            "skipped before training. Widen the constraint or narrow the search space so that it "
                            "holds somewhere", trial_id, rejected, ", ".join(sorted(broke)))
                return ot_trial
            last = "; ".join(broken.values())
            ot_trial.set_user_attr("srstudy_status", "constraint_violated")
            ot_trial.set_user_attr("srstudy_constraint", last)
            ot_trial.set_user_attr(REJECTED_ATTR, True)
            study.tell(ot_trial, state=TrialState.PRUNED)
            log.debug("proposal #%d %s breaks %s: not run, told PRUNED", ot_trial.number, ot_trial.params, last)
            rejected += 1
            broke.update(broken)
        if rejected:
            log.info("trial %s: %d proposal(s) broke %s and were not run (told PRUNED; last: %s); sampled again",
                     trial_id, rejected, ", ".join(sorted(broke)), last)
        return ot_trial

    def _broken_constraints(self, params: dict[str, Any]) -> dict[str, str]:
        """The analytic constraints the proposal breaks, `{"params<=150000": "params<=150000
        (params = 151234)"}`; none for a proposal whose trial config is invalid (its trial fails
        with that error, as it would have unscreened)."""
        try:
            cfg = self._screen.trial_config(params)
        except ConfigError:
            return {}
        analytic, broken = analytic_check(self._screen, cfg)
        return {str(c): f"{c} ({c.metric} = {analytic[c.metric]:g})" for c in broken}

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        """Tell Optuna how the trial ended: COMPLETE with its values only when it finished with
        every objective, else PRUNED (stopped early, constraint) or FAIL (error)."""
        if ray_api.is_told(self, trial_id):
            return super().on_trial_complete(trial_id, result, error)
        if ray_api.optuna_trial_of(self, trial_id) is None and not self._recover(trial_id, result):
            log.warning("trial %s completed but its Optuna trial is unknown and has no config to rebuild it", trial_id)
            return
        if self._told_before_a_crash(trial_id):
            return
        self._reopen_if_finished(trial_id)
        from optuna.trial import TrialState

        ot_trial = ray_api.optuna_trial_of(self, trial_id)
        metrics = self.metric if isinstance(self.metric, list) else [self.metric]
        values = [None if not result else result.get(m) for m in metrics]
        complete = (not error and result and result.get("final")
                    and all(v is not None and math.isfinite(float(v)) for v in values))
        if complete:
            return super().on_trial_complete(trial_id, result, error)
        reason = "error" if error else (
            "constraint_violated" if result and result.get("constraint_violated") else "stopped_early")
        ot_trial.set_user_attr("srstudy_status", reason)
        if reason == "constraint_violated" and result.get("constraint"):
            ot_trial.set_user_attr("srstudy_constraint", result["constraint"])
        ray_api.tell_ended(self, trial_id, TrialState.FAIL if error else TrialState.PRUNED)

    def _frozen(self, trial_id: str):
        """The trial's Optuna trial as the storage holds it now."""
        number = ray_api.optuna_trial_of(self, trial_id).number
        return next(t for t in ray_api.optuna_study_of(self).get_trials(deepcopy=False) if t.number == number)

    def _told_before_a_crash(self, trial_id: str) -> bool:
        """Whether the trial's Optuna trial is already COMPLETE: its final result reached Optuna
        just before a crash, Tune's saved state (older) ran the trial again on `--resume`, and the
        trial only read back its recorded result. Telling it again would add a second observation
        of one trial (CI: 5 COMPLETE Optuna trials for 4 trials after kill -9 + resume)."""
        from optuna.trial import TrialState

        frozen = self._frozen(trial_id)
        if frozen.state != TrialState.COMPLETE:
            return False
        ray_api.mark_told(self, trial_id)
        log.info("trial %s: its Optuna trial #%d was told COMPLETE before a restart; not told again", trial_id,
                 frozen.number)
        return True

    def _reopen_if_finished(self, trial_id: str) -> None:
        """An Optuna trial that is already finished cannot be told again, and this trial's result
        would be lost: srstudy before session 5 marked the Optuna trials of trials interrupted by
        Ctrl+C as FAIL (`orphaned_by_crash`) although `--resume` continues them. Ask a new Optuna
        trial with the same parameters for it (user attr `srstudy_continues_trial`: the old number)."""
        study = ray_api.optuna_study_of(self)
        frozen = self._frozen(trial_id)
        if not frozen.state.is_finished():
            return
        study.enqueue_trial(frozen.params, user_attrs={"srstudy_continues_trial": frozen.number})
        ray_api.attach_optuna_trial(self, trial_id, study.ask(fixed_distributions=ray_api.searched_space(self)))
        log.info("trial %s: its Optuna trial #%d was already %s; its result goes to a new one with the same "
                 "parameters", trial_id, frozen.number, frozen.state.name)

    def _recover(self, trial_id: str, result: dict | None) -> bool:
        """Re-attach a Tune trial whose Optuna trial the restored searcher state no longer
        knows (a crash between Optuna's `ask` and Tune's experiment checkpoint): reuse the
        RUNNING Optuna trial with the same parameters, else ask one with those parameters."""
        import optuna
        from optuna.trial import TrialState

        params = (result or {}).get("config")
        if not isinstance(params, dict):
            return False
        space = ray_api.searched_space(self)
        study = ray_api.optuna_study_of(self)
        params = {k: params[k] for k in space if k in params}
        claimed = {t._trial_id for t in ray_api.optuna_trials_of(self)}
        for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if frozen._trial_id not in claimed and frozen.params == params and REJECTED_ATTR not in frozen.user_attrs:
                ray_api.attach_optuna_trial(self, trial_id, optuna.Trial(study, frozen._trial_id))
                log.info("re-attached trial %s to Optuna trial #%d after a restore", trial_id, frozen.number)
                return True
        study.enqueue_trial(params)
        ray_api.attach_optuna_trial(self, trial_id, study.ask(fixed_distributions=space))
        log.info("re-created Optuna trial for %s after a restore", trial_id)
        return True


class ResumableConcurrencyLimiter(ray_api.ConcurrencyLimiter):
    """ConcurrencyLimiter that still forwards the completion of a trial it lost track of in a
    crash (Tune restores it, the limiter's restored state never saw it) — the stock one drops
    it, and the Optuna study would never learn the trial's result."""

    def set_state(self, state: dict) -> None:
        """Tune's restore of the saved limiter (its live trials), keeping this launch's
        `max_concurrent`: a resumed study may run more (or fewer) trials at once than it did."""
        keep = self.max_concurrent
        super().set_state(state)
        self.max_concurrent = keep

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        """Forward the completion to the searcher, also for a trial the limiter lost track of."""
        if ray_api.limiter_lost_track_of(self, trial_id):
            return self.searcher.on_trial_complete(trial_id, result=result, error=error)
        return super().on_trial_complete(trial_id, result=result, error=error)


def study_searcher(study: StudyConfig, objectives: list[Objective], storage_url: str) -> ResumableConcurrencyLimiter:
    """The searcher of a new study: multi-objective TPE over `objectives` (seeded), its Optuna
    study in `storage_url`, at most `max_concurrent` trials at once, proposals screened against
    the study's analytic constraints."""
    import optuna

    searcher = PruneAwareOptunaSearch(
        space=optuna_space(study), metric=[o.metric for o in objectives], mode=[o.direction for o in objectives],
        storage=optuna.storages.RDBStorage(storage_url), study_name=study.name,
        sampler=optuna.samplers.TPESampler(seed=study.seed, multivariate=True),
    )
    searcher.screen_proposals(study)
    enqueue_points(ray_api.optuna_study_of(searcher), study.points_to_evaluate)
    return ResumableConcurrencyLimiter(searcher, max_concurrent=study.max_concurrent)


def enqueue_points(optuna_study, points: list[dict[str, Any]]) -> int:
    """Queue the study's `points_to_evaluate` in its Optuna study, so the first proposals are
    these settings (in order; keys a point leaves out are sampled). A point a trial of the study
    already holds, in any state, is not queued again (a launch that crashed before Tune saved
    its state starts a new searcher on the same Optuna study). Returns how many were queued."""
    before = len(optuna_study.get_trials(deepcopy=False))
    for i, point in enumerate(points):
        optuna_study.enqueue_trial(point, user_attrs={"srstudy_point_to_evaluate": i}, skip_if_exists=True)
    queued = len(optuna_study.get_trials(deepcopy=False)) - before
    if points:
        log.info("points_to_evaluate: %d of %d queued (the others were tried before)", queued, len(points))
    return queued


def screen_restored(limiter: ResumableConcurrencyLimiter, study: StudyConfig) -> None:
    """Make a restored study's searcher reject proposals that break `study`'s analytic
    constraints (its saved state does not carry the config; a study begun before srstudy
    screened proposals screens from its resume on)."""
    if isinstance(limiter.searcher, PruneAwareOptunaSearch):
        limiter.searcher.screen_proposals(study)


def reconcile_optuna(storage_url: str, name: str) -> int:
    """After Tune has finished every trial, Optuna trials still RUNNING were asked for by a
    searcher state lost in a crash (no Tune trial owns them): mark them FAIL; returns how many.
    A rejected proposal whose PRUNED the crash cut off (its user attrs written, the tell not)
    becomes PRUNED, as it would have. Not after an interrupted study: its interrupted trials'
    Optuna trials are RUNNING on purpose (`--resume` continues them)."""
    import optuna
    from optuna.trial import TrialState

    st = optuna.storages.RDBStorage(storage_url)
    study_id = st.get_study_id_from_name(name)
    n = 0
    for t in st.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
        if REJECTED_ATTR in t.user_attrs:
            st.set_trial_state_values(t._trial_id, TrialState.PRUNED)
            continue
        st.set_trial_user_attr(t._trial_id, "srstudy_status", "orphaned_by_crash")
        st.set_trial_state_values(t._trial_id, TrialState.FAIL)
        n += 1
    return n


def rejected_proposals(storage_url: str, name: str) -> int:
    """How many proposals of the study (all its launches) the searcher rejected because they broke
    an analytic constraint: PRUNED Optuna trials that no Tune trial ran."""
    import optuna
    from optuna.trial import TrialState

    st = optuna.storages.RDBStorage(storage_url)
    pruned = st.get_all_trials(st.get_study_id_from_name(name), deepcopy=False, states=(TrialState.PRUNED,))
    return sum(bool(t.user_attrs.get(REJECTED_ATTR)) for t in pruned)


def name_objectives(storage_url: str, name: str, metrics: list[str]) -> None:
    """Name the Optuna study's objectives after their metrics, so Optuna Dashboard shows
    `val_psnr`, `params`, … instead of "Objective 0", "Objective 1", …"""
    import warnings

    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # set_metric_names: experimental
        optuna.load_study(study_name=name, storage=storage_url).set_metric_names(metrics)

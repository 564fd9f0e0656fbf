"""The Optuna side of a study: the search space as Optuna distributions, the searcher that tells
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
from ..config import StudyConfig
from ..objectives import Objective

log = logging.getLogger("srstudy.launch")


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
    """OptunaSearch that tells early-stopped or skipped trials as PRUNED.

    Stock OptunaSearch tells Optuna a trial stopped by ASHA as COMPLETE with its last,
    truncated values (or fails to tell it at all when the other objectives are missing).
    Here only a result carrying `final=True` and every objective completes an Optuna trial.
    """

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
            if frozen._trial_id not in claimed and frozen.params == params:
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
    study in `storage_url`, at most `max_concurrent` trials at once."""
    import optuna

    searcher = PruneAwareOptunaSearch(
        space=optuna_space(study), metric=[o.metric for o in objectives], mode=[o.direction for o in objectives],
        storage=optuna.storages.RDBStorage(storage_url), study_name=study.name,
        sampler=optuna.samplers.TPESampler(seed=study.seed, multivariate=True),
    )
    return ResumableConcurrencyLimiter(searcher, max_concurrent=study.max_concurrent)


def reconcile_optuna(storage_url: str, name: str) -> int:
    """After Tune has finished every trial, Optuna trials still RUNNING were asked for by a
    searcher state lost in a crash (no Tune trial owns them): mark them FAIL; returns how many.
    Not after an interrupted study: its interrupted trials' Optuna trials are RUNNING on purpose
    (`--resume` continues them)."""
    import optuna
    from optuna.trial import TrialState

    st = optuna.storages.RDBStorage(storage_url)
    study_id = st.get_study_id_from_name(name)
    n = 0
    for t in st.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
        st.set_trial_user_attr(t._trial_id, "srstudy_status", "orphaned_by_crash")
        st.set_trial_state_values(t._trial_id, TrialState.FAIL)
        n += 1
    return n


def name_objectives(storage_url: str, name: str, metrics: list[str]) -> None:
    """Name the Optuna study's objectives after their metrics, so Optuna Dashboard shows
    `val_psnr`, `params`, … instead of "Objective 0", "Objective 1", …"""
    import warnings

    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # set_metric_names: experimental
        optuna.load_study(study_name=name, storage=storage_url).set_metric_names(metrics)

"""`points_to_evaluate`: settings a study tries first (Ray Tune's option, Optuna's enqueue_trial)."""
from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from srstudy.config import ConfigError, load_study_config
from srstudy.launch import launch
from srstudy.launch.search import enqueue_points
from tiny import tiny_study_config, write_yaml

POINT = {"student.rank": 3, "alpha": 0.25, "student.embed_dim": 12}


def _study(tmp_path: Path, **top) -> Path:
    return write_yaml(tmp_path / "study.yaml", tiny_study_config(tmp_path / "study", **top))


def test_a_study_runs_its_points_first_then_samples(tmp_path):
    study = load_study_config(_study(tmp_path, num_samples=2, max_concurrent=1,
                                     asha={"enabled": False}, points_to_evaluate=[POINT]))
    res = launch(study)
    assert [r["status"] for r in res.rows if {k: r[k] for k in POINT} == POINT] == ["done"]
    ot = optuna.load_study(study_name="tiny", storage=f"sqlite:///{study.workdir / 'optuna.db'}").get_trials()
    # Optuna's first trial (the first proposal) is the point, and it completed
    assert ot[0].params == POINT and ot[0].user_attrs["srstudy_point_to_evaluate"] == 0
    assert ot[0].state == optuna.trial.TrialState.COMPLETE
    assert sum(t.params == POINT for t in ot) == 1  # the sampler's own proposal came second


def test_a_point_tried_before_is_not_queued_again(tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    st = optuna.create_study(study_name="s", storage=storage, directions=["maximize"])
    assert enqueue_points(st, [POINT, {"alpha": 0.5}]) == 2
    st.ask()  # the first point now RUNNING: a relaunch after a crash
    assert enqueue_points(optuna.load_study(study_name="s", storage=storage), [POINT, {"alpha": 0.5}]) == 0


@pytest.mark.parametrize("point, says", [
    ({"student.depth": 2}, "points_to_evaluate[0]: ['student.depth'] not in search_space"),
    ({"student.rank": 9}, "student.rank=9 is outside 1.0..3.0"),
    ({"student.rank": 2.5}, "student.rank=2.5 is not an integer"),
    ({"student.embed_dim": 10}, "is not one of the choices [4, 8, 12]"),
    ({"student.rank": 3, "alpha": 0.1, "student.embed_dim": 12}, "points_to_evaluate[0] breaks params<=2000"),
])
def test_a_point_outside_the_space_or_the_constraints_is_refused_naming_it(tmp_path, point, says):
    with pytest.raises(ConfigError) as e:
        load_study_config(_study(tmp_path, points_to_evaluate=[point], constraints=["params <= 2000"]))
    assert says in str(e.value)


def test_points_leave_the_identity_of_studies_without_them_alone(tmp_path):
    plain = load_study_config(_study(tmp_path))
    assert "points_to_evaluate" not in plain.identity_payload()
    seeded = load_study_config(_study(tmp_path, points_to_evaluate=[POINT]))
    assert seeded.identity() != plain.identity()

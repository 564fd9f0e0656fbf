"""One vocabulary for objectives and constraints (`srstudy.objectives`) read by the study
config and by the analysis alike; one "measured?" rule with one notice; one study folder
(`srstudy.workdir.StudyDir`). No Ray, no training: fast."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from srstudy import analysis
from srstudy.config import StudyConfig
from srstudy.objectives import (
    Constraint,
    Objective,
    ObjectiveError,
    default_objectives,
    energy_unavailable_reason,
    keep_measurable,
    measurable_here,
    parse_objectives,
)
from srstudy.workdir import StudyDir, missing_store


def test_the_study_config_and_the_analysis_hold_the_same_objects():
    space = {"alpha": {"type": "float", "low": 0.1, "high": 0.9}}
    study = StudyConfig(search_space=space,
                        objectives=["psnr:max", {"metric": "latency", "direction": "min"}],
                        constraints=["params<=150000", {"metric": "psnr", "op": ">=", "value": 20}])
    assert study.objectives == parse_objectives("psnr:max,latency:min")
    assert study.constraints == [Constraint("params", "<=", 150000.0), Constraint("val_psnr", ">=", 20.0)]
    assert analysis.Objective is Objective and analysis.Constraint is Constraint
    assert StudyConfig(search_space=space).objectives == default_objectives() == parse_objectives(analysis.DEFAULT_OBJECTIVES)
    # the same JSON as before the fold (a resumed study's identity hashes it)
    assert study.model_dump(mode="json")["objectives"][1] == {"metric": "latency_ms", "direction": "min"}
    assert StudyConfig.model_validate_json(study.model_dump_json()) == study
    # a constraint holds on one number (bool) and element-wise on an array
    c = study.constraints[0]
    assert c.holds(150000) is True and c.holds(150001) is False
    assert c.holds(np.array([1.0, 2e5])).tolist() == [True, False]
    # the analysis takes a bare name (direction from the name); a study config states it
    assert Objective.parse("ssim") == Objective("val_ssim", "max")
    with pytest.raises(ObjectiveError, match="write metric:max or metric:min"):
        Objective.parse("ssim", require_direction=True)


def test_one_notice_for_an_objective_that_cannot_be_measured():
    notices: list[str] = []
    kept = measurable_here(parse_objectives("psnr:max,energy:min"), [Constraint("gpu_avg_power_w", "<=", 300)],
                           0.0, notices.append)
    assert kept == [Objective("val_psnr", "max")]
    assert notices == [
        "constraint gpu_avg_power_w<=300 cannot be applied: GPU energy cannot be measured (trials run on CPU "
        "(resources.gpu = 0)); no trial is filtered on it",
        "objective gpu_energy_j:min left out: GPU energy cannot be measured (trials run on CPU "
        "(resources.gpu = 0)); it is not filled with 0"]
    # the analysis says it the same way, with the reason the runs give
    runs = pd.DataFrame({"run_id": ["a", "b"], "status": ["FINISHED"] * 2, "val_psnr": [20.0, 21.0],
                         "tag.energy_unavailable_reason": ["no CUDA device (trial runs on cpu)"] * 2})
    notices.clear()
    assert analysis.measured_objectives(runs, "psnr:max,energy:min", notices.append) == kept
    assert notices == ["objective gpu_energy_j:min left out: measured in no finished run (the runs say: "
                       "energy_unavailable_reason = 'no CUDA device (trial runs on cpu)'); it is not filled with 0"]
    # a study on a Ray cluster: the GPU nodes measure, not the launcher's machine (this CPU one)
    notices.clear()
    both = parse_objectives("psnr:max,energy:min")
    assert measurable_here(both, [], 0.25, notices.append, on_cluster=True) == both and notices == []
    local = both if energy_unavailable_reason(0.25) is None else kept  # locally: NVML is checked here
    assert measurable_here(both, [], 0.25, notices.append) == local
    assert measurable_here(both, [], 0.0, notices.append, on_cluster=True) == kept  # CPU trials anywhere
    with pytest.raises(ObjectiveError, match="none of the objectives gpu_energy_j:min can be measured on here"):
        keep_measurable(parse_objectives("energy:min"), lambda m: "no GPU", notices.append, where="on here")


def test_study_dir_names_the_files_and_keeps_study_json(tmp_path):
    d = StudyDir(tmp_path / "runs")
    assert d.tracking_uri == f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}" and not d.path.exists()
    assert missing_store(d.tracking_uri).startswith(f"no MLflow store at {d.tracking_uri}")
    assert d.read_state() is None
    d.create().write_state({"name": "s", "objectives": ["val_psnr:max"]})
    assert json.loads((tmp_path / "runs" / "study.json").read_text())["name"] == "s"
    assert StudyDir(d).read_state() == {"name": "s", "objectives": ["val_psnr:max"]}  # os.PathLike: a folder
    assert d.trial("t1") == tmp_path / "runs" / "trials" / "t1" and d.teachers == tmp_path / "runs" / "teachers"
    assert missing_store("http://127.0.0.1:5000") is None
    assert str(StudyDir()) == str(StudyDir("srstudy-runs").path)

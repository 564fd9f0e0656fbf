"""srstudy.analysis: hand-checkable fronts, exact hypervolume, knee, exclusions, MLflow loading
and tagging, `srstudy pareto` / `srstudy report` on a tiny real study."""
from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from srstudy.analysis import (
    Constraint,
    Objective,
    ObjectiveError,
    analyse,
    hypervolume,
    knee_index,
    load_runs,
    pareto_front,
    pareto_ranks,
    parse_objectives,
    resolve_source,
)
from srstudy.analysis.load import SourceError
from tiny import tiny_study_config, write_yaml


# ---- a tiny real study, shared by every test that needs runs (and by test_notebooks) -------
_STUDY: dict = {}


def tiny_analysis_study(tmp_path_factory) -> Path:
    """The workdir of a 5-trial CPU study (ASHA on, so some trials may be pruned), built once
    per test session (~45 s on 2 cores)."""
    if "workdir" not in _STUDY:
        from srstudy.config import load_study_config
        from srstudy.launch import launch

        base = tmp_path_factory.mktemp("analysis_study")
        cfg = tiny_study_config(base / "study", name="tiny-analysis", experiment="tiny-analysis", num_samples=5)
        launch(load_study_config(write_yaml(base / "study.yaml", cfg)))
        _STUDY["workdir"] = base / "study"
    return _STUDY["workdir"]


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    return tiny_analysis_study(tmp_path_factory)


def _client(workdir: Path):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}")


def _frame(rows, **cols):
    """Runs as a DataFrame: rows of objective values under the given column names."""
    df = pd.DataFrame(rows, columns=list(cols) if cols else None)
    df.insert(0, "run_id", [f"r{i}" for i in range(len(df))])
    df.insert(1, "status", "FINISHED")
    return df


# ---- non-dominated sorting ----------------------------------------------------------------
def test_ranks_ties_and_duplicates_share_a_rank():
    pts = [[1, 2], [1, 2], [2, 1], [2, 2], [3, 3], [2, 2]]
    # (1,2) twice and (2,1) are the front; the two (2,2) tie behind them; (3,3) last
    assert pareto_ranks(pts, ["min", "min"]).tolist() == [0, 0, 0, 1, 2, 1]
    # a tie in one objective: (1,1) dominates (1,2) (equal x, better y)
    assert pareto_ranks([[1, 1], [1, 2]], ["min", "min"]).tolist() == [0, 1]
    # all equal → all on the front
    assert pareto_front([[5, 5]] * 4, ["max", "min"]).all()


def test_directions_two_objectives():
    # psnr (max), params (min)
    pts = [[30.0, 100], [31.0, 200], [29.0, 50], [30.0, 150], [28.0, 60], [31.0, 250]]
    assert pareto_ranks(pts, ["max", "min"]).tolist() == [0, 0, 0, 1, 1, 1]
    # flipping params to max: (31,250) dominates everything with psnr ≤ 31 and params ≤ 250
    assert pareto_ranks(pts, ["max", "max"]).tolist() == [3, 1, 4, 2, 4, 0]


def test_three_and_four_objectives():
    pts3 = [[1, 2, 3], [3, 2, 1], [2, 2, 2], [2, 3, 3], [3, 3, 3], [1, 2, 3]]
    # (2,3,3) is dominated by (1,2,3) and (2,2,2); (3,3,3) by every other point
    assert pareto_ranks(pts3, ["min"] * 3).tolist() == [0, 0, 0, 1, 2, 0]
    pts4 = [[1, 1, 1, 9], [9, 1, 1, 1], [1, 9, 1, 1], [1, 1, 9, 1], [2, 2, 2, 9], [9, 9, 9, 9]]
    assert pareto_ranks(pts4, ["min"] * 4).tolist() == [0, 0, 0, 0, 1, 2]
    with pytest.raises(ValueError, match="NaN"):
        pareto_ranks([[1, np.nan]], ["min", "min"])


# ---- hypervolume ----------------------------------------------------------------------------
def test_hypervolume_2d_staircase_by_hand():
    pts = [[1, 3], [2, 2], [3, 1]]
    # staircase to (4, 4): 1×1 + 1×2 + 1×3 = 6
    assert hypervolume(pts, ["min", "min"], [4, 4]) == pytest.approx(6.0)
    # duplicates, dominated points and points beyond the reference add nothing
    more = pts + [[2, 2], [3, 3], [5, 0], [0, 5]]
    assert hypervolume(more, ["min", "min"], [4, 4]) == pytest.approx(6.0)
    # the same front as psnr (max) vs params (min): psnr = 10 - x
    assert hypervolume([[9, 3], [8, 2], [7, 1]], ["max", "min"], [6, 4]) == pytest.approx(6.0)
    assert hypervolume([], ["min", "min"], [1, 1]) == 0.0


def test_hypervolume_unit_cube_3d_and_4d():
    ones3, ones4 = np.ones(3), np.ones(4)
    assert hypervolume([[0, 0, 0]], ["min"] * 3, ones3) == pytest.approx(1.0)
    # three half-slabs: the cube minus the corner [0, ½)³
    slabs = [[0.5, 0, 0], [0, 0.5, 0], [0, 0, 0.5]]
    assert hypervolume(slabs, ["min"] * 3, ones3) == pytest.approx(1 - 0.125)
    assert hypervolume(slabs + slabs, ["min"] * 3, ones3) == pytest.approx(0.875)
    # 4-D: the hypercube minus {x1 < ½, x2 < ½}
    assert hypervolume([[0.5, 0, 0, 0], [0, 0.5, 0, 0]], ["min"] * 4, ones4) == pytest.approx(0.75)
    assert hypervolume([[0.5, 0.5, 0.5, 0.5]], ["min"] * 4, ones4) == pytest.approx(0.5 ** 4)
    # maximised cube corner: points in [0,1]^3 maximised against reference 0
    assert hypervolume([[1, 1, 1]], ["max"] * 3, [0, 0, 0]) == pytest.approx(1.0)


def test_hypervolume_matches_optuna_exact_wfg_on_random_points():
    hv_mod = pytest.importorskip("optuna._hypervolume")  # private, used only as an oracle here
    rng = np.random.default_rng(0)
    for k, n in itertools.product((2, 3, 4), (1, 7, 40)):
        pts = rng.random((n, k))
        ref = np.full(k, 1.05)
        assert hypervolume(pts, ["min"] * k, ref) == pytest.approx(hv_mod.compute_hypervolume(pts, ref), rel=1e-12)


# ---- knee -----------------------------------------------------------------------------------
def test_knee_on_known_curves():
    # y = 1/x on [1/4, 4]: normalised x̂ + ŷ ∝ x + 1/x, minimal at x = 1
    x = np.linspace(0.25, 4.0, 61)
    assert x[knee_index(np.c_[x, 1 / x], ["min", "min"])] == pytest.approx(1.0)
    # quarter circle bulging toward the ideal point: knee at 45°
    t = np.linspace(0, np.pi / 2, 91)
    pts = np.c_[1 - np.cos(t), 1 - np.sin(t)]
    assert t[knee_index(pts, ["min", "min"])] == pytest.approx(np.pi / 4)
    # the same curve as psnr = 40 - 10·y (max) vs params = 1000·x (min)
    assert t[knee_index(np.c_[40 - 10 * pts[:, 1], 1000 * pts[:, 0]], ["max", "min"])] == pytest.approx(np.pi / 4)
    # a single member is its own knee
    assert knee_index([[3.0, 4.0]], ["min", "max"]) == 0


# ---- objectives, aliases, constraints, exclusions ---------------------------------------------
def test_objective_aliases_and_defaults():
    objs = parse_objectives("psnr:max, energy:min ,params:min,latency:min,edge_latency:min,edge_energy:min")
    assert [str(o) for o in objs] == ["val_psnr:max", "gpu_energy_j:min", "params:min", "latency_ms:min",
                                      "edge_latency_ms:min", "edge_energy_per_image_j:min"]
    assert Objective.parse("ssim") == Objective("val_ssim", "max")  # direction from the name
    assert Objective.parse("flops") == Objective("flops", "min")
    assert Objective.parse("Set5_psnr").direction == "max"
    with pytest.raises(ObjectiveError, match="direction must be 'max' or 'min'"):
        Objective.parse("psnr:up")
    with pytest.raises(ObjectiveError, match="given twice"):
        parse_objectives("psnr:max,val_psnr:max")
    assert Constraint.parse("params<=150000") == Constraint("params", "<=", 150000.0)
    assert Constraint.parse(" latency < 5.5 ") == Constraint("latency_ms", "<", 5.5)
    with pytest.raises(ObjectiveError, match="params<=150000"):
        Constraint.parse("params is small")


def test_missing_objective_is_excluded_and_counted_never_zero():
    df = _frame([[30.0, 100.0, 5.0], [31.0, 200.0, np.nan], [29.0, np.nan, np.nan], [32.0, 300.0, math.inf],
                 [28.0, 400.0, 9.0]], val_psnr=0, params=0, gpu_energy_j=0)
    res = analyse(df, "psnr:max,params:min,energy:min")
    # as 0 energy, r1/r2/r3 would dominate; they are excluded instead
    assert res.front["run_id"].tolist() == ["r0"]
    assert res.ranked["run_id"].tolist() == ["r0", "r4"]
    assert res.missing_counts == {"val_psnr": 0, "params": 1, "gpu_energy_j": 3}
    ex = res.excluded.set_index("run_id")
    assert ex.loc[["r1", "r2", "r3"], "reason"].tolist() == ["missing_objective"] * 3
    assert ex.loc["r2", "detail"] == "params,gpu_energy_j"
    text = "\n".join(res.summary_lines())
    assert "missing objective gpu_energy_j: 3" in text and "missing objective params: 1" in text
    # without energy, all but the missing-params run are ranked
    res2 = analyse(df, "psnr:max,params:min")
    assert res2.front["run_id"].tolist() == ["r3", "r1", "r0"] and res2.missing_counts == {"val_psnr": 0, "params": 1}


def test_objective_measured_nowhere_is_an_error_naming_it():
    df = _frame([[30.0, 100.0], [31.0, 200.0]], val_psnr=0, params=0)
    df["tag.energy_unavailable_reason"] = "no CUDA device (trial runs on cpu)"
    with pytest.raises(ObjectiveError, match=r"'gpu_energy_j' is measured in none.*no CUDA device"):
        analyse(df, "psnr:max,energy:min")
    with pytest.raises(ObjectiveError, match="'edge_latency_ms'.*srstudy bench"):
        analyse(df, "psnr:max,edge_latency:min")


def test_unfinished_runs_and_constraints_are_excluded_with_the_reason():
    df = _frame([[30.0, 100_000], [31.0, 200_000], [29.0, 50_000], [35.0, 10_000], [36.0, 5_000]],
                val_psnr=0, params=0)
    df.loc[3, "status"] = "KILLED"
    df["pruned"] = [False, False, False, True, False]
    df.loc[4, "status"] = "FAILED"
    res = analyse(df, "psnr,params", ["params<=150000"])
    assert res.front["run_id"].tolist() == ["r0", "r2"]
    ex = res.excluded.set_index("run_id")
    assert ex.loc["r1", "reason"] == "constraint" and ex.loc["r1", "detail"] == "params<=150000 (params = 200000)"
    assert ex.loc["r3", "detail"] == "KILLED (pruned)" and ex.loc["r4", "detail"] == "FAILED"
    assert res.exclusion_counts() == {"not_finished": 2, "constraint": 1}
    assert "violates params<=150000: 1" in "\n".join(res.summary_lines())
    # a constraint on an alias; a run without the constraint's metric is excluded, not passed
    df["latency_ms"] = [1.0, 1.0, np.nan, 1.0, 1.0]
    res = analyse(df, "psnr:max,params:min", ["latency<=2"])
    assert res.excluded.set_index("run_id").loc["r2", "reason"] == "missing_constraint_metric"


def test_front_result_hypervolume_knee_and_records():
    df = _frame([[1, 3], [1.5, 1.5], [3, 1], [3, 3]], params=0, latency_ms=0)
    res = analyse(df, "params:min,latency:min", reference=[4, 4])
    # staircase to (4, 4): 0.5×1 + 1.5×2.5 + 1×3
    assert res.hypervolume == pytest.approx(7.25)
    assert res.knee_run_id == "r1"
    recs = res.to_records()
    assert recs == [{"run_id": f"r{i}", "run_name": None, "params": p, "latency_ms": q, "pareto_rank": 0,
                     "knee": i == 1} for i, (p, q) in enumerate([(1.0, 3.0), (1.5, 1.5), (3.0, 1.0)])]
    assert [r["pareto_rank"] for r in res.to_records(front_only=False)] == [0, 0, 0, 1]
    # default reference: 10 % of the range beyond the worst ranked value
    assert analyse(df, "params:min,latency:min").reference.tolist() == pytest.approx([3.2, 3.2])
    # a straight front has no knee to speak of: ties go to the first member
    assert analyse(_frame([[1, 3], [2, 2], [3, 1]], params=0, latency_ms=0), "params,latency").knee_run_id == "r0"


# ---- MLflow loading (a synthetic store: hand-checkable histories and tags) -------------------
def test_load_runs_final_values_params_tags_and_study_filter(tmp_path):
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, RunTag

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    c = MlflowClient(tracking_uri=uri)
    exp = c.create_experiment("exp")
    parent = c.create_run(exp, run_name="study-a", tags={"role": "study", "study": "a"}).info.run_id
    other = c.create_run(exp, run_name="study-b", tags={"role": "study", "study": "b"}).info.run_id

    def trial(name, par, psnr_hist, params, status="FINISHED", pruned=False):
        tags = {"role": "trial", "mlflow.parentRunId": par, **({"pruned": "true"} if pruned else {})}
        rid = c.create_run(exp, run_name=name, tags=tags).info.run_id
        metrics = [Metric("val_psnr", v, 0, step) for step, v in psnr_hist]
        if params is not None:
            metrics.append(Metric("params", params, 0, 0))
        c.log_batch(rid, metrics=metrics, params=[Param("student.rank", "2"), Param("alpha", "0.5"),
                                                  Param("student.lowrank_proj", "False"), Param("teacher.checkpoint", "None")],
                    tags=[RunTag("x", "y")])
        c.set_terminated(rid, status)
        return rid

    # history logged out of step order: the final value is the one at the largest step
    a1 = trial("a1", parent, [(12, 25.0), (4, 20.0), (8, 30.0)], 1000)
    a2 = trial("a2", parent, [(4, 19.0)], None, status="KILLED", pruned=True)
    b1 = trial("b1", other, [(12, 40.0)], 10)
    with pytest.raises(SourceError, match="no experiment named 'nope'.*'exp'"):
        resolve_source(tracking_uri=uri, experiment="nope")
    with pytest.raises(SourceError, match="no MLflow store"):
        resolve_source(tracking_uri=f"sqlite:///{tmp_path / 'absent.db'}", experiment="exp")
    with pytest.raises(SourceError, match="study.json"):
        resolve_source(tmp_path)
    runs = load_runs(resolve_source(tracking_uri=uri, experiment="exp", study="a")).set_index("run_id")
    assert sorted(runs.index) == sorted([a1, a2])  # study b's trial and the parent runs left out
    assert runs.loc[a1, "val_psnr"] == 25.0 and runs.loc[a1, "params"] == 1000.0
    assert math.isnan(runs.loc[a2, "params"])  # absent, not 0
    assert runs.loc[a2, "pruned"] and runs.loc[a2, "status"] == "KILLED" and not runs.loc[a1, "pruned"]
    assert runs.loc[a1, "student.rank"] == 2 and runs.loc[a1, "alpha"] == 0.5
    assert bool(runs.loc[a1, "student.lowrank_proj"]) is False and runs["student.lowrank_proj"].dtype == bool
    assert pd.isna(runs.loc[a1, "teacher.checkpoint"]) and runs.loc[a1, "tag.x"] == "y"
    assert runs.loc[a1, "parent_run_id"] == parent
    everything = load_runs(resolve_source(tracking_uri=uri, experiment="exp"))
    assert sorted(everything["run_id"]) == sorted([a1, a2, b1])
    # a workdir: study.json names the parent run, whose experiment is used
    (tmp_path / "study.json").write_text(json.dumps({"name": "a", "parent_run_id": parent}))
    (tmp_path / "mlflow.db").symlink_to(tmp_path / "m.db")
    src = resolve_source(tmp_path)
    assert src.experiment == "exp" and src.parent_run_ids == [parent]
    assert sorted(load_runs(src)["run_id"]) == sorted([a1, a2])


# ---- the tiny real study: CLI ----------------------------------------------------------------
def _cli(*args):
    from srstudy.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def _text(res) -> str:
    """The command's whole output with line wrapping undone (rich wraps stderr at 80 columns)."""
    return " ".join(res.output.split())


def test_pareto_json_shape_and_pareto_rank_tags_in_mlflow(study):
    res = _cli("pareto", "--workdir", study, "--json")
    assert res.exit_code == 0, res.output
    front = json.loads(res.stdout)
    # the study's own objectives (study.json): energy was dropped by launch on CPU
    assert front and all(set(r) == {"run_id", "run_name", "val_psnr", "params", "latency_ms", "pareto_rank", "knee"}
                         for r in front)
    assert all(r["pareto_rank"] == 0 for r in front) and sum(r["knee"] for r in front) == 1
    assert "trial run(s)" in res.stderr and "front:" in res.stderr and "run_id" not in res.stderr
    client = _client(study)
    runs = load_runs(resolve_source(study)).set_index("run_id")
    done = runs[(runs["status"] == "FINISHED") & ~runs["pruned"]]
    vals = done[["val_psnr", "params", "latency_ms"]].to_numpy()
    expected = dict(zip(done.index, pareto_ranks(vals, ["max", "min", "min"])))
    assert {r["run_id"] for r in front} == {rid for rid, rk in expected.items() if rk == 0}
    for rid in runs.index:
        tags = client.get_run(rid).data.tags
        if rid in expected:
            assert tags["pareto_rank"] == str(expected[rid])
            assert tags["pareto_objectives"] == "val_psnr:max,params:min,latency_ms:min"
        else:  # pruned: not ranked, not tagged
            assert "pareto_rank" not in tags
    n_unfinished = len(runs) - len(done)
    if n_unfinished:
        assert f"excluded, did not finish: {n_unfinished}" in _text(res)


def test_pareto_plot_constraint_and_edge_metric_missing_in_some_runs(study, tmp_path):
    from PIL import Image

    client = _client(study)
    runs = load_runs(resolve_source(study))
    done = runs[(runs["status"] == "FINISHED") & ~runs["pruned"]]
    assert len(done) >= 2
    # an edge bench reached only two runs: the rest are excluded and counted, not zero
    benched = done["run_id"].tolist()[:2]
    for i, rid in enumerate(benched):
        client.log_metric(rid, "edge_latency_ms", 10.0 + i)
    png = tmp_path / "front.png"
    res = _cli("pareto", "--tracking-uri", f"sqlite:///{study / 'mlflow.db'}", "--experiment", "tiny-analysis",
               "--objectives", "psnr:max,edge_latency:min,params:min", "--plot", png)
    assert res.exit_code == 0, res.output
    assert f"missing objective edge_latency_ms: {len(done) - 2} finished run(s)" in _text(res)
    assert png.stat().st_size > 0
    with Image.open(png) as im:
        im.verify()
    with Image.open(png) as im:
        assert im.format == "PNG" and im.size[0] > 800
    for rid in done["run_id"]:  # runs left out this time lose a stale pareto_rank
        assert ("pareto_rank" in client.get_run(rid).data.tags) == (rid in benched)
    # a constraint that only the smaller students meet
    limit = float(done["params"].min())
    res = _cli("pareto", "--workdir", study, "--constraint", f"params<={limit:g}", "--json", "--no-tag")
    assert res.exit_code == 0, res.output
    kept = json.loads(res.stdout)
    assert kept and all(r["params"] <= limit for r in kept)
    n_viol = int((done["params"] > limit).sum())
    assert (f"violates params<={limit:g}: {n_viol}" in _text(res)) == (n_viol > 0)


def test_pareto_errors_name_the_problem_and_the_fix(study, tmp_path):
    res = _cli("pareto", "--tracking-uri", f"sqlite:///{study / 'mlflow.db'}", "--experiment", "nope")
    assert res.exit_code == 2 and "no experiment named 'nope'" in _text(res) and "tiny-analysis" in _text(res)
    res = _cli("pareto", "--workdir", tmp_path)
    assert res.exit_code == 2 and "study.json" in _text(res) and "--tracking-uri" in _text(res)
    res = _cli("pareto", "--tracking-uri", f"sqlite:///{tmp_path / 'none.db'}", "--experiment", "x")
    assert res.exit_code == 2 and "no MLflow store" in _text(res) and not (tmp_path / "none.db").exists()
    res = _cli("pareto", "--workdir", study, "--objectives", "psnr:max,energy:min")
    assert res.exit_code == 2 and "'gpu_energy_j' is measured in none" in _text(res)
    assert "energy_unavailable_reason" in _text(res)
    res = _cli("pareto", "--workdir", study, "--objectives", "psnr:best")
    assert res.exit_code == 2 and "direction must be" in _text(res)
    res = _cli("pareto", "--workdir", study, "--reference", "1,2")
    assert res.exit_code == 2 and "reference point has 2 values for 3 objectives" in _text(res)


def test_report_is_one_self_contained_html_file(study, tmp_path):
    out = tmp_path / "r" / "report.html"
    res = _cli("report", "--workdir", study, "--out", out)
    assert res.exit_code == 0, res.output
    html = out.read_text()
    assert html.count("data:image/png;base64,") >= 3  # front, hypervolume, findings plots
    assert 'src="http' not in html and "<link" not in html  # nothing fetched from elsewhere
    front = json.loads(_cli("pareto", "--workdir", study, "--json", "--no-tag").stdout)
    assert all(r["run_id"] in html for r in front)
    assert "GPU energy was not measured" in html and "params(C) = 93·C² + 1429·C + 48" in html

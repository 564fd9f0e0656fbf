"""What a user sees of a study in the MLflow browser, read through the REST API the browser
itself calls, from a real `mlflow server` on 127.0.0.1 over a tiny real study's sqlite store:
the experiment's kind tag (so the browser opens on the runs), trial runs named by their
settings under the study run, the Tune trial id, the study run's description and its front
(and the objectives' names in the Optuna study, for Optuna Dashboard)."""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient

from srstudy.analysis.study_run import FRONT_FILTER, NOTE_TAG, describe_space
from srstudy.tracking import (
    EXPERIMENT_KIND_TAG,
    MODEL_TRAINING_KIND,
    TUNE_TRIAL_TAG,
    browser_links,
    ensure_experiment,
    trial_run_name,
)
from tiny import tiny_study_config, write_yaml

EXPERIMENT = "tiny-browser"


# ---- names and tags, no server needed --------------------------------------------------------
def test_trial_run_name_is_short_and_follows_the_search_space():
    assert trial_run_name({"student.rank": 2, "alpha": 0.8, "student.embed_dim": 32, "student.n_groups": 4}) \
        == "r2-a0.80-c32-g4"
    # two settings sharing a letter get their sections' initials; small floats keep their digits
    assert trial_run_name({"student.rank": 2, "teacher.arch.rank": 4, "optim.lr": 2e-5, "student.lowrank_proj": True}) \
        == "sr2-tar4-lr2e-05-lp1"


def test_experiment_is_tagged_model_training_also_when_it_exists_without_the_tag(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    new = ensure_experiment(uri, "new", tmp_path / "art")
    assert client.get_experiment(new).tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING_KIND
    old = client.create_experiment("made-by-an-older-srstudy")
    assert EXPERIMENT_KIND_TAG not in client.get_experiment(old).tags
    assert ensure_experiment(uri, "made-by-an-older-srstudy") == old
    assert client.get_experiment(old).tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING_KIND
    chosen = client.create_experiment("genai", tags={EXPERIMENT_KIND_TAG: "genai_development"})
    ensure_experiment(uri, "genai")  # a kind a user chose is kept
    assert client.get_experiment(chosen).tags[EXPERIMENT_KIND_TAG] == "genai_development"


# ---- a tiny study behind a real MLflow server ------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until_it_answers(proc: subprocess.Popen, url: str, log: Path, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while True:
        if proc.poll() is not None:
            pytest.fail(f"mlflow server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"mlflow server did not answer within {seconds:.0f} s:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)


@pytest.fixture(scope="module")
def served_study(tmp_path_factory):
    """A 4-trial CPU study (ASHA on) in a workdir whose store a real `mlflow server` on
    127.0.0.1 serves: (workdir, the server's base URL). The server boots while the study
    runs (the store's tables are created first, so the two never both create them)."""
    from srstudy.config import load_study_config
    from srstudy.launch import launch

    base = tmp_path_factory.mktemp("browser_study")
    workdir = base / "study"
    workdir.mkdir()
    store = f"sqlite:///{workdir / 'mlflow.db'}"
    MlflowClient(tracking_uri=store).search_experiments()  # creates the store's tables
    port, log = _free_port(), base / "mlflow-server.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", store,
             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})  # no GenAI job runner
    url = f"http://127.0.0.1:{port}"
    try:
        cfg = tiny_study_config(workdir, name="tiny-browser", experiment=EXPERIMENT)
        launch(load_study_config(write_yaml(base / "study.yaml", cfg)))
        _wait_until_it_answers(proc, url, log)
        yield workdir, url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # the server and its worker: a group this fixture started
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _get(server: str, endpoint: str, **query) -> dict:
    with urllib.request.urlopen(f"{server}/api/2.0/mlflow/{endpoint}?{urllib.parse.urlencode(query)}", timeout=30) as r:
        return json.loads(r.read())


def _search(server: str, experiment_id: str, filter_string: str) -> list[dict]:
    body = json.dumps({"experiment_ids": [experiment_id], "filter": filter_string, "max_results": 1000}).encode()
    req = urllib.request.Request(f"{server}/api/2.0/mlflow/runs/search", data=body,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read()).get("runs", [])


def _tags(run: dict) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run["data"].get("tags", [])}


def _params(run: dict) -> dict[str, str]:
    return {p["key"]: p["value"] for p in run["data"].get("params", [])}


def test_the_browser_finds_named_trials_under_the_study_run_and_its_front(served_study):
    from srstudy.config import load_study_config

    study, server = served_study
    cfg = load_study_config(study.parent / "study.yaml")
    state = json.loads((study / "study.json").read_text())
    parent_id = state["parent_run_id"]

    exp = _get(server, "experiments/get-by-name", experiment_name=EXPERIMENT)["experiment"]
    assert {t["key"]: t["value"] for t in exp["tags"]}[EXPERIMENT_KIND_TAG] == MODEL_TRAINING_KIND
    links = browser_links(f"sqlite:///{study / 'mlflow.db'}", parent_id, server)
    base = f"{server}/#/experiments/{exp['experiment_id']}/runs"
    assert links["study_run"] == f"{base}/{parent_id}?workflowType=machine_learning"
    assert links["trials"].startswith(f"{base}?workflowType=machine_learning&")
    with urllib.request.urlopen(f"{server}/", timeout=30) as r:  # the page both links open
        assert r.status == 200 and b"<html" in r.read().lower()

    # the trial runs: named by their settings, under the study run, with the Tune trial id
    trials = _search(server, exp["experiment_id"], "tags.role = 'trial'")
    rows = json.loads((study / "study_trials.json").read_text())["rows"]
    trained = {r["mlflow_run_id"]: r for r in rows if r["status"] in ("done", "pruned")}
    assert trials and {t["info"]["run_id"] for t in trials} == set(trained)
    kinds = {"int": int, "float": float, "categorical": int}
    for t in trials:
        tags, params, row = _tags(t), _params(t), trained[t["info"]["run_id"]]
        settings = {k: kinds[p.type](params[k]) for k, p in cfg.search_space.items()}
        assert t["info"]["run_name"] == trial_run_name(settings)
        assert re.fullmatch(r"a\d\.\d\d-c\d+-r\d", t["info"]["run_name"])  # alpha, embed_dim, rank
        assert tags["mlflow.parentRunId"] == parent_id
        assert tags[TUNE_TRIAL_TAG] == row["trial_id"] and tags["trial_dir"].endswith(row["trial_id"])

    # the trials link asks for what the browser then asks the server: the trials, best PSNR first
    asked = dict(urllib.parse.parse_qsl(links["trials"].split("?", 1)[1]))
    order = f"{asked['orderByKey']} {'ASC' if asked['orderByAsc'] == 'true' else 'DESC'}"
    body = json.dumps({"experiment_ids": [exp["experiment_id"]], "filter": asked["searchFilter"],
                       "order_by": [order]}).encode()
    req = urllib.request.Request(f"{server}/api/2.0/mlflow/runs/search", data=body,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        listed = json.loads(r.read())["runs"]
    psnr = [{m["key"]: m["value"] for m in t["data"]["metrics"]}["val_psnr"] for t in listed]
    assert {t["info"]["run_id"] for t in listed} == set(trained) and psnr == sorted(psnr, reverse=True)

    # the study run: its description says what was searched and where the front is
    study_run = _get(server, "runs/get", run_id=parent_id)["run"]
    note = _tags(study_run)[NOTE_TAG]
    for key, searched in describe_space(cfg.model_dump(mode="json")["search_space"]).items():
        assert f"| `{key}` | {searched} |" in note
    assert FRONT_FILTER in note and "front/front.csv" in note and "front/pareto_front.png" in note
    assert f"{len(rows)} trials" in note and "`val_psnr` (↑)" in note

    # the front: artifacts of the study run, and the same runs through the filter the README gives
    listed = _get(server, "artifacts/list", run_id=parent_id, path="front")
    files = {f["path"]: int(f.get("file_size", 0)) for f in listed["files"]}
    assert set(files) == {"front/front.csv", "front/front.json", "front/pareto_front.png"}
    assert all(size > 0 for size in files.values())
    front = json.loads(Path(MlflowClient(f"sqlite:///{study / 'mlflow.db'}").download_artifacts(
        parent_id, "front/front.json", str(study.parent))).read_text())
    front_ids = {r["run_id"] for r in front["front"]}
    assert front_ids and front_ids <= {r for r, row in trained.items() if row["status"] == "done"}
    assert {t["info"]["run_id"] for t in _search(server, exp["experiment_id"], FRONT_FILTER)} == front_ids
    assert sum(r["knee"] for r in front["front"]) == 1 and front["objectives"][0] == "val_psnr:max"
    knee = next(r for r in front["front"] if r["knee"])
    # the same objectives are named in the Optuna study (what Optuna Dashboard shows)
    ot = optuna.load_study(study_name="tiny-browser", storage=f"sqlite:///{study / 'optuna.db'}")
    assert ot.metric_names == [o.split(":")[0] for o in state["objectives"]] == ["val_psnr", "params", "latency_ms"]
    assert f"**Knee** (the front's balanced choice): `{knee['run_name']}`" in note
    assert f"srstudy export --run-id {knee['run_id']}" in note
    assert {r["run_name"] for r in front["front"]} <= {t["info"]["run_name"] for t in trials}

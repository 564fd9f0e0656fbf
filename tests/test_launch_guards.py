"""`srstudy launch` guards (issue 12): one launcher per study folder (a lock naming its holder,
taken over once the holder is killed), objectives and constraints only on metrics a trial
logs, search ranges inside what a setting allows, dotted search-space keys with --set, `==`
in constraints, and a non-zero exit with one line per failed trial. Real processes, real Ray."""
from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from srstudy.analysis.front import Constraint as FrontConstraint
from srstudy.config import ConfigError, load_study_config, parse_override
from tiny import tiny_study_config, write_yaml

LAUNCH = [sys.executable, "-m", "srstudy.cli", "launch"]


def tiny_study(tmp_path: Path, **top) -> Path:
    return write_yaml(tmp_path / "study.yaml", tiny_study_config(tmp_path / "study", **top))


def _kill_tree(pid: int) -> None:
    try:
        procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for p in procs:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass


def run_bounded(cmd: list[str], timeout: float) -> subprocess.CompletedProcess:
    """Run `cmd`; past `timeout` s kill it and everything it started (Ray), and fail."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_tree(proc.pid)
        out, err = proc.communicate()
        pytest.fail(f"{' '.join(cmd[2:])} still running after {timeout} s:\n{err[-3000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


# ---- metrics a trial logs ---------------------------------------------------------------------
@pytest.mark.parametrize("override", ["objectives=[psnr:max, fooscore:min]", "constraints=['fooscore <= 5']"])
def test_unknown_objective_or_constraint_metric_fails_before_any_training(tmp_path, override):
    cfg = tiny_study(tmp_path)
    with pytest.raises(ConfigError) as err:
        load_study_config(cfg, [override])
    msg = str(err.value)
    assert "'fooscore'" in msg
    for valid in ("val_psnr", "params", "latency_ms", "gpu_energy_j", "<Set>_psnr", "psnr=val_psnr"):
        assert valid in msg, msg
    # from the command line: a clear error, exit 2, and nothing started (no teacher, no Ray, no study)
    res = run_bounded([*LAUNCH, "--config", str(cfg), "--set", override], timeout=120)
    assert res.returncode == 2 and "fooscore" in res.stderr and "Traceback" not in res.stderr, res.stderr[-3000:]
    assert not (tmp_path / "study").exists()


def test_metric_names_follow_aliases_and_benchmark_sets(tmp_path):
    (tmp_path / "bench" / "Set5" / "HR").mkdir(parents=True)
    cfg = tiny_study(tmp_path, **{"trial.data.benchmark_root": str(tmp_path / "bench"),
                                  "trial.data.benchmark_sets": ["Set5"]})
    study = load_study_config(cfg, ["objectives=[Set5_psnr:max, params:min]", "constraints=['psnr >= 20', 'latency<9']"])
    assert [o.metric for o in study.objectives] == ["Set5_psnr", "params"]
    assert [(c.metric, c.op) for c in study.constraints] == [("val_psnr", ">="), ("latency_ms", "<")]
    with pytest.raises(ConfigError, match=r"'Set14_ssim'.*Set5_psnr, Set5_ssim \(data.benchmark_sets\)"):
        load_study_config(cfg, ["objectives=[Set14_ssim:max]"])
    with pytest.raises(ConfigError, match="srstudy bench"):  # edge metrics come from `srstudy bench`, not a trial
        load_study_config(cfg, ["constraints=['edge_latency_ms <= 5']"])


# ---- search ranges inside what a setting allows -------------------------------------------------
@pytest.mark.parametrize("space, bad, allowed", [
    ("{alpha: {type: float, low: 0.5, high: 1.5}}", "high 1.5", "alpha >= 0 and <= 1"),
    ("{alpha: {type: float, low: -0.5, high: 0.5}}", "low -0.5", "alpha >= 0 and <= 1"),
    ("{student.embed_dim: {type: categorical, choices: [8, 0, 16]}}", "choice 0", "student.embed_dim >= 1"),
    ("{precision: {type: categorical, choices: [fp32, fp16]}}", "choice 'fp16'", "precision one of fp32, tf32, bf16"),
    ("{optim.gamma: {type: float, low: 0.5, high: 2, step: 0.5}}", "high 2.0", "optim.gamma > 0 and <= 1"),
])
def test_search_range_outside_the_setting_is_refused(tmp_path, space, bad, allowed):
    with pytest.raises(ConfigError) as err:
        load_study_config(tiny_study(tmp_path), [f"search_space={space}"])
    msg = str(err.value)
    key = space[1:].split(":")[0]
    assert f"search_space key '{key}': {bad} is not allowed ({allowed})" in msg, msg
    assert "pydantic" not in msg


def test_search_range_refusal_from_the_command_line(tmp_path):
    cfg = tiny_study(tmp_path)
    res = run_bounded([*LAUNCH, "--config", str(cfg), "--set", "search_space={alpha: {type: float, low: 0.5, high: 1.5}}"],
                      timeout=120)
    assert res.returncode == 2 and "'alpha': high 1.5 is not allowed" in res.stderr, res.stderr[-3000:]
    assert "Traceback" not in res.stderr and not (tmp_path / "study").exists()
    # a float range over a whole-number setting says so
    with pytest.raises(ConfigError, match="'student.rank': student.rank takes whole numbers; use type: int"):
        load_study_config(cfg, ["search_space={student.rank: {type: float, low: 1, high: 3}}"])


# ---- --set and dotted search-space keys; `==` constraints ---------------------------------------
def test_set_addresses_a_dotted_search_space_key(tmp_path):
    cfg = tiny_study(tmp_path)
    assert parse_override('search_space["student.rank"].high=2') == (["search_space", "student.rank", "high"], 2)
    study = load_study_config(cfg, ['search_space["student.rank"]={type: int, low: 1, high: 2}',
                                    "search_space['alpha'].high=0.5"])
    assert (study.search_space["student.rank"].low, study.search_space["student.rank"].high) == (1, 2)
    assert study.search_space["alpha"].high == 0.5
    assert set(study.search_space) == {"student.rank", "alpha", "student.embed_dim"}
    # the dotted spelling says how to write it
    with pytest.raises(ConfigError, match=r"""search_space\["student.rank"\]="""):
        load_study_config(cfg, ["search_space.student.rank={type: int, low: 1, high: 2}"])
    with pytest.raises(ConfigError, match="cannot read the key"):
        load_study_config(cfg, ["search_space[student.rank]={type: int, low: 1, high: 2}"])


def test_equality_constraint_is_read_as_srstudy_pareto_reads_it(tmp_path):
    study = load_study_config(tiny_study(tmp_path), ["constraints=['params == 1234', 'psnr>=2e1']"])
    eq, ge = study.constraints
    for ours, spec in ((eq, "params == 1234"), (ge, "psnr>=2e1")):
        theirs = FrontConstraint.parse(spec)
        assert (ours.metric, ours.op, ours.value) == (theirs.metric, theirs.op, theirs.value)
    assert eq.holds(1234.0) and not eq.holds(1235.0)
    assert ge.metric == "val_psnr" and ge.holds(20.0) and not ge.holds(19.9)


# ---- a failed trial fails the launch --------------------------------------------------------------
def test_launch_exits_nonzero_with_a_line_per_failed_trial(tmp_path):
    bad_val = tmp_path / "val"
    bad_val.mkdir()
    (bad_val / "broken.png").write_bytes(b"not a png")  # passes validation (a folder), fails in the trial
    cfg = tiny_study(tmp_path, num_samples=2, **{"asha.enabled": False, "trial.data.val": [str(bad_val)]})
    res = run_bounded([*LAUNCH, "--config", str(cfg)], timeout=500)
    assert res.returncode == 1, res.stderr[-4000:]
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error: trial ")]
    assert len(lines) == 2, res.stderr[-4000:]
    rows = json.loads((tmp_path / "study" / "study_trials.json").read_text())["rows"]
    assert sorted(r["status"] for r in rows) == ["error", "error"]
    for row in rows:
        line = next(ln for ln in lines if ln.startswith(f"error: trial {row['trial_id']} failed: "))
        assert "cannot decode image file" in line and "broken.png" in line
        error_file = Path(row["error_file"])
        assert error_file.name == "error.txt" and f"(full error: {error_file})" in line
        assert row["error"] in error_file.read_text()
    assert "2 of 2 trial(s) failed" in res.stderr


# ---- one launcher per workdir ---------------------------------------------------------------------
def test_second_launcher_is_refused_and_a_stale_lock_is_taken_over(tmp_path):
    # trials long enough (200 iterations) to outlive two refused launchers
    cfg = tiny_study(tmp_path, num_samples=2, **{"trial.iterations": 200, "trial.val_interval": 50,
                                                 "trial.checkpoint_interval": 5, "asha.enabled": False})
    workdir = tmp_path / "study"
    first_log = open(tmp_path / "first.log", "w")
    first = subprocess.Popen([*LAUNCH, "--config", str(cfg)], stdout=first_log, stderr=subprocess.STDOUT,
                             start_new_session=True)
    try:
        deadline = time.time() + 300
        while not list(workdir.glob("trials/*/checkpoint.pth")):  # trials are training
            assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            assert time.time() < deadline, "no trial started training"
            time.sleep(0.2)
        for extra in (["--resume"], []):
            assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            second = run_bounded([*LAUNCH, "--config", str(cfg), *extra], timeout=120)
            assert second.returncode == 2, second.stderr[-3000:]
            said = " ".join(second.stderr.split())
            assert f"PID {first.pid} on host {socket.gethostname()}" in said, said
            assert "in use by another `srstudy launch`" in said and "--resume" in said
        assert first.poll() is None  # the first launcher carries on
    finally:
        _kill_tree(first.pid)  # kill -9 of the launcher and its Ray
        first.wait()
    lock = json.loads((workdir / "launch.lock").read_text())
    assert lock["pid"] == first.pid  # left behind by the killed launcher

    resumed = run_bounded([*LAUNCH, "--config", str(cfg), "--resume"], timeout=500)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    said = " ".join(resumed.stderr.split())
    assert "took over the lock" in said and f"PID {first.pid}" in said and "no longer running" in said, said
    assert not (workdir / "launch.lock").exists()  # released at the end
    rows = json.loads((workdir / "study_trials.json").read_text())["rows"]
    assert len(rows) == 2 and all(r["status"] == "done" for r in rows)


JOIN_AT_EXIT = """
import pathlib, sys, threading, time
from srstudy.launch.trainable import join_at_exit
out = pathlib.Path(sys.argv[1])
def trial():  # Tune's training thread (a daemon), still unwinding when the actor's process exits
    if sys.argv[2] == "join":
        join_at_exit(threading.current_thread())
    time.sleep(0.5)
    out.write_text("unwound")
threading.Thread(target=trial, daemon=True).start()
time.sleep(0.1)  # the main thread ends here, as Tune's actor does after stopping a pruned trial
"""


@pytest.mark.parametrize("mode", ["join", "none"])
def test_a_stopped_trials_process_waits_for_its_training_thread_to_unwind(tmp_path, mode):
    """A trial stopped by ASHA gets SystemExit in Tune's training thread, and the actor's process
    exits without waiting for it: on the H200 every pruned trial then aborted in the interpreter's
    shutdown (`Fatal Python error: Aborted`) while its thread was still closing its GPU work.
    `join_at_exit` (called by `tune_trial` in its training thread) makes the exit wait; without
    it the thread is cut off (the control case)."""
    script, out = tmp_path / "exit_case.py", tmp_path / "unwound.txt"
    script.write_text(JOIN_AT_EXIT)
    proc = subprocess.run([sys.executable, str(script), str(out), mode], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert out.exists() == (mode == "join")

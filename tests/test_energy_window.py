"""Energy you can rank (issue 17): the exclusive window, the objective, the trial/launcher glue
and the benchmark's arithmetic (benchmarks/energy_attribution.py).

On CPU with a simulated GPU; the window's exclusivity is checked against a real process.
"""
from __future__ import annotations

import importlib.util
import os
import threading
import time
from pathlib import Path

import pytest

from srstudy.measure.energy import EnergyResult, NvmlEnergyMeter
from srstudy.measure.attribution import load_trial_pids
from srstudy.measure.gpu_lock import GpuLock, read_waits
from srstudy.measure.study_session import StudyEnergySession
from srstudy.measure.trial_session import TrialEnergySession, WindowSettings
from srstudy.measure.window import (
    WindowResult, had_gpu_alone, inference_energy_per_image, run_exclusive_window, trial_energy)
from support.actors import UUID, actors, overlaps, sim  # noqa: F401 - actors, sim: fixtures
from support.simulated_nvml import HANDLE, SimulatedNvml

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "energy_attribution.py"

# --------------------------------------------------------------------------- exclusive window


def test_window_runs_alone_while_a_reader_steps_aside(actors, sim, tmp_path):
    me = os.getpid()
    sim.add_process(me, sm=90, active_w=200.0)  # our training: 122 + 200 W while the window runs
    actors.start("hold_reader", "other", iterations=100000, iter_s=0.01, stop_file=str(tmp_path / "stop"))
    actors.wait_event("other", "iter")
    syncs, steps = [], []
    with GpuLock(tmp_path, UUID, owner="trial") as lock, lock.hold_shared(lambda: syncs.append("hold")) as hold:
        res = run_exclusive_window(lambda: (steps.append(time.time()), time.sleep(0.01)), lock, sim, HANDLE,
                                   synchronize=lambda: syncs.append("edge"), min_iterations=20, min_seconds=0.4,
                                   hold=hold, sample_hz=50)
        assert lock.state == "shared"  # the trial's own shared hold is back
    (tmp_path / "stop").touch()
    actors.finish()
    assert res.complete and res.reason is None and res.iterations == len(steps) >= 20 and res.seconds >= 0.4
    assert syncs.count("edge") == 2 and syncs[0] == "hold"  # synchronized before stepping out and at both edges
    assert res.energy_source == "counter" and res.energy_per_iter_j == res.energy_j / res.iterations
    assert res.energy_j == pytest.approx(322.0 * res.seconds, rel=0.1)
    assert res.temp_start_c == res.temp_end_c == pytest.approx(30.0 + 32.2)  # logged at both edges
    others = [e["t"] for e in actors.events("other", "iter")]
    assert others and not any(steps[0] <= t <= steps[-1] for t in others)  # it had the GPU alone
    (grant,) = [w for w in read_waits(tmp_path) if w["label"] == "energy_window"]
    assert grant["wait_s"] == pytest.approx(res.wait_s) and grant["owner"] == "trial"


def test_window_short_or_unmeasurable_says_why(tmp_path, sim):
    with GpuLock(tmp_path, UUID) as lock:
        short = run_exclusive_window(lambda: None, lock, sim, HANDLE, min_iterations=20, min_seconds=0,
                                     max_iterations=3)
        blind = SimulatedNvml.create(tmp_path / "blind.json", uuid=UUID, energy_counter=False, power=False,
                                     temperature=False)
        none = run_exclusive_window(lambda: None, lock, blind, HANDLE, min_iterations=2, min_seconds=0)
        m, t = inference_energy_per_image(lambda: None, lock, blind, HANDLE, min_images=2, min_seconds=0)
        m_ok, t_ok = inference_energy_per_image(lambda: time.sleep(0.01), lock, sim, HANDLE, min_images=5,
                                                min_seconds=0.05)
    assert not short.complete and short.iterations == 3 and "only 3 iterations left" in short.reason
    assert none.energy_j is None and none.energy_per_iter_j is None and "not supported" in none.reason
    assert short.temp_start_c is not None and none.temp_start_c is None and none.temp_end_c is None
    assert m == {} and "not supported" in t["inference_energy_unavailable_reason"]
    assert m_ok["gpu_inference_energy_per_image_j"] > 0 and t_ok == {}


def _whole(energy_j, shared, reason=None):
    return EnergyResult(energy_j=energy_j, seconds=60.0, shared_processes=shared, reason=reason)


def test_objective_is_exclusive_joules_per_iteration_times_iterations():
    window = WindowResult(iterations=40, seconds=6.0, energy_j=200.0, wait_s=0.3, energy_source="counter")
    m, t = trial_energy(window=window, iterations=300, whole_run=_whole(4200.0, shared=3), teacher_energy_j=25.0)
    assert m["gpu_energy_per_iter_j"] == 5.0 and m["gpu_energy_j"] == 300 * 5.0 + 25.0
    assert m["gpu_energy_whole_run_j"] == 4200.0 and m["gpu_energy_teacher_share_j"] == 25.0
    assert m["energy_window_wait_s"] == 0.3 and "gpu_energy_window_vs_whole_run_dev" not in m
    assert m["energy_window_iterations_per_s"] == pytest.approx(40 / 6.0)
    assert "energy_window_temp_start_c" not in m  # not read: absent, not 0
    warm = WindowResult(iterations=40, seconds=6.0, energy_j=200.0, wait_s=0.3, temp_start_c=55.0, temp_end_c=58.0)
    assert trial_energy(window=warm, iterations=300)[0]["energy_window_temp_end_c"] == 58.0
    assert t == {"energy_method": "exclusive_window", "energy_window_s": "6.000", "energy_window_iterations": "40",
                 "energy_window_complete": "true"}
    # alone all along: the whole-run counter is the objective, and the window is checked against it
    m, t = trial_energy(window=window, iterations=300, whole_run=_whole(1440.0, shared=0), alone_all_along=True)
    assert t["energy_method"] == "whole_run" and m["gpu_energy_j"] == 1440.0
    assert m["gpu_energy_per_iter_j"] == pytest.approx(4.8)
    assert m["gpu_energy_window_vs_whole_run_dev"] == pytest.approx((5.0 - 4.8) / 4.8)
    # nothing rankable: absent with the reasons, never 0
    blind = WindowResult(iterations=40, seconds=6.0, energy_j=None, wait_s=0.1, reason="counter not supported")
    m, t = trial_energy(window=blind, iterations=300, whole_run=_whole(4200.0, shared=2))
    assert "gpu_energy_j" not in m and "gpu_energy_per_iter_j" not in m
    assert "counter not supported" in t["energy_unavailable_reason"] and "shared" in t["energy_unavailable_reason"]
    with pytest.raises(ValueError, match="iterations must be > 0"):
        trial_energy(window=window, iterations=0)


def test_had_gpu_alone_needs_every_observation_clear():
    assert had_gpu_alone(_whole(1.0, 0), [[11], [11]], own_pids=[11])
    assert not had_gpu_alone(_whole(1.0, 0), [[11], [11, 22]], own_pids=[11])  # someone came and went
    assert not had_gpu_alone(_whole(1.0, 1)) and not had_gpu_alone(_whole(1.0, None)) and not had_gpu_alone(None)


# --------------------------------------------------------------------------- the glue: trial and launcher sessions


def test_two_trial_sessions_share_a_gpu_and_the_study_adds_up(tmp_path, sim):
    study = StudyEnergySession(tmp_path, sim, hz=50, idle_kwargs={"seconds": 0.1, "hz": 20})
    assert study.take_idle_baselines()[UUID].idle_power_w == pytest.approx(122.0)
    study.start()
    out: dict[str, tuple] = {}

    def trial(name: str, pid: int, sm: float, active_w: float) -> None:
        settings = WindowSettings(min_iterations=10, min_seconds=0.15, start_fraction=0.25, sample_hz=50)
        with TrialEnergySession(tmp_path, name, sim, HANDLE, start_iteration=0, total_iterations=60,
                                settings=settings, pids=[pid]) as session:
            sim.add_process(pid, sm=sm, active_w=active_w)
            with NvmlEnergyMeter(sim, HANDLE, sample_hz=20, idle_baseline_s=0) as whole:
                for it in range(60):
                    session.before_iteration(it)
                    time.sleep(0.01)  # one training step
                    session.after_iteration(it, boundary=it == 19)  # validation after iteration 20
            session.yield_point()  # scoring after training: still a place to let a window in
            sim.remove_process(pid)
            out[name] = (*session.finish(whole.result, 60), session.window, len(session._segments))

    threads = [threading.Thread(target=trial, args=a) for a in (("a", 101, 75.0, 150.0), ("b", 202, 25.0, 50.0))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    study.stop()
    for name in ("a", "b"):
        metrics, tags, window, segments = out[name]
        assert window.complete and window.iterations >= 10 and segments == 2  # paused for validation
        assert tags["energy_method"] == "exclusive_window" and tags["gpu_idle_baseline"] == "study"
        assert metrics["gpu_energy_j"] == pytest.approx(metrics["gpu_energy_per_iter_j"] * 60)
        assert metrics["gpu_idle_power_w"] == pytest.approx(122.0) and metrics["gpu_lock_blocked_s"] >= 0
    windows = [w for w in read_waits(tmp_path) if w["label"] == "energy_window"]
    assert {w["owner"] for w in windows} == {"a", "b"}
    for w, v in ((w, v) for w in windows for v in windows if w is not v):  # windows never overlapped
        assert not overlaps((w["requested_at"] + w["wait_s"], w["requested_at"] + w["wait_s"] + w["hold_s"]),
                             (v["requested_at"] + v["wait_s"], v["requested_at"] + v["wait_s"] + v["hold_s"]))
    per_trial, totals, tags = study.results()
    assert tags == {} and set(per_trial) == {"a", "b"}
    assert per_trial["a"]["gpu_energy_attributed_j"] > per_trial["b"]["gpu_energy_attributed_j"] > 0
    assert totals["gpu_energy_attributed_sum_j"] == pytest.approx(sum(m["gpu_energy_attributed_j"]
                                                                      for m in per_trial.values()))
    assert totals["gpu_energy_attributed_sum_j"] + totals["gpu_energy_no_process_j"] + \
        totals["gpu_energy_unregistered_j"] == pytest.approx(totals["gpu_energy_study_measured_j"])
    assert totals["calibration_overhead"] == pytest.approx(totals["calibration_wait_s"] / totals["energy_study_span_s"])
    assert 0 < totals["gpu_energy_attributed_over_measured"] <= 1.0 + 1e-9
    # the benchmark's arithmetic over this study's own files (benchmarks/energy_attribution.py)
    bench = _benchmark_module()
    rows = [bench.trial_row(n, {}, out[n][0], out[n][1], per_trial[n]["gpu_energy_attributed_j"],
                            {"gpu_energy_per_iter_j": out[n][0]["gpu_energy_window_per_iter_j"]}, {}) for n in "ab"]
    spans = [(r["started_at"], r["ended_at"]) for r in load_trial_pids(tmp_path)]
    summary = bench.summarise(rows, totals, spans)
    assert summary["trials_sharing_gpu"] == 2 and summary["max_shared_vs_alone_energy_per_iter_dev"] == 0.0
    assert summary["attributed_over_measured_total"] == pytest.approx(totals["gpu_energy_attributed_over_measured"])
    assert summary["calibration_overhead"] == totals["calibration_overhead"]
    assert summary["goals_met"]["trials_sharing_gpu"] is False  # 2 < 4


# --------------------------------------------------------------------------- benchmark arithmetic


def _benchmark_module():
    spec = importlib.util.spec_from_file_location("energy_attribution_bench", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_summary_from_synthetic_rows(tmp_path):
    bench = _benchmark_module()
    assert bench.max_concurrent([(0, 10), (1, 11), (2, 12), (3, 13), (20, 30)]) == 4
    assert bench.max_concurrent([(0, 1), (1, 2)]) == 1  # back to back is not at once
    window, alone = [5.0, 4.0, 3.0, 2.0], [5.0, 4.2, 3.0, 2.1]
    rows = [bench.trial_row(f"t{i}", {"alpha": i / 4}, {"gpu_energy_j": 600 * w, "gpu_energy_window_per_iter_j": w},
                            {"energy_method": "exclusive_window", "energy_window_s": "5.100"},
                            attributed, {"gpu_energy_j": 600 * a, "gpu_energy_per_iter_j": a}, {"energy_method": "whole_run"})
            for i, (w, a, attributed) in enumerate(zip(window, alone, [1000.0, 900.0, 800.0, 700.0]))]
    assert rows[1]["shared_vs_alone_energy_per_iter_dev"] == pytest.approx(0.2 / 4.2)
    assert rows[0]["energy_window_s"] == 5.1 and rows[0]["alone_gpu_energy_j"] == 3000.0
    assert rows[0]["gpu_energy_teacher_share_j"] is None  # not measured: absent, not 0
    shared_row = bench.trial_row("t", {}, {"gpu_energy_window_per_iter_j": 2.0, "gpu_energy_teacher_share_j": 250.0},
                                 {"energy_teacher_share": "study teacher / 4 samples"}, None,
                                 {"gpu_energy_per_iter_j": 2.0, "gpu_energy_teacher_share_j": 0.0}, {})
    assert (shared_row["gpu_energy_teacher_share_j"], shared_row["alone_gpu_energy_teacher_share_j"]) == (250.0, 0.0)
    assert shared_row["energy_teacher_share"] == "study teacher / 4 samples"
    totals = {"gpu_energy_study_measured_j": 3500.0, "calibration_overhead": 0.02}
    s = bench.summarise(rows, totals, [(0, 10), (1, 10), (2, 10), (3, 10)])
    assert s["trials_sharing_gpu"] == 4 and s["attributed_over_measured_total"] == pytest.approx(3400 / 3500)
    assert s["max_shared_vs_alone_energy_per_iter_dev"] == pytest.approx(0.1 / 2.1)
    assert s["goals_met"] == {"trials_sharing_gpu": True, "attributed_over_measured_total": True,
                              "max_shared_vs_alone_energy_per_iter_dev": True, "calibration_overhead": True}
    # one alone run unmeasured, one trial unattributed: the numbers are absent, not 0
    rows[2] = bench.trial_row("t2", {}, {"gpu_energy_window_per_iter_j": 3.0}, {}, None, {}, {})
    s = bench.summarise(rows, totals, [])
    assert s["max_shared_vs_alone_energy_per_iter_dev"] is None and s["attributed_over_measured_total"] is None
    assert s["trials_sharing_gpu"] is None and s["goals_met"]["max_shared_vs_alone_energy_per_iter_dev"] is None
    missing = bench.missing_hooks(tmp_path, {"gpu_energy_j": 1.0})
    assert any("gpu_energy_window_per_iter_j" in m for m in missing) and any("gpu_idle.json" in m for m in missing)
    for f in ("gpu_idle.json", "energy_samples", "trial_pids", "locks"):
        (tmp_path / f).touch()
    assert bench.missing_hooks(tmp_path, dict.fromkeys(bench.HOOK_METRICS, 1.0)) == []


@pytest.mark.timeout(60)  # before the deferral, opening the window blocked here for good
def test_a_window_due_while_another_is_queued_is_deferred_without_blocking(tmp_path, sim):
    """Trials started together fall due together: the later one keeps training (no wait for
    the lock) and opens its window at a later iteration once the other window has ended."""
    import fcntl

    other = GpuLock(tmp_path, UUID, owner="other")
    settings = WindowSettings(min_iterations=2, min_seconds=0, start_fraction=0.1, sample_hz=50)
    with TrialEnergySession(tmp_path, "late", sim, HANDLE, start_iteration=0, total_iterations=100,
                            settings=settings, pids=[303]) as session:
        assert (session.window_start, session.defer_until) == (10, 50)
        fcntl.flock(other._intent_fd, fcntl.LOCK_EX)  # another trial's window has announced itself
        t0 = time.perf_counter()
        for it in range(10, 13):  # (after_iteration would step aside for that window, blocking here)
            session.before_iteration(it)
            assert session._window is None
        assert time.perf_counter() - t0 < 2.0 and session.deferred_iterations == 3
        fcntl.flock(other._intent_fd, fcntl.LOCK_UN)  # that window is over
        session.before_iteration(13)
        assert session._window is not None  # ours opens now
        session.after_iteration(13)
        session.before_iteration(14)
        session.after_iteration(14)
        assert session.window_done
    other.close()


def test_alone_runs_through_ray_like_a_study_trial_and_in_process_train_the_same_student(tmp_path):
    """The benchmark's control runs each configuration alone; via Ray it runs in a worker with
    the study's per-trial resources (the same environment as in the study), in process without
    Ray. Same config and seed: the same student, each in its own MLflow run."""
    import json as _json

    import ray
    from mlflow import MlflowClient

    from srstudy.config import load_trial_config
    from srstudy.workdir import StudyDir
    from tiny import TINY_TRIAL, write_yaml

    bench = _benchmark_module()
    cfg = load_trial_config(write_yaml(tmp_path / "t.yaml", _json.loads(_json.dumps(TINY_TRIAL))))
    results = {}
    try:
        for via in ("ray", "process"):
            where = tmp_path / via
            uri = StudyDir(where).create().tracking_uri
            run = bench.alone_runner(via, cpus=1, gpu_fraction=0)
            res = run(cfg, workdir=where, tracking_uri=uri, trial_dir=where / "t", run_name=f"alone-{via}")
            results[via] = (res, MlflowClient(tracking_uri=uri).get_run(res.run_id))
        assert ray.is_initialized()  # the Ray one really went through Ray
    finally:
        ray.shutdown()
    (r_ray, run_ray), (r_proc, run_proc) = results["ray"], results["process"]
    assert run_ray.info.status == run_proc.info.status == "FINISHED" and run_ray.info.run_name == "alone-ray"
    assert r_ray.metrics["val_psnr"] == pytest.approx(r_proc.metrics["val_psnr"], abs=1e-3)
    with pytest.raises(ValueError, match="ray, process or both"):
        bench.alone_runner("threads", cpus=1, gpu_fraction=0)

"""benchmarks/profile_trial_loop.py: a real trial's loop profiled on CPU (phases, whole-run split,
GPU fields null), and its GPU-idle analysis (benchmarks/loop_trace.py) on a trace laid out as
torch.profiler writes a CUDA run's, whose busy/idle and gaps are known by construction."""
from __future__ import annotations

import gzip
import importlib.util
import json
import sys
from pathlib import Path

import pytest

from srstudy.trials import loop

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _module(monkeypatch, name: str):
    monkeypatch.syspath_prepend(str(BENCH))  # the tool imports recipe and loop_trace from its folder
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, mod)
    spec.loader.exec_module(mod)
    return mod


def _tiny_args(data: Path, out: Path, trace: Path) -> list[str]:
    return ["--data-root", str(data), "--out", str(out), "--trace", str(trace), "--sets", "Set5",
            "--iterations", "12", "--skip", "2", "--profile-iterations", "3",
            "--set", "device=cpu", "--set", "alpha=0", "--set", "batch_size=2", "--set", "patch_size=16",
            "--set", "student={embed_dim: 8, n_groups: 1, blocks_per_group: 1, rank: 2}",
            "--set", "data.val_max_images=1", "--set", "latency={height: 16, width: 16, repeats: 3, warmup: 1}",
            "--set", f"data.train=[{data.resolve() / 'train/T91/HR'}]",  # fewer images to load
            "--set", "val_interval=5", "--set", "checkpoint_interval=5"]


@pytest.mark.data
def test_profiles_a_tiny_trial_on_cpu(tmp_path, shared_data, monkeypatch):
    tool = _module(monkeypatch, "profile_trial_loop")
    out, trace = tmp_path / "loop.json", tmp_path / "trace.json.gz"
    tool.main(_tiny_args(shared_data, out, trace))
    res = json.loads(out.read_text())
    assert res["device"] == "cpu" and res["iterations"] == 12 and res["profiled"] == [2, 5]
    # GPU figures were not measured on a CPU: null, never 0
    for key in ("gpu", "gpu_busy_ms_per_iteration", "gpu_idle_ms_per_iteration", "gpu_idle_fraction", "top_gaps"):
        assert key in res and res[key] is None
    assert "not measured on a CPU" in res["gpu_unavailable_reason"]
    steady = res["steady"]
    # steady: after warm-up and the profiled iterations with their edges (1..5), before the last one
    assert steady["iterations"] == [6, 11] and steady["wall_ms"]["n"] == 5
    wall = steady["wall_ms"]["mean"]
    assert wall > 0
    for phase in ("batch_wait", "h2d", "forward", "backward", "optimizer", "log", "validate", "checkpoint"):
        assert 0 <= steady["phase_ms"][phase] <= wall * 1.01, phase
    assert sum(steady["phase_ms"].values()) <= wall * 1.01 and steady["unlabelled_ms"] >= -0.01 * wall
    assert steady["phases_not_run"] == ["energy_hooks"]  # no energy session on a CPU
    assert steady["phase_runs"]["forward"] == 5 and steady["phase_runs"]["validate"] == 1  # at iteration 10
    assert 0 < steady["training_thread_cpu_fraction"] and 0 < steady["process_cpu_fraction"]
    run = res["whole_run"]
    assert run["validations"]["count"] == 3 and run["checkpoints"]["count"] == 3  # at 5, 10 and the end (12)
    assert run["warmup"]["iterations"] == 2
    parts = run["setup_s"] + run["training_loop_s"] + run["after_training_s"]
    assert parts == pytest.approx(run["end_to_end_s"], rel=0.02)
    assert 0 < run["iterations_s"] < run["training_loop_s"]
    assert run["end_to_end_s"] >= res["run_trial_metrics"]["wall_time_s"] > 0
    prof = res["profiled_host"]
    assert prof["profiled_iterations"] == 3 and prof["phase_ms_per_iteration"]["forward"] > 0
    # the summary a CUDA run prints, with a GPU analysis (of the known trace below) in place
    lines = tool.summary_lines({**res, "gpu": tool.gpu_idle(_cuda_trace())})
    assert any(line.startswith("GPU per iteration: period 10.00 ms, busy 7.00, idle 3.00 (30.0%)") for line in lines)
    assert "GPU: not measured on a CPU" in "\n".join(tool.summary_lines(res))
    with gzip.open(trace) as f:  # the kept trace holds the loop's ranges
        names = {e.get("name") for e in json.load(f)["traceEvents"]}
    assert {"loop/iteration", "loop/forward", "loop/backward"} <= names


def test_refuses_a_run_too_short_for_steady_iterations(tmp_path, monkeypatch, capsys):
    tool = _module(monkeypatch, "profile_trial_loop")
    with pytest.raises(SystemExit):
        tool.parse_args(["--data-root", str(tmp_path), "--out", "x.json", "--iterations", "60"])
    assert "--iterations 60 leaves no steady iterations" in capsys.readouterr().err


def test_phase_listener_is_one_at_a_time_and_cleared():
    with loop.phase_listener(lambda *a: None):
        with pytest.raises(RuntimeError, match="already set"):
            with loop.phase_listener(lambda *a: None):
                pass
    assert loop._phase_listener is None


# ---- the GPU analysis on a known trace -------------------------------------------------------
def _x(cat: str, name: str, ts: float, dur: float, tid=1, **args) -> dict:
    return {"ph": "X", "cat": cat, "name": name, "pid": 0 if cat in ("kernel", "gpu_memcpy") else 10, "tid": tid,
            "ts": ts, "dur": dur, "args": args}


def _cuda_trace() -> list[dict]:
    """Three profiled iterations of 10 ms (µs clock). In each: forward launches k1 (0.5 ms after the
    start, runs 4 ms) and a copy on another stream inside it; backward launches k2 at +5 ms (runs
    3 ms from +5.5). So per iteration the GPU is busy 7 of 10 ms, with a 1 ms gap (+4.5 → +5.5)
    ended by k2, launched in backward, and a 2 ms gap (+8.5 → the next iteration's k1 at +10.5),
    launched in forward. Plus a prefetch thread's op."""
    ev, corr = [], 0
    for k in range(3):
        t = 1000.0 + 10_000 * k
        ev += [_x("user_annotation", "loop/iteration", t, 9_900),
               _x("user_annotation", "loop/batch_wait", t + 10, 300),
               _x("user_annotation", "loop/forward", t + 400, 4_000),
               _x("user_annotation", "loop/backward", t + 4_900, 4_000),
               _x("cpu_op", "aten::conv2d", t + 450, 100), _x("cpu_op", "aten::item", t + 8_400, 1_000)]
        for when, run, dur, name, cat, stream in ((t + 450, t + 500, 4_000, "k1", "kernel", 7),
                                                  (t + 460, t + 1_000, 2_000, "copy", "gpu_memcpy", 9),
                                                  (t + 5_000, t + 5_500, 3_000, "k2", "kernel", 7)):
            corr += 1
            ev.append(_x("cuda_driver" if name == "k2" else "cuda_runtime", "launch", when, 20, correlation=corr))
            ev.append(_x(cat, name, run, dur, tid=stream, correlation=corr))
        ev.append(_x("cpu_op", "aten::pin_memory", t + 100, 2_000, tid=2))  # the prefetch thread
    return ev


def test_gpu_idle_is_the_union_of_gpu_intervals_with_gaps_attributed(monkeypatch):
    trace = _module(monkeypatch, "loop_trace")
    g = trace.gpu_idle(_cuda_trace(), gap_ms=0.2)
    # period: first GPU event of iteration 0 (1.5 ms) to that of iteration 2 (21.5 ms) = 2 iterations
    assert g["measured_iterations"] == 2
    assert g["gpu_period_ms_per_iteration"] == pytest.approx(10.0)
    assert g["gpu_busy_ms_per_iteration"] == pytest.approx(7.0)  # k1 ∪ copy (4 ms) + k2 (3 ms), not 9
    assert g["gpu_idle_ms_per_iteration"] == pytest.approx(3.0) and g["gpu_idle_fraction"] == pytest.approx(0.3)
    assert g["gpu_time_ms_per_iteration_by_kind"] == pytest.approx({"kernel": 7.0, "gpu_memcpy": 2.0})
    assert g["idle_ms_per_iteration_in_gaps_by_next_launch_phase"] == pytest.approx({"forward": 2.0, "backward": 1.0})
    assert g["gaps_over_threshold"] == 4  # 1 ms and 2 ms in each measured iteration (the last up to the period's end)
    top = g["top_gaps"][0]
    assert top["idle_ms"] == pytest.approx(2.0) and top["next_gpu_event"] == "k1"
    assert top["host_phase_at_start"] == "backward" and top["host_op_at_start"] == "aten::item"
    assert top["next_launched_in_phase"] == "forward" and top["launch_late"] is True
    assert top["host_iteration_at_start"] == 0
    second = g["top_gaps"][2]  # after the two 2 ms gaps
    assert second["idle_ms"] == pytest.approx(1.0) and second["next_launched_in_phase"] == "backward"
    assert second["launch_late"] is True and second["host_phase_at_start"] == "unlabelled"
    host = trace.host_phases(_cuda_trace())
    assert host["profiled_iterations"] == 3
    assert host["phase_ms_per_iteration"] == pytest.approx({"batch_wait": 0.3, "forward": 4.0, "backward": 4.0})
    assert host["other_threads_cpu_op_ms_per_iteration"] == pytest.approx({"2": 2.0})


def test_gpu_idle_is_absent_without_gpu_events(monkeypatch):
    trace = _module(monkeypatch, "loop_trace")
    cpu_only = [e for e in _cuda_trace() if e["cat"] not in ("kernel", "gpu_memcpy")]
    assert trace.gpu_idle(cpu_only) is None

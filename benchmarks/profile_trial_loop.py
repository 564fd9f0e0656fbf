"""Where a real trial's training loop spends its time, per iteration (issue 15: fast trials).

Runs srstudy's own trial (`srstudy.trials.distill.run_trial`: data, MLflow run, energy session,
the training loop `trials.loop.train`, validation, checkpoints, scoring) on the recipe config
(benchmarks/configs/paper_recipe.yaml with `--set` overrides, as paper_recipe_trial.py), for
`--iterations` iterations, and measures through the loop's phase listener
(`srstudy.trials.loop.phase_listener`) and torch.profiler:

* per iteration, over the steady range (after `--skip` warm-up iterations, the profiled ones
  and their edges left out, and the last one, which validates and checkpoints): host wall time
  between successive iteration starts, host time in each phase (energy_hooks, batch_wait, h2d,
  forward, backward, optimizer, log, validate, checkpoint; `unlabelled` = the rest), and the
  training thread's and the whole process's CPU time;
* on CUDA, over `--profile-iterations` profiled iterations: the GPU's busy time (the union of
  kernel/copy/memset intervals), its idle time and fraction, idle by the phase that launched
  the kernel ending each gap, and the largest gaps with what the host was doing
  (benchmarks/loop_trace.py); null on a CPU, where the profiler records the CPU only;
* the whole run: setup (before the first iteration), iterations, validations, checkpoints,
  after training (scoring, latency, artifacts), and the warm-up iterations' excess (JIT).

    python benchmarks/profile_trial_loop.py --data-root ../shared/data --set alpha=0 --set precision=tf32 \\
        --iterations 300 --out benchmarks/results/profile_trial_loop_h200.json [--trace trace.json.gz]

The trial runs in a fresh folder (`--workdir`, default a temporary one, removed after): a trial
folder that already holds a checkpoint would resume instead of training.
"""
from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import logging
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

from srstudy.config_io import ConfigError
from srstudy.measure.inference import resolve_device
from srstudy.trials import loop
from srstudy.trials.distill import run_trial, trial_dir_for

from loop_trace import gpu_idle, host_phases, load_events
from recipe import recipe_config

log = logging.getLogger("profile_trial_loop")


class LoopRecorder:
    """The loop's phase listener: host times of each phase per iteration, the CPU clocks at each
    iteration's end, and torch.profiler started before iteration `profile_start` and stopped
    (after a device sync) before iteration `profile_stop`."""

    def __init__(self, *, device: torch.device, profile_start: int, profile_stop: int) -> None:
        self.device, self.profile_start, self.profile_stop = device, profile_start, profile_stop
        self.phases: dict[int, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self.starts: dict[int, float] = {}
        self.ends: dict[int, float] = {}
        self.cpu: dict[int, tuple[float, float]] = {}  # at the iteration's end: (training thread, process) s
        self.profiler: profile | None = None
        self.profiler_control_s = 0.0
        self.profiled = False

    def __call__(self, name: str, iteration: int, t0: float, t1: float) -> None:
        if name != "iteration":
            self.phases[iteration][name] += t1 - t0
            return
        self.starts[iteration], self.ends[iteration] = t0, t1
        self.cpu[iteration] = (time.thread_time(), time.process_time())
        if iteration + 1 == self.profile_start:
            c0 = time.perf_counter()
            activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self.device.type == "cuda" else [])
            self.profiler = profile(activities=activities)
            self.profiler.start()
            self.profiler_control_s += time.perf_counter() - c0
        elif iteration + 1 == self.profile_stop:
            self.stop_profiler()

    def stop_profiler(self) -> None:
        """Sync the device (the last profiled kernels finish inside the trace) and stop the profiler."""
        if self.profiler is None or self.profiled:
            return
        c0 = time.perf_counter()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.profiler.stop()
        self.profiled = True
        self.profiler_control_s += time.perf_counter() - c0


def _stats(values: list[float]) -> dict[str, float] | None:
    """Mean, median, p10, p90 and max of `values` (ms), or None when there are none."""
    if not values:
        return None
    s = sorted(values)
    q = lambda f: s[min(len(s) - 1, int(round(f * (len(s) - 1))))]  # noqa: E731
    return {"mean": statistics.fmean(s), "median": statistics.median(s), "p10": q(0.1), "p90": q(0.9), "max": s[-1],
            "n": len(s)}


def per_iteration(rec: LoopRecorder, steady: list[int]) -> dict[str, Any]:
    """Wall, phase and CPU ms per iteration over the `steady` iterations (each has a next start)."""
    wall = {i: (rec.starts[i + 1] - rec.starts[i]) * 1000 for i in steady}
    phases = {p: [rec.phases[i].get(p, 0.0) * 1000 for i in steady] for p in loop.PHASES
              if any(p in rec.phases[i] for i in steady)}
    labelled = {i: sum(rec.phases[i].values()) * 1000 for i in steady}
    cpu = [(rec.cpu[i][0] - rec.cpu[i - 1][0], rec.cpu[i][1] - rec.cpu[i - 1][1],
            rec.ends[i] - rec.ends[i - 1]) for i in steady if i - 1 in rec.cpu]
    span = sum(c[2] for c in cpu)
    return {
        "iterations": [steady[0], steady[-1] + 1] if steady else None,  # [first, last + 1]: gaps left out
        "wall_ms": _stats(list(wall.values())),
        "wall_ms_without_validate_checkpoint": _stats(
            [wall[i] - 1000 * (rec.phases[i].get("validate", 0) + rec.phases[i].get("checkpoint", 0)) for i in steady]),
        "phase_ms": {p: statistics.fmean(v) for p, v in phases.items()},
        "phase_runs": {p: sum(1 for i in steady if p in rec.phases[i]) for p in phases},
        "phases_not_run": [p for p in loop.PHASES if p not in phases],
        "unlabelled_ms": statistics.fmean(wall[i] - labelled[i] for i in steady) if steady else None,
        "training_thread_cpu_fraction": sum(c[0] for c in cpu) / span if span else None,
        "process_cpu_fraction": sum(c[1] for c in cpu) / span if span else None,
    }


def whole_run(rec: LoopRecorder, n: int, skip: int, steady_median_ms: float | None, t_call: float,
              t_return: float) -> dict[str, Any]:
    """Setup, iterations, validations, checkpoints, after training: host seconds of the whole trial."""
    total = lambda name: sum(p.get(name, 0.0) for p in rec.phases.values())  # noqa: E731
    loop_s = rec.ends[n - 1] - rec.starts[0]
    warm = [(rec.starts[i + 1] - rec.starts[i]) * 1000 for i in range(min(skip, n - 1))]
    return {
        "end_to_end_s": t_return - t_call,
        "setup_s": rec.starts[0] - t_call,
        "training_loop_s": loop_s,
        "iterations_s": loop_s - total("validate") - total("checkpoint") - rec.profiler_control_s,
        "validations": {"count": sum(1 for p in rec.phases.values() if "validate" in p), "s": total("validate")},
        "checkpoints": {"count": sum(1 for p in rec.phases.values() if "checkpoint" in p), "s": total("checkpoint")},
        "log_s": total("log"),
        "profiler_control_s": rec.profiler_control_s,
        "after_training_s": t_return - rec.ends[n - 1],
        "warmup": {"iterations": len(warm), "s": sum(warm) / 1000, "first_ms": warm[:10],
                   "excess_over_steady_median_s": (None if steady_median_ms is None
                                                   else sum(w - steady_median_ms for w in warm) / 1000)},
    }


def _versions() -> dict[str, Any]:
    triton = None
    if importlib.util.find_spec("triton") is not None:
        import triton
        triton = triton.__version__
    return {"torch": torch.__version__, "triton": triton, "python": sys.version.split()[0]}


def _f(value: float | None, spec: str = ".2f") -> str:
    return "n/a" if value is None else format(value, spec)


def summary_lines(out: dict[str, Any]) -> list[str]:
    """A short human summary of the result."""
    r, s, g = out["whole_run"], out["steady"], out["gpu"]
    w = s["wall_ms"] or {}
    span = lambda x: "none" if not x else f"{x[0]}..{x[1] - 1}"  # noqa: E731
    lines = [f"{out['device']}: {out['iterations']} iterations; steady {span(s['iterations'])}, "
             f"profiled {span(out['profiled'])}",
             f"end to end {r['end_to_end_s']:.1f} s = setup {r['setup_s']:.1f} + iterations {r['iterations_s']:.1f} "
             f"+ validations {r['validations']['s']:.1f} ({r['validations']['count']}) + checkpoints "
             f"{r['checkpoints']['s']:.2f} ({r['checkpoints']['count']}) + profiler {r['profiler_control_s']:.1f} "
             f"+ after training {r['after_training_s']:.1f}; warm-up ({r['warmup']['iterations']} iterations) "
             f"{_f(r['warmup']['excess_over_steady_median_s'], '.1f')} s over the steady median",
             f"steady wall/iteration: mean {_f(w.get('mean'))} ms, median {_f(w.get('median'))}, p90 {_f(w.get('p90'))}"
             "; host phases (ms): " + ", ".join(f"{k} {v:.2f}" for k, v in s["phase_ms"].items())
             + f", unlabelled {_f(s['unlabelled_ms'])}",
             f"training thread CPU {_f(s['training_thread_cpu_fraction'], '.0%')} of wall, process CPU "
             f"{_f(s['process_cpu_fraction'], '.0%')}"]
    pw = (out["profiled_host"]["wall_ms"] or {}).get("mean")
    lines.append(f"profiled iterations: wall {_f(pw)} ms/iteration under the profiler vs {_f(w.get('mean'))} steady")
    if g is None:
        lines.append(f"GPU: {out['gpu_unavailable_reason']}")
    else:
        lines.append(f"GPU per iteration: period {g['gpu_period_ms_per_iteration']:.2f} ms, busy "
                     f"{g['gpu_busy_ms_per_iteration']:.2f}, idle {g['gpu_idle_ms_per_iteration']:.2f} "
                     f"({_f(g['gpu_idle_fraction'], '.1%')}); idle in gaps > {g['gap_threshold_ms']} ms by next "
                     "launch phase: " + ", ".join(
                         f"{k} {v:.2f}" for k, v in g["idle_ms_per_iteration_in_gaps_by_next_launch_phase"].items())
                     + f"; in smaller gaps {g['idle_ms_per_iteration_in_small_gaps']:.2f}")
        for gap in g["top_gaps"][:5]:
            lines.append(f"  gap {gap['idle_ms']:.2f} ms: host in {gap['host_phase_at_start']} ({gap['host_op_at_start']}),"
                         f" then {gap['next_gpu_event'][:50]} launched in {gap['next_launched_in_phase']}"
                         f"{' (late)' if gap['launch_late'] else ''}")
    return lines


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", required=True, help="folder with train/T91/HR, train/BSD200/HR, benchmarks/<Set>")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="key=value over paper_recipe.yaml")
    ap.add_argument("--sets", default="Set5,Set14", help="benchmark sets scored after training")
    ap.add_argument("--iterations", type=int, default=300, help="training iterations (wins over --set iterations=)")
    ap.add_argument("--skip", type=int, default=50, help="warm-up iterations left out of the steady numbers")
    ap.add_argument("--profile-iterations", type=int, default=20, help="iterations under torch.profiler")
    ap.add_argument("--profile-start", type=int, default=None, help="first profiled iteration (default: --skip)")
    ap.add_argument("--gap-ms", type=float, default=0.2, help="GPU idle longer than this is a gap")
    ap.add_argument("--workdir", default=None, help="fresh folder for the trial (default: a temporary one)")
    ap.add_argument("--trace", default=None, help="keep the profiler's Chrome trace here (.gz: gzipped)")
    ap.add_argument("--out", required=True, help="result JSON")
    args = ap.parse_args(argv)
    args.profile_start = args.skip if args.profile_start is None else args.profile_start
    stop = args.profile_start + args.profile_iterations
    if args.skip < 1 or args.profile_iterations < 2 or args.profile_start < max(1, args.skip):
        ap.error("need --skip >= 1, --profile-iterations >= 2 and --profile-start >= --skip")
    if args.iterations < stop + 3:
        ap.error(f"--iterations {args.iterations} leaves no steady iterations after the profiled ones "
                 f"(--profile-start {args.profile_start} + --profile-iterations {args.profile_iterations}); "
                 f"give at least {stop + 3}")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the trial under the recorder; write and return the result (see the module docstring)."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        cfg = recipe_config(args.data_root, [*args.overrides, f"iterations={args.iterations}"], sets=args.sets)
    except ConfigError as err:
        raise SystemExit(f"error: {err}") from None
    try:
        device = resolve_device(cfg.device)
    except RuntimeError as err:
        raise SystemExit(f"error: {err} (here: --set device=cpu)") from None
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="profile_trial_loop_"))
    tdir = trial_dir_for(cfg, workdir)
    if tdir.is_dir() and any(tdir.iterdir()):
        raise SystemExit(f"error: the trial folder {tdir} is not empty (it would resume, not train); "
                         f"give a fresh --workdir")
    n, start = cfg.iterations, args.profile_start
    stop = start + args.profile_iterations
    rec = LoopRecorder(device=device, profile_start=start, profile_stop=stop)
    try:
        t_call = time.perf_counter()
        with loop.phase_listener(rec):
            result = run_trial(cfg, workdir=workdir)
        t_return = time.perf_counter()
    finally:
        rec.stop_profiler()
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    if len(rec.starts) != n:
        raise RuntimeError(f"the loop ran {len(rec.starts)} iterations, not {n}: did the trial resume?")
    with tempfile.TemporaryDirectory() as tmp:
        trace = Path(tmp) / "trace.json"
        rec.profiler.export_chrome_trace(str(trace))
        events = load_events(trace)
        if args.trace:
            opener = gzip.open if args.trace.endswith(".gz") else open
            with open(trace, "rb") as src, opener(args.trace, "wb") as dst:
                shutil.copyfileobj(src, dst)
    steady = [i for i in range(args.skip, n - 1) if not start - 1 <= i <= stop]
    steady_stats = per_iteration(rec, steady)
    gpu, gpu_reason = None, "not measured on a CPU (the profiler records the CPU only)"
    if device.type == "cuda":
        try:  # the run's other numbers are kept whatever the trace holds
            gpu, gpu_reason = gpu_idle(events, gap_ms=args.gap_ms), None
        except Exception as err:  # noqa: BLE001 — recorded in the result, the trace kept with --trace
            gpu_reason = f"GPU trace analysis failed: {type(err).__name__}: {err}"
            log.error("%s", gpu_reason)
    out = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        **_versions(),
        "config": cfg.model_dump(mode="json"),
        "iterations": n,
        "skip": args.skip,
        "profiled": [start, stop],
        "whole_run": whole_run(rec, n, args.skip, (steady_stats["wall_ms"] or {}).get("median"), t_call, t_return),
        "steady": steady_stats,
        "profiled_host": {**host_phases(events),
                          "wall_ms": _stats([(rec.starts[i + 1] - rec.starts[i]) * 1000 for i in range(start, stop - 1)])},
        "gpu_busy_ms_per_iteration": gpu and gpu["gpu_busy_ms_per_iteration"],
        "gpu_idle_ms_per_iteration": gpu and gpu["gpu_idle_ms_per_iteration"],
        "gpu_idle_fraction": gpu and gpu["gpu_idle_fraction"],
        "top_gaps": gpu and gpu["top_gaps"],
        "gpu": gpu,
        "gpu_unavailable_reason": gpu_reason,
        "run_trial_metrics": {k: result.metrics.get(k) for k in
                              ("wall_time_s", "setup_s", "train_time_s", "after_training_s", "iterations_per_s")},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1, default=str))
    print("\n".join(summary_lines(out)), flush=True)
    return out


if __name__ == "__main__":
    main()

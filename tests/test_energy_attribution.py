"""Energy you can rank (issue 17), on CPU with a simulated GPU and real processes.

The GPU lock's semantics across separate processes; the idle baseline is never sampled while
another process is on the GPU; the Kepler-style attribution on a hand-checkable case;
unsupported counters give absent metrics and a reason, never 0. (The exclusive window, the
objective and the trial/launcher glue: tests/test_energy_window.py.)
"""
from __future__ import annotations

import json
import signal
import threading
import time
from dataclasses import replace

import pytest
import torch

from srstudy.measure.attribution import (
    AttributionSampler, Sample, attribute, load_trial_pids, read_samples, register_trial_pids, samples_path)
from srstudy.measure.gpu_lock import GpuLock, lock_key, read_waits
from srstudy.measure.idle import ensure_idle_baseline, read_idle_baseline, take_idle_baseline
from support.actors import UUID, actors, overlaps, sim  # noqa: F401 - actors, sim: fixtures
from support.simulated_nvml import HANDLE, ManualClock, SimulatedNvml


# --------------------------------------------------------------------------- the lock


def test_two_readers_hold_the_lock_at_once(actors, tmp_path):
    # each reader releases only after seeing the other one holding: impossible without overlap
    for me, other in (("r1", "r2"), ("r2", "r1")):
        actors.start("reader", me, wait_for=str(tmp_path / f"{other}.held"), timeout_s=30)
    for me in ("r1", "r2"):
        actors.wait_event(me, "acquired")
        (tmp_path / f"{me}.held").touch()
    actors.finish()
    assert overlaps(actors.intervals("r1")[0], actors.intervals("r2")[0])


def test_writer_excludes_readers_and_other_writers(actors, tmp_path):
    go = {n: tmp_path / f"go-{n}" for n in ("r1", "w1")}
    actors.start("reader", "r1", wait_for=str(go["r1"]))
    actors.wait_event("r1", "acquired")
    actors.start("writer", "w1", wait_for=str(go["w1"]))
    actors.wait_event("w1", "requested")
    actors.start("reader", "r2", hold_s=0.2)  # arrives while w1 waits: must queue behind it
    actors.wait_event("r2", "requested")
    time.sleep(0.5)
    assert not actors.events("w1", "acquired") and not actors.events("r2", "acquired")
    go["r1"].touch()
    actors.wait_event("w1", "acquired")
    actors.start("writer", "w2", hold_s=0.2)
    actors.wait_event("w2", "requested")
    time.sleep(0.5)
    assert not actors.events("w2", "acquired") and not actors.events("r2", "acquired")
    go["w1"].touch()
    actors.finish()
    spans = {n: actors.intervals(n) for n in ("r1", "r2", "w1", "w2")}
    assert all(len(s) == 1 for s in spans.values()), spans
    for writer in ("w1", "w2"):
        for other in spans:
            if other != writer:
                assert not overlaps(spans[writer][0], spans[other][0]), (writer, other, spans)
    waits = {w["owner"]: w for w in read_waits(tmp_path)}
    assert set(waits) == {"w1", "w2"} and waits["w1"]["wait_s"] > 0.4 and waits["w1"]["hold_s"] > 0
    assert waits["w1"]["gpu"] == lock_key(UUID)


@pytest.mark.parametrize("role", ["relay_reader", "hold_reader"])
def test_waiting_writer_is_not_starved_by_overlapping_readers(actors, tmp_path, role):
    # two readers whose holds always overlap: the lock file itself is never free of readers
    # (relay: re-acquired per iteration, handed on; hold: held across iterations)
    stop = tmp_path / "stop"
    (tmp_path / "relay.turn").write_text("r1")
    for name, partner in (("r1", "r2"), ("r2", "r1")):
        actors.start(role, name, partner=partner, iterations=100000, iter_s=0.02, stop_file=str(stop), hold_s=0.0)
        actors.wait_event(name, "acquired")
    time.sleep(0.5)
    actors.start("writer", "w", hold_s=0.3)
    try:
        actors.wait_event("w", "released", timeout=20)
    finally:
        stop.touch()
    actors.finish()
    (w_span,) = actors.intervals("w")
    for name in ("r1", "r2"):
        assert not any(overlaps(w_span, s) for s in actors.intervals(name))
        assert actors.events(name, "released")[-1]["t"] > w_span[1]  # readers were still going
    if role == "hold_reader":  # held across iterations, yet stepped aside for the writer
        assert all(e["yields"] >= 1 for e in actors.events() if e["event"] == "released" and "yields" in e)
        iters = [e["t"] for n in ("r1", "r2") for e in actors.events(n, "iter")]
        assert not any(w_span[0] < t < w_span[1] for t in iters)


@pytest.mark.parametrize("role", ["writer", "reader"])
def test_killed_holder_releases_the_lock(actors, role):
    p = actors.start(role, "victim", hold_s=600)
    actors.wait_event("victim", "acquired")
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=30)
    lock = GpuLock(actors.tmp, UUID)
    got = threading.Event()
    t = threading.Thread(target=lambda: (lock.acquire_exclusive("after-kill"), got.set()), daemon=True)
    t.start()
    assert got.wait(timeout=20), f"the lock stayed held after its {role} was killed"
    lock.release_exclusive()
    lock.close()


def test_lock_misuse_and_uuid_keys(tmp_path):
    assert lock_key("GPU-ABC-1") == lock_key(b"abc-1") == "abc-1"
    assert lock_key("MIG-GPU-ab/1/0") == "mig-gpu-ab_1_0"
    with pytest.raises(ValueError, match="UUID is empty"):
        lock_key(" ")
    with GpuLock(tmp_path, UUID) as lock:
        with lock.hold_shared() as hold:
            with pytest.raises(RuntimeError, match="release the shared hold first"):
                lock.acquire_exclusive()
            assert not lock.writer_waiting() and not hold.between_iterations()
            with hold.released(), lock.exclusive("own window") as grant:
                assert lock.state == "exclusive" and grant.wait_s >= 0
            assert lock.state == "shared"
        assert lock.state == "free"
    assert [w["label"] for w in read_waits(tmp_path)] == ["own window"]


# --------------------------------------------------------------------------- idle baseline


def test_idle_baseline_waits_for_the_other_process_to_leave(actors, sim, tmp_path):
    leave = tmp_path / "leave"
    actors.start("gpu_process", "trainer", sim=str(sim.path), wait_for=str(leave), active_w=210.0, sm=95.0)
    actors.wait_event("trainer", "joined")
    threading.Timer(1.0, leave.touch).start()
    base = ensure_idle_baseline(tmp_path, sim, HANDLE, seconds=0.3, hz=20, poll_s=0.05, max_wait_s=30)
    actors.finish()
    left = actors.wait_event("trainer", "left")["t"]
    assert base.idle_power_w == pytest.approx(122.0) and base.samples == 6 and base.power_field == "instant"
    assert base.waited_s >= 0.5 and sim.counters()["pid_reads"] > 5  # it polled while the trainer ran
    assert sim.counters()["power_reads_while_busy"] == 0  # and never read power meanwhile
    stored = json.loads((tmp_path / "gpu_idle.json").read_text())[UUID]
    assert stored["idle_power_w"] == pytest.approx(122.0) and stored["samples"] == 6
    assert read_idle_baseline(tmp_path, UUID).metrics() == {"gpu_idle_power_w": pytest.approx(122.0)}
    (idle_hold,) = [w for w in read_waits(tmp_path) if w["label"] == "idle_baseline"]
    assert idle_hold["requested_at"] >= left  # sampled under the exclusive lock, after it left
    sim.add_process(999, active_w=300.0)  # once per study: later callers read, never re-sample
    assert ensure_idle_baseline(tmp_path, sim, HANDLE).idle_power_w == pytest.approx(122.0)


def test_idle_baseline_discards_samples_when_a_process_appears_mid_sampling(tmp_path):
    class Intruder(SimulatedNvml):
        """A process joins at the 4th process-list read and leaves at the 7th."""

        def compute_pids(self, handle):
            n = self.counters()["pid_reads"]
            if n == 3:
                self.add_process(4242, sm=80, active_w=250.0)
            if n == 6:
                self.remove_process(4242)
            return super().compute_pids(handle)

    SimulatedNvml.create(tmp_path / "gpu.json", uuid=UUID, idle_w=122.0)
    gpu = Intruder(tmp_path / "gpu.json")
    with GpuLock(tmp_path, UUID) as lock:
        base = take_idle_baseline(gpu, HANDLE, lock, seconds=0.5, hz=10, poll_s=0.01, sleep=lambda s: None)
    assert base.idle_power_w == pytest.approx(122.0) and base.samples == 5
    assert gpu.counters()["power_reads_while_busy"] == 0
    assert len([w for w in read_waits(tmp_path) if w["label"] == "idle_baseline"]) == 2  # first try dropped


def test_idle_baseline_absent_with_reason_never_zero(tmp_path, sim):
    sim.add_process(4242, active_w=200.0)
    base = ensure_idle_baseline(tmp_path, sim, HANDLE, seconds=0.1, hz=10, poll_s=0.01, max_wait_s=0.2)
    assert base.idle_power_w is None and "[4242] stayed on the GPU" in base.reason
    assert base.metrics() == {} and "4242" in base.tags()["gpu_idle_unavailable_reason"]
    assert sim.counters()["power_reads_while_busy"] == 0
    assert read_idle_baseline(tmp_path, UUID).reason == base.reason  # stored, so trials can say why
    assert "no idle baseline" in read_idle_baseline(tmp_path, "GPU-other").reason
    for kwargs, says in (({"power": False}, "no power reading"), ({"process_list": False}, "cannot list")):
        other = SimulatedNvml.create(tmp_path / f"{says}.json", uuid="GPU-x", **kwargs)
        with GpuLock(tmp_path, "GPU-x") as lock:
            base = take_idle_baseline(other, HANDLE, lock, seconds=0.1, hz=10, sleep=lambda s: None)
        assert base.idle_power_w is None and says in base.reason and base.metrics() == {}


# --------------------------------------------------------------------------- attribution


@pytest.fixture
def scripted(tmp_path):
    """A simulated GPU on a hand-driven clock, its sampler, and two registered trials."""
    clock = ManualClock()
    gpu = SimulatedNvml.create(tmp_path / "gpu.json", uuid=UUID, idle_w=100.0, clock=clock)
    register_trial_pids(tmp_path, "trial_a", [11], gpu_uuid=UUID, clock=clock)
    register_trial_pids(tmp_path, "trial_b", [22], gpu_uuid=UUID, clock=clock)
    sampler = AttributionSampler(gpu, HANDLE, samples_path(tmp_path, UUID), hz=1.0, clock=clock)
    return clock, gpu, sampler


def _both_busy(scripted, *, a, b, seconds):
    """trial_a's PID 11 and trial_b's PID 22 on the GPU at (SM %, watts) `a` and `b` for
    `seconds`, sampled at both ends."""
    clock, gpu, sampler = scripted
    gpu.add_process(11, sm=a[0], active_w=a[1])
    gpu.add_process(22, sm=b[0], active_w=b[1])
    sampler.sample_once()
    clock.advance(seconds)
    sampler.sample_once()


def test_attribution_hand_checked_75_25(tmp_path, scripted):
    clock, gpu, sampler = scripted
    _both_busy(scripted, a=(75, 150.0), b=(25, 50.0), seconds=10.0)
    # 10 s at 300 W = 3000 J: idle 1000 → 500 + 500, active 2000 → 1500 + 500
    gpu.remove_process(22)
    clock.advance(10.0)
    sampler.sample_once()  # 10 s at 250 W = 2500 J, all trial_a's
    gpu.remove_process(11)
    gpu.add_process(33, sm=50, active_w=20.0)  # a process nobody registered: 120 W
    clock.advance(5.0)
    sampler.sample_once()
    gpu.remove_process(33)
    clock.advance(5.0)
    sampler.sample_once()  # 5 s at 100 W, no process at all
    header, samples = read_samples(samples_path(tmp_path, UUID))
    assert header["uuid"] == UUID and len(samples) == 5 and samples[1].util == {11: 75.0, 22: 25.0}
    att = attribute(samples, 100.0, load_trial_pids(tmp_path))
    assert att.reason is None and att.energy_source == "counter" and att.seconds == 30.0
    assert att.per_trial_j == pytest.approx({"trial_a": 500 + 1500 + 2500, "trial_b": 500 + 500})
    assert att.unregistered_j == pytest.approx({33: 600.0}) and att.no_process_j == pytest.approx(500.0)
    assert att.measured_j == pytest.approx(gpu.true_energy_j()) == pytest.approx(3000 + 2500 + 600 + 500)
    total = sum(att.per_trial_j.values()) + sum(att.unregistered_j.values()) + att.no_process_j
    assert total == pytest.approx(att.measured_j)  # every joule goes somewhere, once
    assert att.trial_metrics("trial_a") == {"gpu_energy_attributed_j": pytest.approx(4500.0)}
    sm = att.study_metrics()
    assert sm["gpu_energy_attributed_sum_j"] == pytest.approx(5500.0)
    assert sm["gpu_energy_attributed_over_measured"] == pytest.approx(5500.0 / 6600.0)
    assert att.tags()["energy_attribution"] == "sm_share_kepler"
    inside = attribute(samples, 100.0, load_trial_pids(tmp_path), start=samples[0].t, end=samples[2].t)
    assert inside.measured_j == pytest.approx(5500.0) and inside.no_process_j == 0.0  # the trials' span only


def test_attribution_idle_split_evenly_when_no_process_is_busy(tmp_path, scripted):
    clock, gpu, sampler = scripted
    _both_busy(scripted, a=(0, 10.0), b=(0, 10.0), seconds=4.0)  # 4 s at 120 W: idle 400, active 80, split evenly
    att = attribute(read_samples(sampler.path)[1], 100.0, load_trial_pids(tmp_path))
    assert att.per_trial_j == pytest.approx({"trial_a": 240.0, "trial_b": 240.0})


def test_attribution_absent_with_reason_never_zero(tmp_path):
    clock = ManualClock()
    gpu = SimulatedNvml.create(tmp_path / "gpu.json", uuid=UUID, process_util=False, clock=clock)
    gpu.add_process(11, sm=80, active_w=100.0)
    register_trial_pids(tmp_path, "trial_a", [11], clock=clock)
    sampler = AttributionSampler(gpu, HANDLE, tmp_path / "s.jsonl", clock=clock)
    for _ in range(3):
        sampler.sample_once()
        clock.advance(1.0)
    samples = read_samples(sampler.path)[1]
    regs = load_trial_pids(tmp_path)
    cases = [(attribute(samples, 120.0, regs), "per-process utilisation"),
             (attribute(samples[:1], 120.0, regs), "at least 2"),
             (attribute([replace(s, util={}) for s in samples], None, regs, idle_reason="GPU busy"), "GPU busy"),
             (attribute([replace(s, util={}, energy_mj=None, power_w=None) for s in samples], 120.0, regs),
              "no energy counter and no power")]
    for att, says in cases:
        assert says in att.reason and att.trial_metrics("trial_a") == {} and att.study_metrics() == {}
        assert att.attributed_sum_j is None and says in att.tags()["energy_attribution_unavailable_reason"]
    powered = attribute([replace(s, util={11: 80.0}, energy_mj=None) for s in samples], 120.0, regs)
    assert powered.energy_source == "power_integral" and powered.measured_j == pytest.approx(2 * 220.0)


def test_trial_pid_registration_spans_keep_reused_pids_apart(tmp_path):
    clock = ManualClock()
    register_trial_pids(tmp_path, "first", [11], clock=clock)
    clock.advance(100)
    register_trial_pids(tmp_path, "first", ended=True, pids=[], clock=clock)
    clock.advance(100)
    register_trial_pids(tmp_path, "second", [11], clock=clock)  # the OS handed the PID on
    regs = {r["trial"]: r for r in load_trial_pids(tmp_path)}
    assert regs["first"]["pids"] == [11] and regs["first"]["ended_at"] == regs["first"]["started_at"] + 100
    start = regs["first"]["started_at"]  # 1 J/s; an interval belongs to whoever had the PID at its end
    s = [Sample(t=start + dt, energy_mj=1000.0 * dt, power_w=1.0, pids=[11], util={11: 50.0})
         for dt in (50, 60, 150, 160, 250, 260)]
    att = attribute(s, 0.0, list(regs.values()), slack_s=0)
    assert att.per_trial_j == pytest.approx({"first": 10.0, "second": 90.0 + 10.0})
    assert att.unregistered_j == pytest.approx({11: 90.0 + 10.0})  # between the two trials: nobody's
    with pytest.raises(ValueError, match="no '/'"):
        register_trial_pids(tmp_path, "a/b")


# --------------------------------------------------------------------------- NVML adapter


def test_nvml_process_utilization_means_per_pid_and_absent_when_unsupported():
    import types

    import pynvml

    from srstudy.measure.nvml import NvmlApi

    answers = []

    def fake_call(handle, since):
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    api = object.__new__(NvmlApi)  # no nvmlInit: pynvml's constants and errors, a scripted call
    api.nv = types.SimpleNamespace(**{k: getattr(pynvml, k) for k in dir(pynvml) if k.startswith("NVML")},
                                   nvmlDeviceGetProcessUtilization=fake_call)
    sample = lambda pid, ts, sm: types.SimpleNamespace(pid=pid, timeStamp=ts, smUtil=sm)  # noqa: E731
    answers += [[sample(11, 90, 99), sample(11, 110, 60), sample(11, 120, 80), sample(22, 130, 10)],
                pynvml.NVMLError(pynvml.NVML_ERROR_NOT_FOUND),
                pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED),
                pynvml.NVMLError(pynvml.NVML_ERROR_UNKNOWN)]
    assert api.process_utilization("h", 100) == {11: 70.0, 22: 10.0}  # the sample before `since` is dropped
    assert api.process_utilization("h", 100) == {}  # no process had a sample: nobody computed
    assert api.process_utilization("h", 100) is None  # unsupported: absent, never {} or 0
    with pytest.raises(pynvml.NVMLError):
        api.process_utilization("h", 100)


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.cuda
@needs_cuda
def test_real_gpu_window_and_process_utilization(tmp_path):
    from srstudy.measure.nvml import NvmlApi, nvml_handle_for
    from srstudy.measure.window import run_exclusive_window

    device = torch.device("cuda", 0)
    api = NvmlApi()
    handle = nvml_handle_for(device, api)
    a = torch.randn(4096, 4096, device=device)
    since = int(time.time() * 1e6)

    def step():
        nonlocal a
        a = (a @ a).clamp_(-1, 1)

    with GpuLock(tmp_path, api.uuid(handle)) as lock:
        res = run_exclusive_window(step, lock, api, handle, synchronize=lambda: torch.cuda.synchronize(device),
                                   min_iterations=20, min_seconds=1.0)
    util = api.process_utilization(handle, since)
    assert res.complete and res.energy_j > 0 and res.energy_per_iter_j > 0, res
    assert util is None or (util and max(util.values()) > 0), util  # unsupported is None, never a fake 0
    print(f"\nwindow: {res.iterations} it, {res.seconds:.2f} s, {res.energy_per_iter_j:.3f} J/it "
          f"({res.energy_source}); process utilisation: {util}")

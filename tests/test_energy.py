"""Tests for srstudy.measure.energy (meter, nvml, tegrastats): null meter, tegrastats parsing/integration, NVML arithmetic (fake adapter), real GPU."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from srstudy.measure import meter as meter_module
from srstudy.measure import nvml
from srstudy.measure.energy import (
    EnergyResult,
    NullEnergyMeter,
    NvmlEnergyMeter,
    TegrastatsMeter,
    energy_meter,
    integrate_trace,
    nvml_index_for_uuid,
    parse_tegrastats_line,
)

FIXTURES = Path(__file__).parent / "fixtures"
ORIN = FIXTURES / "tegrastats_orin_nano.txt"
NANO = FIXTURES / "tegrastats_nano.txt"


@pytest.fixture(autouse=True)
def fresh_baseline_cache(monkeypatch):
    """Each test starts with no cached idle baseline."""
    monkeypatch.setattr(meter_module, "_IDLE_BASELINE_W", {})


# --------------------------------------------------------------------------- null meter


def test_cpu_device_gives_null_meter_with_reason():
    meter = energy_meter(device="cpu")
    assert isinstance(meter, NullEnergyMeter)
    with meter:
        sum(range(1000))
    res = meter.result
    assert res.energy_j is None and res.source == "none"
    assert res.metrics() == {} and "gpu_energy_j" not in res.metrics(iterations=10)
    assert res.tags() == {"energy_unavailable_reason": "no CUDA device (trial runs on cpu)"}
    assert res.seconds is not None and res.seconds >= 0
    assert res.write_trace_csv("unused.csv") is None and res.plot_trace("unused.png") is None
    assert not Path("unused.csv").exists()


def test_factory_reasons_and_bad_backend():
    assert "no device given" in energy_meter(device=None).reason
    assert "disabled" in energy_meter(device="cpu", backend="none").reason
    with pytest.raises(ValueError, match="backend must be"):
        energy_meter(device="cpu", backend="rapl")
    with pytest.raises(RuntimeError, match="NVML energy meter requested but unavailable"):
        energy_meter(device="cpu", backend="nvml")
    missing = energy_meter(device="cpu", backend="tegrastats", tegrastats_cmd="no-such-tegrastats-xyz")
    assert isinstance(missing, NullEnergyMeter) and "tegrastats not found (not a Jetson?)" in missing.reason


# --------------------------------------------------------------------------- pure helpers


def test_parse_tegrastats_both_formats_and_garbage():
    orin = ORIN.read_text().splitlines()
    nano = NANO.read_text().splitlines()
    assert parse_tegrastats_line(orin[0]) == pytest.approx(5.704)
    assert parse_tegrastats_line(orin[1]) == pytest.approx(8.912)  # current, not the running average
    assert parse_tegrastats_line(nano[0]) == pytest.approx(2.583)
    assert parse_tegrastats_line(nano[1]) == pytest.approx(4.917)
    assert all(parse_tegrastats_line(line) is not None for line in orin + nano)
    for garbage in ("", "tegrastats: starting", "RAM 2298/7620MB CPU [2%@729] VDD_CPU_GPU_CV 566mW/566mW",
                    "GPU 0/0 CPU 155/155 SOC 1550/1550"):  # last: AGX Xavier, no total-input rail
        assert parse_tegrastats_line(garbage) is None


def test_integrate_trace_holds_edges():
    # held 10 W over [0, 0.1], trapezoid 15 W over [0.1, 0.2], held 20 W over [0.2, 0.3]
    assert integrate_trace([(0.1, 10.0), (0.2, 20.0)], 0.3) == pytest.approx(4.5)
    assert integrate_trace([], 1.0) is None


def test_uuid_matching_tolerates_prefix_case_and_bytes():
    torch_uuid = "58a5b0c9-1c2d-4e5f-8a9b-0c1d2e3f4a5b"
    nvml = ["GPU-00000000-0000-0000-0000-000000000000", b"GPU-58A5B0C9-1C2D-4E5F-8A9B-0C1D2E3F4A5B"]
    assert nvml_index_for_uuid(torch_uuid, nvml) == 1
    assert nvml_index_for_uuid("GPU-" + torch_uuid, nvml) == 1
    with pytest.raises(LookupError, match="ffffffff-0000"):
        nvml_index_for_uuid("ffffffff-0000-0000-0000-000000000000", nvml)
    with pytest.raises(LookupError):
        nvml_index_for_uuid(torch_uuid, [])


def test_metrics_only_measured_and_per_iteration():
    res = EnergyResult(energy_j=120.0, seconds=2.0, avg_power_w=60.0, gpu_name="X", source="nvml",
                       energy_source="counter", shared_processes=0)
    m = res.metrics(iterations=40)
    assert m == {"gpu_energy_j": 120.0, "gpu_energy_per_iter_j": 3.0, "gpu_avg_power_w": 60.0}
    assert "gpu_idle_power_w" not in m
    assert set(res.metrics(prefix="train_")) == {"train_energy_j", "train_avg_power_w"}
    assert res.tags() == {"energy_source": "counter", "gpu_name": "X", "energy_shared": "false"}


# --------------------------------------------------------------------------- tegrastats through a fake binary

FAKE_TEGRASTATS = """
import itertools, sys, time
lines = open(sys.argv[1]).read().splitlines()
interval = int(sys.argv[sys.argv.index("--interval") + 1]) / 1000.0
print("tegrastats: a line without power", flush=True)
for line in itertools.cycle(lines):
    time.sleep(interval)
    print(line, flush=True)
"""


@pytest.mark.parametrize("fixture", [ORIN, NANO], ids=["orin", "nano"])
def test_tegrastats_meter_with_fake_binary(tmp_path, fixture):
    script = tmp_path / "tegrastats.py"
    script.write_text(FAKE_TEGRASTATS)
    meter = energy_meter(device="cpu", backend="tegrastats", sample_hz=40, idle_baseline_s=0.3,
                         tegrastats_cmd=[sys.executable, str(script), str(fixture)])
    assert isinstance(meter, TegrastatsMeter)
    with meter:
        time.sleep(0.5)
    res = meter.result
    watts = [parse_tegrastats_line(line) for line in fixture.read_text().splitlines()]
    assert res.source == "tegrastats" and res.energy_source == "tegrastats_vdd_in"
    assert res.power_field == ("VDD_IN" if fixture == ORIN else "POM_5V_IN")
    assert len(res.trace) >= 5 and res.skipped_lines == 1
    assert all(w in [pytest.approx(x) for x in watts] for _, w in res.trace)
    assert res.seconds == pytest.approx(0.5, abs=0.15)
    trace_mean = sum(w for _, w in res.trace) / len(res.trace)
    assert res.energy_j == pytest.approx(trace_mean * res.seconds, rel=0.2)
    assert min(watts) * res.seconds <= res.energy_j <= max(watts) * res.seconds
    assert res.avg_power_w == pytest.approx(res.energy_j / res.seconds)
    assert min(watts) <= res.idle_power_w <= max(watts)
    assert meter_module._IDLE_BASELINE_W["tegrastats"] == res.idle_power_w
    csv_path, png_path = res.write_trace_csv(tmp_path / "t.csv"), res.plot_trace(tmp_path / "t.png")
    lines = csv_path.read_text().splitlines()
    assert lines[0] == "t_s,power_w" and len(lines) == len(res.trace) + 1
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png_path.stat().st_size > 1000
    assert meter._proc is None  # subprocess reaped


def test_tegrastats_permission_problem_says_sudo(tmp_path):
    script = tmp_path / "tegrastats.py"
    script.write_text("import sys; sys.stderr.write('Permission denied: must be run as root\\n'); sys.exit(1)\n")
    meter = TegrastatsMeter(command=[sys.executable, str(script)], idle_baseline_s=0)
    with meter:
        time.sleep(0.2)
    res = meter.result
    assert res.energy_j is None and res.metrics() == {}
    assert "sudo" in res.reason and "group" in res.reason


def test_tegrastats_not_executable_says_sudo(tmp_path):
    script = tmp_path / "tegrastats"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o600)  # not executable -> PermissionError at exec
    meter = TegrastatsMeter(command=str(script), idle_baseline_s=0)
    with meter:
        pass
    assert meter.result.energy_j is None and "sudo" in meter.result.reason


# --------------------------------------------------------------------------- NVML arithmetic with a fake adapter


class FakeNvml:
    """Implements the few NvmlApi calls with scripted values (None = "not supported")."""

    def __init__(self, *, energy_mj=None, instant_w=None, average_w=None, pids=None, uuid="GPU-fake"):
        self._energy = list(energy_mj) if energy_mj else None
        self.instant_w, self.average_w, self.pids, self._uuid = instant_w, average_w, pids, uuid

    def uuid(self, handle):
        return self._uuid

    def name(self, handle):
        return "Fake GPU 80GB"

    def total_energy_mj(self, handle):
        return self._energy.pop(0) if self._energy else None

    def instant_power_w(self, handle):
        return self.instant_w

    def average_power_w(self, handle):
        return self.average_w

    def compute_pids(self, handle):
        return self.pids


def test_nvml_counter_energy_shared_and_baseline():
    api = FakeNvml(energy_mj=[1_000_000, 1_150_000], instant_w=60.0, pids=[os.getpid(), 4242, 4343],
                   uuid="GPU-counter")
    synced = []
    meter = NvmlEnergyMeter(api, "h0", sample_hz=50, idle_baseline_s=0.05, synchronize=lambda: synced.append(1))
    with meter:
        time.sleep(0.2)
    res = meter.result
    assert len(synced) == 2
    assert res.energy_j == pytest.approx(150.0) and res.energy_source == "counter"
    assert res.avg_power_w == pytest.approx(150.0 / res.seconds)
    assert res.shared_processes == 2 and res.tags()["energy_shared"] == "true"
    assert res.idle_power_w == pytest.approx(60.0) and meter_module._IDLE_BASELINE_W["GPU-counter"] == 60.0
    assert res.power_field == "instant" and len(res.trace) >= 5
    assert res.metrics(iterations=3)["gpu_energy_per_iter_j"] == pytest.approx(50.0)
    assert res.gpu_name == "Fake GPU 80GB" and res.source == "nvml"


def test_nvml_baseline_is_cached_per_uuid():
    api = FakeNvml(instant_w=60.0, pids=[os.getpid()], uuid="GPU-cache")
    with NvmlEnergyMeter(api, "h", sample_hz=50, idle_baseline_s=0.05):
        pass
    api.instant_w = 300.0  # a second meter must not re-measure the idle power
    meter = NvmlEnergyMeter(api, "h", sample_hz=50, idle_baseline_s=0.05)
    with meter:
        pass
    assert meter.result.idle_power_w == pytest.approx(60.0)


def test_nvml_power_integral_fallback_when_counter_unsupported():
    api = FakeNvml(energy_mj=None, instant_w=None, average_w=100.0, pids=[999], uuid="GPU-integral")
    meter = NvmlEnergyMeter(api, "h", sample_hz=50, idle_baseline_s=0)
    with meter:
        time.sleep(0.3)
    res = meter.result
    assert res.energy_source == "power_integral" and res.power_field == "average"
    assert res.energy_j == pytest.approx(100.0 * res.seconds, rel=1e-6)  # constant power, edges held
    assert res.idle_power_w is None and "gpu_idle_power_w" not in res.metrics()
    assert res.shared_processes == 0  # pid 999 taken as ours (container: NVML shows host PIDs)
    assert res.tags()["energy_source"] == "power_integral"


def test_nvml_nothing_supported_gives_reason_and_no_metrics():
    meter = NvmlEnergyMeter(FakeNvml(uuid="GPU-none"), "h", sample_hz=50, idle_baseline_s=0.05)
    with meter:
        pass
    res = meter.result
    assert res.energy_j is None and res.metrics() == {} and res.shared_processes is None
    assert "not supported" in res.reason and res.tags()["energy_unavailable_reason"] == res.reason


def test_nvml_exception_in_block_stops_sampler_and_propagates():
    meter = NvmlEnergyMeter(FakeNvml(energy_mj=[0, 5000], instant_w=50.0, uuid="GPU-exc"), "h",
                            sample_hz=50, idle_baseline_s=0)
    with pytest.raises(ZeroDivisionError):
        with meter:
            1 / 0
    assert not any(t.name == "energy-sampler" and t.is_alive() for t in threading.enumerate())
    assert meter.result.energy_j == pytest.approx(5.0)


# --------------------------------------------------------------------------- real GPU

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.cuda
@needs_cuda
def test_real_gpu_matmul_energy(tmp_path):
    device = torch.device("cuda", 0)
    meter = energy_meter(device=device, sample_hz=20, idle_baseline_s=1.0)
    assert isinstance(meter, NvmlEnergyMeter), getattr(meter, "reason", meter)
    import pynvml

    nvml_uuid = pynvml.nvmlDeviceGetUUID(meter.handle)
    assert nvml._norm_uuid(nvml_uuid) == nvml._norm_uuid(str(torch.cuda.get_device_properties(0).uuid))
    a = torch.randn(4096, 4096, device=device)
    iters = 0
    with meter:
        t_end = time.perf_counter() + 1.0
        while time.perf_counter() < t_end:
            a = (a @ a).clamp_(-1, 1)
            iters += 1
            if iters % 10 == 0:
                torch.cuda.synchronize(device)
    res = meter.result
    assert res.energy_j is not None and res.energy_j > 0, res
    assert 10.0 < res.avg_power_w < 1000.0
    assert len(res.trace) >= 5 and res.idle_power_w > 0
    assert res.gpu_uuid == (nvml_uuid.decode() if isinstance(nvml_uuid, bytes) else nvml_uuid)
    if res.energy_source == "counter":  # the sampled trace should roughly agree with the counter
        assert integrate_trace(res.trace, res.seconds) == pytest.approx(res.energy_j, rel=0.35)
    assert res.metrics(iterations=iters)["gpu_energy_per_iter_j"] > 0
    assert res.plot_trace(tmp_path / "p.png").stat().st_size > 1000
    print(f"\n{res.gpu_name}: {res.energy_j:.1f} J in {res.seconds:.2f} s, avg {res.avg_power_w:.0f} W, "
          f"idle {res.idle_power_w:.0f} W, {res.energy_source}/{res.power_field}, shared={res.shared_processes}, "
          f"trace {len(res.trace)} pts, {iters} iters")

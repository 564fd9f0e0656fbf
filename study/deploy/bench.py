"""Benchmark an exported network where it is meant to run: a Jetson Ray worker (or here).

    onnx = sources.onnx_for_run(uri, run_id)         # bytes: the nodes need not share a filesystem
    _ray.connect("auto")
    result = bench_on_node(onnx, samples=1000, size=64)   # a Ray task asking for {"jetson": 1}
    log_bench(result, uri, run_id)                   # edge_* metrics on the trial's MLflow run

One benchmark (`run_benchmark`: the body of the Ray task, and all of `--on local`):

1. Runtime (`deploy.runtime.open_runner`): TensorRT when `import tensorrt` works there (an
   engine is built from the ONNX bytes on that machine, since engines are tied to the GPU and
   TensorRT version, and cached under `~/.cache/srstudy/tensorrt`), else onnxruntime with the
   best provider its build has (CUDA, else CPU). The result names the runtime and the
   provider actually used.
2. `warmup` untimed inferences, then `samples` timed ones on one random LR image
   (1, 3, size, size), each from host input to host output.
3. Power, sampled during the timed loop only: tegrastats' VDD_IN (the whole module: CPU, GPU,
   memory) on a Jetson; NVML board power on another NVIDIA GPU when inference runs on it;
   nothing otherwise (the metrics are then absent and the tag says why). The idle baseline
   is taken before the loop (once per process, `measure.energy.energy_meter`).
4. Reported: latency p50/p90/mean, images/s, average power, idle power, dynamic power
   (average − idle), energy per image (average power × loop time / samples) and dynamic
   energy per image, the device's name and the provider. As MLflow metrics `edge_*`
   (`bench_*` for --on local), only those measured; `edge_latency_ms` repeats the p50
   under the name `srstudy pareto --objectives edge_latency:min,edge_energy:min` ranks by.

`bench_on_node` checks `ray.cluster_resources()` for the resource first (waiting `wait_s`
for a node that is still joining) and raises `NoJetsonError` at once when there is none;
once submitted, `ray.get(..., timeout=timeout_s)` bounds the wait (`BenchTimeout`, task
cancelled). The ONNX bytes travel as the task's argument (Ray's object store).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import socket
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..measure.tegrastats import jetson_model, on_jetson
from ..measure.timing import time_ms
from .runtime import DEFAULT_ENGINE_CACHE, RUNTIMES, cpu_name, gpu_name, open_runner

log = logging.getLogger(__name__)

JETSON_RESOURCE = "jetson"
DEFAULT_SAMPLES, DEFAULT_WARMUP, DEFAULT_SIZE = 1000, 20, 64
ENERGY_BACKENDS = ("auto", "tegrastats", "nvml", "none")
EDGE_PREFIX, LOCAL_PREFIX = "edge_", "bench_"

Say = Callable[[str], None]


class NoJetsonError(RuntimeError):
    """No node of the Ray cluster offers the resource the benchmark needs."""


class BenchTimeout(RuntimeError):
    """The benchmark task did not finish in time (it was cancelled)."""


class ClusterError(RuntimeError):
    """The Ray cluster to benchmark on cannot be joined."""


# ---- the result ------------------------------------------------------------------------------
@dataclass
class BenchResult:
    """One benchmark: where, with what, and what was measured (`None`: not measured)."""

    samples: int
    warmup: int
    size: int
    runtime: str  # "tensorrt" | "onnxruntime"
    provider: str  # the onnxruntime provider used, or "TensorRT <version>"
    precision: str  # "fp32" | "fp16"
    device: str
    host: str
    latencies_ms: list[float]
    seconds: float  # wall time of the timed loop
    energy_j: float | None = None
    energy_seconds: float | None = None
    avg_power_w: float | None = None
    idle_power_w: float | None = None
    energy_source: str | None = None
    power_field: str | None = None
    energy_reason: str | None = None
    power_trace: list[tuple[float, float]] = field(default_factory=list)
    node_id: str | None = None
    notes: list[str] = field(default_factory=list)

    # ---- summary ----------------------------------------------------------------------------
    @property
    def latency_p50_ms(self) -> float:
        return float(np.percentile(self.latencies_ms, 50))

    @property
    def latency_p90_ms(self) -> float:
        return float(np.percentile(self.latencies_ms, 90))

    @property
    def latency_mean_ms(self) -> float:
        return float(statistics.fmean(self.latencies_ms))

    @property
    def images_per_s(self) -> float:
        return self.samples / self.seconds

    @property
    def dynamic_power_w(self) -> float | None:
        """Average power during the loop minus the idle baseline (may be slightly negative
        when the load is below the sensor's noise; reported as measured)."""
        if self.avg_power_w is None or self.idle_power_w is None:
            return None
        return self.avg_power_w - self.idle_power_w

    @property
    def energy_per_image_j(self) -> float | None:
        return None if self.energy_j is None else self.energy_j / self.samples

    @property
    def dynamic_energy_per_image_j(self) -> float | None:
        dyn = self.dynamic_power_w
        if dyn is None or self.energy_seconds is None:
            return None
        return dyn * self.energy_seconds / self.samples

    def summary(self) -> dict[str, Any]:
        """The numbers (None where not measured), device and provider."""
        return {
            "latency_p50_ms": self.latency_p50_ms, "latency_p90_ms": self.latency_p90_ms,
            "latency_mean_ms": self.latency_mean_ms, "images_per_s": self.images_per_s,
            "avg_power_w": self.avg_power_w, "idle_power_w": self.idle_power_w,
            "dynamic_power_w": self.dynamic_power_w, "energy_per_image_j": self.energy_per_image_j,
            "dynamic_energy_per_image_j": self.dynamic_energy_per_image_j,
            "device": self.device, "runtime": self.runtime, "provider": self.provider, "precision": self.precision,
            "input": f"1x3x{self.size}x{self.size}", "samples": self.samples, "node_id": self.node_id,
            "host": self.host, "energy_source": self.energy_source, "energy_reason": self.energy_reason,
        }

    def metrics(self, prefix: str = EDGE_PREFIX) -> dict[str, float]:
        """MLflow metrics, only those measured (never 0 for a missing one)."""
        s = self.summary()
        keys = ("latency_p50_ms", "latency_p90_ms", "latency_mean_ms", "images_per_s", "avg_power_w",
                "idle_power_w", "dynamic_power_w", "energy_per_image_j", "dynamic_energy_per_image_j")
        out = {f"{prefix}{k}": float(s[k]) for k in keys if s[k] is not None}
        # the median again under the name `srstudy pareto` ranks by (`edge_latency` objective),
        # mirroring a trial's own `latency_ms` (median) / `latency_p90_ms`
        out[f"{prefix}latency_ms"] = out[f"{prefix}latency_p50_ms"]
        if self.energy_j is not None:
            out[f"{prefix}energy_j"] = float(self.energy_j)
        return out

    def tags(self, prefix: str = EDGE_PREFIX) -> dict[str, str]:
        out = {f"{prefix}device": self.device, f"{prefix}runtime": self.runtime, f"{prefix}provider": self.provider,
               f"{prefix}precision": self.precision, f"{prefix}input": f"1x3x{self.size}x{self.size}",
               f"{prefix}samples": str(self.samples), f"{prefix}host": self.host}
        if self.node_id:
            out[f"{prefix}node_id"] = self.node_id
        if self.energy_source:
            out[f"{prefix}energy_source"] = self.energy_source
        elif self.energy_reason:
            out[f"{prefix}energy_unavailable_reason"] = self.energy_reason[:5000]
        if self.notes:
            out[f"{prefix}notes"] = " | ".join(self.notes)[:5000]
        return out

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "summary": self.summary()}


def _meter(energy: str, *, on_gpu: bool, device: str, tegrastats_cmd, idle_s: float, sample_hz: float):
    from ..measure.energy import NullEnergyMeter, energy_meter

    if energy not in ENERGY_BACKENDS:
        raise ValueError(f"energy must be one of {ENERGY_BACKENDS}, got {energy!r}")
    common = {"sample_hz": sample_hz, "idle_baseline_s": idle_s, "tegrastats_cmd": tegrastats_cmd}
    if energy == "none":
        return NullEnergyMeter("energy measurement disabled (--energy none)")
    if energy == "tegrastats" or (energy == "auto" and on_jetson()):
        return energy_meter(device=None, backend="tegrastats", **common)
    if energy == "nvml":
        return energy_meter(device="cuda", backend="nvml", **common)
    if on_gpu:
        return energy_meter(device="cuda", backend="auto", **common)
    return NullEnergyMeter(f"inference ran on the CPU ({device}); srstudy reads power only from tegrastats "
                           "(Jetson module) and NVML (NVIDIA GPU board power)")


def timed_calls(call: Callable[[], Any], *, samples: int, meter,
                sync: Callable[[], None] = lambda: None) -> tuple[list[float], float, Any]:
    """`samples` timed calls inside `meter`: (per-call ms, loop seconds, the meter's result).

    `sync` runs after each call (e.g. CUDA synchronise) so a call's time covers its work.
    """
    with meter:
        t_loop = time.perf_counter()
        lat = time_ms(call, repeats=samples, sync=sync)
        seconds = time.perf_counter() - t_loop
    return lat, seconds, meter.result


def run_benchmark(onnx_model: bytes, *, samples: int = DEFAULT_SAMPLES, size: int = DEFAULT_SIZE,
                  warmup: int = DEFAULT_WARMUP, runtime: str = "auto", providers: Sequence[str] | None = None,
                  fp16: bool = False, energy: str = "auto", tegrastats_cmd: Sequence[str] | str = "tegrastats",
                  idle_s: float = 2.0, sample_hz: float = 10.0, engine_cache: str | None = DEFAULT_ENGINE_CACHE,
                  seed: int = 0, say: Say = log.info) -> BenchResult:
    """Benchmark an ONNX graph (bytes) in this process; see the module docstring."""
    if samples < 1 or warmup < 0 or size < 1:
        raise ValueError(f"need samples >= 1, warmup >= 0, size >= 1; got {samples}, {warmup}, {size}")
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
    notes: list[str] = []
    infer, used, provider, on_gpu = open_runner(bytes(onnx_model), runtime=runtime, providers=providers, fp16=fp16,
                                                size=size, engine_cache=engine_cache, notes=notes, say=say)
    jetson = jetson_model()
    dev = gpu_name() if on_gpu else cpu_name()
    device = f"{jetson}: {'GPU' if on_gpu else 'CPU'} {dev}" if jetson else dev
    x = np.random.default_rng(seed).random((1, 3, size, size), dtype=np.float32)
    for _ in range(warmup):
        infer(x)
    meter = _meter(energy, on_gpu=on_gpu, device=device, tegrastats_cmd=tegrastats_cmd, idle_s=idle_s,
                   sample_hz=sample_hz)
    lat, seconds, e = timed_calls(lambda: infer(x), samples=samples, meter=meter)
    return BenchResult(
        samples=samples, warmup=warmup, size=size, runtime=used, provider=provider,
        precision="fp16" if fp16 else "fp32", device=device, host=socket.gethostname(), latencies_ms=lat,
        seconds=seconds, energy_j=e.energy_j, energy_seconds=e.seconds if e.energy_j is not None else None,
        avg_power_w=e.avg_power_w, idle_power_w=e.idle_power_w if e.energy_j is not None else None,
        energy_source=e.energy_source, power_field=e.power_field,
        energy_reason=None if e.energy_j is not None else e.reason, power_trace=list(e.trace), notes=notes)


# ---- on a Ray node -----------------------------------------------------------------------------
def _bench_task(onnx_model: bytes, options: dict[str, Any]) -> BenchResult:
    """The Ray task: `run_benchmark` there, stamped with the node it ran on."""
    from .. import ray_api as _ray

    result = run_benchmark(onnx_model, **options)
    result.node_id = _ray.node_id()
    return result


def no_jetson_message(resource: str, waited: float, resources: dict[str, float]) -> str:
    shown = {k: v for k, v in resources.items() if not k.startswith("node:") and "memory" not in k}
    return (f"no node of this Ray cluster offers the resource {resource!r} (waited {waited:.0f} s; the cluster has "
            f"{shown}). Start Ray on the Jetson with `ray start --address=<head-ip>:6379 --num-gpus=0 "
            f"--resources='{{\"{resource}\": 1}}'` (or `ray up cluster.yaml`), check with `ray status`; "
            "or benchmark on this machine with --on local")


def bench_on_node(onnx_model: bytes, *, resource: str = JETSON_RESOURCE, wait_s: float = 10.0,
                  timeout_s: float = 1800.0, num_cpus: float = 1, say: Say = log.info, **options: Any) -> BenchResult:
    """`run_benchmark` as a Ray task on the node carrying `resource` (the caller is connected
    to the cluster). Raises NoJetsonError when no node offers it within `wait_s`, and
    BenchTimeout (task cancelled) when the task has not returned after `timeout_s`."""
    from .. import ray_api as _ray

    if not _ray.is_initialized():
        raise RuntimeError("not connected to a Ray cluster (srstudy._ray.connect(address) first)")
    t0 = time.monotonic()
    while _ray.cluster_resources().get(resource, 0) < 1:
        waited = time.monotonic() - t0
        if waited >= wait_s:
            raise NoJetsonError(no_jetson_message(resource, waited, _ray.cluster_resources()))
        time.sleep(min(0.5, max(wait_s - waited, 0.01)))
    if _ray.available_resources().get(resource, 0) < 1:
        say(f"the {resource!r} node is busy with another task; the benchmark queues behind it (up to {timeout_s:.0f} s)")
    task = _ray.remote(_bench_task, num_cpus=num_cpus, resources={resource: 1}, max_retries=0)
    ref = task.remote(bytes(onnx_model), options)
    try:
        return _ray.get(ref, timeout=timeout_s)
    except _ray.GetTimeoutError:
        _ray.cancel(ref)
        raise BenchTimeout(f"the benchmark on the {resource!r} node did not finish within {timeout_s:.0f} s and was "
                           "cancelled; is the node busy or gone (`ray status`)? Raise --timeout for a first TensorRT "
                           "engine build or many --samples") from None


def benchmark(onnx_model: bytes, *, on: str = "local", address: str = "auto", wait_s: float = 10.0,
              timeout_s: float = 1800.0, say: Say = log.info, **options: Any) -> BenchResult:
    """What `srstudy bench` runs: `run_benchmark` in this process (`on="local"`), or (`on="jetson"`)
    joined to the Ray cluster at `address`, as a task on the node with the `jetson` resource
    (`bench_on_node`), leaving the cluster afterwards. Raises ClusterError when the cluster
    cannot be joined."""
    if on == "local":
        return run_benchmark(onnx_model, say=say, **options)
    from .. import ray_api as _ray

    try:
        _ray.connect(address)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise ClusterError(f"cannot join the Ray cluster at --address {address}: {e}; start it (`ray up cluster.yaml`, "
                           "or `ray start --head` here and the Jetson joining it) or pass --address host:port") from None
    try:
        return bench_on_node(onnx_model, wait_s=wait_s, timeout_s=timeout_s, say=say, **options)
    finally:
        _ray.shutdown()


def default_prefix(on: str) -> str:
    """The MLflow metric prefix of a benchmark: `edge_` on the Jetson, `bench_` here."""
    return EDGE_PREFIX if on == "jetson" else LOCAL_PREFIX


# ---- MLflow -----------------------------------------------------------------------------------
def log_bench(result: BenchResult, tracking_uri: str, run_id: str, *, prefix: str = EDGE_PREFIX) -> dict[str, float]:
    """Metrics `<prefix>*` (only the measured ones) and tags on the run, the whole result as
    `edge/<prefix>bench.json` and the power trace as CSV. Returns the metrics logged."""
    from ..tracking import TrialRun

    run = TrialRun(tracking_uri, run_id)
    metrics = result.metrics(prefix)
    run.log_metrics(metrics)
    run.set_tags(result.tags(prefix))
    with tempfile.TemporaryDirectory(prefix="srstudy-bench-") as tmp:
        path = Path(tmp) / f"{prefix}bench.json"
        path.write_text(json.dumps(result.to_dict(), indent=1))
        run.log_artifact(path, "edge")
        if result.power_trace:
            csv = Path(tmp) / f"{prefix}power_trace.csv"
            csv.write_text("t_s,power_w\n" + "".join(f"{t:.4f},{w:.3f}\n" for t, w in result.power_trace))
            run.log_artifact(csv, "edge")
    return metrics

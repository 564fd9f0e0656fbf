"""`srstudy export` and `srstudy bench`: a trained network to ONNX (checked against PyTorch)
and benchmarked where it is meant to run (`srstudy.deploy`). Registered on the app in
`cli.py`."""
from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from .cli_options import Experiment, Objectives, TrackingUri, Verbose, fail, say, setup_logging, workdir_option
from .workdir import DEFAULT_WORKDIR


class EdgeTarget(str, Enum):
    jetson = "jetson"
    local = "local"


class EdgeRuntime(str, Enum):
    auto = "auto"
    tensorrt = "tensorrt"
    onnxruntime = "onnxruntime"


class EdgeEnergy(str, Enum):
    auto = "auto"
    tegrastats = "tegrastats"
    nvml = "nvml"
    none = "none"


def _one_source(**given) -> None:
    named = [f"--{k.replace('_', '-')}" for k, v in given.items() if v]
    if len(named) != 1:
        fail(f"give exactly one of {', '.join('--' + k.replace('_', '-') for k in given)} (got {named or 'none'})")


def export_command(
    run_id: Optional[str] = typer.Option(None, "--run-id", help="a trial's MLflow run: its student (artifact student/student.pth)"),
    best: bool = typer.Option(False, "--best", help="the Pareto-best trial (the knee of the front) of the study in --workdir"),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="a .pth: srstudy's, or the official DVMSR (BasicSR) file"),
    out: Path = typer.Option(..., "--out", help="folder for model.onnx (+ model_fp16.onnx, a TensorRT engine) and export.json"),
    fp16: bool = typer.Option(False, "--fp16", help="also model_fp16.onnx (fp16 inside, the scan in fp32, fp32 I/O); an fp16 TensorRT engine"),
    workdir: Optional[Path] = typer.Option(None, "--workdir", callback=workdir_option, help=f"the study folder (default ./{DEFAULT_WORKDIR}): its mlflow.db and study.json"),
    tracking_uri: TrackingUri = None,
    experiment: Experiment = None,
    objectives: Objectives = None,
    image: Optional[Path] = typer.Option(None, "--image", help="a real LR image for the parity check (default: scikit-image's astronaut ×1/4)"),
    latency_sizes: str = typer.Option("64,256", "--latency-sizes", help="LR sizes at which onnxruntime and PyTorch are timed ('' skips)"),
    repeats: int = typer.Option(5, "--repeats", min=1, help="timed forwards per size and side (median reported)"),
    device: str = typer.Option("cpu", "--device", help="PyTorch's device for the latency comparison (cpu, cuda)"),
    tensorrt: bool = typer.Option(True, "--tensorrt/--no-tensorrt", help="build a TensorRT engine when tensorrt is importable"),
    log_run: bool = typer.Option(True, "--log/--no-log", help="log the files and export_* metrics to the trial's MLflow run"),
    as_json: bool = typer.Option(False, "--json", help="print export.json on stdout"),
    verbose: Verbose = False,
) -> None:
    """ONNX (opset 17, dynamic H/W, no custom ops) checked against PyTorch in onnxruntime, TensorRT where present."""
    setup_logging(verbose)
    _one_source(run_id=run_id, best=best, checkpoint=checkpoint)
    from mlflow.exceptions import MlflowException

    from srstudy.analysis.select import SelectionError

    from .deploy.export import export_source
    from .deploy.onnx import ExportError
    from .deploy.sources import load_source

    try:
        sizes = [int(s) for s in latency_sizes.split(",") if s.strip()]
    except ValueError:
        fail(f"--latency-sizes must be comma-separated integers, e.g. 64,256; got {latency_sizes!r}")
    try:
        src = load_source(run_id=run_id, best=best, checkpoint=checkpoint, workdir=workdir, tracking_uri=tracking_uri,
                          experiment=experiment, objectives=objectives, say=say)
        report = export_source(src, out, log_run=log_run, say=say, fp16=fp16, image=image, latency_sizes=sizes,
                               latency_repeats=repeats, latency_device=device, tensorrt=tensorrt)
    except (ExportError, SelectionError) as e:
        fail(str(e), code=1)
    except (FileNotFoundError, ValueError, RuntimeError, MlflowException) as e:
        fail(str(e))
    if as_json:
        print(json.dumps(report.to_dict()))
        return
    table = Table(title=f"{src.description} → {report.onnx}")
    table.add_column("check")
    table.add_column("value", justify="right")
    table.add_row("nodes (besides Constant)", f"{report.graph['nodes']} ({report.graph['nodes_non_constant']})")
    for k, v in report.parity.items():
        table.add_row(f"max |ONNX − PyTorch|, {k} {v['input']}", f"{v['max_abs_diff']:.2e}")
    for k, v in (report.parity_fp16 or {}).items():
        table.add_row(f"fp16 max |diff|, {k}", f"{v['max_abs_diff']:.2e}")
    for row in report.latency:
        table.add_row(f"LR {row['lr']}: onnxruntime / PyTorch ({row['pytorch_device']})",
                      f"{row['onnxruntime_ms']:.1f} / {row['pytorch_ms']:.1f} ms")
    table.add_row("TensorRT", report.tensorrt.get("engine") or "none")
    Console().print(table)


def bench_command(
    run_id: Optional[str] = typer.Option(None, "--run-id", help="a trial's MLflow run: its exported graph (or its student, exported now); results go to it"),
    best: bool = typer.Option(False, "--best", help="the Pareto-best trial of the study in --workdir"),
    onnx: Optional[Path] = typer.Option(None, "--onnx", help="an ONNX file (with --run-id too: the results go to that run)"),
    on: EdgeTarget = typer.Option(..., "--on", help="jetson: a Ray task on the node with resource `jetson`; local: this process"),
    samples: int = typer.Option(1000, "--samples", min=1, help="timed inferences"),
    size: int = typer.Option(64, "--size", min=1, help="LR side: input 1x3xSIZExSIZE"),
    warmup: int = typer.Option(20, "--warmup", min=0, help="untimed inferences first"),
    runtime: EdgeRuntime = typer.Option(EdgeRuntime.auto, "--runtime", help="auto: TensorRT if importable there, else onnxruntime"),
    fp16: bool = typer.Option(False, "--fp16", help="the fp16 graph (model_fp16.onnx) / an fp16 TensorRT engine"),
    energy: EdgeEnergy = typer.Option(EdgeEnergy.auto, "--energy", help="power: tegrastats on a Jetson, NVML on a GPU, else none"),
    tegrastats_cmd: str = typer.Option("tegrastats", "--tegrastats-cmd", help="how to run tegrastats, e.g. 'sudo -n tegrastats'"),
    idle_s: float = typer.Option(2.0, "--idle-s", min=0, help="seconds of idle power sampled first (the baseline)"),
    address: str = typer.Option("auto", "--address", help="the Ray cluster with the Jetson worker: auto or host:port"),
    wait: float = typer.Option(10.0, "--wait", min=0, help="seconds to wait for a node with the jetson resource to appear"),
    timeout: float = typer.Option(1800.0, "--timeout", min=1, help="seconds before the benchmark task is cancelled"),
    workdir: Optional[Path] = typer.Option(None, "--workdir", callback=workdir_option, help=f"the study folder (default ./{DEFAULT_WORKDIR})"),
    tracking_uri: TrackingUri = None,
    experiment: Experiment = None,
    objectives: Objectives = None,
    prefix: Optional[str] = typer.Option(None, "--prefix", help="metric prefix (default edge_ for --on jetson, bench_ for --on local)"),
    log_run: bool = typer.Option(True, "--log/--no-log", help="log the metrics to the run"),
    as_json: bool = typer.Option(False, "--json", help="print the summary as JSON on stdout"),
    verbose: Verbose = False,
) -> None:
    """Latency, throughput, power and energy per image of an exported network, on a Jetson Ray worker or here."""
    setup_logging(verbose)
    import shlex

    if onnx is None:
        _one_source(run_id=run_id, best=best, onnx=onnx)
    elif best:
        fail("give --onnx or --best, not both")
    from mlflow.exceptions import MlflowException

    from srstudy.analysis.select import SelectionError

    from .deploy.bench import BenchTimeout, ClusterError, NoJetsonError, benchmark, default_prefix, log_bench
    from .deploy.onnx import ExportError
    from .deploy.sources import bench_graph

    try:
        model, run_id, uri = bench_graph(run_id=run_id, best=best, onnx=onnx, fp16=fp16, workdir=workdir,
                                         tracking_uri=tracking_uri, experiment=experiment, objectives=objectives, say=say)
    except (ExportError, SelectionError, FileNotFoundError, ValueError, MlflowException) as e:
        fail(str(e))
    try:
        result = benchmark(model, on=on.value, address=address, wait_s=wait, timeout_s=timeout, say=say,
                           samples=samples, size=size, warmup=warmup, runtime=runtime.value, fp16=fp16,
                           energy=energy.value, tegrastats_cmd=shlex.split(tegrastats_cmd), idle_s=idle_s)
    except (ClusterError, NoJetsonError, BenchTimeout, RuntimeError, ValueError) as e:
        fail(str(e))
    prefix = prefix if prefix is not None else default_prefix(on.value)
    logged: dict[str, float] = {}
    if log_run and run_id:
        logged = log_bench(result, uri, run_id, prefix=prefix)
        say(f"logged {len(logged)} {prefix}* metrics to MLflow run {run_id}")
    s = result.summary()
    if as_json:
        print(json.dumps({**s, "run_id": run_id, "notes": result.notes, "metrics_logged": logged}))
        return
    table = Table(title=f"{s['device']}: {s['runtime']} ({s['provider']}), {s['precision']}, {s['input']}, {samples} samples")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for k in ("latency_p50_ms", "latency_p90_ms", "latency_mean_ms", "images_per_s", "avg_power_w", "idle_power_w",
              "dynamic_power_w", "energy_per_image_j", "dynamic_energy_per_image_j"):
        table.add_row(k, "not measured" if s[k] is None else f"{s[k]:.4g}")
    Console().print(table)
    for n in result.notes + ([f"energy: {s['energy_reason']}"] if s["energy_reason"] else []):
        say(f"note: {n}")

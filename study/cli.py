"""The `srstudy` command line (typer): eval now; trial, teacher, launch, pareto, export and
bench join as their issues land."""
from __future__ import annotations

import contextlib
import json
import logging
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .workdir import DEFAULT_WORKDIR, StudyDir, WorkdirError, check_workdir

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="srstudy: hyper-parameter studies for efficient Mamba super-resolution (DVMSR / MambaLiteSR).",
)
console = Console(stderr=True)

# options shared by several commands, declared once
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="debug logging")]
Overrides = Annotated[list[str], typer.Option(
    "--set", help="key=value override (repeatable), e.g. --set student.embed_dim=16 or --set num_samples=4")]
TrackingUri = Annotated[Optional[str], typer.Option(
    "--tracking-uri", help="MLflow URI (default: sqlite under --workdir, or $MLFLOW_TRACKING_URI)")]
Experiment = Annotated[Optional[str], typer.Option("--experiment", help="MLflow experiment of the trials (with --tracking-uri)")]
StudyName = Annotated[Optional[str], typer.Option("--study", help="only the trials of this study (its name)")]
Objectives = Annotated[Optional[str], typer.Option(
    "--objectives", help="e.g. psnr:max,gpu_energy_j:min,params:min,latency_ms:min (default: the study's)")]
Constraints = Annotated[list[str], typer.Option("--constraint", help="e.g. 'params<=150000' (repeatable)")]
Reference = Annotated[Optional[str], typer.Option(
    "--reference", help="hypervolume reference point, one value per objective (default: just beyond the worst)")]


class Backend(str, Enum):
    auto = "auto"
    chunked = "chunked"
    cuda = "cuda"
    triton = "triton"
    reference = "reference"


class Grey(str, Enum):
    rgb = "rgb"
    raw = "raw"


@app.callback()
def _root() -> None:
    """srstudy: hyper-parameter studies for efficient Mamba super-resolution."""


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _fail(message: str, code: int = 2) -> None:
    """Print one `error: …` line and exit with `code` (2: bad input).

    Raises SystemExit, not typer.Exit: typer.Exit is a RuntimeError, so a command's
    `except RuntimeError` around a call of _fail caught it and printed a second, empty
    `error:` line."""
    console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    raise SystemExit(code)


def _check_workdir(workdir: Optional[Path], what: str = "--workdir") -> Optional[Path]:
    """`workdir.check_workdir`, refusing a file before any work starts."""
    if workdir is None:
        return None
    try:
        return check_workdir(workdir, what)
    except WorkdirError as e:
        _fail(str(e))


def _workdir_option(workdir: Optional[Path]) -> Optional[Path]:
    """The callback of every --workdir option (typer hands a callback only the value)."""
    return _check_workdir(workdir)


@app.command("eval")
def eval_command(
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="a .pth: srstudy's, or the official DVMSR (BasicSR) file"),
    model: str = typer.Option("network", "--model", help="'network' (needs --checkpoint) or 'bicubic'"),
    data_root: Path = typer.Option(..., "--data-root", help="folder holding <Set>/HR and <Set>/LR_bicubic/X4, or 'bundled' (no download)"),
    sets: str = typer.Option("Set5,Set14,BSD100", "--sets", help="comma-separated set names under --data-root"),
    device: str = typer.Option("auto", "--device", help="cpu, cuda, cuda:N or auto"),
    backend: Backend = typer.Option(Backend.auto, "--backend", help="selective-scan backend"),
    grey: Grey = typer.Option(Grey.rgb, "--grey", help="grey images (Set14 img_003): 'rgb' (BasicSR) or 'raw' (published bicubic)"),
    tile: Optional[int] = typer.Option(None, "--tile", help="LR tile size for images too large for memory (off: whole image)"),
    as_json: bool = typer.Option(False, "--json", help='print {"Set5": {"psnr": …, "ssim": …, "n": 5}, …} on stdout'),
    verbose: Verbose = False,
) -> None:
    """Mean Y-PSNR / SSIM per benchmark set (crop border = scale, the papers' protocol)."""
    _setup_logging(verbose)
    from .measure.evaluate import bicubic_upscaler, evaluate, model_upscaler, open_sets
    from .measure.inference import resolve_device

    names = [s.strip() for s in sets.split(",") if s.strip()]
    if not names:
        _fail("--sets is empty; e.g. --sets Set5,Set14,BSD100")
    try:
        if model == "bicubic":
            scale = 4
            upscaler = bicubic_upscaler(scale)
        elif model == "network":
            if checkpoint is None:
                _fail("--checkpoint is required unless --model bicubic")
            from srstudy.models.dvmsr import load_checkpoint

            dev = resolve_device(device)
            net = load_checkpoint(checkpoint).to(dev)
            net.set_scan_backend(None if backend is Backend.auto else backend.value)
            scale = net.cfg.scale
            upscaler = model_upscaler(net, scale=scale, device=dev, tile=tile)
        else:
            _fail(f"--model must be 'network' or 'bicubic', got {model!r}")
        benches = open_sets(data_root, names, scale=scale)
        on_image = None
        if not as_json:
            on_image = lambda s, n, p, q: console.print(f"  {s}/{n}: {p:.3f} dB, SSIM {q:.4f}")  # noqa: E731
        results = evaluate(upscaler, benches, grey_convention=grey.value, on_image=on_image)
    except (FileNotFoundError, ValueError, RuntimeError, MemoryError) as e:
        _fail(str(e))
    if as_json:
        print(json.dumps({k: {"psnr": v["psnr"], "ssim": v["ssim"], "n": v["n"]} for k, v in results.items()}))
        return
    table = Table(title=f"{model if model == 'bicubic' else checkpoint} ×{scale}, Y channel, crop {scale}")
    for col in ("set", "images", "PSNR (dB)", "SSIM", "seconds"):
        table.add_column(col)
    for k, v in results.items():
        table.add_row(k, str(v["n"]), f"{v['psnr']:.3f}", f"{v['ssim']:.4f}", f"{v['seconds']:.1f}")
    Console().print(table)


DEFAULT_TRIAL_HELP = ("trial YAML (default: the embedded default trial, the default study's base trial: CPU-sized, "
                      "a minute or two on 2 cores; MambaLiteSR's GPU recipe is benchmarks/configs/paper_recipe.yaml)")


def _load_trial_config(config: Optional[Path], overrides: list[str]):
    from .config import ConfigError, load_trial_config

    try:
        return load_trial_config(config, overrides)
    except ConfigError as e:
        _fail(str(e))


@contextlib.contextmanager
def _progress_bar(description: str):
    """A rich progress bar; yields a callback(done, total)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), console=console, transient=False) as bar:
        task = bar.add_task(description, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


@app.command("trial")
def trial_command(
    config: Optional[Path] = typer.Option(None, "--config", help=DEFAULT_TRIAL_HELP),
    workdir: Path = typer.Option(DEFAULT_WORKDIR, "--workdir", callback=_workdir_option, help="trials, teacher cache, MLflow sqlite"),
    overrides: Overrides = [],
    tracking_uri: TrackingUri = None,
    verbose: Verbose = False,
) -> None:
    """Run one distillation trial without Ray (resumes if the same config ran in --workdir, and
    completes the steps after training that a previous run could not do)."""
    _setup_logging(verbose)
    cfg = _load_trial_config(config, overrides)
    from srstudy.trials.distill import run_trial

    with _progress_bar("student") as progress:
        try:
            result = run_trial(cfg, workdir=workdir, tracking_uri=tracking_uri, progress=progress)
        except (FileNotFoundError, ValueError, RuntimeError) as e:
            _fail(str(e))
    table = Table(title=f"MLflow run {result.run_id}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in sorted(result.metrics.items()):
        table.add_row(k, f"{v:.6g}")
    Console().print(table)
    print(f"run_id: {result.run_id}")
    if result.missing_steps:
        console.print(f"[bold yellow]warning:[/] the training finished and is kept (metrics and student.pth in MLflow "
                      f"run {result.run_id}), but {len(result.missing_steps)} step(s) after it failed:")
        for step, error in result.missing_steps.items():
            console.print(f"  {step}: {escape(error)}")
        console.print("run the same command again to complete them into the same run")
        raise typer.Exit(code=1)


@app.command("teacher")
def teacher_command(
    config: Optional[Path] = typer.Option(None, "--config", help="trial YAML whose teacher section is used; "
                                          + DEFAULT_TRIAL_HELP),
    workdir: Path = typer.Option(DEFAULT_WORKDIR, "--workdir", callback=_workdir_option),
    overrides: Overrides = [],
    verbose: Verbose = False,
) -> None:
    """Train (or find in the cache) the teacher of a trial config, and print where it is."""
    _setup_logging(verbose)
    cfg = _load_trial_config(config, overrides)
    from srstudy.trials.teacher import get_teacher

    from .measure.inference import resolve_device

    with _progress_bar("teacher") as progress:
        try:
            t = get_teacher(cfg, cache_dir=StudyDir(workdir).teachers, device=resolve_device(cfg.device),
                            progress=lambda it: progress(it, cfg.teacher.iterations))
        except (FileNotFoundError, ValueError, RuntimeError) as e:
            _fail(str(e))
    print(json.dumps({"source": t.source, "key": t.key, "path": str(t.path), "params": t.model.param_count(),
                      **{k: v for k, v in t.meta.items() if k in ("seconds", "energy", "final_train_loss")}}))


@app.command("launch")
def launch_command(
    config: Optional[Path] = typer.Option(None, "--config", help="study YAML (default: the bundled CPU study)"),
    workdir: Optional[Path] = typer.Option(None, "--workdir", callback=_workdir_option, help=f"study folder (default: the config's, ./{DEFAULT_WORKDIR})"),
    overrides: Overrides = [],
    resume: bool = typer.Option(False, "--resume", help="continue the study already in --workdir"),
    address: Optional[str] = typer.Option(None, "--address", help="join a Ray cluster: auto or host:port (default: local Ray on 127.0.0.1)"),
    verbose: Verbose = False,
) -> None:
    """Run a hyper-parameter study: Ray Tune + Optuna (multi-objective) + ASHA, MLflow runs.
    Exits 1 when a trial failed (one line per failed trial, with its error file)."""
    _setup_logging(verbose)
    from .config import ConfigError, load_study_config
    from .launch import StudyExistsError, launch
    from .progress import print_failed_trials
    from .workdir import WorkdirLockedError

    try:
        study = load_study_config(config, list(overrides) + ([f"workdir={workdir}"] if workdir else []))
    except ConfigError as e:
        _fail(str(e))
    _check_workdir(study.workdir.expanduser(), "the study's workdir")  # also one set in the study YAML
    try:
        result = launch(study, resume=resume, address=address, console=console)
    except (StudyExistsError, WorkdirLockedError, FileNotFoundError, ValueError) as e:
        _fail(str(e))
    table = Table(title=f"Pareto-best trials of study {study.name} ({len(result.pareto)} of "
                        f"{sum(r['status'] == 'done' for r in result.rows)} finished)")
    keys = list(study.search_space)
    for col in ["trial", "MLflow run", *keys, *[str(o) for o in result.objectives]]:
        table.add_column(col)
    for r in result.pareto:
        table.add_row(str(r["trial_id"]), str(r["mlflow_run_id"]), *[f"{r.get(k)}" for k in keys],
                      *[f"{r[o.metric]:.4g}" for o in result.objectives])
    Console(width=160).print(table)
    counts = {s: sum(r["status"] == s for r in result.rows) for s in ("done", "pruned", "skipped", "error")}
    print(f"trials: {counts}; wall time {result.wall_s:.0f} s")
    store = result.tracking_uri
    from .tracking import browser_links

    links = browser_links(store, result.parent_run_id)
    print(f"browse the runs: mlflow ui --backend-store-uri {store} --host 127.0.0.1 --port 5000, then open\n"
          f"  the study run (its front and knee): {links['study_run']}\n"
          f"  the trials, best PSNR first: {links['trials']}\n"
          "  the front only: search tags.pareto_rank = '0'")
    if print_failed_trials(result.rows, console, study.workdir):
        raise typer.Exit(code=1)


# ---- analysis: pareto, report (issue 6) ------------------------------------------------------
def _study_source(workdir, tracking_uri, experiment, study_name):
    """Where the runs are: --workdir (study.json + its mlflow.db, default ./srstudy-runs), or
    --tracking-uri (default $MLFLOW_TRACKING_URI) with --experiment."""
    import os

    from mlflow.exceptions import MlflowException

    from srstudy.analysis.load import SourceError, resolve_source

    if workdir is None and tracking_uri is None and experiment is None and not os.environ.get("MLFLOW_TRACKING_URI"):
        workdir = DEFAULT_WORKDIR
    try:
        return resolve_source(workdir, tracking_uri=tracking_uri, experiment=experiment, study=study_name)
    except SourceError as e:
        _fail(str(e))
    except MlflowException as e:
        _fail(f"MLflow at {tracking_uri or workdir}: {e.message}")


def _analyse_source(source, objectives, constraints, reference, say):
    """Load and rank; objectives given explicitly must be measured, default ones that are
    not (GPU energy on CPU) are dropped with a notice."""
    from mlflow.exceptions import MlflowException

    from srstudy.analysis.front import analyse, measured_objectives
    from srstudy.analysis.load import load_runs

    from .objectives import DEFAULT_OBJECTIVES, ObjectiveError

    try:
        runs = load_runs(source)
        if not len(runs):
            _fail(f"experiment {source.experiment!r} at {source.tracking_uri} has no trial runs (tag role=trial)"
                  + (f" of study {source.study!r}" if source.study else "") + "; has the study run yet?")
        if objectives is None:
            objectives = measured_objectives(runs, source.objectives or DEFAULT_OBJECTIVES,
                                             lambda message: say(f"notice: {message}"))
        ref = None
        if reference is not None:
            try:
                ref = [float(v) for v in reference.split(",")]
            except ValueError:
                _fail(f"--reference {reference!r}: write comma-separated numbers, one per objective")
        return runs, analyse(runs, objectives, constraints, reference=ref)
    except (ObjectiveError, ValueError) as e:
        _fail(str(e))
    except MlflowException as e:
        _fail(f"MLflow at {source.tracking_uri}: {e.message}")


@app.command("pareto")
def pareto_command(
    workdir: Optional[Path] = typer.Option(None, "--workdir", callback=_workdir_option, help=f"a `srstudy launch` folder (study.json, mlflow.db); default ./{DEFAULT_WORKDIR}"),
    tracking_uri: TrackingUri = None,
    experiment: Experiment = None,
    study_name: StudyName = None,
    objectives: Objectives = None,
    constraints: Constraints = [],
    reference: Reference = None,
    as_json: bool = typer.Option(False, "--json", help="print a JSON list of the front: run_id and objective values"),
    plot: Optional[Path] = typer.Option(None, "--plot", help="write pairwise scatter plots (PNG) with the front highlighted"),
    show_all: bool = typer.Option(False, "--all", help="list every ranked run, not only the front"),
    tag: bool = typer.Option(True, "--tag/--no-tag", help="tag ranked runs in MLflow with pareto_rank (0 = front)"),
    verbose: Verbose = False,
) -> None:
    """The Pareto front of a study's trial runs, from MLflow (table, JSON, plots, MLflow tags)."""
    _setup_logging(verbose)
    from srstudy.analysis.front import fmt

    source = _study_source(workdir, tracking_uri, experiment, study_name)
    out = Console(width=200) if not as_json else console
    say = (lambda m: console.print(escape(m), soft_wrap=True)) if as_json else (lambda m: out.print(escape(m), soft_wrap=True))
    runs, result = _analyse_source(source, objectives, constraints, reference, say)
    if as_json:
        print(json.dumps(result.to_records(front_only=not show_all), indent=1))
    else:
        table = Table(title=f"Pareto front of {source.study or source.experiment} ({source.tracking_uri})")
        df = result.table(front_only=not show_all)
        for c in df.columns:
            table.add_column(str(c), justify="left" if c in ("run_id", "run_name") else "right")
        for _, r in df.iterrows():
            table.add_row(*[fmt(r[c]) for c in df.columns], style="bold" if r["knee"] else None)
        out.print(table)
    for line in result.summary_lines():
        say(line)
    if plot is not None:
        import matplotlib

        matplotlib.use("Agg")
        from srstudy.analysis.plots import pairwise_front

        pairwise_front(result, plot, title=f"{source.study or source.experiment}: {len(result.front)} on the front of "
                                           f"{len(result.ranked)} ranked runs ({len(result.excluded)} excluded)")
        say(f"plot: {plot}")
    if tag:
        from srstudy.analysis.load import tag_ranks

        n = tag_ranks(source, result, runs["run_id"])
        say(f"tagged {n} run(s) with pareto_rank (0 = front; filter in MLflow: tags.pareto_rank = '0')")


@app.command("report")
def report_command(
    workdir: Optional[Path] = typer.Option(None, "--workdir", callback=_workdir_option, help=f"a `srstudy launch` folder; default ./{DEFAULT_WORKDIR}"),
    tracking_uri: TrackingUri = None,
    experiment: Experiment = None,
    study_name: StudyName = None,
    objectives: Objectives = None,
    constraints: Constraints = [],
    reference: Reference = None,
    out: Path = typer.Option(Path("report.html"), "--out", help="the HTML file to write (self-contained)"),
    verbose: Verbose = False,
) -> None:
    """One self-contained HTML report: the front, plots, hypervolume, knee, the paper's findings."""
    _setup_logging(verbose)
    import matplotlib

    matplotlib.use("Agg")
    from srstudy.analysis.report import build_report_html

    source = _study_source(workdir, tracking_uri, experiment, study_name)
    notices: list[str] = []
    runs, result = _analyse_source(source, objectives, constraints, reference, notices.append)
    for n in notices:
        console.print(escape(n), soft_wrap=True)
    path = build_report_html(source, runs, result, out, notices=notices)
    print(f"report: {path} ({path.stat().st_size // 1024} KiB); front: {len(result.front)} run(s)")


# ---- export and edge benchmark (issue 7) ---------------------------------------------------------
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
        _fail(f"give exactly one of {', '.join('--' + k.replace('_', '-') for k in given)} (got {named or 'none'})")


@app.command("export")
def export_command(
    run_id: Optional[str] = typer.Option(None, "--run-id", help="a trial's MLflow run: its student (artifact student/student.pth)"),
    best: bool = typer.Option(False, "--best", help="the Pareto-best trial (the knee of the front) of the study in --workdir"),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="a .pth: srstudy's, or the official DVMSR (BasicSR) file"),
    out: Path = typer.Option(..., "--out", help="folder for model.onnx (+ model_fp16.onnx, a TensorRT engine) and export.json"),
    fp16: bool = typer.Option(False, "--fp16", help="also model_fp16.onnx (fp16 inside, the scan in fp32, fp32 I/O); an fp16 TensorRT engine"),
    workdir: Optional[Path] = typer.Option(None, "--workdir", callback=_workdir_option, help=f"the study folder (default ./{DEFAULT_WORKDIR}): its mlflow.db and study.json"),
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
    _setup_logging(verbose)
    _one_source(run_id=run_id, best=best, checkpoint=checkpoint)
    from mlflow.exceptions import MlflowException

    from srstudy.analysis.select import SelectionError

    from .export import ExportError, export, load_source, log_export

    say = lambda m: console.print(escape(m), soft_wrap=True)  # noqa: E731
    try:
        sizes = [int(s) for s in latency_sizes.split(",") if s.strip()]
    except ValueError:
        _fail(f"--latency-sizes must be comma-separated integers, e.g. 64,256; got {latency_sizes!r}")
    try:
        src = load_source(run_id=run_id, best=best, checkpoint=checkpoint, workdir=workdir, tracking_uri=tracking_uri,
                          experiment=experiment, objectives=objectives, say=say)
        report = export(src.model, out, fp16=fp16, image=image, latency_sizes=sizes, latency_repeats=repeats,
                        latency_device=device, tensorrt=tensorrt, source=src, say=say)
        if log_run and src.run_id:
            logged = log_export(report, src.tracking_uri, src.run_id)
            say(f"logged to MLflow run {src.run_id}: {', '.join(logged)}")
    except (ExportError, SelectionError) as e:
        _fail(str(e), code=1)
    except (FileNotFoundError, ValueError, RuntimeError, MlflowException) as e:
        _fail(str(e))
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


@app.command("bench")
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
    workdir: Optional[Path] = typer.Option(None, "--workdir", callback=_workdir_option, help=f"the study folder (default ./{DEFAULT_WORKDIR})"),
    tracking_uri: TrackingUri = None,
    experiment: Experiment = None,
    objectives: Objectives = None,
    prefix: Optional[str] = typer.Option(None, "--prefix", help="metric prefix (default edge_ for --on jetson, bench_ for --on local)"),
    log_run: bool = typer.Option(True, "--log/--no-log", help="log the metrics to the run"),
    as_json: bool = typer.Option(False, "--json", help="print the summary as JSON on stdout"),
    verbose: Verbose = False,
) -> None:
    """Latency, throughput, power and energy per image of an exported network, on a Jetson Ray worker or here."""
    _setup_logging(verbose)
    import shlex

    if onnx is None:
        _one_source(run_id=run_id, best=best, onnx=onnx)
    elif best:
        _fail("give --onnx or --best, not both")
    from mlflow.exceptions import MlflowException

    from srstudy.analysis.select import SelectionError, best_run

    from .edge import BenchTimeout, NoJetsonError, bench_on_node, log_bench, run_benchmark
    from .export import ExportError, onnx_for_run, read_onnx

    say = lambda m: console.print(escape(m), soft_wrap=True)  # noqa: E731
    try:
        uri = tracking_uri
        if best:
            chosen = best_run(workdir=workdir, tracking_uri=tracking_uri, experiment=experiment,
                              objectives=objectives, say=say)
            run_id, uri = chosen.run_id, chosen.tracking_uri
            say(f"Pareto-best run: {run_id} ({', '.join(f'{k}={v:.5g}' for k, v in chosen.values.items())})")
        uri = uri or StudyDir(workdir).tracking_uri
        model = read_onnx(onnx) if onnx is not None else onnx_for_run(uri, run_id, fp16=fp16, say=say)
    except (ExportError, SelectionError, FileNotFoundError, ValueError, MlflowException) as e:
        _fail(str(e))
    options = dict(samples=samples, size=size, warmup=warmup, runtime=runtime.value, fp16=fp16, energy=energy.value,
                   tegrastats_cmd=shlex.split(tegrastats_cmd), idle_s=idle_s)
    try:
        if on is EdgeTarget.local:
            result = run_benchmark(model, say=say, **options)
        else:
            from . import _ray

            try:
                _ray.connect(address)
            except (ConnectionError, RuntimeError, ValueError) as e:
                _fail(f"cannot join the Ray cluster at --address {address}: {e}; start it (`ray up cluster.yaml`, "
                      "or `ray start --head` here and the Jetson joining it) or pass --address host:port")
            try:
                result = bench_on_node(model, wait_s=wait, timeout_s=timeout, say=say, **options)
            finally:
                _ray.shutdown()
    except (NoJetsonError, BenchTimeout, RuntimeError, ValueError) as e:
        _fail(str(e))
    prefix = prefix if prefix is not None else ("edge_" if on is EdgeTarget.jetson else "bench_")
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


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()

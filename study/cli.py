"""The `srstudy` command line (typer): the app, eval, trial, teacher and launch here; pareto
and report in `cli_results.py`, export and bench in `cli_deploy.py`; options and helpers
they share in `cli_options.py`. Each command parses, calls one function, prints."""
from __future__ import annotations

import contextlib
import json
from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .cli_deploy import bench_command, export_command
from .cli_options import DataRoot, Overrides, TrackingUri, Verbose, checked_workdir, console, fail, setup_logging, workdir_option
from .cli_results import pareto_command, report_command
from .workdir import DEFAULT_WORKDIR, StudyDir

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="srstudy: hyper-parameter studies for efficient Mamba super-resolution (DVMSR / MambaLiteSR).",
)


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
    setup_logging(verbose)
    from .measure.evaluate import bicubic_upscaler, evaluate, model_upscaler, open_sets
    from .measure.inference import resolve_device

    names = [s.strip() for s in sets.split(",") if s.strip()]
    if not names:
        fail("--sets is empty; e.g. --sets Set5,Set14,BSD100")
    try:
        if model == "bicubic":
            scale = 4
            upscaler = bicubic_upscaler(scale)
        elif model == "network":
            if checkpoint is None:
                fail("--checkpoint is required unless --model bicubic")
            from srstudy.models.dvmsr import load_checkpoint

            dev = resolve_device(device)
            net = load_checkpoint(checkpoint).to(dev)
            net.set_scan_backend(None if backend is Backend.auto else backend.value)
            scale = net.cfg.scale
            upscaler = model_upscaler(net, scale=scale, device=dev, tile=tile)
        else:
            fail(f"--model must be 'network' or 'bicubic', got {model!r}")
        benches = open_sets(data_root, names, scale=scale)
        on_image = None
        if not as_json:
            on_image = lambda s, n, p, q: console.print(f"  {s}/{n}: {p:.3f} dB, SSIM {q:.4f}")  # noqa: E731
        results = evaluate(upscaler, benches, grey_convention=grey.value, on_image=on_image)
    except (FileNotFoundError, ValueError, RuntimeError, MemoryError) as e:
        fail(str(e))
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


def _load_trial_config(config: Optional[Path], overrides: list[str], data_root: Optional[Path] = None):
    from .config import ConfigError, load_trial_config

    try:
        return load_trial_config(config, overrides, data_root=data_root)
    except ConfigError as e:
        fail(str(e))


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
    workdir: Path = typer.Option(DEFAULT_WORKDIR, "--workdir", callback=workdir_option, help="trials, teacher cache, MLflow sqlite"),
    overrides: Overrides = [],
    data_root: DataRoot = None,
    tracking_uri: TrackingUri = None,
    verbose: Verbose = False,
) -> None:
    """Run one distillation trial without Ray (resumes if the same config ran in --workdir, and
    completes the steps after training that a previous run could not do)."""
    setup_logging(verbose)
    cfg = _load_trial_config(config, overrides, data_root)
    from srstudy.trials.distill import run_trial

    with _progress_bar("student") as progress:
        try:
            result = run_trial(cfg, workdir=workdir, tracking_uri=tracking_uri, progress=progress)
        except (FileNotFoundError, ValueError, RuntimeError) as e:
            fail(str(e))
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
    workdir: Path = typer.Option(DEFAULT_WORKDIR, "--workdir", callback=workdir_option),
    overrides: Overrides = [],
    verbose: Verbose = False,
) -> None:
    """Train (or find in the cache) the teacher of a trial config, and print where it is."""
    setup_logging(verbose)
    cfg = _load_trial_config(config, overrides)
    from srstudy.trials.teacher import get_teacher

    from .measure.inference import resolve_device

    with _progress_bar("teacher") as progress:
        try:
            t = get_teacher(cfg, cache_dir=StudyDir(workdir).teachers, device=resolve_device(cfg.device),
                            progress=lambda it: progress(it, cfg.teacher.iterations))
        except (FileNotFoundError, ValueError, RuntimeError) as e:
            fail(str(e))
    print(json.dumps({"source": t.source, "key": t.key, "path": str(t.path), "params": t.model.param_count(),
                      **{k: v for k, v in t.meta.items() if k in ("seconds", "energy", "final_train_loss")}}))


@app.command("launch")
def launch_command(
    config: Optional[Path] = typer.Option(None, "--config", help="study YAML (default: the bundled CPU study)"),
    workdir: Optional[Path] = typer.Option(None, "--workdir", callback=workdir_option, help=f"study folder (default: the config's, ./{DEFAULT_WORKDIR})"),
    overrides: Overrides = [],
    data_root: DataRoot = None,
    resume: bool = typer.Option(False, "--resume", help="continue the study already in --workdir"),
    address: Optional[str] = typer.Option(None, "--address", help="join a Ray cluster: auto or host:port (default: local Ray on 127.0.0.1)"),
    verbose: Verbose = False,
) -> None:
    """Run a hyper-parameter study: Ray Tune + Optuna (multi-objective) + ASHA, MLflow runs.
    Exits 1 when a trial failed (one line per failed trial, with its error file)."""
    setup_logging(verbose)
    from .config import ConfigError, load_study_config
    from .launch import StudyExistsError, launch
    from .launch.progress import OUTCOMES, print_failed_trials
    from .workdir import WorkdirLockedError

    try:
        study = load_study_config(config, list(overrides) + ([f"workdir={workdir}"] if workdir else []),
                                  data_root=data_root)
    except ConfigError as e:
        fail(str(e))
    checked_workdir(study.workdir.expanduser(), "the study's workdir")  # also one set in the study YAML
    try:
        result = launch(study, resume=resume, address=address, console=console)
    except (StudyExistsError, WorkdirLockedError, FileNotFoundError, ValueError) as e:
        fail(str(e))
    table = Table(title=f"Pareto-best trials of study {study.name} ({len(result.pareto)} of "
                        f"{sum(r['status'] == 'done' for r in result.rows)} finished)")
    keys = list(study.search_space)
    for col in ["trial", "MLflow run", *keys, *[str(o) for o in result.objectives]]:
        table.add_column(col)
    for r in result.pareto:
        table.add_row(str(r["trial_id"]), str(r["mlflow_run_id"]), *[f"{r.get(k)}" for k in keys],
                      *[f"{r[o.metric]:.4g}" for o in result.objectives])
    Console(width=160).print(table)
    counts = {s: sum(r["status"] == s for r in result.rows) for s in OUTCOMES}
    print(f"trials: {counts}; wall time {result.wall_s:.0f} s")
    if result.rejected_proposals:
        from .objectives import ANALYTIC_METRICS

        analytic = ", ".join(str(c) for c in study.constraints if c.metric in ANALYTIC_METRICS)
        print(f"{result.rejected_proposals} proposal(s) broke {analytic} and were not run: Optuna sampled again")
    store = result.tracking_uri
    from .tracking import browser_links

    links = browser_links(store, result.parent_run_id)
    print(f"browse the runs: mlflow ui --backend-store-uri {store} --host 127.0.0.1 --port 5000, then open\n"
          f"  the study run (its front and knee): {links['study_run']}\n"
          f"  the trials, best PSNR first: {links['trials']}\n"
          "  the front only: search tags.pareto_rank = '0'")
    if print_failed_trials(result.rows, console, study.workdir):
        raise typer.Exit(code=1)
    if counts["interrupted"]:
        console.print(f"[yellow]study interrupted[/]: {counts['interrupted']} trial(s) stopped mid-way (their MLflow "
                      f"runs stay RUNNING); `srstudy launch --resume --workdir {study.workdir}` continues them from "
                      "their last checkpoints", soft_wrap=True)
        raise typer.Exit(code=130)




# pareto, report (cli_results.py) and export, bench (cli_deploy.py), in this order in --help
app.command("pareto")(pareto_command)
app.command("report")(report_command)
app.command("export")(export_command)
app.command("bench")(bench_command)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()

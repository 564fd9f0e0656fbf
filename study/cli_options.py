"""What the `srstudy` commands share: the stderr console, the options several commands take
(declared once), logging set-up, the one-line error exit and the --workdir check.

The commands: `cli.py` (the app; eval, trial, teacher, launch), `cli_results.py` (pareto,
report), `cli_deploy.py` (export, bench).
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape

from .workdir import WorkdirError, check_workdir

console = Console(stderr=True)

# options shared by several commands, declared once
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="debug logging")]
Overrides = Annotated[list[str], typer.Option(
    "--set", help="key=value override (repeatable), e.g. --set student.embed_dim=16 or --set num_samples=4")]
DataRoot = Annotated[Optional[Path], typer.Option(
    "--data-root", help="data folder laid out as train/T91/HR, train/BSD200/HR, benchmarks/<Set>/HR, checkpoints/: "
    "sets the trial's data (train T91+BSD200, validate Set5, score Set5, Set14, BSD100 if present) and reads a "
    "relative teacher.checkpoint under it; --set overrides still win")]
TrackingUri = Annotated[Optional[str], typer.Option(
    "--tracking-uri", help="MLflow URI (default: sqlite under --workdir, or $MLFLOW_TRACKING_URI)")]
Experiment = Annotated[Optional[str], typer.Option("--experiment", help="MLflow experiment of the trials (with --tracking-uri)")]
StudyName = Annotated[Optional[str], typer.Option("--study", help="only the trials of this study (its name)")]
Objectives = Annotated[Optional[str], typer.Option(
    "--objectives", help="e.g. psnr:max,gpu_energy_j:min,params:min,latency_ms:min (default: the study's)")]
Constraints = Annotated[list[str], typer.Option("--constraint", help="e.g. 'params<=150000' (repeatable)")]
Reference = Annotated[Optional[str], typer.Option(
    "--reference", help="hypervolume reference point, one value per objective (default: just beyond the worst)")]


def setup_logging(verbose: bool) -> None:
    """INFO (DEBUG with --verbose) log lines on stderr, so stdout stays for --json."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def fail(message: str, code: int = 2) -> None:
    """Print one `error: …` line and exit with `code` (2: bad input).

    Raises SystemExit, not typer.Exit: typer.Exit is a RuntimeError, so a command's
    `except RuntimeError` around a call of fail caught it and printed a second, empty
    `error:` line."""
    console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    raise SystemExit(code)


def say(message: str) -> None:
    """A progress or notice line on stderr (rich markup in `message` shown as is)."""
    console.print(escape(message), soft_wrap=True)


def checked_workdir(workdir: Optional[Path], what: str = "--workdir") -> Optional[Path]:
    """`workdir.check_workdir`, refusing a file before any work starts."""
    if workdir is None:
        return None
    try:
        return check_workdir(workdir, what)
    except WorkdirError as e:
        fail(str(e))


def workdir_option(workdir: Optional[Path]) -> Optional[Path]:
    """The callback of every --workdir option (typer hands a callback only the value)."""
    return checked_workdir(workdir)

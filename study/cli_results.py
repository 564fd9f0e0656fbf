"""`srstudy pareto` and `srstudy report`: a study's trial runs ranked over its objectives
(`srstudy.analysis`), as a table, JSON, plots, MLflow tags or one HTML file. Registered on
the app in `cli.py`."""
from __future__ import annotations

import functools
import inspect
import json
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .cli_options import (Constraints, Experiment, Objectives, Reference, StudyName, TrackingUri, Verbose, console,
                          fail, setup_logging, workdir_option)
from .workdir import DEFAULT_WORKDIR


def with_study_selection(workdir_help: str):
    """Give a command the options that select a study's trial runs and how they are ranked
    (--workdir, --tracking-uri, --experiment, --study, --objectives, --constraint, --reference),
    ahead of its own; the command receives them as one `selection` dict for `_study`."""
    shared = [("workdir", Optional[Path], typer.Option(None, "--workdir", callback=workdir_option, help=workdir_help)),
              ("tracking_uri", TrackingUri, None), ("experiment", Experiment, None), ("study_name", StudyName, None),
              ("objectives", Objectives, None), ("constraints", Constraints, []), ("reference", Reference, None)]
    params = [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=d, annotation=a) for n, a, d in shared]

    def wrap(fn):
        own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
               for p in inspect.signature(fn, eval_str=True).parameters.values() if p.name != "selection"]

        @functools.wraps(fn)
        def command(**kwargs: Any) -> None:
            return fn(selection={n: kwargs.pop(n) for n, _, _ in shared}, **kwargs)

        command.__signature__ = inspect.Signature(params + own)
        command.__annotations__ = {p.name: p.annotation for p in params + own}
        return command

    return wrap


def _study(selection: dict[str, Any], say):
    """(source, runs, result): `analysis.load.study_source` then `analysis.select.analyse_study`
    over the options of `with_study_selection`, their errors as one `error:` line."""
    workdir, tracking_uri, experiment, study_name, objectives, constraints, reference = (
        selection[k] for k in ("workdir", "tracking_uri", "experiment", "study_name", "objectives", "constraints",
                               "reference"))
    from mlflow.exceptions import MlflowException

    from srstudy.analysis.load import SourceError, study_source
    from srstudy.analysis.select import analyse_study

    from .objectives import ObjectiveError

    try:
        source = study_source(workdir, tracking_uri=tracking_uri, experiment=experiment, study=study_name)
    except SourceError as e:
        fail(str(e))
    except MlflowException as e:
        fail(f"MLflow at {tracking_uri or workdir}: {e.message}")
    try:
        runs, result = analyse_study(source, objectives, constraints, reference, say)
    except (ObjectiveError, ValueError) as e:
        fail(str(e))
    except MlflowException as e:
        fail(f"MLflow at {source.tracking_uri}: {e.message}")
    return source, runs, result


@with_study_selection(f"a `srstudy launch` folder (study.json, mlflow.db); default ./{DEFAULT_WORKDIR}")
def pareto_command(
    selection: dict[str, Any],
    as_json: bool = typer.Option(False, "--json", help="print a JSON list of the front: run_id and objective values"),
    plot: Optional[Path] = typer.Option(None, "--plot", help="write pairwise scatter plots (PNG) with the front highlighted"),
    show_all: bool = typer.Option(False, "--all", help="list every ranked run, not only the front"),
    tag: bool = typer.Option(True, "--tag/--no-tag", help="tag ranked runs in MLflow with pareto_rank (0 = front)"),
    verbose: Verbose = False,
) -> None:
    """The Pareto front of a study's trial runs, from MLflow (table, JSON, plots, MLflow tags)."""
    setup_logging(verbose)
    from srstudy.analysis.front import fmt

    out = Console(width=200) if not as_json else console
    say = (lambda m: console.print(escape(m), soft_wrap=True)) if as_json else (lambda m: out.print(escape(m), soft_wrap=True))
    source, runs, result = _study(selection, say)
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


@with_study_selection(f"a `srstudy launch` folder; default ./{DEFAULT_WORKDIR}")
def report_command(
    selection: dict[str, Any],
    out: Path = typer.Option(Path("report.html"), "--out", help="the HTML file to write (self-contained)"),
    verbose: Verbose = False,
) -> None:
    """One self-contained HTML report: the front, plots, hypervolume, knee, the paper's findings."""
    setup_logging(verbose)
    import matplotlib

    matplotlib.use("Agg")
    from srstudy.analysis.report import build_report_html

    notices: list[str] = []
    source, runs, result = _study(selection, notices.append)
    for n in notices:
        console.print(escape(n), soft_wrap=True)
    path = build_report_html(source, runs, result, out, notices=notices)
    print(f"report: {path} ({path.stat().st_size // 1024} KiB); front: {len(result.front)} run(s)")

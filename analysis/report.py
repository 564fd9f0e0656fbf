"""One self-contained HTML report of a study: the front, its plots (base64 PNG inline), the
hypervolume, the knee, the exclusions, and the paper's findings re-measured.

Built directly from the runs (no notebook kernel needed): `srstudy report --workdir DIR
--out report.html`, or `write_report(source, out=...)` from Python.
"""
from __future__ import annotations

import datetime as _dt
import html
from pathlib import Path

import numpy as np
import pandas as pd

from srstudy.objectives import DEFAULT_OBJECTIVES

from . import findings
from .front import FrontResult, analyse, fmt, hypervolume_history, measured_objectives
from .load import StudySource, load_runs

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1200px;color:#222;padding:0 1em}
h1{font-size:1.6em}h2{font-size:1.25em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.8em}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}th,td{border:1px solid #ddd;padding:.25em .55em;text-align:right}
th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}tr.knee td{background:#fff4c2}
pre{background:#f7f7f7;padding:.7em;font-size:.85em;overflow-x:auto}.note{color:#8a5a00;background:#fff8e6;padding:.5em .8em;border-left:3px solid #e0a800}
img{max-width:100%;height:auto}code{background:#f2f2f2;padding:0 .2em}
"""


def _table(df: pd.DataFrame, highlight: pd.Series | None = None, max_rows: int = 500) -> str:
    cols = list(df.columns)
    out = ["<table><thead><tr>", *[f"<th>{html.escape(str(c))}</th>" for c in cols], "</tr></thead><tbody>"]
    for i, (_, r) in enumerate(df.head(max_rows).iterrows()):
        cls = ' class="knee"' if highlight is not None and bool(highlight.iloc[i]) else ""
        out.append(f"<tr{cls}>" + "".join(f"<td>{html.escape(fmt(r[c]))}</td>" for c in cols) + "</tr>")
    out.append("</tbody></table>")
    if len(df) > max_rows:
        out.append(f"<p>({len(df) - max_rows} more rows not shown)</p>")
    return "".join(out)


def _img(fig, alt: str) -> str:
    import matplotlib.pyplot as plt

    from .plots import to_base64_png

    data = to_base64_png(fig)
    plt.close(fig)
    return f'<p><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"></p>'


def build_html(runs: pd.DataFrame, result: FrontResult, *, title: str, meta: dict[str, str],
               notices: list[str] = ()) -> str:
    """The report's HTML for analysed runs."""
    import matplotlib.pyplot as plt

    from . import plots

    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"]
    parts.append("<table>" + "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
                                     for k, v in meta.items()) + "</table>")
    for n in notices:
        parts.append(f"<p class='note'>{html.escape(n)}</p>")

    parts.append("<h2>Pareto front</h2>")
    parts.append(f"<pre>{html.escape(chr(10).join(result.summary_lines()))}</pre>")
    table = result.table()
    parts.append(_table(table, highlight=table["knee"] if "knee" in table.columns else None))
    parts.append("<p>Knee (highlighted, ★ in the plots): the front member farthest below the hyperplane "
                 "through the extremes after min–max normalisation over the front. Hypervolume: exact, "
                 "in the objectives' own units, against the reference point above.</p>")
    if len(result.ranked):
        parts.append(_img(plots.pairwise_front(result), "pairwise objectives, front highlighted"))
        hist = hypervolume_history(result)
        fig, ax = plt.subplots(figsize=(5.5, 3.2))
        ax.step(hist["n_runs"], hist["hypervolume"], where="post")
        ax.set_xlabel("ranked runs finished")
        ax.set_ylabel("hypervolume")
        ax.set_title("hypervolume as the study progressed")
        ax.grid(True, alpha=0.3)
        parts.append(_img(fig, "hypervolume over the study"))

    parts.append("<h2>The paper's findings, re-measured</h2>")
    parts.append(_findings_html(runs))

    if len(result.excluded):
        parts.append("<h2>Excluded runs</h2>")
        parts.append(_table(result.excluded))
    parts.append("<h2>All ranked runs</h2><details><summary>show</summary>")
    parts.append(_table(result.table(front_only=False)))
    parts.append("</details></body></html>")
    return "\n".join(parts)


def _findings_html(runs: pd.DataFrame) -> str:
    import matplotlib.pyplot as plt

    from . import plots

    out = []
    ok, sentence = findings.energy_status(runs)
    out.append(f"<p{'' if ok else ' class=note'}>{html.escape(sentence)}.</p>")
    done = runs[findings.finished_mask(runs)]
    panels = []
    if "student.rank" in done.columns and done["student.rank"].nunique() > 1:
        m = "gpu_energy_j" if ok else "train_time_s"
        out.append(f"<h3>Rank vs {'training energy' if ok else 'training time'} and PSNR (Table III)</h3>")
        out.append(_table(findings.by_setting(runs, "student.rank", ["val_psnr", *findings.ENERGY_COLUMNS[:3],
                                                                     "train_time_s", "params"]).round(4)
                          .pipe(_flatten_columns).reset_index()))
        panels += [("student.rank", "val_psnr", None), ("student.rank", m, None)]
    if "alpha" in done.columns and done["alpha"].nunique() > 1:
        out.append("<h3>α vs PSNR (Table IV, Fig. 5)</h3>")
        rho, n = findings.spearman(runs, "alpha", "val_psnr")
        out.append(f"<p>Spearman ρ(α, val_psnr) = {rho:.3f} over {n} finished runs.</p>")
        panels.append(("alpha", "val_psnr", np.linspace(0, 1, 6)))
    if panels:
        fig, axes = plt.subplots(1, len(panels), figsize=(4.8 * len(panels), 3.6), squeeze=False)
        for ax, (x, y, bins) in zip(axes.flat, panels):
            plots.setting_vs_metric(done, x, y, ax, colour_by="student.embed_dim" if x != "student.embed_dim" else None,
                                    bins=bins)
        fig.tight_layout()
        out.append(_img(fig, "settings vs metrics"))
    mv = findings.params_measured_vs_analytic(runs)
    if len(mv):
        out.append("<h3>Embedding dimension vs params (Eq. 4)</h3>")
        agree = int(mv["agree"].sum())
        out.append(f"<p>Measured params equal the analytic count (DVMSRConfig.param_count) for {agree} of "
                   f"{len(mv)} runs.</p>")
        curves, coeffs = findings.eq4_curves(mv, np.arange(4, 129, 4))
        out.append("<ul>" + "".join(f"<li>{html.escape(label)}: {html.escape(findings.polynomial_text(c))}</li>"
                                    for label, c in coeffs.items()) + "</ul>")
        fig, ax = plt.subplots(figsize=(5.6, 3.8))
        plots.params_vs_embed_dim(mv, curves, ax)
        fig.tight_layout()
        out.append(_img(fig, "params vs embed_dim"))
    return "\n".join(out)


def _flatten_columns(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    df.columns = [" ".join(map(str, c)) if isinstance(c, tuple) else str(c) for c in df.columns]
    return df


def build_report_html(source: StudySource, runs: pd.DataFrame, result: FrontResult, out: str | Path, *,
                      notices=()) -> Path:
    """Write the report of analysed runs to `out` (one HTML file, plots inline)."""
    import matplotlib

    matplotlib.use("Agg")
    counts = runs["status"].value_counts().to_dict() if len(runs) else {}
    meta = {"experiment": source.experiment, "tracking URI": source.tracking_uri,
            "study": source.study or "(all trial runs of the experiment)",
            "parent run(s)": ", ".join(source.parent_run_ids or []) or "-",
            "trial runs": f"{len(runs)} ({', '.join(f'{v} {k}' for k, v in counts.items())}; "
                          f"{int(runs['pruned'].sum()) if len(runs) else 0} pruned)",
            "generated": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    title = f"srstudy report: {source.study or source.experiment}"
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(build_html(runs, result, title=title, meta=meta, notices=list(notices)), encoding="utf-8")
    return out


def write_report(source: StudySource, out: str | Path, *, objectives=None, constraints=None,
                 reference=None) -> tuple[Path, FrontResult]:
    """Load the study's runs, analyse them, write `out`. Objectives default to the study's
    own (study.json), else psnr, energy, params, latency — those measured in no run are
    dropped with a notice in the report."""
    runs = load_runs(source)
    notices = []
    if objectives is None:
        objectives = measured_objectives(runs, source.objectives or DEFAULT_OBJECTIVES, notices.append)
    result = analyse(runs, objectives, constraints, reference=reference)
    return build_report_html(source, runs, result, out, notices=notices), result

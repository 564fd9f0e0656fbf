"""Plots of a study's front and of the paper's findings (matplotlib, no display needed).

`pairwise_front(result)`: one panel per pair of objectives, every ranked run plotted —
dominated runs grey (lighter for higher ranks), the front red, the knee a black-edged star.
With exactly two objectives the front's attainment staircase is drawn; with more, a front
member may look dominated in a 2-D projection (it is better in another objective).
"""
from __future__ import annotations

import base64
import io
import itertools
import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

FRONT = "#d62728"


def _label(metric: str, direction: str | None = None) -> str:
    arrow = {"max": " (↑ better)", "min": " (↓ better)"}.get(direction or "", "")
    return metric + arrow


def _readable_axis(axis, values) -> None:
    """At most 5 ticks; thousands as 100k / 102.5k when the values reach 10,000 (joules,
    parameters), so neighbouring tick labels do not run into each other."""
    from matplotlib.ticker import EngFormatter, MaxNLocator

    axis.set_major_locator(MaxNLocator(nbins=5))
    finite = np.asarray(values, dtype=float)
    finite = finite[np.isfinite(finite)]
    if finite.size and np.abs(finite).max() >= 1e4:
        axis.set_major_formatter(EngFormatter(sep=""))


def pairwise_front(result, path: str | Path | None = None, *, title: str | None = None,
                   annotate: int = 12, dpi: int = 110):
    """Scatter every pair of objectives with the front highlighted; saves a PNG at `path`
    when given. Returns the Figure."""
    metrics, dirs = result.metrics, result.directions
    pairs = list(itertools.combinations(range(len(metrics)), 2)) or [(0, 0)]
    ncols = min(len(pairs), 3)
    nrows = math.ceil(len(pairs) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.9 * nrows), squeeze=False)
    ranked = result.ranked
    front = ranked[ranked["pareto_rank"] == 0]
    dominated = ranked[ranked["pareto_rank"] > 0]
    max_rank = max(int(ranked["pareto_rank"].max()) if len(ranked) else 1, 1)
    knee = ranked[ranked["knee"]]
    for ax, (i, j) in zip(axes.flat, pairs):
        xm, ym = metrics[i], metrics[j]
        if len(dominated):
            shade = 0.35 + 0.45 * (dominated["pareto_rank"].to_numpy() - 1) / max(max_rank - 1, 1)
            ax.scatter(dominated[xm], dominated[ym], s=22, c=[(g, g, g) for g in shade], label="dominated (rank ≥ 1)",
                       zorder=2)
        if len(metrics) == 2 and len(front):
            _staircase(ax, front[xm].to_numpy(), front[ym].to_numpy(), dirs[i], dirs[j])
        ax.scatter(front[xm], front[ym], s=46, c=FRONT, edgecolors="black", linewidths=0.5,
                   label="Pareto front (rank 0)", zorder=3)
        if len(knee):
            ax.scatter(knee[xm], knee[ym], s=230, marker="*", c="gold", edgecolors="black", linewidths=0.8,
                       label="knee", zorder=4)
        if len(front) <= annotate and "run_name" in front.columns:
            for _, r in front.iterrows():
                ax.annotate(str(r["run_name"]), (r[xm], r[ym]), textcoords="offset points", xytext=(4, 4),
                            fontsize=6, color="#333333")
        ax.set_xlabel(_label(xm, dirs[i]))
        ax.set_ylabel(_label(ym, dirs[j]))
        _readable_axis(ax.xaxis, ranked[xm])
        _readable_axis(ax.yaxis, ranked[ym])
        ax.grid(True, alpha=0.3)
    for ax in list(axes.flat)[len(pairs):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=len(labels), frameon=False,
               bbox_to_anchor=(0.5, 1.0))
    n_ex = len(result.excluded)
    fig.suptitle(title or (f"{len(front)} of {len(ranked)} ranked runs on the front"
                           f" ({n_ex} excluded)" + (f", hypervolume {result.hypervolume:.4g}"
                                                    if result.hypervolume is not None else "")),
                 y=1.06 if nrows == 1 else 1.03)
    fig.tight_layout()
    if path is not None:
        save(fig, path, dpi=dpi)
    return fig


def _staircase(ax, x, y, dx: str, dy: str) -> None:  # noqa: ARG001 - dy implied by the sort
    """The 2-D front's attainment boundary (the region it dominates is behind it)."""
    sx = 1 if dx == "min" else -1
    order = np.argsort(sx * x, kind="stable")
    xs, ys = x[order], y[order]
    px, py = [xs[0]], [ys[0]]
    for k in range(1, len(xs)):
        px += [xs[k], xs[k]]
        py += [py[-1], ys[k]]
    ax.plot(px, py, color=FRONT, alpha=0.5, lw=1.2, zorder=2)


def save(fig, path: str | Path, dpi: int = 110) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path


def to_base64_png(fig, dpi: int = 110) -> str:
    """The figure as a base64 PNG (for self-contained HTML)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def setting_vs_metric(runs: pd.DataFrame, setting: str, metric: str, ax=None, *, colour_by: str | None = None,
                      trend: bool = True, bins=None):
    """One point per run (metric against a setting), coloured by another setting, with the
    mean per setting value (or per bin) as a line."""
    if ax is None:
        _, ax = plt.subplots(figsize=(4.6, 3.6))
    df = runs[[c for c in {setting, metric, colour_by} if c]].apply(pd.to_numeric, errors="coerce")
    df = df.dropna(subset=[setting, metric])
    if colour_by and colour_by in df.columns and df[colour_by].notna().any():
        sc = ax.scatter(df[setting], df[metric], c=df[colour_by], cmap="viridis", s=28, zorder=3)
        ax.figure.colorbar(sc, ax=ax, label=colour_by)
    else:
        ax.scatter(df[setting], df[metric], s=28, zorder=3)
    if trend and len(df):
        if bins is not None:
            key = pd.cut(df[setting], bins=bins, include_lowest=True)
            m = df.groupby(key, observed=True).agg(x=(setting, "mean"), y=(metric, "mean"))
        else:
            m = df.groupby(setting).agg(x=(setting, "first"), y=(metric, "mean"))
        ax.plot(m["x"], m["y"], color="black", lw=1, alpha=0.7, marker="_", label="mean")
        ax.legend(loc="best", fontsize=8)
    ax.set_xlabel(setting)
    ax.set_ylabel(metric)
    ax.grid(True, alpha=0.3)
    return ax


def params_vs_embed_dim(measured: pd.DataFrame, curves: dict[str, pd.DataFrame], ax=None):
    """Measured params of the runs (points) against analytic curves params(C) (lines)."""
    if ax is None:
        _, ax = plt.subplots(figsize=(5.2, 3.8))
    for label, c in curves.items():
        ax.plot(c["embed_dim"], c["params"], lw=1.3, label=label)
    if len(measured):
        ax.scatter(measured["embed_dim"], measured["params_measured"], c="black", s=30, zorder=3,
                   label="runs (measured)")
    ax.set_xlabel("embed_dim C")
    ax.set_ylabel("params")
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return ax

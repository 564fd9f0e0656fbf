"""MambaLiteSR's findings re-measured on a study's runs (used by `paper_findings.ipynb` and
the report).

- Table III: the rank of the mixer's Δ path vs training energy / power and PSNR
  (`by_setting(runs, "student.rank", ...)`).
- Table IV / Fig. 5: the distillation weight α vs PSNR (`by_setting(runs, "alpha", bins=…)`).
- Eq. 4: parameters as a function of the embedding dimension C — measured (`params` of the
  runs) against the analytic count (`srstudy.models.dvmsr.DVMSRConfig.param_count`) and its
  closed form, a quadratic in C for a fixed topology and rank (`params_polynomial`).

A metric that was not measured (GPU energy on a CPU study) is reported absent, never 0.
"""
from __future__ import annotations

from fractions import Fraction

import pandas as pd

from .front import finished_mask

ENERGY_COLUMNS = ("gpu_energy_j", "gpu_avg_power_w", "gpu_energy_per_iter_j", "gpu_idle_power_w",
                  "gpu_inference_energy_per_image_j")
# the run params that make up a student's DVMSRConfig
ARCH_PARAMS = {"embed_dim": "student.embed_dim", "n_groups": "student.n_groups",
               "blocks_per_group": "student.blocks_per_group", "rank": "student.rank",
               "lowrank_proj": "student.lowrank_proj", "d_state": "student.d_state",
               "expand": "student.expand", "d_conv": "student.d_conv", "scale": "scale"}


def present(runs: pd.DataFrame, columns) -> list[str]:
    """The columns that hold at least one finite value."""
    return [c for c in columns if c in runs.columns and pd.to_numeric(runs[c], errors="coerce").notna().any()]


def energy_status(runs: pd.DataFrame) -> tuple[bool, str]:
    """(whether GPU energy was measured in any run, a sentence saying so and why not)."""
    have = present(runs, ENERGY_COLUMNS)
    if have:
        n = int(pd.to_numeric(runs[have[0]], errors="coerce").notna().sum())
        return True, f"GPU energy measured in {n} of {len(runs)} runs ({', '.join(have)})"
    reason = None
    if "tag.energy_unavailable_reason" in runs.columns:
        vals = runs["tag.energy_unavailable_reason"].dropna().unique()
        reason = "; ".join(map(str, vals)) if len(vals) else None
    return False, ("GPU energy was not measured in this study"
                   + (f" ({reason})" if reason else "") + ": energy and power columns are absent (not 0)")


def by_setting(runs: pd.DataFrame, setting: str, metrics, *, bins=None, finished_only: bool = True) -> pd.DataFrame:
    """Mean, std and count of each measured metric per value (or bin) of a setting.

    bins: bin edges for a continuous setting such as `alpha` (e.g. `np.linspace(0, 1, 6)`).
    Metrics absent from every run are left out (see `present`).
    """
    df = runs[finished_mask(runs)] if finished_only else runs
    if setting not in df.columns:
        raise KeyError(f"setting {setting!r} is not a param of these runs (it was not searched or logged)")
    metrics = present(df, metrics)
    key = df[setting]
    if bins is not None:
        key = pd.cut(pd.to_numeric(key), bins=bins, include_lowest=True)
    g = df[metrics].apply(pd.to_numeric, errors="coerce").groupby(key, observed=True)
    out = g.agg(["mean", "std", "count"])
    out.index.name = setting
    return out


def spearman(runs: pd.DataFrame, x: str, y: str) -> tuple[float, int]:
    """Spearman rank correlation of y with x over the finished runs holding both, and n."""
    df = runs[finished_mask(runs)][[x, y]].apply(pd.to_numeric, errors="coerce").dropna()
    if len(df) < 3 or df[x].nunique() < 2 or df[y].nunique() < 2:
        return float("nan"), len(df)
    return float(df[x].rank().corr(df[y].rank())), len(df)


def arch_of(row: pd.Series, base: str = "litesr_student"):
    """The run's student as a DVMSRConfig (settings it did not log: the preset's)."""
    from srstudy.models.dvmsr import preset

    kw = {}
    for field_name, col in ARCH_PARAMS.items():
        if col in row.index and not pd.isna(row[col]):
            v = row[col]
            kw[field_name] = bool(v) if field_name == "lowrank_proj" else int(v)
    return preset(base, **kw)


def params_measured_vs_analytic(runs: pd.DataFrame) -> pd.DataFrame:
    """Per run that logged `params`: its student settings, the measured count, the analytic
    one (`DVMSRConfig.param_count()`) and whether they agree exactly."""
    df = runs[runs["params"].notna()] if "params" in runs.columns else runs.iloc[:0]
    rows = []
    for _, r in df.iterrows():
        cfg = arch_of(r)
        rows.append({"run_name": r.get("run_name"), "embed_dim": cfg.embed_dim, "n_groups": cfg.n_groups,
                     "blocks_per_group": cfg.blocks_per_group, "rank": cfg.rank, "lowrank_proj": cfg.lowrank_proj,
                     "params_measured": int(r["params"]), "params_analytic": cfg.param_count()})
    out = pd.DataFrame(rows, columns=["run_name", "embed_dim", "n_groups", "blocks_per_group", "rank", "lowrank_proj",
                                      "params_measured", "params_analytic"])
    out["agree"] = out["params_measured"] == out["params_analytic"]
    return out


def params_curve(embed_dims, base: str = "litesr_student", **arch) -> pd.DataFrame:
    """Analytic params for each embedding dimension C (topology: `base` preset + `arch`)."""
    from srstudy.models.dvmsr import preset

    return pd.DataFrame({"embed_dim": list(embed_dims),
                         "params": [preset(base, embed_dim=int(c), **arch).param_count() for c in embed_dims]})


def params_polynomial(base: str = "litesr_student", **arch) -> tuple[Fraction, Fraction, Fraction]:
    """Exact (a, b, c) with params(C) = a·C² + b·C + c for a fixed topology and rank (Eq. 4's
    form): solved from C = 8, 16, 24 and checked on C = 4…128. Needs a fixed `rank` (the
    preset's, or given); with rank=None (ceil(C/16)) the count is not a polynomial."""
    from srstudy.models.dvmsr import preset

    if preset(base, **arch).rank is None:
        raise ValueError("params(C) is a polynomial only for a fixed rank; pass rank=…")
    xs = [8, 16, 24]
    ys = [Fraction(params_curve([x], base, **arch)["params"].iloc[0]) for x in xs]
    # Newton's divided differences, exact in rationals
    d1 = [(ys[1] - ys[0]) / (xs[1] - xs[0]), (ys[2] - ys[1]) / (xs[2] - xs[1])]
    a = (d1[1] - d1[0]) / (xs[2] - xs[0])
    b = d1[0] - a * (xs[0] + xs[1])
    c = ys[0] - a * xs[0] ** 2 - b * xs[0]
    for x in range(4, 129, 4):
        got = preset(base, embed_dim=x, **arch).param_count()
        if a * x * x + b * x + c != got:
            raise AssertionError(f"params({x}) = {got} is not {a}·C² + {b}·C + {c}")
    return a, b, c


def polynomial_text(coeffs) -> str:
    a, b, c = (float(v) if Fraction(v).denominator != 1 else int(v) for v in coeffs)
    return f"params(C) = {a}·C² + {b}·C + {c}"



def topologies(measured: pd.DataFrame, limit: int = 4) -> list[dict]:
    """The distinct student topologies (groups × blocks, rank, lowrank_proj) among the runs
    of `params_measured_vs_analytic`, most frequent first."""
    keys = ["n_groups", "blocks_per_group", "rank", "lowrank_proj"]
    if not len(measured):
        return []
    counts = measured.groupby(keys).size().sort_values(ascending=False, kind="stable")
    return [dict(n_groups=int(g), blocks_per_group=int(b), rank=int(r), lowrank_proj=bool(lp))
            for g, b, r, lp in counts.index[:limit]]


def eq4_curves(measured: pd.DataFrame, embed_dims) -> tuple[dict[str, pd.DataFrame], dict[str, tuple]]:
    """Analytic params(C) curves and their exact quadratic coefficients: one per topology of
    the study's runs, plus MambaLiteSR's student (litesr_student: 4×2, rank 2)."""
    curves, coeffs = {}, {}
    for arch in topologies(measured):
        label = (f"this study: {arch['n_groups']}×{arch['blocks_per_group']}, r={arch['rank']}"
                 + (", lowrank_proj" if arch["lowrank_proj"] else ""))
        curves[label] = params_curve(embed_dims, **arch)
        coeffs[label] = params_polynomial(**arch)
    label = "litesr_student: 4×2, r=2"
    curves[label] = params_curve(embed_dims)
    coeffs[label] = params_polynomial()
    return curves, coeffs

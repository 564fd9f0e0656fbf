"""The fastest backward CONFIG per input dtype from a `bench_scan_tiles.py --configs` report (issue 15).

    python benchmarks/gpu/pick_scan_config.py scan_configs_h200.json [--shape D64] > best.json

Reads the rows `D<Dm>/<dtype>/triton_default` and `D<Dm>/<dtype>/triton{...}` (the shipped kernels
under each CONFIG override), takes per dtype the row with the least forward + backward at `--shape`
(the student's D 64 by default), and prints one JSON object of CONFIG entries (`bwd_stages`,
`bwd_maxnreg`, `bwd_vec` by dtype name, `bwd_spread` as the dtype names it is on for) for
`bench_train_step.py --scan-config`; the choice and its margin over the shipped CONFIG go to stderr.
"""
from __future__ import annotations

import argparse
import json
import sys

from srstudy.models.scan_triton import CONFIG

KEYS = ("bwd_stages", "bwd_maxnreg", "bwd_vec", "bwd_flip")


def _entry(overrides: dict, key: str, dtype: str):
    """The value of CONFIG[key] for `dtype` with `overrides` in force."""
    table = overrides.get(key, CONFIG[key])
    if key == "bwd_spread":
        return table if isinstance(table, bool) else dtype in table
    return table.get(dtype, table["default"])


def pick(report: dict, shape: str = "D64") -> tuple[dict, list[str]]:
    """(CONFIG entries, log lines): per dtype, the fastest configuration at `shape`."""
    chosen, log = {}, []
    for dtype in ("float32", "bfloat16"):
        rows = {k.split("/", 2)[2]: v["fwdbwd_ms"] for k, v in report["scan"].items()
                if k.startswith(f"{shape}/{dtype}/triton") and "fwdbwd_ms" in v}
        if not rows:
            continue
        best = min(rows, key=rows.get)
        overrides = {} if best == "triton_default" else json.loads(best.removeprefix("triton"))
        chosen[dtype] = overrides
        log.append(f"{dtype}: {best} {rows[best]:.3f} ms vs shipped {rows.get('triton_default', float('nan')):.3f} ms")
    out = {key: {"default": _entry({}, key, "default")} for key in KEYS}
    spread = []
    for dtype, overrides in chosen.items():
        for key in KEYS:
            out[key][dtype] = _entry(overrides, key, dtype)
        if _entry(overrides, "bwd_spread", dtype):
            spread.append(dtype)
    out["bwd_spread"] = spread
    return out, log


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("report")
    ap.add_argument("--shape", default="D64")
    args = ap.parse_args()
    with open(args.report) as f:
        out, log = pick(json.load(f), args.shape)
    print("\n".join(log), file=sys.stderr)
    print(json.dumps(out))


if __name__ == "__main__":
    main()

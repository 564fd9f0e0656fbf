"""Params and FLOPs of the teacher/student presets for rank ∈ {2, 4, 30} × lowrank_proj.

Counts are exact (analytic, and equal to the built network's; see tests/test_models.py);
FLOPs = 2 × MACs of convs, linears and the scan at LR 64×64 (the paper's input size).

    python benchmarks/model_table.py [--out benchmarks/results/model_table.json]
"""
from __future__ import annotations

import argparse
import json

from srstudy.models.dvmsr import preset


def rows(size: int = 64) -> list[dict]:
    out = []
    for name in ("litesr_teacher", "litesr_student", "dvmsr"):
        for lowrank in (False, True):
            for rank in (2, 4, 30):
                cfg = preset(name, rank=rank, lowrank_proj=lowrank)
                out.append({"preset": name, "rank": rank, "lowrank_proj": lowrank,
                            "params": cfg.param_count(), "gflops_lr64": cfg.flops(size, size) / 1e9})
    return out


def markdown(table: list[dict]) -> str:
    lines = ["| preset | rank | lowrank_proj | params | GFLOPs @ LR 64×64 |", "|---|---:|---|---:|---:|"]
    for r in table:
        lines.append(f"| {r['preset']} | {r['rank']} | {'on' if r['lowrank_proj'] else 'off'} | "
                     f"{r['params']:,} | {r['gflops_lr64']:.3f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    table = rows()
    print(markdown(table))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(table, f, indent=1)

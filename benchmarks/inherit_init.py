"""Set5 ×4 PSNR of students that start from DVMSR's weights, before any training (`student_init: teacher`).

    python benchmarks/inherit_init.py --data-root ../shared/data --out benchmarks/results/inherit_init_cpu.json

The official DVMSR checkpoint (DATA/checkpoints/DVMSR.pth) is the teacher; each student takes its
first groups and blocks and truncated-SVD ranks (`srstudy.models.inherit`), and is scored on Set5 (Y
channel, crop 4) as it starts; one student of the same shape with DVMSR's random init for scale.
"""
from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch

from srstudy.measure.evaluate import evaluate, model_upscaler, open_sets
from srstudy.models.dvmsr import DVMSR, DVMSRConfig, load_checkpoint
from srstudy.models.inherit import inherit_from_teacher

STUDENTS = [  # (n_groups, blocks_per_group, rank, lowrank_proj)
    (1, 2, 1, False), (1, 1, 4, False), (1, 2, 8, True), (2, 1, 4, True), (1, 1, 4, True),
]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    args = ap.parse_args(argv)
    cpu = torch.device("cpu")
    teacher = load_checkpoint(args.data_root / "checkpoints" / "DVMSR.pth")
    sets = open_sets(args.data_root / "benchmarks", ["Set5"], scale=4)

    def set5(net: DVMSR) -> float:
        with torch.no_grad():
            return evaluate(model_upscaler(net.eval(), scale=4, device=cpu), sets)["Set5"]["psnr"]

    rows = [{"student": "teacher (official DVMSR)", "params": teacher.param_count(), "Set5_psnr": set5(teacher)}]
    for g, b, r, lowrank in STUDENTS:
        cfg = DVMSRConfig(embed_dim=60, n_groups=g, blocks_per_group=b, rank=r, lowrank_proj=lowrank)
        student = DVMSR(cfg)
        inh = inherit_from_teacher(student, teacher)
        rows.append({"student": f"60-dim {g}x{b} rank {r}{' factored projections' if lowrank else ''}",
                     "params": student.param_count(), "Set5_psnr": set5(student), **inh.tags()})
        print(rows[-1]["student"], rows[-1]["params"], round(rows[-1]["Set5_psnr"], 3))
    torch.manual_seed(0)
    rows.append({"student": "60-dim 1x2 rank 1, random init (seed 0)", "params": DVMSR(DVMSRConfig(60, 1, 2, 1)).param_count(),
                 "Set5_psnr": set5(DVMSR(DVMSRConfig(60, 1, 2, 1)))})
    out = {"device": "cpu", "torch": torch.__version__, "python": platform.python_version(),
           "what": "Set5 x4 Y-PSNR before any training", "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

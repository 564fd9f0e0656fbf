"""Start a student from its teacher's weights: a shallower, lower-rank copy of the teacher.

Distillation usually starts the student from random weights and lets the loss
α·L1(S,T) + (1−α)·L1(S,GT) pull it towards the teacher. When the student has the teacher's
width it can also *inherit* the teacher's weights (as DistilBERT keeps a subset of its
teacher's layers), and its training starts from a network that already super-resolves:

    teacher : C channels, G_T groups × K_T blocks, Δ rank r_T (projections full or rank r_T)
    student : C channels, G ≤ G_T groups × K ≤ K_T blocks, Δ rank r

* the head (conv_first, patch_embed), the tail (norm_f, conv_after_body, upsample) and,
  for group g < G and block k < K, the teacher's group g / block k (the *first* groups and
  blocks: the body is a chain of residual groups, and dropping its end hurts least);
* the mixer's Δ path is the product dt_proj·x_proj_Δ : (Di × Di) of rank ≤ r_T; the student
  takes its best rank-r approximation (truncated SVD, split √σ to each factor);
* in_proj / out_proj: copied when both are full; the best rank-r factors of the teacher's
  map when the student factors them (`lowrank_proj`); a low-rank teacher's product when
  the student's are full;
* everything else of a block (norms, conv1d, A_log, D, dt bias, the B and C rows of
  x_proj) is copied.

`inherit_from_teacher` refuses a teacher of another width, state size, expansion, conv
width or scale, or one with fewer groups or blocks than the student, naming the field.
Measured on Set5 ×4 before any training (official DVMSR, 32.21 dB; `benchmarks/inherit_init.py`,
`benchmarks/results/inherit_init_cpu.json`): its group 0 as a 60-dim 1 × 2 student of Δ rank 1
(149,928 parameters) 29.52 dB; the same shape at DVMSR's random init 11.37.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .dvmsr import DVMSR, DVMSRConfig

#: fields the student must share with its teacher to inherit its weights
SHARED_FIELDS = ("embed_dim", "d_state", "expand", "d_conv", "scale", "in_chans")


@dataclass(frozen=True)
class Inheritance:
    """What `inherit_from_teacher` did: the teacher's groups and blocks the student kept, and
    the share of the teacher's Δ-path (and projection) singular values' energy its ranks keep."""

    groups: tuple[int, ...]
    blocks: tuple[int, ...]
    delta_energy_kept: float
    proj_energy_kept: float | None

    def tags(self) -> dict[str, str]:
        """MLflow tags describing the inheritance."""
        out = {"student_init": "teacher", "student_init_groups": ",".join(map(str, self.groups)),
               "student_init_blocks": ",".join(map(str, self.blocks)),
               "student_init_delta_energy_kept": f"{self.delta_energy_kept:.4f}"}
        if self.proj_energy_kept is not None:
            out["student_init_proj_energy_kept"] = f"{self.proj_energy_kept:.4f}"
        return out


def inheritance_problem(student: DVMSRConfig, teacher: DVMSRConfig) -> str | None:
    """None when `student` can inherit `teacher`'s weights, else what stands in the way and how to fix it."""
    for name in SHARED_FIELDS:
        s, t = getattr(student, name), getattr(teacher, name)
        if s != t:
            return (f"student.{name} is {s} but the teacher's is {t}: a student inherits its teacher's weights only "
                    f"at the same {name}; set student.{name}={t} or student_init=random")
    for name in ("n_groups", "blocks_per_group"):
        s, t = getattr(student, name), getattr(teacher, name)
        if s > t:
            return (f"student.{name} is {s} but the teacher has {t}: it keeps the teacher's first {name}, so at most "
                    f"{t}; lower student.{name} or set student_init=random")
    return None


def _factors(W: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """W ≈ up @ down with up : (out, r), down : (r, in) (truncated SVD, √σ to each) and the share of
    ‖W‖² the rank keeps."""
    U, s, Vh = torch.linalg.svd(W.double(), full_matrices=False)
    r = min(rank, s.numel())
    kept = float((s[:r] ** 2).sum() / (s**2).sum().clamp_min(1e-300))
    root = s[:r].sqrt()
    up, down = U[:, :r] * root, root[:, None] * Vh[:r]
    if r < rank:  # a rank beyond the map's: the extra directions start at zero
        up = torch.cat([up, up.new_zeros(up.shape[0], rank - r)], 1)
        down = torch.cat([down, down.new_zeros(rank - r, down.shape[1])], 0)
    return up.to(W.dtype), down.to(W.dtype), kept


def _dense(sd: dict[str, torch.Tensor], prefix: str) -> torch.Tensor:
    """A projection's (out, in) matrix, whether stored full (`.weight`) or factored (`.up`/`.down`)."""
    if prefix + ".weight" in sd:
        return sd[prefix + ".weight"]
    return sd[prefix + ".up.weight"] @ sd[prefix + ".down.weight"]


def _mixer(dst: dict[str, torch.Tensor], src: dict[str, torch.Tensor], s: str, t: str, rank: int,
           kept: dict[str, list[float]]) -> None:
    """Fill the student's mixer `s` (a key prefix) from the teacher's mixer `t`."""
    for name in ("conv1d.weight", "conv1d.bias", "A_log", "D", "dt_proj.bias"):
        dst[s + name] = src[t + name].clone()
    x_proj = src[t + "x_proj.weight"]  # (r_T + 2N, Di)
    r_t = src[t + "dt_proj.weight"].shape[1]
    up, down, share = _factors(src[t + "dt_proj.weight"] @ x_proj[:r_t], rank)  # Δ path : (Di, Di)
    dst[s + "dt_proj.weight"] = up
    dst[s + "x_proj.weight"] = torch.cat([down, x_proj[r_t:]], 0)
    kept["delta"].append(share)
    for proj in ("in_proj", "out_proj"):
        W = _dense(src, t + proj)
        if s + proj + ".weight" in dst:
            dst[s + proj + ".weight"] = W.clone()
        else:
            up, down, share = _factors(W, rank)
            dst[s + proj + ".up.weight"], dst[s + proj + ".down.weight"] = up, down
            kept["proj"].append(share)


def inherit_from_teacher(student: DVMSR, teacher: DVMSR) -> Inheritance:
    """Overwrite `student`'s weights with the teacher-derived ones described in the module
    docstring (in place); raises ValueError when the architectures do not allow it."""
    problem = inheritance_problem(student.cfg, teacher.cfg)
    if problem:
        raise ValueError(problem)
    src = {k: v.detach().to("cpu", torch.float32) for k, v in teacher.state_dict().items()}
    dst = {k: v.detach().to("cpu").clone() for k, v in student.state_dict().items()}
    G, K, r = student.cfg.n_groups, student.cfg.blocks_per_group, student.cfg.mixer.dt_rank
    kept: dict[str, list[float]] = {"delta": [], "proj": []}
    for key in dst:
        if not key.startswith("layers."):
            dst[key] = src[key].clone()  # head and tail
        elif ".residual_group." not in key:
            dst[key] = src[key].clone()  # the group's 3×3 conv (layers.g.conv.*): same index g
    for g in range(G):
        for k in range(K):
            block = f"layers.{g}.residual_group.blocks.{k}."
            for name in ("norm.weight", "norm.bias"):
                dst[block + name] = src[block + name].clone()
            _mixer(dst, src, block + "mixer.", block + "mixer.", r, kept)
    device = next(student.parameters()).device
    student.load_state_dict({k: v.to(device) for k, v in dst.items()}, strict=True)
    mean = lambda xs: sum(xs) / len(xs) if xs else None  # noqa: E731
    return Inheritance(groups=tuple(range(G)), blocks=tuple(range(K)), delta_energy_kept=mean(kept["delta"]),
                       proj_energy_kept=mean(kept["proj"]))

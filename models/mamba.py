"""The low-rank Mamba mixer of MambaLiteSR, in plain PyTorch.

One Mamba-1 mixer (Gu & Dao, 2023; `mamba_ssm.modules.mamba_simple.Mamba`), with its
parameter names kept so the official DVMSR checkpoint loads strictly:

    x : (B, L, D)
      └ in_proj ─► (x, z) : (B, L, 2·Di)            Di = expand · D
        x ─► depthwise causal conv1d (d_conv) ─► SiLU
          ─► x_proj ─► (Δ_low : r, B : N, C : N)
          Δ = softplus(dt_proj(Δ_low))                  rank-r path, (r → Di)
          y = selective_scan(x, Δ, A, B, C, D)          models/scan.py
        y ⊙ SiLU(z) ─► out_proj ─► (B, L, D)

What "low-rank" means here — MambaLiteSR §IV-E reads two ways, and both are options:

* ``rank`` — *"we reduce the rank of the Mamba block's projections"* read as Mamba's own
  ``dt_rank``: the Di×Di map that makes Δ from x is factored as ``dt_proj ∘ x_proj_Δ``
  (Di → r → Di). DVMSR uses r = ceil(D/16) = 4 for D = 60; MambaLiteSR's Table III sweeps
  r ∈ {2, …, 30}. This is the default reading, and the one the official checkpoint has.
* ``lowrank_proj`` — the same sentence read as factoring the big dense projections too:
  ``in_proj`` (D → 2·Di) becomes (D×r)(r×2·Di) and ``out_proj`` (Di → D) becomes
  (Di×r)(r×D). Off by default; with it, the parameter count falls roughly linearly in r
  (MambaLiteSR's Eq. 4 trend). Checkpoints with it on use ``in_proj.down``/``in_proj.up``.

Initialisation follows ``mamba_simple.Mamba`` (A = −[1..N], D = 1, Δ bias = softplus⁻¹ of
a log-uniform Δ in [dt_min, dt_max], dt_proj weight uniform ±r^-½).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .grad_mode import records_grad
from .scan import _exporting, resolve_backend, selective_scan

#: Scan backends whose kernels take strided (channel-major) activations: the mixer's GPU path.
CHANNEL_MAJOR_BACKENDS = ("triton", "cuda")


@dataclass
class MixerConfig:
    """Shape of one mixer, in the paper's symbols.

    d_model: D, the embedding width. d_state: N. d_conv: the causal conv kernel width.
    expand: Di = expand · D. rank: r, the rank of the Δ path (None → Mamba's ceil(D/16)).
    lowrank_proj: also factor in_proj and out_proj through rank r.
    """

    d_model: int
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    rank: int | None = None
    lowrank_proj: bool = False

    def __post_init__(self) -> None:
        for name in ("d_model", "d_state", "d_conv", "expand"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"MixerConfig.{name} must be a positive integer, got {value!r}")
        if self.rank is not None and (not isinstance(self.rank, int) or self.rank < 1):
            raise ValueError(f"MixerConfig.rank must be a positive integer or None, got {self.rank!r}")

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model

    @property
    def dt_rank(self) -> int:
        return self.rank if self.rank is not None else math.ceil(self.d_model / 16)


class LowRankLinear(nn.Module):
    """A bias-free linear map factored through rank r: (in×r)(r×out)."""

    def __init__(self, in_features: int, out_features: int, rank: int) -> None:
        super().__init__()
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        self.down = nn.Linear(in_features, rank, bias=False)
        self.up = nn.Linear(rank, out_features, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.down(x))


def _projection(in_features: int, out_features: int, rank: int, lowrank: bool) -> nn.Module:
    if lowrank:
        return LowRankLinear(in_features, out_features, rank)
    return nn.Linear(in_features, out_features, bias=False)


class MambaMixer(nn.Module):
    """One low-rank Mamba-1 mixer: (B, L, D) → (B, L, D). See the module docstring."""

    def __init__(
        self,
        cfg: MixerConfig,
        *,
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
        scan_backend: str | None = None,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.scan_backend = scan_backend  # None: models.scan decides (and logs what it chose)
        D, Di, N, r = cfg.d_model, cfg.d_inner, cfg.d_state, cfg.dt_rank

        self.in_proj = _projection(D, 2 * Di, r, cfg.lowrank_proj)
        self.conv1d = nn.Conv1d(Di, Di, cfg.d_conv, groups=Di, padding=cfg.d_conv - 1, bias=True)
        self.x_proj = nn.Linear(Di, r + 2 * N, bias=False)
        self.dt_proj = nn.Linear(r, Di, bias=True)
        self.out_proj = _projection(Di, D, r, cfg.lowrank_proj)

        # Δ path: weight uniform ±r^-½, bias = softplus⁻¹(Δ0) with Δ0 log-uniform in [dt_min, dt_max]
        nn.init.uniform_(self.dt_proj.weight, -(r**-0.5), r**-0.5)
        dt = torch.exp(torch.rand(Di) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=dt_init_floor)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        self.dt_proj._srstudy_keep_init = True  # the network's generic init leaves it alone

        # S4D-real init: A = −[1, 2, …, N] for every channel, stored as log(−A)
        A = torch.arange(1, N + 1, dtype=torch.float32).repeat(Di, 1)  # A : (Di, N)
        self.A_log = nn.Parameter(torch.log(A))
        self.D = nn.Parameter(torch.ones(Di))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x : (B, L, D)
        backend = self._channel_major_backend(x)
        if backend is not None:
            return self._forward_channel_major(x, backend)
        return self._forward_token_major(x)

    def _forward_token_major(self, x: torch.Tensor) -> torch.Tensor:
        """The mixer on (B, L, ·) activations with nn.Conv1d: the CPU and export path."""
        L = x.shape[1]
        Di, N, r = self.cfg.d_inner, self.cfg.d_state, self.cfg.dt_rank
        xz = self.in_proj(x)  # xz : (B, L, 2·Di)
        u, z = xz.chunk(2, dim=-1)  # u, z : (B, L, Di)
        u = F.silu(self.conv1d(u.transpose(1, 2))[..., :L])  # u : (B, Di, L), causal conv
        x_dbl = self.x_proj(u.transpose(1, 2))  # x_dbl : (B, L, r + 2N)
        dt_low, B, C = torch.split(x_dbl, [r, N, N], dim=-1)
        delta = (dt_low @ self.dt_proj.weight.t()).transpose(1, 2)  # delta : (B, Di, L), bias in scan
        A = -torch.exp(self.A_log.float())  # A : (Di, N)
        y = selective_scan(
            u,
            delta,
            A,
            B.transpose(1, 2),  # (B, N, L)
            C.transpose(1, 2),  # (B, N, L)
            self.D.float(),
            z.transpose(1, 2),  # (B, Di, L)
            delta_bias=self.dt_proj.bias.float(),
            delta_softplus=True,
            backend=self.scan_backend,
        )  # y : (B, Di, L)
        return self.out_proj(y.transpose(1, 2))  # (B, L, D)

    def _channel_major_backend(self, x: torch.Tensor) -> str | None:
        """The scan backend when `forward` takes the channel-major path (on CUDA with a GPU scan
        kernel), else None (the CPU and export path is the token-major one above)."""
        if not x.is_cuda or _exporting():
            return None
        backend = resolve_backend(self.scan_backend, x.device, x.dtype)
        return backend if backend in CHANNEL_MAJOR_BACKENDS else None

    def _forward_channel_major(self, x: torch.Tensor, backend: str = "triton") -> torch.Tensor:
        """The same mixer with its activations kept as (channels, B·L) matrices: every
        projection is one matmul W @ X, the causal conv + SiLU one Triton kernel, and the scan
        reads u, Δ, z, B, C and writes y in that layout, so nothing is transposed or copied
        between them ((B, Di, L) views with tokens innermost, strides (L, B·L, 1)). Only the
        output is token-major, (B·L, D) = Yᵀ Wᵀ from the same matmul: the next LayerNorm reads
        rows, and the group's 3×3 conv takes it as a channels-last map, so cuDNN neither copies
        it nor converts it to NHWC and back. Without autograd on the Triton backend, Δ = W·Δ_low
        and A = −exp(A_log) are computed in the scan's kernel (three launches fewer a mixer)."""
        from .conv_triton import causal_conv1d_silu

        Bt, L, _ = x.shape
        Di, N, r = self.cfg.d_inner, self.cfg.d_state, self.cfg.dt_rank
        seq = lambda m: m.view(m.shape[0], Bt, L).transpose(0, 1)  # (rows, B·L) -> (B, rows, L) view
        x_in, z = _project_halves(self.in_proj, x.reshape(Bt * L, -1).t(), Di)  # x_in, z : (Di, B·L)
        u = causal_conv1d_silu(seq(x_in), self.conv1d.weight, self.conv1d.bias)  # u : (B, Di, L)
        u_cols = u.transpose(0, 1).reshape(Di, Bt * L)  # a view: u keeps x_in's layout
        x_dbl = self.x_proj.weight @ u_cols  # x_dbl : (r + 2N, B·L)
        dt_low, B, C = torch.split(x_dbl, [r, N, N], dim=0)
        params = (self.dt_proj.weight, self.A_log, self.D, self.dt_proj.bias)
        if backend == "triton" and not records_grad(u, x_dbl, *params):  # inference: Δ and A made in the kernel
            from .scan_triton import selective_scan_triton_lowrank

            y = selective_scan_triton_lowrank(
                u, seq(dt_low), self.dt_proj.weight, self.A_log, seq(B), seq(C), self.D, seq(z),
                delta_bias=self.dt_proj.bias, delta_softplus=True,
            )  # y : (B, Di, L)
        else:
            delta = self.dt_proj.weight @ dt_low  # delta : (Di, B·L), bias in scan
            y = selective_scan(
                u, seq(delta), -torch.exp(self.A_log.float()), seq(B), seq(C), self.D.float(), seq(z),
                delta_bias=self.dt_proj.bias.float(), delta_softplus=True, backend=backend,
            )  # y : (B, Di, L)
        out = self.out_proj(y.transpose(0, 1).reshape(Di, Bt * L).t())  # out : (B·L, D) = Yᵀ Wᵀ, token-major
        return out.view(Bt, L, -1)  # (B, L, D): the group's 3×3 conv reads it as a channels-last map, no copy

    def param_count(self) -> int:
        """Exact number of parameters, from the config alone (no module needed)."""
        return mixer_param_count(self.cfg)


def _project_halves(proj: nn.Module, cols: torch.Tensor, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`proj` applied to every column of `cols` : (in, M), its output rows [:rows] and [rows:] as two
    separate (rows, M) matrices (W[:rows] @ cols, W[rows:] @ cols; bias-free maps).

    Two matmuls rather than one sliced in two when autograd records them: the gradients of the
    halves (the conv's and the scan's) then flow into the input's gradient as two matmuls, where
    slicing one (2·rows, M) output would make autograd zero-fill a buffer of that size per half
    and add the two. Without autograd (inference) one matmul, and the halves are its row blocks."""
    if isinstance(proj, LowRankLinear):
        w, cols = proj.up.weight, proj.down.weight @ cols  # cols : (r, M)
    else:
        w = proj.weight
    if not records_grad(w, cols):
        both = w @ cols  # both : (2·rows, M)
        return both[:rows], both[rows:]
    return w[:rows] @ cols, w[rows:] @ cols


def mixer_param_count(cfg: MixerConfig) -> int:
    """Exact parameter count of a `MambaMixer` with this config, without building it.

    Used to enforce study constraints (e.g. params ≤ 150k) before any training.
    """
    D, Di, N, r, K = cfg.d_model, cfg.d_inner, cfg.d_state, cfg.dt_rank, cfg.d_conv
    in_proj = r * (D + 2 * Di) if cfg.lowrank_proj else D * 2 * Di
    out_proj = r * (Di + D) if cfg.lowrank_proj else Di * D
    conv = Di * K + Di
    x_proj = Di * (r + 2 * N)
    dt_proj = r * Di + Di
    return in_proj + conv + x_proj + dt_proj + out_proj + Di * N + Di  # + A_log + D


def mixer_macs_per_token(cfg: MixerConfig) -> int:
    """Multiply–accumulates per token of one mixer (projections, conv, Δ path and scan).

    The scan counts 3 MACs per (channel, state): decay·h, Δ·B·u and C·h.
    """
    D, Di, N, r, K = cfg.d_model, cfg.d_inner, cfg.d_state, cfg.dt_rank, cfg.d_conv
    in_proj = r * (D + 2 * Di) if cfg.lowrank_proj else D * 2 * Di
    out_proj = r * (Di + D) if cfg.lowrank_proj else Di * D
    return in_proj + Di * K + Di * (r + 2 * N) + r * Di + 3 * Di * N + 2 * Di + out_proj

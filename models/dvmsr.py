"""DVMSR / MambaLiteSR: a Vision-Mamba super-resolution network in one readable file.

The topology is DVMSR's (Lei et al., NTIRE 2024 workshop; `nathan66666/DVMSR`), which
MambaLiteSR keeps and shrinks:

    lr : (B, 3, h, w) in [0, 1]
      − RGB mean (0.4488, 0.4371, 0.4040)
      conv_first 3×3                      (B, C, h, w)             C = embed_dim
      flatten + LayerNorm (patch_embed)   (B, L, C)                L = h·w, row-major
      n_groups × residual group:
          blocks_per_group × (LayerNorm → MambaMixer)     x ← mixer(LN(x))
          3×3 conv on the (B, C, h, w) view, + group input
      LayerNorm (norm_f) → (B, C, h, w)
      conv_after_body 3×3 + the conv_first features (global residual)
      conv 3×3 → 3·s² channels → PixelShuffle(s)           (B, 3, s·h, s·w)
      + RGB mean

Note on the blocks: inside a group the official code feeds each block's *output* to the
next with no skip of its own (its `Block.forward(x, x_size)` takes `x_size` for Mamba's
`residual` argument, which drops the per-block add); the only skips are the group's and the
global one. We reproduce that, or the official weights would not give the published scores.

Parameter names match the official BasicSR checkpoint (`params_ema`), which loads strictly
through `load_checkpoint`.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from .mamba import MambaMixer, MixerConfig, mixer_macs_per_token, mixer_param_count

RGB_MEAN = (0.4488, 0.4371, 0.4040)
CHECKPOINT_FORMAT = "srstudy.dvmsr/1"


@dataclass
class DVMSRConfig:
    """DVMSR / MambaLiteSR hyper-parameters, in the papers' symbols.

    embed_dim: C. n_groups × blocks_per_group: the body (DVMSR: 4 × 2).
    rank: r, the rank of the mixer's Δ path (None → ceil(C/16)). lowrank_proj: also factor
    in_proj/out_proj through r. d_state: N. expand: Di = expand·C. d_conv: causal conv width.
    scale: the upscaling factor s.
    """

    embed_dim: int = 60
    n_groups: int = 4
    blocks_per_group: int = 2
    rank: int | None = 4
    lowrank_proj: bool = False
    d_state: int = 16
    expand: int = 2
    d_conv: int = 4
    scale: int = 4
    in_chans: int = 3
    rgb_mean: tuple[float, float, float] = field(default=RGB_MEAN)

    def __post_init__(self) -> None:
        for name in ("embed_dim", "n_groups", "blocks_per_group", "d_state", "expand", "d_conv", "scale", "in_chans"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"DVMSRConfig.{name} must be a positive integer, got {value!r}")
        self.rgb_mean = tuple(float(v) for v in self.rgb_mean)
        self.mixer  # validates rank

    @property
    def mixer(self) -> MixerConfig:
        return MixerConfig(
            d_model=self.embed_dim,
            d_state=self.d_state,
            d_conv=self.d_conv,
            expand=self.expand,
            rank=self.rank,
            lowrank_proj=self.lowrank_proj,
        )

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["rgb_mean"] = list(self.rgb_mean)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DVMSRConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown DVMSRConfig field(s) {unknown}; valid fields: {sorted(known)}")
        return cls(**d)

    # ---- size and cost, from the config alone -------------------------------------------
    def param_count(self) -> int:
        """Exact number of parameters (equals `sum(p.numel())` of the built network)."""
        C, s2 = self.embed_dim, 3 * self.scale**2
        conv3 = lambda cin, cout: cin * cout * 9 + cout  # noqa: E731
        block = 2 * C + mixer_param_count(self.mixer)
        group = self.blocks_per_group * block + conv3(C, C)
        return (
            conv3(self.in_chans, C)
            + 2 * C  # patch_embed.norm
            + self.n_groups * group
            + 2 * C  # norm_f
            + conv3(C, C)  # conv_after_body
            + conv3(C, s2)  # upsample
        )

    def macs(self, height: int, width: int) -> int:
        """Multiply–accumulates for one LR image of height × width (convs, linears, scan).

        LayerNorms, activations and additions are left out (a few % at these widths).
        """
        C, L = self.embed_dim, height * width
        per_token = (
            self.in_chans * C * 9  # conv_first
            + self.n_groups * (self.blocks_per_group * mixer_macs_per_token(self.mixer) + C * C * 9)
            + C * C * 9  # conv_after_body
            + C * 3 * self.scale**2 * 9  # upsample conv
        )
        return L * per_token

    def flops(self, height: int, width: int) -> int:
        """FLOPs estimate (2 × MACs) for one LR image of height × width."""
        return 2 * self.macs(height, width)


PRESETS: dict[str, DVMSRConfig] = {
    # the official DVMSR ×4 student: 424,428 parameters
    "dvmsr": DVMSRConfig(embed_dim=60, n_groups=4, blocks_per_group=2, rank=4),
    # MambaLiteSR's teacher and student (the paper's recipe)
    "litesr_teacher": DVMSRConfig(embed_dim=60, n_groups=8, blocks_per_group=2, rank=4),
    "litesr_student": DVMSRConfig(embed_dim=32, n_groups=4, blocks_per_group=2, rank=2),
}


def preset(name: str, **overrides: Any) -> DVMSRConfig:
    """A copy of a named preset (`dvmsr`, `litesr_teacher`, `litesr_student`) with overrides."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return dataclasses.replace(PRESETS[name], **overrides)


# ---- network -----------------------------------------------------------------------------
def fused_layer_norm(norm: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    """`norm(x)`; on CUDA through the Triton LayerNorm (models/norm_triton.py: PyTorch's kernel
    is slow on rows of a few dozen channels), imported only there so CPU installs need no triton.
    A norm with ``torch_kernel = True`` (the benchmarks' reference network) keeps PyTorch's."""
    if x.is_cuda and not getattr(norm, "torch_kernel", False):
        from .norm_triton import fused_layer_norm as triton_layer_norm

        return triton_layer_norm(norm, x)
    return norm(x)



class MambaBlock(nn.Module):
    """LayerNorm → mixer, no skip (see the module docstring)."""

    def __init__(self, cfg: MixerConfig) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(cfg.d_model)
        self.mixer = MambaMixer(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x : (B, L, C)
        return self.mixer(fused_layer_norm(self.norm, x))


class BlockStack(nn.Module):
    def __init__(self, cfg: MixerConfig, depth: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(MambaBlock(cfg) for _ in range(depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


class ResidualGroup(nn.Module):
    """blocks_per_group Mamba blocks, then a 3×3 conv, plus the group's input."""

    def __init__(self, cfg: MixerConfig, depth: int) -> None:
        super().__init__()
        self.residual_group = BlockStack(cfg, depth)
        self.conv = nn.Conv2d(cfg.d_model, cfg.d_model, 3, 1, 1)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        # x : (B, L, C)
        B, L, C = x.shape
        y = self.residual_group(x)
        y = self.conv(y.transpose(1, 2).reshape(B, C, *hw))  # y : (B, C, h, w)
        return y.flatten(2).transpose(1, 2) + x


class PatchEmbed(nn.Module):
    """Flatten the feature map to tokens and LayerNorm them (patch size 1)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x : (B, C, h, w) → (B, L, C)
        return fused_layer_norm(self.norm, x.flatten(2).transpose(1, 2))


class DVMSR(nn.Module):
    """DVMSR / MambaLiteSR network: (B, 3, h, w) in [0, 1] → (B, 3, s·h, s·w)."""

    def __init__(self, cfg: DVMSRConfig) -> None:
        super().__init__()
        self.cfg = cfg
        C = cfg.embed_dim
        self.register_buffer("mean", torch.tensor(cfg.rgb_mean).view(1, 3, 1, 1), persistent=False)
        self.conv_first = nn.Conv2d(cfg.in_chans, C, 3, 1, 1)
        self.patch_embed = PatchEmbed(C)
        self.layers = nn.ModuleList(ResidualGroup(cfg.mixer, cfg.blocks_per_group) for _ in range(cfg.n_groups))
        self.norm_f = nn.LayerNorm(C)
        self.conv_after_body = nn.Conv2d(C, C, 3, 1, 1)
        self.upsample = nn.Sequential(nn.Conv2d(C, 3 * cfg.scale**2, 3, 1, 1), nn.PixelShuffle(cfg.scale))
        self.apply(_init_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x : (B, 3, h, w)
        B, _, h, w = x.shape
        x = x - self.mean
        feat = self.conv_first(x)  # feat : (B, C, h, w)
        t = self.patch_embed(feat)  # t : (B, L, C)
        for layer in self.layers:
            t = layer(t, (h, w))
        t = fused_layer_norm(self.norm_f, t)
        body = t.transpose(1, 2).reshape(B, self.cfg.embed_dim, h, w)
        x = self.conv_after_body(body) + feat
        return self.upsample(x) + self.mean  # (B, 3, s·h, s·w)

    def set_scan_backend(self, backend: str | None) -> "DVMSR":
        """Choose the selective-scan backend of every mixer (None: automatic, logged)."""
        for m in self.modules():
            if isinstance(m, MambaMixer):
                m.scan_backend = backend
        return self

    def param_count(self) -> int:
        """Exact number of parameters of this network."""
        return sum(p.numel() for p in self.parameters())


def _init_weights(m: nn.Module) -> None:
    """DVMSR's init: truncated normal (σ = 0.02) linears, unit LayerNorms; Δ path kept."""
    if isinstance(m, nn.Linear) and not getattr(m, "_srstudy_keep_init", False):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


# ---- checkpoints ---------------------------------------------------------------------------
class CheckpointError(ValueError):
    """A checkpoint that does not fit the network: names the keys and shapes at fault."""


def extract_state_dict(obj: Any, path: str | Path = "<checkpoint>") -> tuple[dict[str, torch.Tensor], dict | None]:
    """Find the weights in a loaded checkpoint object.

    Accepts srstudy's own format (`{"format", "config", "state_dict"}`), BasicSR's
    (`params_ema` preferred over `params`), `{"state_dict": …}`/`{"model": …}` and a bare
    state dict. Strips a DataParallel `module.` prefix. Returns (state_dict, config or None).
    """
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dict of tensors, got {type(obj).__name__}")
    config = obj.get("config") if obj.get("format") == CHECKPOINT_FORMAT else None
    for key in ("state_dict", "params_ema", "params", "model"):
        if key in obj and isinstance(obj[key], dict):
            obj = obj[key]
            break
    sd = {k.removeprefix("module."): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not sd:
        raise CheckpointError(f"{path}: no tensors found (top-level keys: {sorted(obj)[:10]})")
    return sd, config


def config_from_state_dict(sd: dict[str, torch.Tensor], path: str | Path = "<checkpoint>") -> DVMSRConfig:
    """Read the architecture off a state dict's key names and shapes."""
    try:
        C, in_chans = sd["conv_first.weight"].shape[:2]
        n_groups = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("layers."))
        blocks = 1 + max(int(k.split(".")[4]) for k in sd if k.startswith("layers.0.residual_group.blocks."))
        pre = "layers.0.residual_group.blocks.0.mixer."
        Di, N = sd[pre + "A_log"].shape
        rank = sd[pre + "dt_proj.weight"].shape[1]
        d_conv = sd[pre + "conv1d.weight"].shape[-1]
        lowrank = pre + "in_proj.down.weight" in sd
        scale = math.isqrt(sd["upsample.0.weight"].shape[0] // 3)
    except (KeyError, ValueError, IndexError) as e:
        raise CheckpointError(
            f"{path}: not a DVMSR/MambaLiteSR checkpoint (could not read the architecture: missing {e}); "
            f"first keys: {sorted(sd)[:8]}"
        ) from None
    return DVMSRConfig(
        embed_dim=int(C),
        n_groups=n_groups,
        blocks_per_group=blocks,
        rank=int(rank),
        lowrank_proj=lowrank,
        d_state=int(N),
        expand=int(Di) // int(C),
        d_conv=int(d_conv),
        scale=scale,
        in_chans=int(in_chans),
    )


def load_state_dict_strict(model: nn.Module, sd: dict[str, torch.Tensor], path: str | Path = "<checkpoint>") -> None:
    """Load strictly; on any mismatch raise CheckpointError naming every missing,
    unexpected and wrongly shaped key."""
    own = model.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    shapes = [f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
              for k in sorted(set(own) & set(sd)) if sd[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys ({len(missing)}): {missing[:12]}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {unexpected[:12]}")
        if shapes:
            parts.append(f"mismatched shapes ({len(shapes)}): {shapes[:12]}")
        raise CheckpointError(f"{path} does not fit the network: " + "; ".join(parts))
    model.load_state_dict(sd, strict=True)


def _unreadable_checkpoint_message(path: Path, error: Exception) -> str:
    """One line for a file torch.load(weights_only=True) refused: torch's reason without its
    advice to retry with weights_only=False (which would run any code the file holds)."""
    lines = [ln.strip() for ln in str(error).split("Check the documentation")[0].splitlines() if ln.strip()]
    reason = lines[-1] if lines else type(error).__name__
    if "GLOBAL" in reason or "global" in reason:
        return (f"{path}: refused: it holds Python objects beyond tensors ({reason}), which loading would run "
                "or build; srstudy loads checkpoints with weights_only=True -- save a state_dict of tensors")
    return (f"{path}: cannot be read as a PyTorch checkpoint ({type(error).__name__}: {reason}); give a .pth "
            "written by torch.save (srstudy's student.pth, or the official DVMSR file)")


def load_checkpoint(path: str | Path, *, config: DVMSRConfig | None = None, map_location: str = "cpu") -> DVMSR:
    """Build a DVMSR and load a checkpoint into it (with `torch.load(weights_only=True)`).

    The architecture comes from `config`, else from the checkpoint's own config (srstudy
    format), else from its key shapes (official BasicSR files). Any mismatch raises
    `CheckpointError` naming the keys.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is a folder, not a checkpoint file" if path.is_dir()
                                else f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file, not a checkpoint")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # unpickling error, truncated file, …
        raise CheckpointError(_unreadable_checkpoint_message(path, e)) from None
    sd, saved_config = extract_state_dict(obj, path)
    if config is None:
        config = DVMSRConfig.from_dict(saved_config) if saved_config else config_from_state_dict(sd, path)
    model = DVMSR(config)
    load_state_dict_strict(model, sd, path)
    return model.eval()


def save_checkpoint(model: DVMSR, path: str | Path, **extra: Any) -> Path:
    """Save weights + config in srstudy's format (loadable with weights_only=True)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    obj = {"format": CHECKPOINT_FORMAT, "config": model.cfg.to_dict(), "state_dict": model.state_dict(), **extra}
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)  # atomic: a crash never leaves a half-written checkpoint
    return path

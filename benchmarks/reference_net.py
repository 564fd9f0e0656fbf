"""The issue-8 reference: DVMSR's topology on `mamba_ssm.Mamba` modules (mamba_ssm's own mixer).

Same shapes as srstudy's `DVMSR` (embed_dim, groups × blocks, d_state 16, expand 2, d_conv 4,
dt_rank = rank, bias-free projections); only each block's mixer is mamba_ssm's `Mamba`, and its
LayerNorms keep PyTorch's kernel (srstudy's own network runs them through models/norm_triton.py). Without
causal-conv1d installed, `Mamba.forward` takes its nn.Conv1d + `selective_scan_fn` (CUDA) path:
the configuration the reference numbers (199 / 151 ms distillation step, ...) were measured in.
Needs mamba-ssm and a CUDA device.
"""
from __future__ import annotations

import torch.nn as nn

from srstudy.models.dvmsr import DVMSR, DVMSRConfig, MambaBlock


def reference_dvmsr(cfg: DVMSRConfig) -> nn.Module:
    """A `DVMSR` whose every mixer is a `mamba_ssm.Mamba` with the same hyper-parameters."""
    from mamba_ssm import Mamba  # raises ImportError without mamba-ssm: the reference needs it

    net = DVMSR(cfg)
    mixer = cfg.mixer
    for block in net.modules():
        if isinstance(block, MambaBlock):
            block.mixer = Mamba(d_model=mixer.d_model, d_state=mixer.d_state, d_conv=mixer.d_conv,
                                expand=mixer.expand, dt_rank=mixer.dt_rank, bias=False, conv_bias=True)
        if isinstance(block, nn.LayerNorm):
            block.torch_kernel = True  # the reference as issue 8 measured it: PyTorch's LayerNorm
    return net


def uses_causal_conv1d() -> bool:
    """Whether mamba_ssm's fused path (causal-conv1d) is active: the reference assumes it is not."""
    try:
        import causal_conv1d  # noqa: F401
    except ImportError:
        return False
    return True

"""Whether autograd records an op: the Triton kernels' callers take their inference path when not.

Kept apart (no triton, no scan import) so the network file and the kernel files can all use it
without an import cycle and CPU installs need no triton.
"""
from __future__ import annotations

from typing import Optional

import torch

__all__ = ["records_grad"]


def records_grad(*tensors: Optional[torch.Tensor]) -> bool:
    """Whether autograd must record an op on these tensors: grad mode is on and one of them
    requires a gradient. The Triton kernels' callers launch the forward directly otherwise
    (inference): no autograd node, nothing saved for a backward."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)

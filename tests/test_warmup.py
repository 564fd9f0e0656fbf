"""`trials.warmup.KernelWarmup`: the step's kernels compiled in a thread during the trial's setup."""
from __future__ import annotations

import pytest
import torch

from srstudy.models.dvmsr import DVMSR, DVMSRConfig
from srstudy.trials.warmup import KernelWarmup


def test_a_cpu_trial_runs_no_warmup_and_says_so():
    model = DVMSR(DVMSRConfig(embed_dim=8, n_groups=1, blocks_per_group=1, rank=1))
    w = KernelWarmup(model, batch_size=2, patch_size=8, precision="fp32", device=torch.device("cpu"))
    assert w.join() == {"kernel_warmup": "none (not a CUDA trial)"} and w.seconds is None


@pytest.mark.cuda
@pytest.mark.parametrize("precision", ["tf32", "bf16"])
def test_warmup_on_cuda_compiles_and_leaves_the_student_untouched(precision):
    torch.manual_seed(0)
    model = DVMSR(DVMSRConfig(embed_dim=16, n_groups=1, blocks_per_group=2, rank=2)).cuda()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.cuda.get_rng_state()
    w = KernelWarmup(model, batch_size=4, patch_size=16, precision=precision, device=torch.device("cuda"))
    tags = w.join()
    assert w.error is None and tags["kernel_warmup"].endswith("s in a thread during setup"), tags
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert torch.equal(torch.cuda.get_rng_state(), rng)

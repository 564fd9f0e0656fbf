"""Session 12: where the whole-DVMSR |inferred − recorded| of 1.3e-4 (test_inference_path_on_cuda) comes from.

Each fp32 path (recorded = with autograd, inferred = no_grad; shipped LN crossover, Triton LN always, ATen LN
always) against the float64 chunked network on the same weights and input."""
import torch

from srstudy.models import norm_triton
from srstudy.models.dvmsr import DVMSR, preset

import sys

torch.backends.cudnn.allow_tf32 = sys.argv[1:] != ["--no-tf32"]
print("cudnn.allow_tf32", torch.backends.cudnn.allow_tf32)
torch.manual_seed(0)
net = DVMSR(preset("dvmsr")).cuda().eval().set_scan_backend("triton")
x = torch.rand(1, 3, 40, 36, device="cuda")
out = {"recorded": net(x).detach()}
with torch.no_grad():
    for name, rows in (("inferred_shipped", 16384), ("inferred_triton_ln", 0), ("inferred_aten_ln", 2**62)):
        norm_triton.ATEN_INFERENCE_MAX_ROWS = rows
        out[name] = net(x)
    norm_triton.ATEN_INFERENCE_MAX_ROWS = 16384
    net.set_scan_backend("chunked")
    out["chunked_fp32"] = net(x)
    ref = net.double()(x.double())
for k, v in out.items():
    print(f"{k:20s} max|y - float64| = {(v.double() - ref).abs().max().item():.3e}   "
          f"max|y - recorded| = {(v - out['recorded']).abs().max().item():.3e}")

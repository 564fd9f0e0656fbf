"""`srstudy.models.cuda_graph.capture_forward`: a network's forward replayed from a CUDA graph."""
from __future__ import annotations

import pytest
import torch

from srstudy.models.cuda_graph import capture_forward
from srstudy.models.dvmsr import DVMSR, DVMSRConfig


def test_capture_on_a_cpu_tensor_is_refused_naming_the_device():
    model = DVMSR(DVMSRConfig(embed_dim=8, n_groups=1, blocks_per_group=1, rank=2)).eval()
    with pytest.raises(ValueError, match="CUDA graphs need a CUDA input; the example is on cpu"):
        capture_forward(model, torch.rand(1, 3, 8, 8))


@pytest.mark.cuda
@pytest.mark.parametrize("backend", ["triton", "chunked"])
def test_graph_replay_matches_the_eager_forward_and_refuses_another_shape(backend):
    """The captured forward gives the eager forward's output on new inputs of the captured shape
    (the Triton scan, conv1d and LayerNorm kernels inside the graph), and another shape is
    refused with both shapes named."""
    from srstudy.models.scan import resolve_backend

    torch.manual_seed(0)
    device = torch.device("cuda")
    model = DVMSR(DVMSRConfig(embed_dim=32, n_groups=2, blocks_per_group=2, rank=2)).to(device).eval()
    model.set_scan_backend(resolve_backend(backend, device))
    run = capture_forward(model, torch.rand(1, 3, 64, 64, device=device))
    for _ in range(2):  # fresh inputs: the graph reads its static input, copied from each call's
        x = torch.rand(1, 3, 64, 64, device=device)
        with torch.no_grad():
            eager = model(x)
        torch.testing.assert_close(run(x), eager, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match=r"captured for \(1, 3, 64, 64\).*got \(1, 3, 32, 32\)"):
        run(torch.rand(1, 3, 32, 32, device=device))


def test_latency_on_a_cpu_is_eager_and_says_so():
    from srstudy.trials.loop import measure_latency

    model = DVMSR(DVMSRConfig(embed_dim=8, n_groups=1, blocks_per_group=1, rank=2))
    out, tags = measure_latency(model, device=torch.device("cpu"), height=8, width=8, repeats=2, warmup=1)
    assert tags == {"latency_method": "eager"} and out["latency_ms"] > 0 and out["latency_p90_ms"] >= out["latency_ms"]


@pytest.mark.cuda
def test_latency_on_cuda_replays_a_cuda_graph():
    """A trial's `latency_ms` on a GPU times the forward replayed from a CUDA graph (tagged), so
    the host's kernel launches do not dominate it."""
    from srstudy.trials.loop import measure_latency

    model = DVMSR(DVMSRConfig(embed_dim=16, n_groups=2, blocks_per_group=1, rank=2)).cuda()
    out, tags = measure_latency(model, device=torch.device("cuda"), height=32, width=32, repeats=5, warmup=2)
    assert tags == {"latency_method": "cuda_graph"} and out["latency_ms"] > 0

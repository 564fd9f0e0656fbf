"""The Triton selective-scan kernels (models/scan_triton.py) against the reference recurrence.

On a CPU machine the kernels run in Triton's interpreter: the `interpreted` cases need
TRITON_INTERPRET=1 set before triton is imported, so one driver test re-runs this file
in a subprocess with it set (and asserts how many cases passed there).  On a GPU the
same cases run compiled (`cuda` marker), plus bf16 and mamba_ssm comparisons.
"""
from __future__ import annotations

import os

import pytest
import torch

from scan_cases import call, make_inputs, rel_err, run_interpreted, value_and_grads
from srstudy.models import scan as S

INTERPRETING = os.environ.get("TRITON_INTERPRET") == "1"
CUDA = torch.cuda.is_available()
HAS_TRITON = S._triton_module()[0] is not None
needs_triton = pytest.mark.skipif(not HAS_TRITON, reason=f"triton not importable: {S._triton_module()[1]}")
DEVICE = "cuda" if CUDA and not INTERPRETING else "cpu"
interpreted = pytest.mark.skipif(not INTERPRETING, reason="runs in the TRITON_INTERPRET=1 subprocess")

CASES = [
    # Bt, Dm, L,  N, T     (T = chunk_size: tokens per associative-scan tile)
    (2, 3, 1, 4, 8),       # L = 1
    (1, 2, 5, 3, 8),       # L < T: one partial tile, N not a power of two
    (2, 3, 37, 4, 16),     # L not a multiple of T
    (1, 4, 64, 16, 16),    # L a multiple of T, Mamba's N = 16
    (2, 2, 300, 8, 32),    # ten tiles: state and adjoint carried across many tiles
    (1, 2, 200, 4, 128),   # the default tile size, two tiles
]
FLAGS = [  # with_D, with_z, with_bias, softplus
    (True, True, True, True),
    (False, False, False, False),
    (True, False, True, False),
    (False, True, False, True),
]
CONV_CASES = [(2, 3, 37, True), (1, 4, 200, False), (2, 2, 1, True), (3, 5, 64, True)]  # Bt, Dm, L, bias
LN_CASES = [(2, 37, 32, False), (2, 37, 32, True), (1, 50, 60, True), (3, 7, 5, False)]  # B, L, C, channel-major
N_INTERPRETED = len(CASES) * len(FLAGS) + 7 + len(CONV_CASES) + 4  # + bf16, groups, stages, forward's config, decays, 4-D B/C, DVMSR, conv, LN, mixers, inference, lowrank


def _against_reference(shape, flags, *, device, dtype=torch.float32, seed=0):
    """Max relative error of the Triton scan (values and every gradient) vs the float64 reference."""
    Bt, Dm, L, N, T = shape
    with_D, with_z, with_bias, softplus = flags
    x = make_inputs(Bt, Dm, L, N, seed=seed, with_D=with_D, with_z=with_z, with_bias=with_bias)
    if not softplus:  # keep Δ > 0 (decays < 1) or fp32 overflows over hundreds of steps, as it would in Mamba
        x["delta"] = x["delta"].abs()
        x["delta_bias"] = None if x["delta_bias"] is None else x["delta_bias"].abs()
    x = {k: (None if v is None else v.to(dtype).double()) for k, v in x.items()}  # inputs as the kernel sees them
    y_ref, g_ref = value_and_grads(S.selective_scan_reference, x, softplus)
    xt = {k: (None if v is None else v.to(device=device, dtype=dtype if k in "u delta B C z" else torch.float32))
          for k, v in x.items()}
    y, g = value_and_grads(S.selective_scan, xt, softplus, backend="triton", chunk_size=T)
    assert y.dtype == dtype and set(g) == set(g_ref)
    return {"y": rel_err(y.cpu(), y_ref), **{k: rel_err(g[k].cpu(), g_ref[k]) for k in g}}


@interpreted
@pytest.mark.parametrize("shape", CASES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("flags", FLAGS, ids=lambda f: "".join("DzbS"[i] if v else "-" for i, v in enumerate(f)))
def test_interpreted_forward_and_gradients_match_reference(shape, flags):
    errs = _against_reference(shape, flags, device="cpu")
    print(f"\n{shape} {flags}: " + " ".join(f"{k}={v:.1e}" for k, v in errs.items()))
    assert max(errs.values()) <= 2e-5, errs


@interpreted
def test_interpreted_bf16_inputs_give_bf16_output_close_to_reference():
    errs = _against_reference((2, 3, 70, 4, 32), FLAGS[0], device="cpu", dtype=torch.bfloat16)
    assert max(errs.values()) <= 1.5e-2, errs  # fp32 inside; y and the gradients rounded to bf16 (eps 7.8e-3)


@interpreted
def test_interpreted_channel_groups_and_longer_backward_chunks(monkeypatch):
    """G channels per program (here more than Dm: masked channels) and a backward chunk twice the forward's."""
    from srstudy.models import scan_triton

    for fwd, bwd in [((8, 2, 1), (16, 4, 1)), ((8, 1, 1, 1), (16, 2, 1, 1))]:  # then token tiles
        monkeypatch.setitem(scan_triton.CONFIG, "fwd", fwd)
        monkeypatch.setitem(scan_triton.CONFIG, "bwd", bwd)
        for shape in [(2, 3, 37, 4, None), (1, 5, 64, 16, None), (1, 2, 20, 3, None)]:
            for flags in FLAGS[:2]:
                errs = _against_reference(shape, flags, device="cpu")
                assert max(errs.values()) <= 2e-5, (fwd, bwd, shape, flags, errs)


@interpreted
def test_interpreted_pipelined_backward_matches_reference(monkeypatch):
    """The backward's chunk loop pipelined (`CONFIG["bwd_stages"]`) computes the same scan; the register
    cap (`bwd_maxnreg`) is a launch option of compiled code only, so the interpreter runs without it."""
    from srstudy.models import scan_triton

    monkeypatch.setitem(scan_triton.CONFIG, "bwd_stages", {"default": 3})
    monkeypatch.setitem(scan_triton.CONFIG, "bwd_maxnreg", {"default": 168})
    assert scan_triton._registers(torch.zeros(1)) == {}
    for vec in (0, 4):  # the token offsets as they are, and rewritten as runs of 4 (CONFIG["bwd_vec"])
        monkeypatch.setitem(scan_triton.CONFIG, "bwd_vec", {"default": vec})
        for shape in [(2, 3, 300, 16, 32), (1, 2, 5, 3, 8)]:
            errs = _against_reference(shape, FLAGS[0], device="cpu")
            assert max(errs.values()) <= 2e-5, (vec, shape, errs)
        errs = _against_reference((2, 3, 70, 4, 32), FLAGS[0], device="cpu", dtype=torch.bfloat16)
        assert max(errs.values()) <= 1.5e-2, (vec, errs)


@interpreted
def test_interpreted_backward_runs_with_the_config_of_its_forward(monkeypatch):
    """The backward's tile, stages and register cap are those in force at the forward: autograd runs it
    later, when `CONFIG` may have changed (a benchmark restoring it, another thread's setting)."""
    from srstudy.models import scan_triton

    x = make_inputs(1, 3, 40, 4, seed=2, dtype=torch.float32)
    leaves = {k: (None if v is None else v.clone().requires_grad_()) for k, v in x.items()}
    y = call(S.selective_scan, leaves, True, backend="triton")
    for key in ("bwd", "bwd_few", "bwd_stages", "bwd_maxnreg", "bwd_vec", "bwd_spread"):
        monkeypatch.setitem(scan_triton.CONFIG, key, "not a config")  # any read from here on fails
    y.square().sum().backward()
    ref = call(S.selective_scan_reference, {k: (None if v is None else v.double()) for k, v in x.items()}, True)
    assert rel_err(y.detach(), ref) <= 2e-5 and torch.isfinite(leaves["u"].grad).all()


@interpreted
def test_interpreted_decays_far_below_one_stay_finite():
    x = make_inputs(1, 2, 100, 4, seed=3, decay=50.0)  # Δ·|A| up to ~50 per step
    x = {k: (None if v is None else v.float()) for k, v in x.items()}
    y, g = value_and_grads(S.selective_scan, x, True, backend="triton", chunk_size=16)
    y_ref, g_ref = value_and_grads(S.selective_scan, {k: (None if v is None else v.double()) for k, v in x.items()},
                                   True, backend="reference")
    assert torch.isfinite(y).all() and all(torch.isfinite(v).all() for v in g.values())
    assert max([rel_err(y, y_ref)] + [rel_err(g[k], g_ref[k]) for k in g]) <= 1e-4


@interpreted
def test_interpreted_four_dim_B_C_and_non_contiguous_inputs():
    x = make_inputs(2, 3, 40, 4, seed=5, dtype=torch.float32)
    ref = call(S.selective_scan_reference, {k: (None if v is None else v.double()) for k, v in x.items()}, True)
    u_t = x["u"].transpose(1, 2).contiguous().transpose(1, 2)  # (Bt, Dm, L) with L not innermost
    xt = {**x, "u": u_t, "B": x["B"][:, None], "C": x["C"][:, None]}
    y = call(S.selective_scan, xt, True, backend="triton", chunk_size=16)
    assert rel_err(y, ref) <= 2e-5


@interpreted
def test_interpreted_dvmsr_with_triton_scan_matches_chunked():
    from srstudy.models.dvmsr import DVMSR, DVMSRConfig

    torch.manual_seed(0)
    net = DVMSR(DVMSRConfig(embed_dim=8, n_groups=1, blocks_per_group=1, rank=2, scale=2))
    x = torch.rand(2, 3, 6, 5)
    outs, grads = [], []
    for backend in ("chunked", "triton"):
        net.zero_grad()
        net.set_scan_backend(backend)
        y = net(x)
        y.square().mean().backward()
        outs.append(y.detach())
        grads.append(torch.cat([p.grad.flatten() for p in net.parameters()]))
    assert (outs[0] - outs[1]).abs().max() <= 1e-5
    assert (grads[0] - grads[1]).abs().max() <= 1e-5 * grads[0].abs().max()


def _conv_against_conv1d(Bt, Dm, L, with_bias, *, device, dtype=torch.float32, seed=0):
    """Max relative error of causal_conv1d_silu (value, dx, dw, dbias) vs F.conv1d + SiLU in float64.

    x is given channel-major ((Dm, Bt, L) storage seen as (Bt, Dm, L)), as the mixer passes it."""
    import torch.nn.functional as F
    from srstudy.models.conv_triton import causal_conv1d_silu

    g = torch.Generator().manual_seed(seed)
    x, w = torch.randn(Bt, Dm, L, generator=g).to(dtype).double(), torch.randn(Dm, 1, 4, generator=g).double()
    b = torch.randn(Dm, generator=g).double() if with_bias else None
    gy = torch.randn(Bt, Dm, L, generator=g).double()
    ref_in = [t.clone().requires_grad_() for t in (x, w, b) if t is not None]
    ref = F.silu(F.conv1d(ref_in[0], ref_in[1], ref_in[2] if with_bias else None, padding=3, groups=Dm)[..., :L])
    ref.backward(gy)
    xc = x.to(device, dtype).transpose(0, 1).contiguous().transpose(0, 1).requires_grad_()
    mine = [t.to(device, torch.float32).requires_grad_() for t in (w, b) if t is not None]
    out = causal_conv1d_silu(xc, mine[0], mine[1] if with_bias else None)
    out.backward(gy.to(device, dtype))
    assert out.dtype == dtype and out.stride() == xc.stride()  # the output keeps the input's layout
    return [rel_err(out.cpu(), ref)] + [rel_err(a.grad.cpu(), r.grad) for a, r in zip([xc, *mine], ref_in)]


@interpreted
@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: "x".join(map(str, c)))
def test_interpreted_causal_conv_silu_matches_conv1d(case):
    errs = _conv_against_conv1d(*case, device="cpu")
    assert max(errs) <= 2e-5, errs


def _mixers_agree(device, lowrank: bool):
    """The channel-major mixer path (Triton conv + scan, strided) vs the token-major one: values and grads."""
    from srstudy.models.mamba import MambaMixer, MixerConfig

    torch.manual_seed(0)
    mixer = MambaMixer(MixerConfig(d_model=8, d_state=4, rank=2, lowrank_proj=lowrank), scan_backend="triton")
    mixer = mixer.to(device)
    x = torch.randn(2, 50, 8, device=device)
    outs, grads = [], []
    for fwd in (mixer._forward_token_major, mixer._forward_channel_major):
        mixer.zero_grad()
        xi = x.clone().requires_grad_()
        y = fwd(xi)
        y.square().mean().backward()
        outs.append(y.detach())
        grads.append(torch.cat([xi.grad.flatten()] + [p.grad.flatten() for p in mixer.parameters()]))
    assert outs[1].shape == outs[0].shape
    assert (outs[0] - outs[1]).abs().max() <= 1e-5 * outs[0].abs().max()
    assert (grads[0] - grads[1]).abs().max() <= 1e-5 * grads[0].abs().max()


def _layer_norm_against_torch(B, L, C, channel_major, *, device):
    """Max relative error of the Triton LayerNorm (y, dx, dw, db) vs F.layer_norm in float64.

    channel_major: x and dy stored as (C, B·L), as the channel-major mixer returns its output."""
    import torch.nn.functional as F
    from srstudy.models.norm_triton import layer_norm

    g = torch.Generator().manual_seed(B * L + C)
    x, gy = torch.randn(B, L, C, generator=g, dtype=torch.float64) * 2 + 0.5, torch.randn(B, L, C, generator=g)
    w, b = torch.randn(C, generator=g, dtype=torch.float64), torch.randn(C, generator=g, dtype=torch.float64)
    ref_in = [t.clone().requires_grad_() for t in (x, w, b)]
    F.layer_norm(ref_in[0], (C,), ref_in[1], ref_in[2]).backward(gy.double())
    cm = lambda t: t.reshape(B * L, C).t().contiguous().t().view(B, L, C) if channel_major else t
    mine = [cm(x.float().to(device)).requires_grad_(), w.float().to(device).requires_grad_(),
            b.float().to(device).requires_grad_()]
    y = layer_norm(*mine)
    y.backward(cm(gy.to(device)))
    ref = F.layer_norm(x, (C,), w, b)
    return [rel_err(y.cpu(), ref)] + [rel_err(a.grad.cpu(), r.grad) for a, r in zip(mine, ref_in)]


@interpreted
def test_interpreted_layer_norm_matches_torch():
    for case in LN_CASES:
        errs = _layer_norm_against_torch(*case, device="cpu")
        assert max(errs) <= 2e-5, (case, errs)


@interpreted
def test_interpreted_channel_major_mixer_matches_token_major():
    _mixers_agree("cpu", lowrank=False)
    _mixers_agree("cpu", lowrank=True)


def _inference_matches_recorded(device):
    """Without autograd each kernel launches directly (no chunk states, no LayerNorm statistics,
    in_proj as one matmul): the same values as the recorded call, and no autograd node."""
    from srstudy.models.conv_triton import causal_conv1d_silu
    from srstudy.models.mamba import MambaMixer, MixerConfig
    from srstudy.models.norm_triton import layer_norm

    x = {k: (None if v is None else v.to(device=device, dtype=torch.float32))
         for k, v in make_inputs(2, 3, 70, 4, seed=3).items()}
    leaves = {k: (None if v is None else v.clone().requires_grad_()) for k, v in x.items()}
    g = torch.Generator().manual_seed(0)
    xc = torch.randn(3, 2, 50, generator=g).to(device).transpose(0, 1)  # channel-major (Bt, Dm, L)
    w, b = torch.randn(3, 1, 4, generator=g).to(device), torch.randn(3, generator=g).to(device)
    xn = torch.randn(2, 37, 32, generator=g).to(device) * 2 + 0.5
    wn, bn = torch.randn(32, generator=g).to(device), torch.randn(32, generator=g).to(device)
    mixer = MambaMixer(MixerConfig(d_model=8, d_state=4, rank=2), scan_backend="triton").to(device)
    xm = torch.randn(2, 50, 8, generator=g).to(device)
    calls = {
        "scan": lambda grad: call(S.selective_scan, leaves if grad else x, True, backend="triton", chunk_size=16),
        "conv": lambda grad: causal_conv1d_silu(xc, w.requires_grad_(grad), b),
        "norm": lambda grad: layer_norm(xn, wn.requires_grad_(grad), bn),
        "mixer": lambda grad: mixer._forward_channel_major(xm),
    }
    for name, fn in calls.items():
        recorded = fn(True)
        with torch.no_grad():
            inferred = fn(False)
        assert recorded.grad_fn is not None and inferred.grad_fn is None, name
        assert inferred.shape == recorded.shape and inferred.stride() == recorded.stride(), name
        # mixer: in_proj as one matmul, not two; Δ = W·Δ_low and A = −exp(A_log) in the scan kernel
        tol = 5e-5 * recorded.abs().max().item() if name == "mixer" else 0.0  # H200: 1.15e-5
        assert (inferred - recorded.detach()).abs().max().item() <= tol, name


@interpreted
def test_interpreted_inference_path_matches_the_recorded_one():
    _inference_matches_recorded("cpu")


def _lowrank_matches_reference(device):
    """selective_scan_triton_lowrank (Δ = W·Δ_low, A = −exp(A_log) in the kernel) against the reference
    recurrence on the Δ and A it stands for, with and without D, z and the Δ bias; it refuses autograd."""
    from srstudy.models.scan_triton import selective_scan_triton_lowrank

    g = torch.Generator().manual_seed(4)
    for (Bt, Dm, L, N, R), flags in zip([(2, 3, 70, 4, 2), (1, 5, 37, 16, 3), (2, 4, 300, 8, 1)], FLAGS[:3]):
        with_D, with_z, with_bias, softplus = flags
        x = make_inputs(Bt, Dm, L, N, seed=R, with_D=with_D, with_z=with_z, with_bias=with_bias)
        low = torch.randn(Bt * L, R, generator=g, dtype=torch.float64).t().reshape(R, Bt, L).transpose(0, 1)
        W = torch.randn(Dm, R, generator=g, dtype=torch.float64) * 0.5
        A_log = torch.log(-x["A"])
        delta = torch.einsum("dr,brl->bdl", W, low)
        x_ref = dict(x, delta=delta, A=-torch.exp(A_log))
        if not softplus:  # Δ > 0 without softplus, as in _against_reference
            low, W = low.abs(), W.abs()
            x["delta_bias"] = None if x["delta_bias"] is None else x["delta_bias"].abs()
            x_ref = dict(x, delta=torch.einsum("dr,brl->bdl", W, low), A=-torch.exp(A_log))
        ref = call(S.selective_scan_reference, x_ref, softplus)
        f32 = lambda v: None if v is None else v.to(device=device, dtype=torch.float32)  # noqa: E731
        with torch.no_grad():
            y = selective_scan_triton_lowrank(
                f32(x["u"]), f32(low), f32(W), f32(A_log), f32(x["B"]), f32(x["C"]), f32(x["D"]), f32(x["z"]),
                f32(x["delta_bias"]), softplus)
        assert rel_err(y.cpu(), ref) <= 2e-5, (Bt, Dm, L, N, R, flags)
    with pytest.raises(RuntimeError, match="no gradients"):
        selective_scan_triton_lowrank(f32(x["u"]).requires_grad_(), f32(low), f32(W), f32(A_log), f32(x["B"]),
                                      f32(x["C"]))
    with pytest.raises(ValueError, match="dt_proj_weight"):
        with torch.no_grad():
            selective_scan_triton_lowrank(f32(x["u"]), f32(low), f32(W[:, :0]), f32(A_log), f32(x["B"]), f32(x["C"]))


@interpreted
def test_interpreted_lowrank_inference_scan_matches_reference():
    _lowrank_matches_reference("cpu")


@needs_triton
def test_dense_layout_is_what_empty_like_keeps():
    from srstudy.models.layouts import dense

    base = torch.empty(3, 4, 5)
    layouts = {"contiguous": base, "channel-major": base.transpose(0, 1), "permuted": base.permute(2, 0, 1),
               "every other token": base[..., ::2], "a slice of channels": base[:, :2], "expanded": base[:1].expand(3, 4, 5)}
    for name, t in layouts.items():
        assert dense(t) == (torch.empty_like(t).stride() == t.stride()), name
    assert [dense(t) for t in layouts.values()] == [True, True, True, False, False, False]
    assert dense(torch.empty(1, 4, 5).as_strided((1, 4, 5), (999, 5, 1)))  # a size-1 axis's stride is never used


@needs_triton
@pytest.mark.skipif(INTERPRETING or CUDA, reason="the driver of the interpreted cases, on CPU machines")
def test_triton_kernels_in_the_interpreter_match_reference():
    """Re-run this file with TRITON_INTERPRET=1: every interpreted case must pass."""
    run_interpreted(__file__, N_INTERPRETED)


@needs_triton
@pytest.mark.skipif(INTERPRETING, reason="backend selection outside the interpreter")
def test_backend_selection_names_triton(monkeypatch):
    monkeypatch.setattr(S, "_AUTO_LOGGED", set())
    monkeypatch.delenv(S.ENV_VAR, raising=False)
    if S._mamba_ssm_fn()[0] is None:  # no mamba_ssm: triton is auto's choice on CUDA tensors
        assert S.resolve_backend("auto", "cuda", torch.float32) == "triton"
    assert S.resolve_backend("auto", "cpu") == "chunked"
    assert S.resolve_backend("auto", "cuda", torch.float64) != "triton"  # fp32/fp16/bf16 only
    if not CUDA:
        with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
            S.resolve_backend("triton", "cpu")
    from srstudy.models.scan_triton import selective_scan_triton

    with pytest.raises(ValueError, match="power of two"):
        call(selective_scan_triton, make_inputs(1, 2, 4, 2, dtype=torch.float32), True, chunk_size=48)


on_gpu = pytest.mark.skipif(not CUDA or INTERPRETING, reason="needs an NVIDIA GPU")


@pytest.mark.cuda
@on_gpu
@needs_triton
@pytest.mark.parametrize("shape", CASES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("flags", FLAGS, ids=lambda f: "".join("DzbS"[i] if v else "-" for i, v in enumerate(f)))
def test_compiled_kernels_on_cuda_match_reference(shape, flags):
    errs = _against_reference(shape, flags, device="cuda")
    assert max(errs.values()) <= 2e-5, (shape, flags, errs)


@pytest.mark.cuda
@on_gpu
@needs_triton
def test_compiled_bf16_conv_layer_norm_and_mixers_on_cuda():
    errs = _against_reference((2, 3, 70, 4, 32), FLAGS[0], device="cuda", dtype=torch.bfloat16)
    assert max(errs.values()) <= 1.5e-2, errs
    for case in CONV_CASES + [(4, 64, 5000, True)]:  # the last: several programs per row
        assert max(_conv_against_conv1d(*case, device="cuda")) <= 2e-5, case
    assert max(_conv_against_conv1d(2, 8, 300, True, device="cuda", dtype=torch.bfloat16)) <= 1.5e-2
    for case in LN_CASES + [(4, 4096, 32, True), (2, 4096, 60, False)]:
        assert max(_layer_norm_against_torch(*case, device="cuda")) <= 2e-5, case
    _mixers_agree("cuda", lowrank=False)
    _mixers_agree("cuda", lowrank=True)


@pytest.mark.cuda
@on_gpu
@needs_triton
def test_inference_path_on_cuda_matches_the_recorded_one(monkeypatch):
    _inference_matches_recorded("cuda")
    _lowrank_matches_reference("cuda")
    from srstudy.models.dvmsr import DVMSR, preset

    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # else the convs' TF32 error (6e-4) hides all
    torch.manual_seed(0)
    net, x = DVMSR(preset("dvmsr")).cuda().eval().set_scan_backend("triton"), torch.rand(1, 3, 40, 36, device="cuda")
    recorded = net(x)
    with torch.no_grad():
        inferred = net(x)
        exact = net.double().set_scan_backend("chunked")(x.double())
    assert recorded.grad_fn is not None and inferred.grad_fn is None
    # At inference few-row LayerNorms take PyTorch's kernel, which rounds differently from the Triton one
    # (H200, session 12, benchmarks/gpu/logs_session12/diag_inference.py: recorded 1.25e-6 from float64,
    # inferred 1.30e-6, 7.7e-7 apart; with TF32 convs 6.3e-4, 6.3e-4, 1.3e-4). So: inference costs no accuracy,
    # and the two paths differ by no more than the fp32 network's own error.
    err_recorded = (recorded.detach().double() - exact).abs().max().item()
    assert (inferred.double() - exact).abs().max().item() <= 1.5 * err_recorded
    assert (inferred - recorded.detach()).abs().max().item() <= err_recorded


@pytest.mark.cuda
@on_gpu
@needs_triton
def test_few_programs_take_the_wide_tiles_on_cuda():
    """Batch-1 shapes (few programs) run the *_few tiles; the result is the same scan."""
    from srstudy.models import scan_triton

    assert scan_triton._few_programs(1, 120, True) and not scan_triton._few_programs(128, 64, True)
    assert not scan_triton._few_programs(1, 120, False)  # the interpreter always runs the main tiles
    for shape in [(1, 6, 700, 16, None), (2, 3, 257, 4, None)]:
        errs = _against_reference(shape, FLAGS[0], device="cuda")
        assert max(errs.values()) <= 2e-5, (shape, errs)


@pytest.mark.cuda
@on_gpu
@needs_triton
def test_dvmsr_on_cuda_matches_float64_cpu(monkeypatch):
    """The whole GPU path (channel-major mixers, Triton conv, scan and LayerNorm) vs the CPU network in float64."""
    from srstudy.models.dvmsr import DVMSR, DVMSRConfig

    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # cuDNN's 3×3 convs in fp32, not TF32

    torch.manual_seed(0)
    net = DVMSR(DVMSRConfig(embed_dim=16, n_groups=2, blocks_per_group=2, rank=2, scale=2))
    x = torch.rand(2, 3, 20, 24)
    outs, grads = [], []
    for device, dtype, backend in (("cpu", torch.float64, "chunked"), ("cuda", torch.float32, "triton")):
        net = net.to(device, dtype).set_scan_backend(backend)
        net.zero_grad()
        y = net(x.to(device, dtype))
        y.square().mean().backward()
        outs.append(y.detach().cpu().double())
        grads.append(torch.cat([p.grad.flatten() for p in net.parameters()]).cpu().double())
    assert (outs[0] - outs[1]).abs().max() <= 1e-4 * outs[0].abs().max()
    assert (grads[0] - grads[1]).abs().max() <= 1e-3 * grads[0].abs().max()


@pytest.mark.cuda
@on_gpu
@needs_triton
@pytest.mark.parametrize("tile", [(32, 1, 4), (32, 2, 2), (64, 2, 4), (128, 1, 4), (32, 1, 1, 1), (16, 2, 1, 1),
                                  (32, 2, 1), (32, 1, 1)], ids=str)
def test_compiled_kernels_every_tile_shape(monkeypatch, tile):
    """Each (tokens, channels, warps) tile the benchmarks try computes the same scan."""
    from srstudy.models import scan_triton

    monkeypatch.setitem(scan_triton.CONFIG, "fwd", tile)
    monkeypatch.setitem(scan_triton.CONFIG, "bwd", tile)
    monkeypatch.setitem(scan_triton.CONFIG, "min_programs", 0)  # these tiles even for a few programs
    for shape in [(2, 3, 300, 16, None), (1, 5, 37, 4, None)]:
        errs = _against_reference(shape, FLAGS[0], device="cuda")
        assert max(errs.values()) <= 2e-5, (shape, errs)


@pytest.mark.cuda
@on_gpu
@needs_triton
@pytest.mark.parametrize("stages,maxnreg,vec", [(2, None, 0), (3, None, 0), (1, 168, 0), (2, 168, 0), (2, 128, 0),
                                                (1, 128, 4), (3, 168, 4), (1, 168, 4)], ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_compiled_backward_pipelined_and_register_capped(monkeypatch, stages, maxnreg, vec, dtype):
    """The backward with its chunk loop software-pipelined, its registers capped (spilling) and/or its token
    offsets as runs of 4 computes the same scan as the reference, fp32 and bf16, spread layout on and off."""
    from srstudy.models import scan_triton

    monkeypatch.setitem(scan_triton.CONFIG, "bwd_stages", {"default": stages})
    monkeypatch.setitem(scan_triton.CONFIG, "bwd_maxnreg", {"default": maxnreg})
    monkeypatch.setitem(scan_triton.CONFIG, "bwd_vec", {"default": vec})
    monkeypatch.setitem(scan_triton.CONFIG, "min_programs", 0)  # the main tiles at every shape
    tol = 2e-5 if dtype == torch.float32 else 1.5e-2
    for spread in (True, False):
        monkeypatch.setitem(scan_triton.CONFIG, "bwd_spread", spread)
        for shape in [(2, 3, 300, 16, None), (3, 64, 1000, 16, None), (1, 5, 37, 4, None)]:
            errs = _against_reference(shape, FLAGS[0], device="cuda", dtype=dtype)
            assert max(errs.values()) <= tol, (shape, spread, errs)


@pytest.mark.cuda
@pytest.mark.skipif(not CUDA or INTERPRETING, reason="needs an NVIDIA GPU")
@needs_triton
@pytest.mark.skipif(S._mamba_ssm_fn()[0] is None, reason="mamba_ssm not installed")
def test_triton_matches_mamba_ssm_at_dvmsr_sizes():
    x = make_inputs(2, 64, 4096, 16, dtype=torch.float32, device="cuda", seed=8)
    y_t, g_t = value_and_grads(S.selective_scan, x, True, backend="triton")
    y_c, g_c = value_and_grads(S.selective_scan, x, True, backend="cuda")
    rel = lambda a, b: ((a - b).abs().max() / b.abs().max()).item()
    errs = {"y": rel(y_t, y_c), **{k: rel(g_t[k], g_c[k]) for k in g_c}}
    print("\ntriton vs mamba_ssm fp32: " + " ".join(f"{k}={v:.1e}" for k, v in errs.items()))
    assert max(errs.values()) <= 1e-3, errs


def test_pick_scan_config_takes_the_fastest_backward_per_dtype():
    """benchmarks/gpu/pick_scan_config.py: per dtype the row with the least forward + backward at D 64,
    written as CONFIG entries by dtype name that the kernels read back as chosen."""
    import importlib.util
    from pathlib import Path

    from srstudy.models import scan_triton

    spec = importlib.util.spec_from_file_location(
        "pick_scan_config", Path(__file__).resolve().parents[1] / "benchmarks" / "gpu" / "pick_scan_config.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    row = lambda o: "triton" + __import__("json").dumps(o, separators=(",", ":"))
    report = {"scan": {
        "D64/float32/mamba_ssm": {"fwdbwd_ms": 1.0},  # not a candidate
        "D64/float32/triton_default": {"fwdbwd_ms": 4.6},
        f"D64/float32/{row({'bwd_maxnreg': {'default': 128}})}": {"fwdbwd_ms": 4.0},
        f"D64/float32/{row({'bwd_stages': {'default': 2}})}": {"fwdbwd_ms": 4.7},
        "D64/bfloat16/triton_default": {"fwdbwd_ms": 4.9},
        f"D64/bfloat16/{row({'bwd_spread': True, 'bwd_stages': {'default': 3}})}": {"fwdbwd_ms": 4.5},
        f"D64/bfloat16/{row({'bwd_maxnreg': {'default': 96}})}": {"error": "did not compile"},
        f"D120/float32/{row({'bwd_stages': {'default': 3}})}": {"fwdbwd_ms": 0.1},  # another shape
    }}
    chosen, log = mod.pick(report)
    assert chosen["bwd_maxnreg"]["float32"] == 128 and chosen["bwd_stages"]["float32"] == 1
    shipped = lambda key, dtype: scan_triton.CONFIG[key].get(dtype, scan_triton.CONFIG[key]["default"])  # noqa: E731
    assert chosen["bwd_vec"] == {"default": shipped("bwd_vec", "default"), "float32": shipped("bwd_vec", "float32"),
                                 "bfloat16": shipped("bwd_vec", "bfloat16")}  # no row set it: as shipped
    assert chosen["bwd_stages"]["bfloat16"] == 3 and set(chosen["bwd_spread"]) == {"float32", "bfloat16"}
    assert chosen["bwd_maxnreg"]["bfloat16"] == shipped("bwd_maxnreg", "bfloat16")  # not overridden by the winning row
    assert len(log) == 2 and "4.000 ms vs shipped 4.600" in log[0]


def test_layer_norm_takes_pytorch_for_few_rows_without_autograd(monkeypatch):
    """fused_layer_norm's choice (models/norm_triton.triton_norm_wanted): the Triton kernels when autograd records
    or beyond ATEN_INFERENCE_MAX_ROWS rows; PyTorch's kernel for few rows at inference, and for non-affine norms."""
    from srstudy.models import norm_triton

    monkeypatch.setattr(norm_triton, "ATEN_INFERENCE_MAX_ROWS", 100)
    norm = torch.nn.LayerNorm(8)
    few, many = torch.randn(2, 50, 8), torch.randn(3, 50, 8)  # 100 rows, 150 rows
    with torch.no_grad():
        assert not norm_triton.triton_norm_wanted(norm, few)
        assert norm_triton.triton_norm_wanted(norm, many)
    assert norm_triton.triton_norm_wanted(norm, few)  # the norm's weight records a gradient
    with torch.no_grad():
        assert not norm_triton.triton_norm_wanted(torch.nn.LayerNorm(8, elementwise_affine=False), many)

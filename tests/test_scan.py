"""Tests for srstudy.models.scan: chunked vs reference (values and gradients),
dtypes, stability, backend selection, ONNX export.  CPU, a few seconds."""

from __future__ import annotations

import logging

import pytest
import torch

from srstudy.models import scan as S
from srstudy.models.scan import available_backends, resolve_backend, selective_scan
from scan_cases import NAMES, call, make_inputs, rel_err, value_and_grads  # noqa: F401

CUDA = torch.cuda.is_available()
needs_mamba = pytest.mark.skipif(S._mamba_ssm_fn()[0] is None, reason="mamba_ssm not installed")

# --------------------------------------------------------------------------- #
# chunked == reference, float64, values and gradients
# --------------------------------------------------------------------------- #
CASES = [
    # Bt, Dm, L,   N, T    (T = chunk_size)
    (2, 3, 1, 4, 8),       # L = 1
    (1, 2, 5, 3, 8),       # L < T: a single padded chunk
    (2, 3, 37, 4, 8),      # L not a multiple of T
    (1, 4, 64, 2, 16),     # L a multiple of T
    (2, 2, 700, 3, 2),     # 350 chunks: three levels of the tree across chunks
]
FLAGS = [  # with_D, with_z, with_bias, softplus
    (True, True, True, True),
    (False, False, False, False),
    (True, False, True, False),
    (False, True, False, True),
]


@pytest.mark.parametrize("within", ["auto", "loop", "stream", "doubling", "export-graph"])
@pytest.mark.parametrize("flags", FLAGS, ids=lambda f: "D{:d}z{:d}bias{:d}sp{:d}".format(*f))
@pytest.mark.parametrize("case", CASES, ids=lambda c: "Bt{}Dm{}L{}N{}T{}".format(*c))
def test_chunked_matches_reference_float64(case, flags, within, record_property):
    Bt, Dm, L, N, T = case
    with_D, with_z, with_bias, softplus = flags
    if within == "export-graph" and L > 100:
        T = 16  # keep the fixed export tree (sized for max_len) cheap
    x = make_inputs(Bt, Dm, L, N, with_D=with_D, with_z=with_z, with_bias=with_bias, seed=L + Dm)
    kw = {"chunk_size": T}
    if within == "export-graph":  # the code path used while tracing for ONNX, run eagerly
        kw.update(_symbolic=True, max_len=max(L, 64))
    elif within != "auto":
        kw["within"] = within
    y_ref, g_ref = value_and_grads(S.selective_scan_reference, x, softplus)
    y, g = value_and_grads(S.selective_scan_chunked, x, softplus, **kw)
    assert y.dtype == torch.float64 and y.shape == (Bt, Dm, L)
    errs = {"y": rel_err(y, y_ref), **{f"d{k}": rel_err(g[k], g_ref[k]) for k in g_ref}}
    print(f"\n{case} {flags} {within}: max err " + " ".join(f"{k}={v:.1e}" for k, v in errs.items()))
    for k, v in errs.items():
        record_property(f"max_err_{k}", v)
    assert max(errs.values()) <= 1e-10, errs


def test_public_entry_point_and_chunk_size():
    x = make_inputs(2, 3, 50, 4)
    ref = call(S.selective_scan_reference, x, True)
    for T in (None, 1, 7, 64):
        y = call(selective_scan, x, True, backend="chunked", chunk_size=T)
        assert rel_err(y, ref) <= 1e-10
    assert rel_err(call(selective_scan, x, True, backend="reference"), ref) == 0.0


def test_export_graph_path_over_max_len_fails_loudly():
    x = make_inputs(1, 2, 300, 3)
    with pytest.raises(RuntimeError):  # never silently drops the carries
        call(S.selective_scan_chunked, x, True, chunk_size=4, _symbolic=True, max_len=64)
    y = call(S.selective_scan_chunked, x, True, chunk_size=4, _symbolic=True, max_len=300)
    assert rel_err(y, call(S.selective_scan_reference, x, True)) <= 1e-10


# --------------------------------------------------------------------------- #
# dtypes
# --------------------------------------------------------------------------- #
def test_float32_close_to_float64_reference():
    x64 = make_inputs(2, 8, 300, 16, seed=3)
    x32 = {k: (None if v is None else v.float()) for k, v in x64.items()}
    ref = call(S.selective_scan_reference, x64, True)
    for within in ("loop", "stream"):
        y, g = value_and_grads(S.selective_scan_chunked, x32, True, within=within)
        _, g_ref = value_and_grads(S.selective_scan_reference, x64, True)
        assert y.dtype == torch.float32
        err = ((y.double() - ref).abs().max() / ref.abs().max()).item()
        gerr = max(((g[k].double() - g_ref[k]).abs().max() / g_ref[k].abs().max()).item() for k in g)
        print(f"\nfloat32 {within}: max rel err y={err:.1e} grads={gerr:.1e}")
        assert err <= 1e-4 and gerr <= 1e-4


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_inputs_return_input_dtype(dtype):
    x64 = make_inputs(1, 4, 100, 8, seed=4)
    xh = {k: (None if v is None else v.to(dtype)) for k, v in x64.items()}
    # the reference of the rounded inputs: the kernel computes in float32 internally
    ref = call(S.selective_scan_reference, {k: (None if v is None else v.double()) for k, v in xh.items()}, True)
    for backend in ("chunked", "reference"):
        y = call(selective_scan, xh, True, backend=backend)
        assert y.dtype == dtype
        assert ((y.double() - ref).abs().max() / ref.abs().max()).item() < 1e-2


# --------------------------------------------------------------------------- #
# stability: decays of exp(-50) per step
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_large_decays_stay_finite(dtype):
    x = make_inputs(2, 4, 200, 8, dtype=torch.float64, seed=5, decay=5.0)  # |A| in [0.5, 10]
    x["delta"] = torch.rand(x["delta"].shape, generator=torch.Generator().manual_seed(6),
                            dtype=torch.float64) * 5.0                   # Δ in [0, 5]: Δ|A| up to 50
    x["delta_bias"] = None
    assert (x["delta"][..., None, :] * x["A"].abs()[None, :, :, None]).max() > 45
    x_t = {k: (None if v is None else v.to(dtype)) for k, v in x.items()}
    y_ref, g_ref = value_and_grads(S.selective_scan_reference, x, False)
    tol = 1e-10 if dtype == torch.float64 else 1e-4
    for kw in ({"within": "loop"}, {"within": "stream"}, {"_symbolic": True, "max_len": 256}):
        y, g = value_and_grads(S.selective_scan_chunked, x_t, False, chunk_size=16, **kw)
        assert torch.isfinite(y).all() and all(torch.isfinite(v).all() for v in g.values())
        errs = [rel_err(y, y_ref)] + [rel_err(g[k], g_ref[k]) for k in g]
        print(f"\nlarge decays {dtype} {kw}: max err {max(errs):.1e}")
        assert max(errs) <= tol


# --------------------------------------------------------------------------- #
# backend selection
# --------------------------------------------------------------------------- #
@pytest.fixture
def fresh_auto_log(monkeypatch):
    monkeypatch.setattr(S, "_AUTO_LOGGED", set())
    monkeypatch.delenv(S.ENV_VAR, raising=False)


def test_explicit_and_env_backend(fresh_auto_log, monkeypatch):
    assert resolve_backend("chunked", "cpu") == "chunked"
    assert resolve_backend(" Reference ", "cpu") == "reference"
    monkeypatch.setenv(S.ENV_VAR, "reference")
    assert resolve_backend(None, "cpu") == "reference"
    assert resolve_backend("chunked", "cpu") == "chunked"  # the argument wins over the env var
    calls = []
    monkeypatch.setitem(S._BACKENDS, "reference",
                        S._Backend(lambda *a, **k: calls.append(1) or a[0], S._always))
    x = make_inputs(1, 2, 4, 2)
    call(selective_scan, x, True)
    assert calls == [1]


def test_unknown_backend_errors(fresh_auto_log, monkeypatch):
    with pytest.raises(ValueError, match="valid: auto, .*chunked.*reference"):
        resolve_backend("tritonn", "cpu")
    monkeypatch.setenv(S.ENV_VAR, "nope")
    with pytest.raises(ValueError, match=S.ENV_VAR):
        resolve_backend(None, "cpu")
    with pytest.raises(ValueError):
        call(selective_scan, make_inputs(1, 2, 4, 2), True)


@pytest.mark.skipif(CUDA and S._mamba_ssm_fn()[0] is not None, reason="the cuda backend can run here")
def test_cuda_requested_but_unavailable_raises(fresh_auto_log):
    with pytest.raises(RuntimeError, match=r"'cuda'.*cannot run.*(srstudy\[cuda\]|CUDA)"):
        resolve_backend("cuda", "cuda" if CUDA else "cpu")
    with pytest.raises(RuntimeError, match="backend='chunked'"):
        call(selective_scan, make_inputs(1, 2, 4, 2, dtype=torch.float32), True, backend="cuda")
    assert "cuda" not in available_backends("cpu")


def test_auto_choice_is_logged_once(fresh_auto_log, caplog):
    caplog.set_level(logging.INFO, logger="srstudy.scan")
    x = make_inputs(1, 2, 4, 2)
    for _ in range(3):
        call(selective_scan, x, True)
    recs = [r for r in caplog.records if r.name == "srstudy.scan"]
    assert len(recs) == 1, [r.getMessage() for r in recs]
    msg = recs[0].getMessage()
    print("\n" + msg)
    assert "chunked" in msg and "cpu" in msg and ("mamba_ssm" in msg or "CUDA" in msg)
    assert resolve_backend("auto", "cpu") == "chunked"


def test_available_and_register_backend(monkeypatch):
    assert {"chunked", "reference"} <= set(available_backends("cpu"))
    monkeypatch.setattr(S, "_BACKENDS", dict(S._BACKENDS))  # undone after the test
    S.register_backend("zeros", lambda *a, **k: a[0] * 0,
                       unavailable=lambda dev, dt: None if dev.type == "cpu" else "test only")
    assert "zeros" in available_backends("cpu")
    x = make_inputs(1, 2, 4, 2)
    assert call(selective_scan, x, True, backend="zeros").abs().max() == 0
    with pytest.raises(ValueError):
        S.register_backend("auto", lambda *a: None)


# --------------------------------------------------------------------------- #
# ONNX export, dynamic L
# --------------------------------------------------------------------------- #
class _TinyScan(torch.nn.Module):
    def __init__(self, Dm=6, N=4):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.A = torch.nn.Parameter(-(torch.rand(Dm, N, generator=g) + 0.1))
        self.D = torch.nn.Parameter(torch.randn(Dm, generator=g))
        self.delta_bias = torch.nn.Parameter(torch.randn(Dm, generator=g) * 0.5)

    def forward(self, u, delta, B, C, z):
        return selective_scan(u, delta, self.A, B, C, self.D, z, self.delta_bias, True,
                              backend="chunked")


_ONNX_INPUTS = ("u", "delta", "B", "C", "z")


def _onnx_inputs(L, Bt=2, Dm=6, N=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(Bt, k, L, generator=g) for k in (Dm, Dm, N, N, Dm))


def _export(model, L, path):
    """The TorchScript exporter (dynamo=False), dynamic batch and L: exports
    this in well under a second, the graph runs at any L.  The torch.export-
    based one (dynamo=True) specialises L to the example's value (guards from
    the fixed tree's shape arithmetic), so it is not used."""
    torch.onnx.export(
        model, _onnx_inputs(L), str(path), dynamo=False, opset_version=17,
        input_names=list(_ONNX_INPUTS), output_names=["y"],
        dynamic_axes={n: {0: "batch", 2: "L"} for n in (*_ONNX_INPUTS, "y")})


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_onnx_export_dynamic_length(tmp_path):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    model = _TinyScan().eval()
    _export(model, 40, tmp_path / "scan40.onnx")
    _export(model, 100, tmp_path / "scan100.onnx")
    graphs = [onnx.load(str(tmp_path / f)).graph for f in ("scan40.onnx", "scan100.onnx")]
    ops = [[n.op_type for n in g.node] for g in graphs]
    assert ops[0] == ops[1], "graph depends on the example length"
    n_ops = sum(op != "Constant" for op in ops[0])
    print(f"\nONNX (TorchScript exporter, opset 17): {len(ops[0])} nodes, {n_ops} besides Constant")
    assert len(ops[0]) < 600 and n_ops < 320
    assert not {"Loop", "Scan", "If"} & set(ops[0])
    sess = ort.InferenceSession(str(tmp_path / "scan40.onnx"), providers=["CPUExecutionProvider"])
    for L, Bt in ((33, 2), (200, 3), (1, 1), (700, 1)):
        x = _onnx_inputs(L, Bt=Bt, seed=L)
        (y_onnx,) = sess.run(None, {n: t.numpy() for n, t in zip(_ONNX_INPUTS, x)})
        with torch.no_grad():
            y = model(*x)
        err = float(abs(y_onnx - y.numpy()).max())
        print(f"ONNX vs PyTorch at L={L}, Bt={Bt}: max abs diff {err:.1e}")
        assert y_onnx.shape == tuple(y.shape) and err <= 1e-4


# --------------------------------------------------------------------------- #
# CUDA (skipped without a GPU)
# --------------------------------------------------------------------------- #
@pytest.mark.cuda
@pytest.mark.skipif(not CUDA, reason="needs an NVIDIA GPU")
@pytest.mark.parametrize("within", ["loop", "stream"])
def test_chunked_on_cuda_matches_reference(within):
    x = make_inputs(2, 4, 300, 8, seed=7)
    y_ref, g_ref = value_and_grads(S.selective_scan_reference, x, True)
    xc = {k: (None if v is None else v.cuda()) for k, v in x.items()}
    y, g = value_and_grads(S.selective_scan_chunked, xc, True, within=within, chunk_size=16)
    assert max([rel_err(y.cpu(), y_ref)] + [rel_err(g[k].cpu(), g_ref[k]) for k in g]) <= 1e-10


@pytest.mark.cuda
@pytest.mark.skipif(not CUDA, reason="needs an NVIDIA GPU")
@needs_mamba
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-3), (torch.bfloat16, 3e-2)])
def test_cuda_backend_matches_chunked(dtype, tol, fresh_auto_log):
    x = make_inputs(2, 64, 4096, 16, dtype=torch.float32, device="cuda", seed=8)
    for k in ("u", "delta", "B", "C", "z"):
        x[k] = x[k].to(dtype)
    assert resolve_backend(None, "cuda", dtype) == "cuda"
    y_cuda, g_cuda = value_and_grads(selective_scan, x, True, backend="cuda")
    y_chunk, g_chunk = value_and_grads(selective_scan, x, True, backend="chunked")
    assert y_cuda.dtype == y_chunk.dtype == dtype
    rel = lambda a, b: ((a.float() - b.float()).abs().max() / b.float().abs().max()).item()
    errs = {"y": rel(y_cuda, y_chunk), **{k: rel(g_cuda[k], g_chunk[k]) for k in g_chunk}}
    print(f"\ncuda vs chunked {dtype}: " + " ".join(f"{k}={v:.1e}" for k, v in errs.items()))
    assert max(errs.values()) <= tol, errs

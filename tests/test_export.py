"""ONNX export: parity with PyTorch (random and real images, fp32 <= 1e-4), dynamic H/W, a
graph whose size does not depend on the input, the fp16 graph, the TensorRT-missing path,
the files in the trial's MLflow run, `--best`, and the official DVMSR checkpoint scoring the
same Set5 PSNR in onnxruntime as in PyTorch."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from srstudy.cli import app
from srstudy.deploy.export import PARITY_TOL_FP16, check_parity, export
from srstudy.deploy.onnx import ONNX_FP16_FILE, export_onnx, graph_stats
from srstudy.deploy.runtime import onnx_upscaler, ort_session, run_session, tensorrt_status
from srstudy.deploy.sources import load_source
from srstudy.models.dvmsr import DVMSR, load_checkpoint, preset, save_checkpoint
from srstudy.tracking import TrialRun

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

TINY = {"embed_dim": 8, "n_groups": 1, "blocks_per_group": 1, "rank": 2}
SET5_LR = "benchmarks/Set5/LR_bicubic/X4/img_001x4.png"
NODES_PER_MIXER = 650  # measured: ~570 per Mamba mixer (+ ~90 for the rest of the network)


def tiny_student(seed: int = 0) -> DVMSR:
    torch.manual_seed(seed)
    return DVMSR(preset("litesr_student", **TINY)).eval()


def n_mixers(model: DVMSR) -> int:
    return model.cfg.n_groups * model.cfg.blocks_per_group


def torch_sr(model, x: np.ndarray) -> np.ndarray:
    net = DVMSR(model.cfg)  # a fresh copy, chunked scan on the CPU
    net.load_state_dict(model.state_dict())
    with torch.no_grad():
        return net.eval().set_scan_backend("chunked")(torch.from_numpy(x)).numpy()


def cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


# ---- a tiny random student ------------------------------------------------------------------
@pytest.mark.data
def test_tiny_student_export_parity_dynamic_sizes_and_no_tensorrt(tmp_path, shared_data, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # `import tensorrt` fails, as on this CPU box
    model = tiny_student()
    report = export(model, tmp_path / "out", image=shared_data / SET5_LR, latency_sizes=(16,), latency_repeats=2)

    # parity: a random image and a real Set5 one, at sizes other than the traced 32x32
    assert report.parity["random"]["input"] == [1, 3, 37, 53]
    assert report.parity["real"]["image"] == "img_001x4.png" and report.parity["real"]["input"] == [1, 3, 48, 64]
    for check in report.parity.values():
        assert check["finite"] and check["max_abs_diff"] <= 1e-4
    # the comparison is not vacuous: the network's output moves with its input
    sess = ort_session(tmp_path / "out" / "model.onnx")
    rng = np.random.default_rng(1)
    for shape in [(1, 3, 20, 44), (2, 3, 33, 17)]:  # two more sizes, one a batch of 2
        x = rng.random(shape, dtype=np.float32)
        y = run_session(sess, x)
        assert y.shape == (shape[0], 3, 4 * shape[2], 4 * shape[3])
        assert np.abs(y - torch_sr(model, x)).max() <= 1e-4
    assert np.abs(y[0] - y[1]).max() > 1e-3  # different inputs, different outputs

    # a small graph of standard ops
    g = report.graph
    assert g["opset"] == 17 and g["control_flow"] == [] and g["custom_domains"] == []
    assert g["nodes"] < NODES_PER_MIXER * n_mixers(model) + 150
    assert "Loop" not in g["op_counts"] and "Scan" not in g["op_counts"]

    # latency on both sides, TensorRT missing is a message, not a failure
    (row,) = report.latency
    assert row["lr"] == "16x16" and row["onnxruntime_ms"] > 0 and row["pytorch_ms"] > 0
    assert row["onnxruntime_provider"] == "CPUExecutionProvider"
    assert report.tensorrt["built"] is False
    assert "TensorRT is not installed" in report.tensorrt["message"] and "JetPack" in report.tensorrt["message"]
    assert tensorrt_status()[0] is False
    saved = json.loads((tmp_path / "out" / "export.json").read_text())
    assert saved["parity"]["real"]["max_abs_diff"] == report.parity["real"]["max_abs_diff"]


def test_graph_size_does_not_depend_on_the_input_size(tmp_path):
    model = tiny_student(1)
    ops = []
    for hw in [(16, 16), (40, 24)]:
        path = export_onnx(model, tmp_path / f"m{hw[0]}.onnx", example_hw=hw)
        import onnx

        ops.append([n.op_type for n in onnx.load(str(path)).graph.node])
    assert ops[0] == ops[1], "the traced graph depends on the example size"
    # and one more mixer adds a bounded number of nodes
    deeper = DVMSR(preset("litesr_student", **{**TINY, "blocks_per_group": 2}))
    per_mixer = graph_stats(export_onnx(deeper, tmp_path / "deep.onnx"))["nodes"] - len(ops[0])
    print(f"\nONNX nodes: {len(ops[0])} with one mixer, +{per_mixer} per extra mixer")
    assert 300 < per_mixer < NODES_PER_MIXER


def test_fp16_graph_is_half_precision_inside_with_fp32_io(tmp_path):
    import onnx

    model = tiny_student(2)
    report = export(model, tmp_path, fp16=True, latency_sizes=(), tensorrt=False)
    m16 = onnx.load(str(tmp_path / ONNX_FP16_FILE))
    numel = {onnx.TensorProto.FLOAT: 0, onnx.TensorProto.FLOAT16: 0}
    for t in m16.graph.initializer:
        numel[t.data_type] = numel.get(t.data_type, 0) + int(np.prod(t.dims))
    # the weights are stored in fp16; only the scan's own parameters (A, D, Δ bias) stay fp32
    di, n = 2 * TINY["embed_dim"], model.cfg.d_state
    assert numel[onnx.TensorProto.FLOAT16] > 0.9 * model.param_count()
    assert numel[onnx.TensorProto.FLOAT] <= n_mixers(model) * di * (n + 2)
    io = [v.type.tensor_type.elem_type for v in (*m16.graph.input, *m16.graph.output)]
    assert io == [onnx.TensorProto.FLOAT] * 2
    fp32_err, fp16_err = report.max_abs_diff, max(v["max_abs_diff"] for v in report.parity_fp16.values())
    print(f"\nfp16 vs fp32 PyTorch: max |diff| {fp16_err:.2e} (fp32 graph: {fp32_err:.2e})")
    assert all(v["finite"] for v in report.parity_fp16.values())
    assert fp32_err < fp16_err <= PARITY_TOL_FP16  # really half precision, and still close
    assert report.tensorrt == {"built": False, "message": "not asked for (--no-tensorrt)"}


# ---- MLflow: --run-id, --best ---------------------------------------------------------------
def trial_run(uri: str, tmp_path, name: str, metrics: dict, seed: int = 0) -> str:
    run = TrialRun.start(tracking_uri=uri, experiment="exp-export", run_name=name,
                         artifact_root=tmp_path / "artifacts", tags={"role": "trial"})
    ckpt = save_checkpoint(tiny_student(seed), tmp_path / name / "student.pth")
    run.log_artifact(ckpt, "student")
    run.log_metrics(metrics)
    run.finish()
    return run.run_id


def test_export_run_id_logs_the_onnx_flavour_and_metrics_to_that_run(tmp_path):
    import mlflow.onnx

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    rid = trial_run(uri, tmp_path, "t0", {"val_psnr": 20.0})
    other = trial_run(uri, tmp_path, "t1", {"val_psnr": 21.0}, seed=1)
    res = cli("export", "--run-id", rid, "--tracking-uri", uri, "--out", tmp_path / "out",
              "--latency-sizes", "16", "--repeats", "1", "--fp16", "--json")
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout.strip().splitlines()[-1])
    assert report["source"]["run_id"] == rid and report["mlflow"]["run_id"] == rid

    run = TrialRun(uri, rid)
    paths = set(run.artifact_paths())
    assert {"onnx_model/MLmodel", "onnx_model/model.onnx", "export/export.json", "export/model_fp16.onnx"} <= paths
    m = run.data().metrics
    assert m["export_onnx_nodes"] == report["graph"]["nodes"]
    assert m["export_max_abs_diff"] <= 1e-4 and "export_fp16_max_abs_diff" in m
    assert m["export_ort_latency_16px_ms"] > 0 and m["export_torch_latency_16px_ms"] > 0
    assert run.data().tags["export_onnx_artifact"] == "onnx_model/model.onnx"
    assert not any(k.startswith("export_") for k in TrialRun(uri, other).data().metrics)  # only that run
    # the flavour loads as an ONNX model and runs
    local = run.client.download_artifacts(rid, "onnx_model", str(tmp_path / "dl"))
    loaded = mlflow.onnx.load_model(local)
    x = np.random.default_rng(0).random((1, 3, 12, 20), dtype=np.float32)
    y = run_session(ort_session(loaded.SerializeToString()), x)
    assert np.abs(y - torch_sr(tiny_student(0), x)).max() <= 1e-4


def test_best_picks_the_knee_of_the_front_and_skips_runs_missing_an_objective(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ids = {name: trial_run(uri, tmp_path, name, m, seed=i) for i, (name, m) in enumerate({
        "accurate": {"val_psnr": 30.0, "params": 100.0},
        "balanced": {"val_psnr": 29.8, "params": 60.0},   # the knee: near-best on both
        "small": {"val_psnr": 27.0, "params": 50.0},
        "dominated": {"val_psnr": 28.0, "params": 120.0},
        "no_params": {"val_psnr": 35.0},                  # best PSNR, but an objective is missing
    }.items())}
    src = load_source(best=True, tracking_uri=uri, experiment="exp-export", objectives="psnr:max,params:min")
    assert src.run_id == ids["balanced"]
    assert set(src.best["front"]) == {ids["accurate"], ids["balanced"], ids["small"]}
    assert src.best["values"] == {"val_psnr": 29.8, "params": 60.0}
    ref = tiny_student(1)  # "balanced" was saved from seed 1
    assert all(torch.equal(a, b) for a, b in zip(src.model.state_dict().values(), ref.state_dict().values()))


def test_cli_export_errors_are_clear(tmp_path):
    res = cli("export", "--out", tmp_path)
    assert res.exit_code == 2 and "exactly one of --run-id, --best, --checkpoint" in res.output
    res = cli("export", "--run-id", "abc", "--workdir", tmp_path / "nowhere", "--out", tmp_path)
    assert res.exit_code == 1 and "no MLflow store" in res.output
    assert not (tmp_path / "nowhere").exists()  # nothing created on the way


# ---- the official DVMSR checkpoint ----------------------------------------------------------
@pytest.fixture(scope="module")
def dvmsr_onnx(tmp_path_factory, shared_data):
    model = load_checkpoint(shared_data / "checkpoints" / "DVMSR.pth")
    path = export_onnx(model, tmp_path_factory.mktemp("dvmsr") / "dvmsr.onnx")
    return model, path, ort_session(path)


@pytest.mark.data
def test_dvmsr_checkpoint_export_parity_and_graph(dvmsr_onnx, shared_data):
    from srstudy.data import load_image

    model, path, sess = dvmsr_onnx
    lr = load_image(shared_data / SET5_LR)[40:64, 50:82]  # 24x32: keeps the check fast
    parity = check_parity(model, sess, real=("img_001x4.png", lr), random_hw=(20, 28))
    print(f"\nDVMSR ONNX vs PyTorch: {json.dumps(parity)}")
    assert all(v["finite"] and v["max_abs_diff"] <= 1e-4 for v in parity.values())
    g = graph_stats(path)
    print(f"DVMSR graph: {g['nodes']} nodes, {g['nodes_non_constant']} besides Constant")
    assert g["nodes"] < NODES_PER_MIXER * n_mixers(model) + 150 and not g["control_flow"]


@pytest.mark.data
def test_dvmsr_in_onnxruntime_scores_the_same_set5_psnr_as_pytorch(dvmsr_onnx, shared_data):
    from srstudy.measure.evaluate import evaluate_set, model_upscaler, open_sets

    model, _, sess = dvmsr_onnx
    (set5,) = open_sets(shared_data / "benchmarks", ["Set5"], scale=4)
    onnx_res = evaluate_set(onnx_upscaler(sess), set5)
    torch_res = evaluate_set(model_upscaler(model.set_scan_backend("chunked"), scale=4, device=torch.device("cpu")),
                             set5)
    print(f"\nSet5 PSNR: onnxruntime {onnx_res['psnr']:.4f} dB ({onnx_res['seconds']:.1f} s), "
          f"PyTorch {torch_res['psnr']:.4f} dB ({torch_res['seconds']:.1f} s)")
    assert onnx_res["n"] == torch_res["n"] == 5
    assert abs(onnx_res["psnr"] - torch_res["psnr"]) <= 0.01
    assert abs(onnx_res["psnr"] - 32.215) <= 0.01  # the published-number reproduction (README)
    per_image = [abs(onnx_res["per_image"][k]["psnr"] - v["psnr"]) for k, v in torch_res["per_image"].items()]
    assert max(per_image) <= 0.01

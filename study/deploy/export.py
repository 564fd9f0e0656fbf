"""Export a DVMSR / MambaLiteSR network to ONNX (and TensorRT where present), check it
against PyTorch, and log it to the trial's MLflow run.

    model = load_source(run_id=…) | load_source(best=True, workdir=…) | load_source(checkpoint=…)
    report = export(model.model, out_dir, fp16=True)      # model.onnx (+ model_fp16.onnx, engine)
    log_export(report, tracking_uri, run_id)              # onnx_model/ (mlflow.onnx), export/…

The graph:

* TorchScript exporter (`dynamo=False`), opset 17, input `lr` (batch, 3, height, width) →
  output `sr` (batch, 3, s·height, s·width), every spatial size dynamic. The selective scan is
  the `chunked` backend (`models/scan.py`): standard ONNX ops only (no Loop/Scan/If, no
  custom domain), a fixed-size tree over chunks, so the node count does not depend on the
  image size (about 570 nodes per Mamba mixer; DVMSR: 4,545 in all, 2,730 besides Constant).
* Checked in onnxruntime (CPU provider) against PyTorch on a random image and a real one,
  both at sizes other than the traced one: max |ONNX − PyTorch| ≤ 1e-4 in fp32, or
  `ParityError` (the files and `export.json` are still written, to look at).
* `fp16=True` adds `model_fp16.onnx`: the network traced in half precision with fp32 input
  and output. The selective scan still computes in fp32 inside (its cumulative log-decays
  overflow fp16: a plain float→float16 graph conversion, e.g. onnxruntime's
  `convert_float_to_float16`, gives NaN on DVMSR), the same split as mamba_ssm's kernel.
  Checked against fp32 PyTorch with tolerance 5e-2 (DVMSR: ~0.015 max, ~3e-4 mean).
* TensorRT: when `import tensorrt` works, an engine for this machine's GPU (an engine only
  runs on the GPU model and TensorRT version it was built with; `srstudy bench` builds its
  own on the Jetson). Otherwise `report.tensorrt["message"]` says why, and export succeeds.

MLflow: the fp32 graph is logged in the `mlflow.onnx` flavour as the run's artifact
directory `onnx_model/` (`mlflow.onnx.load_model("runs:/<id>/onnx_model")` and
`mlflow.pyfunc.load_model` both work), written with `mlflow.onnx.save_model` +
`MlflowClient.log_artifacts`: `mlflow.onnx.log_model` also works with MLflow 3.17 + onnx 1.23,
but it needs the process-global fluent run (`mlflow.start_run`) that srstudy never uses and
stores the model as a separate LoggedModel (`models:/m-…`) rather than in the run's
artifacts, where `srstudy bench --run-id` looks for it. `export.json`, `model_fp16.onnx` and
an engine go to `export/`.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import logging
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..measure.timing import device_sync, time_ms
from ..workdir import StudyDir, missing_store

log = logging.getLogger("srstudy.export")

ONNX_OPSET = 17
INPUT_NAME, OUTPUT_NAME = "lr", "sr"
EXPORT_EXAMPLE_HW = (32, 32)  # the traced size; checks run at other sizes
RANDOM_CHECK_HW = (37, 53)
REAL_CHECK_HW = (48, 64)  # crop of the real image (LR pixels)
PARITY_TOL_FP32 = 1e-4
PARITY_TOL_FP16 = 5e-2
ONNX_FILE, ONNX_FP16_FILE, REPORT_FILE = "model.onnx", "model_fp16.onnx", "export.json"
MLFLOW_MODEL_DIR = "onnx_model"  # mlflow.onnx flavour, in the run's artifacts
EXPORT_ARTIFACT_DIR = "export"
STUDENT_ARTIFACT = "student/student.pth"
CONTROL_FLOW_OPS = ("Loop", "Scan", "If")

Say = Callable[[str], None]


class ExportError(RuntimeError):
    """Export could not be done; the message says what to change."""


class ParityError(ExportError):
    """The ONNX graph disagrees with PyTorch beyond the tolerance."""


# ---- the graph ------------------------------------------------------------------------------
class _HalfNetwork(torch.nn.Module):
    """fp32 in/out, fp16 inside (the selective scan upcasts to fp32 on its own)."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net.half()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.half()).float()


def _export_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A CPU fp32 eval copy with the exportable scan (the caller's model is not touched)."""
    net = copy.deepcopy(model).cpu().float().eval()
    if hasattr(net, "set_scan_backend"):
        net.set_scan_backend("chunked")
    return net


@contextlib.contextmanager
def _quiet_export():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", UserWarning)
        yield


def export_onnx(model: torch.nn.Module, path: str | Path, *, fp16: bool = False,
                example_hw: tuple[int, int] = EXPORT_EXAMPLE_HW, opset: int = ONNX_OPSET) -> Path:
    """Write `model` as ONNX (dynamic batch/height/width, the `chunked` scan) and check it
    with `onnx.checker`. fp16: half-precision weights and activations, fp32 I/O."""
    import onnx

    if opset < 17:
        raise ValueError(f"opset must be >= 17 (LayerNormalization), got {opset}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    net = _export_copy(model)
    if fp16:
        net = _HalfNetwork(net).eval()
    x = torch.rand(1, 3, *example_hw, generator=torch.Generator().manual_seed(0))
    tmp = path.with_suffix(path.suffix + ".tmp")
    with _quiet_export(), torch.no_grad():
        torch.onnx.export(
            net, (x,), str(tmp), dynamo=False, opset_version=opset,
            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch", 2: "height", 3: "width"},
                          OUTPUT_NAME: {0: "batch", 2: "sr_height", 3: "sr_width"}},
        )
    onnx.checker.check_model(str(tmp))
    tmp.replace(path)
    return path


def graph_stats(model: Any) -> dict[str, Any]:
    """Node counts of an ONNX model (path, bytes or ModelProto): `nodes`,
    `nodes_non_constant`, `op_counts`, `control_flow` (Loop/Scan/If present), `custom_domains`,
    `opset`."""
    import onnx

    if isinstance(model, (str, Path)):
        model = onnx.load(str(model))
    elif isinstance(model, (bytes, bytearray)):
        model = onnx.load_from_string(bytes(model))
    ops: dict[str, int] = {}
    for n in model.graph.node:
        ops[n.op_type] = ops.get(n.op_type, 0) + 1
    domains = sorted({n.domain for n in model.graph.node if n.domain not in ("", "ai.onnx")})
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=None)
    return {
        "nodes": len(model.graph.node),
        "nodes_non_constant": len(model.graph.node) - ops.get("Constant", 0),
        "op_counts": dict(sorted(ops.items(), key=lambda kv: -kv[1])),
        "control_flow": sorted(set(CONTROL_FLOW_OPS) & set(ops)),
        "custom_domains": domains,
        "opset": opset,
    }


# ---- onnxruntime ------------------------------------------------------------------------------
GPU_PROVIDERS = ("CUDAExecutionProvider", "ROCMExecutionProvider")


def best_providers(available: Sequence[str] | None = None) -> list[str]:
    """onnxruntime providers to ask for, best first: CUDA (or ROCm) when the build has it, then
    CPU. (TensorRT runs natively through `tensorrt`, not through onnxruntime's TensorRT EP.)"""
    import onnxruntime as ort

    available = list(available if available is not None else ort.get_available_providers())
    return [p for p in GPU_PROVIDERS if p in available] + ["CPUExecutionProvider"]


def ort_session(model: str | Path | bytes, providers: Sequence[str] | None = None):
    """An onnxruntime session (CPU provider unless `providers` says otherwise); warnings off."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    src = str(model) if isinstance(model, Path) else model
    try:
        return ort.InferenceSession(src, opts, providers=list(providers or ["CPUExecutionProvider"]))
    except Exception as e:  # onnxruntime's own classes (InvalidProtobuf, InvalidGraph, Fail, ...)
        if not type(e).__module__.startswith("onnxruntime"):
            raise
        where = model if isinstance(model, (str, Path)) else f"of {len(model)} bytes"
        raise ValueError(f"onnxruntime cannot load the ONNX graph {where}: {type(e).__name__}: {e}") from None


def read_onnx(path: str | Path) -> bytes:
    """The bytes of an ONNX file the user named, checked (`onnx.checker`) before use, so a
    wrong file is refused here naming it, not by a runtime's parser on another node."""
    import onnx

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p} is a folder, not an ONNX file" if p.is_dir() else f"ONNX file not found: {p}")
    data = p.read_bytes()
    try:
        onnx.checker.check_model(onnx.load_model_from_string(data))
    except Exception as e:  # noqa: BLE001 - protobuf's DecodeError, onnx's ValidationError
        reason = (str(e).strip().splitlines() or [""])[0]
        raise ValueError(f"{p} is not a valid ONNX model ({type(e).__name__}: {reason}); give a graph "
                         "written by `srstudy export` (its model.onnx)") from None
    return data


def run_session(session, x: np.ndarray) -> np.ndarray:
    """`sr` for an `lr` batch (float32 (B, 3, h, w) in [0, 1])."""
    return session.run(None, {session.get_inputs()[0].name: np.ascontiguousarray(x, dtype=np.float32)})[0]


def onnx_upscaler(session) -> Callable[[np.ndarray], np.ndarray]:
    """An upscaler for `srstudy.measure.evaluate` (uint8 LR H×W×3 → float64 HR in [0, 1]), the ONNX
    twin of `evaluate.model_upscaler` (same conversion, same clipping)."""

    def up(lr: np.ndarray) -> np.ndarray:
        x = np.asarray(lr, dtype=np.uint8).transpose(2, 0, 1)[None].astype(np.float32) / 255.0
        return np.clip(run_session(session, x)[0], 0.0, 1.0).transpose(1, 2, 0).astype(np.float64)

    return up


# ---- checks ----------------------------------------------------------------------------------
def parity_image(path: str | Path | None = None, *, scale: int = 4,
                 crop: tuple[int, int] | None = REAL_CHECK_HW) -> tuple[str, np.ndarray]:
    """A real LR image (uint8 H×W×3) for the parity check: the file at `path` (taken as an LR
    image), else scikit-image's astronaut downscaled ×`scale` with MATLAB bicubic; centre-
    cropped to `crop` (None: whole)."""
    from ..data import bundled_images, load_image, make_lr

    if path is not None:
        name, lr = Path(path).name, load_image(path)
    else:
        name, hr = bundled_images()[0]
        lr = make_lr(hr, scale)
    if crop is not None:
        h, w = lr.shape[:2]
        ch, cw = min(crop[0], h), min(crop[1], w)
        top, left = (h - ch) // 2, (w - cw) // 2
        lr = lr[top: top + ch, left: left + cw]
    return name, np.ascontiguousarray(lr)


def _to_batch(lr: np.ndarray) -> np.ndarray:
    return np.asarray(lr, dtype=np.uint8).transpose(2, 0, 1)[None].astype(np.float32) / 255.0


@torch.no_grad()
def compare(model: torch.nn.Module, session, x: np.ndarray) -> dict[str, Any]:
    """max/mean |ONNX − PyTorch| on one batch (PyTorch: fp32 on the CPU, chunked scan)."""
    net = _export_copy(model)
    ref = net(torch.from_numpy(x)).numpy()
    out = run_session(session, x)
    if out.shape != ref.shape:
        raise ParityError(f"ONNX output {out.shape} vs PyTorch {ref.shape} for input {x.shape}")
    diff = np.abs(out.astype(np.float64) - ref)
    return {"input": list(x.shape), "max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean()),
            "finite": bool(np.isfinite(out).all())}


def check_parity(model: torch.nn.Module, session, *, real: tuple[str, np.ndarray],
                 random_hw: tuple[int, int] = RANDOM_CHECK_HW, seed: int = 0) -> dict[str, Any]:
    """Compare on a random image and on `real` (name, uint8 LR image)."""
    x = np.random.default_rng(seed).random((1, 3, *random_hw), dtype=np.float32)
    name, lr = real
    return {"random": compare(model, session, x), "real": {"image": name, **compare(model, session, _to_batch(lr))}}


def _worst(parity: dict[str, Any]) -> float:
    vals = [v["max_abs_diff"] if v["finite"] else float("inf") for v in parity.values()]
    return max(vals)


# ---- latency (timed by measure.timing.time_ms) -------------------------------------------------
@torch.no_grad()
def compare_latency(model: torch.nn.Module, session, *, sizes: Sequence[int] = (64, 256), repeats: int = 5,
                    warmup: int = 1, device: str | torch.device = "cpu") -> list[dict[str, Any]]:
    """Median batch-1 latency (ms) of the ONNX graph in `session` and of PyTorch on `device`
    (the scan backend PyTorch picks there: chunked on CPU, mamba_ssm's kernel where present)
    at LR size×size, same random input, same machine."""
    from srstudy.models.scan import resolve_backend

    device = torch.device(device)
    net = copy.deepcopy(model).to(device).float().eval()
    if hasattr(net, "set_scan_backend"):
        net.set_scan_backend(None)
    sync = device_sync(device)
    rows = []
    for s in sizes:
        x = np.random.default_rng(s).random((1, 3, s, s), dtype=np.float32)
        xt = torch.from_numpy(x).to(device)
        ort_ms = time_ms(lambda: run_session(session, x), repeats=repeats, warmup=warmup)
        pt_ms = time_ms(lambda: net(xt), repeats=repeats, warmup=warmup, sync=sync)
        rows.append({"lr": f"{s}x{s}", "size": s, "onnxruntime_ms": statistics.median(ort_ms),
                     "pytorch_ms": statistics.median(pt_ms), "onnxruntime_provider": session.get_providers()[0],
                     "pytorch_device": str(device), "pytorch_scan_backend": resolve_backend(None, device),
                     "repeats": repeats, "warmup": warmup})
    return rows


# ---- TensorRT ----------------------------------------------------------------------------------
TENSORRT_HINT = ("On a Jetson, TensorRT comes with JetPack (apt install python3-libnvinfer; a virtualenv needs "
                 "--system-site-packages); on an x86 NVIDIA machine: pip install 'srstudy[edge]'")


def tensorrt_status() -> tuple[bool, str]:
    """(importable, message): the TensorRT version, or why there is none and how to get it."""
    try:
        import tensorrt as trt
    except ImportError as e:
        return False, f"TensorRT is not installed here ({e}); no engine was built, the ONNX file is complete on its own. {TENSORRT_HINT}"
    except Exception as e:  # noqa: BLE001 - a broken install (missing libnvinfer.so, ...)
        return False, f"TensorRT is installed but cannot be imported ({type(e).__name__}: {e}); no engine was built"
    return True, f"TensorRT {trt.__version__}"


def build_tensorrt_engine(onnx_model: str | Path | bytes, *, fp16: bool = False,
                          min_hw: tuple[int, int] = (8, 8), opt_hw: tuple[int, int] = (64, 64),
                          max_hw: tuple[int, int] = (256, 256), workspace_bytes: int = 2 << 30) -> bytes:
    """A serialized TensorRT engine (batch 1, LR sizes from `min_hw` to `max_hw`) for this
    machine's GPU. fp32: TF32 off. fp16 (give the fp16 ONNX): a strongly typed network where
    TensorRT has it (>= 9), so the scan's fp32 casts are kept; TensorRT 8.x: FP16 with the
    layers the graph types fp32 pinned to fp32. Raises ExportError (parser messages) on a
    graph TensorRT cannot take."""
    ok, message = tensorrt_status()
    if not ok:
        raise ExportError(message)
    import tensorrt as trt

    data = Path(onnx_model).read_bytes() if isinstance(onnx_model, (str, Path)) else bytes(onnx_model)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flag = trt.NetworkDefinitionCreationFlag
    flags = 0
    if int(trt.__version__.split(".")[0]) < 10:
        flags |= 1 << int(flag.EXPLICIT_BATCH)
    strongly_typed = fp16 and hasattr(flag, "STRONGLY_TYPED")
    if strongly_typed:
        flags |= 1 << int(flag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(data):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise ExportError("TensorRT could not parse the ONNX graph: " + "; ".join(errors[:5]))
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    if not fp16 and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)
    if fp16 and not strongly_typed:
        config.set_flag(trt.BuilderFlag.FP16)
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        for i in range(network.num_layers):
            layer = network.get_layer(i)
            outs = [layer.get_output(j) for j in range(layer.num_outputs)]
            if outs and all(o.dtype == trt.float32 for o in outs):
                layer.precision = trt.float32
                for j in range(layer.num_outputs):
                    layer.set_output_type(j, trt.float32)
    profile = builder.create_optimization_profile()
    name = network.get_input(0).name
    profile.set_shape(name, (1, 3, *min_hw), (1, 3, *opt_hw), (1, 3, *max_hw))
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError("TensorRT could not build an engine from the graph (see its log above)")
    return bytes(serialized)


# ---- where the network comes from --------------------------------------------------------------
@dataclass
class ModelSource:
    """A network to export, and the MLflow run it belongs to (None for a bare checkpoint)."""

    model: torch.nn.Module
    description: str
    run_id: str | None = None
    tracking_uri: str | None = None
    checkpoint: str | None = None
    best: dict[str, Any] | None = None  # how --best chose the run

    def to_dict(self) -> dict[str, Any]:
        return {"description": self.description, "run_id": self.run_id, "tracking_uri": self.tracking_uri,
                "checkpoint": self.checkpoint, "best": self.best,
                "config": self.model.cfg.to_dict() if hasattr(self.model, "cfg") else None,
                "params": int(sum(p.numel() for p in self.model.parameters()))}


def _get_run(tracking_uri: str, run_id: str):
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    missing = missing_store(tracking_uri)
    if missing:
        raise ExportError(f"{missing}; pass the study's --workdir, or --tracking-uri URI")
    client = MlflowClient(tracking_uri=tracking_uri)
    try:
        return client, client.get_run(run_id)
    except MlflowException as e:
        raise ExportError(f"no MLflow run {run_id!r} at {tracking_uri} ({e.error_code}); check the id "
                          "(`srstudy pareto` lists them) and --workdir/--tracking-uri") from None


def download_artifact(tracking_uri: str, run_id: str, path: str, dst: str | Path) -> Path | None:
    """The run's artifact `path`, downloaded under `dst`; None when the run has no such file."""
    from mlflow.exceptions import MlflowException

    client, _ = _get_run(tracking_uri, run_id)
    try:
        local = Path(client.download_artifacts(run_id, path, str(dst)))
    except (MlflowException, OSError):
        return None
    return local if local.is_file() else None


def student_checkpoint(tracking_uri: str, run_id: str, dst: str | Path) -> Path:
    """The trial's student checkpoint: its artifact `student/student.pth`, else the file in
    the trial folder the run's `trial_dir` tag names."""
    _, run = _get_run(tracking_uri, run_id)
    local = download_artifact(tracking_uri, run_id, STUDENT_ARTIFACT, dst)
    if local is not None:
        return local
    trial_dir = run.data.tags.get("trial_dir")
    if trial_dir and (Path(trial_dir) / "artifacts" / "student.pth").is_file():
        return Path(trial_dir) / "artifacts" / "student.pth"
    raise ExportError(f"MLflow run {run_id} has no student checkpoint (artifact {STUDENT_ARTIFACT}, or "
                      f"<trial_dir>/artifacts/student.pth; tags: role={run.data.tags.get('role')!r}, "
                      f"trial_dir={trial_dir!r}); is it a finished trial run?")


def load_source(*, run_id: str | None = None, best: bool = False, checkpoint: str | Path | None = None,
                workdir: str | Path | None = None, tracking_uri: str | None = None, experiment: str | None = None,
                objectives: str | Sequence[str] | None = None, say: Say = log.info) -> ModelSource:
    """The network named by exactly one of `run_id` (a trial's MLflow run), `best` (the
    Pareto-best trial of the study in `workdir` / at `tracking_uri`) or `checkpoint` (a .pth:
    srstudy's, or the official DVMSR BasicSR file)."""
    from srstudy.models.dvmsr import load_checkpoint

    if sum([run_id is not None, bool(best), checkpoint is not None]) != 1:
        raise ExportError("give exactly one of --run-id ID, --best or --checkpoint PATH")
    if checkpoint is not None:
        return ModelSource(load_checkpoint(checkpoint), f"checkpoint {checkpoint}", checkpoint=str(checkpoint))
    chosen = None
    if best:
        from srstudy.analysis.select import best_run

        chosen = best_run(workdir=workdir, tracking_uri=tracking_uri, experiment=experiment,
                          objectives=objectives, say=say)
        run_id, tracking_uri = chosen.run_id, chosen.tracking_uri
        say(f"Pareto-best run (knee over {', '.join(chosen.objectives)}): {run_id} "
            + ", ".join(f"{k}={v:.5g}" for k, v in chosen.values.items()))
    tracking_uri = tracking_uri or StudyDir(workdir).tracking_uri
    with tempfile.TemporaryDirectory(prefix="srstudy-export-") as tmp:
        path = student_checkpoint(tracking_uri, run_id, tmp)
        model = load_checkpoint(path)
    return ModelSource(model, f"MLflow run {run_id}", run_id=run_id, tracking_uri=tracking_uri,
                       checkpoint=STUDENT_ARTIFACT, best=chosen.to_dict() if chosen else None)


def onnx_for_run(tracking_uri: str, run_id: str, *, fp16: bool = False, say: Say = log.info) -> bytes:
    """The ONNX graph of a trial run: the one `srstudy export` logged (`onnx_model/model.onnx`,
    or `export/model_fp16.onnx`), else exported now from its student checkpoint."""
    want = f"{EXPORT_ARTIFACT_DIR}/{ONNX_FP16_FILE}" if fp16 else f"{MLFLOW_MODEL_DIR}/model.onnx"
    with tempfile.TemporaryDirectory(prefix="srstudy-onnx-") as tmp:
        local = download_artifact(tracking_uri, run_id, want, tmp)
        if local is not None:
            return local.read_bytes()
        say(f"run {run_id} has no exported graph ({want}); exporting its student now (run `srstudy export "
            f"--run-id {run_id}` to check and keep it)")
        from srstudy.models.dvmsr import load_checkpoint

        model = load_checkpoint(student_checkpoint(tracking_uri, run_id, tmp))
        return export_onnx(model, Path(tmp) / "model.onnx", fp16=fp16).read_bytes()


# ---- the whole export ------------------------------------------------------------------------
@dataclass
class ExportReport:
    out_dir: str
    onnx: str
    graph: dict[str, Any]
    parity: dict[str, Any]
    tolerance: float
    onnx_fp16: str | None = None
    graph_fp16: dict[str, Any] | None = None
    parity_fp16: dict[str, Any] | None = None
    tolerance_fp16: float | None = None
    latency: list[dict[str, Any]] = field(default_factory=list)
    tensorrt: dict[str, Any] = field(default_factory=dict)
    source: dict[str, Any] | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    mlflow: dict[str, Any] | None = None

    @property
    def max_abs_diff(self) -> float:
        return _worst(self.parity)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def write(self) -> Path:
        path = Path(self.out_dir) / REPORT_FILE
        path.write_text(json.dumps(self.to_dict(), indent=1))
        return path

    def metrics(self) -> dict[str, float]:
        """What goes to the trial's MLflow run (names carry units; absent when not measured)."""
        out = {"export_onnx_nodes": float(self.graph["nodes"]), "export_max_abs_diff": self.max_abs_diff}
        if self.parity_fp16 is not None:
            out["export_fp16_max_abs_diff"] = _worst(self.parity_fp16)
        for row in self.latency:
            out[f"export_ort_latency_{row['size']}px_ms"] = row["onnxruntime_ms"]
            out[f"export_torch_latency_{row['size']}px_ms"] = row["pytorch_ms"]
        return out


def _versions() -> dict[str, str]:
    import onnx
    import onnxruntime as ort

    return {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": ort.__version__}


def export(model: torch.nn.Module, out_dir: str | Path, *, fp16: bool = False, image: str | Path | None = None,
           tolerance: float = PARITY_TOL_FP32, tolerance_fp16: float = PARITY_TOL_FP16,
           latency_sizes: Sequence[int] = (64, 256), latency_repeats: int = 5, latency_warmup: int = 1,
           latency_device: str | torch.device = "cpu", tensorrt: bool = True,
           trt_max_hw: tuple[int, int] = (256, 256), source: ModelSource | None = None,
           say: Say = log.info) -> ExportReport:
    """Export `model` into `out_dir` (`model.onnx`, `export.json`; `model_fp16.onnx` and a
    TensorRT engine when asked for / possible), check it, time it; see the module docstring.
    Raises ParityError (after writing `export.json`) when ONNX and PyTorch disagree."""
    out = Path(out_dir).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    scale = getattr(getattr(model, "cfg", None), "scale", 4)
    seconds: dict[str, float] = {}

    t0 = time.perf_counter()
    path = export_onnx(model, out / ONNX_FILE)
    seconds["export"] = time.perf_counter() - t0
    stats = graph_stats(path)
    say(f"{path}: {stats['nodes']} nodes ({stats['nodes_non_constant']} besides Constant), opset {stats['opset']}")
    if stats["control_flow"] or stats["custom_domains"]:
        raise ExportError(f"the graph holds {stats['control_flow']} / custom ops {stats['custom_domains']}: "
                          "the exportable `chunked` scan was not used")
    real = parity_image(image, scale=scale)
    session = ort_session(path)
    t0 = time.perf_counter()
    parity = check_parity(model, session, real=real)
    seconds["parity"] = time.perf_counter() - t0
    report = ExportReport(str(out), str(path), stats, parity, tolerance, source=source.to_dict() if source else None,
                          seconds=seconds, versions=_versions())
    say(f"ONNX vs PyTorch, fp32: random {parity['random']['input']}: max |diff| {parity['random']['max_abs_diff']:.2e}; "
        f"{parity['real']['image']} {parity['real']['input']}: {parity['real']['max_abs_diff']:.2e}")

    if fp16:
        t0 = time.perf_counter()
        p16 = export_onnx(model, out / ONNX_FP16_FILE, fp16=True)
        report.onnx_fp16, report.graph_fp16 = str(p16), graph_stats(p16)
        report.parity_fp16 = check_parity(model, ort_session(p16), real=real)
        report.tolerance_fp16 = tolerance_fp16
        seconds["export_fp16"] = time.perf_counter() - t0
        say(f"{p16}: fp16 vs fp32 PyTorch: max |diff| {_worst(report.parity_fp16):.2e}")

    bad = [f"fp32 max |diff| {report.max_abs_diff:.3g} > {tolerance:g}"] if report.max_abs_diff > tolerance else []
    if report.parity_fp16 is not None and _worst(report.parity_fp16) > tolerance_fp16:
        bad.append(f"fp16 max |diff| {_worst(report.parity_fp16):.3g} > {tolerance_fp16:g}")
    if bad:
        report.write()
        raise ParityError(f"the ONNX graph disagrees with PyTorch: {'; '.join(bad)} (details in {out / REPORT_FILE})")

    if latency_sizes:
        t0 = time.perf_counter()
        lat_session = ort_session(path, best_providers())
        report.latency = compare_latency(model, lat_session, sizes=latency_sizes, repeats=latency_repeats,
                                         warmup=latency_warmup, device=latency_device)
        seconds["latency"] = time.perf_counter() - t0
        for row in report.latency:
            say(f"LR {row['lr']}: onnxruntime ({row['onnxruntime_provider']}) {row['onnxruntime_ms']:.1f} ms, "
                f"PyTorch ({row['pytorch_device']}, {row['pytorch_scan_backend']}) {row['pytorch_ms']:.1f} ms")

    report.tensorrt = _tensorrt_engine(report, fp16=fp16, wanted=tensorrt, max_hw=trt_max_hw, say=say)
    report.write()
    return report


def _tensorrt_engine(report: ExportReport, *, fp16: bool, wanted: bool, max_hw, say: Say) -> dict[str, Any]:
    if not wanted:
        return {"built": False, "message": "not asked for (--no-tensorrt)"}
    ok, message = tensorrt_status()
    if not ok:
        say(message)
        return {"built": False, "message": message}
    src = report.onnx_fp16 if fp16 else report.onnx
    engine = Path(report.out_dir) / ("model_fp16.engine" if fp16 else "model.engine")
    t0 = time.perf_counter()
    try:
        engine.write_bytes(build_tensorrt_engine(src, fp16=fp16, max_hw=max_hw))
    except Exception as e:  # noqa: BLE001 - no GPU, parser/builder refusal: reported, not fatal
        say(f"{message}: no engine ({e})")
        return {"built": False, "message": f"{message}: engine build failed: {e}"}
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    say(f"{engine}: TensorRT engine ({'fp16' if fp16 else 'fp32'}) for {gpu or 'this GPU'}")
    return {"built": True, "engine": str(engine), "precision": "fp16" if fp16 else "fp32", "message": message,
            "gpu": gpu, "seconds": time.perf_counter() - t0, "max_lr_hw": list(max_hw)}


def log_export(report: ExportReport, tracking_uri: str, run_id: str) -> list[str]:
    """Log the export to the trial's MLflow run: `onnx_model/` (mlflow.onnx flavour of
    model.onnx), `export/export.json`, `export/model_fp16.onnx` and any engine; metrics
    `export_*`; tags. Returns the artifact paths written."""
    import mlflow.onnx
    import onnx
    import onnxruntime as ort

    from ..tracking import TrialRun

    run = TrialRun(tracking_uri, run_id)
    logged = []
    with tempfile.TemporaryDirectory(prefix="srstudy-mlflow-onnx-") as tmp:
        flavour = Path(tmp) / MLFLOW_MODEL_DIR
        mlflow.onnx.save_model(onnx.load(report.onnx), str(flavour), save_as_external_data=False,
                               pip_requirements=[f"onnx=={onnx.__version__}", f"onnxruntime=={ort.__version__}"],
                               metadata={"srstudy_input": INPUT_NAME, "srstudy_output": OUTPUT_NAME})
        run.client.log_artifacts(run_id, str(flavour), MLFLOW_MODEL_DIR)
        logged.append(f"{MLFLOW_MODEL_DIR}/")
    report.mlflow = {"run_id": run_id, "tracking_uri": tracking_uri,
                     "artifacts": logged + [f"{EXPORT_ARTIFACT_DIR}/{REPORT_FILE}"]}
    extra = [p for p in (report.onnx_fp16, report.tensorrt.get("engine")) if p]
    report.mlflow["artifacts"] += [f"{EXPORT_ARTIFACT_DIR}/{Path(p).name}" for p in extra]
    report.write()
    for p in [Path(report.out_dir) / REPORT_FILE, *map(Path, extra)]:
        run.log_artifact(p, EXPORT_ARTIFACT_DIR)
    run.log_metrics(report.metrics())
    run.set_tags({"export_onnx_artifact": f"{MLFLOW_MODEL_DIR}/model.onnx", "export_opset": report.graph["opset"],
                  "export_tensorrt": report.tensorrt.get("message")})
    return report.mlflow["artifacts"]

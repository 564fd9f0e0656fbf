"""Export a DVMSR / MambaLiteSR network to ONNX (and TensorRT where present), check it
against PyTorch, and log it to the trial's MLflow run.

    model = load_source(run_id=…) | load_source(best=True, workdir=…) | load_source(checkpoint=…)
    report = export(model.model, out_dir, fp16=True)      # model.onnx (+ model_fp16.onnx, engine)
    log_export(report, tracking_uri, run_id)              # onnx_model/ (mlflow.onnx), export/…

(`load_source`: `deploy.sources`; the graph itself: `deploy.onnx`; the runtimes: `deploy.runtime`.)

* The graph (`deploy.onnx.export_onnx`): opset 17, dynamic sizes, the `chunked` scan, no
  Loop/Scan/If and no custom ops (checked here: `ExportError` otherwise).
* Checked in onnxruntime (CPU provider) against PyTorch on a random image and a real one,
  both at sizes other than the traced one: max |ONNX − PyTorch| ≤ 1e-4 in fp32, or
  `ParityError` (the files and `export.json` are still written, to look at).
* `fp16=True` adds `model_fp16.onnx` (fp16 inside, the scan in fp32, fp32 I/O), checked
  against fp32 PyTorch with tolerance 5e-2 (DVMSR: ~0.015 max, ~3e-4 mean).
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

import copy
import dataclasses
import json
import logging
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..measure.timing import device_sync, time_ms
from .onnx import (INPUT_NAME, ONNX_FILE, ONNX_FP16_FILE, OUTPUT_NAME, ExportError, export_onnx, exportable_copy,
                   graph_stats)
from .runtime import best_providers, build_tensorrt_engine, ort_session, run_session, tensorrt_status
from .sources import EXPORT_ARTIFACT_DIR, MLFLOW_MODEL_DIR, ModelSource

log = logging.getLogger(__name__)

RANDOM_CHECK_HW = (37, 53)
REAL_CHECK_HW = (48, 64)  # crop of the real image (LR pixels)
PARITY_TOL_FP32 = 1e-4
PARITY_TOL_FP16 = 5e-2
REPORT_FILE = "export.json"

Say = Callable[[str], None]


class ParityError(ExportError):
    """The ONNX graph disagrees with PyTorch beyond the tolerance."""


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
    net = exportable_copy(model)
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


def export_source(src: ModelSource, out_dir: str | Path, *, log_run: bool = True, say: Say = log.info,
                  **options: Any) -> ExportReport:
    """`export(src.model, out_dir, **options)` and, when the network is a trial's (an MLflow
    run) and `log_run`, `log_export` to that run: what `srstudy export` does."""
    report = export(src.model, out_dir, source=src, say=say, **options)
    if log_run and src.run_id:
        logged = log_export(report, src.tracking_uri, src.run_id)
        say(f"logged to MLflow run {src.run_id}: {', '.join(logged)}")
    return report

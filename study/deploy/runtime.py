"""Which runtime runs an exported graph: onnxruntime (sessions, providers) or TensorRT
(status, engine build, engine cache, a runner), and the one choice between them.

* onnxruntime: `ort_session` (CPU provider unless told otherwise), `best_providers`
  (CUDA or ROCm when the build has it, then CPU), `run_session`, `onnx_upscaler`.
* TensorRT: when `import tensorrt` works (`tensorrt_status` says why not, and how to get it).
  An engine only runs on the GPU model and TensorRT version it was built with, so
  `srstudy export` builds one for this machine and `srstudy bench` builds its own where it
  runs, cached under `~/.cache/srstudy/tensorrt` (`engine_bytes`).
* `open_runner(runtime="auto" | "tensorrt" | "onnxruntime")`: TensorRT when importable
  there, else onnxruntime with the best provider; names the runtime and provider used.
"""
from __future__ import annotations

import hashlib
import os
import platform
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..measure.tegrastats import read_text
from .onnx import ExportError

GPU_PROVIDERS = ("CUDAExecutionProvider", "ROCMExecutionProvider")
RUNTIMES = ("auto", "tensorrt", "onnxruntime")
DEFAULT_ENGINE_CACHE = "~/.cache/srstudy/tensorrt"
TENSORRT_HINT = ("On a Jetson, TensorRT comes with JetPack (apt install python3-libnvinfer; a virtualenv needs "
                 "--system-site-packages); on an x86 NVIDIA machine: pip install 'srstudy[edge]'")

Say = Callable[[str], None]


# ---- device names (a Jetson's: measure.tegrastats.jetson_model) ---------------------------------
def cpu_name() -> str:
    """This machine's CPU model and core count, for reports."""
    info = read_text("/proc/cpuinfo") or ""
    m = re.search(r"^model name\s*:\s*(.+)$", info, re.M)
    name = m.group(1).strip() if m else (platform.processor() or platform.machine() or "CPU")
    return f"{name} ({os.cpu_count()} cores)"


def gpu_name() -> str:
    """The first CUDA device's name (torch's), else "NVIDIA GPU"."""
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
    except Exception:  # noqa: BLE001
        pass
    return "NVIDIA GPU"


# ---- onnxruntime ------------------------------------------------------------------------------
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


# ---- TensorRT ----------------------------------------------------------------------------------
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


def engine_bytes(onnx_model: bytes, *, fp16: bool, size: int, cache: str | None, say: Say) -> bytes:
    """A TensorRT engine for `onnx_model` on this GPU (LR up to max(size, 256)), from the
    cache folder `cache` when one was built before (keyed by graph, precision, TensorRT
    version and GPU name), else built now and cached."""
    import tensorrt as trt

    max_side = max(size, 256)
    key = hashlib.sha256(onnx_model).hexdigest()[:16]
    slug = re.sub(r"[^A-Za-z0-9]+", "-", gpu_name()).strip("-")
    name = f"{key}-{'fp16' if fp16 else 'fp32'}-max{max_side}-trt{trt.__version__}-{slug}.engine"
    path = Path(cache).expanduser() / name if cache else None
    if path is not None and path.is_file():
        say(f"TensorRT engine from the cache: {path}")
        return path.read_bytes()
    say("building a TensorRT engine from the ONNX graph (minutes on a Jetson; cached afterwards)")
    engine = build_tensorrt_engine(onnx_model, fp16=fp16, opt_hw=(size, size), max_hw=(max_side, max_side))
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(engine)
        tmp.replace(path)
    return engine


class TensorRTRunner:
    """A deserialized engine with fixed-shape CUDA buffers (torch tensors) on its own stream."""

    def __init__(self, engine_bytes: bytes, shape: tuple[int, ...]) -> None:
        import tensorrt as trt
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError("TensorRT is importable but torch sees no CUDA device (needed for the buffers)")
        self._logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self._logger)
        self.engine = self.runtime.deserialize_cuda_engine(engine_bytes)
        if self.engine is None:
            raise RuntimeError("TensorRT could not deserialize the engine (built by another TensorRT version?)")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inp = next(n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        out = next(n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT)
        self.context.set_input_shape(inp, tuple(shape))
        out_shape = tuple(self.context.get_tensor_shape(out))
        self.x = torch.empty(shape, dtype=torch.float32, device="cuda")
        self.y = torch.empty(out_shape, dtype=torch.float32, device="cuda")
        self.host_y = torch.empty(out_shape, dtype=torch.float32).pin_memory()
        self.context.set_tensor_address(inp, self.x.data_ptr())
        self.context.set_tensor_address(out, self.y.data_ptr())
        self.stream = torch.cuda.Stream()
        self._torch = torch

    def __call__(self, x: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.cuda.stream(self.stream):
            self.x.copy_(torch.from_numpy(x))
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise RuntimeError("TensorRT execute_async_v3 failed")
            self.host_y.copy_(self.y, non_blocking=True)
        self.stream.synchronize()
        return self.host_y.numpy()


# ---- the choice ---------------------------------------------------------------------------------
def open_runner(onnx_model: bytes, *, runtime: str, providers: Sequence[str] | None, fp16: bool, size: int,
                engine_cache: str | None, notes: list[str], say: Say) -> tuple[Callable[[np.ndarray], Any], str, str, bool]:
    """(infer, runtime, provider, runs_on_gpu) for batch-1 LR size×size inputs. `runtime`
    "auto": TensorRT when importable here (a failure is noted in `notes` and onnxruntime used);
    "tensorrt": TensorRT or an error; "onnxruntime": `providers` or the best ones."""
    if runtime in ("auto", "tensorrt"):
        ok, message = tensorrt_status()
        if ok:
            try:
                infer = TensorRTRunner(engine_bytes(onnx_model, fp16=fp16, size=size, cache=engine_cache, say=say),
                                       (1, 3, size, size))
                return infer, "tensorrt", message, True
            except Exception as e:  # noqa: BLE001 - fall back to onnxruntime under "auto"
                if runtime == "tensorrt":
                    raise
                notes.append(f"TensorRT failed, onnxruntime used instead: {type(e).__name__}: {e}")
        elif runtime == "tensorrt":
            raise RuntimeError(message)
        else:
            notes.append(message.split(";")[0])
    session = ort_session(onnx_model, list(providers) if providers else best_providers())
    provider = session.get_providers()[0]
    return (lambda x: run_session(session, x)), "onnxruntime", provider, provider != "CPUExecutionProvider"

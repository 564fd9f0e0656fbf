"""The ONNX graph of a DVMSR / MambaLiteSR network: writing it, counting it, reading one back.

* TorchScript exporter (`dynamo=False`), opset 17, input `lr` (batch, 3, height, width) →
  output `sr` (batch, 3, s·height, s·width), every spatial size dynamic. The selective scan is
  the `chunked` backend (`models/scan.py`): standard ONNX ops only (no Loop/Scan/If, no
  custom domain), a fixed-size tree over chunks, so the node count does not depend on the
  image size (about 570 nodes per Mamba mixer; DVMSR: 4,545 in all, 2,730 besides Constant).
* `fp16=True` (`model_fp16.onnx`): the network traced in half precision with fp32 input
  and output. The selective scan still computes in fp32 inside (its cumulative log-decays
  overflow fp16: a plain float→float16 graph conversion, e.g. onnxruntime's
  `convert_float_to_float16`, gives NaN on DVMSR), the same split as mamba_ssm's kernel.

Checking a graph against PyTorch is `deploy.export`; running it is `deploy.runtime`.
"""
from __future__ import annotations

import contextlib
import copy
import warnings
from pathlib import Path
from typing import Any

import torch

ONNX_OPSET = 17
INPUT_NAME, OUTPUT_NAME = "lr", "sr"
EXPORT_EXAMPLE_HW = (32, 32)  # the traced size; checks run at other sizes
ONNX_FILE, ONNX_FP16_FILE = "model.onnx", "model_fp16.onnx"
CONTROL_FLOW_OPS = ("Loop", "Scan", "If")


class ExportError(RuntimeError):
    """Export could not be done; the message says what to change."""


class _HalfNetwork(torch.nn.Module):
    """fp32 in/out, fp16 inside (the selective scan upcasts to fp32 on its own)."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net.half()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.half()).float()


def exportable_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A CPU fp32 eval copy with the exportable scan (the caller's model is not touched):
    what is traced, and the PyTorch side of the parity check."""
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
    net = exportable_copy(model)
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

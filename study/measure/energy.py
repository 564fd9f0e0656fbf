"""Energy of a training trial, measured on the GPU the trial actually runs on.

Use it as a context manager around the trial::

    meter = energy_meter(device=device)          # NVML, tegrastats or a null meter
    with meter:
        train(...)
    log_metrics(meter.result.metrics(iterations=n_iter)); set_tags(meter.result.tags())

Rules:

* A metric that was not measured is ABSENT from :meth:`EnergyResult.metrics` (never 0);
  ``result.reason`` / the ``energy_unavailable_reason`` tag say why.
* NVIDIA GPUs: :mod:`srstudy.measure.nvml` (energy counter or integrated power, idle baseline
  once per process per GPU, the GPU matched to the torch device by UUID).
* Jetson: :mod:`srstudy.measure.tegrastats` (the module's total input rail, not the GPU alone).
* What they share: :mod:`srstudy.measure.meter` (result, meter base, null meter, integration).

This module picks the meter (:func:`energy_meter`) and re-exports the public names of the
three, so ``from srstudy.measure.energy import EnergyResult, energy_meter`` is all a caller needs.
"""

from __future__ import annotations

import shutil
from typing import Sequence

import torch

from .meter import EnergyMeterBase, EnergyResult, NullEnergyMeter, integrate_trace
from .nvml import (NvmlApi, NvmlEnergyMeter, gpu_compute_processes, nvml_failure, nvml_index_for_uuid,
                   pick_power_reader)
from .tegrastats import TegrastatsMeter, on_jetson, parse_tegrastats_line

__all__ = [
    "EnergyResult",
    "EnergyMeterBase",
    "NullEnergyMeter",
    "NvmlApi",
    "NvmlEnergyMeter",
    "TegrastatsMeter",
    "energy_meter",
    "gpu_compute_processes",
    "integrate_trace",
    "nvml_index_for_uuid",
    "parse_tegrastats_line",
    "pick_power_reader",
]


def energy_meter(*, device: torch.device | str | None, sample_hz: float = 10.0, idle_baseline_s: float = 2.0,
                 backend: str = "auto", tegrastats_cmd: Sequence[str] | str = "tegrastats") -> EnergyMeterBase:
    """The right energy meter for a trial running on ``device``.

    ``backend="auto"``: a CUDA device on a Jetson → :class:`TegrastatsMeter`; a CUDA device
    with working NVML → :class:`NvmlEnergyMeter`; anything else → :class:`NullEnergyMeter`
    with the reason. ``"tegrastats"`` / ``"nvml"`` force one (``"nvml"`` raises if impossible),
    ``"none"`` disables measuring.
    """
    if backend not in ("auto", "nvml", "tegrastats", "none"):
        raise ValueError(f"backend must be 'auto', 'nvml', 'tegrastats' or 'none', got {backend!r}")
    if backend == "none":
        return NullEnergyMeter("energy measurement disabled (backend='none')")
    if backend == "tegrastats":
        cmd = [tegrastats_cmd] if isinstance(tegrastats_cmd, str) else list(tegrastats_cmd)
        if shutil.which(cmd[0]) is None:
            return NullEnergyMeter(f"tegrastats not found (not a Jetson?): {cmd[0]!r} is not on PATH")
        return TegrastatsMeter(command=cmd, sample_hz=sample_hz, idle_baseline_s=idle_baseline_s, device=device)

    reason = _nvml_unavailable(device)
    if reason is None and backend == "auto" and on_jetson():
        return energy_meter(device=device, sample_hz=sample_hz, idle_baseline_s=idle_baseline_s,
                            backend="tegrastats", tegrastats_cmd=tegrastats_cmd)
    if reason is None:
        try:
            return NvmlEnergyMeter.for_device(device, sample_hz=sample_hz, idle_baseline_s=idle_baseline_s)
        except Exception as err:  # noqa: BLE001 - ImportError, LookupError, pynvml.NVMLError and friends
            reason = nvml_failure(err)
    if backend == "nvml":
        raise RuntimeError(f"NVML energy meter requested but unavailable: {reason}")
    return NullEnergyMeter(reason)


def _nvml_unavailable(device: torch.device | str | None) -> str | None:
    """Why ``device`` can't be an NVML-measured CUDA device (None if it can)."""
    if device is None:
        return "no device given (pass the trial's torch device)"
    device = torch.device(device)
    if device.type != "cuda":
        return f"no CUDA device (trial runs on {device.type})"
    if not torch.cuda.is_available():
        return "CUDA device requested but torch.cuda.is_available() is False"
    return None

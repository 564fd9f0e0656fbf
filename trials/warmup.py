"""Compile the GPU kernels of a trial's step while its data loads.

On a machine whose Triton cache is cold, the first training iteration of the recipe student
took 8.6 s on an H200 (`benchmarks/results/profile_trial_loop_h200.json`, `first_ms`): the
scan, conv1d + SiLU and LayerNorm kernels compiled one after the other, after the 12.9 s of
setup (images decoded and downscaled, MLflow run, energy baseline) in which the GPU idled.
`KernelWarmup` runs one forward + backward of a copy of the student on a zero batch of the
training shape and precision, and one batch-1 forward in eval mode (validation's kernels), in
a thread while the setup goes on; the trial joins it before its first iteration. The copy
keeps the real student, its optimiser and the random streams untouched, so the training is
the same with or without it. A failure is logged (the first step then compiles as before).
"""
from __future__ import annotations

import copy
import logging
import threading
import time

import torch

log = logging.getLogger("srstudy.trial")


class KernelWarmup:
    """One warm-up step of `model` in a background thread (CUDA only: elsewhere nothing runs)."""

    def __init__(self, model: torch.nn.Module, *, batch_size: int, patch_size: int, precision: str,
                 device: torch.device) -> None:
        self.seconds: float | None = None
        self.error: str | None = None
        self._thread = None
        if device.type != "cuda":
            return
        twin = copy.deepcopy(model)
        self._thread = threading.Thread(target=self._run, args=(twin, batch_size, patch_size, precision, device),
                                        name="srstudy-kernel-warmup", daemon=True)
        self._thread.start()

    def _run(self, twin: torch.nn.Module, batch_size: int, patch_size: int, precision: str,
             device: torch.device) -> None:
        from .loop import autocast

        t0 = time.perf_counter()
        try:
            x = torch.zeros(batch_size, 3, patch_size, patch_size, device=device)
            twin.train()
            with autocast(device, precision):
                loss = twin(x).float().abs().mean()
            loss.backward()
            twin.eval()
            with torch.no_grad():
                twin(x[:1])
            torch.cuda.synchronize(device)
        except Exception as e:  # noqa: BLE001 — the first real step compiles what this did not
            self.error = f"{type(e).__name__}: {e}"
        finally:
            del twin
        self.seconds = time.perf_counter() - t0

    def join(self) -> dict[str, str]:
        """Wait for the warm-up; its outcome as MLflow tags (`kernel_warmup`)."""
        if self._thread is None:
            return {"kernel_warmup": "none (not a CUDA trial)"}
        self._thread.join()
        if self.error:
            log.warning("kernel warm-up failed (%s); the first training step compiles the kernels", self.error)
            return {"kernel_warmup": f"failed: {self.error}"[:500]}
        return {"kernel_warmup": f"{self.seconds:.1f} s in a thread during setup"}

"""A simulated GPU for every srstudy process of one Ray node in a test cluster (CPU tests).

A node started by `support.ray_cluster.local_cluster` with ``sim_gpu=<state file>`` runs its
Python processes with ``SRSTUDY_SIM_GPU`` set and ``support/sim_node`` on PYTHONPATH, whose
``sitecustomize`` calls :func:`install`. Once srstudy's modules are imported there:

* ``StudyEnergySession.for_node`` opens a session over the node's simulated GPU (what NVML
  would give on a real GPU node), or returns ``SRSTUDY_SIM_NVML_UNAVAILABLE``'s text as the
  reason NVML cannot serve the node;
* ``srstudy.trials.gpu_energy.open_session`` opens the trial's ``TrialEnergySession`` over that
  GPU (the trial's torch device stays the CPU), and the trial's process is on the GPU's
  compute-process list (SM 50 %, +80 W) from just before it registers until just after its
  registration ends, as a CUDA context would be.

The patch is applied when the module is first imported (a meta-path hook), so processes that
never import srstudy (Ray's agents) pay nothing.
"""
from __future__ import annotations

import importlib.abc
import importlib.util
import os
import sys

PATCHES = {"srstudy.measure.study_session": "_patch_study_session", "srstudy.trials.gpu_energy": "_patch_gpu_energy"}
UNAVAILABLE_ENV = "SRSTUDY_SIM_NVML_UNAVAILABLE"


def _sim():
    from support.simulated_nvml import SimulatedNvml

    return SimulatedNvml(os.environ["SRSTUDY_SIM_GPU"])


def _patch_study_session(module) -> None:
    cls = module.StudyEnergySession

    def for_node(workdir, **kwargs):
        if os.environ.get(UNAVAILABLE_ENV):
            return os.environ[UNAVAILABLE_ENV]
        return cls(workdir, _sim(), **kwargs)

    cls.for_node = staticmethod(for_node)


def _patch_gpu_energy(module) -> None:
    from srstudy.measure.trial_session import TrialEnergySession

    class OnSimulatedGpu(TrialEnergySession):
        def __enter__(self):
            self.api.add_process(os.getpid(), sm=50.0, active_w=80.0)
            return super().__enter__()

        def __exit__(self, *exc):
            try:
                super().__exit__(*exc)
            finally:
                self.api.remove_process(os.getpid())

    def open_session(device, workdir, trial, cfg):
        from support.simulated_nvml import HANDLE

        return OnSimulatedGpu(workdir, trial, _sim(), HANDLE, start_iteration=0, total_iterations=cfg.iterations,
                              settings=module.window_settings(cfg), pids=[os.getpid()])

    module.open_session = open_session


class _PatchOnImport(importlib.abc.MetaPathFinder):
    """Finds the patched modules through the rest of sys.meta_path, then patches them once executed."""

    def find_spec(self, name, path, target=None):
        if name not in PATCHES:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return spec
        loader_exec = spec.loader.exec_module

        def exec_module(module):
            loader_exec(module)
            globals()[PATCHES[name]](module)

        spec.loader.exec_module = exec_module
        return spec


def install() -> None:
    """Patch srstudy's NVML seams in this process when they are imported (see the module docstring)."""
    if not any(isinstance(f, _PatchOnImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _PatchOnImport())

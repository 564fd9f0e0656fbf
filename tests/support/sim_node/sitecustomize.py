"""Test-only: Python processes of a Ray node started with this folder on PYTHONPATH (see
`support.ray_cluster.local_cluster`'s per-node `sim_gpu`) see that node's simulated GPU.
Does nothing unless SRSTUDY_SIM_GPU is set; imports only the standard library here."""
import os

if os.environ.get("SRSTUDY_SIM_GPU"):
    from support.sim_gpu_node import install

    install()

"""Batches cut on the device (`trials/device_batches.py`) are the host's batches, bit for bit."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from srstudy.config import load_trial_config
from srstudy.data import PatchDataset
from srstudy.trials.batches import make_bank_batch, make_batch
from srstudy.trials.device_batches import DeviceBatches, choose_batch_crops
from srstudy.trials.distill import run_trial
from srstudy.trials.loop import CHECKPOINT_NAME
from tiny import TINY_TRIAL, with_overrides, write_yaml


def _dataset(seed: int = 0) -> PatchDataset:
    rng = np.random.default_rng(seed)
    images = {f"im{i}": rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
              for i, (h, w) in enumerate([(40, 52), (33, 64), (48, 48), (61, 37)])}  # varied sizes, odd sides
    return PatchDataset(images, scale=4, lr_patch=8, patches_per_image=3, seed=seed)


def test_device_batches_are_the_host_batches_for_every_flip_and_epoch():
    ds = _dataset()
    cutter = DeviceBatches(ds, torch.device("cpu"))
    flips = set()
    for it in range(12):  # batch 5 over 12 patches: several epochs, batches across epoch ends
        crops = cutter.crops(5, it, seed=3)
        got, want = cutter.gather(crops), make_batch(ds, 5, it, seed=3)
        assert got.lr.dtype == torch.uint8 and got.lr.shape == want.lr.shape == (5, 8, 8, 3)
        assert torch.equal(got.lr, want.lr) and torch.equal(got.hr, want.hr), it
        flips |= {tuple(r[3:]) for r in crops.crops.tolist()}
    assert len(flips) == 8  # every dihedral transform was checked


def test_device_batches_from_a_teacher_bank_are_the_host_ones():
    ds = _dataset(1)
    targets = np.random.default_rng(2).standard_normal((20, 3, 32, 32)).astype(np.float16)
    cutter = DeviceBatches(ds, torch.device("cpu"))
    for it in range(6):
        got = cutter.gather(cutter.crops(4, it, seed=5, bank_targets=targets))
        want = make_bank_batch(ds, targets, 4, it, seed=5)
        assert torch.equal(got.lr, want.lr) and torch.equal(got.hr, want.hr)
        assert torch.equal(got.teacher_sr, want.teacher_sr)


def test_auto_cuts_on_the_host_of_a_cpu_trial_and_an_explicit_choice_is_kept():
    ds = _dataset()
    assert choose_batch_crops("auto", ds, torch.device("cpu"))[0] == "host"
    assert choose_batch_crops("device", ds, torch.device("cpu")) == ("device", "batch_crops=device")


@pytest.mark.parametrize("prefetch", [0, 2])
def test_a_trial_with_device_batches_trains_the_same_student_as_with_host_batches(tmp_path, prefetch):
    states = {}
    for where in ("host", "device"):
        cfg = load_trial_config(write_yaml(tmp_path / f"{where}.yaml", with_overrides(TINY_TRIAL, {
            "alpha": 0.0, "iterations": 3, "val_interval": 3, "checkpoint_interval": 3, "batch_crops": where,
            "prefetch_batches": prefetch})))
        assert cfg.identity() == load_trial_config(write_yaml(tmp_path / "h.yaml", with_overrides(TINY_TRIAL, {
            "alpha": 0.0, "iterations": 3, "val_interval": 3, "checkpoint_interval": 3}))).identity()
        result = run_trial(cfg, workdir=tmp_path / where)
        states[where] = torch.load(result.trial_dir / CHECKPOINT_NAME, weights_only=True)["model"]
        from mlflow import MlflowClient

        run = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / where / 'mlflow.db'}").get_run(result.run_id)
        assert run.data.tags["batch_crops"] == where
    for key, value in states["host"].items():
        assert torch.equal(states["device"][key], value), key


@pytest.mark.cuda
def test_on_cuda_the_pinned_prefetched_device_batches_are_the_host_batches():
    """The CUDA path as a trial runs it: crops drawn and pinned by the prefetch thread, copied
    without blocking, cut on the GPU — equal to the host's batches, and `auto` picks it."""
    from srstudy.trials.loop import LoopSpec, _batch_source
    import contextlib

    ds, cuda = _dataset(), torch.device("cuda")
    assert choose_batch_crops("auto", ds, cuda)[0] == "device"
    spec = LoopSpec(iterations=8, batch_size=5, base_lr=1e-3, milestones=[], seed=3, batch_crops="device", prefetch=2)
    with contextlib.ExitStack() as stack:
        batch_of = _batch_source(ds, spec, cuda, start=0, stack=stack)
        for it in range(8):
            got, want = batch_of(it), make_batch(ds, 5, it, seed=3)
            assert got.lr.is_cuda and torch.equal(got.lr.cpu(), want.lr) and torch.equal(got.hr.cpu(), want.hr)

"""A bare `srstudy trial` runs the embedded default trial, and a trial or teacher whose training
step cannot fit the device's memory is refused before any training (issue 12)."""
from __future__ import annotations

import torch
from typer.testing import CliRunner

from srstudy.cli import app
from srstudy.config import ArchConfig, load_study_config, load_trial_config
from srstudy.models.dvmsr import DVMSR
from srstudy.trials.memory import (check_fits, measured_saved_bytes, saved_activation_bytes, student_estimate,
                                   teacher_estimate)
from tiny import TINY_TRIAL, write_yaml

CPU = torch.device("cpu")


def test_no_config_is_the_default_studys_base_trial_and_it_fits():
    cfg = load_trial_config(None)
    assert cfg == load_study_config(None).trial  # not the GPU-sized recipe of the field defaults
    assert cfg.device == "cpu" and cfg.batch_size <= 8 and cfg.iterations <= 100
    for est in (student_estimate(cfg, backend="chunked", device_type="cpu"),
                teacher_estimate(cfg, backend="chunked")):
        assert 0 < est.total_bytes < 2**30
        check_fits(est, CPU)  # passes on any machine that can run the suite


def test_a_step_too_large_for_memory_is_refused_before_any_training(tmp_path):
    workdir = tmp_path / "runs"
    cfg = write_yaml(tmp_path / "t.yaml", TINY_TRIAL)
    res = CliRunner().invoke(app, ["trial", "--config", str(cfg), "--workdir", str(workdir),
                                   "--set", "batch_size=64", "--set", "patch_size=1024"])
    assert res.exit_code == 2, res.output
    out = " ".join(res.output.split())
    assert "the student's training" in out and "needs an estimated" in out and "GiB" in out and "free" in out
    assert "batch_size (64)" in out and "patch_size (1024" in out and "student.embed_dim (8)" in out
    assert "student.n_groups × student.blocks_per_group" in out
    assert not list(workdir.glob("teachers/*/*.pth")) and not list(workdir.glob("trials/*/*.pth"))

    res = CliRunner().invoke(app, ["teacher", "--config", str(cfg), "--workdir", str(workdir),
                                   "--set", "patch_size=1024", "--set", "teacher.batch_size=64"])
    assert res.exit_code == 2, res.output
    out = " ".join(res.output.split())
    assert "the teacher's training needs an estimated" in out and "teacher.batch_size (64)" in out
    assert "teacher.arch.embed_dim (8)" in out
    assert not list(workdir.glob("teachers/*/*.pth"))


def test_the_saved_activation_estimate_matches_what_autograd_saves():
    """The analytic count against the tensors autograd really keeps (unique storages) in one
    training forward; a change to the network that moves it must move the estimate too."""
    for C, G, K, B, P in ((16, 2, 1, 2, 24), (24, 1, 2, 1, 32)):
        arch = ArchConfig(embed_dim=C, n_groups=G, blocks_per_group=K, rank=2)
        model = DVMSR(arch.to_model_config(4)).set_scan_backend("chunked")
        measured = measured_saved_bytes(model, torch.rand(B, 3, P, P))
        estimated = saved_activation_bytes(arch, batch_size=B, patch_size=P, scale=4, backend="chunked")
        assert abs(estimated / measured - 1) < 0.05, (C, G, K, B, P, estimated, measured)

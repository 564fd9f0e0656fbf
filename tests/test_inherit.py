"""A student that starts from its teacher's weights (`srstudy.models.inherit`, `student_init: teacher`)."""
from __future__ import annotations

import pytest
import torch
from mlflow import MlflowClient

from srstudy.config import ConfigError, load_trial_config
from srstudy.models.dvmsr import DVMSR, DVMSRConfig
from srstudy.models.inherit import inherit_from_teacher, inheritance_problem
from srstudy.trials.distill import run_trial
from srstudy.trials.loop import CHECKPOINT_NAME
from tiny import TINY_TRIAL, with_overrides, write_yaml

TEACHER = DVMSRConfig(embed_dim=12, n_groups=3, blocks_per_group=2, rank=4)


def _teacher(cfg: DVMSRConfig = TEACHER, seed: int = 0) -> DVMSR:
    torch.manual_seed(seed)
    net = DVMSR(cfg)
    with torch.no_grad():  # weights away from DVMSR's init, so copies and factors can be told apart
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net.eval()


def test_a_student_of_the_teachers_architecture_becomes_the_teacher():
    teacher = _teacher()
    student = DVMSR(TEACHER)
    inh = inherit_from_teacher(student, teacher)
    x = torch.rand(1, 3, 6, 7)
    with torch.no_grad():
        torch.testing.assert_close(student.eval()(x), teacher(x), rtol=1e-4, atol=1e-5)
    assert inh.groups == (0, 1, 2) and inh.blocks == (0, 1)
    assert inh.delta_energy_kept == pytest.approx(1.0)


def test_a_shallower_lower_rank_student_keeps_the_first_layers_and_the_best_rank_r_maps():
    teacher = _teacher()
    cfg = DVMSRConfig(embed_dim=12, n_groups=2, blocks_per_group=1, rank=2, lowrank_proj=True)
    student = DVMSR(cfg)
    inh = inherit_from_teacher(student, teacher)
    s, t = student.state_dict(), teacher.state_dict()
    for key in ("conv_first.weight", "upsample.0.weight", "norm_f.bias", "layers.1.conv.weight",
                "layers.1.residual_group.blocks.0.mixer.A_log", "layers.0.residual_group.blocks.0.norm.weight"):
        assert torch.equal(s[key], t[key]), key
    m = "layers.1.residual_group.blocks.0.mixer."
    # the Δ path dt_proj·x_proj_Δ : the best rank-2 approximation of the teacher's (Eckart–Young)
    M = t[m + "dt_proj.weight"] @ t[m + "x_proj.weight"][:4]
    sv = torch.linalg.svdvals(M.double())
    approx = s[m + "dt_proj.weight"] @ s[m + "x_proj.weight"][:2]
    assert torch.linalg.matrix_norm((M - approx).double()) == pytest.approx(float(sv[2:].norm()), rel=1e-4)
    torch.testing.assert_close(s[m + "x_proj.weight"][2:], t[m + "x_proj.weight"][4:])  # B and C rows kept
    W = t[m + "in_proj.weight"]
    approx = s[m + "in_proj.up.weight"] @ s[m + "in_proj.down.weight"]
    sv = torch.linalg.svdvals(W.double())
    assert torch.linalg.matrix_norm((W - approx).double()) == pytest.approx(float(sv[2:].norm()), rel=1e-4)
    assert 0 < inh.delta_energy_kept < 1 and 0 < inh.proj_energy_kept < 1
    assert inh.tags()["student_init_groups"] == "0,1"


def test_a_factored_teacher_gives_a_full_student_its_product():
    teacher = _teacher(DVMSRConfig(embed_dim=12, n_groups=1, blocks_per_group=1, rank=3, lowrank_proj=True))
    student = DVMSR(DVMSRConfig(embed_dim=12, n_groups=1, blocks_per_group=1, rank=3))
    inherit_from_teacher(student, teacher)
    m = "layers.0.residual_group.blocks.0.mixer."
    t, s = teacher.state_dict(), student.state_dict()
    torch.testing.assert_close(s[m + "out_proj.weight"], t[m + "out_proj.up.weight"] @ t[m + "out_proj.down.weight"])


@pytest.mark.parametrize("change, field", [({"embed_dim": 8}, "student.embed_dim"),
                                            ({"n_groups": 4}, "student.n_groups"),
                                            ({"blocks_per_group": 3}, "student.blocks_per_group"),
                                            ({"d_state": 8}, "student.d_state")])
def test_a_student_that_cannot_inherit_is_refused_naming_the_field(change, field):
    cfg = DVMSRConfig(**{**dict(embed_dim=12, n_groups=1, blocks_per_group=1, rank=2), **change})
    assert field in inheritance_problem(cfg, TEACHER)
    with pytest.raises(ValueError, match=field):
        inherit_from_teacher(DVMSR(cfg), _teacher())


def test_the_trial_config_refuses_an_impossible_inheritance(tmp_path):
    path = write_yaml(tmp_path / "t.yaml", with_overrides(TINY_TRIAL, {"student_init": "teacher",
                                                                      "student.embed_dim": 4}))
    with pytest.raises(ConfigError, match="student_init.*student.embed_dim is 4 but the teacher's is 8"):
        load_trial_config(path)


def test_a_trial_with_student_init_teacher_starts_from_the_teachers_weights_even_at_alpha_0(tmp_path):
    # α = 0: no distillation, yet the teacher is trained (or found) for its weights
    cfg = load_trial_config(write_yaml(tmp_path / "t.yaml", with_overrides(TINY_TRIAL, {
        "student_init": "teacher", "alpha": 0.0, "iterations": 1, "val_interval": 1, "checkpoint_interval": 1,
        "optim.lr": 1e-12,  # one step that changes (almost) nothing: the checkpoint is the starting point
        "student.rank": 1})))
    workdir = tmp_path / "runs"
    result = run_trial(cfg, workdir=workdir)
    from srstudy.trials.teacher import get_teacher

    teacher = get_teacher(cfg, cache_dir=workdir / "teachers", device=torch.device("cpu"))
    assert teacher.source == "cache"  # the trial trained it
    expected = DVMSR(cfg.student.to_model_config(cfg.scale))
    inherit_from_teacher(expected, teacher.model)
    got = torch.load(result.trial_dir / CHECKPOINT_NAME, weights_only=True)["model"]
    for key, value in expected.state_dict().items():
        torch.testing.assert_close(got[key], value, rtol=1e-6, atol=1e-6, msg=key)
    run = MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}").get_run(result.run_id)
    assert run.data.tags["student_init"] == "teacher"
    assert run.data.tags["teacher_role"] == "its weights start the student"


def test_a_random_init_trial_says_so(tmp_path):
    cfg = load_trial_config(write_yaml(tmp_path / "t.yaml", with_overrides(TINY_TRIAL, {"alpha": 0.0, "iterations": 1,
                                                                                         "val_interval": 1})))
    result = run_trial(cfg, workdir=tmp_path / "runs")
    run = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}").get_run(result.run_id)
    assert run.data.tags["student_init"] == "random"
    assert run.data.tags["teacher_source"] == "none (alpha=0)"


def test_student_init_at_its_default_keeps_the_identities_folders_were_written_with():
    """Trial folders and study folders are found by identity hashes; a field added to the trial
    config must not change them while it holds its default, or an upgrade would orphan every
    trial folder and refuse every `--resume`. The hashes are those of srstudy before
    `student_init` existed (commit 53caa65) for the embedded default trial and study."""
    from srstudy.config import load_study_config

    assert load_trial_config(None).identity() == "6fa392ca49004323"
    assert load_study_config(None).identity() == "9a0e53a9918b6f2f"
    teacher_width = f"student.embed_dim={load_trial_config(None).teacher.arch.embed_dim}"
    inheriting = load_trial_config(None, ["student_init=teacher", teacher_width])
    assert inheriting.identity() != load_trial_config(None, [teacher_width]).identity()

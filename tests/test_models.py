"""The networks: exact sizes, presets, checkpoint loading and its errors."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from srstudy.models.dvmsr import (
    DVMSR,
    CheckpointError,
    DVMSRConfig,
    config_from_state_dict,
    load_checkpoint,
    preset,
    save_checkpoint,
)
from srstudy.models.mamba import LowRankLinear, MambaMixer, MixerConfig, mixer_param_count


def test_dvmsr_preset_has_exactly_424428_parameters():
    model = DVMSR(preset("dvmsr"))
    assert model.param_count() == 424_428
    assert preset("dvmsr").param_count() == 424_428


@pytest.mark.parametrize("name", ["dvmsr", "litesr_teacher", "litesr_student"])
@pytest.mark.parametrize("rank", [2, 4, 30])
@pytest.mark.parametrize("lowrank_proj", [False, True])
def test_analytic_param_count_matches_the_built_network(name, rank, lowrank_proj):
    cfg = preset(name, rank=rank, lowrank_proj=lowrank_proj)
    assert DVMSR(cfg).param_count() == cfg.param_count()


def test_presets_have_the_papers_shapes():
    t, s = preset("litesr_teacher"), preset("litesr_student")
    assert (t.embed_dim, t.n_groups, t.blocks_per_group) == (60, 8, 2)
    assert (s.embed_dim, s.n_groups, s.blocks_per_group, s.rank) == (32, 4, 2, 2)
    with pytest.raises(ValueError, match="unknown preset"):
        preset("nope")


def test_rank_shrinks_delta_path_and_lowrank_proj_shrinks_more():
    base = preset("litesr_student", rank=30).param_count()
    r2 = preset("litesr_student", rank=2).param_count()
    r2_lp = preset("litesr_student", rank=2, lowrank_proj=True).param_count()
    assert r2 < base and r2_lp < r2
    mixer = MambaMixer(MixerConfig(d_model=32, rank=2, lowrank_proj=True))
    assert isinstance(mixer.in_proj, LowRankLinear) and mixer.in_proj.rank == 2
    assert mixer.dt_proj.weight.shape == (64, 2)
    assert sum(p.numel() for p in mixer.parameters()) == mixer_param_count(mixer.cfg)


def test_flops_scale_with_pixels_and_are_positive():
    cfg = preset("dvmsr")
    assert cfg.flops(64, 64) > 0
    assert cfg.flops(128, 128) == 4 * cfg.flops(64, 64)
    assert cfg.flops(64, 64) == 2 * cfg.macs(64, 64)


def test_forward_shape_and_gradients():
    torch.manual_seed(0)
    model = DVMSR(preset("litesr_student", embed_dim=8, n_groups=1, blocks_per_group=1))
    x = torch.rand(2, 3, 6, 5)
    y = model(x)
    assert y.shape == (2, 3, 24, 20)
    y.mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("field,value", [("embed_dim", 0), ("n_groups", -1), ("scale", 1.5), ("rank", 0)])
def test_bad_config_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        DVMSRConfig(**{field: value})


def test_save_and_load_roundtrip(tmp_path):
    torch.manual_seed(0)
    cfg = preset("litesr_student", embed_dim=8, n_groups=2, blocks_per_group=1, lowrank_proj=True)
    model = DVMSR(cfg).eval()
    path = save_checkpoint(model, tmp_path / "m.pth", iteration=7)
    loaded = load_checkpoint(path)
    assert loaded.cfg == cfg
    x = torch.rand(1, 3, 5, 4)
    torch.testing.assert_close(loaded(x), model(x))
    assert torch.load(path, weights_only=True)["iteration"] == 7


def test_architecture_is_read_off_key_shapes(tmp_path):
    cfg = preset("litesr_student", embed_dim=16, n_groups=3, blocks_per_group=2, rank=3, lowrank_proj=True)
    sd = DVMSR(cfg).state_dict()
    assert config_from_state_dict(sd) == cfg
    torch.save({"params_ema": sd, "params": sd}, tmp_path / "basicsr.pth")
    assert load_checkpoint(tmp_path / "basicsr.pth").cfg == cfg


def test_wrong_checkpoint_names_missing_unexpected_and_mismatched_keys(tmp_path):
    sd = DVMSR(preset("litesr_student", embed_dim=8, n_groups=1, blocks_per_group=1)).state_dict()
    sd.pop("norm_f.weight")
    sd["extra.weight"] = torch.zeros(1)
    path = tmp_path / "bad.pth"
    torch.save(sd, path)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    msg = str(e.value)
    assert "norm_f.weight" in msg and "extra.weight" in msg and "bad.pth" in msg
    # right keys, wrong shapes: ask for another width
    sd = DVMSR(preset("litesr_student", embed_dim=8, n_groups=1, blocks_per_group=1)).state_dict()
    torch.save(sd, path)
    with pytest.raises(CheckpointError, match="mismatched shapes"):
        load_checkpoint(path, config=preset("litesr_student", embed_dim=12, n_groups=1, blocks_per_group=1))


def test_foreign_checkpoint_is_refused_clearly(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(CheckpointError, match="not a DVMSR"):
        load_checkpoint(path)
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_checkpoint(tmp_path / "junk.pth")


@pytest.mark.data
def test_official_dvmsr_checkpoint_loads_strictly(shared_data):
    path = shared_data / "checkpoints" / "DVMSR.pth"
    model = load_checkpoint(path)
    assert model.cfg == preset("dvmsr")
    assert model.param_count() == 424_428
    # it is params_ema that was taken, not params
    raw = torch.load(path, weights_only=True)
    own = model.state_dict()
    assert all(torch.equal(own[k], v) for k, v in raw["params_ema"].items())
    assert any(not torch.equal(own[k], v) for k, v in raw["params"].items())
    team07 = load_checkpoint(shared_data / "checkpoints" / "team07_DVMSR.pth")
    assert dataclasses.asdict(team07.cfg) == dataclasses.asdict(model.cfg)

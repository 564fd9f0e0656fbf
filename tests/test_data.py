"""Tests for srstudy.data (images, imresize, names, patches, benchmarks, bundled)."""

from __future__ import annotations

import logging
import socket
import time
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from srstudy.data import (
    BenchmarkSet,
    PatchDataset,
    bundled_images,
    default_split,
    list_images,
    load_image,
    make_lr,
    mod_crop,
    read_image,
)
from srstudy.data.imresize import imresize, resize_weights

SETS = ("Set5", "Set14", "BSD100")


def _rand_img(seed: int, h: int, w: int) -> np.ndarray:
    """Smooth-ish random uint8 (h, w, 3) image (random noise upscaled, so bicubic is meaningful)."""
    small = np.random.default_rng(seed).integers(0, 256, size=(h // 4 + 1, w // 4 + 1, 3), dtype=np.uint8)
    return imresize(small, 4)[:h, :w]


# ------------------------------------------------------------------------------------------------
# imresize


def test_imresize_shapes_dtypes_and_grey():
    img = _rand_img(0, 37, 50)
    assert imresize(img, 0.25).shape == (10, 13, 3)  # ceil(37/4), ceil(50/4)
    assert imresize(img, 0.25).dtype == np.uint8
    assert imresize(img[..., 0], 4).shape == (148, 200)
    out = imresize(img.astype(np.float64), 0.5)
    assert out.dtype == np.float64 and out.shape == (19, 25, 3)


def test_imresize_identity_constant_and_weights():
    img = _rand_img(1, 20, 24)
    np.testing.assert_array_equal(imresize(img, 1.0), img)
    const = np.full((16, 16), 77, np.uint8)
    np.testing.assert_array_equal(imresize(const, 0.25), 77)
    np.testing.assert_allclose(imresize(const.astype(float), 3), 77.0, atol=1e-12)
    w = resize_weights(16, 4, 0.25)
    assert w.shape == (4, 16)
    np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(w, w[::-1, ::-1], atol=1e-15)  # symmetric kernel, centred samples


def test_imresize_rounding_between_passes_matters():
    img = _rand_img(2, 64, 64)
    q = imresize(img, 0.25)  # uint8: rounds between passes
    f = np.floor(np.clip(imresize(img.astype(np.float64), 0.25), 0, 255) + 0.5).astype(np.uint8)
    assert np.abs(q.astype(int) - f).max() <= 1
    assert (q != f).any()
    np.testing.assert_array_equal(imresize(img, 0.25, round_between_passes=False), f)


def test_imresize_rejects_bad_input():
    with pytest.raises(ValueError, match="scale"):
        imresize(np.zeros((8, 8), np.uint8), 0)
    with pytest.raises(ValueError, match="shape"):
        imresize(np.zeros((2, 8, 8, 3), np.uint8), 0.5)
    with pytest.raises(ValueError, match="dtype"):
        imresize(np.zeros((8, 8), np.int32), 0.5)


@pytest.mark.data
@pytest.mark.parametrize("set_name", SETS)
def test_imresize_reproduces_shipped_lr(shared_data, set_name):
    """MATLAB bicubic (replicate border, uint8 between passes) == the shipped LR x4 files."""
    root = shared_data / "benchmarks" / set_name
    n_diff = n_total = max_diff = max_diff_sym = 0
    t_resize = 0.0
    for hr_file in list_images(root / "HR"):
        hr = load_image(hr_file)
        lr = load_image(root / "LR_bicubic" / "X4" / f"{hr_file.stem}x4.png")
        t0 = time.perf_counter()
        ours = imresize(hr, 0.25)
        t_resize += time.perf_counter() - t0
        d = np.abs(ours.astype(int) - lr)
        max_diff = max(max_diff, int(d.max()))
        n_diff += int((d > 0).sum())
        n_total += d.size
        if set_name == "Set5":
            sym = imresize(hr, 0.25, border="symmetric")
            max_diff_sym = max(max_diff_sym, int(np.abs(sym.astype(int) - lr).max()))
    assert max_diff <= 1
    assert n_diff / n_total < 1e-3
    if set_name == "Set5":
        assert max_diff_sym > 1  # newer MATLAB's mirrored border is *not* what made the files
    assert t_resize < 10.0  # vectorised: BSD100 takes ~1 s on 2 cores


# ------------------------------------------------------------------------------------------------
# reading images


def _save(path, arr):
    Image.fromarray(arr).save(path)
    return path


def test_load_grey_rgba_palette(tmp_path, caplog):
    grey = np.arange(48, dtype=np.uint8).reshape(6, 8)
    img, is_grey = read_image(_save(tmp_path / "g.png", grey))
    assert is_grey and img.shape == (6, 8, 3) and img.dtype == np.uint8
    for c in range(3):
        np.testing.assert_array_equal(img[..., c], grey)

    rgba = np.random.default_rng(0).integers(0, 256, (6, 8, 4), dtype=np.uint8)
    with caplog.at_level(logging.INFO, logger="srstudy.data"):
        img, is_grey = read_image(_save(tmp_path / "a.png", rgba))
    assert not is_grey
    np.testing.assert_array_equal(img, rgba[..., :3])
    assert "a.png" in caplog.text and "alpha" in caplog.text

    pal = Image.fromarray(rgba[..., :3]).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    pal.save(tmp_path / "p.png")
    img = load_image(tmp_path / "p.png")
    np.testing.assert_array_equal(img, np.asarray(pal.convert("RGB")))


def test_load_16bit_and_float(tmp_path):
    g16 = (np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000).astype(np.uint16)
    Image.fromarray(g16).save(tmp_path / "g16.png")
    img, is_grey = read_image(tmp_path / "g16.png")
    assert is_grey and img.dtype == np.uint8
    np.testing.assert_array_equal(img[..., 0], (g16 >> 8).astype(np.uint8))
    Image.fromarray(np.zeros((3, 4), np.float32)).save(tmp_path / "f.tif")
    with pytest.raises(ValueError, match="f.tif"):
        load_image(tmp_path / "f.tif")


def test_bad_files_name_themselves(tmp_path):
    (tmp_path / "fake.png").write_text("not an image")
    with pytest.raises(ValueError, match="fake.png"):
        load_image(tmp_path / "fake.png")
    with pytest.raises(FileNotFoundError, match="missing.png"):
        load_image(tmp_path / "missing.png")


def test_list_images(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="empty"):
        list_images(empty)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        list_images(tmp_path / "nowhere")
    d = tmp_path / "imgs"
    d.mkdir()
    _save(d / "b.png", _rand_img(0, 8, 8))
    _save(d / "a.JPG", _rand_img(1, 8, 8))
    (d / "notes.txt").write_text("ignored")
    (d / "sub").mkdir()
    assert [f.name for f in list_images(d)] == ["a.JPG", "b.png"]


# ------------------------------------------------------------------------------------------------
# PatchDataset


@pytest.fixture(scope="module")
def images():
    return [("big", _rand_img(10, 300, 270)), ("wide", _rand_img(11, 260, 400))]


def test_patch_dataset_shapes_and_len(images):
    ds = PatchDataset(images, scale=4, lr_patch=64, patches_per_image=3, seed=0)
    assert len(ds) == 6
    lr, hr = ds[5]
    assert lr.shape == (3, 64, 64) and hr.shape == (3, 256, 256)
    assert lr.dtype == torch.float32 and hr.dtype == torch.float32
    assert 0.0 <= float(lr.min()) and float(hr.max()) <= 1.0
    assert ds.hr[0].shape == (300, 268, 3)  # mod-cropped
    with pytest.raises(IndexError):
        ds[6]


def test_patch_dataset_determinism(images):
    a = PatchDataset(images, patches_per_image=4, seed=3)
    b = PatchDataset(images, patches_per_image=4, seed=3)
    for i in range(len(a)):
        for x, y in zip(a[i], b[i]):
            assert torch.equal(x, y)
    first = [a[i][1] for i in range(len(a))]
    a.set_epoch(1)
    assert not all(torch.equal(x, a[i][1]) for i, x in enumerate(first))
    a.set_epoch(0)
    assert all(torch.equal(x, a[i][1]) for i, x in enumerate(first))
    c = PatchDataset(images, patches_per_image=4, seed=4)
    assert not all(torch.equal(x, c[i][1]) for i, x in enumerate(first))


def test_patch_dataset_same_with_workers(images):
    ds = PatchDataset(images, patches_per_image=2, seed=1)
    ds.set_epoch(2)
    one = [b for b in DataLoader(ds, batch_size=2, num_workers=0)]
    two = [b for b in DataLoader(ds, batch_size=2, num_workers=2)]
    for (l1, h1), (l2, h2) in zip(one, two):
        assert torch.equal(l1, l2) and torch.equal(h1, h2)


def _to_u8(t: torch.Tensor) -> np.ndarray:
    return np.round(t.permute(1, 2, 0).numpy() * 255).astype(np.uint8)


@pytest.mark.parametrize("augment", [False, True])
def test_patch_dataset_lr_hr_aligned(images, augment):
    """Downscaling the HR patch gives the LR patch away from its borders (any flip / rotation)."""
    ds = PatchDataset(images, patches_per_image=8, seed=5, augment=augment)
    for i in range(len(ds)):
        lr, hr = (_to_u8(t) for t in ds[i])
        d = np.abs(imresize(hr, 0.25).astype(int) - lr)[2:-2, 2:-2]  # kernel reaches 2 LR px
        if augment:  # a transpose swaps MATLAB's pass order, which moves the uint8 rounding
            assert d.max() <= 4 and d.mean() < 0.25, f"item {i}: max {d.max()} mean {d.mean():.3f}"
        else:
            assert d.max() == 0, f"item {i}"


def test_patch_dataset_augments_identically():
    hr_img = _rand_img(7, 256, 256)  # exactly one patch: the crop is fixed, only the transform varies
    ds = PatchDataset([hr_img], patches_per_image=32, seed=0)
    lr_img = make_lr(hr_img, 4)
    seen = set()
    for i in range(len(ds)):
        lr, hr = (_to_u8(t) for t in ds[i])
        for k in range(8):  # find the dihedral transform applied to HR, LR must have the same one
            t = (lambda x: np.rot90(x, k % 4)) if k < 4 else (lambda x: np.rot90(x[:, ::-1], k % 4))
            if np.array_equal(hr, t(hr_img)):
                assert np.array_equal(lr, t(lr_img)), f"item {i}: LR/HR transforms differ"
                seen.add(k)
                break
        else:
            pytest.fail(f"item {i}: HR is not a flip/rotation of the image")
    assert len(seen) >= 5  # flips and 90-degree rotations do occur


def test_patch_dataset_skips_small_images_and_errors(tmp_path):
    tiny = _rand_img(0, 100, 300)
    with pytest.warns(UserWarning, match=r"tiny \(100x300\)"):
        ds = PatchDataset([("tiny", tiny), ("ok", _rand_img(1, 256, 260))], patches_per_image=2)
    assert ds.names == ["ok"] and len(ds) == 2
    with pytest.raises(ValueError, match=r"256x256.*tiny \(100x300\)"):
        PatchDataset([("tiny", tiny)])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="empty"):
        PatchDataset(empty)
    d = tmp_path / "bad"
    d.mkdir()
    _save(d / "good.png", _rand_img(2, 256, 256))
    (d / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(ValueError, match="broken.png"):
        PatchDataset(d)
    with pytest.raises(ValueError, match="uint8"):
        PatchDataset([np.zeros((300, 300, 3), np.float32)])


def test_patch_dataset_folder_grey_and_rgba(tmp_path):
    grey = _rand_img(3, 260, 260)[..., 0]
    rgba = np.concatenate([_rand_img(4, 260, 264), np.full((260, 264, 1), 9, np.uint8)], axis=2)
    _save(tmp_path / "grey.png", grey)
    _save(tmp_path / "rgba.png", rgba)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing is skipped
        ds = PatchDataset(tmp_path, patches_per_image=1, augment=False)
    assert ds.names == ["grey", "rgba"]  # file stems, never paths
    np.testing.assert_array_equal(ds.hr[0], np.repeat(mod_crop(grey, 4)[..., None], 3, axis=2))
    np.testing.assert_array_equal(ds.hr[1], rgba[..., :3])
    lr, hr = ds[0]
    assert torch.equal(hr[0], hr[1]) and torch.equal(lr[1], lr[2])


def test_images_from_files_get_short_safe_unique_names(tmp_path):
    """Named by path, an image from a user's folder once made the artifact name
    `sample_/full/path/img.png.png` (issue 12): names are safe stems, unique across folders."""
    from srstudy.data.names import file_image_names, safe_name

    a, b = tmp_path / "deep" / "set A" / "HR", tmp_path / "other"
    a.mkdir(parents=True)
    b.mkdir()
    for folder in (a, b):
        _save(folder / "im 1.png", _rand_img(5, 20, 20))
    _save(a / "im 1.bmp", _rand_img(6, 20, 20))
    _save(b / ("x" * 100 + ".png"), _rand_img(7, 20, 20))
    bench = BenchmarkSet.from_images([a, b], scale=4)
    names = [it.name for it in bench]
    assert names == ["im_1", "im_1-2", "im_1-3", "x" * 64]
    assert file_image_names([a / "q.png", b / "q.png"]) == ["q", "q-2"]
    assert safe_name("../../etc/passwd") == "etc_passwd" and safe_name("///") == "image"
    assert all("/" not in n for n in PatchDataset([a, b], lr_patch=4).names)


# ------------------------------------------------------------------------------------------------
# BenchmarkSet


@pytest.mark.data
def test_benchmark_set_files_and_on_the_fly(shared_data):
    files = BenchmarkSet(shared_data / "benchmarks", "Set5", scale=4)
    made = BenchmarkSet(shared_data / "benchmarks", "Set5", scale=4, lr_source="bicubic")
    assert len(files) == 5 and [it.name for it in files] == [f"img_00{i}" for i in range(1, 6)]
    for a, b in zip(files, made):
        assert a.hr.shape == (a.lr.shape[0] * 4, a.lr.shape[1] * 4, 3)
        assert np.abs(a.lr.astype(int) - b.lr).max() <= 1
        assert not a.is_grey
    set14 = BenchmarkSet(shared_data / "benchmarks", "Set14")
    assert [it.name for it in set14 if it.is_grey] == ["img_003"]


def test_benchmark_set_missing_pair_and_no_lr_folder(tmp_path):
    hr_dir = tmp_path / "Toy" / "HR"
    hr_dir.mkdir(parents=True)
    _save(hr_dir / "img_001.png", _rand_img(0, 42, 50))  # not a multiple of 4: mod-cropped
    _save(hr_dir / "img_002.png", _rand_img(1, 40, 40))
    auto = BenchmarkSet(tmp_path, "Toy")  # no LR folder: LR made from HR
    item = auto[0]
    assert item.hr.shape == (40, 48, 3) and item.lr.shape == (10, 12, 3)
    np.testing.assert_array_equal(item.lr, make_lr(_rand_img(0, 42, 50), 4))
    with pytest.raises(FileNotFoundError, match="LR_bicubic"):
        BenchmarkSet(tmp_path, "Toy", lr_source="files")
    lr_dir = tmp_path / "Toy" / "LR_bicubic" / "X4"
    lr_dir.mkdir(parents=True)
    _save(lr_dir / "img_001x4.png", item.lr)
    with pytest.raises(FileNotFoundError, match="img_002x4.png"):
        BenchmarkSet(tmp_path, "Toy")
    _save(lr_dir / "img_002x4.png", _rand_img(1, 12, 10))  # wrong size
    bench = BenchmarkSet(tmp_path, "Toy")
    np.testing.assert_array_equal(bench[0].lr, item.lr)
    with pytest.raises(ValueError, match="img_002x4.png"):
        bench[1]
    with pytest.raises(FileNotFoundError, match="Nope"):
        BenchmarkSet(tmp_path, "Nope")


# ------------------------------------------------------------------------------------------------
# bundled default data


def test_bundled_images_need_no_network(monkeypatch):
    def no_network(*args, **kwargs):
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket, "socket", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    imgs = bundled_images()
    assert len(imgs) >= 5
    for name, img in imgs:
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3, name
        assert min(img.shape[:2]) >= 256, name
        assert img[..., 0].std() > 0 and not np.array_equal(img[..., 0], img[..., 1]), f"{name} is not colour"


def test_default_split_disjoint_and_deterministic():
    train, val = default_split()
    train2, val2 = default_split()
    names_t, names_v = [n for n, _ in train], [n for n, _ in val]
    assert len(names_v) == 2 and len(names_t) >= 3
    assert not set(names_t) & set(names_v)
    assert names_t == [n for n, _ in train2] and names_v == [n for n, _ in val2]
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(train, train2))
    ds = PatchDataset(train, patches_per_image=1)
    assert len(ds) == len(train)
    bench = BenchmarkSet.from_images(val)
    assert [it.name for it in bench] == names_v and bench[0].lr.shape[2] == 3

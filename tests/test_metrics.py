"""Tests for srstudy.measure.metrics: hand-checkable values and the published bicubic x4 baselines."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from srstudy.data import BenchmarkSet
from srstudy.data.imresize import imresize
from srstudy.measure.metrics import psnr_y, rgb_to_y, score_pair, ssim_y, to_uint8


def _rand_img(seed: int, h: int = 48, w: int = 40) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def test_rgb_to_y_known_values():
    img = np.array([[[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255]]], dtype=np.uint8)
    y = rgb_to_y(img)
    assert y.dtype == np.float64 and y.shape == (1, 5)
    np.testing.assert_allclose(y[0], [16.0, 235.0, 16 + 65.481, 16 + 128.553, 16 + 24.966], atol=1e-12)


def test_to_uint8_rounds_floats_and_reads_tensors():
    x = np.array([[0.0, 0.5, 1.2, -0.1, 0.499 / 255]])
    np.testing.assert_array_equal(to_uint8(x), [[0, 128, 255, 0, 0]])
    t = torch.zeros(1, 3, 4, 5)
    t[0, 1] = 1.0
    out = to_uint8(t)
    assert out.shape == (4, 5, 3) and out.dtype == np.uint8
    assert (out[..., 1] == 255).all() and (out[..., 0] == 0).all()


def test_psnr_identical_is_inf_and_ssim_is_one():
    img = _rand_img(0)
    assert psnr_y(img, img.copy(), 4) == float("inf")
    assert ssim_y(img, img.copy(), 4) == pytest.approx(1.0, abs=1e-12)
    assert score_pair(img, img, scale=4) == (float("inf"), pytest.approx(1.0, abs=1e-12))


def test_psnr_known_mse():
    hr = np.full((20, 20, 3), 100, np.uint8)
    sr = np.full((20, 20, 3), 110, np.uint8)  # grey +10 -> Y differs by 10 * 219 / 255
    dy = 10 * 219 / 255
    assert psnr_y(sr, hr, 4) == pytest.approx(10 * math.log10(255**2 / dy**2), abs=1e-9)
    # raw grey convention on 2-D images: MSE = 100 exactly
    assert psnr_y(sr[..., 0], hr[..., 0], 2, grey_convention="raw") == pytest.approx(
        10 * math.log10(255**2 / 100), abs=1e-9
    )


def test_crop_border_is_applied():
    hr = np.full((20, 20, 3), 100, np.uint8)
    sr = hr.copy()
    sr[:3] = 0  # damage only the top 3 rows
    assert psnr_y(sr, hr, 3) == float("inf")
    assert psnr_y(sr, hr, 2) < 30


def test_ssim_matches_skimage_gaussian_ssim():
    """BasicSR SSIM == skimage's Gaussian SSIM (sigma 1.5, population covariance, valid region)."""
    hr = _rand_img(1, 64, 56)
    sr = np.clip(hr.astype(int) + np.random.default_rng(2).integers(-20, 21, hr.shape), 0, 255).astype(np.uint8)
    ours = ssim_y(sr, hr, 4)
    ys, yh = rgb_to_y(sr)[4:-4, 4:-4], rgb_to_y(hr)[4:-4, 4:-4]
    ref = structural_similarity(
        ys, yh, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255.0
    )
    assert 0.2 < ours < 0.99
    assert ours == pytest.approx(ref, abs=1e-9)


def test_shape_mismatch_and_bad_convention_raise():
    a, b = _rand_img(0, 40, 40), _rand_img(0, 44, 40)
    with pytest.raises(ValueError, match="shape"):
        psnr_y(a, b, 4)
    with pytest.raises(ValueError, match="grey_convention"):
        score_pair(a, a, scale=4, grey_convention="yuv")  # type: ignore[arg-type]


def test_grey_conventions_differ_only_for_grey_images():
    hr = np.repeat(_rand_img(3, 40, 40)[..., :1], 3, axis=2)
    sr = np.clip(hr.astype(int) + 5, 0, 255).astype(np.uint8)
    rgb = score_pair(sr, hr, scale=4, grey_convention="rgb", is_grey=True)
    raw = score_pair(sr, hr, scale=4, grey_convention="raw", is_grey=True)
    raw2d = score_pair(sr[..., 0], hr[..., 0], scale=4, grey_convention="raw")
    assert raw == pytest.approx(raw2d, abs=1e-9)
    assert rgb[0] - raw[0] == pytest.approx(20 * math.log10(255 / 219), abs=0.05)
    not_grey = score_pair(sr, hr, scale=4, grey_convention="raw", is_grey=False)
    assert not_grey == pytest.approx(rgb)


# ------------------------------------------------------------------------------------------------
# published bicubic x4 baselines (VERIFICATION.json of the shared data)

EXPECTED = {  # set: (psnr rgb, ssim rgb, psnr raw)
    "Set5": (28.432, 0.8113, 28.432),
    "Set14": (26.093, 0.7049, 25.998),
    "BSD100": (25.963, 0.6682, 25.963),
}


@pytest.mark.data
@pytest.mark.parametrize("set_name", list(EXPECTED))
def test_bicubic_x4_baseline(shared_data, set_name):
    """round(clip(imresize(LR, 4))) vs HR, Y channel, shave 4: the papers' bicubic row (+-0.02 dB)."""
    bench = BenchmarkSet(shared_data / "benchmarks", set_name, scale=4, lr_source="files")
    rgb, raw = [], []
    for item in bench:
        sr = np.round(np.clip(imresize(item.lr.astype(np.float64), 4), 0, 255)).astype(np.uint8)
        rgb.append(score_pair(sr, item.hr, scale=4, grey_convention="rgb", is_grey=item.is_grey))
        # the conventions differ only for grey images
        raw.append(score_pair(sr, item.hr, scale=4, grey_convention="raw", is_grey=True) if item.is_grey else rgb[-1])
    psnr, ssim = np.mean(rgb, axis=0)
    psnr_raw = np.mean(raw, axis=0)[0]
    want_psnr, want_ssim, want_raw = EXPECTED[set_name]
    assert psnr == pytest.approx(want_psnr, abs=0.02)
    assert ssim == pytest.approx(want_ssim, abs=0.0015)
    assert psnr_raw == pytest.approx(want_raw, abs=0.02)
    if set_name == "Set14":
        assert sum(item.is_grey for item in bench) == 1  # img_003 (bridge)
        assert psnr_raw == pytest.approx(26.00, abs=0.02)  # the published number

import math

import numpy as np
import pytest
from PIL import Image

from unimp_core.imagegen.quality import gaussian_window, mean_quality, psnr, ssim


def test_psnr_hand_values():
    a = np.zeros((8, 8, 3))
    assert psnr(a, a + 0.1) == pytest.approx(20.0)  # MSE 0.01 -> 10 log10(1 / 0.01)
    assert psnr(a, a + 0.01) == pytest.approx(40.0)
    assert psnr(np.zeros((4, 4)), np.full((4, 4), 25.5), data_range=255) == pytest.approx(20.0)
    # half the pixels off by 0.2: MSE 0.02 -> 10 log10(50)
    b = a.copy()
    b[:4] = 0.2
    assert psnr(a, b) == pytest.approx(10 * math.log10(50))
    assert psnr(a, a) == math.inf


def test_ssim_hand_values():
    rng = np.random.default_rng(0)
    a = rng.random((16, 16, 3))
    assert ssim(a, a) == pytest.approx(1.0)
    # flat images: no variance, so SSIM is the luminance term (2ab + C1) / (a^2 + b^2 + C1), C1 = 0.01^2
    flat = ssim(np.full((12, 12), 0.2), np.full((12, 12), 0.6))
    assert flat == pytest.approx((2 * 0.2 * 0.6 + 1e-4) / (0.2**2 + 0.6**2 + 1e-4))
    assert flat == pytest.approx(0.6001, abs=1e-4)
    # an inverted image has negative structure
    assert ssim(a, 1 - a) < 0


def test_ssim_matches_scikit_image():
    from skimage import metrics  # a dev dependency (pyproject): imported plainly, never skipped
    rng = np.random.default_rng(1)
    a = rng.random((32, 32, 3))
    b = np.clip(a + rng.normal(0, 0.1, a.shape), 0, 1)
    ref = metrics.structural_similarity(a, b, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                        use_sample_covariance=False, channel_axis=-1)
    assert ssim(a, b) == pytest.approx(ref, abs=1e-9)
    assert psnr(a, b) == pytest.approx(metrics.peak_signal_noise_ratio(a, b, data_range=1.0))


def test_window_and_errors():
    w = gaussian_window(11, 1.5)
    assert w.sum() == pytest.approx(1.0) and w.argmax() == 5 and np.allclose(w, w[::-1])
    with pytest.raises(ValueError, match="shape"):
        psnr(np.zeros((4, 4)), np.zeros((4, 5)))
    with pytest.raises(ValueError, match="smaller than"):
        ssim(np.zeros((8, 8)), np.zeros((8, 8)))


def test_mean_quality_of_pil_pairs():
    black = Image.new("RGB", (16, 16), (0, 0, 0))
    grey = Image.new("RGB", (16, 16), (51, 51, 51))  # 0.2 -> MSE 0.04 -> ~13.98 dB
    q = mean_quality([black, black], [black, grey])
    assert q["images"] == 2
    assert q["psnr"] == pytest.approx((100.0 + 10 * math.log10(1 / 0.04)) / 2)  # exact copy capped at 100 dB
    assert q["ssim"] == pytest.approx((1.0 + 1e-4 / (0.04 + 1e-4)) / 2)

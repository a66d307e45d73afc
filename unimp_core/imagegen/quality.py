"""Reconstruction quality: PSNR and SSIM of image pairs (pure numpy functions).

Images are float arrays in [0, data_range], shaped (H, W) or (H, W, C). SSIM follows Wang et al. 2004:
an 11x11 Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03, population (co)variances, the mean SSIM map
over valid positions, averaged over channels; this equals scikit-image's
`structural_similarity(..., gaussian_weights=True, sigma=1.5, use_sample_covariance=False, channel_axis=-1)`.
"""

from __future__ import annotations

import math

import numpy as np


def _pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
    if a.ndim == 2:
        a, b = a[..., None], b[..., None]
    if a.ndim != 3:
        raise ValueError(f"expected (H, W) or (H, W, C) images, got shape {a.shape}")
    return a, b


def psnr(a: np.ndarray, b: np.ndarray, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB: 10 log10(range^2 / MSE); inf for identical images."""
    a, b = _pair(a, b)
    mse = float(np.mean((a - b) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(data_range**2 / mse)


def gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    """Normalised 1-D Gaussian of odd length `size` (SSIM's window is its outer product)."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    w = np.exp(-(x**2) / (2 * sigma**2))
    return w / w.sum()


def _filter_valid(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Separable 'valid' filtering of (H, W, C) by the window w along H then W."""
    from numpy.lib.stride_tricks import sliding_window_view

    k = len(w)
    x = sliding_window_view(x, k, axis=0) @ w  # (H-k+1, W, C)
    return sliding_window_view(x, k, axis=1) @ w  # (H-k+1, W-k+1, C)


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = 1.0, window: int = 11, sigma: float = 1.5) -> float:
    """Mean structural similarity of two images (1.0 for identical images)."""
    a, b = _pair(a, b)
    if min(a.shape[0], a.shape[1]) < window:
        raise ValueError(f"images of {a.shape[0]}x{a.shape[1]} pixels are smaller than the "
                         f"{window}x{window} SSIM window")
    w = gaussian_window(window, sigma)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_a, mu_b = _filter_valid(a, w), _filter_valid(b, w)
    var_a = _filter_valid(a * a, w) - mu_a**2
    var_b = _filter_valid(b * b, w) - mu_b**2
    cov = _filter_valid(a * b, w) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(s.mean())


def to_unit(img) -> np.ndarray:
    """A PIL image (or uint8 array) as a float (H, W, C) array in [0, 1]."""
    return np.asarray(img.convert("RGB") if hasattr(img, "convert") else img, dtype=np.float64) / 255.0


def mean_quality(originals, reconstructions) -> dict[str, float]:
    """Mean PSNR (dB) and SSIM over pairs of PIL images; infinite PSNRs (exact copies) are capped at 100 dB."""
    if len(originals) != len(reconstructions) or not originals:
        raise ValueError("need the same, non-zero number of originals and reconstructions")
    ps, ss = [], []
    for o, r in zip(originals, reconstructions):
        a, b = to_unit(o), to_unit(r)
        ps.append(min(psnr(a, b), 100.0))
        ss.append(ssim(a, b))
    return {"psnr": float(np.mean(ps)), "ssim": float(np.mean(ss)), "images": len(ps)}

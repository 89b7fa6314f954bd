"""Image metrics against hand-computed values and an independent scipy reference."""
import numpy as np
import pytest
from scipy import ndimage

from minerf_jax import metrics


def test_psnr_of_known_error():
  x = np.zeros((8, 8, 3), np.float32)
  assert float(metrics.psnr(x + 0.1, x)) == pytest.approx(20.0, abs=1e-4)
  assert float(metrics.psnr(x + 0.01, x)) == pytest.approx(40.0, abs=1e-3)


def _ssim_reference(a, b, sigma=1.5, truncate=3.5):
  """Wang et al. SSIM with scipy Gaussian filtering, cropped to the 'valid' region."""
  c1, c2 = 0.01 ** 2, 0.03 ** 2
  filt = lambda z: ndimage.gaussian_filter(z, sigma, truncate=truncate, mode="constant")
  out = []
  for ch in range(a.shape[-1]):
    x, y = a[..., ch].astype(np.float64), b[..., ch].astype(np.float64)
    mx, my = filt(x), filt(y)
    sxx, syy, sxy = filt(x * x) - mx ** 2, filt(y * y) - my ** 2, filt(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (sxx + syy + c2))
    out.append(s[5:-5, 5:-5])
  return float(np.mean(out))


def test_ssim_matches_reference_and_orders_noise():
  rng = np.random.default_rng(0)
  a = ndimage.gaussian_filter(rng.uniform(0, 1, (40, 40, 3)), (2, 2, 0)).astype(np.float32)
  assert float(metrics.ssim(a, a)) == pytest.approx(1.0, abs=1e-6)
  noisy = np.clip(a + rng.normal(0, 0.05, a.shape), 0, 1).astype(np.float32)
  noisier = np.clip(a + rng.normal(0, 0.2, a.shape), 0, 1).astype(np.float32)
  s1, s2 = float(metrics.ssim(noisy, a)), float(metrics.ssim(noisier, a))
  assert 1.0 > s1 > s2 > 0.0
  assert s1 == pytest.approx(_ssim_reference(noisy, a), abs=2e-3)


def test_l1_and_mse():
  a, b = np.zeros((2, 2)), np.full((2, 2), 0.5)
  assert float(metrics.l1(a, b)) == pytest.approx(0.5)
  assert float(metrics.mse(a, b)) == pytest.approx(0.25)

"""Image metrics against hand-computed values and an independent scipy reference."""
import jax
import numpy as np
import pytest
from scipy import ndimage
from scipy import signal

from minerf_jax import metrics


def _ssim_reference(a, b, max_val=1.0, size=11, sigma=1.5):
  """Wang et al. SSIM in float64: a full 2-D Gaussian window and scipy's 'valid' correlation."""
  x = np.arange(size) - (size - 1) / 2
  g = np.exp(-0.5 * (x / sigma) ** 2)
  window = np.outer(g, g) / np.sum(np.outer(g, g))
  c1, c2 = (0.01 * max_val) ** 2, (0.03 * max_val) ** 2
  filt = lambda z: signal.correlate2d(z, window, mode="valid")
  maps = []
  for ch in range(a.shape[-1]):
    x, y = a[..., ch].astype(np.float64), b[..., ch].astype(np.float64)
    mx, my = filt(x), filt(y)
    sxx, syy, sxy = filt(x * x) - mx ** 2, filt(y * y) - my ** 2, filt(x * y) - mx * my
    maps.append(((2 * mx * my + c1) * (2 * sxy + c2))
                / ((mx ** 2 + my ** 2 + c1) * (sxx + syy + c2)))
  return float(np.mean(maps))


def _smooth_image(seed, shape=(40, 36, 3)):
  rng = np.random.default_rng(seed)
  return ndimage.gaussian_filter(rng.uniform(0, 1, shape), (2, 2, 0)).astype(np.float32)


def test_psnr_of_known_error():
  x = np.zeros((8, 8, 3), np.float32)
  assert float(metrics.psnr(x + 0.1, x)) == pytest.approx(20.0, abs=1e-4)
  assert float(metrics.psnr(x + 0.01, x)) == pytest.approx(40.0, abs=1e-3)
  assert float(metrics.psnr(x + 25.5, x, max_val=255.0)) == pytest.approx(20.0, abs=1e-4)
  # Half the pixels off by 0.2: MSE = 0.02, PSNR = 10 log10(50).
  y = x.copy()
  y[:4] = 0.2
  assert float(metrics.psnr(y, x)) == pytest.approx(10 * np.log10(50.0), abs=1e-4)


def test_psnr_of_identical_images_is_infinite():
  x = _smooth_image(0)
  assert float(metrics.psnr(x, x)) == np.inf
  assert float(metrics.mse_to_psnr(np.float32(0.0))) == np.inf


def test_l1_mse_and_shape_check():
  a, b = np.zeros((2, 2)), np.array([[0.5, -0.5], [1.0, 0.0]])
  assert float(metrics.l1(a, b)) == pytest.approx(0.5)
  assert float(metrics.mse(a, b)) == pytest.approx(0.375)
  with pytest.raises(ValueError, match="shape"):
    metrics.mse(np.zeros((4, 4, 3)), np.zeros((4, 4, 1)))


def test_ssim_of_identical_images_is_one():
  a = _smooth_image(0)
  assert float(metrics.ssim(a, a)) == pytest.approx(1.0, abs=1e-6)


def test_ssim_matches_independent_reference():
  a = _smooth_image(0)
  rng = np.random.default_rng(1)
  for noise in (0.02, 0.1, 0.3):
    b = np.clip(a + rng.normal(0, noise, a.shape), 0, 1).astype(np.float32)
    assert float(metrics.ssim(b, a)) == pytest.approx(_ssim_reference(b, a), abs=1e-4)
  u, v = (rng.uniform(0, 1, (24, 30, 2)).astype(np.float32) for _ in range(2))
  assert float(metrics.ssim(u, v)) == pytest.approx(_ssim_reference(u, v), abs=1e-4)


def test_ssim_decreases_with_noise():
  a = _smooth_image(2)
  rng = np.random.default_rng(3)
  scores = [float(metrics.ssim(np.clip(a + rng.normal(0, s, a.shape), 0, 1).astype(np.float32),
                               a)) for s in (0.01, 0.05, 0.2)]
  assert 1.0 > scores[0] > scores[1] > scores[2] > 0.0


def test_ssim_of_constant_images_has_closed_form():
  # No variance: only the luminance term (2ab + C1) / (a^2 + b^2 + C1) remains.
  a, b, c1 = 0.3, 0.6, 0.01 ** 2
  x, y = np.full((16, 16, 1), a, np.float32), np.full((16, 16, 1), b, np.float32)
  expected = (2 * a * b + c1) / (a * a + b * b + c1)
  assert float(metrics.ssim(x, y)) == pytest.approx(expected, rel=1e-5)


def test_ssim_of_contrast_reversal_is_negative():
  yy, xx = np.mgrid[:32, :32]
  a = (0.5 + 0.4 * np.sin(xx / 2.0) * np.sin(yy / 3.0))[..., None].astype(np.float32)
  # 1 - a: luminance term ~1 (means near 0.5), covariance = -variance, so the contrast-structure
  # term (C2 - 2 var) / (C2 + 2 var) is close to -1 wherever there is contrast.
  reversed_ = 1.0 - a
  assert float(metrics.ssim(reversed_, a)) < -0.5
  assert float(metrics.ssim(reversed_, a)) == pytest.approx(_ssim_reference(reversed_, a),
                                                             abs=1e-4)


def test_ssim_batched_scaled_symmetric_and_jittable():
  a, b = _smooth_image(5), _smooth_image(6)
  batch = np.stack([a, b])
  target = np.stack([b, b])
  per_image = [float(metrics.ssim(a, b)), float(metrics.ssim(b, b))]
  assert float(metrics.ssim(batch, target)) == pytest.approx(np.mean(per_image), abs=1e-6)
  assert float(metrics.ssim(b, a)) == pytest.approx(per_image[0], abs=1e-6)
  assert float(metrics.ssim(255 * a, 255 * b, max_val=255.0)) == pytest.approx(per_image[0],
                                                                                abs=1e-5)
  assert float(jax.jit(metrics.ssim)(a, b)) == pytest.approx(per_image[0], abs=1e-6)
  assert metrics.ssim_map(a, b).shape == (30, 26, 3)


def test_ssim_rejects_images_smaller_than_the_window():
  with pytest.raises(ValueError, match="filter_size"):
    metrics.ssim(np.zeros((8, 8, 3)), np.zeros((8, 8, 3)))

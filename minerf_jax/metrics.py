"""Image metrics: MSE, L1, PSNR, SSIM (jax.numpy, jit-able, batched over leading axes).

SSIM follows Wang et al. (2004): Gaussian window (11 taps, sigma 1.5), K1=0.01, K2=0.03,
'valid' filtering, mean over pixels and channels of each image.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def mse(pred, target):
  return jnp.mean((pred - target) ** 2)


def l1(pred, target):
  return jnp.mean(jnp.abs(pred - target))


def mse_to_psnr(value, max_val: float = 1.0):
  return 10.0 * jnp.log10(max_val ** 2 / value)


def psnr(pred, target, max_val: float = 1.0):
  """PSNR of the mean squared error over all elements."""
  return mse_to_psnr(mse(pred, target), max_val)


def _gaussian(filter_size: int, sigma: float):
  x = jnp.arange(filter_size, dtype=jnp.float32) - (filter_size - 1) / 2.0
  g = jnp.exp(-0.5 * (x / sigma) ** 2)
  return g / jnp.sum(g)


def _filter(img, g):
  """Separable 'valid' filtering of [...,H,W,C] with 1-D kernel g."""
  k = g.shape[0]
  h, w = img.shape[-3], img.shape[-2]
  rows = sum(g[i] * img[..., i:h - k + 1 + i, :, :] for i in range(k))
  return sum(g[i] * rows[..., :, i:w - k + 1 + i, :] for i in range(k))


def ssim_map(pred, target, max_val=1.0, filter_size=11, filter_sigma=1.5, k1=0.01, k2=0.03):
  g = _gaussian(filter_size, filter_sigma)
  mu_x, mu_y = _filter(pred, g), _filter(target, g)
  sxx = _filter(pred * pred, g) - mu_x ** 2
  syy = _filter(target * target, g) - mu_y ** 2
  sxy = _filter(pred * target, g) - mu_x * mu_y
  c1, c2 = (k1 * max_val) ** 2, (k2 * max_val) ** 2
  return ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (sxx + syy + c2))


def ssim(pred, target, max_val: float = 1.0, filter_size: int = 11, filter_sigma: float = 1.5,
         k1: float = 0.01, k2: float = 0.03):
  """Mean SSIM over pixels, channels and any leading batch axes."""
  return jnp.mean(ssim_map(pred, target, max_val, filter_size, filter_sigma, k1, k2))

"""Image metrics: MSE, L1, PSNR, SSIM (jax.numpy, jit-able, batched over leading axes).

Every metric returns one scalar, the mean over all elements (pixels, channels and any leading
batch axes); for per-image values, ``jax.vmap`` over the batch axis. ``psnr`` of a batch is the
PSNR of its pooled MSE (the convention of the NeRF literature's "PSNR over the test set" varies:
averaging per-image PSNR weights well-reconstructed images more; vmap and average for that).

``colour_leakage`` measures identity leakage in expression transfer (see its docstring).

SSIM follows Wang et al. (2004), "Image quality assessment: from error visibility to structural
similarity", with the reference settings: an 11-tap Gaussian window of sigma 1.5 (normalised
to sum 1), K1 = 0.01, K2 = 0.03, C_i = (K_i L)^2 with L = ``max_val``, local statistics with
the biased (window-weighted) variance, 'valid' filtering (no padding, so the map is
``(H - 10) x (W - 10)``), each channel independently, mean over the map and the channels. The
filter is separable and applied as shifted slices, exact and jit-friendly.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def _check_shapes(pred, target):
  if jnp.shape(pred) != jnp.shape(target):
    raise ValueError(f"metric inputs differ in shape: {jnp.shape(pred)} vs {jnp.shape(target)}")


def mse(pred: jax.Array, target: jax.Array) -> jax.Array:
  """Mean squared error over all elements."""
  _check_shapes(pred, target)
  return jnp.mean((jnp.asarray(pred) - jnp.asarray(target)) ** 2)


def l1(pred: jax.Array, target: jax.Array) -> jax.Array:
  """Mean absolute error over all elements."""
  _check_shapes(pred, target)
  return jnp.mean(jnp.abs(jnp.asarray(pred) - jnp.asarray(target)))


def mse_to_psnr(value: jax.Array, max_val: float = 1.0) -> jax.Array:
  """``10 log10(max_val^2 / mse)``; +inf for a zero error."""
  return 10.0 * jnp.log10(max_val ** 2 / jnp.asarray(value))


def psnr(pred: jax.Array, target: jax.Array, max_val: float = 1.0) -> jax.Array:
  """PSNR in dB of the MSE over all elements (+inf for identical inputs)."""
  return mse_to_psnr(mse(pred, target), max_val)


def _gaussian(filter_size: int, sigma: float) -> jax.Array:
  x = jnp.arange(filter_size, dtype=jnp.float32) - (filter_size - 1) / 2.0
  g = jnp.exp(-0.5 * (x / sigma) ** 2)
  return g / jnp.sum(g)


def _filter(img: jax.Array, g: jax.Array) -> jax.Array:
  """Separable 'valid' correlation of [..., H, W, C] with the 1-D kernel ``g`` on H and W."""
  k = g.shape[0]
  h, w = img.shape[-3], img.shape[-2]
  rows = sum(g[i] * img[..., i:h - k + 1 + i, :, :] for i in range(k))
  return sum(g[i] * rows[..., :, i:w - k + 1 + i, :] for i in range(k))


def ssim_map(pred: jax.Array, target: jax.Array, max_val: float = 1.0, filter_size: int = 11,
             filter_sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03) -> jax.Array:
  """Per-pixel, per-channel SSIM [..., H - f + 1, W - f + 1, C] of images [..., H, W, C]."""
  _check_shapes(pred, target)
  pred, target = jnp.asarray(pred, jnp.float32), jnp.asarray(target, jnp.float32)
  if pred.ndim < 3 or min(pred.shape[-3:-1]) < filter_size:
    raise ValueError(f"ssim needs images [..., H, W, C] with H, W >= filter_size="
                     f"{filter_size}, got shape {pred.shape}")
  g = _gaussian(filter_size, filter_sigma)
  mu_x, mu_y = _filter(pred, g), _filter(target, g)
  # (Co)variances are shift-invariant: compute them about each image's mean, which removes most
  # of the float32 cancellation in E[x^2] - E[x]^2 for flat or bright images.
  mean = lambda img: jnp.mean(img, axis=(-3, -2), keepdims=True)
  x, y = pred - mean(pred), target - mean(target)
  dx, dy = mu_x - mean(pred), mu_y - mean(target)
  sxx = _filter(x * x, g) - dx ** 2
  syy = _filter(y * y, g) - dy ** 2
  sxy = _filter(x * y, g) - dx * dy
  c1, c2 = (k1 * max_val) ** 2, (k2 * max_val) ** 2
  numerator = (2 * mu_x * mu_y + c1) * (2 * sxy + c2)
  denominator = (mu_x ** 2 + mu_y ** 2 + c1) * (sxx + syy + c2)
  return numerator / denominator


def ssim(pred: jax.Array, target: jax.Array, max_val: float = 1.0, filter_size: int = 11,
         filter_sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03) -> jax.Array:
  """Mean SSIM over pixels, channels and any leading batch axes (see the module docstring)."""
  return jnp.mean(ssim_map(pred, target, max_val, filter_size, filter_sigma, k1, k2))


def masked_mean_colour(images: jax.Array, masks: jax.Array) -> jax.Array:
  """Mean colour [..., C] of images [..., H, W, C] over the pixels where masks [..., H, W] > 0.5
  (NaN where a mask is empty)."""
  m = (jnp.asarray(masks) > 0.5).astype(jnp.float32)[..., None]
  return jnp.sum(jnp.asarray(images) * m, axis=(-3, -2)) / jnp.sum(m, axis=(-3, -2))


def colour_leakage(pred: jax.Array, truth: jax.Array, truth_mask: jax.Array,
                   driver: jax.Array, driver_mask: jax.Array) -> jax.Array:
  """Per-frame identity leakage of an expression transfer, [...] for images [..., H, W, 3].

  ``|c(pred) - c(truth)| / |c(driver) - c(truth)|`` where ``c`` is the mean head colour (over
  ``truth_mask`` for the render and identity A's truth, over ``driver_mask`` for the driver B
  rendered with the same expression and pose) and ``|.|`` the Euclidean norm in RGB: 0 when the
  render has A's colours, 1 when it has taken on the driver's look (it can exceed 1).
  """
  _check_shapes(pred, truth)
  _check_shapes(truth, driver)
  a = masked_mean_colour(truth, truth_mask)
  gap = jnp.linalg.norm(masked_mean_colour(driver, driver_mask) - a, axis=-1)
  return jnp.linalg.norm(masked_mean_colour(pred, truth_mask) - a, axis=-1) / gap

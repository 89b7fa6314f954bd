"""Cameras, rays, sampling and volume compositing (pure, jit-able).

Conventions: OpenCV pinhole cameras (camera at the origin, x right, y down, z forward), unit ray
directions, heads posed by ``X_world = R X_head + t``. The radiance field has finite extent: it
lives in a box, rays are sampled only inside ``[near, far]`` of that box and the last sample's
interval ends at ``far``, so a ray's opacity is exactly the opacity of the box contents.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp


def pixel_grid(height: int, width: int) -> jax.Array:
  """[H,W,2] pixel centres (x + 0.5, y + 0.5)."""
  y, x = jnp.meshgrid(jnp.arange(height), jnp.arange(width), indexing="ij")
  return jnp.stack([x, y], -1).astype(jnp.float32) + 0.5


def camera_rays(intrinsics: jax.Array, pixels: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Origins (zeros) and unit directions through ``pixels`` [...,2] for intrinsics [...,3,3]."""
  fx, fy = intrinsics[..., 0, 0], intrinsics[..., 1, 1]
  cx, cy = intrinsics[..., 0, 2], intrinsics[..., 1, 2]
  d = jnp.stack([(pixels[..., 0] - cx) / fx, (pixels[..., 1] - cy) / fy,
                 jnp.ones_like(pixels[..., 0])], -1)
  d = d / jnp.linalg.norm(d, axis=-1, keepdims=True)
  return jnp.zeros_like(d), d


def to_canonical(origins, directions, rotation, translation):
  """World rays -> head coordinates for ``X_world = R X_head + t``: R^T (o - t), R^T d."""
  o = jnp.einsum("...ji,...j->...i", rotation, origins - translation)
  d = jnp.einsum("...ji,...j->...i", rotation, directions)
  return o, d


def ray_box_intersect(origins, directions, box_min, box_max):
  """Slab test: (near, far, hit); near clamped to >= 0, hit = far > near."""
  safe = jnp.where(jnp.abs(directions) < 1e-9, 1e-9, directions)
  inv = 1.0 / safe
  t0 = (box_min - origins) * inv
  t1 = (box_max - origins) * inv
  near = jnp.maximum(jnp.max(jnp.minimum(t0, t1), -1), 0.0)
  far = jnp.min(jnp.maximum(t0, t1), -1)
  hit = far > near
  return near, jnp.where(hit, far, near), hit


def stratified_samples(rng, near, far, num_samples: int, randomized: bool) -> jax.Array:
  """[R,S] depths: bin midpoints, or one uniform draw per bin when randomized."""
  u = (jnp.arange(num_samples, dtype=jnp.float32) + 0.5) / num_samples
  u = jnp.broadcast_to(u, near.shape + (num_samples,))
  if randomized:
    u = u + (jax.random.uniform(rng, u.shape) - 0.5) / num_samples
  return near[..., None] + (far - near)[..., None] * u


def sample_pdf(rng, bins, weights, num_samples: int, randomized: bool) -> jax.Array:
  """Inverse-CDF samples of the piecewise-constant pdf ``weights`` over ``bins`` [R,S+1]."""
  w = weights + 1e-5
  pdf = w / jnp.sum(w, -1, keepdims=True)
  cdf = jnp.concatenate([jnp.zeros_like(pdf[..., :1]),
                         jnp.minimum(1.0, jnp.cumsum(pdf[..., :-1], -1)),
                         jnp.ones_like(pdf[..., :1])], -1)
  if randomized:
    u = jax.random.uniform(rng, pdf.shape[:-1] + (num_samples,))
  else:
    u = jnp.broadcast_to((jnp.arange(num_samples) + 0.5) / num_samples,
                         pdf.shape[:-1] + (num_samples,))
  idx = jax.vmap(lambda c, x: jnp.searchsorted(c, x, side="right"))(
      cdf.reshape(-1, cdf.shape[-1]), u.reshape(-1, num_samples)).reshape(u.shape)
  below = jnp.clip(idx - 1, 0, cdf.shape[-1] - 2)
  above = below + 1
  c0 = jnp.take_along_axis(cdf, below, -1)
  c1 = jnp.take_along_axis(cdf, above, -1)
  b0 = jnp.take_along_axis(bins, below, -1)
  b1 = jnp.take_along_axis(bins, above, -1)
  frac = jnp.clip((u - c0) / jnp.maximum(c1 - c0, 1e-9), 0.0, 1.0)
  return jax.lax.stop_gradient(b0 + frac * (b1 - b0))


def composite(sigma, rgb, t, far) -> dict:
  """Alpha compositing along rays.

  sigma [R,S] >= 0, rgb [R,S,3], sorted depths t [R,S], far [R]. Interval i spans
  [t_i, t_{i+1}) with the last one ending at ``far``. Returns rgb, acc (opacity), depth
  (expected depth of the visible surface, normalised by acc; ``far`` where acc is ~0) and the
  per-sample weights (alpha_i * T_i, each in [0,1], summing to acc <= 1).
  """
  deltas = jnp.concatenate([t[..., 1:] - t[..., :-1], far[..., None] - t[..., -1:]], -1)
  deltas = jnp.maximum(deltas, 0.0)
  tau = sigma * deltas
  alpha = 1.0 - jnp.exp(-tau)
  trans = jnp.exp(-jnp.concatenate([jnp.zeros_like(tau[..., :1]),
                                    jnp.cumsum(tau[..., :-1], -1)], -1))
  weights = alpha * trans
  acc = jnp.sum(weights, -1)
  depth = jnp.sum(weights * t, -1) / jnp.maximum(acc, 1e-6)
  depth = jnp.where(acc > 1e-4, depth, far)
  return {"rgb": jnp.sum(weights[..., None] * rgb, -2), "acc": acc, "depth": depth,
          "weights": weights}


FieldFn = Callable[[jax.Array, jax.Array], tuple[jax.Array, jax.Array]]


def _shade(field_fn: FieldFn, origins, directions, t, far, hit, background_rgb) -> dict:
  points = origins[..., None, :] + t[..., None] * directions[..., None, :]
  sigma, rgb = field_fn(points, directions)
  sigma = jnp.where(hit[..., None], sigma, 0.0)
  out = composite(sigma, rgb, t, far)
  out["rgb"] = out["rgb"] + (1.0 - out["acc"][..., None]) * background_rgb
  return out


def render_rays(field_fn: FieldFn, rng, origins, directions, near, far, hit, *,
                num_coarse: int, num_fine: int, randomized: bool, background_rgb) -> dict:
  """Stratified coarse pass, then (num_fine > 0) hierarchical samples from its weights.

  The same field is evaluated on the merged, sorted coarse + fine samples (mip-NeRF-style
  single network). Rays with ``hit=False`` get zero density: their colour is the background.
  Returns rgb/depth/acc of the final pass and coarse_rgb/coarse_acc.
  """
  if rng is None:
    rng = jax.random.key(0)
    randomized = False
  rng_c, rng_f = jax.random.split(rng)
  t = stratified_samples(rng_c, near, far, num_coarse, randomized)
  coarse = _shade(field_fn, origins, directions, t, far, hit, background_rgb)
  out = coarse
  if num_fine > 0:
    mids = 0.5 * (t[..., 1:] + t[..., :-1])
    bins = jnp.concatenate([near[..., None], mids, far[..., None]], -1)
    t_fine = sample_pdf(rng_f, bins, coarse["weights"], num_fine, randomized)
    t_all = jnp.sort(jnp.concatenate([t, t_fine], -1), -1)
    out = _shade(field_fn, origins, directions, t_all, far, hit, background_rgb)
  return {"rgb": out["rgb"], "depth": out["depth"], "acc": out["acc"], "weights": out["weights"],
          "coarse_rgb": coarse["rgb"], "coarse_acc": coarse["acc"]}

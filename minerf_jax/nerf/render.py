"""Ray sampling and volume compositing (pure, jit-able).

Conventions:

* Cameras, rays and poses are ``minerf_jax.camera``'s (OpenCV pinholes; ``X_cam = R X_head + t``;
  ``camera.to_canonical`` moves rays into head coordinates, ``camera.ray_box_intersect`` clips
  them to the field's box). Ray directions are unit vectors, so the ray parameter ``t`` is a
  metric distance and densities are per unit length.
* The radiance field has finite extent: it lives in an axis-aligned box, rays are sampled only
  inside ``[near, far]`` of that box and the last sample's interval ends at ``far``, so a ray's
  opacity is the opacity of the box contents and everything outside the box is the background.
  Rays that miss the box get zero density, so their colour is exactly the background.
* Quadrature: sample ``i`` at ``t_i`` stands for the interval ``[t_i, t_{i+1})`` (the last one
  ``[t_last, far)``), over which density and colour are taken constant (NeRF's convention). The
  stretch ``[near, t_0)`` before the first sample (half a coarse bin, up to a whole one when
  randomized; fine samples may shrink it) is not integrated: a head box has a margin, so that
  stretch is empty space.

``render_rays`` runs the coarse stratified pass and the hierarchical fine pass with one field
evaluated on the merged samples (mip-NeRF's single-network re-use).
"""
from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp


def stratified_samples(rng: jax.Array | None, near: jax.Array, far: jax.Array, num_samples: int,
                       randomized: bool) -> jax.Array:
  """[..., S] sorted depths in ``[near, far]``: S equal bins, at each bin's midpoint, or at one
  uniform draw per bin when ``randomized`` (``rng`` is only read then)."""
  u = (jnp.arange(num_samples, dtype=jnp.float32) + 0.5) / num_samples
  u = jnp.broadcast_to(u, near.shape + (num_samples,))
  if randomized:
    u = u + (jax.random.uniform(rng, u.shape) - 0.5) / num_samples
  return near[..., None] + (far - near)[..., None] * u


def sample_pdf(rng: jax.Array | None, bins: jax.Array, weights: jax.Array, num_samples: int,
               randomized: bool, padding: float = 1e-5) -> jax.Array:
  """Inverse-CDF samples [..., N] of the piecewise-constant pdf ``weights`` [..., S] on the bin
  edges ``bins`` [..., S+1] (hierarchical sampling, NeRF).

  ``padding`` is added to every weight so that empty rays sample uniformly and every CDF step is
  strictly positive (no division by zero). The CDF is inverted at stratified levels
  ``(k + u_k) / N`` (``u_k = 0.5`` when not randomized): sorted, monotone in the output and of
  lower variance than i.i.d. uniforms. The bin lookup is an unrolled binary search (log S
  vectorised steps, no O(S N) comparison tensor). The output is stop-gradient: sample
  positions are not differentiated through.
  """
  w = weights + padding
  pdf = w / jnp.sum(w, -1, keepdims=True)
  cdf = jnp.concatenate([jnp.zeros_like(pdf[..., :1]),
                         jnp.minimum(1.0, jnp.cumsum(pdf[..., :-1], -1)),
                         jnp.ones_like(pdf[..., :1])], -1)                      # [..., S+1]
  shape = pdf.shape[:-1] + (num_samples,)
  u = jnp.broadcast_to(jnp.arange(num_samples, dtype=pdf.dtype), shape)
  u = (u + (jax.random.uniform(rng, shape, pdf.dtype) if randomized else 0.5)) / num_samples
  search = jax.vmap(functools.partial(jnp.searchsorted, side="right", method="scan_unrolled"))
  after = search(cdf.reshape(-1, cdf.shape[-1]), u.reshape(-1, num_samples)).reshape(shape)
  below = jnp.clip(after - 1, 0, weights.shape[-1] - 1)                   # last knot <= u
  c0 = jnp.take_along_axis(cdf, below, -1)
  c1 = jnp.take_along_axis(cdf, below + 1, -1)
  b0 = jnp.take_along_axis(bins, below, -1)
  b1 = jnp.take_along_axis(bins, below + 1, -1)
  frac = jnp.clip((u - c0) / jnp.maximum(c1 - c0, 1e-12), 0.0, 1.0)
  return jax.lax.stop_gradient(b0 + frac * (b1 - b0))


def composite(sigma: jax.Array, rgb: jax.Array, t: jax.Array, far: jax.Array) -> dict:
  """Alpha compositing along rays (emission-absorption quadrature).

  Args:
    sigma: [..., S] densities >= 0.
    rgb: [..., S, 3] colours.
    t: [..., S] sorted sample depths.
    far: [...] where the last interval ends (the box exit).

  ``delta_i = t_{i+1} - t_i`` with ``delta_last = far - t_last``; ``alpha_i = 1 - exp(-sigma_i
  delta_i)``; ``T_i = exp(-sum_{j<i} sigma_j delta_j)`` (the exclusive cumulative product of
  ``1 - alpha``, computed as a sum of optical depths, which is exact and stable); ``w_i = alpha_i
  T_i``. Returns ``rgb = sum w_i rgb_i`` (no background), ``acc = sum w_i`` (opacity, <= 1),
  ``depth`` and ``weights`` [..., S]. ``depth`` is the expected depth of the *visible surface*,
  ``sum w_i t_i / acc``, independent of how opaque the ray is; where ``acc < 1e-4`` (nothing
  there) it is ``far``.
  """
  deltas = jnp.concatenate([t[..., 1:] - t[..., :-1], far[..., None] - t[..., -1:]], -1)
  tau = sigma * jnp.maximum(deltas, 0.0)
  alpha = -jnp.expm1(-tau)
  trans = jnp.exp(-jnp.concatenate([jnp.zeros_like(tau[..., :1]),
                                    jnp.cumsum(tau[..., :-1], -1)], -1))
  weights = alpha * trans
  acc = jnp.sum(weights, -1)
  depth = jnp.sum(weights * t, -1) / jnp.maximum(acc, 1e-6)
  depth = jnp.where(acc > 1e-4, depth, far)
  return {"rgb": jnp.sum(weights[..., None] * rgb, -2), "acc": acc, "depth": depth,
          "weights": weights}


FieldFn = Callable[[jax.Array, jax.Array], tuple[jax.Array, ...]]


def _shade(field_fn: FieldFn, origins, directions, t, far, hit, background_rgb) -> dict:
  """Evaluates the field at depths ``t`` and composites over the background.

  A field may return a third value, per-sample features ``aux`` [..., S, A] (region weights,
  offsets); their weighted sum along the ray ``sum w_i aux_i`` is returned as ``aux``.
  """
  points = origins[..., None, :] + t[..., None] * directions[..., None, :]
  sigma, rgb, *aux = field_fn(points, directions)
  # Missed rays: zero density, and zero colour too so that a non-finite field value there
  # cannot leak into the composite (0 * nan = nan).
  sigma = jnp.where(hit[..., None], sigma, 0.0)
  rgb = jnp.where(hit[..., None, None], rgb, 0.0)
  out = composite(sigma, rgb, t, far)
  out["rgb"] = out["rgb"] + (1.0 - out["acc"][..., None]) * background_rgb
  out["t"] = t
  if aux:
    a = jnp.where(hit[..., None, None], aux[0], 0.0)
    out["aux"] = jnp.sum(out["weights"][..., None] * a, -2)
  return out


def render_rays(field_fn: FieldFn, rng: jax.Array | None, origins: jax.Array,
                directions: jax.Array, near: jax.Array, far: jax.Array, hit: jax.Array, *,
                num_coarse: int, num_fine: int, randomized: bool,
                background_rgb: jax.Array) -> dict:
  """Volume-renders rays [..., 3] through ``field_fn(points [..., S, 3], dirs [..., 3]) ->
  (sigma [..., S], rgb [..., S, 3])`` (the caller closes over conditioning and normalisation).

  Coarse pass: ``num_coarse`` stratified samples in ``[near, far]``. Fine pass (``num_fine >
  0``): ``num_fine`` samples drawn from the coarse weights (``sample_pdf`` on bins centred
  on the coarse samples), merged and sorted with the coarse samples, and the same field
  evaluated on all of them. Rays with ``hit=False`` get zero density, so their colour is
  exactly ``background_rgb`` ([..., 3] or broadcastable). Both passes composite over the
  background: ``rgb + (1 - acc) * bg``.
  ``rng`` may be None only when not ``randomized``.

  Returns ``rgb``, ``depth``, ``acc``, ``weights``, ``t`` of the final pass and ``coarse_rgb``,
  ``coarse_depth``, ``coarse_acc``, ``coarse_weights`` (the final pass is the coarse pass when
  ``num_fine == 0``); with a field that returns per-sample ``aux`` features (see ``_shade``),
  also their composite ``aux`` [..., A] of the final pass.
  """
  if randomized and rng is None:
    raise ValueError("render_rays(randomized=True) needs an rng")
  rng_c, rng_f = (None, None) if rng is None else jax.random.split(rng)
  t = stratified_samples(rng_c, near, far, num_coarse, randomized)
  coarse = _shade(field_fn, origins, directions, t, far, hit, background_rgb)
  out = coarse
  if num_fine > 0:
    # Bins centred on the coarse samples (NeRF): an occupied sample t_i after an empty t_i-1
    # puts the surface in (t_i-1, t_i], so its fine samples should straddle t_i rather than
    # follow it (as bins [t_i, t_i+1) would).
    mids = 0.5 * (t[..., 1:] + t[..., :-1])
    bins = jnp.concatenate([near[..., None], mids, far[..., None]], -1)
    t_fine = sample_pdf(rng_f, bins, coarse["weights"], num_fine, randomized)
    t_all = jnp.sort(jnp.concatenate([t, t_fine], -1), -1)
    out = _shade(field_fn, origins, directions, t_all, far, hit, background_rgb)
  result = {"rgb": out["rgb"], "depth": out["depth"], "acc": out["acc"],
            "weights": out["weights"], "t": out["t"], "coarse_rgb": coarse["rgb"],
            "coarse_depth": coarse["depth"], "coarse_acc": coarse["acc"],
            "coarse_weights": coarse["weights"]}
  if "aux" in out:
    result["aux"] = out["aux"]
  return result

"""Coordinate grids, bilinear grid sampling and resampling of images and flows (NHWC).

Conventions follow the TPSMM reference (yoyo-nb/Thin-Plate-Spline-Motion-Model) so that its
keypoints, flows and hyper-parameters (``kp_variance=0.01``, TPS regulariser) keep their meaning:

* Normalised coordinates are ``(x, y)`` in ``[-1, 1]``, ``x`` along the width and ``-1`` / ``+1``
  the *centres* of the first / last pixel (``modules/util.py: make_coordinate_grid`` uses
  ``2 * i / (n - 1) - 1``).
* Sampling is ``F.grid_sample(..., align_corners=True)``, zero padding, bilinear weights
  (``modules/dense_motion.py: create_deformed_source_image`` and
  ``modules/inpainting_network.py: deform_input``). Consistently with the grid above, normalised
  ``x`` maps to the continuous pixel index ``(x + 1) / 2 * (W - 1)``, so the identity grid returns
  the image exactly. ``align_corners=False`` is available for completeness.
* Flows are resized with bilinear ``align_corners=True`` interpolation (``deform_input``), and the
  hourglass blocks upsample with nearest-neighbour ``F.interpolate(scale_factor=2)``.

Everything is pure ``jnp``, batched on the leading axis and differentiable in both the image and
the grid (the gradient with respect to the grid is that of the bilinear weights, as in PyTorch;
it is zero across the integer lattice's measure-zero kinks).
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp


def coordinate_grid(h: int, w: int, dtype=jnp.float32) -> jax.Array:
  """``[h, w, 2]`` grid of ``(x, y)`` pixel-centre coordinates in ``[-1, 1]`` (corners included).

  A size-1 axis gets the single coordinate ``-1`` (the reference divides by ``n - 1 = 0``; a
  one-pixel axis has no meaningful normalised coordinate anyway).
  """
  def axis(n):
    return 2.0 * jnp.arange(n, dtype=dtype) / max(n - 1, 1) - 1.0
  x, y = axis(w), axis(h)
  return jnp.stack([jnp.broadcast_to(x[None, :], (h, w)), jnp.broadcast_to(y[:, None], (h, w))],
                   axis=-1)


def normalized_to_pixel(coord: jax.Array, size: int, align_corners: bool = True) -> jax.Array:
  """Normalised coordinate in ``[-1, 1]`` -> continuous pixel index along an axis of ``size``."""
  if align_corners:
    return (coord + 1.0) * 0.5 * (size - 1)
  return ((coord + 1.0) * size - 1.0) * 0.5


def _reflect(coord: jax.Array, size: int, align_corners: bool) -> jax.Array:
  """PyTorch's ``reflect_coordinates`` followed by clipping, for ``padding_mode='reflection'``.

  Reflects about the border pixel centres (``align_corners``) or the border pixel edges.
  """
  if align_corners:
    low, span = 0.0, float(size - 1)
  else:
    low, span = -0.5, float(size)
  if span <= 0:
    return jnp.zeros_like(coord)
  d = jnp.abs(coord - low)
  extra = jnp.mod(d, span)
  flips = jnp.floor(d / span)
  out = jnp.where(jnp.mod(flips, 2) == 0, extra + low, span - extra + low)
  return jnp.clip(out, 0, size - 1)


def grid_sample(image: jax.Array, grid: jax.Array, align_corners: bool = True,
                padding_mode: str = "zeros") -> jax.Array:
  """Bilinear sampling, ``F.grid_sample(mode='bilinear')`` for NHWC.

  Args:
    image: ``[B, H, W, C]``.
    grid: ``[B, Ho, Wo, 2]`` of normalised ``(x, y)``; ``(-1, -1)`` is the centre of the top-left
      pixel when ``align_corners`` (the reference's setting).
    align_corners: PyTorch's flag of the same name.
    padding_mode: ``'zeros'`` (each of the four neighbours outside the image contributes zero, so
      a sample half a pixel beyond the border gets half the border value; used for all warps in
      TPSMM), ``'border'`` (coordinates clamped) or ``'reflection'`` (coordinates reflected; the
      reference's equivariance loss warps the driving frame this way).

  Returns:
    ``[B, Ho, Wo, C]``.
  """
  b, h, w, c = image.shape
  if grid.ndim != 4 or grid.shape[0] != b or grid.shape[-1] != 2:
    raise ValueError(f"grid must be [B={b}, Ho, Wo, 2], got {grid.shape}")
  if padding_mode not in ("zeros", "border", "reflection"):
    raise ValueError(f"unknown padding_mode {padding_mode!r}")
  ho, wo = grid.shape[1:3]
  ix = normalized_to_pixel(grid[..., 0], w, align_corners).reshape(b, -1)
  iy = normalized_to_pixel(grid[..., 1], h, align_corners).reshape(b, -1)
  if padding_mode == "border":
    ix, iy = jnp.clip(ix, 0, w - 1), jnp.clip(iy, 0, h - 1)
  elif padding_mode == "reflection":
    ix, iy = _reflect(ix, w, align_corners), _reflect(iy, h, align_corners)
  x0, y0 = jnp.floor(ix), jnp.floor(iy)
  fx, fy = ix - x0, iy - y0
  x0, y0 = x0.astype(jnp.int32), y0.astype(jnp.int32)
  flat = image.reshape(b, h * w, c)

  def corner(xi, yi, weight):
    valid = (xi >= 0) & (xi <= w - 1) & (yi >= 0) & (yi <= h - 1)
    index = jnp.clip(yi, 0, h - 1) * w + jnp.clip(xi, 0, w - 1)
    values = jnp.take_along_axis(flat, index[..., None], axis=1)
    return values * jnp.where(valid, weight, 0.0).astype(image.dtype)[..., None]

  out = (corner(x0, y0, (1 - fx) * (1 - fy)) + corner(x0 + 1, y0, fx * (1 - fy))
         + corner(x0, y0 + 1, (1 - fx) * fy) + corner(x0 + 1, y0 + 1, fx * fy))
  return out.reshape(b, ho, wo, c)


def _interp_matrix(n_out: int, n_in: int, dtype) -> jax.Array:
  """``[n_out, n_in]`` linear-interpolation weights, ``align_corners=True``."""
  scale = (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
  src = jnp.arange(n_out, dtype=jnp.float32) * scale
  lo = jnp.clip(jnp.floor(src), 0, n_in - 1).astype(jnp.int32)
  hi = jnp.minimum(lo + 1, n_in - 1)
  frac = src - lo
  m = (jax.nn.one_hot(lo, n_in, dtype=jnp.float32) * (1 - frac)[:, None]
       + jax.nn.one_hot(hi, n_in, dtype=jnp.float32) * frac[:, None])
  return m.astype(dtype)


def resize_bilinear(x: jax.Array, size: Sequence[int]) -> jax.Array:
  """``F.interpolate(x, size, mode='bilinear', align_corners=True)`` for ``[B, H, W, C]``.

  ``jax.image.resize`` uses half-pixel centres (``align_corners=False``), which would shift a flow
  defined on the corner-aligned grid; this separable version keeps the corners fixed.
  """
  h, w = size
  if x.shape[1:3] == (h, w):
    return x
  mh = _interp_matrix(h, x.shape[1], x.dtype)
  mw = _interp_matrix(w, x.shape[2], x.dtype)
  return jnp.einsum("oh,bhwc,pw->bopc", mh, x, mw)


def resize_flow(flow: jax.Array, size: Sequence[int]) -> jax.Array:
  """Resize a ``[B, H, W, 2]`` sampling grid to ``size``; values are normalised so unchanged."""
  return resize_bilinear(flow, size)


def warp(image: jax.Array, flow: jax.Array) -> jax.Array:
  """Backward-warp ``image`` ``[B, H, W, C]`` with a sampling grid at any resolution.

  The grid is first resized to the image (``deform_input`` in the reference).
  """
  return grid_sample(image, resize_flow(flow, image.shape[1:3]))


def upsample_nearest(x: jax.Array, factor: int = 2) -> jax.Array:
  """``F.interpolate(x, scale_factor=factor)`` (nearest) for ``[B, H, W, C]``."""
  return jnp.repeat(jnp.repeat(x, factor, axis=1), factor, axis=2)


def compose_flows(outer: jax.Array, inner: jax.Array) -> jax.Array:
  """Grid of ``warp(warp(img, outer), inner)``: ``outer`` evaluated at the points of ``inner``.

  Both are ``[B, H, W, 2]`` sampling grids (``outer`` at any resolution). The *displacement*
  ``outer - identity`` is interpolated, so the result is exact for an affine ``outer`` at points
  inside the image, and outside it the displacement fades to zero (identity) instead of the
  grid fading to the image centre, which zero-padded sampling of ``outer`` itself would give.
  """
  b, h, w, _ = outer.shape
  displacement = outer - coordinate_grid(h, w, outer.dtype)[None]
  return grid_sample(displacement, inner) + inner

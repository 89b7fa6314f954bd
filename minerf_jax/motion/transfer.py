"""Keypoint motion transfer for animation at inference (FOMM / TPSMM "relative" mode).

Animating a source image with another person's video cannot use the driving keypoints as they
are: they carry the driving face's identity (shape, position, size). The reference (``demo.py:
relative_kp``, following FOMM) transfers only the *motion*: the displacement of each driving
keypoint from its position in the first driving frame, scaled by the ratio of face sizes, is
added to the source keypoints:

    kp_new = kp_source + (kp_driving - kp_driving_initial) * sqrt(area(kp_source) /
                                                                  area(kp_driving_initial)),

where ``area`` is the area of the convex hull of all K*5 keypoints (``scipy.spatial.ConvexHull``
in the reference, of batch element 0 only, applied to the whole batch; here each batch element
uses its own areas, identical for the usual batch of one). The convex-hull area is computed in
pure ``jnp`` so the whole transfer is jittable and vmappable: a directed pair ``(i, j)`` is a
counter-clockwise hull edge iff no point lies strictly to its right and none strictly inside the
segment (collinear points split an edge into its pieces), and the shoelace sum over hull edges is
twice the area. That is O(N^3) work for N points, about 125k comparisons for TPSMM's 50, cheaper
than any host round trip. Duplicated points are counted once.

FOMM-style keypoints (``motion/fomm.py``: dicts with ``value`` ``[B, K, 2]`` and ``jacobian``
``[B, K, 2, 2]``) also move their Jacobians relatively (``use_relative_jacobian`` in FOMM's and
MCNet's ``normalize_kp``): ``J_new = (J_driving J_driving_initial^{-1}) J_source``;
``relative_motion`` takes either kind.

``mode='standard'`` uses the driving keypoints unchanged (same identity reenactment);
``adapt_scale=False`` skips the area ratio.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

TRANSFER_MODES = ("relative", "standard")


def _cross(o: jax.Array, a: jax.Array, b: jax.Array) -> jax.Array:
  """z of ``(a - o) x (b - o)`` with broadcasting over leading dims."""
  return (a[..., 0] - o[..., 0]) * (b[..., 1] - o[..., 1]) - (a[..., 1] - o[..., 1]) * (
      b[..., 0] - o[..., 0])


def convex_hull_area(points: jax.Array, eps: float = 1e-7) -> jax.Array:
  """Area of the convex hull of ``points`` ``[..., N, 2]`` -> ``[...]`` (0 for degenerate sets).

  ``eps`` is the collinearity tolerance on cross products (coordinates are O(1)).
  """
  n = points.shape[-2]
  p_i = points[..., :, None, None, :]      # edge start   [..., N, 1, 1, 2]
  p_j = points[..., None, :, None, :]      # edge end     [..., 1, N, 1, 2]
  p_k = points[..., None, None, :, :]      # tested point [..., 1, 1, N, 2]
  side = _cross(p_i, p_j, p_k)                                              # [..., N, N, N]
  edge = p_j - p_i
  along = jnp.sum((p_k - p_i) * edge, axis=-1)
  length2 = jnp.sum(jnp.square(edge), axis=-1)
  inside = (jnp.abs(side) <= eps) & (along > eps) & (along < length2 - eps)
  # Keep the first of coincident points only.
  d2 = jnp.sum(jnp.square(points[..., :, None, :] - points[..., None, :, :]), axis=-1)
  earlier = jnp.tril(jnp.ones((n, n), bool), k=-1)
  unique = ~jnp.any((d2 <= eps * eps) & earlier, axis=-1)                   # [..., N]
  valid_k = unique[..., None, None, :]
  is_edge = ~jnp.any(((side < -eps) | inside) & valid_k, axis=-1)           # [..., N, N]
  is_edge &= unique[..., :, None] & unique[..., None, :] & ~jnp.eye(n, dtype=bool)
  cross_ij = (points[..., :, None, 0] * points[..., None, :, 1]
              - points[..., :, None, 1] * points[..., None, :, 0])
  return 0.5 * jnp.sum(jnp.where(is_edge, cross_ij, 0.0), axis=(-1, -2))


def relative_keypoints(kp_source: jax.Array, kp_driving: jax.Array,
                       kp_driving_initial: jax.Array, adapt_scale: bool = True) -> jax.Array:
  """``kp_source + (kp_driving - kp_driving_initial) * scale``, all ``[B, N, 2]``.

  ``scale = sqrt(area(kp_source) / area(kp_driving_initial))`` per batch element when
  ``adapt_scale``, else 1.
  """
  diff = kp_driving - kp_driving_initial
  if adapt_scale:
    scale = jnp.sqrt(convex_hull_area(kp_source) / convex_hull_area(kp_driving_initial))
    diff = diff * scale[:, None, None]
  return kp_source + diff


def relative_motion(kp_source, kp_driving, kp_driving_initial, adapt_scale: bool = True):
  """``relative_keypoints`` for plain ``[B, N, 2]`` keypoints, or for FOMM dicts (``value`` and
  ``jacobian``): values as ``relative_keypoints``, Jacobians ``J_d J_0^{-1} J_s``."""
  if not isinstance(kp_source, dict):
    return relative_keypoints(kp_source, kp_driving, kp_driving_initial, adapt_scale)
  out = {"value": relative_keypoints(kp_source["value"], kp_driving["value"],
                                     kp_driving_initial["value"], adapt_scale)}
  if "jacobian" in kp_source:
    change = jnp.matmul(kp_driving["jacobian"], jnp.linalg.inv(kp_driving_initial["jacobian"]))
    out["jacobian"] = jnp.matmul(change, kp_source["jacobian"])
  return out


def transfer_keypoints(kp_source: jax.Array, kp_driving: jax.Array,
                       kp_driving_initial: jax.Array, mode: str = "relative",
                       adapt_scale: bool = True) -> jax.Array:
  """Keypoints to drive the source with; ``mode`` in ``TRANSFER_MODES``."""
  if mode == "standard":
    return kp_driving
  if mode == "relative":
    return relative_keypoints(kp_source, kp_driving, kp_driving_initial, adapt_scale)
  raise ValueError(f"mode={mode!r} is not one of {TRANSFER_MODES}")

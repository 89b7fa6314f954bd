"""Thin-plate-spline and affine transforms of normalised ``(x, y)`` coordinates.

TPSMM (Zhao & Zhang, CVPR 2022) describes the motion of each of K object parts by a thin-plate
spline fitted on 5 keypoints, mapping *driving* frame coordinates to *source* frame coordinates
(backward warping, Eq. 2), plus one affine transform for the background:

    T(p) = A [p; 1] + sum_i w_i U(||p - c_i||^2),    U(r2) = r2 log r2,

with control points ``c_i`` the driving keypoints. ``A`` (2x3) and ``w`` (n x 2) solve the
linear system ``[[K, P], [P^T, 0]] [w; A^T] = [kp_source; 0]`` with ``K_ij = U(||c_i - c_j||^2)``
and ``P = [c, 1]`` (``modules/util.py: TPS`` in the reference, mode ``'kp'``). The kernel takes
the *squared* distance, ``U = r2 log(r2 + 1e-9)``, as the reference does (``r^2 log r^2`` is
twice the textbook ``r^2 log r``; the fit absorbs the factor, so the transform is the same).

Regularisation. The reference adds ``0.01 * I`` to the whole ``(n+3) x (n+3)`` system before
inverting it (including the zero block), which keeps the solve well-posed when keypoints nearly
coincide (they start clumped at initialisation) but makes the spline an approximating rather than
an interpolating one: control points then map *close to* but not exactly onto their targets.
``regularization`` defaults to the reference's 0.01; with 0 the spline interpolates exactly.
We solve with ``jnp.linalg.solve`` instead of forming the inverse.

Random transforms for the equivariance loss (mode ``'random'`` in the reference): an affine
``I + N(0, sigma_affine)`` plus a TPS on a fixed ``points_tps x points_tps`` grid with
``N(0, sigma_tps)`` weights that, as in the reference, are *shared by x and y* (one weight per
control point, added to both coordinates). Both kinds are the same ``TPS`` tuple here: the
weights' last axis is 2 or 1 (broadcast).

Two radial kernels (``KERNELS``): TPSMM's ``'tpsmm'`` above, and FOMM's ``'fomm'`` of the random
transform in FOMM and MCNet (``modules/model.py: Transform``): ``U(d) = d^2 log(d + 1e-6)`` of
the *L1* distance ``d = |dx| + |dy|``. ``warp_points`` / ``warp_grid`` take ``kernel``.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from minerf_jax.motion import warp

KERNEL_EPS = 1e-9          # inside the log of the radial basis, as in the reference
FOMM_KERNEL_EPS = 1e-6     # FOMM's Transform: d^2 log(d + 1e-6), d the L1 distance
KERNELS = ("tpsmm", "fomm")
DEFAULT_REGULARIZATION = 0.01


class TPS(NamedTuple):
  """A batch of thin-plate splines ``p -> affine @ [p; 1] + sum_i weights_i U(|p - c_i|^2)``.

  Attributes:
    affine: ``[..., 2, 3]``.
    control_points: ``[..., n, 2]``.
    weights: ``[..., n, D]`` with ``D = 2`` (fitted) or ``1`` (shared by x and y).
  """
  affine: jax.Array
  control_points: jax.Array
  weights: jax.Array


def radial_basis(r2: jax.Array) -> jax.Array:
  """``U(r2) = r2 log(r2 + eps)`` of a *squared* distance (0 at 0, no NaN gradient there)."""
  return r2 * jnp.log(r2 + KERNEL_EPS)


def _pairwise_sq_dist(a: jax.Array, b: jax.Array) -> jax.Array:
  """``[..., P, 2] x [..., n, 2] -> [..., P, n]`` squared distances (broadcast leading dims)."""
  return jnp.sum(jnp.square(a[..., :, None, :] - b[..., None, :, :]), axis=-1)


def fit_tps(kp_from: jax.Array, kp_to: jax.Array,
            regularization: float = DEFAULT_REGULARIZATION) -> TPS:
  """Fit splines mapping ``kp_from`` ``[..., n, 2]`` onto ``kp_to`` (same shape), ``n >= 3``.

  For TPSMM's dense motion ``kp_from`` is the driving and ``kp_to`` the source keypoints, grouped
  ``[B, K, 5, 2]``: the result warps driving-frame coordinates into the source frame.
  """
  if kp_from.shape != kp_to.shape or kp_from.shape[-1] != 2:
    raise ValueError(f"keypoints must both be [..., n, 2]: {kp_from.shape} vs {kp_to.shape}")
  n = kp_from.shape[-2]
  lead = kp_from.shape[:-2]
  dtype = kp_from.dtype
  k = radial_basis(_pairwise_sq_dist(kp_from, kp_from))                        # [..., n, n]
  p = jnp.concatenate([kp_from, jnp.ones(lead + (n, 1), dtype)], axis=-1)     # [..., n, 3]
  top = jnp.concatenate([k, p], axis=-1)                                      # [..., n, n+3]
  bottom = jnp.concatenate([jnp.swapaxes(p, -1, -2), jnp.zeros(lead + (3, 3), dtype)], axis=-1)
  system = jnp.concatenate([top, bottom], axis=-2)                            # [..., n+3, n+3]
  system = system + regularization * jnp.eye(n + 3, dtype=dtype)
  rhs = jnp.concatenate([kp_to, jnp.zeros(lead + (3, 2), dtype)], axis=-2)    # [..., n+3, 2]
  solution = jnp.linalg.solve(system, rhs)
  # Rows n.. are the coefficients of (x, y, 1): transpose to the usual [2, 3] affine.
  return TPS(affine=jnp.swapaxes(solution[..., n:, :], -1, -2),
             control_points=kp_from, weights=solution[..., :n, :])


def affine_points(theta: jax.Array, points: jax.Array) -> jax.Array:
  """``theta`` ``[..., 2, 3]`` applied to ``points`` ``[..., P, 2]`` (leading dims broadcast)."""
  return (jnp.matmul(points, jnp.swapaxes(theta[..., :, :2], -1, -2))
          + theta[..., None, :, 2])


def _basis(points: jax.Array, control_points: jax.Array, kernel: str) -> jax.Array:
  """``[..., P, n]`` radial basis of ``kernel`` (module docstring) between points and controls."""
  if kernel == "tpsmm":
    return radial_basis(_pairwise_sq_dist(points, control_points))
  if kernel == "fomm":
    d = jnp.sum(jnp.abs(points[..., :, None, :] - control_points[..., None, :, :]), axis=-1)
    return jnp.square(d) * jnp.log(d + FOMM_KERNEL_EPS)
  raise ValueError(f"TPS kernel {kernel!r}; use one of {KERNELS}")


def warp_points(tps: TPS, points: jax.Array, kernel: str = "tpsmm") -> jax.Array:
  """Transform ``points`` ``[..., P, 2]``; leading dims broadcast against the spline's."""
  basis = _basis(points, tps.control_points, kernel)                           # [..., P, n]
  return affine_points(tps.affine, points) + jnp.matmul(basis, tps.weights)


def jacobian_at(tps: TPS, points: jax.Array, kernel: str = "tpsmm") -> jax.Array:
  """``[B, P, 2, 2]`` Jacobians ``d T(p) / d p`` (rows: output x, y) of a batch of splines at
  ``points`` ``[B, P, 2]`` (FOMM's ``Transform.jacobian``, by forward-mode differentiation)."""
  def one(spline, p):
    return jax.jacfwd(lambda q: warp_points(spline, q[None], kernel)[0])(p)
  return jax.vmap(jax.vmap(one, in_axes=(None, 0)))(tps, points)


def warp_grid(tps: TPS, h: int, w: int, kernel: str = "tpsmm") -> jax.Array:
  """The spline applied to the ``[h, w]`` identity grid: ``[..., h, w, 2]`` sampling grid."""
  grid = warp.coordinate_grid(h, w, tps.affine.dtype).reshape(h * w, 2)
  out = warp_points(tps, grid, kernel)
  return out.reshape(out.shape[:-2] + (h, w, 2))


def identity_affine(batch_shape=(), dtype=jnp.float32) -> jax.Array:
  """``[*batch_shape, 2, 3]`` identity affine transforms."""
  return jnp.broadcast_to(jnp.eye(2, 3, dtype=dtype), tuple(batch_shape) + (2, 3))


def affine_grid(theta: jax.Array, h: int, w: int) -> jax.Array:
  """``theta`` ``[..., 2, 3]`` applied to the identity grid: ``[..., h, w, 2]``."""
  grid = warp.coordinate_grid(h, w, theta.dtype).reshape(h * w, 2)
  out = affine_points(theta, grid)
  return out.reshape(out.shape[:-2] + (h, w, 2))


def homogeneous_points(matrix: jax.Array, points: jax.Array) -> jax.Array:
  """A ``[..., 3, 3]`` projective matrix applied to ``[..., P, 2]`` points, then dehomogenised.

  This is how the reference applies the background transform (``create_transformations``); the
  background predictor's matrices have last row ``[0, 0, 1]``, so the division is by one.
  """
  ones = jnp.ones(points.shape[:-1] + (1,), points.dtype)
  out = jnp.matmul(jnp.concatenate([points, ones], -1), jnp.swapaxes(matrix, -1, -2))
  return out[..., :2] / out[..., 2:3]


def background_grid(bg_param: jax.Array | None, h: int, w: int, batch: int = 1) -> jax.Array:
  """``[B, h, w, 2]`` background sampling grid: identity, or ``bg_param`` ``[B, 3, 3]`` applied."""
  grid = warp.coordinate_grid(h, w)
  if bg_param is None:
    return jnp.broadcast_to(grid[None], (batch, h, w, 2))
  out = homogeneous_points(bg_param, grid.reshape(h * w, 2).astype(bg_param.dtype))
  return out.reshape(bg_param.shape[:-2] + (h, w, 2))


def random_tps(rng: jax.Array, batch: int, sigma_affine: float = 0.05, sigma_tps: float = 0.005,
               points_tps: int = 5, dtype=jnp.float32) -> TPS:
  """Random smooth deformations for the equivariance loss (vox-256 ``transform_params``)."""
  ka, kw = jax.random.split(rng)
  affine = identity_affine((batch,), dtype) + sigma_affine * jax.random.normal(
      ka, (batch, 2, 3), dtype)
  control = warp.coordinate_grid(points_tps, points_tps, dtype).reshape(1, -1, 2)
  weights = sigma_tps * jax.random.normal(kw, (batch, points_tps * points_tps, 1), dtype)
  return TPS(affine=affine, control_points=jnp.broadcast_to(control, (batch,) + control.shape[1:]),
             weights=weights)

"""Camera maths in one place: pinholes, projection and unprojection, rays, box hits, head poses.

Everything that maps between pixels, rays and 3-D points imports this module (``data/``,
``nerf/``, ``head3d/``, ``metrics/``); it imports nothing of the project, so it sits below all of
them.

Conventions (the whole codebase's):

* Cameras are OpenCV pinholes at the origin: x right, y down, z forward. A pixel's centre is
  ``(x + 0.5, y + 0.5)`` and intrinsics are the upper-triangular
  ``K = [[fx, s, cx], [0, fy, cy], [0, 0, 1]]``. Depth means z-depth (distance along the optical
  axis), not distance along the ray.
* A pose ``(R, t)`` maps a frame's points into another's: ``X_out = R X_in + t``. Head poses map
  head coordinates into the camera: ``X_cam = R X_head + t``.
* Euler angles are ``R = Ry(yaw) Rx(pitch) Rz(roll)`` in radians (positive yaw turns the face
  towards image left); ``euler_degrees`` inverts it.

Every function takes numpy or jax arrays and answers in kind: numpy in, numpy out with the input's
precision kept (the synthetic generator runs in float64 and stays bit-exact), jax in (or a tracer
under ``jit``), jax out. Leading axes broadcast.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Array = Any  # np.ndarray | jax.Array
Pose = tuple[Array, Array]  # (R [..., 3, 3], t [..., 3]): X_out = R X_in + t


def _xp(*arrays):
  """jax.numpy when any argument is a jax array (or tracer), else numpy."""
  return jnp if any(isinstance(a, jax.Array) for a in arrays) else np


# ----------------------------------------------------------------------------------------------
# Pinholes.


def intrinsics(focal: float, cx: float, cy: float) -> np.ndarray:
  """float32 [3, 3] square-pixel, zero-skew intrinsics."""
  return np.array([[focal, 0.0, cx], [0.0, focal, cy], [0.0, 0.0, 1.0]], np.float32)


def scale_intrinsics(k: Array, sx: float, sy: float | None = None) -> Array:
  """Intrinsics of the same camera with its image resized by ``(sx, sy)`` ([..., 3, 3]).

  With pixel centres at ``+0.5`` a resize scales pixel positions exactly: row 0 of ``K`` by
  ``sx``, row 1 by ``sy``.
  """
  xp = _xp(k)
  sy = sx if sy is None else sy
  return k * xp.asarray([[sx], [sy], [1.0]], dtype=k.dtype)


def pixel_grid(height: int, width: int, offset: tuple[float, float] = (0.5, 0.5),
               dtype=np.float32) -> np.ndarray:
  """[H, W, 2] pixel positions ``(x + ox, y + oy)``, x along the width (centres by default)."""
  y, x = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
  return np.stack([x + offset[0], y + offset[1]], -1).astype(dtype)


def unproject(pixels: Array, depth: Array, k: Array) -> Array:
  """Camera-frame points [..., 3] at z-depth ``depth`` [...] behind ``pixels`` [..., 2].

  ``K^-1 [u, v, 1] * depth``, by back substitution (skew included); ``k`` [..., 3, 3] broadcasts.
  """
  xp = _xp(pixels, depth, k)
  fx, skew, cx = k[..., 0, 0], k[..., 0, 1], k[..., 0, 2]
  fy, cy = k[..., 1, 1], k[..., 1, 2]
  y = (pixels[..., 1] - cy) / fy
  x = (pixels[..., 0] - cx - skew * y) / fx
  return xp.stack([x, y, xp.ones_like(x)], -1) * xp.asarray(depth)[..., None]


def project(points: Array, k: Array) -> Array:
  """Camera-frame points [..., 3] -> pixel positions [..., 2] (``K X`` divided by its z)."""
  xp = _xp(points, k)
  uvw = xp.einsum("...ij,...j->...i", k, points)
  return uvw[..., :2] / uvw[..., 2:3]


def ray_directions(k: Array, pixels: Array) -> Array:
  """Unit directions [..., 3] of the rays from the camera centre through ``pixels`` [..., 2]."""
  xp = _xp(k, pixels)
  d = unproject(pixels, xp.ones_like(pixels[..., 0]), k)
  return d / xp.linalg.norm(d, axis=-1, keepdims=True)


# ----------------------------------------------------------------------------------------------
# Poses.


def transform(points: Array, rotation: Array, translation: Array) -> Array:
  """``R X + t`` for points [..., 3]."""
  xp = _xp(points, rotation, translation)
  return xp.einsum("...ij,...j->...i", rotation, points) + translation


def invert(rotation: Array, translation: Array) -> Pose:
  """The inverse pose: ``(R^T, -R^T t)``."""
  xp = _xp(rotation, translation)
  r_t = xp.swapaxes(rotation, -1, -2)
  return r_t, -xp.einsum("...ij,...j->...i", r_t, translation)


def compose(outer: Pose, inner: Pose) -> Pose:
  """``outer`` after ``inner``: ``(R_o R_i, R_o t_i + t_o)``."""
  (r_o, t_o), (r_i, t_i) = outer, inner
  xp = _xp(r_o, t_o, r_i, t_i)
  return r_o @ r_i, xp.einsum("...ij,...j->...i", r_o, t_i) + t_o


def relative(pose_a: Pose, pose_b: Pose) -> Pose:
  """Camera of frame a -> camera of frame b, from head poses ``X_cam = R X_head + t`` of each."""
  return compose(pose_b, invert(*pose_a))


def reproject(pixels: Array, depth: Array, k_src: Array, pose: Pose, k_dst: Array
              ) -> tuple[Array, Array]:
  """Where the points seen at ``pixels`` with z-depth ``depth`` land in another camera.

  ``pose`` maps source-camera points into the destination camera. Returns (pixels [..., 2],
  z-depth [...]) in the destination.
  """
  points = transform(unproject(pixels, depth, k_src), *pose)
  return project(points, k_dst), points[..., 2]


def to_canonical(origins: Array, directions: Array, rotation: Array, translation: Array
                 ) -> tuple[Array, Array]:
  """Camera rays -> head coordinates for ``X_cam = R X_head + t``: ``R^T (o - t)``, ``R^T d``.

  A rotation keeps unit directions unit, so ray parameters (and near/far) mean the same distance
  in both frames.
  """
  xp = _xp(origins, directions, rotation, translation)
  o = xp.einsum("...ji,...j->...i", rotation, origins - translation)
  d = xp.einsum("...ji,...j->...i", rotation, directions)
  return o, d


def ray_box_intersect(origins: Array, directions: Array, box_min: Array, box_max: Array
                      ) -> tuple[Array, Array, Array]:
  """Slab test of rays [..., 3] against the box ``[box_min, box_max]``: ``(near, far, hit)``.

  ``near`` is clamped to >= 0 (an origin inside the box starts there; a box behind the camera is
  missed) and ``hit = far > near``. A zero direction component is replaced by a tiny positive
  one, so the slab of that axis spans +-huge when the origin lies inside it and is empty when it
  lies outside: no inf - inf NaNs. Missed rays get ``near = far = 0`` so that anything sampled
  on them is a finite point (the origin) with zero-length intervals.
  """
  xp = _xp(origins, directions, box_min, box_max)
  safe = xp.where(xp.abs(directions) < 1e-9, 1e-9, directions)
  t0 = (box_min - origins) / safe
  t1 = (box_max - origins) / safe
  near = xp.maximum(xp.max(xp.minimum(t0, t1), -1), 0.0)
  far = xp.min(xp.maximum(t0, t1), -1)
  hit = far > near
  return xp.where(hit, near, 0.0), xp.where(hit, far, 0.0), hit


# ----------------------------------------------------------------------------------------------
# Rotations.


def rotation_matrix(yaw: Array, pitch: Array, roll: Array) -> Array:
  """[..., 3, 3] ``R = Ry(yaw) Rx(pitch) Rz(roll)`` (radians).

  numpy: the sines and cosines are taken at the angles' own precision and the matrices are
  float64 (what the synthetic generator's data was made with); jax: the angles' dtype throughout.
  """
  xp = _xp(yaw, pitch, roll)
  trig = [f(xp.asarray(a)) for a in (yaw, pitch, roll) for f in (xp.cos, xp.sin)]
  if xp is np:
    trig = [t.astype(np.float64) for t in trig]
  cy, sy, cp, sp, cr, sr = trig
  zero, one = xp.zeros_like(cy), xp.ones_like(cy)

  def mat(rows):
    return xp.stack([xp.stack(r, -1) for r in rows], -2)

  ry = mat([[cy, zero, sy], [zero, one, zero], [-sy, zero, cy]])
  rx = mat([[one, zero, zero], [zero, cp, -sp], [zero, sp, cp]])
  rz = mat([[cr, -sr, zero], [sr, cr, zero], [zero, zero, one]])
  return ry @ rx @ rz


def euler_degrees(rotation: Array) -> Array:
  """(yaw, pitch, roll) in degrees [..., 3] of ``R = Ry(yaw) Rx(pitch) Rz(roll)``."""
  xp = _xp(rotation)
  r = rotation if xp is jnp else np.asarray(rotation, np.float64)
  pitch = xp.arcsin(xp.clip(-r[..., 1, 2], -1, 1))
  yaw = xp.arctan2(r[..., 0, 2], r[..., 2, 2])
  roll = xp.arctan2(r[..., 1, 0], r[..., 1, 1])
  return xp.degrees(xp.stack([yaw, pitch, roll], -1))


def rotation_angle_degrees(r1: Array, r2: Array) -> Array:
  """Geodesic angle in degrees between rotations [..., 3, 3]: the angle of ``R1^T R2``."""
  xp = _xp(r1, r2)
  if xp is np:
    r1, r2 = np.asarray(r1, np.float64), np.asarray(r2, np.float64)
  m = xp.swapaxes(r1, -1, -2) @ r2
  skew = xp.stack([m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0],
                   m[..., 1, 0] - m[..., 0, 1]], -1)
  sin = xp.linalg.norm(skew, axis=-1) / 2
  cos = (xp.trace(m, axis1=-2, axis2=-1) - 1) / 2
  return xp.degrees(xp.arctan2(sin, cos))


def axis_angle_matrix(v: Array) -> Array:
  """Rodrigues: rotation [..., 3, 3] by ``|v|`` radians about ``v / |v|`` (v [..., 3]).

  Smooth at ``v = 0`` (series expansions of ``sin(a)/a`` and ``(1 - cos a)/a^2`` below 1e-3 rad),
  so a network can predict ``v`` and be differentiated through it at the identity.
  """
  xp = _xp(v)
  a2 = xp.sum(v * v, -1)[..., None, None]
  small = a2 < 1e-6
  a2_safe = xp.where(small, 1.0, a2)
  a = xp.sqrt(a2_safe)
  sinc = xp.where(small, 1.0 - a2 / 6.0, xp.sin(a) / a)
  cosc = xp.where(small, 0.5 - a2 / 24.0, (1.0 - xp.cos(a)) / a2_safe)
  x, y, z = v[..., 0], v[..., 1], v[..., 2]
  zero = xp.zeros_like(x)
  hat = xp.stack([xp.stack([zero, -z, y], -1), xp.stack([z, zero, -x], -1),
                  xp.stack([-y, x, zero], -1)], -2)
  eye = xp.broadcast_to(xp.eye(3, dtype=hat.dtype), hat.shape)
  return eye + sinc * hat + cosc * (hat @ hat)

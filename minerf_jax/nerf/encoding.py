"""Input encodings for coordinate networks: NeRF positional encoding and a hash grid.

Both take points already normalised to roughly [-1, 1]^3 (the caller maps the canonical head box
onto that cube), so their frequencies and grid resolutions are relative to the box.

* ``PositionalEncoding`` (Mildenhall et al. 2020): parameter-free sin/cos features at octave
  frequencies. Cheap and smooth; the MLP does all the memorisation.
* ``HashGridEncoding`` (Muller et al. 2022, Instant-NGP): a pyramid of feature grids, trilinearly
  interpolated. Coarse levels whose dense grid fits the table are indexed densely (no
  collisions); fine levels share a fixed-size table through a spatial hash, and the gradient
  of the MLP resolves the collisions. Much faster convergence per step with a small MLP.
* ``TriplaneHashEncoding`` (ER-NeRF, Li et al. 2023): three 2-D multiresolution hash grids on
  the xy, yz and xz planes, each point's feature the concatenation of its three bilinear
  plane features. A 2-D table of T rows holds a 2-D level densely up to sqrt(T) cells per side
  where a 3-D one must hash beyond T^(1/3), so fine levels collide far less; the price is
  that the planes can only represent what their projections separate (the MLP combines them).
  Its output also serves 2-D fields (one plane, ``planes=('xy',)``: the torso layer).

``build_encoding`` builds any of them from ``config.model.encoding``.
"""
from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

ENCODING_KINDS = ("positional", "hashgrid", "triplane")

# Instant-NGP hash primes; the first is 1 so that one axis costs no multiplication.
_PRIMES = (1, 2654435761, 805459861)

# Axes of each tri-plane plane, by name.
PLANE_AXES = {"xy": (0, 1), "yz": (1, 2), "xz": (0, 2)}


def cell_corners(dims: int) -> np.ndarray:
  """int32 [2^dims, dims]: the corners of a unit cell, offsets in {0,1}^dims, x fastest."""
  return np.array([[(i >> k) & 1 for k in range(dims)] for i in range(2 ** dims)], np.int32)


def positional_encoding(x: jax.Array, min_deg: int, max_deg: int,
                        include_input: bool = True) -> jax.Array:
  """NeRF frequency features of ``x`` [..., D] on the last axis.

  Layout: ``[x (if include_input), sin(2^k x_j), cos(2^k x_j)]`` with all sines first, each
  block ordered degree-major (k = min_deg .. max_deg-1), coordinate-minor (j). The output has
  ``include_input * D + 2 * D * (max_deg - min_deg)`` channels. The cosines are computed as
  ``sin(. + pi/2)`` so one transcendental call covers both halves (as in mip-NeRF).
  """
  scales = 2.0 ** jnp.arange(min_deg, max_deg, dtype=x.dtype)
  xb = (x[..., None, :] * scales[:, None]).reshape(x.shape[:-1] + (-1,))
  features = jnp.sin(jnp.concatenate([xb, xb + 0.5 * jnp.pi], -1))
  return jnp.concatenate([x, features], -1) if include_input else features


class PositionalEncoding(nn.Module):
  """NeRF frequency encoding (no parameters), see ``positional_encoding``.

  Attributes:
    min_deg: lowest octave, frequency ``2^min_deg``.
    max_deg: one past the highest octave.
    include_input: whether the raw coordinates are passed through as well.
  """
  min_deg: int = 0
  max_deg: int = 6
  include_input: bool = True

  def __call__(self, x: jax.Array) -> jax.Array:
    return positional_encoding(x, self.min_deg, self.max_deg, self.include_input)


def level_resolutions(num_levels: int, base_resolution: int, max_resolution: int) -> list[int]:
  """Cells per axis of each level: ``floor(base * b^l)``, b chosen so the last level is ``max``.

  A relative tolerance guards the floor against ``base * b^(L-1)`` landing a rounding error
  below an integer (``8 * 32^(11/11)`` must give 256, not 255).
  """
  if num_levels < 1 or base_resolution < 1 or max_resolution < base_resolution:
    raise ValueError(f"hash grid needs num_levels >= 1 and 1 <= base_resolution <= "
                     f"max_resolution, got {num_levels}, {base_resolution}, {max_resolution}")
  if num_levels == 1:
    return [base_resolution]
  growth = np.exp((np.log(max_resolution) - np.log(base_resolution)) / (num_levels - 1))
  return [int(np.floor(base_resolution * growth ** level * (1 + 1e-9)))
          for level in range(num_levels)]


def grid_index(corner: jax.Array, resolution: int, table_size: int) -> jax.Array:
  """Table row of integer grid vertices ``corner`` [..., D] (D = 2 or 3) in ``[0, resolution]^D``.

  Dense row-major indexing ``i + side * (j + side * k)`` (side = resolution + 1) when the level's
  ``side^D`` vertices fit in ``table_size`` rows, else the Instant-NGP spatial hash
  ``(i * 1) xor (j * 2654435761) [xor (k * 805459861)] mod table_size`` in wrapping uint32
  arithmetic.
  """
  side = resolution + 1
  dims = corner.shape[-1]
  corner = corner.astype(jnp.uint32)
  if side ** dims <= table_size:
    index = corner[..., dims - 1]
    for d in range(dims - 2, -1, -1):
      index = corner[..., d] + side * index
    return index
  h = corner[..., 0] * jnp.uint32(_PRIMES[0])
  for d in range(1, dims):
    h = h ^ (corner[..., d] * jnp.uint32(_PRIMES[d]))
  return h % jnp.uint32(table_size)


def interpolate_level(table: jax.Array, x01: jax.Array, resolution: int) -> jax.Array:
  """Multilinear blend [..., F] of the 2^D vertex rows of ``table`` around ``x01`` [..., D] in
  [0, 1]^D scaled to ``resolution`` cells per axis (equal to a row exactly at a vertex)."""
  dims = x01.shape[-1]
  offsets = jnp.asarray(cell_corners(dims))
  pos = x01 * resolution
  base = jnp.clip(jnp.floor(pos), 0, resolution - 1).astype(jnp.int32)  # x = 1 -> last cell
  frac = pos - base
  corners = base[..., None, :] + offsets                                  # [..., 2^D, D]
  weights = jnp.prod(jnp.where(offsets == 1, frac[..., None, :], 1 - frac[..., None, :]), -1)
  values = table[grid_index(corners, resolution, table.shape[0])]         # [..., 2^D, F]
  return jnp.sum(weights[..., None] * values, -2)


def _uniform_init(scale: float):
  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -scale, scale)
  return init


class HashGridEncoding(nn.Module):
  """Multiresolution hash encoding (Muller et al. 2022) with trilinear interpolation.

  Inputs are clipped to [-1, 1]^3 and mapped to [0, res]^3 per level; each point's feature is the
  trilinear blend of its cell's 8 vertex features, so it equals a table row exactly at a vertex
  and is continuous (piecewise trilinear) everywhere. Level ``l`` has table ``level_{l}`` with
  ``min(2^log2_table_size, (res+1)^3)`` rows of ``features_per_level`` values, initialised
  uniform(-1e-4, 1e-4) as in the paper so that the MLP first sees an almost constant input.
  Vectorised over points; the Python loop runs over levels only. Output: ``num_levels *
  features_per_level`` channels, coarse levels first.

  Attributes:
    num_levels: number of resolutions L.
    features_per_level: feature channels F per level.
    log2_table_size: log2 of the maximum rows T of a level's table.
    base_resolution: cells per axis of the coarsest level.
    max_resolution: cells per axis of the finest level.
  """
  num_levels: int = 12
  features_per_level: int = 2
  log2_table_size: int = 15
  base_resolution: int = 8
  max_resolution: int = 256

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    return _multires(self, "", (jnp.clip(x, -1.0, 1.0) + 1.0) / 2.0, self.num_levels,
                     self.features_per_level, self.log2_table_size, self.base_resolution,
                     self.max_resolution)


def _multires(module: nn.Module, prefix: str, x01: jax.Array, num_levels: int,
              features_per_level: int, log2_table_size: int, base_resolution: int,
              max_resolution: int) -> jax.Array:
  """The levels of one multiresolution grid over ``x01`` [..., D], as params of ``module``
  named ``{prefix}level_{l}``; coarse levels first on the output's last axis."""
  dims = x01.shape[-1]
  features = []
  for level, res in enumerate(level_resolutions(num_levels, base_resolution, max_resolution)):
    size = min(2 ** log2_table_size, (res + 1) ** dims)
    table = module.param(f"{prefix}level_{level}", _uniform_init(1e-4),
                         (size, features_per_level))
    features.append(interpolate_level(table, x01, res))
  return jnp.concatenate(features, -1)


class TriplaneHashEncoding(nn.Module):
  """Tri-plane multiresolution hash encoding (ER-NeRF): one 2-D hash grid per plane.

  A point [..., 3] in [-1, 1]^3 (clipped) is projected onto each plane of ``planes`` (axes in
  ``PLANE_AXES``), encoded there by a 2-D multiresolution grid (bilinear, dense where a level
  fits its table, hashed beyond), and the planes' features are concatenated in ``planes``
  order: ``len(planes) * num_levels * features_per_level`` channels. Level ``l`` of plane ``p``
  is the param ``plane_{p}_level_{l}``, initialised uniform(-1e-4, 1e-4).
  A point with fewer coordinates than a plane needs (a 2-D pixel for ``planes=('xy',)``) works
  too: only the named axes are read.

  Attributes:
    planes: which planes, by name.
    num_levels, features_per_level, log2_table_size, base_resolution, max_resolution: per
      plane, as ``HashGridEncoding`` (``max_resolution`` may be much higher at the same table
      size, see the module docstring).
  """
  planes: tuple[str, ...] = ("xy", "yz", "xz")
  num_levels: int = 12
  features_per_level: int = 2
  log2_table_size: int = 14
  base_resolution: int = 8
  max_resolution: int = 256

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    unknown = [p for p in self.planes if p not in PLANE_AXES]
    if unknown or not self.planes:
      raise ValueError(f"config.model.encoding.planes={self.planes!r}: choose from "
                       f"{tuple(PLANE_AXES)}")
    x01 = (jnp.clip(x, -1.0, 1.0) + 1.0) / 2.0
    return jnp.concatenate([
        _multires(self, f"plane_{p}_", x01[..., list(PLANE_AXES[p])], self.num_levels,
                  self.features_per_level, self.log2_table_size, self.base_resolution,
                  self.max_resolution) for p in self.planes], -1)


def build_encoding(config: Mapping[str, Any]) -> nn.Module:
  """The encoding named by ``config.kind`` (``ENCODING_KINDS``); missing fields take defaults.

  ``config`` is ``config.model.encoding`` (an ``ml_collections.ConfigDict`` or any mapping); the
  fields of the other kind are ignored, so one config can carry both.
  """
  kind = config.get("kind")
  if kind == "positional":
    fields = ("min_deg", "max_deg", "include_input")
    cls = PositionalEncoding
  elif kind == "hashgrid":
    fields = ("num_levels", "features_per_level", "log2_table_size", "base_resolution",
              "max_resolution")
    cls = HashGridEncoding
  elif kind == "triplane":
    fields = ("planes", "num_levels", "features_per_level", "log2_table_size",
              "base_resolution", "max_resolution")
    cls = TriplaneHashEncoding
  else:
    raise ValueError(f"config.model.encoding.kind={kind!r} is not one of {ENCODING_KINDS}")
  values = {f: config[f] for f in fields if config.get(f) is not None}
  if "planes" in values:
    values["planes"] = tuple(values["planes"])
  return cls(**values)

"""Input encodings for coordinate networks: NeRF positional encoding and a hash grid.

Both take points already normalised to roughly [-1, 1]^3 (the caller maps the canonical head box
onto that cube), so their frequencies and grid resolutions are relative to the box.

* ``PositionalEncoding`` (Mildenhall et al. 2020): parameter-free sin/cos features at octave
  frequencies. Cheap and smooth; the MLP does all the memorisation.
* ``HashGridEncoding`` (Muller et al. 2022, Instant-NGP): a pyramid of feature grids, trilinearly
  interpolated. Coarse levels whose dense grid fits the table are indexed densely (no
  collisions); fine levels share a fixed-size table through a spatial hash, and the gradient
  of the MLP resolves the collisions. Much faster convergence per step with a small MLP.

``build_encoding`` builds either from ``config.model.encoding``.
"""
from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

ENCODING_KINDS = ("positional", "hashgrid")

# Instant-NGP hash primes; the first is 1 so that one axis costs no multiplication.
_PRIMES = (1, 2654435761, 805459861)

# The 8 corners of a unit cell, (dx, dy, dz) in {0,1}^3, x fastest.
_CORNERS = np.array([[(i >> k) & 1 for k in range(3)] for i in range(8)], np.int32)


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
  """Table row of integer grid vertices ``corner`` [..., 3] in ``[0, resolution]^3``.

  Dense row-major indexing ``i + side * (j + side * k)`` (side = resolution + 1) when the level's
  ``side^3`` vertices fit in ``table_size`` rows, else the Instant-NGP spatial hash
  ``(i * 1) xor (j * 2654435761) xor (k * 805459861) mod table_size`` in wrapping uint32
  arithmetic.
  """
  side = resolution + 1
  corner = corner.astype(jnp.uint32)
  if side ** 3 <= table_size:
    return corner[..., 0] + side * (corner[..., 1] + side * corner[..., 2])
  h = corner[..., 0] * jnp.uint32(_PRIMES[0])
  h = h ^ (corner[..., 1] * jnp.uint32(_PRIMES[1]))
  h = h ^ (corner[..., 2] * jnp.uint32(_PRIMES[2]))
  return h % jnp.uint32(table_size)


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
    x01 = (jnp.clip(x, -1.0, 1.0) + 1.0) / 2.0
    table_size = 2 ** self.log2_table_size
    offsets = jnp.asarray(_CORNERS)
    features = []
    for level, res in enumerate(level_resolutions(self.num_levels, self.base_resolution,
                                                  self.max_resolution)):
      size = min(table_size, (res + 1) ** 3)
      table = self.param(f"level_{level}", _uniform_init(1e-4), (size, self.features_per_level))
      pos = x01 * res
      base = jnp.clip(jnp.floor(pos), 0, res - 1).astype(jnp.int32)  # x = 1 -> last cell
      frac = pos - base
      corners = base[..., None, :] + offsets                          # [..., 8, 3]
      weights = jnp.prod(jnp.where(offsets == 1, frac[..., None, :], 1 - frac[..., None, :]), -1)
      values = table[grid_index(corners, res, size)]                  # [..., 8, F]
      features.append(jnp.sum(weights[..., None] * values, -2))
    return jnp.concatenate(features, -1)


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
  else:
    raise ValueError(f"config.model.encoding.kind={kind!r} is not one of {ENCODING_KINDS}")
  return cls(**{f: config[f] for f in fields if config.get(f) is not None})

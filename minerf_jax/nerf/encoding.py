"""Input encodings for coordinate networks: NeRF positional encoding and a hash grid.

Both take points normalised to [-1, 1]^3 (the head box mapped onto the unit cube).
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np


def positional_encoding(x, min_deg: int, max_deg: int, include_input: bool = True):
  """[x, sin(2^k x), cos(2^k x)] for k in [min_deg, max_deg) on the last axis."""
  scales = 2.0 ** jnp.arange(min_deg, max_deg, dtype=x.dtype)
  xb = (x[..., None, :] * scales[:, None]).reshape(x.shape[:-1] + (-1,))
  features = jnp.sin(jnp.concatenate([xb, xb + 0.5 * jnp.pi], -1))
  return jnp.concatenate([x, features], -1) if include_input else features


class PositionalEncoding(nn.Module):
  """NeRF frequency encoding (no parameters)."""
  min_deg: int = 0
  max_deg: int = 6
  include_input: bool = True

  def __call__(self, x):
    return positional_encoding(x, self.min_deg, self.max_deg, self.include_input)


_PRIMES = (1, 2654435761, 805459861)


def level_resolutions(num_levels: int, base_resolution: int, max_resolution: int) -> list[int]:
  """Grid resolution of each level: a geometric progression from base to max."""
  if num_levels == 1:
    return [base_resolution]
  growth = np.exp((np.log(max_resolution) - np.log(base_resolution)) / (num_levels - 1))
  return [int(np.floor(base_resolution * growth ** level)) for level in range(num_levels)]


def grid_index(corner: jax.Array, resolution: int, table_size: int) -> jax.Array:
  """Table row of integer grid vertices [...,3]: dense indexing when the level's grid fits the
  table, else the Instant-NGP spatial hash (xor of coordinates times primes, mod table size)."""
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
  """Multiresolution hash encoding (Muller et al. 2022) with trilinear interpolation."""
  num_levels: int = 12
  features_per_level: int = 2
  log2_table_size: int = 15
  base_resolution: int = 8
  max_resolution: int = 256

  @nn.compact
  def __call__(self, x):
    x01 = (jnp.clip(x, -1.0, 1.0) + 1.0) / 2.0
    table_size = 2 ** self.log2_table_size
    offsets = jnp.asarray([[(i >> k) & 1 for k in range(3)] for i in range(8)], jnp.int32)
    features = []
    for level, res in enumerate(level_resolutions(self.num_levels, self.base_resolution,
                                                  self.max_resolution)):
      size = min(table_size, (res + 1) ** 3)
      table = self.param(f"level_{level}", _uniform_init(1e-4), (size, self.features_per_level))
      pos = x01 * res
      base = jnp.clip(jnp.floor(pos), 0, res - 1).astype(jnp.int32)
      frac = pos - base
      corners = base[..., None, :] + offsets                       # [...,8,3]
      weights = jnp.prod(jnp.where(offsets == 1, frac[..., None, :], 1 - frac[..., None, :]), -1)
      values = table[grid_index(corners, res, size)]               # [...,8,F]
      features.append(jnp.sum(weights[..., None] * values, -2))
    return jnp.concatenate(features, -1)


def build_encoding(config: ml_collections.ConfigDict) -> nn.Module:
  """The encoding named by ``config.kind`` ('positional' | 'hashgrid')."""
  get = lambda k, d: config.get(k, d)
  if config.kind == "positional":
    return PositionalEncoding(min_deg=get("min_deg", 0), max_deg=get("max_deg", 6),
                              include_input=get("include_input", True))
  if config.kind == "hashgrid":
    return HashGridEncoding(num_levels=get("num_levels", 12),
                            features_per_level=get("features_per_level", 2),
                            log2_table_size=get("log2_table_size", 15),
                            base_resolution=get("base_resolution", 8),
                            max_resolution=get("max_resolution", 256))
  raise ValueError(f"config.model.encoding.kind={config.kind!r}: choose 'positional' or "
                   "'hashgrid'")

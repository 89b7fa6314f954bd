"""The conditioned radiance field ``(x, view direction, per-ray condition) -> (sigma, rgb)``.

Efficiency (it must train on two CPU cores): the condition is constant along a ray, so its
contribution to the first layer (and to skip layers) is one Dense per ray broadcast-added to the
per-sample layer; mathematically this is the usual concatenation. The view-direction encoding is
likewise computed once per ray. Density is ``softplus(raw + density_bias)`` (smooth, non-negative,
starting mostly transparent with the negative bias); colour is a sigmoid.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from minerf_jax.nerf import encoding as encoding_lib


class ConditionedField(nn.Module):
  encoding: nn.Module
  depth: int = 6
  width: int = 128
  skips: tuple[int, ...] = (4,)
  dir_deg: int = 4
  rgb_width: int = 64
  density_bias: float = -1.0
  view_dependent: bool = True

  @nn.compact
  def __call__(self, x: jax.Array, viewdirs: jax.Array, cond: jax.Array):
    enc = self.encoding(x)                                         # [R,S,E]
    has_cond = cond.shape[-1] > 0
    h = None
    for i in range(self.depth):
      inputs = enc if i == 0 or i in self.skips else None
      layer = nn.Dense(self.width, name=f"layer_{i}")(h if inputs is None else (
          inputs if h is None else jnp.concatenate([h, inputs], -1)))
      if (i == 0 or i in self.skips) and has_cond:
        layer = layer + nn.Dense(self.width, use_bias=False, name=f"cond_{i}")(cond)[..., None, :]
      h = nn.relu(layer)
    sigma = nn.softplus(nn.Dense(1, name="sigma")(h)[..., 0] + self.density_bias)
    feat = nn.Dense(self.rgb_width, name="bottleneck")(h)
    if self.view_dependent and self.dir_deg >= 0:
      d = encoding_lib.positional_encoding(viewdirs, 0, self.dir_deg, include_input=True)
      feat = feat + nn.Dense(self.rgb_width, use_bias=False, name="viewdir")(d)[..., None, :]
    rgb = nn.sigmoid(nn.Dense(3, name="rgb")(nn.relu(feat)))
    return sigma, rgb

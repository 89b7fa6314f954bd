"""The conditioned radiance field ``(x, view direction, per-ray condition) -> (sigma, rgb)``.

Architecture (NeRF trunk with per-ray conditioning)::

  h_0 = relu(Dense(enc(x)) + Dense_c(cond))
  h_i = relu(Dense(h_{i-1}))                              i not in skips
  h_i = relu(Dense([h_{i-1}, enc(x)]) + Dense_c(cond))    i in skips
  sigma = softplus(Dense(h) + density_bias)
  rgb = sigmoid(Dense(relu(Dense(h) + Dense_d(enc(viewdir)))))

Efficiency (it must train on two CPU cores): the condition and the view direction are constant
along a ray, so their contributions (``Dense_c(cond)``, ``Dense_d(enc(viewdir))``) are computed
once per ray, ``[R, width]``, and broadcast-added over the S samples. Mathematically this is the
usual ``Dense([per-sample input, per-ray input])`` split into its two blocks, at 1/S of the cost
for the per-ray block.

When the ``'diagnostics'`` collection is mutable (never in ``init`` or training), the field
records (``self.sow``) the standard deviations of the two parts of the first pre-activation, the positional
``Dense(enc(x))`` and the condition's ``Dense_c(cond)``; ``models/minerf.py`` uses them to set
the condition's share at init.

Density is ``softplus(raw + density_bias)``: non-negative, smooth, with a non-vanishing gradient
for negative raw values (a ReLU can die and leave empty space with no gradient), and the
negative bias starts the field mostly transparent (softplus(-1) ~ 0.31 per unit of ray length),
which avoids the initial fog that a dense start must first clear. Colour is a sigmoid in (0, 1).
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from minerf_jax.nerf import encoding as encoding_lib


class ConditionedField(nn.Module):
  """Per-ray-conditioned NeRF MLP: ``(x, viewdirs, cond) -> (sigma, rgb)``.

  Shapes: ``x`` [..., S, 3], ``viewdirs`` [..., 3], ``cond`` [..., C] -> ``sigma`` [..., S],
  ``rgb`` [..., S, 3]. ``x`` are sample points normalised to [-1, 1]^3, ``viewdirs`` unit
  directions and ``cond`` the per-ray conditioning (C may be 0: then no conditioning parameters
  are created). Leading axes are arbitrary but shared. ``sigma`` is a density per unit of the
  ray parameter the renderer uses.

  Attributes:
    encoding: module mapping points [..., 3] to features (e.g. ``PositionalEncoding``).
    depth: number of trunk layers.
    width: trunk width.
    skips: trunk layers that re-read ``enc(x)`` and ``cond`` (layer 0 always does).
    dir_deg: positional-encoding octaves of the view direction.
    rgb_width: width of the colour head's hidden layer.
    density_bias: added to the raw density before the softplus (see the module docstring).
    view_dependent: whether colour depends on the view direction.
  """
  encoding: nn.Module
  depth: int = 6
  width: int = 128
  skips: tuple[int, ...] = (4,)
  dir_deg: int = 4
  rgb_width: int = 64
  density_bias: float = -1.0
  view_dependent: bool = True

  @nn.compact
  def __call__(self, x: jax.Array, viewdirs: jax.Array,
               cond: jax.Array) -> tuple[jax.Array, jax.Array]:
    if self.depth < 1:
      raise ValueError(f"config.model.depth must be >= 1, got {self.depth}")
    enc = self.encoding(x)                                              # [..., S, E]
    has_cond = cond.shape[-1] > 0
    h = None
    for i in range(self.depth):
      reads_input = i == 0 or i in self.skips
      if h is None:
        inputs = enc
      elif reads_input:
        inputs = jnp.concatenate([h, enc], -1)
      else:
        inputs = h
      layer = nn.Dense(self.width, name=f"layer_{i}")(inputs)
      if reads_input and has_cond:
        per_ray = nn.Dense(self.width, use_bias=False, name=f"cond_{i}")(cond)  # [..., W]
        if i == 0 and not self.is_initializing():  # diagnostics, when asked for
          self.sow("diagnostics", "position_std", jnp.std(layer))
          self.sow("diagnostics", "condition_std", jnp.std(per_ray))
        layer = layer + per_ray[..., None, :]
      h = nn.relu(layer)
    sigma = nn.softplus(nn.Dense(1, name="sigma")(h)[..., 0] + self.density_bias)
    feat = nn.Dense(self.rgb_width, name="bottleneck")(h)
    if self.view_dependent:
      d = encoding_lib.positional_encoding(viewdirs, 0, self.dir_deg, include_input=True)
      feat = feat + nn.Dense(self.rgb_width, use_bias=False, name="viewdir")(d)[..., None, :]
    rgb = nn.sigmoid(nn.Dense(3, name="rgb")(nn.relu(feat)))
    return sigma, rgb

"""Fusing an identity code w with an expression vector e into one conditioning vector.

MI-NeRF's multiplicative module is ``M(w, e) = (U_w w) * (U_e e)`` (Hadamard product of two
linear projections), optionally with first-order terms ``+ V_w w + V_e e``. Multiplicative
interactions let a single network represent how *this* identity performs *this* expression (each
expression direction is re-weighted per identity), which concatenation can only emulate through
the depth of the following MLP. ``concat``, ``additive`` and ``film`` are the ablations.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

FUSION_KINDS = ("hadamard", "concat", "additive", "film")


class Fusion(nn.Module):
  kind: str = "hadamard"
  features: int = 64
  first_order: bool = False

  @nn.compact
  def __call__(self, w: jax.Array, e: jax.Array) -> jax.Array:
    dense = lambda name: nn.Dense(self.features, use_bias=False, name=name)
    if self.kind == "hadamard":
      c = dense("U_w")(w) * dense("U_e")(e)
      if self.first_order:
        c = c + dense("V_w")(w) + dense("V_e")(e)
      return c
    if self.kind == "concat":
      return nn.Dense(self.features, name="W")(jnp.concatenate([w, e], -1))
    if self.kind == "additive":
      return dense("U_w")(w) + dense("U_e")(e)
    if self.kind == "film":
      gamma = nn.Dense(self.features, name="gamma")(e)
      beta = nn.Dense(self.features, name="beta")(e)
      return (1.0 + gamma) * dense("U_w")(w) + beta
    raise ValueError(f"config.model.fusion={self.kind!r}: choose one of {FUSION_KINDS}")

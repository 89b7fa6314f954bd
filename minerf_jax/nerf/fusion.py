"""Fusing an identity code w with an expression vector e into one conditioning vector.

MI-NeRF's multiplicative module is ``M(w, e) = (U_w w) * (U_e e)``: the Hadamard product of two
bias-free linear projections, optionally with the first-order terms ``+ V_w w + V_e e``. Each
output channel is a bilinear form ``w^T A_k e``, so the effect of an expression direction is
re-weighted per identity: one network can represent how *this* person smiles or opens the jaw,
which is what lets a single multi-identity model match per-identity models. With concatenation
the identity and expression contributions to the first layer only add, and identity-specific
expression effects must be synthesised by the depth of the following MLP. The first-order
terms add back the purely identity- (and expression-) dependent parts, which the pure product
cannot express on its own (e.g. the product vanishes for a neutral expression e = 0).

Ablations (``config.model.fusion``), all producing ``[..., features]``:

* ``concat``:   ``Dense([w, e])`` (with bias)
* ``additive``: ``U_w w + U_e e``
* ``film``:     ``(1 + gamma(e)) * (U_w w) + beta(e)`` (feature-wise affine modulation of the
  identity by the expression; gamma and beta have biases)
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

FUSION_KINDS = ("hadamard", "concat", "additive", "film")


class Fusion(nn.Module):
  """``(w [..., Dw], e [..., De]) -> c [..., features]``, see the module docstring.

  Parameter names are stable so that tests and analyses can read them: ``U_w``, ``U_e`` (and
  ``V_w``, ``V_e`` with ``first_order``) are bias-free ``nn.Dense``; ``concat`` uses ``W``;
  ``film`` uses ``U_w``, ``gamma``, ``beta``.

  Attributes:
    kind: one of ``FUSION_KINDS``.
    features: output channels.
    first_order: hadamard only: add ``V_w w + V_e e``.
  """
  kind: str = "hadamard"
  features: int = 64
  first_order: bool = False

  @nn.compact
  def __call__(self, w: jax.Array, e: jax.Array) -> jax.Array:
    linear = lambda name: nn.Dense(self.features, use_bias=False, name=name)
    if self.kind == "hadamard":
      c = linear("U_w")(w) * linear("U_e")(e)
      if self.first_order:
        c = c + linear("V_w")(w) + linear("V_e")(e)
      return c
    if self.kind == "concat":
      return nn.Dense(self.features, name="W")(jnp.concatenate([w, e], -1))
    if self.kind == "additive":
      return linear("U_w")(w) + linear("U_e")(e)
    if self.kind == "film":
      gamma = nn.Dense(self.features, name="gamma")(e)
      beta = nn.Dense(self.features, name="beta")(e)
      return (1.0 + gamma) * linear("U_w")(w) + beta
    raise ValueError(f"config.model.fusion={self.kind!r} is not one of {FUSION_KINDS}")

"""Attention fusion of the rendered 3-D head and the 2-D-warped subject frames.

What is the paper's (Ni et al., WACV 2024; no public code, the abstract only): an attention-based
fusion network adds background and details from the subject frames to the rendered head. Ours:

* Candidates per output pixel: the canonical head's rendered features (with its colour and
  opacity) and each subject frame's features warped to the driving frame (TPSMM's dense motion).
* Per pixel, a query from the rendered side (it exists for any driving pose, including novel
  views), a key and a value per candidate (1x1 convs; one projection for the rendered candidate,
  one shared by the warped ones), scaled dot-product scores, plus a learned multiple of each
  warped frame's pose agreement with the driving pose (``-angle / 10 deg``, so the subject frame
  whose pose matches best is preferred: the abstract's "pick the frame"; the multiple starts at
  1), softmax over the candidates, the weighted sum of values.
* ``fusion`` (``model.fusion``): ``attention`` (all candidates), ``rendered_only`` (the rendered
  value alone: the warped branch is not read at all, exactly), ``warped_only`` (attention over
  the warped frames alone).

The attention weights are returned too (``[B, H, W, 1 + K]``, rendered first), so one can look at
where each pixel's detail came from.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

FUSIONS = ("attention", "rendered_only", "warped_only")


class AttentionFusion(nn.Module):
  """``(rendered [B, H, W, C], warped [B, K, H, W, C], pose_angle [B, K] degrees) ->
  (fused [B, H, W, features], weights [B, H, W, 1 + K])``."""
  features: int = 64
  fusion: str = "attention"
  angle_scale: float = 10.0

  @nn.compact
  def __call__(self, rendered: jax.Array, warped: jax.Array, pose_angle: jax.Array
               ) -> tuple[jax.Array, jax.Array]:
    if self.fusion not in FUSIONS:
      raise ValueError(f"config.model.fusion={self.fusion!r}; choose one of {FUSIONS}")
    dense = lambda name: nn.Dense(self.features, name=name)
    b, k = warped.shape[:2]
    v_r = dense("value_rendered")(rendered)
    if self.fusion == "rendered_only":
      weights = jnp.zeros(v_r.shape[:3] + (1 + k,), v_r.dtype).at[..., 0].set(1.0)
      return v_r, weights
    q = dense("query")(rendered)
    keys = [dense("key_rendered")(rendered)] + [None] * k
    values = [v_r] + [None] * k
    key_w, value_w = dense("key_warped"), dense("value_warped")
    for i in range(k):
      keys[i + 1], values[i + 1] = key_w(warped[:, i]), value_w(warped[:, i])
    scores = jnp.stack([jnp.sum(q * key, -1) for key in keys], -1) / jnp.sqrt(self.features)
    pose_weight = self.param("pose_weight", nn.initializers.ones, ())
    bias = -pose_weight * pose_angle / self.angle_scale                    # [B, K]
    scores = scores + jnp.concatenate([jnp.zeros((b, 1)), bias], -1)[:, None, None, :]
    if self.fusion == "warped_only":
      scores = scores.at[..., 0].set(-jnp.inf)
    weights = jax.nn.softmax(scores, -1)
    fused = jnp.sum(weights[..., None] * jnp.stack(values, -2), -2)
    return fused, weights

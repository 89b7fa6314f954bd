"""Region-specific deformation fields (LokiTalk) and the identity hyper-networks that adapt them.

LokiTalk (Li et al. 2024, arXiv 2411.19525) decomposes portrait motion into lip movements, eye
blinking, head pose and torso movements, each driving its own region, modelled by two cascaded
deformation fields (face, then torso), with identity-specific features injected through an ID
encoder and hyper-networks. That much is the paper's (its abstract; no code is public). Every
form below is ours:

``FaceDeformation`` maps a point ``x`` of the posed head (head coordinates after the rigid head
transform, normalised to the head box) to the canonical head: ``x_c = x + sum_k w_k(x) d_k(x,
c_k)`` over the regions ``REGIONS`` = lips (driven by the audio code), eyes (the blink signal)
and head (the head pose, a non-rigid residual on top of the rigid transform: the skin and hair
that a turning head drags). ``w(x)`` is a per-point softmax over the regions from the point's
features (and the identity), which a loss ties to the data's region masks (``models/lokitalk.py``),
so that the audio branch can move only where the field has learnt lips. ``regions=False``
(the ablation) is one global branch driven by all the conditions at once.

``GatedOffset`` is each branch: ``d(x, c) = s * tanh(B tanh(... (A h(x) + a) * (G c)))``
with every layer after the gate bias-free, so that **the offset is exactly zero when its
condition is zero**: each branch's condition is the change from the neutral input (the audio
code minus that of silence, the blink, ``R - I`` of the pose), so a neutral frame renders the
canonical head and one branch's input cannot move points through another branch. The
gate is a Hadamard product as in MI-NeRF's fusion (``nerf/fusion.py``).

``TorsoField`` is the second field of the cascade, evaluated after the head: a 2-D layer over
the image plane (as ER-NeRF's torso net, a 2-D field is enough for a torso that a fixed camera
sees), deformed by the head pose (``uv_c = uv + d(uv, R - I)``) and read from a 2-D hash grid of
the canonical torso, giving colour and opacity that composite over the background, beneath the
head. Its opacity is supervised by the data's torso/neck mask.

``IdentityAdapter`` is the hyper-network: the identity code ``z`` becomes an identity-specific
change of a hidden layer ``u``: ``film``: ``u * (1 + gamma(z))`` (feature-wise modulation);
``lowrank``: ``u + P((Q u) * H(z))``, a rank-r weight delta ``P diag(H z) Q``. ``gamma`` and
``H`` are bias-free, so a zero code is the generic (identity-free) layer exactly, and a zero
``u`` stays zero (the gated branches keep their neutral zero).
"""
from __future__ import annotations

from typing import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

REGIONS = ("lips", "eyes", "head")
ADAPTER_KINDS = ("film", "lowrank", "none")


class IdentityAdapter(nn.Module):
  """``(u [..., S, W], z [..., Dz]) -> u'`` identity-specific, equal to ``u`` when z = 0.

  Attributes:
    kind: 'film' | 'lowrank' | 'none' (``u`` unchanged, no parameters).
    rank: rank of the 'lowrank' weight delta.
  """
  kind: str = "film"
  rank: int = 4

  @nn.compact
  def __call__(self, u: jax.Array, z: jax.Array | None) -> jax.Array:
    if self.kind not in ADAPTER_KINDS:
      raise ValueError(f"config.model.hyper={self.kind!r} is not one of {ADAPTER_KINDS}")
    if self.kind == "none" or z is None:
      return u
    width = u.shape[-1]
    if self.kind == "film":
      gamma = nn.Dense(width, use_bias=False, name="gamma")(z)
      return u * (1.0 + gamma[..., None, :])
    h = nn.Dense(self.rank, use_bias=False, name="H")(z)                    # [..., r]
    q = nn.Dense(self.rank, use_bias=False, name="Q")(u)                    # [..., S, r]
    return u + nn.Dense(width, use_bias=False, name="P")(q * h[..., None, :])


class GatedOffset(nn.Module):
  """Offsets [..., S, out_dim] of points with features ``h`` [..., S, H] under a per-ray
  condition ``c`` [..., C]; exactly zero where ``c`` is zero (see the module docstring).

  Attributes:
    width: hidden width; depth: bias-free tanh layers after the gate.
    out_dim: 3 for points, 2 for image-plane offsets.
    scale: largest offset (the output is ``scale * tanh(.)``), in normalised box units.
    adapter: the identity hyper-network applied after each hidden layer.
  """
  width: int = 64
  depth: int = 2
  out_dim: int = 3
  scale: float = 0.25
  adapter: str = "film"

  @nn.compact
  def __call__(self, h: jax.Array, c: jax.Array, z: jax.Array | None = None) -> jax.Array:
    gate = nn.Dense(self.width, use_bias=False, name="gate")(c)
    u = nn.Dense(self.width, name="point")(h) * gate[..., None, :]
    for i in range(self.depth):
      u = IdentityAdapter(self.adapter, name=f"hyper_{i}")(jnp.tanh(u), z)
      u = nn.Dense(self.width, use_bias=False, name=f"layer_{i}")(u)
    out = nn.Dense(self.out_dim, use_bias=False, kernel_init=nn.initializers.normal(1e-3),
                   name="out")(jnp.tanh(u))
    return self.scale * jnp.tanh(out)


class FaceDeformation(nn.Module):
  """Posed-head points -> canonical points by region-specific branches.

  ``__call__(x [..., S, 3], conds {region: [..., C_k]}, z [..., Dz] | None)`` returns
  ``(x_c, offset, weights)``: canonical points, the total offset [..., S, 3] and the region
  weights [..., S, len(REGIONS)] (uniform ``1/K`` with ``regions=False``, where there are none).
  ``x`` is normalised to [-1, 1]^3 (the head box).

  Attributes:
    encoding: point features for the deformation (a coarse one: deformations are smooth).
    region_encoding: point features of the region weights (None: the deformation's). Region
      borders are sharper than offsets are smooth: a finer encoding here keeps each branch's
      effect from spilling a pixel or two past its region.
    width: width of the shared point trunk and the branches; depth: branch depth.
    regions: region-specific branches (True) or one global branch on all conditions (False).
    scale: largest offset per branch.
    adapter: the identity hyper-network ('film' | 'lowrank' | 'none').
  """
  encoding: nn.Module
  width: int = 64
  depth: int = 2
  regions: bool = True
  scale: float = 0.25
  adapter: str = "film"
  region_encoding: nn.Module | None = None

  @nn.compact
  def __call__(self, x: jax.Array, conds: Mapping[str, jax.Array],
               z: jax.Array | None = None):
    missing = [r for r in REGIONS if r not in conds]
    if missing:
      raise ValueError(f"FaceDeformation needs a condition per region {REGIONS}; missing {missing}")
    h = nn.relu(nn.Dense(self.width, name="trunk")(self.encoding(x)))
    branch = lambda name: GatedOffset(self.width, self.depth, 3, self.scale, self.adapter,
                                      name=name)
    if not self.regions:
      c = jnp.concatenate([conds[r] for r in REGIONS], -1)
      offset = branch("global_branch")(h, c, z)
      weights = jnp.full(offset.shape[:-1] + (len(REGIONS),), 1.0 / len(REGIONS), offset.dtype)
      return x + offset, offset, weights
    g = nn.Dense(self.width, name="region_hidden")(
        h if self.region_encoding is None else self.region_encoding(x))
    if z is not None and self.adapter != "none":  # where a person's lips and eyes lie
      g = g + nn.Dense(self.width, use_bias=False, name="region_hyper")(z)[..., None, :]
    weights = jax.nn.softmax(nn.Dense(len(REGIONS), name="region_logits")(nn.relu(g)), -1)
    offsets = jnp.stack([branch(f"{r}_branch")(h, conds[r], z) for r in REGIONS], -2)
    offset = jnp.sum(weights[..., None] * offsets, -2)
    return x + offset, offset, weights


class TorsoField(nn.Module):
  """The 2-D torso layer: ``(uv [..., 2] in [-1, 1], pose condition [..., C], z [..., Dz])
  -> (rgb [..., 3], alpha [...], offset [..., 2])`` (see the module docstring).

  Attributes:
    encoding: the canonical torso's 2-D features (a one-plane ``TriplaneHashEncoding``).
    deform_encoding: image-plane features of the deformation.
    width: hidden width; scale: largest image-plane offset (in [-1, 1] units).
    adapter: the identity hyper-network of the deformation.
    alpha_bias: added to the opacity logit (negative: the layer starts transparent, the
      background shows, as without a torso field).
  """
  encoding: nn.Module
  deform_encoding: nn.Module
  width: int = 64
  scale: float = 0.1
  adapter: str = "film"
  alpha_bias: float = -2.0

  @nn.compact
  def __call__(self, uv: jax.Array, pose: jax.Array, z: jax.Array | None = None):
    h = nn.relu(nn.Dense(self.width, name="trunk")(self.deform_encoding(uv)))[..., None, :]
    offset = GatedOffset(self.width, 2, 2, self.scale, self.adapter, name="deform")(h, pose, z)
    offset = offset[..., 0, :]
    g = nn.Dense(self.width, name="layer_0")(self.encoding(uv + offset))
    if z is not None:
      g = g + nn.Dense(self.width, use_bias=False, name="identity")(z)
    g = nn.relu(nn.Dense(self.width, name="layer_1")(nn.relu(g)))
    rgb = nn.sigmoid(nn.Dense(3, name="rgb")(g))
    alpha = nn.sigmoid(nn.Dense(1, name="alpha")(g)[..., 0] + self.alpha_bias)
    return rgb, alpha, offset

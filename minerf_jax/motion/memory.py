"""MCNet's identity-conditioned meta-memory compensation on top of TPSMM's warped features (NHWC).

MCNet (Hong & Xu, ICCV 2023) keeps a learned *meta-memory* ``M`` (reference: 512 channels x 32 x 32,
``run.py --mb_channel 512 --mb_spatial 32``) and uses it to compensate the warped source features
where the warp is ambiguous or occluded. For one warped feature map ``F_w`` (one generator scale),
``modules/generator.py: ExpendMemoryUnit`` (the unit of the README's training command) does:

1. Split channels: the even channels pass through unchanged, the odd ones (``C / 2``) are
   compensated (``half=True``); the output re-interleaves them in the original order.
2. Project the compensated half to the memory width with a per-scale 1x1 conv: ``f``.
3. *Implicit identity representation*: global average pool of ``f`` concatenated with the
   flattened source keypoints, through ``Linear(C_m + 2N, 128) - ReLU - Linear(128, 512)``: a
   512-d style code. (The reference pools the projection of the *warped* source features, which
   is what is passed in here; the keypoints are the source keypoints.)
4. *Identity-conditioned memory*: the memory, broadcast over the batch, goes through a StyleGAN2
   ``StyleConv`` (3x3 modulated + demodulated conv, noise injection, fused leaky ReLU) styled by
   that code.
5. Keys and values: ``ReLU(DynamicConv(f, memory))`` split in two along channels, where the
   dynamic conv (``modules/dynamic_conv.py: Dynamic_conv2d``, K = 4 kernels, ratio 0.25,
   temperature 34) mixes its kernels with softmax weights predicted from ``f``'s pooled features
   and convolves the memory (3x3, ``2 C_m`` outputs).
6. Query ``ReLU(Conv1x1(f))``; attention ``softmax(q k^T / 4)`` over the ``32 * 32`` memory
   positions (the reference divides by the constant 4); ``r = A v`` (one row per query pixel).
7. Compensation: ``out = f + ReLU(Conv1x1(f - r))``, then a per-scale 3x3 conv back to ``C / 2``
   channels, affine instance norm and ReLU.

The unit is shared by all compensated scales (memory, style route, StyleConv, dynamic conv, query
and difference convs); the input projection and the output conv + norm are per scale. The
reference compensates every decoder input except the finest: the warped bottleneck (32 px at 256,
512 channels) and the 64 px and 128 px warped skips (256, 128 channels), i.e. all but the last of
``InpaintingGenerator.warp_features``' coarse-to-fine list, so ``MemoryCompensation`` sits between
``warp_features`` and ``decode``.

Departures from the reference, all deliberate:

* Noise injection draws from the ``'noise'`` rng stream only when one is given; without it the
  noise term is zero (the reference always draws fresh noise; its strength is initialised to 0).
* The dynamic conv's bias starts at 0 (the reference leaves ``torch.Tensor(K, C)`` uninitialised).
* ``memory=False`` returns the warped maps themselves: the TPSMM generator path exactly.

``consistency_loss`` is MCNet's ``feat_consistent`` term (README weight 10): ``mean |sg(f) - v|``
per compensated scale, summed (the features resized to the memory resolution, as the reference
does; see its docstring).
"""
from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from minerf_jax.motion import warp
from minerf_jax.motion.dense_motion import conv
from minerf_jax.motion.dense_motion import instance_norm
from minerf_jax.motion.dense_motion import torch_default_init

_relu_fan_out_normal = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
# nn.init.kaiming_uniform_(w) with the default a=0: U(+-sqrt(6 / fan_in)).
_kaiming_uniform = nn.initializers.variance_scaling(2.0, "fan_in", "uniform")


def _conv_per_sample(x: jax.Array, kernels: jax.Array, padding: int) -> jax.Array:
  """``x [B, H, W, Ci]`` convolved with its own ``kernels [B, k, k, Ci, Co]`` (stride 1)."""
  def one(xi, ki):
    return jax.lax.conv_general_dilated(xi[None], ki, (1, 1), ((padding, padding),) * 2,
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))[0]
  return jax.vmap(one)(x, kernels)


class StyleConv(nn.Module):
  """StyleGAN2 ``StyleConv``: modulated, demodulated conv + noise + fused leaky ReLU.

  Weights are stored unscaled (``N(0, 1)``) and scaled at run time (equalised learning rate), as
  in the reference's ``ModulatedConv2d`` / ``EqualLinear`` (modulation bias initialised to 1).
  """
  features: int
  kernel: int = 3
  demodulate: bool = True
  eps: float = 1e-8

  @nn.compact
  def __call__(self, x: jax.Array, style: jax.Array) -> jax.Array:
    b, _, _, c = x.shape
    mod_w = self.param("modulation_kernel", nn.initializers.normal(1.0), (style.shape[-1], c))
    mod_b = self.param("modulation_bias", nn.initializers.ones_init(), (c,))
    s = style @ mod_w / math.sqrt(style.shape[-1]) + mod_b                       # [B, C]
    w = self.param("kernel", nn.initializers.normal(1.0),
                   (self.kernel, self.kernel, c, self.features))
    w = w[None] * (s[:, None, None, :, None] / math.sqrt(c * self.kernel ** 2))  # [B,k,k,C,F]
    if self.demodulate:
      w = w * jax.lax.rsqrt(jnp.sum(jnp.square(w), axis=(1, 2, 3), keepdims=True) + self.eps)
    out = _conv_per_sample(x, w, self.kernel // 2)
    strength = self.param("noise_strength", nn.initializers.zeros_init(), (1,))
    if self.has_rng("noise"):
      out = out + strength * jax.random.normal(self.make_rng("noise"), out.shape[:3] + (1,),
                                               out.dtype)
    bias = self.param("activation_bias", nn.initializers.zeros_init(), (self.features,))
    return nn.leaky_relu(out + bias, 0.2) * math.sqrt(2.0)


class DynamicConv(nn.Module):
  """``Dynamic_conv2d(x, y)``: K kernels mixed per sample by attention on ``x``, applied to ``y``.

  The mixing weights are ``softmax(fc2(ReLU(fc1(avgpool(x)))) / temperature)`` with a hidden
  width of ``int(C_x * ratio) + 1``.
  """
  features: int
  kernel: int = 3
  num_kernels: int = 4
  ratio: float = 0.25
  temperature: float = 34.0

  @nn.compact
  def __call__(self, x: jax.Array, y: jax.Array) -> jax.Array:
    hidden = int(x.shape[-1] * self.ratio) + 1
    pooled = jnp.mean(x, axis=(1, 2))
    a = nn.relu(nn.Dense(hidden, use_bias=False, kernel_init=_relu_fan_out_normal,
                         name="attention_fc1")(pooled))
    a = nn.Dense(self.num_kernels, kernel_init=_relu_fan_out_normal, name="attention_fc2")(a)
    mix = jax.nn.softmax(a / self.temperature, axis=-1)                         # [B, K]
    c = y.shape[-1]
    kernels = self.param("kernel", lambda key, shape: jax.vmap(
        lambda k: _kaiming_uniform(k, shape[1:]))(jax.random.split(key, shape[0])),
                         (self.num_kernels, self.kernel, self.kernel, c, self.features))
    biases = self.param("bias", nn.initializers.zeros_init(), (self.num_kernels, self.features))
    out = _conv_per_sample(y, jnp.einsum("bk,k...->b...", mix, kernels), self.kernel // 2)
    return out + (mix @ biases)[:, None, None, :]


class MetaMemory(nn.Module):
  """Identity-conditioned memory attention on one warped map (the shared ``ExpendMemoryUnit``).

  Attributes:
    memory_channels: ``C_m`` (reference 512).
    memory_size: memory height = width (reference 32).
    style_features: identity (style) code width (reference 512, hidden 128).
    attention_temperature: divisor of the query-key logits (reference 4).

  Call: ``f [B, h, w, C_m]`` (the projected compensated half), ``kp_source [B, N, 2]`` ->
  ``(out [B, h, w, C_m], aux)`` with ``aux`` = ``attention [B, h*w, S*S]`` (rows sum to 1),
  ``value [B, S, S, C_m]``, ``memory`` (the identity-conditioned memory) and ``identity`` code.
  """
  memory_channels: int = 512
  memory_size: int = 32
  style_features: int = 512
  style_hidden: int = 128
  attention_temperature: float = 4.0

  @nn.compact
  def __call__(self, f: jax.Array, kp_source: jax.Array) -> tuple[jax.Array, dict]:
    b, h, w, cm = f.shape
    s = self.memory_size
    bank = self.param("memory", lambda key, shape: jax.random.uniform(
        key, shape, minval=-1.0, maxval=1.0) * math.sqrt(6.0 / math.prod(shape)),
                      (1, s, s, self.memory_channels))                       # kaiming_uniform
    # Implicit identity representation: pooled features + source keypoints -> style code.
    code = jnp.concatenate([jnp.mean(f, axis=(1, 2)), kp_source.reshape(b, -1)], axis=-1)
    code = nn.relu(nn.Dense(self.style_hidden, kernel_init=torch_default_init,
                            name="identity_fc1")(code))
    code = nn.Dense(self.style_features, kernel_init=torch_default_init, name="identity_fc2")(code)
    memory = StyleConv(self.memory_channels, name="memory_style")(
        jnp.broadcast_to(bank, (b, s, s, self.memory_channels)), code)
    kv = nn.relu(DynamicConv(2 * cm, name="key_value")(f, memory))
    key, value = kv[..., :cm], kv[..., cm:]
    query = nn.relu(nn.Conv(cm, (1, 1), kernel_init=torch_default_init, name="query")(f))
    logits = jnp.einsum("bic,bjc->bij", query.reshape(b, h * w, cm),
                        key.reshape(b, s * s, cm)) / self.attention_temperature
    attention = jax.nn.softmax(logits, axis=-1)
    retrieved = jnp.einsum("bij,bjc->bic", attention, value.reshape(b, s * s, cm))
    diff = nn.Conv(cm, (1, 1), kernel_init=torch_default_init, name="diff")(
        f - retrieved.reshape(b, h, w, cm))
    return f + nn.relu(diff), {"attention": attention, "value": value, "memory": memory,
                                "identity": code}


class MemoryCompensation(nn.Module):
  """Compensate TPSMM's coarse-to-fine warped features with the meta-memory (MCNet).

  Attributes:
    memory_channels, memory_size: see ``MetaMemory`` (reference 512, 32).
    num_compensated: scales compensated, coarsest first; ``None`` = all but the finest (the
      reference's choice: 3 of the vox-256 generator's 4 scales).
    style_features, style_hidden, attention_temperature: see ``MetaMemory``.

  Call: ``warped`` (list, coarse to fine, as ``warp_features`` returns it), ``kp_source``
  ``[B, N, 2]``, ``memory`` switch -> ``(maps, aux)``. With ``memory=False`` the input list is
  returned unchanged (same arrays) and ``aux`` is empty; parameters exist only if the module was
  initialised with ``memory=True``. ``aux`` holds per-compensated-scale lists ``attention``,
  ``features`` (the projections ``f``), ``values`` and ``identity`` codes.
  """
  memory_channels: int = 512
  memory_size: int = 32
  num_compensated: int | None = None
  style_features: int = 512
  style_hidden: int = 128
  attention_temperature: float = 4.0

  @nn.compact
  def __call__(self, warped: Sequence[jax.Array], kp_source: jax.Array,
               memory: bool = True) -> tuple[list[jax.Array], dict]:
    if not memory:
      return list(warped), {}
    n = len(warped) - 1 if self.num_compensated is None else self.num_compensated
    unit = MetaMemory(self.memory_channels, self.memory_size, self.style_features,
                      self.style_hidden, self.attention_temperature, name="unit")
    out, aux = [], {"attention": [], "features": [], "values": [], "identity": []}
    for i, feats in enumerate(warped):
      if i >= n:
        out.append(feats)
        continue
      b, h, w, c = feats.shape
      if c % 2:
        raise ValueError(f"scale {i} has an odd channel count {c}")
      same, compensated = feats[..., 0::2], feats[..., 1::2]
      f = nn.Conv(self.memory_channels, (1, 1), kernel_init=torch_default_init,
                  name=f"project{i}")(compensated)
      y, unit_aux = unit(f, kp_source)
      y = nn.relu(instance_norm(f"norm{i}")(conv(c // 2, 3, f"out{i}")(y)))
      out.append(jnp.stack([same, y], axis=-1).reshape(b, h, w, c))
      aux["attention"].append(unit_aux["attention"])
      aux["features"].append(f)
      aux["values"].append(unit_aux["value"])
      aux["identity"].append(unit_aux["identity"])
    return out, aux


CONSISTENCY_RESIZE = ("feature", "value")


def consistency_loss(features: Sequence[jax.Array], values: Sequence[jax.Array],
                     resize: str = "feature") -> jax.Array:
  """MCNet's feature consistency: ``sum_i mean |stop_gradient(f_i) - v_i|`` (unweighted).

  ``f_i`` are the projected warped features and ``v_i`` the memory values of each compensated
  scale (``aux['features']``, ``aux['values']``). The loss pulls the (identity-conditioned) memory
  towards the projected features, and the features get no gradient from it. The values live at
  the memory resolution (32 px in the reference), the features at their scale's (32, 64, 128 px
  at 256). ``resize='feature'`` (the reference's ``GeneratorFullModel``: ``F.interpolate`` of the
  target to the value's size) resizes the feature map to the value's resolution (bilinear,
  ``align_corners=True``: point sampling, no anti-aliasing); ``'value'`` (ours before the
  golden comparison) resizes the value map to the feature's.
  """
  if resize not in CONSISTENCY_RESIZE:
    raise ValueError(f"consistency resize {resize!r}; use one of {CONSISTENCY_RESIZE}")
  total = jnp.float32(0.0)
  for f, v in zip(features, values):
    f = jax.lax.stop_gradient(f)
    if f.shape[1:3] != v.shape[1:3]:
      if resize == "feature":
        f = warp.resize_bilinear(f, v.shape[1:3])
      else:
        v = warp.resize_bilinear(v, f.shape[1:3])
    total = total + jnp.mean(jnp.abs(f - v))
  return total

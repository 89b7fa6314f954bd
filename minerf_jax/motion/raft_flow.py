"""MRFA's published decoder: structure-correlation flow refinement + its own generator (NHWC).

MRFA (Tao et al., NeurIPS 2023; ``JialeTao/MRFA``, ``modules/raft.py: RaftFlow`` and
``modules/generator.py: OcclusionAwareGenerator``, ``config/vox1.yaml: raft_flow``) refines a prior
motion model's flow (FOMM-style keypoints with Jacobians: ``motion/fomm.py``'s dense motion with
its occlusion *logit*) coarse to fine while decoding. At ``size`` 256 (``h = size / 4`` = 64, the
dense motion's resolution):

1. ``OcclusionAwareGenerator.encode``: a 7x7 ``SameBlock`` and 5 ``DownBlock`` s (BatchNorm;
   64 -> 128 -> 256 -> 512 -> 512 -> 512) give maps at 256 ... 8 px, listed coarse to fine.
2. Structure features: keypoint Gaussians (variance 0.1) plus a learned position embedding
   ``[1, h, w, K]`` (``trunc_normal(0.02)``); the driving ones through the hourglass ``kp``
   (BatchNorm, 32 / 512 / 5), the source ones concatenated with the anti-aliased 1/4 source through
   ``kp_img``; 1x1 heads to ``dim`` = 256; all-pairs correlation ``<q_d, k_s> / sqrt(dim)``
   (``correlation.correlation_volume``).
3. The prior in pixels at ``h``: ``init_flow = (h - 1)(deformation + 1) / 2 - grid`` and the
   occlusion logit. Six steps, resolutions ``size / 32 * 2^i`` (8 ... 256 px). At step ``i`` the
   flow is looked up in the correlation pyramid (2 levels, radius 3; ``correlation.lookup``): for
   ``i < 3`` in the volume average-pooled over the driving axes by ``2^(3 - i)`` at positions
   ``(flow + grid) * 2^(3 - i)``; at ``i = 3`` as is; for ``i > 3`` with the flow resized to ``h``
   and scaled by ``0.5^(i - 3)``, the looked-up features resized back. The update operator
   (``correlation.UpdateOperator``: the reference's ``BasicMotionEncoder`` + ``RefineFlow``,
   192-channel context = ReLU(1x1 conv) of the scale's encoder map sampled at ``flow + grid``)
   gives flow and occlusion-logit increments; ``flow + d`` warps the encoder map (pixel
   coordinates, ``align_corners=True``), ``sigmoid(occlusion)`` masks it. Beside it the map is
   warped by the prior resized to the scale (``grid_sample`` at PyTorch's default
   ``align_corners=False``, as the reference: a different convention for the same grid, kept).
4. Between steps (the reference's own rescaling, kept exactly): ``flow = 2 up(d) +
   up(init_flow) / (2^(3 - i) / 2) + 2 up(accumulated earlier increments)``; the occlusion logit
   the same without the factors 2. ``up`` is bilinear ``align_corners=True``. (In pixel units of
   a corner-aligned grid the exact factor would be ``(2r - 1) / (r - 1)``, not 2.)
5. ``decode``: from the coarsest refined map times its mask, concatenated with the prior-warped
   map, at every level a ``ChannelBlock`` (BN-ReLU-3x3 conv halving the channels), a ``ResBlock``
   and an ``UpBlock``; then ``warped * mask + out * (1 - mask)`` with the next scale's refined map
   and mask, concatenated with the next prior-warped map (not after the last); 7x7 conv, sigmoid
   and ``out * (1 - m) + warp(source) * m`` with the finest mask. The warped source uses the last
   step's flow *before* its increment (the reference's ``warp_img``), kept.

Only the final prediction is supervised in the reference; nothing is detached. Ours: flows stay in
the reference's pixel units inside this module; keypoints are ``[B, K, 2]`` normalised ``(x, y)``.
"""
from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from minerf_jax.motion import correlation
from minerf_jax.motion import warp
from minerf_jax.motion.dense_motion import DownBlock
from minerf_jax.motion.dense_motion import ResBlock
from minerf_jax.motion.dense_motion import SameBlock
from minerf_jax.motion.dense_motion import UpBlock
from minerf_jax.motion.dense_motion import antialias_downsample
from minerf_jax.motion.dense_motion import conv
from minerf_jax.motion.dense_motion import keypoint_gaussians
from minerf_jax.motion.dense_motion import norm_layer
from minerf_jax.motion.dense_motion import torch_default_init


def pixel_grid(h: int, w: int, dtype=jnp.float32) -> jax.Array:
  """``[h, w, 2]`` pixel coordinates ``(x, y)`` (the reference's ``coords_grid``)."""
  y, x = jnp.meshgrid(jnp.arange(h, dtype=dtype), jnp.arange(w, dtype=dtype), indexing="ij")
  return jnp.stack([x, y], axis=-1)


def sample_at_pixels(image: jax.Array, coords: jax.Array) -> jax.Array:
  """``bilinear_sampler``: ``image [B, H, W, C]`` at pixel ``coords [B, h, w, (x, y)]``
  (``grid_sample(align_corners=True)``, zeros outside)."""
  h, w = image.shape[1:3]   # (a 1-pixel axis, where the reference divides by 0, samples pixel 0)
  grid = jnp.stack([2 * coords[..., 0] / max(w - 1, 1) - 1,
                    2 * coords[..., 1] / max(h - 1, 1) - 1], -1)
  return warp.grid_sample(image, grid, align_corners=True)


class ChannelBlock(nn.Module):
  """norm -> ReLU -> 3x3 conv halving the channels (``ChannelBlock2d``; no residual)."""
  norm: str = "batch"
  axis_name: str | None = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    x = nn.relu(norm_layer(self.norm, train, "norm1", self.axis_name)(x))
    return conv(x.shape[-1] // 2, 3, "conv1")(x)


class OcclusionAwareGenerator(nn.Module):
  """MRFA's generator: ``encode`` (coarse to fine maps) and ``decode`` (module docstring, 5)."""
  num_channels: int = 3
  block_expansion: int = 64
  max_features: int = 512
  num_up_blocks: int = 5
  norm: str = "batch"
  axis_name: str | None = None

  def setup(self):
    width = lambda i: min(self.max_features, self.block_expansion * 2 ** i)
    n, a = self.norm, self.axis_name
    levels = list(reversed(range(self.num_up_blocks)))   # decoder level k works at i = n-1-k
    self.first = SameBlock(self.block_expansion, kernel=7, norm=n, axis_name=a)
    self.down_blocks = [DownBlock(width(i + 1), n, a) for i in range(self.num_up_blocks)]
    self.up_blocks = [UpBlock(width(i), n, a) for i in levels]
    self.res_blocks = [ResBlock(norm=n, axis_name=a) for _ in levels]
    self.channel_blocks = [ChannelBlock(n, a) for _ in levels]
    self.final = conv(self.num_channels, 7)

  def encode(self, image: jax.Array, train: bool = False) -> list[jax.Array]:
    """``[B, H, W, C]`` -> ``num_up_blocks + 1`` maps, coarse to fine."""
    maps = [self.first(image, train)]
    for block in self.down_blocks:
      maps.append(block(maps[-1], train))
    return maps[::-1]

  def decode(self, warped: Sequence[jax.Array], warped_image: jax.Array,
             occlusion: Sequence[jax.Array], warped_prior: Sequence[jax.Array] | None = None,
             train: bool = False) -> jax.Array:
    """Coarse-to-fine refined maps, masks (and prior-warped maps) -> image in ``(0, 1)``."""
    out = warped[0] * occlusion[0]
    if warped_prior is not None:
      out = jnp.concatenate([out, warped_prior[0]], axis=-1)
    for k in range(self.num_up_blocks):
      if warped_prior is not None:
        out = self.channel_blocks[k](out, train)
      out = self.up_blocks[k](self.res_blocks[k](out, train), train)
      out = warped[k + 1] * occlusion[k + 1] + out * (1 - occlusion[k + 1])
      if warped_prior is not None and k != self.num_up_blocks - 1:
        out = jnp.concatenate([out, warped_prior[k + 1]], axis=-1)
    out = nn.sigmoid(self.final(out))
    return out * (1 - occlusion[-1]) + warped_image * occlusion[-1]


class RaftFlow(nn.Module):
  """Refinement + generator of the published MRFA (module docstring).

  Attributes:
    size: image size (256); the base flow resolution is ``size // 4``.
    dim: structure feature width (256).
    generator: ``OcclusionAwareGenerator`` sizes (``block_expansion``, ``max_features``,
      ``num_up_blocks``: 64, 512, 5).
    encoder_block_expansion, encoder_num_blocks, encoder_max_features: both structure
      hourglasses (32, 5, 512).
    kp_variance: heatmap variance (0.1); num_levels, radius: correlation pyramid (2, 3).
    context_features, corr_features, flow_features, motion_features, hidden: the update
      operator's widths (192, (128, 96), (128, 64), 128, 128).
    prior_only: decode with the prior alone (the reference's ``prior_only``).

  Call: ``source [B, S, S, C]``, ``kp_source`` / ``kp_driving`` ``[B, K, 2]``, ``deformation``
  ``[B, h, h, 2]`` (normalised sampling grid), ``occlusion_logit`` ``[B, h, h, 1]`` -> dict with
  ``prediction``, ``deformed`` (the warped source), coarse-to-fine ``flows`` (pixels, after each
  step's increment), ``occlusion_map`` (refined masks), ``warped`` (refined warps of the encoder
  maps ``features``) and ``warped_prior``; and for inspection the structure features ``query`` /
  ``key``, the ``correlation`` volume, each step's ``step_inputs`` (flow in pixels, looked-up
  correlation) and ``increments`` (flow and occlusion-logit).
  """
  size: int = 256
  dim: int = 256
  generator_kw: dict | None = None
  encoder_block_expansion: int = 32
  encoder_num_blocks: int = 5
  encoder_max_features: int = 512
  kp_variance: float = 0.1
  num_levels: int = 2
  radius: int = 3
  context_features: int = 192
  corr_features: Sequence[int] = (128, 96)
  flow_features: Sequence[int] = (128, 64)
  motion_features: int = 128
  hidden: int = 128
  prior_only: bool = False
  norm: str = "batch"
  axis_name: str | None = None

  @nn.compact
  def __call__(self, source: jax.Array, kp_source: jax.Array, kp_driving: jax.Array,
               deformation: jax.Array, occlusion_logit: jax.Array, train: bool = False) -> dict:
    gen = OcclusionAwareGenerator(num_channels=source.shape[-1], norm=self.norm,
                                  axis_name=self.axis_name, name="generator",
                                  **(self.generator_kw or {}))
    feature = gen.encode(source, train)                                   # coarse to fine
    b = source.shape[0]
    h = w = self.size // 4
    if deformation.shape[1:3] != (h, w):
      raise ValueError(f"prior flow {deformation.shape[1:3]} is not size // 4 = {h}")
    steps = len(feature)
    basic = int(round(math.log2(h // feature[0].shape[1])))
    if self.prior_only:
      warped, masks = [], []
      for f in feature:
        grid = warp.resize_flow(deformation, f.shape[1:3])
        warped.append(warp.grid_sample(f, grid, align_corners=False))
        masks.append(nn.sigmoid(warp.resize_bilinear(occlusion_logit, f.shape[1:3])))
      deformed = warp.grid_sample(source, grid, align_corners=False)
      return {"prediction": gen.decode(warped, deformed, masks, None, train), "deformed": deformed,
              "flows": [], "occlusion_map": masks, "warped_prior": warped}

    small = antialias_downsample(source, 0.25)
    position = self.param("pos_embedding", nn.initializers.truncated_normal(0.02),
                          (1, h, w, kp_source.shape[1]))
    heat_s = keypoint_gaussians(kp_source, h, w, self.kp_variance) + position
    heat_d = keypoint_gaussians(kp_driving, h, w, self.kp_variance) + position
    encoder = lambda name: correlation.StructureEncoder(
        self.dim, self.encoder_block_expansion, self.encoder_num_blocks,
        self.encoder_max_features, self.norm, self.axis_name, name=name)
    key_s = encoder("kp_img")(jnp.concatenate([heat_s, small], axis=-1), train)
    query_d = encoder("kp")(heat_d, train)
    corr = correlation.correlation_volume(query_d, key_s)                 # [B, h, w, h, w]
    update = correlation.UpdateOperator(self.corr_features, self.flow_features,
                                        self.motion_features, self.hidden, name="update")

    init_flow = (h - 1) * (deformation + 1) / 2 - pixel_grid(h, w, deformation.dtype)
    first = feature[0].shape[1:3]
    flow = warp.resize_bilinear(init_flow, first) / 2 ** basic   # the reference: / 8
    occlusion = warp.resize_bilinear(occlusion_logit, first)
    warped, masks, prior, flows, steps_in, increments = [], [], [], [], [], []
    d_flow_pre = d_occ_pre = None
    for i, f in enumerate(feature):
      r = f.shape[1:3]
      grid = pixel_grid(*r, flow.dtype)[None]
      if i <= basic:
        factor = 2 ** (basic - i)
        volume = correlation.pool_driving(corr, factor)
        corr_feats = correlation.lookup(correlation.correlation_pyramid(volume, self.num_levels),
                                        (flow + grid) * factor, self.radius)
      else:
        flow_sample = warp.resize_bilinear(flow, (h, w)) * 0.5 ** (i - basic)
        corr_feats = correlation.lookup(correlation.correlation_pyramid(corr, self.num_levels),
                                        flow_sample + pixel_grid(h, w, flow.dtype)[None],
                                        self.radius)
        corr_feats = warp.resize_bilinear(corr_feats, r)
      context = nn.relu(nn.Conv(self.context_features, (1, 1), kernel_init=torch_default_init,
                                name=f"to_context{i}")(sample_at_pixels(f, flow + grid)))
      d_flow, d_occ = update(flow, corr_feats, context)
      steps_in.append((flow, corr_feats))
      increments.append(jnp.concatenate([d_flow, d_occ], axis=-1))
      occlusion = occlusion + d_occ
      warped.append(sample_at_pixels(f, flow + d_flow + grid))
      masks.append(nn.sigmoid(occlusion))
      flows.append(flow + d_flow)
      prior.append(warp.grid_sample(f, warp.resize_flow(deformation, r), align_corners=False))
      if i < steps - 1:
        up = tuple(2 * n for n in r)
        d_f = warp.resize_bilinear(d_flow, up) * 2
        flow = d_f + warp.resize_bilinear(init_flow, up) / (2 ** (basic - i) / 2.0)
        if d_flow_pre is None:
          d_flow_pre = d_f
        else:
          carried = warp.resize_bilinear(d_flow_pre, up) * 2
          flow = flow + carried
          d_flow_pre = d_f + carried
        d_o = warp.resize_bilinear(d_occ, up)
        occlusion = d_o + warp.resize_bilinear(occlusion_logit, up)
        if d_occ_pre is None:
          d_occ_pre = d_o
        else:
          carried = warp.resize_bilinear(d_occ_pre, up)
          occlusion = occlusion + carried
          d_occ_pre = d_o + carried
    deformed = sample_at_pixels(source, flow + grid)
    return {"prediction": gen.decode(warped, deformed, masks, prior, train),
            "deformed": deformed, "flows": flows, "occlusion_map": masks, "warped_prior": prior,
            "warped": warped, "features": feature, "query": query_d, "key": key_s,
            "correlation": corr, "step_inputs": steps_in, "increments": increments}

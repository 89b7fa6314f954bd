"""MRFA's structure correlation volume and coarse-to-fine flow/occlusion refinement (NHWC).

The shared pieces (volume, pooling, pyramid, lookup, structure encoder, update operator) serve
both MRFA builds: the published one (``motion/raft_flow.py``, golden-tested against the
authors' code) and ours on TPSMM, ``CorrelationRefinement`` below (``configs/mrfa.py:tpsmm``),
which this docstring describes.

MRFA (Tao et al., NeurIPS 2023) refines a prior motion model's flow with RAFT-style lookups in an
all-pairs correlation volume between *structure* features of the driving and source keypoints
(``modules/raft.py: RaftFlow`` in the reference, ``config/vox1.yaml: raft_flow``). On top of
TPSMM (the reference's ``prior_model: tpsm`` option) the pieces are:

* Structure encoders (``self.kp`` / ``self.kp_img``): keypoint Gaussian heatmaps (variance 0.1 in
  normalised units, one channel per TPS group: the mean of its 5 points, as the reference does
  for the TPSMM prior) at the base flow resolution (``size / 4``), plus a learned position
  embedding (``trunc_normal(0.02)``, shared by both). The driving heatmaps go through an
  hourglass (``block_expansion=32, num_blocks=5, max_features=512``), the source heatmaps
  concatenated with the anti-aliased downsampled source image through a second one; a 1x1 conv
  maps each last hourglass output to ``dim=256`` channels.
* Correlation volume: ``C[b, i, j] = <q_d(i), k_s(j)> / sqrt(dim)`` for every driving pixel ``i``
  and source pixel ``j`` at the base resolution, ``[B, h, w, h, w]`` here.
* Lookup (``CorrBlock``, ``num_levels=2, radius=3``): a pyramid average-pooled 2x2 over the
  *source* axes; at level ``l`` the window of ``(2r+1)^2`` integer offsets around
  ``position / 2^l`` (source pixel units of level 0) is sampled bilinearly
  (``grid_sample(align_corners=True)``, zeros outside) and the levels are concatenated:
  ``num_levels * (2r+1)^2`` features per driving pixel. The window is flattened as the
  reference's ``meshgrid(dy, dx)`` stacking gives it: channel ``a * (2r+1) + b`` holds the offset
  ``(x + a - r, y + b - r)`` (the first window axis moves x).
* Shared update operator: the reference's ``BasicMotionEncoder`` (correlation 1x1 -> 128, 3x3
  -> 96; displacement 7x7 -> 128, 3x3 -> 64; 3x3 -> 126, concatenated with the displacement:
  128) and ``RefineFlow`` (context 3x3 192 -> 128; two heads 3x3 256 -> 128 -> 2 flow / 1
  occlusion-logit increments). The context is the generator's encoder map at that scale warped
  by the current flow, through a per-scale 1x1 conv to 192 channels and ReLU. Note that the
  reference's operator has no recurrent (GRU) state: each step is a feed-forward residual update
  with shared weights, and that is what is built here.
* Coarse to fine over the generator's scales (the reference runs 6 steps, 8 to 256 px, over its
  own 5-level generator; TPSMM's vox-256 generator has 4 scales, 32 to 256 px). At a scale coarser
  than the base the volume is average-pooled over the *driving* axes; at a finer one the flow is
  resized to the base resolution for the lookup and the features resized back. The flow at each
  scale is the prior flow resized to it plus the accumulated, upsampled increments of all earlier
  steps; the occlusion logit likewise (``d_f_pre`` / ``d_occ_pre`` in the reference).

Conventions kept from this code base rather than copied from the reference:

* Flows stay normalised ``[-1, 1]`` sampling grids (``warp.coordinate_grid``). The update
  operator still sees and emits pixel displacements at the current scale (what its weights mean
  in the reference); increments are converted with ``(size - 1) / 2`` per axis, which is exact for
  ``align_corners=True`` grids (the reference rescales pixel flows by ``2^k``, which is off by
  the corner alignment). Increments accumulate in normalised units, so upsampling needs no factor.
* Lookup positions come from the normalised flow: ``(x + 1) / 2 * (w_base - 1)`` source pixels,
  at every scale.
* TPSMM's dense motion gives occlusion *masks* per generator scale; the refined mask is
  ``sigmoid(logit(coarse mask) + accumulated increments)``. ``refine_steps=0`` returns the prior
  flow (resized to each scale) and the coarse masks themselves.
* Hourglass blocks are ``dense_motion.Hourglass`` (instance norm; the reference uses batch norm
  with the same parameter count).
* The reference decoder (its own generator with ``ChannelBlock2d`` s) also concatenates the
  features warped by the prior flow; here the refined maps feed TPSMM's ``decode`` unchanged
  (``warp_features_per_scale``).
"""
from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from minerf_jax.motion import keypoints as keypoints_lib
from minerf_jax.motion import warp
from minerf_jax.motion.dense_motion import Hourglass
from minerf_jax.motion.dense_motion import antialias_downsample
from minerf_jax.motion.dense_motion import conv
from minerf_jax.motion.dense_motion import keypoint_gaussians

# ------------------------------------------------------------------ correlation volume and lookup


def correlation_volume(driving: jax.Array, source: jax.Array) -> jax.Array:
  """``[B, h, w, D] x [B, hs, ws, D] -> [B, h, w, hs, ws]``, dot products over ``sqrt(D)``."""
  return jnp.einsum("bijc,bklc->bijkl", driving, source) / math.sqrt(driving.shape[-1])


def pool_driving(corr: jax.Array, factor: int) -> jax.Array:
  """Average-pool the *driving* axes (1, 2) of a ``[B, h, w, hs, ws]`` volume by ``factor``."""
  if factor == 1:
    return corr
  b, h, w, hs, ws = corr.shape
  return corr.reshape(b, h // factor, factor, w // factor, factor, hs, ws).mean(axis=(2, 4))


def correlation_pyramid(corr: jax.Array, num_levels: int = 2) -> list[jax.Array]:
  """Levels of ``corr [B, h, w, hs, ws]`` average-pooled 2x2 over the *source* axes (floor)."""
  levels = [corr]
  for _ in range(num_levels - 1):
    c = levels[-1]
    hs, ws = c.shape[-2] // 2, c.shape[-1] // 2
    c = c[..., :2 * hs, :2 * ws].reshape(c.shape[:3] + (hs, 2, ws, 2)).mean(axis=(-3, -1))
    levels.append(c)
  return levels


def sample_pixels(images: jax.Array, points: jax.Array) -> jax.Array:
  """Bilinear samples of ``images [N, h, w]`` at pixel ``points [N, P, (x, y)]``, zero outside.

  ``grid_sample(align_corners=True)`` in pixel units (the reference's ``bilinear_sampler``),
  without the round trip through normalised coordinates, which breaks down on 1-pixel levels.
  """
  n, h, w = images.shape
  x, y = points[..., 0], points[..., 1]
  x0, y0 = jnp.floor(x), jnp.floor(y)
  fx, fy = x - x0, y - y0
  x0, y0 = x0.astype(jnp.int32), y0.astype(jnp.int32)
  flat = images.reshape(n, h * w)

  def corner(xi, yi, weight):
    valid = (xi >= 0) & (xi <= w - 1) & (yi >= 0) & (yi <= h - 1)
    index = jnp.clip(yi, 0, h - 1) * w + jnp.clip(xi, 0, w - 1)
    return jnp.take_along_axis(flat, index, axis=1) * jnp.where(valid, weight, 0.0)

  return (corner(x0, y0, (1 - fx) * (1 - fy)) + corner(x0 + 1, y0, fx * (1 - fy))
          + corner(x0, y0 + 1, (1 - fx) * fy) + corner(x0 + 1, y0 + 1, fx * fy))


def lookup(pyramid: Sequence[jax.Array], coords: jax.Array, radius: int = 3) -> jax.Array:
  """Sample ``(2r+1)^2`` windows of every pyramid level around ``coords``.

  Args:
    pyramid: ``correlation_pyramid`` output, level ``l`` ``[B, h, w, hs_l, ws_l]``.
    coords: ``[B, h, w, 2]`` source positions ``(x, y)`` in level-0 pixel units, per driving pixel.
    radius: window radius r.

  Returns:
    ``[B, h, w, L * (2r+1)^2]``: level-major, then the window flattened with the x offset on the
    slow axis (see the module docstring); bilinear, zero outside each level.
  """
  b, h, w, _ = coords.shape
  n = 2 * radius + 1
  offsets = jnp.arange(n, dtype=coords.dtype) - radius
  delta = jnp.stack([jnp.broadcast_to(offsets[:, None], (n, n)),
                     jnp.broadcast_to(offsets[None, :], (n, n))], axis=-1)      # [n, n, (dx, dy)]
  out = []
  for level, corr in enumerate(pyramid):
    hs, ws = corr.shape[-2:]
    points = coords.reshape(b * h * w, 1, 2) / 2 ** level + delta.reshape(1, n * n, 2)
    sampled = sample_pixels(corr.reshape(b * h * w, hs, ws), points)              # [Bhw, n*n]
    out.append(sampled.reshape(b, h, w, n * n))
  return jnp.concatenate(out, axis=-1)


# ------------------------------------------------------------------------------------ helpers


def to_pixels(grid: jax.Array, size: Sequence[int]) -> jax.Array:
  """Normalised ``(x, y)`` -> pixel coordinates on an ``(h, w)`` corner-aligned grid."""
  h, w = size
  return jnp.stack([(grid[..., 0] + 1) * 0.5 * (w - 1), (grid[..., 1] + 1) * 0.5 * (h - 1)], -1)


def pixel_to_normalized_scale(size: Sequence[int], dtype=jnp.float32) -> jax.Array:
  """Per-axis factor turning a pixel displacement into a normalised one: ``2 / (n - 1)``."""
  h, w = size
  return jnp.asarray([2.0 / max(w - 1, 1), 2.0 / max(h - 1, 1)], dtype)


def logit(p: jax.Array, eps: float = 1e-6) -> jax.Array:
  p = jnp.clip(p, eps, 1 - eps)
  return jnp.log(p) - jnp.log1p(-p)


def group_centers(kp: jax.Array, points_per_tps: int = 5) -> jax.Array:
  """``[B, K * 5, 2] -> [B, K, 2]``: the mean of each TPS group (MRFA with the TPSMM prior)."""
  return keypoints_lib.split_tps(kp, points_per_tps).mean(axis=2)


def warp_features_per_scale(encoder_maps: Sequence[jax.Array], flows: Sequence[jax.Array],
                            occlusion: Sequence[jax.Array]) -> list[jax.Array]:
  """Fine-to-coarse encoder maps, coarse-to-fine flows and masks -> coarse-to-fine warped maps.

  The per-scale counterpart of ``generator.warp_features``: scale ``i`` is warped by its own
  flow; the result feeds ``InpaintingGenerator.decode``.
  """
  return [warp.warp(f, g) * m for f, g, m in zip(reversed(encoder_maps), flows, occlusion)]


# ------------------------------------------------------------------------------------- modules


class StructureEncoder(nn.Module):
  """Hourglass on keypoint heatmaps (+ image) -> ``[B, h, w, dim]`` structure features
  (``norm``: instance here, ``'batch'`` in the published MRFA's ``motion/raft_flow.py``)."""
  dim: int = 256
  block_expansion: int = 32
  num_blocks: int = 5
  max_features: int = 512
  norm: str = "instance"
  axis_name: str | None = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    out = Hourglass(self.block_expansion, self.num_blocks, self.max_features, self.norm,
                    self.axis_name, name="hourglass")(x, train)[-1]
    return nn.Conv(self.dim, (1, 1), kernel_init=nn.initializers.variance_scaling(
        1 / 3, "fan_in", "uniform"), name="head")(out)


class UpdateOperator(nn.Module):
  """Shared flow/occlusion update: motion encoder + refine heads (``BasicMotionEncoder`` and
  ``RefineFlow``). ``(displacement [B,h,w,2] px, corr, context) -> (d_flow px, d_occ logit)``."""
  corr_features: Sequence[int] = (128, 96)
  flow_features: Sequence[int] = (128, 64)
  motion_features: int = 128
  hidden: int = 128

  @nn.compact
  def __call__(self, displacement: jax.Array, corr: jax.Array,
               context: jax.Array) -> tuple[jax.Array, jax.Array]:
    c = nn.relu(conv(self.corr_features[0], 1, "corr1")(corr))
    c = nn.relu(conv(self.corr_features[1], 3, "corr2")(c))
    f = nn.relu(conv(self.flow_features[0], 7, "flow1")(displacement))
    f = nn.relu(conv(self.flow_features[1], 3, "flow2")(f))
    m = nn.relu(conv(self.motion_features - 2, 3, "motion")(jnp.concatenate([c, f], -1)))
    m = jnp.concatenate([m, displacement], axis=-1)
    ctx = nn.relu(conv(self.hidden, 3, "context")(context))
    x = jnp.concatenate([m, ctx], axis=-1)
    d_flow = conv(2, 3, "flow_head2")(nn.relu(conv(self.hidden, 3, "flow_head1")(x)))
    d_occ = conv(1, 3, "occlusion_head2")(nn.relu(conv(self.hidden, 3, "occlusion_head1")(x)))
    return d_flow, d_occ


class CorrelationRefinement(nn.Module):
  """MRFA refinement of TPSMM's prior flow and occlusion over the generator's scales.

  Attributes:
    dim: structure feature width (reference 256).
    encoder_block_expansion, encoder_num_blocks, encoder_max_features: both structure hourglasses
      (reference 32, 5, 512).
    scale_factor: base resolution relative to the image (the dense motion's, vox-256 0.25).
    kp_variance: heatmap variance (reference 0.1).
    points_per_tps: TPS group size; heatmaps use the group means.
    num_levels, radius: correlation pyramid (reference 2, 3).
    context_features: per-scale context projection width (reference 192).
    corr_features, flow_features, motion_features, hidden: update operator widths (reference
      (128, 96), (128, 64), 128, 128).
    refine_steps: scales refined, coarsest first; ``None`` = all (the reference refines all 6 of
      its scales); ``0`` returns the prior unchanged.

  Call: ``source [B, H, W, C]``, ``kp_source`` / ``kp_driving`` ``[B, K*5, 2]``, ``encoder_maps``
  (``InpaintingGenerator.encode``, fine to coarse), ``motion`` (``DenseMotionNetwork`` output:
  ``deformation`` at the base resolution, ``occlusion_map`` one mask per scale, coarse to fine, or
  a single one) -> dict with coarse-to-fine lists ``flows`` (sampling grids), ``occlusion_map``,
  ``warped_features`` (for ``decode``), plus ``deformation`` (the finest flow), ``correlation``
  ``[B, h, w, h, w]`` and ``prior_flows`` (the prior resized to each scale).
  """
  dim: int = 256
  encoder_block_expansion: int = 32
  encoder_num_blocks: int = 5
  encoder_max_features: int = 512
  scale_factor: float = 0.25
  kp_variance: float = 0.1
  points_per_tps: int = 5
  num_levels: int = 2
  radius: int = 3
  context_features: int = 192
  corr_features: Sequence[int] = (128, 96)
  flow_features: Sequence[int] = (128, 64)
  motion_features: int = 128
  hidden: int = 128
  refine_steps: int | None = None

  @nn.compact
  def __call__(self, source: jax.Array, kp_source: jax.Array, kp_driving: jax.Array,
               encoder_maps: Sequence[jax.Array], motion: dict) -> dict:
    scales = [m.shape[1:3] for m in reversed(encoder_maps)]                    # coarse to fine
    occlusion = list(motion["occlusion_map"])
    if len(occlusion) == 1 and len(scales) > 1:
      occlusion = [warp.resize_bilinear(occlusion[0], s) for s in scales]
    if len(occlusion) != len(scales):
      raise ValueError(f"{len(occlusion)} occlusion masks for {len(scales)} scales")
    prior = motion["deformation"]
    prior_flows = [warp.resize_flow(prior, s) for s in scales]
    steps = len(scales) if self.refine_steps is None else min(self.refine_steps, len(scales))
    out = {"prior_flows": prior_flows}
    if steps == 0:
      out.update(flows=prior_flows, occlusion_map=occlusion, deformation=prior_flows[-1],
                 warped_features=warp_features_per_scale(encoder_maps, prior_flows, occlusion))
      return out

    # Structure features and the all-pairs volume at the base resolution.
    small = antialias_downsample(source, self.scale_factor)
    b, hb, wb, _ = small.shape
    centers_s = group_centers(kp_source, self.points_per_tps)
    centers_d = group_centers(kp_driving, self.points_per_tps)
    position = self.param("position_embedding", nn.initializers.truncated_normal(0.02),
                          (1, hb, wb, centers_s.shape[1]))
    heat_s = keypoint_gaussians(centers_s, hb, wb, self.kp_variance) + position
    heat_d = keypoint_gaussians(centers_d, hb, wb, self.kp_variance) + position
    encoder = lambda name: StructureEncoder(self.dim, self.encoder_block_expansion,
                                            self.encoder_num_blocks, self.encoder_max_features,
                                            name=name)
    key_s = encoder("source_encoder")(jnp.concatenate([heat_s, small], axis=-1))
    query_d = encoder("driving_encoder")(heat_d)
    corr = correlation_volume(query_d, key_s)                                   # [B,hb,wb,hb,wb]
    out["correlation"] = corr
    update = UpdateOperator(self.corr_features, self.flow_features, self.motion_features,
                            self.hidden, name="update")

    flows, masks = [], []
    residual = occ_residual = None                 # normalised flow / occlusion-logit increments
    for i, ((h, w), feats) in enumerate(zip(scales, reversed(encoder_maps))):
      if residual is not None:
        residual = warp.resize_bilinear(residual, (h, w))
        occ_residual = warp.resize_bilinear(occ_residual, (h, w))
      flow = prior_flows[i] if residual is None else prior_flows[i] + residual
      if i < steps:
        ident = warp.coordinate_grid(h, w, flow.dtype)[None]
        to_norm = pixel_to_normalized_scale((h, w), flow.dtype)
        displacement = (flow - ident) / to_norm                                 # pixels at (h, w)
        if h <= hb:
          volume = pool_driving(corr, hb // h)
          corr_feats = lookup(correlation_pyramid(volume, self.num_levels),
                              to_pixels(flow, (hb, wb)), self.radius)
        else:
          corr_feats = lookup(correlation_pyramid(corr, self.num_levels),
                              to_pixels(warp.resize_flow(flow, (hb, wb)), (hb, wb)), self.radius)
          corr_feats = warp.resize_bilinear(corr_feats, (h, w))
        context = nn.relu(nn.Conv(self.context_features, (1, 1), kernel_init=nn.initializers
                                  .variance_scaling(1 / 3, "fan_in", "uniform"),
                                  name=f"context{i}")(warp.grid_sample(feats, flow)))
        d_flow, d_occ = update(displacement, corr_feats, context)
        d_flow = d_flow * to_norm
        residual = d_flow if residual is None else residual + d_flow
        occ_residual = d_occ if occ_residual is None else occ_residual + d_occ
        flow = prior_flows[i] + residual
      flows.append(flow)
      masks.append(occlusion[i] if occ_residual is None
                   else nn.sigmoid(logit(occlusion[i]) + occ_residual))
    out.update(flows=flows, occlusion_map=masks, deformation=flows[-1],
               warped_features=warp_features_per_scale(encoder_maps, flows, masks))
    return out

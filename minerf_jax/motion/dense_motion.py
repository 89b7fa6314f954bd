"""Convolutional blocks, hourglass and TPSMM's dense motion network (NHWC).

Dense motion (``modules/dense_motion.py`` in the reference). At ``scale_factor`` of the input
resolution (vox-256: 0.25, i.e. 64x64), given source/driving keypoints ``[B, K*5, 2]`` and an
optional background matrix:

1. K+1 sampling grids, driving -> source: the background grid (identity, or the background
   affine) first, then one thin-plate spline per group of 5 keypoints (``tps.fit_tps``).
2. The hourglass input: ``[0, G_drv - G_src]`` Gaussian heatmap differences (one channel per
   keypoint, ``kp_variance`` 0.01 in normalised units, plus a zero channel for the background)
   concatenated with the source warped by each of the K+1 grids (channels ordered
   transform-major, colour-minor, as the reference's ``view`` gives).
3. A 7x7 conv on the finest hourglass output gives K+1 contribution maps; their softmax over the
   transforms blends the K+1 grids into one optical flow (Eq. 6).
4. Occlusion masks, one per generator scale, coarse to fine (``num_occlusion_masks`` = the
   generator's ``num_down_blocks + 1`` = 4): a sigmoid 7x7 conv on the last hourglass outputs at
   their own resolutions, then on ``log2(1 / scale_factor)`` extra nearest-upsampling blocks that
   reach the full input resolution. For vox-256 that is masks at 32, 64, 128 and 256 pixels.

Transform dropout (Eq. 7-8; the reference trains with it *before* ``dropout_epoch`` = 35, with
p = min(0.1 + 0.03 * epoch, 0.3), then turns it off): each TPS
transform (never the background) is dropped per sample with probability p before the softmax
normalisation. The reference also divides the surviving logits by ``1 - p``, but after the
exponentials are taken, so that has no effect; the effective operation, reproduced here, is
``exp(x - max) * keep / (sum(exp(x - max) * keep) + 1e-6)``. ``p`` may be a traced scalar, so a
schedule does not recompile.

Blocks (``modules/util.py``): ``SameBlock`` conv-IN-ReLU, ``DownBlock`` conv-IN-ReLU-avgpool/2,
``UpBlock`` nearest x2-conv-IN-ReLU, ``ResBlock`` pre-activation IN-ReLU-conv twice plus the
input. Instance norm is affine with eps 1e-5 (``nn.InstanceNorm2d(affine=True)``); convs have
biases and PyTorch's default weight init. ``norm='batch'`` swaps every instance norm for
BatchNorm, as FOMM and MCNet build the same blocks (``motion/fomm.py``); the blocks then take
``train``. Before the hourglass the source is low-passed by a
Gaussian (sigma = (1/s - 1)/2) and nearest-subsampled (``AntiAliasInterpolation2d``).
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from minerf_jax.motion import keypoints as keypoints_lib
from minerf_jax.motion import tps as tps_lib
from minerf_jax.motion import warp

# PyTorch's default Conv2d weight init, kaiming_uniform(a=sqrt(5)) = U(+-1/sqrt(fan_in)).
torch_default_init = nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")


def conv(features: int, kernel: int, name: str | None = None) -> nn.Conv:
  """Stride-1 conv with symmetric ``kernel // 2`` padding and a bias, as in the reference."""
  p = kernel // 2
  return nn.Conv(features, (kernel, kernel), padding=((p, p), (p, p)),
                 kernel_init=torch_default_init, name=name)


def instance_norm(name: str | None = None) -> nn.InstanceNorm:
  return nn.InstanceNorm(epsilon=1e-5, name=name)


NORMS = ("instance", "batch")


def norm_layer(kind: str, train: bool, name: str | None = None,
               axis_name: str | None = None) -> nn.Module:
  """The blocks' normalisation: affine instance norm (TPSMM) or BatchNorm (FOMM and MCNet: eps
  1e-5, PyTorch momentum 0.1 = flax 0.9; running statistics in ``batch_stats``, batch statistics
  when ``train``, over ``axis_name`` inside a pmap)."""
  if kind == "instance":
    return instance_norm(name)
  if kind == "batch":
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                        axis_name=axis_name if train else None, name=name)
  raise ValueError(f"norm={kind!r}; use one of {NORMS}")


class SameBlock(nn.Module):
  """conv -> norm -> ReLU, resolution preserved."""
  features: int
  kernel: int = 3
  norm: str = "instance"
  axis_name: str | None = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    x = conv(self.features, self.kernel, "conv")(x)
    return nn.relu(norm_layer(self.norm, train, "norm", self.axis_name)(x))


class DownBlock(nn.Module):
  """conv -> norm -> ReLU -> 2x2 average pool."""
  features: int
  norm: str = "instance"
  axis_name: str | None = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    x = nn.relu(norm_layer(self.norm, train, "norm", self.axis_name)(
        conv(self.features, 3, "conv")(x)))
    return nn.avg_pool(x, (2, 2), (2, 2))


class UpBlock(nn.Module):
  """nearest x2 upsampling -> conv -> norm -> ReLU."""
  features: int
  norm: str = "instance"
  axis_name: str | None = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    x = conv(self.features, 3, "conv")(warp.upsample_nearest(x, 2))
    return nn.relu(norm_layer(self.norm, train, "norm", self.axis_name)(x))


class ResBlock(nn.Module):
  """Pre-activation residual block at the input's width and resolution."""
  kernel: int = 3
  norm: str = "instance"
  axis_name: str | None = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    c = x.shape[-1]
    norm = lambda name: norm_layer(self.norm, train, name, self.axis_name)
    y = conv(c, self.kernel, "conv1")(nn.relu(norm("norm1")(x)))
    y = conv(c, self.kernel, "conv2")(nn.relu(norm("norm2")(y)))
    return x + y


class Hourglass(nn.Module):
  """U-Net of ``num_blocks`` down/up blocks; returns every decoder level, coarse to fine.

  Encoder level i has ``min(max_features, block_expansion * 2**(i+1))`` channels. Decoder output
  j is the upsampled features concatenated with the matching encoder skip; the last one is at
  the input resolution with ``block_expansion + in_channels`` channels. The input height and
  width must be divisible by ``2**num_blocks``. ``norm``: ``'instance'`` (TPSMM) or ``'batch'``
  (FOMM, MCNet).
  """
  block_expansion: int = 64
  num_blocks: int = 5
  max_features: int = 1024
  norm: str = "instance"
  axis_name: str | None = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> list[jax.Array]:
    if x.shape[1] % 2 ** self.num_blocks or x.shape[2] % 2 ** self.num_blocks:
      raise ValueError(f"hourglass input {x.shape[1:3]} not divisible by 2**{self.num_blocks}")
    width = lambda i: min(self.max_features, self.block_expansion * 2 ** i)
    skips = [x]
    for i in range(self.num_blocks):
      skips.append(DownBlock(width(i + 1), self.norm, self.axis_name, name=f"down{i}")(
          skips[-1], train))
    out, outs = skips.pop(), []
    for j, i in enumerate(reversed(range(self.num_blocks))):
      up = UpBlock(width(i), self.norm, self.axis_name, name=f"up{j}")(out, train)
      out = jnp.concatenate([up, skips.pop()], axis=-1)
      outs.append(out)
    return outs


def antialias_downsample(x: jax.Array, scale: float) -> jax.Array:
  """Gaussian low-pass then nearest subsampling by ``scale`` (``AntiAliasInterpolation2d``).

  ``[B, H, W, C] -> [B, floor(H * scale), floor(W * scale), C]``; ``scale == 1`` is the identity.
  """
  if scale == 1:
    return x
  sigma = (1 / scale - 1) / 2
  size = 2 * round(sigma * 4) + 1
  ka = size // 2
  kb = ka - 1 if size % 2 == 0 else ka
  t = np.arange(size, dtype=np.float64) - (size - 1) / 2
  g = np.exp(-t ** 2 / (2 * sigma ** 2))
  kernel = np.outer(g, g)
  kernel = (kernel / kernel.sum()).astype(np.float32)
  c = x.shape[-1]
  weight = jnp.asarray(np.tile(kernel[:, :, None, None], (1, 1, 1, c)), x.dtype)
  y = jax.lax.conv_general_dilated(x, weight, (1, 1), ((ka, kb), (ka, kb)),
                                   dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                   feature_group_count=c)
  h, w = int(math.floor(x.shape[1] * scale)), int(math.floor(x.shape[2] * scale))
  rows = np.minimum(np.floor(np.arange(h) / scale).astype(np.int64), x.shape[1] - 1)
  cols = np.minimum(np.floor(np.arange(w) / scale).astype(np.int64), x.shape[2] - 1)
  return y[:, rows][:, :, cols]


def keypoint_gaussians(kp: jax.Array, h: int, w: int, kp_variance: float = 0.01) -> jax.Array:
  """``kp [B, N, 2] -> [B, h, w, N]``: ``exp(-|p - kp|^2 / (2 variance))`` on the pixel grid."""
  grid = warp.coordinate_grid(h, w, kp.dtype)
  d2 = jnp.sum(jnp.square(grid[None, :, :, None, :] - kp[:, None, None, :, :]), axis=-1)
  return jnp.exp(-0.5 * d2 / kp_variance)


def motion_grids(kp_source: jax.Array, kp_driving: jax.Array, h: int, w: int,
                 bg_param: jax.Array | None = None, points_per_tps: int = 5,
                 regularization: float = tps_lib.DEFAULT_REGULARIZATION) -> jax.Array:
  """``[B, K+1, h, w, 2]`` driving->source sampling grids: background first, then K splines."""
  splines = tps_lib.fit_tps(keypoints_lib.split_tps(kp_driving, points_per_tps),
                            keypoints_lib.split_tps(kp_source, points_per_tps), regularization)
  fg = tps_lib.warp_grid(splines, h, w)                                     # [B, K, h, w, 2]
  bg = tps_lib.background_grid(bg_param, h, w, kp_source.shape[0]).astype(fg.dtype)
  return jnp.concatenate([bg[:, None], fg], axis=1)


def warp_with_each(image: jax.Array, grids: jax.Array) -> jax.Array:
  """``image [B, H, W, C]``, ``grids [B, T, h, w, 2] -> [B, T, h, w, C]``."""
  return jax.vmap(warp.grid_sample, in_axes=(None, 1), out_axes=1)(image, grids)


def dropout_softmax(logits: jax.Array, rng: jax.Array, p: float | jax.Array) -> jax.Array:
  """Softmax over the last axis (transforms) with whole transforms 1.. dropped with prob. ``p``.

  ``logits [B, h, w, T]``; transform 0 (background) is always kept; one draw per sample and
  transform, shared by all pixels. See the module docstring for the reference's normalisation.
  """
  b, t = logits.shape[0], logits.shape[-1]
  keep = jax.random.uniform(rng, (b, t)) < 1 - p
  keep = keep.at[:, 0].set(True)[:, None, None, :]
  e = jnp.exp(logits - jnp.max(logits, axis=-1, keepdims=True)) * keep
  return e / (jnp.sum(e, axis=-1, keepdims=True) + 1e-6)


class DenseMotionNetwork(nn.Module):
  """Keypoints (+ background affine) -> optical flow and multi-scale occlusion masks.

  Attributes:
    num_tps: K.
    block_expansion, num_blocks, max_features: hourglass (vox-256: 64, 5, 1024).
    scale_factor: working resolution relative to the input (vox-256: 0.25).
    kp_variance: heatmap variance in normalised units.
    num_occlusion_masks: masks returned when ``multi_mask`` (generator ``num_down_blocks + 1``).
    multi_mask: one mask per generator scale; else one mask at the working resolution.
    points_per_tps: control points per spline.
    tps_regularization: ridge added to the TPS system (``tps.fit_tps``).

  Call returns a dict:
    ``deformation`` ``[B, h, w, 2]`` flow (driving -> source sampling grid at the working
    resolution); ``contribution_maps`` ``[B, h, w, K+1]``; ``deformed_source``
    ``[B, K+1, h, w, C]``; ``transformations`` ``[B, K+1, h, w, 2]``; ``occlusion_map`` list of
    ``[B, h_i, w_i, 1]`` in ``(0, 1)``, coarse to fine.
  """
  num_tps: int = 10
  block_expansion: int = 64
  num_blocks: int = 5
  max_features: int = 1024
  scale_factor: float = 0.25
  kp_variance: float = 0.01
  num_occlusion_masks: int = 4
  multi_mask: bool = True
  points_per_tps: int = 5
  tps_regularization: float = tps_lib.DEFAULT_REGULARIZATION

  @nn.compact
  def __call__(self, source: jax.Array, kp_source: jax.Array, kp_driving: jax.Array,
               bg_param: jax.Array | None = None, dropout: bool = False,
               dropout_p: float | jax.Array = 0.0) -> dict:
    """``dropout`` uses the ``'dropout'`` rng stream; see the class docstring for outputs."""
    n_up = int(round(math.log2(1 / self.scale_factor)))
    n_from_hourglass = self.num_occlusion_masks - n_up
    if self.multi_mask and not 0 <= n_from_hourglass <= self.num_blocks + 1:
      raise ValueError(f"num_occlusion_masks={self.num_occlusion_masks} needs between {n_up} and "
                       f"{n_up + self.num_blocks + 1} masks for scale_factor={self.scale_factor}")
    source = antialias_downsample(source, self.scale_factor)
    b, h, w, c = source.shape

    gaussians = (keypoint_gaussians(kp_driving, h, w, self.kp_variance)
                 - keypoint_gaussians(kp_source, h, w, self.kp_variance))
    heatmaps = jnp.concatenate([jnp.zeros((b, h, w, 1), source.dtype), gaussians], axis=-1)
    grids = motion_grids(kp_source, kp_driving, h, w, bg_param, self.points_per_tps,
                         self.tps_regularization)
    deformed = warp_with_each(source, grids)                              # [B, K+1, h, w, C]
    stacked = jnp.moveaxis(deformed, 1, 3).reshape(b, h, w, -1)           # transform-major
    prediction = Hourglass(self.block_expansion, self.num_blocks, self.max_features,
                           name="hourglass")(jnp.concatenate([heatmaps, stacked], axis=-1))

    logits = conv(self.num_tps + 1, 7, "maps")(prediction[-1])
    if dropout:
      contribution = dropout_softmax(logits, self.make_rng("dropout"), dropout_p)
    else:
      contribution = jax.nn.softmax(logits, axis=-1)
    deformation = jnp.einsum("bhwt,bthwd->bhwd", contribution, grids)

    occlusion = []
    if self.multi_mask:
      for i in range(n_from_hourglass):
        feats = prediction[len(prediction) - n_from_hourglass + i]
        occlusion.append(nn.sigmoid(conv(1, 7, f"occlusion{i}")(feats)))
      feats = prediction[-1]
      for i in range(n_up):
        feats = UpBlock(prediction[-1].shape[-1] // 2 ** (i + 1), name=f"occlusion_up{i}")(feats)
        occlusion.append(nn.sigmoid(conv(1, 7, f"occlusion{n_from_hourglass + i}")(feats)))
    else:
      occlusion.append(nn.sigmoid(conv(1, 7, "occlusion0")(prediction[-1])))

    return {"deformation": deformation, "contribution_maps": contribution,
            "deformed_source": deformed, "transformations": grids, "occlusion_map": occlusion}

"""FOMM's keypoints with local affine Jacobians and its dense motion network (NHWC): MCNet's base.

MCNet (Hong & Xu, ICCV 2023; ``harlanhong/ICCV2023-MCNET``) is built on the first-order motion
model (FOMM, Siarohin et al. 2019), not on TPSMM. Its ``modules/keypoint_detector.py: KPDetector``
and ``modules/dense_motion.py: DenseMotionNetwork`` (vox-256 config: ``num_kp`` 15 by the
README's ``--kp_num 15``, detector hourglass ``block_expansion`` 32, ``max_features`` 1024,
``num_blocks`` 5, ``scale_factor`` 0.25, ``temperature`` 0.1; dense motion 64 / 1024 / 5 / 0.25,
``kp_variance`` 0.01, one occlusion map):

``KeypointDetector``: anti-aliased downsampling, an hourglass (BatchNorm blocks) whose finest
output ``[B, h, w, 32 + 3]`` goes through a 7x7 conv *without padding* (``pad=0``: heatmaps of
``(h - 6) x (w - 6)``); a softmax over the positions at temperature 0.1 gives one heatmap per
keypoint and the keypoint is its mean coordinate on that smaller grid (``gaussian2kp``). A
second 7x7 conv gives 4 numbers per keypoint and position (zero weights, bias ``[1, 0, 0, 1]``
at initialisation), averaged under the heatmap into the keypoint's 2x2 Jacobian (row-major).

``DenseMotionNetwork`` at ``scale_factor`` of the input: K+1 sparse motions driving -> source,
the identity first (background), then per keypoint the local affine map
``z -> kp_s + J_s J_d^{-1} (z - kp_d)`` (Eq. 4); the source warped by each; the hourglass input
interleaves, per motion, one heatmap-difference channel (zero for the background) and the warped
source's channels (the reference concatenates ``[B, K+1, 1, h, w]`` and ``[B, K+1, C, h, w]`` on
dim 2); a 7x7 conv + softmax over motions gives the masks that blend the motions into the flow,
and a 7x7 conv + sigmoid the occlusion map.

The reference warps the source for the hourglass with ``F.grid_sample`` at PyTorch's default
``align_corners=False`` (it was written for PyTorch 1.0, whose default was ``True``; since 1.3 the
default is ``False``), while every other warp uses ``align_corners=True``. We keep the reference's
behaviour under current PyTorch (``sparse_align_corners=False``, the authors' released weights
were trained with whatever their PyTorch gave; ``True`` is FOMM's original intent). The
golden-output tests check both stages against the authors' code.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from minerf_jax.motion import warp
from minerf_jax.motion.dense_motion import Hourglass
from minerf_jax.motion.dense_motion import antialias_downsample
from minerf_jax.motion.dense_motion import conv
from minerf_jax.motion.dense_motion import keypoint_gaussians
from minerf_jax.motion.dense_motion import torch_default_init


def _padded_conv(features: int, kernel: int, pad: int, name: str, **kw) -> nn.Conv:
  """``dense_motion.conv`` with the padding given (the detector's heads use 0)."""
  return nn.Conv(features, (kernel, kernel), padding=((pad, pad), (pad, pad)),
                 kernel_init=kw.pop("kernel_init", torch_default_init), name=name, **kw)


def heatmap_mean(heatmap: jax.Array) -> jax.Array:
  """``[B, h, w, K]`` heatmaps (summing to 1) -> ``[B, K, 2]`` mean ``(x, y)`` coordinates."""
  grid = warp.coordinate_grid(heatmap.shape[1], heatmap.shape[2], heatmap.dtype)
  return jnp.einsum("bhwk,hwd->bkd", heatmap, grid)


class KeypointDetector(nn.Module):
  """``image [B, H, W, C] -> {'value': [B, K, 2], 'jacobian': [B, K, 2, 2], 'heatmap'}``.

  Attributes:
    num_kp: K (MCNet's README: 15).
    block_expansion, max_features, num_blocks: the hourglass (vox-256: 32, 1024, 5).
    temperature: softmax temperature of the heatmaps (0.1).
    scale_factor: working resolution relative to the input (0.25).
    estimate_jacobian: also predict each keypoint's 2x2 Jacobian.
    pad: padding of the two 7x7 heads (the reference's 0).
    single_jacobian_map: one 4-channel Jacobian map shared by all keypoints, each keypoint's
      Jacobian its average under that keypoint's heatmap (FOMM's option; MRFA's FOMM prior
      uses it: ``num_jacobian_maps = 1``); else one map per keypoint (MCNet).
    norm: the hourglass blocks' normalisation (``'batch'``, the reference's).
    axis_name: BatchNorm's device axis under pmap.
  """
  num_kp: int = 15
  block_expansion: int = 32
  max_features: int = 1024
  num_blocks: int = 5
  temperature: float = 0.1
  scale_factor: float = 0.25
  estimate_jacobian: bool = True
  pad: int = 0
  single_jacobian_map: bool = False
  norm: str = "batch"
  axis_name: str | None = None

  @nn.compact
  def __call__(self, image: jax.Array, train: bool = False) -> dict:
    x = antialias_downsample(image, self.scale_factor)
    feats = Hourglass(self.block_expansion, self.num_blocks, self.max_features, self.norm,
                      self.axis_name, name="predictor")(x, train)[-1]
    logits = _padded_conv(self.num_kp, 7, self.pad, "kp")(feats)              # [B, h', w', K]
    b, h, w, k = logits.shape
    heat = jax.nn.softmax(logits.reshape(b, h * w, k) / self.temperature, axis=1)
    heat = heat.reshape(b, h, w, k)
    out = {"value": heatmap_mean(heat), "heatmap": heat}
    if self.estimate_jacobian:
      identity = lambda key, shape, dtype=jnp.float32: jnp.tile(
          jnp.asarray([1, 0, 0, 1], dtype), shape[0] // 4)
      num_maps = 1 if self.single_jacobian_map else k
      maps = _padded_conv(4 * num_maps, 7, self.pad, "jacobian",
                          kernel_init=nn.initializers.zeros_init(), bias_init=identity)(feats)
      maps = jnp.broadcast_to(maps.reshape(b, h, w, num_maps, 4), (b, h, w, k, 4))
      out["jacobian"] = jnp.einsum("bhwk,bhwkj->bkj", heat, maps).reshape(b, k, 2, 2)
    return out


def sparse_motions(kp_source: dict, kp_driving: dict, h: int, w: int) -> jax.Array:
  """``[B, K+1, h, w, 2]`` driving -> source grids: identity, then each keypoint's local affine
  map ``kp_s + J_s J_d^{-1} (z - kp_d)`` (without Jacobians: a translation)."""
  grid = warp.coordinate_grid(h, w, kp_source["value"].dtype)                   # [h, w, 2]
  rel = grid[None, None] - kp_driving["value"][:, :, None, None, :]             # [B, K, h, w, 2]
  if "jacobian" in kp_driving:
    jac = jnp.matmul(kp_source["jacobian"], jnp.linalg.inv(kp_driving["jacobian"]))
    rel = jnp.einsum("bkij,bkhwj->bkhwi", jac, rel)
  fg = rel + kp_source["value"][:, :, None, None, :]
  bg = jnp.broadcast_to(grid, (fg.shape[0], 1, h, w, 2))
  return jnp.concatenate([bg, fg], axis=1)


class DenseMotionNetwork(nn.Module):
  """Keypoints + Jacobians -> flow, masks and one occlusion map (see the module docstring).

  Attributes:
    num_kp: K.
    block_expansion, num_blocks, max_features: the hourglass (vox-256: 64, 5, 1024).
    scale_factor: working resolution relative to the input (0.25).
    kp_variance: heatmap variance in normalised units (0.01).
    estimate_occlusion_map: predict the occlusion map (MCNet: yes).
    sparse_align_corners: ``align_corners`` of the sparse warps (module docstring).
    norm, axis_name: the hourglass blocks' normalisation.

  Call: ``(source [B, H, W, C], kp_source, kp_driving)`` (detector outputs) -> dict with
  ``deformation`` ``[B, h, w, 2]``, ``mask`` ``[B, h, w, K+1]``, ``sparse_deformed``
  ``[B, K+1, h, w, C]``, ``sparse_motion`` ``[B, K+1, h, w, 2]`` and ``occlusion_map``, a list
  of one ``[B, h, w, 1]`` map (the generator resizes it to each scale), and its
  ``occlusion_logit`` (MRFA's dense motion returns the logit; the network is otherwise FOMM's).
  """
  num_kp: int = 15
  block_expansion: int = 64
  num_blocks: int = 5
  max_features: int = 1024
  scale_factor: float = 0.25
  kp_variance: float = 0.01
  estimate_occlusion_map: bool = True
  sparse_align_corners: bool = False
  norm: str = "batch"
  axis_name: str | None = None

  @nn.compact
  def __call__(self, source: jax.Array, kp_source: dict, kp_driving: dict,
               train: bool = False) -> dict:
    source = antialias_downsample(source, self.scale_factor)
    b, h, w, c = source.shape
    heat = (keypoint_gaussians(kp_driving["value"], h, w, self.kp_variance)
            - keypoint_gaussians(kp_source["value"], h, w, self.kp_variance))    # [B, h, w, K]
    heat = jnp.concatenate([jnp.zeros((b, h, w, 1), heat.dtype), heat], axis=-1)
    motions = sparse_motions(kp_source, kp_driving, h, w)
    deformed = jax.vmap(lambda g: warp.grid_sample(source, g, self.sparse_align_corners),
                        in_axes=1, out_axes=1)(motions)                        # [B, K+1, h, w, C]
    per_motion = jnp.concatenate([jnp.moveaxis(heat, -1, 1)[..., None], deformed], axis=-1)
    x = jnp.moveaxis(per_motion, 1, 3).reshape(b, h, w, -1)       # motion-major, (heat, colour)
    feats = Hourglass(self.block_expansion, self.num_blocks, self.max_features, self.norm,
                      self.axis_name, name="hourglass")(x, train)[-1]
    mask = jax.nn.softmax(conv(self.num_kp + 1, 7, "mask")(feats), axis=-1)
    out = {"deformation": jnp.einsum("bhwt,bthwd->bhwd", mask, motions), "mask": mask,
           "sparse_deformed": deformed, "sparse_motion": motions}
    if self.estimate_occlusion_map:
      logit = conv(1, 7, "occlusion")(feats)
      out["occlusion_logit"] = logit                  # MRFA refines the logit (raft_flow.py)
      out["occlusion_map"] = [nn.sigmoid(logit)]
    return out

"""TPSMM's inpainting generator: encode the source, warp and occlude its features, decode (NHWC).

Layout (``modules/inpainting_network.py``; vox-256: ``block_expansion=64``, ``max_features=512``,
``num_down_blocks=3``): a 7x7 ``SameBlock`` then ``num_down_blocks`` ``DownBlock`` s give encoder
maps at full, 1/2, 1/4, 1/8 resolution (64, 128, 256, 512 channels). Each map is backward-warped
with the dense-motion flow (bilinearly resized, ``align_corners=True``, to the map's resolution)
and multiplied by the occlusion mask of its scale. Decoding starts from the warped bottleneck:
at each level two pre-activation ``ResBlock`` s, an ``UpBlock``, and (except at the last level)
concatenation with the next finer warped map. At full resolution the decoder output is blended
as ``out * (1 - m) + warped_first`` (``m`` the finest mask), a 7x7 conv + sigmoid gives an image,
and the final prediction is ``image * (1 - m) + warp(source) * m``: visible pixels come from the
warped source, occluded ones are inpainted.

The three stages are separate methods so models built on TPSMM can intervene between them:
``encode`` -> ``warp_features`` -> (MCNet: compensate the warped maps with its memory bank) ->
``decode``. ``__call__`` runs all three and returns, besides the prediction:

* ``warped_features``: the warped, occluded maps the decoder consumes (coarse to fine), with full
  gradients.
* ``warped_encoder_maps``: the same values with the reference's gradient routing for the warp
  loss: features and masks detached, the flow not (``out_ij`` / ``encode_ij`` in the reference),
  so that loss only trains the dense motion network. Compare with ``masked_driving_features``.

With ``multi_mask=False`` a single mask is bilinearly resized to every scale. ``norm='batch'``
(MCNet's ``Unet_Generator_keypoint_aware``: the same layout with BatchNorm in every block) makes
``encode`` / ``decode`` take ``train``.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from minerf_jax.motion import warp
from minerf_jax.motion.dense_motion import DownBlock
from minerf_jax.motion.dense_motion import ResBlock
from minerf_jax.motion.dense_motion import SameBlock
from minerf_jax.motion.dense_motion import UpBlock
from minerf_jax.motion.dense_motion import conv


def mask_at(occlusion: Sequence[jax.Array], index: int, shape: Sequence[int],
             multi_mask: bool) -> jax.Array:
  """Occlusion mask for a level: the ``index``-th (multi-mask) or the single one resized."""
  if multi_mask:
    return occlusion[index]
  return warp.resize_bilinear(occlusion[0], shape)


def warp_features(encoder_maps: Sequence[jax.Array], deformation: jax.Array,
                  occlusion: Sequence[jax.Array], multi_mask: bool = True,
                  detach_features: bool = False) -> list[jax.Array]:
  """Warp fine-to-coarse ``encoder_maps`` by ``deformation`` and occlude: coarse-to-fine list.

  ``occlusion`` is coarse to fine (as ``DenseMotionNetwork`` returns it). With
  ``detach_features`` the maps and masks get no gradient but the flow does (warp-loss routing).
  """
  stop = jax.lax.stop_gradient if detach_features else (lambda x: x)
  out = []
  for i, feats in enumerate(reversed(encoder_maps)):
    mask = mask_at(occlusion, i, feats.shape[1:3], multi_mask)
    out.append(warp.warp(stop(feats), deformation) * stop(mask))
  return out


class InpaintingGenerator(nn.Module):
  """Source image + dense motion -> predicted driving frame.

  Attributes:
    num_channels: image channels.
    block_expansion: channels of the first block.
    max_features: channel cap.
    num_down_blocks: encoder downsamplings; the dense motion must provide
      ``num_down_blocks + 1`` occlusion masks (``multi_mask``) at matching resolutions.
    multi_mask: see the module docstring.
  """
  num_channels: int = 3
  block_expansion: int = 64
  max_features: int = 512
  num_down_blocks: int = 3
  multi_mask: bool = True
  norm: str = "instance"
  axis_name: str | None = None

  def setup(self):
    width = lambda i: min(self.max_features, self.block_expansion * 2 ** i)
    n, a = self.norm, self.axis_name
    self.first = SameBlock(self.block_expansion, kernel=7, norm=n, axis_name=a)
    self.down_blocks = [DownBlock(width(i + 1), n, a) for i in range(self.num_down_blocks)]
    # Decoder level j works at encoder level i = num_down_blocks - 1 - j.
    levels = list(reversed(range(self.num_down_blocks)))
    self.res_blocks = [(ResBlock(norm=n, axis_name=a), ResBlock(norm=n, axis_name=a))
                       for _ in levels]
    self.up_blocks = [UpBlock(width(i), n, a) for i in levels]
    self.final = conv(self.num_channels, 7)

  def encode(self, image: jax.Array, train: bool = False) -> list[jax.Array]:
    """``[B, H, W, C]`` -> encoder maps, fine to coarse (``num_down_blocks + 1`` of them)."""
    maps = [self.first(image, train)]
    for block in self.down_blocks:
      maps.append(block(maps[-1], train))
    return maps

  def decode(self, warped: Sequence[jax.Array], deformed_source: jax.Array,
             occlusion_last: jax.Array, train: bool = False) -> jax.Array:
    """Coarse-to-fine warped maps + warped source + finest mask -> image in ``(0, 1)``."""
    out = warped[0]
    for j, ((res_a, res_b), up) in enumerate(zip(self.res_blocks, self.up_blocks)):
      out = up(res_b(res_a(out, train), train), train)
      if j < self.num_down_blocks - 1:
        out = jnp.concatenate([out, warped[j + 1]], axis=-1)
    out = out * (1 - occlusion_last) + warped[-1]
    out = nn.sigmoid(self.final(out))
    return out * (1 - occlusion_last) + deformed_source * occlusion_last

  def __call__(self, source: jax.Array, motion: dict) -> dict:
    """``source [B, H, W, C]``, ``motion`` from ``DenseMotionNetwork`` -> dict (see module doc).

    Returns ``prediction`` ``[B, H, W, C]``, ``deformed`` (the source warped at full
    resolution), ``warped_features`` and ``warped_encoder_maps`` (coarse-to-fine lists),
    ``encoder_maps`` (fine to coarse) and the ``occlusion_map`` list passed in.
    """
    deformation, occlusion = motion["deformation"], motion["occlusion_map"]
    expected = self.num_down_blocks + 1 if self.multi_mask else 1
    if len(occlusion) != expected:
      raise ValueError(f"expected {expected} occlusion masks, got {len(occlusion)}")
    encoder_maps = self.encode(source)
    warped = warp_features(encoder_maps, deformation, occlusion, self.multi_mask)
    for_loss = warp_features(encoder_maps, deformation, occlusion, self.multi_mask,
                             detach_features=True)
    deformed_source = warp.warp(source, deformation)
    occlusion_last = mask_at(occlusion, -1, source.shape[1:3], self.multi_mask)
    return {"prediction": self.decode(warped, deformed_source, occlusion_last),
            "deformed": deformed_source, "warped_features": warped,
            "warped_encoder_maps": for_loss, "encoder_maps": encoder_maps,
            "occlusion_map": list(occlusion)}

  def masked_driving_features(self, driving: jax.Array,
                              occlusion: Sequence[jax.Array]) -> list[jax.Array]:
    """Driving-frame encoder maps times the occlusion masks, coarse to fine, all detached.

    The warp loss target (``get_encode`` in the reference): ``|this[i] - warped_encoder_maps[i]|``
    summed over levels.
    """
    maps = self.encode(driving)
    out = []
    for i, feats in enumerate(reversed(maps)):
      mask = mask_at(occlusion, i, feats.shape[1:3], self.multi_mask)
      out.append(jax.lax.stop_gradient(feats * mask))
    return out

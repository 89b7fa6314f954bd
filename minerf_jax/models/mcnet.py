"""MCNet (Hong & Xu, ICCV 2023): implicit identity representation + meta-memory compensation.

TPSMM's motion and generator with ``motion.memory.MemoryCompensation`` between the feature warp
and the decoder: an identity code from the source keypoints and pooled warped features modulates
a learned memory bank (reference: 512 channels x 32 x 32), queried with attention from the warped
features at every scale but the finest; plus the memory consistency loss (weight 10).
``model.memory='off'`` keeps the parameters but skips the compensation: MCNet's baseline.
"""
from __future__ import annotations

import ml_collections

from minerf_jax.models import animation
from minerf_jax.models import tpsmm


def batch_spec(config: ml_collections.ConfigDict) -> str:
  return animation.batch_spec(config)


def model_config(size: str = "full") -> ml_collections.ConfigDict:
  config = tpsmm.model_config(size, name="mcnet")
  config.memory = "on"                   # on | off (ablation: the TPSMM path)
  config.memory_bank = {
      "full": dict(memory_channels=512, memory_size=32, style_features=512, style_hidden=128),
      "cpu": dict(memory_channels=64, memory_size=8, style_features=64, style_hidden=32),
      "test": dict(memory_channels=16, memory_size=4, style_features=16, style_hidden=8),
  }[size]
  return config


class MCNet(animation.AnimationModel):
  """MCNet behind the model seam (see ``animation.AnimationModel``)."""

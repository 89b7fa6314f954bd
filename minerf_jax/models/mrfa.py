"""MRFA (Tao et al., NeurIPS 2023): prior motion refined from a structure correlation volume.

TPSMM's thin-plate-spline + affine flow and occlusion are the coarse prior; structure encoders of
the source and driving keypoint heatmaps give an all-pairs correlation volume, and a shared update
operator refines flow and occlusion coarse to fine over the generator's scales with multi-level
lookups (``motion.correlation.CorrelationRefinement``). The reference runs 6 steps over its own
6-scale generator; on TPSMM's 4-scale generator the default refines all 4.
``model.refine_steps=0`` decodes with the prior itself: MRFA's coarse baseline.
"""
from __future__ import annotations

import ml_collections

from minerf_jax.models import animation
from minerf_jax.models import tpsmm


def batch_spec(config: ml_collections.ConfigDict) -> str:
  return animation.batch_spec(config)


def model_config(size: str = "full") -> ml_collections.ConfigDict:
  config = tpsmm.model_config(size, name="mrfa")
  config.refine_steps = config.generator.num_down_blocks + 1   # scales refined, coarsest first
  config.refine = {
      "full": dict(dim=256, encoder_block_expansion=32, encoder_num_blocks=5,
                   encoder_max_features=512, context_features=192, num_levels=2, radius=3),
      "cpu": dict(dim=32, encoder_block_expansion=8, encoder_num_blocks=3,
                  encoder_max_features=64, context_features=32, corr_features=(32, 24),
                  flow_features=(32, 16), motion_features=32, hidden=32, num_levels=2, radius=3),
      "test": dict(dim=8, encoder_block_expansion=4, encoder_num_blocks=2,
                   encoder_max_features=16, context_features=8, corr_features=(8, 8),
                   flow_features=(8, 8), motion_features=8, hidden=8, num_levels=2, radius=1),
  }[size]
  return config


class MRFA(animation.AnimationModel):
  """MRFA behind the model seam (see ``animation.AnimationModel``)."""

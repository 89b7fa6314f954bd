"""MRFA (Tao et al., NeurIPS 2023): prior motion refined from a structure correlation volume.

Builds behind one model (``model_config(size, base)``):

* ``base='mtia'``, **the published model** (``JialeTao/MRFA``, ``config/vox1.yaml``, its default
  ``prior_model: mtia``): the MTIA keypoint detector (HRNet base + TokenPose transformer,
  ``motion/mtia.py``; 10 keypoints with Jacobians) and FOMM's dense motion, whose flow and
  occlusion logit ``motion/raft_flow.py``'s ``RaftFlow`` refines over 6 steps from 8 to 256 px
  while decoding with MRFA's own 5-level generator: 114,290,054 parameters (the authors' count
  without the 49,152 of their fixed sine embedding, which ours computes).
* ``base='fomm'``: the same with the authors' ``prior_model: fomm`` option, FOMM's hourglass
  detector (one Jacobian map shared by the keypoints, as their ``KPDetector``).
* ``base='tpsmm'``, **ours** (``configs/mrfa.py:tpsmm``): a correlation refinement of TPSMM's
  prior over TPSMM's 4-scale generator (``motion/correlation.py``); ``model.refine_steps=0`` is
  its coarse baseline.
"""
from __future__ import annotations

import ml_collections

from minerf_jax.models import animation
from minerf_jax.models import mcnet
from minerf_jax.models import tpsmm

BASES = ("mtia", "fomm", "tpsmm")
# MTIA detector sizes: 'full' is config/vox1.yaml's mtia_kp_detector; 'cpu' (64 px: 4 x 4
# patches) and 'test' (32 px: 2 x 2) are ours.
MTIA = {
    "full": dict(dim=192, depth=12, heads=8),
    "cpu": dict(dim=64, depth=4, heads=4, stem_width=16, layer1_blocks=2,
                stage2_channels=(8, 16), stage2_blocks=(2, 2), stage3_channels=(8, 16, 32),
                stage3_blocks=(2, 2, 2), stage3_modules=2),
    "test": dict(dim=16, depth=2, heads=2, stem_width=8, layer1_blocks=1,
                 stage2_channels=(4, 8), stage2_blocks=(1, 1), stage3_channels=(4, 8, 16),
                 stage3_blocks=(1, 1, 1), stage3_modules=1),
}


def batch_spec(config: ml_collections.ConfigDict) -> str:
  return animation.batch_spec(config)


def published_model_config(size: str = "full", prior: str = "mtia") -> ml_collections.ConfigDict:
  """``config.model`` of the authors' MRFA on ``prior`` (``'mtia'`` or ``'fomm'``) at ``size``:
  ``'full'`` is ``config/vox1.yaml`` (``raft_flow``, ``dense_motion``, ``mtia_kp_detector`` /
  ``fomm_kp_detector``); ``'cpu'`` (64 px) and ``'test'`` (32 px) are ours, narrowed like the
  other systems."""
  if size not in tpsmm.SIZES:
    raise ValueError(f"model size {size!r}; choose one of {tpsmm.SIZES}")
  config = mcnet.fomm_model_config(size, name="mrfa")
  del config.memory, config.memory_bank
  config.num_kp = 10 if size != "test" else 5
  config.prior = prior
  config.kp_detector.single_jacobian_map = True    # MRFA's KPDetector: num_jacobian_maps = 1
  if prior == "mtia":
    config.kp_detector = dict(MTIA[size])
  config.generator = {
      "full": dict(block_expansion=64, max_features=512, num_up_blocks=5),
      "cpu": dict(block_expansion=16, max_features=128, num_up_blocks=5),
      # 32 px: 4 levels, so the coarsest map is 2 px (5 would leave 1 px), and 5 steps.
      "test": dict(block_expansion=8, max_features=32, num_up_blocks=4)}[size]
  config.refine = {
      "full": dict(dim=256, encoder_block_expansion=32, encoder_num_blocks=5,
                   encoder_max_features=512),
      # 64 px: structure features at 16 px (4 hourglass levels), narrower update operator.
      "cpu": dict(dim=32, encoder_block_expansion=8, encoder_num_blocks=4,
                  encoder_max_features=64, context_features=32, corr_features=(32, 24),
                  flow_features=(32, 16), motion_features=32, hidden=32),
      "test": dict(dim=8, encoder_block_expansion=4, encoder_num_blocks=3,
                   encoder_max_features=16, context_features=8, corr_features=(8, 8),
                   flow_features=(8, 8), motion_features=8, hidden=8),
  }[size]
  return config


def model_config(size: str = "full", base: str = "mtia") -> ml_collections.ConfigDict:
  """``config.model`` of MRFA on ``base`` (module docstring) at ``size``."""
  if base not in BASES:
    raise ValueError(f"MRFA base {base!r}; choose one of {BASES}")
  if base != "tpsmm":
    return published_model_config(size, base)
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

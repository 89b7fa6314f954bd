"""MCNet (Hong & Xu, ICCV 2023): implicit identity representation + meta-memory compensation.

Two builds behind one model (``model_config(size, base)``):

* ``base='fomm'``, **the published model** (``harlanhong/ICCV2023-MCNET``, its README's training
  command: ``--kp_num 15 --generator Unet_Generator_keypoint_aware --mbunit ExpendMemoryUnit
  --kp_distance 10 --feat_consistent 10 --generator_gan 0``, ``config/vox-256.yaml``): FOMM's
  hourglass keypoint detector with Jacobians and its local-affine dense motion network with one
  occlusion map (``motion/fomm.py``), the BatchNorm U-Net generator (TPSMM's layout with
  ``norm='batch'``, the single occlusion map resized to every scale) and
  ``motion.memory.MemoryCompensation`` between the feature warp and the decoder. Full size:
  101,841,273 parameters, the authors' count part by part (``--suite=motion_params``).
* ``base='tpsmm'``, **ours** (``configs/mcnet.py:tpsmm``): the same memory on TPSMM's motion and
  instance-normalised generator (10 TPS x 5 keypoints, background affine, a mask per scale).

``model.memory='off'`` keeps the parameters but skips the compensation: MCNet's baseline.
The published recipe (losses, optimiser) is set in ``configs/mcnet.py``.
"""
from __future__ import annotations

import ml_collections

from minerf_jax.models import animation
from minerf_jax.models import tpsmm

BASES = ("fomm", "tpsmm")
MEMORY_BANK = {
    # The reference's ExpendMemoryUnit: memory 512 x 32 x 32, style route Linear(C + 2K, 128)
    # -> Linear(128, 512).
    "full": dict(memory_channels=512, memory_size=32, style_features=512, style_hidden=128),
    "cpu": dict(memory_channels=64, memory_size=8, style_features=64, style_hidden=32),
    "test": dict(memory_channels=16, memory_size=4, style_features=16, style_hidden=8),
}


def batch_spec(config: ml_collections.ConfigDict) -> str:
  return animation.batch_spec(config)


def fomm_model_config(size: str = "full", name: str = "mcnet") -> ml_collections.ConfigDict:
  """``config.model`` of the FOMM-based (published) MCNet at ``size``: ``'full'`` is
  ``config/vox-256.yaml`` with 15 keypoints; ``'cpu'`` (64 px) and ``'test'`` (32 px) are ours,
  narrowed the way ``tpsmm.model_config`` narrows TPSMM."""
  if size not in tpsmm.SIZES:
    raise ValueError(f"model size {size!r}; choose one of {tpsmm.SIZES}")
  hourglass = {"full": (32, 1024, 5), "cpu": (16, 128, 3), "test": (8, 32, 2)}[size]
  dense = {"full": (64, 1024, 5), "cpu": (16, 128, 3), "test": (8, 32, 2)}[size]
  gen = {"full": (64, 512), "cpu": (16, 128), "test": (8, 32)}[size]
  return ml_collections.ConfigDict(dict(
      name=name,
      prior="fomm",
      num_kp={"full": 15, "cpu": 10, "test": 5}[size],
      kp_detector=dict(block_expansion=hourglass[0], max_features=hourglass[1],
                       num_blocks=hourglass[2], temperature=0.1,
                       # 32 px frames: 16 px heatmaps (0.25 would leave 2x2 after the 7x7 head)
                       scale_factor=0.5 if size == "test" else 0.25),
      dense_motion=dict(block_expansion=dense[0], max_features=dense[1], num_blocks=dense[2],
                        scale_factor=0.25, kp_variance=0.01),
      generator=dict(num_channels=3, block_expansion=gen[0], max_features=gen[1],
                     num_down_blocks=3, norm="batch"),
      multi_mask=False,                    # one occlusion map, resized to every scale
      equivariance_transform="fomm",       # FOMM's random TPS (tps.KERNELS)
      detector_batches="separate",         # source, driving, transformed: three BatchNorm batches
      memory="on",
      memory_bank=dict(MEMORY_BANK[size]),
  ))


def model_config(size: str = "full", base: str = "fomm") -> ml_collections.ConfigDict:
  """``config.model`` of MCNet on ``base`` (module docstring) at ``size``."""
  if base not in BASES:
    raise ValueError(f"MCNet base {base!r}; choose one of {BASES}")
  if base == "fomm":
    return fomm_model_config(size)
  config = tpsmm.model_config(size, name="mcnet")
  config.memory = "on"                   # on | off (ablation: the TPSMM path)
  config.memory_bank = dict(MEMORY_BANK[size])
  return config


class MCNet(animation.AnimationModel):
  """MCNet behind the model seam (see ``animation.AnimationModel``)."""

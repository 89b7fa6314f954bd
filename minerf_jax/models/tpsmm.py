"""TPSMM (Zhao & Zhang, CVPR 2022): thin-plate-spline motion model for one-shot animation.

The base of the one-shot systems: keypoint detector (K thin-plate splines of 5 control points,
background affine), dense motion network with an occlusion mask per generator scale, and the
inpainting generator (``minerf_jax/models/animation.py`` composes them; parts in
``minerf_jax/motion``). ``model_config(size)`` holds the architecture sizes:

* ``'full'``: the reference's ``config/vox-256.yaml`` (85.1 M parameters at 256x256);
* ``'cpu'``: the same layout narrowed for 64x64 frames (what two CPU cores train in minutes);
* ``'test'``: tiny, for 32x32 CI tests.
"""
from __future__ import annotations

import ml_collections

from minerf_jax.models import animation

SIZES = ("full", "cpu", "test")


def batch_spec(config: ml_collections.ConfigDict) -> str:
  return animation.batch_spec(config)


def model_config(size: str = "full", name: str = "tpsmm") -> ml_collections.ConfigDict:
  """``config.model`` of a TPSMM-based system at ``size`` (see the module docstring)."""
  if size not in SIZES:
    raise ValueError(f"model size {size!r}; choose one of {SIZES}")
  full = size == "full"
  dense = {"full": dict(block_expansion=64, num_blocks=5, max_features=1024),
           "cpu": dict(block_expansion=16, num_blocks=3, max_features=128),
           "test": dict(block_expansion=8, num_blocks=2, max_features=32)}[size]
  gen = {"full": dict(block_expansion=64, max_features=512),
         "cpu": dict(block_expansion=16, max_features=128),
         "test": dict(block_expansion=8, max_features=32)}[size]
  return ml_collections.ConfigDict(dict(
      name=name,
      num_tps=10 if size != "test" else 2,   # K thin-plate splines
      points_per_tps=5,
      detector_width=1.0 if full else (0.25 if size == "cpu" else 0.125),  # ResNet-18 widths
      dense_motion=dict(scale_factor=0.25, kp_variance=0.01, **dense),
      generator=dict(num_channels=3, num_down_blocks=3, **gen),
      multi_mask=True,       # one occlusion mask per generator scale (False: one, resized)
      bg_start=0.1,          # background affine from 10% of the schedule (reference: epoch 10/100)
      dropout_p=0.3,         # transform dropout: max probability (reference dropout_maxp)
      dropout_start_p=0.1,   # ... at step 0 (reference dropout_startp)
      dropout_ramp=0.1,      # + dropout_p per this fraction, capped (reference: 10 epochs)
      dropout_until=0.35,    # no dropout from this fraction on (reference: epoch 35)
      # 'separate': the detector sees source, driving and the equivariance frame as three
      # BatchNorm batches and the background predictor its two orders as two, as in the
      # reference's training step; 'joint': one batch each (cheaper, shared statistics).
      detector_batches="separate",
  ))


class TPSMM(animation.AnimationModel):
  """TPSMM behind the model seam (see ``animation.AnimationModel``)."""

"""Shared config of the one-shot animation systems (TPSMM, MCNet, MRFA); see configs/tpsmm.py.

``get_config(system, arg)`` builds the config of ``system`` for variant ``arg``:

* ``''``: the reference architecture (vox-256 sizes) on 256x256 ``talking_faces`` crops, the
  references' optimiser (Adam 2e-4, betas (0.5, 0.999), x0.1 at 70% and 90%) and loss weights;
  sized for accelerators.
  The references' training recipe too: pair augmentation (``data.augment``: time flip, mirror,
  colour jitter 0.1), gradient clipping (``optimizer.clip_norm`` 10, ``clip_norm_type='inf'``, on
  the detector, dense motion and background networks, separately), separate BatchNorm batches
  (``model.detector_batches``) and transform dropout from p = 0.1 (``model.dropout_start_p``).
* ``'cpu'``: the same systems narrowed (``model_config('cpu')``) and trained on 64x64 frames:
  what two CPU cores train in tens of minutes (the comparison in the README).
* ``'synthetic'``: the ``cpu`` models and schedule on the generator's 64x64 heads (4 identities x
  200 frames): exact truth for the cross-identity pairs in yaw-difference buckets and for novel
  views (``eval.cross_truth_per_bucket``, ``eval.novel_views``; ``data/pairs.py``), the
  same-budget comparison of TPSMM, MCNet, MRFA and Head3D (``--suite=head3d_compare``).
* ``'test'``: tiny models on 32x32 synthetic frames, for CI (L1 loss instead of VGG16's).

``cpu``, ``synthetic`` and ``test`` keep the recipe their recorded figures (README) and tests were
made with: no augmentation, no clipping, joint BatchNorm batches, dropout ramped from 0.
"""
import ml_collections

from configs import common
from minerf_jax.models import animation

VARIANTS = ("", "cpu", "synthetic", "test")


def split_variant(system: str, arg: str | None, default_base: str,
                  bases: tuple[str, ...]) -> tuple[str, str]:
  """``(base, size variant)`` of ``configs/<system>.py:<arg>``: ``'cpu'`` -> the published
  ``default_base`` at ``cpu``; ``'<base>'`` / ``'<base>_cpu'`` -> another of ``bases``."""
  arg = arg or ""
  base, size = default_base, arg
  for prefix in bases:
    if arg == prefix or arg.startswith(prefix + "_"):
      base, size = prefix, arg[len(prefix) + 1:]
  if size not in VARIANTS:
    raise ValueError(f"configs/{system}.py: unknown variant {arg!r}; use one of {VARIANTS} "
                     f"(the published {system}) or one of those after "
                     f"{' or '.join(repr(b + '_') for b in bases)} (e.g. '{bases[-1]}_cpu')")
  return base, size


def get_config(system: str, model_config, arg: str | None = None) -> ml_collections.ConfigDict:
  """The config of ``system``; ``model_config(size)`` gives its ``config.model``."""
  arg = arg or ""
  if arg not in VARIANTS:
    raise ValueError(f"configs/{system}.py: unknown variant {arg!r}; use one of {VARIANTS}")
  config = common.get_config()
  config.total_steps = 100_000
  config.log_every = 100
  config.eval_every = 10_000
  config.checkpoint.every = 2_000
  config.optimizer.update(lr=2e-4, lr_end=2e-6, schedule="multistep", b1=0.5, b2=0.999,
                          # clip_grad_norm_(max_norm=10, norm_type=inf) per network
                          milestones=(0.7, 0.9),   # multistep: x0.1 at these fractions
                          clip_norm=10.0, clip_norm_type="inf",
                          # clipped separately; 'a+b' clips a and b as one group
                          clip_modules=("detector", "dense_motion", "bg_predictor"))

  config.model = model_config({"": "full", "cpu": "cpu", "synthetic": "cpu", "test": "test"}[arg])
  config.loss = ml_collections.ConfigDict(dict(
      perceptual_net="vgg16_lpips",      # vgg16_lpips (bundled, offline) | vgg19_npz (reference)
      vgg19_npz="",                      # path to VGG19 weights for 'vgg19_npz' (losses.py)
      perceptual_weight=1.0,             # multiplies the per-layer weights below (0 disables)
      perceptual=(10.0, 10.0, 10.0, 10.0, 10.0),
      perceptual_scales=(1.0, 0.5, 0.25, 0.125),
      equivariance=10.0,
      warp=10.0,
      bg=10.0,
      consistency=10.0,                  # MCNet's memory consistency (unused by the others)
      consistency_resize="feature",      # feature (the reference) | value (memory.py)
      equivariance_jacobian=0.0,         # FOMM-prior Jacobian equivariance (published MCNet: 10)
      kp_distance=0.0,                   # MCNet's keypoint distance (published MCNet: 10)
      l1=0.0,                            # plain L1 on the prediction (not in the references)
  ))
  config.data = ml_collections.ConfigDict(dict(
      name="talking_faces",
      data_dir="",                       # '' -> $MINERF_DATA_DIR or ~/.cache/minerf_jax/tfds
      resolution=256,                    # crops as prepared (launch.prepare_data --resolution)
      fps=25.0,
      image_size=256,                    # frames the model sees (area downscale of resolution)
      num_identities=1,                  # at least this many identities (all are used)
      batch_size=32,                     # global (the references: 28 on two GPUs)
      seed=0,
      augment=animation.AUGMENT_REFERENCE,   # pair augmentation (minerf_jax/data/augment.py)
  ))
  config.eval = ml_collections.ConfigDict(dict(
      max_clip_frames=0,                 # reconstruction: frames per held-out clip (0 = all)
      max_clips=0,                       # held-out clips (0 = all)
      num_cross_pairs=64,                # fixed cross-identity (source, driving) pairs
      chunk=16,                          # frames per compiled inference call
      lpips=True,
      landmarks=True,                    # AKD / ARD with MediaPipe landmarks
      cross_truth_per_bucket=0,          # synthetic: exact-truth cross pairs per yaw bucket
      novel_views=0,                     # synthetic: frames turned to each of pairs.NOVEL_YAWS
  ))

  if arg:   # the recipe the CPU-sized figures and the tests were made with (module docstring)
    config.optimizer.clip_norm = 0.0
    config.model.update(dropout_start_p=0.0, detector_batches="joint")
    config.data.augment = animation.AUGMENT_OFF
  if arg in ("cpu", "synthetic"):  # 2 CPU cores: ~2 s per step (the VGG16 perceptual loss dominates)
    config.total_steps = 250
    config.log_every = 10
    config.eval_every = 0
    config.checkpoint.every = 50
    config.optimizer.lr = 1e-3
    config.loss.perceptual_scales = (1.0, 0.5, 0.25)   # 64 -> 16 px: VGG's five poolings
    config.data.update(image_size=64, batch_size=8)
  if arg == "synthetic":
    config.data = ml_collections.ConfigDict(dict(
        name="synthetic_talking_heads", data_dir="", resolution=64, image_size=64,
        num_identities=4, frames_per_identity=200, batch_size=8, seed=0,
        augment=animation.AUGMENT_OFF))
    config.eval.update(max_clip_frames=40, cross_truth_per_bucket=16, novel_views=8,
                       num_cross_pairs=16)
  elif arg == "test":
    config.total_steps = 4
    config.log_every = 2
    config.eval_every = 4
    config.checkpoint.every = 2
    config.optimizer.lr = 2e-3
    # L1 instead of the VGG16 perceptual loss (tested in test_losses.py): a full VGG16 costs
    # ~2 s per step on a CPU even at 32x32, 30x the rest of the tiny model.
    config.loss.update(perceptual_weight=0.0, perceptual_scales=(1.0, 0.5), l1=10.0)
    config.data = ml_collections.ConfigDict(dict(
        name="synthetic_talking_heads", data_dir="", resolution=32, image_size=32,
        num_identities=2, frames_per_identity=10, batch_size=8, seed=0,
        augment=animation.AUGMENT_OFF))
    config.eval.update(max_clip_frames=4, max_clips=2, num_cross_pairs=4, chunk=4, lpips=False,
                       landmarks=False, cross_truth_per_bucket=1, novel_views=1)
  return config

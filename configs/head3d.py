"""Head3D: 3-D-aware motion transfer from many subject frames (minerf_jax/models/head3d.py).

  python -m launch.train --config=configs/head3d.py --workdir=runs/head3d \\
      --config.data.data_dir=data/real                           # real clips, 256x256, accelerators
  python -m launch.train --config=configs/head3d.py:cpu --workdir=runs/head3d_cpu   # real, 64x64
  python -m launch.train --config=configs/head3d.py:synthetic --workdir=runs/head3d_syn  # exact truth
  python -m launch.train --config=configs/head3d.py:test --workdir=/tmp/head3d_test  # seconds
  ... --config.model.fusion=rendered_only    # or warped_only; model.canonical.fold=mean;
      --config.model.geometry.pose_source=landmarks; model.geometry.pose_net=pairwise

Variants: ``''`` real clips at the published size; ``cpu`` real clips at 64x64 with the narrowed
TPSMM warper (what two CPU cores train in tens of minutes); ``synthetic`` the generator's heads at
64x64 with the same sizes (cross-identity truth, depth and pose truth); ``test`` tiny, 32x32
synthetic, for CI. The optimiser, schedule, evaluation and reconstruction/perceptual losses are the
one-shot systems' (configs/animation.py), so the comparison with TPSMM, MCNet and MRFA is at the
same budget; Head3D adds the geometry and canonical-head losses.
"""
from configs import animation
from configs import hyper
from minerf_jax.data import face
from minerf_jax.data import synthetic
from minerf_jax.models import head3d

VARIANTS = animation.VARIANTS


def get_config(arg=None):
  arg = arg or ""
  if arg not in VARIANTS:
    raise ValueError(f"configs/head3d.py: unknown variant {arg!r}; use one of {VARIANTS}")
  real = arg in ("", "cpu")
  config = animation.get_config(
      "head3d", lambda s: head3d.default_model_config(
          s, face.HEAD_BOX if real else synthetic.HEAD_BOX),
      arg)
  config.loss.update(geometry=1.0, canonical=1.0, canonical_mask=1.0)
  if real:
    # Landmark PnP head coordinates are decimetres: heads sit ~6-15 dm from the camera.
    config.model.geometry.update(head_depth=10.0, min_depth=3.0, max_depth=40.0)
  return config


def get_sweep(name, config=None):
  """Sweeps of ``launch.sweep --config=configs/head3d.py[:variant] --sweep=NAME``.

  ``fusion``: the attention fusion against the rendered head alone and the 2-D warps alone
  (``head3d/fuse.py``), 3 seeds each.
  """
  del config
  from minerf_jax.head3d import fuse  # pylint: disable=g-import-not-at-top
  return hyper.choose({
      "fusion": hyper.product(hyper.sweep("model.fusion", fuse.FUSIONS), hyper.seeds(3)),
  }, name, "configs/head3d.py")

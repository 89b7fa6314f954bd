"""MRFA one-shot face animation (see configs/animation.py for the variants).

  python -m launch.train --config=configs/mrfa.py --workdir=runs/mrfa \
      --config.data.data_dir=data/real                                # 256x256, accelerators
  python -m launch.train --config=configs/mrfa.py:cpu --workdir=runs/mrfa_cpu   # 64x64, 2 CPU cores
  python -m launch.train --config=configs/mrfa.py:test --workdir=/tmp/mrfa_test # seconds
  python -m launch.train --config=configs/mrfa.py:cpu --workdir=runs/mrfa_coarse \
      --config.model.refine_steps=0                                  # ablation: prior only
"""
from configs import animation
from minerf_jax.models import mrfa


def get_config(arg=None):
  return animation.get_config("mrfa", mrfa.model_config, arg)

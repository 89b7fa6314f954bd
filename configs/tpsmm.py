"""TPSMM one-shot face animation (see configs/animation.py for the variants).

  python -m launch.train --config=configs/tpsmm.py --workdir=runs/tpsmm \
      --config.data.data_dir=data/real                                # 256x256, accelerators
  python -m launch.train --config=configs/tpsmm.py:cpu --workdir=runs/tpsmm_cpu   # 64x64, 2 CPU cores
  python -m launch.train --config=configs/tpsmm.py:test --workdir=/tmp/tpsmm_test # seconds
"""
from configs import animation
from minerf_jax.models import tpsmm


def get_config(arg=None):
  return animation.get_config("tpsmm", tpsmm.model_config, arg)

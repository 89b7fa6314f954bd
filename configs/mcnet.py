"""MCNet one-shot face animation (see configs/animation.py for the variants).

  python -m launch.train --config=configs/mcnet.py --workdir=runs/mcnet \
      --config.data.data_dir=data/real                                # 256x256, accelerators
  python -m launch.train --config=configs/mcnet.py:cpu --workdir=runs/mcnet_cpu   # 64x64, 2 CPU cores
  python -m launch.train --config=configs/mcnet.py:test --workdir=/tmp/mcnet_test # seconds
  python -m launch.train --config=configs/mcnet.py:cpu --workdir=runs/mcnet_off \
      --config.model.memory=off                                      # ablation: no memory
"""
from configs import animation
from minerf_jax.models import mcnet


def get_config(arg=None):
  return animation.get_config("mcnet", mcnet.model_config, arg)

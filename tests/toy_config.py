"""Launcher config for the toy model of ``tests/_toy.py`` (used by tests/test_train.py).

  python -m launch.train --config=tests/toy_config.py --workdir=/tmp/toy

(``launch.train`` builds data with ``minerf_jax.data.pipeline``, which has no toy dataset; the
tests run the launcher's main with ``_toy.launch_with_toy_data`` to train it end to end.)
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _toy  # pylint: disable=g-import-not-at-top,wrong-import-position  (registers toy_mlp)


def get_config(arg=None):
  return _toy.get_config(arg)

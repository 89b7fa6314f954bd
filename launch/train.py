r"""Trains a model: ``train_and_evaluate(config, workdir)`` from the command line.

  python -m launch.train --config=configs/minerf.py --workdir=runs/minerf
  python -m launch.train --config=configs/minerf.py:test --workdir=/tmp/minerf_test
  python -m launch.train --config=configs/minerf.py --workdir=runs/concat \
      --config.model.fusion=concat --config.optimizer.lr=2e-3

Re-running with the same --workdir resumes from its latest checkpoint. The config is locked:
overriding a field the config does not declare (a typo) fails with a one-line error, as does a
--workdir holding a checkpoint of another model or parameter shapes (``launch/cli.py``).
"""
from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from launch import cli
from minerf_jax.train import loop

_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (checkpoints, logs).",
                               required=True)
_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file[:variant].",
                                          lock_config=True)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  config = _CONFIG.value
  cli.check_config(config)
  logging.info("workdir %s", _WORKDIR.value)
  loop.train_and_evaluate(config, _WORKDIR.value)


if __name__ == "__main__":
  cli.run(main)

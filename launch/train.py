r"""Trains a model: ``train_and_evaluate(config, workdir)`` from the command line.

  python -m launch.train --config=configs/minerf.py --workdir=runs/minerf
  python -m launch.train --config=configs/minerf.py:test --workdir=/tmp/minerf_test
  python -m launch.train --config=configs/minerf.py --workdir=runs/concat \
      --config.model.fusion=concat --config.optimizer.lr=2e-3

Re-running with the same --workdir resumes from its latest checkpoint. The config is locked:
overriding a field the config does not declare (a typo) fails with a one-line error, as does a
--workdir holding a checkpoint of another model or parameter shapes.
"""
import logging as pylogging
import re
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from minerf_jax.train import checkpoint
from minerf_jax.train import loop

_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (checkpoints, logs).",
                               required=True)
_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file[:variant].",
                                          lock_config=True)


def one_line(text: str) -> str:
  return " ".join(str(text).split())


def override_error(argv: list[str], error: KeyError | AttributeError) -> str:
  """One line naming the ``--config.*`` override that names a field the config lacks.

  ml_collections raises ``KeyError('\\'lrr\\'\\nDid you mean "lr" instead of "lrr"?')``; the
  override is found by the unknown field's name.
  """
  while error.args and isinstance(error.args[0], BaseException):  # AttributeError(KeyError(..))
    error = error.args[0]
  detail = one_line(error.args[0] if error.args else error)
  overrides = [a[2:].split("=", 1)[0] for a in argv[1:] if a.startswith("--config.")]
  match = re.search(r"'([^'\s]+)'", detail)
  field = match.group(1) if match else ""
  culprit = next((o for o in overrides if field in o.split(".")[1:]), None)
  hint = re.search(r"Did you mean .*", detail)
  where = f"--{culprit}" if culprit else "a --config override"
  return (f"error: {where}: the config has no field {field!r}"
          + (f" ({hint.group(0)})" if hint else "") + "; overrides may only set declared fields")


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing with one-line errors for misspelt ``--config.*`` overrides."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    sys.exit(f"error: {one_line(e)}")
  except (KeyError, AttributeError) as e:
    sys.exit(override_error(argv, e))


class QuietLibraries(pylogging.Filter):
  """Drops INFO records of chatty libraries (Orbax logs every save); warnings still pass."""

  def __init__(self, names=("orbax",)):
    super().__init__()
    self.names = tuple(names)

  def filter(self, record: pylogging.LogRecord) -> bool:
    if record.levelno >= pylogging.WARNING:
      return True
    path = record.pathname.replace("\\", "/")
    return not any(f"/{name}/" in path for name in self.names)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  if logging.get_verbosity() <= logging.INFO:  # -v 1 or more shows the libraries' INFO logs
    logging.get_absl_handler().addFilter(QuietLibraries())
  config = _CONFIG.value
  try:
    config.keys()  # a config file that failed to load raises on first use
  except OSError as e:
    sys.exit(f"error: --config: {one_line(e.__cause__ or e)}")
  logging.info("workdir %s", _WORKDIR.value)
  try:
    loop.train_and_evaluate(config, _WORKDIR.value)
  except checkpoint.CheckpointMismatchError as e:
    sys.exit(f"error: {e}")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)

r"""What every launcher shares: one line for a user's mistake, quiet library logs.

  if __name__ == "__main__":
    cli.run(main)

* A bad flag, a missing required flag, a config file that does not load (a misspelt variant:
  ``configs/minerf.py:tset``), an override of a field the config lacks, an invalid config
  value found while building (``--config.model.fusion=bogus``), a missing file or directory, a
  checkpoint that does not fit: each prints ``error: <what, naming the flag/file, and the fix>``
  on stderr and exits with status 1. No traceback: ``--traceback`` shows it (for a bug report).
* Libraries' INFO logs (Orbax prints its options at every start) stay out of the terminal:
  absl's verbosity is WARNING unless ``--verbosity`` / ``-v`` is given. Our progress lines and
  figures are printed, not logged.

What counts as the user's mistake: ``UserError`` (the launchers' own errors derive from it) and
the exceptions our code raises for bad input (``ValueError`` with a message naming the field,
``FileNotFoundError`` / ``NotADirectoryError`` / ``PermissionError``). Anything else is a bug
and keeps its traceback.
"""
from __future__ import annotations

import re
import sys
from typing import Callable

from absl import app
from absl import flags
from absl import logging

_TRACEBACK = flags.DEFINE_bool("traceback", False, "On an error, show the Python traceback "
                               "instead of the one-line message.")


class UserError(Exception):
  """A problem with the user's input; the message is the whole one-line error."""


USER_ERRORS = (UserError, ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError,
               PermissionError)


def one_line(text) -> str:
  return " ".join(str(text).split())


def _innermost(error: BaseException) -> BaseException:
  while error.args and isinstance(error.args[0], BaseException):  # AttributeError(KeyError(..))
    error = error.args[0]
  return error


def override_error(argv: list[str], error: KeyError | AttributeError) -> str:
  """One line naming the ``--config.*`` override that names a field the config lacks.

  ml_collections raises ``KeyError('\\'lrr\\'\\nDid you mean "lr" instead of "lrr"?')``; the
  override is found by the unknown field's name.
  """
  error = _innermost(error)
  detail = one_line(error.args[0] if error.args else error)
  overrides = [a[2:].split("=", 1)[0] for a in argv[1:] if a.startswith("--config.")]
  match = re.search(r"'([^'\s]+)'", detail)
  field = match.group(1) if match else ""
  culprit = next((o for o in overrides if field in o.split(".")[1:]), None)
  hint = re.search(r"Did you mean .*", detail)
  where = f"--{culprit}" if culprit else "a --config override"
  return (f"error: {where}: the config has no field {field!r}"
          + (f" ({hint.group(0)})" if hint else "") + "; overrides may only set declared fields")


def flag_error(error: flags.Error) -> str:
  """absl's flag errors in one line: a required flag, a config file's own exception (the last
  line of the traceback ml_collections embeds), or absl's message."""
  text = str(error)
  required = re.search(r"Flag --(\w+) must have a value other than None", text)
  if required:
    return f"error: --{required.group(1)} is required (see --helpshort)"
  if "Traceback (most recent call last)" in text:
    flag = re.match(r"flag (--\w+=\S+):", text)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    last = re.sub(r"^[\w.]*(Error|Exception): ", "", lines[-1])
    return f"error: {flag.group(1) + ': ' if flag else ''}{one_line(last)}"
  return f"error: {one_line(text)}"


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing whose errors are one line (see ``flag_error``, ``override_error``)."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    sys.exit(flag_error(e))
  except (KeyError, AttributeError) as e:
    sys.exit(override_error(argv, e))


def check_config(config, flag: str = "--config") -> None:
  """A config file that failed to load raises on first use: say so in one line."""
  if config is None:
    return
  try:
    config.keys()
  except OSError as e:
    raise UserError(f"{flag}: {one_line(e.__cause__ or e)}") from None


def _wrap(main: Callable[[list[str]], None]) -> Callable[[list[str]], None]:
  def wrapped(argv):
    if not flags.FLAGS["verbosity"].present:
      logging.set_verbosity(logging.WARNING)
    try:
      return main(argv)
    except app.UsageError as e:
      if _TRACEBACK.value:
        raise
      sys.exit(f"error: {one_line(e)}")
    except USER_ERRORS as e:
      if _TRACEBACK.value:
        raise
      message = one_line(_innermost(e))
      sys.exit(message if message.startswith("error: ") else f"error: {message}")
  return wrapped


def run(main: Callable[[list[str]], None]) -> None:
  """``app.run(main)`` with one-line errors and quiet library logs (module docstring)."""
  app.run(_wrap(main), flags_parser=parse_flags)

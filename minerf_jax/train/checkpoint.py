"""Checkpoints: Orbax ``CheckpointManager`` with train state, resolved config and metadata.

Layout: ``WORKDIR/checkpoints/<step>/{state,config,meta}``. Orbax writes each step to a temporary
directory and renames it when complete, so a crash mid-save leaves the previous checkpoint
intact. Items:

* ``state``: the TrainState (step, params, optimizer state, rng, batch_stats).
* ``config``: the resolved config as JSON.
* ``meta``: ``{model, params, opt_state, step, version}`` where ``params`` / ``opt_state`` are
  tree signatures ``{path: [shape, dtype]}``.

Data needs no iterator state: ``Data.train_batch(step)`` is a pure function of the step.

Before arrays are restored, ``meta`` is compared with what the current config builds: a
checkpoint of another model or of other parameter shapes raises ``CheckpointMismatchError`` with
a one-line message (checkpoint path, what it holds vs what the config builds, the fix) instead of
an Orbax shape error from deep inside the restore.

Faults: a process killed while writing leaves ``<step>.orbax-checkpoint-tmp`` behind, which
Orbax neither lists nor restores (and replaces at the next save of that step), so the run resumes
from the last complete checkpoint. A complete-looking checkpoint that cannot be read (truncated
or corrupted files) is reported in one line, moved to ``WORKDIR/checkpoints_unreadable/<step>``
(kept for inspection, out of the way of the next save) and the previous one is used.

``StopSignal`` turns SIGTERM (preemption) and SIGINT (Ctrl-C) into a flag that the train loop
polls: it saves a checkpoint at the current step and returns.
"""
from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import signal
import sys
import threading
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import orbax.checkpoint as ocp

PyTree = Any
STATE, CONFIG, META = "state", "config", "meta"
FIX = "use a fresh --workdir or a config that matches the checkpoint"


class CheckpointMismatchError(ValueError):
  """A checkpoint does not fit what the config builds (message: one line)."""


class CheckpointUnreadableError(ValueError):
  """No checkpoint of a run could be read (message: one line)."""


def _one_line(error: BaseException, limit: int = 160) -> str:
  text = " ".join(f"{type(error).__name__}: {error}".split())
  return text if len(text) <= limit else text[:limit - 3] + "..."


def warn(message: str) -> None:
  """A one-line warning on stderr (process 0)."""
  if jax.process_index() == 0:
    print(f"warning: {message}", file=sys.stderr, flush=True)


def version() -> str:
  try:
    return importlib.metadata.version("minerf_jax")
  except importlib.metadata.PackageNotFoundError:
    return "unknown (not installed)"


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), "checkpoints")


def tree_signature(tree: PyTree) -> dict[str, list]:
  """``{path: [shape, dtype]}`` of every array leaf, paths like ``'Dense_0/kernel'``."""
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {jax.tree_util.keystr(path, simple=True, separator="/"):
          [list(leaf.shape), str(jnp.dtype(leaf.dtype))] for path, leaf in leaves}


def make_meta(model_name: str, state, step: int) -> dict:
  """The ``meta`` item describing ``state`` (a TrainState of concrete or abstract arrays)."""
  return {"model": model_name, "params": tree_signature(state.params),
          "opt_state": tree_signature(state.opt_state), "step": int(step),
          "version": version()}


def _fmt(sig: list) -> str:
  return f"{tuple(sig[0])} {sig[1]}"


def first_difference(held: dict[str, list], built: dict[str, list]) -> str | None:
  """Describes the first path where two tree signatures differ, or None when they agree."""
  built_paths = list(built)
  extra = [p for p in held if p not in built]
  differing = [p for p in built_paths if p not in held or list(held[p]) != list(built[p])] + extra
  if not differing:
    return None
  path = differing[0]
  more = f" ({len(differing)} paths differ)" if len(differing) > 1 else ""
  if path not in held:
    return f"has no {path!r} but the config builds it with {_fmt(built[path])}{more}"
  if path not in built:
    return f"holds {path!r} {_fmt(held[path])} which the config does not build{more}"
  return (f"holds {path!r} with {_fmt(held[path])} but the config builds "
          f"{_fmt(built[path])}{more}")


def check_compatible(meta: dict, expected: dict, where: str, fix: str = FIX) -> None:
  """Raises CheckpointMismatchError unless ``meta`` (saved) matches ``expected`` (built)."""
  if meta.get("model") != expected["model"]:
    raise CheckpointMismatchError(
        f"checkpoint {where} holds model {meta.get('model')!r} but the config builds model "
        f"{expected['model']!r}; {fix}")
  for item, what in (("params", "parameter"), ("opt_state", "optimizer state")):
    diff = first_difference(meta.get(item, {}), expected[item])
    if diff is not None:
      raise CheckpointMismatchError(
          f"checkpoint {where} of model {expected['model']!r} {diff} ({what} mismatch); {fix}")


def _config_json(config: ml_collections.ConfigDict) -> dict:
  return json.loads(config.to_json())


def _copy(tree: PyTree) -> PyTree:
  """Fresh buffers, so that an async save never reads arrays a later step donates."""
  return jax.tree.map(lambda x: jnp.copy(x) if isinstance(x, jax.Array) else x, tree)


class Checkpointer:
  """Saves and restores a run's checkpoints (see module docstring).

  ``every``: ``should_save(step)`` is true at multiples of it; ``keep``: how many of the most
  recent checkpoints survive; ``async_save``: write in a background thread (the state is copied
  first so donation by the next train step is safe; ``wait``/``close`` block until written).
  """

  def __init__(self, workdir: str, *, model_name: str, every: int, keep: int,
               async_save: bool = True):
    self.directory = checkpoint_dir(workdir)
    self.model_name = model_name
    self.every = int(every)
    self.async_save = bool(async_save)
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=int(keep), create=True,
                                             enable_async_checkpointing=self.async_save),
        item_handlers={STATE: ocp.StandardCheckpointHandler(),
                       CONFIG: ocp.JsonCheckpointHandler(), META: ocp.JsonCheckpointHandler()})

  @classmethod
  def from_config(cls, workdir: str, config: ml_collections.ConfigDict,
                  model_name: str) -> "Checkpointer":
    cc = config.checkpoint
    return cls(workdir, model_name=model_name, every=cc.every, keep=cc.keep,
               async_save=cc.get("async_save", True))

  def all_steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def should_save(self, step: int) -> bool:
    return self.every > 0 and step % self.every == 0

  def step_path(self, step: int) -> str:
    return os.path.join(self.directory, str(step))

  def save(self, step: int, state, config: ml_collections.ConfigDict) -> bool:
    """Saves ``state`` (canonical layout) as ``step``; False if that step is already saved."""
    if step in self.manager.all_steps():
      return False
    state = _copy(state) if self.async_save else state
    return self.manager.save(step, args=ocp.args.Composite(**{
        STATE: ocp.args.StandardSave(state),
        CONFIG: ocp.args.JsonSave(_config_json(config)),
        META: ocp.args.JsonSave(make_meta(self.model_name, state, step))}), force=True)

  def read_meta(self, step: int) -> dict:
    return self.manager.restore(step, args=ocp.args.Composite(**{META: ocp.args.JsonRestore()}))[
        META]

  def _restore_step(self, abstract_state, step: int):
    """(state, None), or (None, the error) when the step cannot be read; a checkpoint that
    reads but does not fit raises CheckpointMismatchError."""
    try:
      check_compatible(self.read_meta(step), make_meta(self.model_name, abstract_state, step),
                       self.step_path(step))
      return self.manager.restore(step, args=ocp.args.Composite(**{
          STATE: ocp.args.StandardRestore(abstract_state)}))[STATE], None
    except CheckpointMismatchError:
      raise
    except Exception as e:  # pylint: disable=broad-except
      return None, e

  def set_aside(self, step: int) -> str:
    """Moves an unreadable step out of the checkpoint directory; returns where it went."""
    target = os.path.join(os.path.dirname(self.directory), "checkpoints_unreadable", str(step))
    if jax.process_index() == 0:
      n = 1
      while os.path.exists(target):
        target = os.path.join(os.path.dirname(target), f"{step}.{n}")
        n += 1
      os.makedirs(os.path.dirname(target), exist_ok=True)
      shutil.move(self.step_path(step), target)
    self.manager.reload()
    return target

  def restore(self, abstract_state, step: int | None = None):
    """The checkpointed state at ``step`` (default: the latest readable one), or None if the run
    has no checkpoint.

    ``abstract_state``: a TrainState of ``jax.ShapeDtypeStruct`` (with shardings) for what the
    config builds; raises CheckpointMismatchError when the checkpoint holds something else. An
    unreadable latest checkpoint is reported, set aside and the previous one restored; with
    none readable (or ``step`` given and unreadable) CheckpointUnreadableError.
    """
    self.manager.wait_until_finished()
    steps = self.all_steps()[::-1] if step is None else [step]
    if not steps:
      return None
    for s in steps:
      restored, error = self._restore_step(abstract_state, s)
      if error is None:
        return restored
      where = self.step_path(s)
      if step is not None:
        raise CheckpointUnreadableError(f"checkpoint {where} is unreadable ({_one_line(error)})")
      moved = self.set_aside(s)
      warn(f"checkpoint {where} is unreadable ({_one_line(error)}); moved it to {moved} and "
           "trying the one before it")
    raise CheckpointUnreadableError(
        f"no checkpoint in {self.directory} could be read (each was moved to "
        f"{os.path.dirname(moved)}); re-run to start from scratch, or move a good one back")

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def restore_or_none(workdir: str, abstract_state, config: ml_collections.ConfigDict):
  """The latest checkpointed state of ``workdir`` (checked against the config), or None."""
  if not os.path.isdir(checkpoint_dir(workdir)):
    return None
  ckpt = Checkpointer.from_config(workdir, config, model_name=config.model.name)
  try:
    return ckpt.restore(abstract_state)
  finally:
    ckpt.close()


# ----------------------------------------------------------------------------------------------
# Parameters of another run (config.init_from, evaluate/render launchers).


def _is_step_dir(path: str) -> bool:
  return bool(re.fullmatch(r"\d+", os.path.basename(os.path.normpath(path)))) and (
      os.path.isdir(os.path.join(path, STATE)))


def resolve(path: str) -> tuple[str, int | None]:
  """A workdir, its ``checkpoints`` dir or one step dir -> (checkpoints dir, step or None)."""
  path = os.path.abspath(path)
  if os.path.isdir(os.path.join(path, "checkpoints")):
    return os.path.join(path, "checkpoints"), None
  if _is_step_dir(path):
    return os.path.dirname(os.path.normpath(path)), int(os.path.basename(os.path.normpath(path)))
  if os.path.isdir(path) and any(_is_step_dir(os.path.join(path, d)) for d in os.listdir(path)):
    return path, None
  raise FileNotFoundError(f"{path} holds no checkpoint: give a training workdir, its "
                          "'checkpoints' directory or one '<step>' directory in it")


def load_params(path: str, model_name: str | None = None, sharding=None,
                item: str = "params") -> PyTree:
  """The parameters of the latest checkpoint under ``path`` (see ``resolve``), as saved.

  ``item``: which TrainState field to load (``'batch_stats'`` for BatchNorm statistics).

  The saved tree and shapes come from the checkpoint itself (no target needed), so parameters
  whose shapes the current config changes (e.g. a grown identity table) load for the model's
  ``load_pretrained`` to merge. ``model_name``: if given, a checkpoint of another model raises
  CheckpointMismatchError. Arrays land on ``sharding`` (default: this process's first device).
  """
  directory, step = resolve(path)
  manager = ocp.CheckpointManager(
      directory, options=ocp.CheckpointManagerOptions(read_only=True, create=False),
      item_handlers={STATE: ocp.PyTreeCheckpointHandler(), META: ocp.JsonCheckpointHandler()})
  sharding = sharding or jax.sharding.SingleDeviceSharding(jax.local_devices()[0])

  def read(step):
    where = os.path.join(directory, str(step))
    meta = manager.restore(step, args=ocp.args.Composite(**{META: ocp.args.JsonRestore()}))[META]
    if model_name is not None and meta.get("model") != model_name:
      raise CheckpointMismatchError(
          f"checkpoint {where} holds model {meta.get('model')!r} but the config builds model "
          f"{model_name!r}; point it at a checkpoint of {model_name!r}")
    saved = manager.item_metadata(step)[STATE].tree.get(item)
    if not saved:
      raise CheckpointMismatchError(f"checkpoint {where} holds no {item!r}; {FIX}")
    target = {item: jax.tree.map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=sharding), saved)}
    restore_args = jax.tree.map(lambda _: ocp.ArrayRestoreArgs(sharding=sharding), target)
    return manager.restore(step, args=ocp.args.Composite(**{
        STATE: ocp.args.PyTreeRestore(item=target, restore_args=restore_args,
                                      partial_restore=True)}))[STATE][item]

  def load(step):
    """(params, None), or (None, the error) when the step cannot be read (a checkpoint that
    reads but does not fit raises CheckpointMismatchError)."""
    try:
      return read(step), None
    except CheckpointMismatchError:
      raise
    except Exception as e:  # pylint: disable=broad-except
      return None, e

  try:
    steps = sorted(manager.all_steps())[::-1] if step is None else [step]
    if not steps:
      raise FileNotFoundError(f"{path} has no finished checkpoint")
    for s in steps:
      value, error = load(s)
      if error is None:
        return value
      where = os.path.join(directory, str(s))
      if step is not None or s == steps[-1]:
        raise CheckpointUnreadableError(f"checkpoint {where} is unreadable ({_one_line(error)})"
                                        + ("" if step is not None else
                                           f"; no older checkpoint in {directory} is readable"))
      warn(f"checkpoint {where} is unreadable ({_one_line(error)}); using the one before it")
  finally:
    manager.close()


# ----------------------------------------------------------------------------------------------
# Preemption.


class StopSignal:
  """While entered, SIGTERM and SIGINT set ``requested`` instead of stopping the process.

  The train loop polls it after each step, saves a checkpoint and returns. Handlers can only be
  installed from the main thread; elsewhere this is inert (the default handler stays).
  """

  def __init__(self, signals=(signal.SIGTERM, signal.SIGINT)):
    self.signals = tuple(signals)
    self.requested = False
    self.signum: int | None = None
    self._previous: dict = {}

  def _handle(self, signum, frame):
    del frame
    if self.requested and signum == signal.SIGINT:  # a second Ctrl-C: stop now, unsaved
      raise KeyboardInterrupt
    self.requested = True
    self.signum = signum

  def __enter__(self) -> "StopSignal":
    if threading.current_thread() is threading.main_thread():
      for s in self.signals:
        self._previous[s] = signal.signal(s, self._handle)
    return self

  def __exit__(self, *exc) -> None:
    for s, previous in self._previous.items():
      signal.signal(s, previous)
    self._previous.clear()

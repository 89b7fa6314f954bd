"""Restoring and evaluating a trained run (shared by evaluate, render, demo; defines no flags)."""
from __future__ import annotations

import json
import os
import time

import ml_collections

from minerf_jax import models
from minerf_jax.train import checkpoint


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The resolved config a run saved in ``workdir/config.json``."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} not found: --workdir must be a training run directory "
                            "(or pass --config)")
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))


def restore(workdir: str, config: ml_collections.ConfigDict | None = None):
  """(config, model, params) of the latest checkpoint in ``workdir``."""
  config = config if config is not None else load_config(workdir)
  model = models.build(config)
  params = checkpoint.load_params(workdir, model_name=config.model.name)
  return config, model, params


def batch_stats_kwargs(workdir: str, config: ml_collections.ConfigDict) -> dict:
  """``{'batch_stats': ...}`` for models with BatchNorm statistics (TPSMM, MCNet, MRFA on
  'pairs' batches, Head3D on 'subjects'), else {}."""
  if models.batch_spec(config) not in ("pairs", "subjects"):
    return {}
  return {"batch_stats": checkpoint.load_params(workdir, model_name=config.model.name,
                                                item="batch_stats")}


def evaluate(workdir: str, config: ml_collections.ConfigDict | None = None) -> dict:
  """Held-out metrics (``model.evaluate`` on the pipeline's eval sets) of a run."""
  config, model, params = restore(workdir, config)
  return model.evaluate(params, models.build_data(config).eval_data,
                        **batch_stats_kwargs(workdir, config))


def with_overrides(config: ml_collections.ConfigDict, overrides: dict) -> ml_collections.ConfigDict:
  """A resolved copy of ``config`` with dotted ``overrides`` (``{'model.width': 64}``)."""
  c = config.copy_and_resolve_references()
  c.update_from_flattened_dict(overrides)
  return c


def train_timed(config: ml_collections.ConfigDict, workdir: str) -> float:
  """Trains (or resumes) a run; its seconds from scratch, kept in ``workdir/bench_seconds.json``
  so that a reused run reports the training it took, not its reload."""
  from minerf_jax.train import loop  # pylint: disable=g-import-not-at-top
  record = os.path.join(workdir, "bench_seconds.json")
  if os.path.exists(record):
    with open(record) as f:
      before = json.load(f)
    if before.get("steps") == int(config.total_steps):
      return float(before["seconds"])
  start = time.time()
  loop.train_and_evaluate(config, workdir)
  seconds = time.time() - start
  with open(record, "w") as f:
    json.dump({"steps": int(config.total_steps), "seconds": seconds}, f)
  return seconds

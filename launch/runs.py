"""Restoring and evaluating a trained run (shared by evaluate, render, demo; defines no flags)."""
from __future__ import annotations

import json
import os

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
  """``{'batch_stats': ...}`` for models with BatchNorm statistics (TPSMM, MCNet, MRFA), else {}."""
  if models.batch_spec(config) != "pairs":
    return {}
  return {"batch_stats": checkpoint.load_params(workdir, model_name=config.model.name,
                                                item="batch_stats")}


def evaluate(workdir: str, config: ml_collections.ConfigDict | None = None) -> dict:
  """Held-out metrics (``model.evaluate`` on the pipeline's eval sets) of a run."""
  config, model, params = restore(workdir, config)
  return model.evaluate(params, models.build_data(config).eval_data,
                        **batch_stats_kwargs(workdir, config))

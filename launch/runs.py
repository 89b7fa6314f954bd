"""Restoring a trained run for the launchers that use one (evaluate, render, demo)."""
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

"""A toy model and toy data implementing the model seam and the Data interface (train tests).

``ToyModel``: a two-layer MLP regressing ``target(x)``; its loss is a mean over the batch, and
uses the rng only when ``config.model.input_noise > 0``. ``ToyData``: batches are a pure function
of (seed, step); hooks let tests act at a given step (send SIGTERM, fail) or poison a batch with
NaN.
"""
from __future__ import annotations

import sys
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from minerf_jax import models

IN, OUT = 3, 2


def target(x: np.ndarray) -> np.ndarray:
  return np.stack([np.sin(x[:, 0]) + x[:, 1] * x[:, 2], np.cos(x[:, 1]) - 0.5 * x[:, 2]], -1)


class MLP(nn.Module):
  width: int

  @nn.compact
  def __call__(self, x):
    x = jnp.tanh(nn.Dense(self.width, name="hidden")(x))
    return nn.Dense(OUT, name="head")(x)


class ToyModel:
  """The model seam (``minerf_jax.models``) for ``MLP``."""
  name = "toy_mlp"

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    self.net = MLP(int(config.model.width))

  def init(self, rng, batch):
    return self.net.init(rng, jnp.asarray(batch["x"]))["params"]

  def predict(self, params, batch):
    return {"y": self.net.apply({"params": params}, batch["x"])}

  def loss(self, params, batch, rng, step):
    del step
    x = batch["x"]
    noise = float(self.config.model.input_noise)
    if noise > 0:
      x = x + noise * jax.random.normal(rng, x.shape)
    mse = jnp.mean((self.net.apply({"params": params}, x) - batch["y"]) ** 2)
    # ``draw`` exposes the step rng: one uniform number per step, the same on every device.
    return mse, {"mse": mse, "psnr": -10.0 * jnp.log10(mse), "draw": jax.random.uniform(rng)}

  def evaluate(self, params, eval_data):
    mse = float(jnp.mean((self.predict(params, eval_data)["y"] - eval_data["y"]) ** 2))
    return {"mse": mse, "psnr": float(-10.0 * np.log10(mse))}

  def trainable(self, params):
    frozen = tuple(self.config.model.frozen)
    return {k: jax.tree.map(lambda _, t=k not in frozen: t, v) for k, v in params.items()}

  def load_pretrained(self, params, pretrained):
    def take(new, old):
      if np.shape(old) != np.shape(new):
        raise ValueError(f"init_from shape {np.shape(old)} != {np.shape(new)}")
      return jnp.asarray(old, new.dtype)
    return jax.tree.map(take, params, dict(pretrained))

  def summary_images(self, params, eval_data):
    y = np.asarray(self.predict(params, eval_data)["y"])[:16]
    image = np.concatenate([y, y[:, :1]], -1).reshape(4, 4, 3)
    return {"prediction": (np.tanh(image) + 1) / 2}


models.register(ToyModel.name, ToyModel)


class ToyData:
  """The Data interface: ``train_batch(step)`` is a pure function of (seed, step).

  ``on_step(step)`` runs before batch ``step`` is made (tests send a signal or raise there);
  steps in ``nan_steps`` get a NaN in their inputs. ``process_index/count`` pick this process's
  share of the global batch.
  """

  def __init__(self, config: ml_collections.ConfigDict, *, on_step: Callable | None = None,
               nan_steps=(), process_index: int = 0, process_count: int = 1):
    self.config = config
    self.global_batch_size = int(config.data.batch_size)
    self.on_step = on_step
    self.nan_steps = set(nan_steps)
    self.process_index, self.process_count = process_index, process_count
    rng = np.random.default_rng(12345)
    x = rng.normal(size=(64, IN)).astype(np.float32)
    self.eval_data = {"x": x, "y": target(x).astype(np.float32)}

  def _batch(self, step: int, size: int) -> dict:
    rng = np.random.default_rng([int(self.config.data.seed), step])
    x = rng.normal(size=(size, IN)).astype(np.float32)
    return {"x": x, "y": target(x).astype(np.float32)}

  def train_batch(self, step: int) -> dict:
    if self.on_step is not None:
      self.on_step(step)
    batch = self._batch(step, self.global_batch_size)
    if step in self.nan_steps:
      batch["x"][0, 0] = np.nan
    share = self.global_batch_size // self.process_count
    return {k: v[self.process_index * share:(self.process_index + 1) * share]
            for k, v in batch.items()}

  def example_batch(self) -> dict:
    return self._batch(10**9, 2)  # a step no run reaches


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """A config for the toy model; ``arg``: unused."""
  del arg
  from configs import common  # pylint: disable=g-import-not-at-top
  config = common.get_config()
  config.total_steps = 6
  config.log_every = 2
  config.eval_every = 4
  config.optimizer.lr = 1e-2
  config.optimizer.lr_end = 1e-3
  config.checkpoint.every = 3
  config.checkpoint.keep = 2
  config.model = ml_collections.ConfigDict(dict(
      name=ToyModel.name, width=8, frozen=(), input_noise=0.0))
  config.data = ml_collections.ConfigDict(dict(batch_size=32, seed=0))
  return config


def launch_with_toy_data() -> None:
  """``python -m launch.train``'s main with ``models.build_data`` returning ToyData (subprocess)."""
  from launch import cli  # pylint: disable=g-import-not-at-top
  from launch import train  # pylint: disable=g-import-not-at-top
  from minerf_jax import models  # pylint: disable=g-import-not-at-top
  models.build_data = lambda config, **kwargs: ToyData(config)
  sys.argv[0] = "launch.train"
  cli.run(train.main)

"""Model registry: ``config.model.name -> Model``.

Every system implements the same small seam so one training loop serves all of them
(see DESIGN.md section 2). A model is an object of pure functions over flax variables:

  init(rng, example_batch) -> params                     # pytree, flax.linen init
  loss(params, batch, rng, step) -> (loss, metrics)      # scalar, dict of scalars; jit-able
  predict(params, batch) -> dict of arrays               # used by evaluate/render/animate
  evaluate(params, eval_data) -> dict of floats          # held-out metrics (host-side loop)
  trainable(params) -> pytree of bool                    # False leaves are frozen
  load_pretrained(params, pretrained) -> params          # merge a checkpoint into fresh params
  initialize_from_data(params, data) -> params           # optional: data-driven init (fresh runs)

``batch_spec(config)`` (a module-level function of each model file) names the batch kind the
data pipeline must deliver ('rays' for NeRF models, 'pairs' for 2-D animation models,
'sequences' for audio-to-expression, 'frame_rays' for audio-driven NeRFs).
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, Protocol

import jax
import ml_collections

PyTree = Any


class Model(Protocol):
  name: str
  config: ml_collections.ConfigDict

  def init(self, rng: jax.Array, batch: dict) -> PyTree: ...
  def loss(self, params: PyTree, batch: dict, rng: jax.Array, step: jax.Array): ...
  def predict(self, params: PyTree, batch: dict) -> dict: ...
  def evaluate(self, params: PyTree, eval_data: Any) -> dict: ...
  def trainable(self, params: PyTree) -> PyTree: ...
  def load_pretrained(self, params: PyTree, pretrained: PyTree) -> PyTree: ...


# name -> "module:attribute" so that importing the registry stays cheap.
_REGISTRY: dict[str, str] = {
    "minerf": "minerf_jax.models.minerf:MINeRF",
    "tpsmm": "minerf_jax.models.tpsmm:TPSMM",
    "mcnet": "minerf_jax.models.mcnet:MCNet",
    "mrfa": "minerf_jax.models.mrfa:MRFA",
    "audio2exp": "minerf_jax.models.audio2exp:Audio2Exp",
    "lokitalk": "minerf_jax.models.lokitalk:LokiTalk",
    "head3d": "minerf_jax.models.head3d:Head3D",
}
_EXTRA: dict[str, tuple[Callable[..., Model], str]] = {}


def register(name: str, factory: Callable[..., Model], batch_kind: str = "rays") -> None:
  """Registers ``factory(config, **kwargs) -> Model`` under ``name`` (used by tests too)."""
  _EXTRA[name] = (factory, batch_kind)


def _module(name: str):
  if name not in _REGISTRY:
    raise ValueError(f"config.model.name={name!r} is not a known model; choose one of {names()}")
  module_name, attr = _REGISTRY[name].split(":")
  return importlib.import_module(module_name), attr


def batch_spec(config: ml_collections.ConfigDict) -> str:
  """The batch kind the data pipeline must deliver for ``config.model.name``."""
  name = config.model.name
  if name in _EXTRA:
    return _EXTRA[name][1]
  module, _ = _module(name)
  return module.batch_spec(config)


def build_data(config: ml_collections.ConfigDict, **kwargs) -> Any:
  """The Data object (see train/loop.py) for ``config``: the pipeline of its model's batch kind."""
  # pylint: disable=g-import-not-at-top
  from minerf_jax.data import pairs
  from minerf_jax.data import pipeline
  from minerf_jax.data import sequences
  kind = batch_spec(config)
  builders = {"rays": pipeline.RayData, "frame_rays": pipeline.FrameRayData,
              "pairs": pairs.PairData, "subjects": pairs.SubjectData,
              "sequences": sequences.SequenceData}
  if kind not in builders:
    raise ValueError(f"batch kind {kind!r} of model {config.model.name!r} has no pipeline yet")
  return builders[kind](config, **kwargs)


def names() -> list[str]:
  return sorted(set(_REGISTRY) | set(_EXTRA))


def build(config: ml_collections.ConfigDict, **kwargs) -> Model:
  """Builds the model named by ``config.model.name``."""
  name = config.model.name
  if name in _EXTRA:
    return _EXTRA[name][0](config, **kwargs)
  module, attr = _module(name)
  return getattr(module, attr)(config, **kwargs)

r"""Imports an authors' released PyTorch checkpoint as a run of ours.

  python -m launch.convert --model=tpsmm --torch_checkpoint=vox.pth.tar --workdir=runs/tpsmm_vox \
      [--config=configs/tpsmm.py] [--config.data.image_size=384 ...]
  python -m launch.convert --model=mcnet --torch_checkpoint=00000099-checkpoint.pth.tar \
      --workdir=runs/mcnet_vox

The result is a training run directory like any other (``config.json`` and an Orbax checkpoint
at step 0 with the parameters, the BatchNorm statistics and a fresh optimiser state), so
``launch.animate --checkpoint=DIR``, ``launch.evaluate --workdir=DIR``, ``launch.train`` (which
fine-tunes it from step 0) and ``init_from=DIR`` use it as they use a trained run.

* ``--model``: ``tpsmm`` (yoyo-nb/Thin-Plate-Spline-Motion-Model: vox, ted, taichi and mgif
  checkpoints), ``mcnet`` (harlanhong/ICCV2023-MCNET's vox checkpoint, into the published
  config ``configs/mcnet.py``) or ``mrfa`` (JialeTao/MRFA's vox and celebvhq checkpoints, MTIA
  or FOMM prior, into ``configs/mrfa.py``; celebvhq's background predictor, which the authors'
  demo does not use, is skipped and said so).
* The model sizes (``num_tps`` / ``num_kp``, widths, depths, ``scale_factor``, the memory's
  size) are read from the checkpoint's tensor shapes and override the config's; the image size is not in a checkpoint
  (ted-384 needs ``--config.data.image_size=384 --config.data.resolution=384``).
* Needs PyTorch to read the file (the ``convert`` extra: ``pip install -e '.[convert]'``); the
  tensor mapping itself is ``minerf_jax/models/torch_import.py``.

A missing file, a checkpoint of another model, a tensor we do not know or lack, a shape mismatch
or a workdir that already holds a checkpoint each end with a one-line error (exit status 1).
"""
from __future__ import annotations

import os
import sys

from absl import flags
import jax
import jax.numpy as jnp
import ml_collections
from ml_collections import config_flags
import numpy as np

from launch import cli
from minerf_jax import models
from minerf_jax.models import torch_import
from minerf_jax.train import checkpoint
from minerf_jax.train import loop
from minerf_jax.train import state as state_lib

_MODEL = flags.DEFINE_enum("model", None, list(torch_import.supported_models()),
                           "Which authors' model the checkpoint holds.", required=True)
_TORCH_CHECKPOINT = flags.DEFINE_string("torch_checkpoint", None, "The authors' .pth/.pth.tar.",
                                        required=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory to create.", required=True)
_TRUST = flags.DEFINE_bool("trust_pickle", False, "Load the file with full pickle (only for "
                           "files you trust) when the safe tensors-only loader refuses it.")
_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file[:variant] (default: configs/<model>.py, the published model).",
    lock_config=False)


class ConvertError(cli.UserError):
  """The message is the one-line error."""


def read_torch_checkpoint(path: str, trust_pickle: bool = False) -> dict:
  """``{entry: {tensor name: numpy array}}`` of a ``torch.save`` d dict of state dicts (entries
  that are not state dicts, e.g. an epoch number, are kept as they are)."""
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise ConvertError("launch.convert needs PyTorch to read the checkpoint: pip install -e "
                       "'.[convert]'") from None
  if not os.path.isfile(path):
    raise ConvertError(f"--torch_checkpoint={path}: no such file")
  try:
    raw = torch.load(path, map_location="cpu", weights_only=not trust_pickle)
  except Exception as e:  # pylint: disable=broad-except  (pickle, zip and unpickler errors)
    hint = "" if trust_pickle else "; if you trust the file, add --trust_pickle"
    raise ConvertError(f"--torch_checkpoint={path}: cannot read it with torch.load: "
                       f"{' '.join(str(e).split())[:200]}{hint}") from None
  if not isinstance(raw, dict):
    raise ConvertError(f"--torch_checkpoint={path} holds a {type(raw).__name__}, not a dict of "
                       "state dicts")
  out = {}
  for entry, value in raw.items():
    if isinstance(value, dict) and value and all(torch.is_tensor(v) for v in value.values()):
      out[entry] = {k: v.detach().cpu().numpy() for k, v in value.items()}
    else:
      out[entry] = value
  return out


def default_config(model: str) -> ml_collections.ConfigDict:
  module = __import__(f"configs.{model}", fromlist=["get_config"])
  return module.get_config()


def convert(model: str, torch_checkpoint: str, workdir: str,
            config: ml_collections.ConfigDict | None = None, trust_pickle: bool = False) -> str:
  """Reads the authors' checkpoint and writes the run; returns the last line to print."""
  check_fresh(workdir)
  state_dicts = read_torch_checkpoint(torch_checkpoint, trust_pickle)
  try:
    variables = write_run(model, state_dicts, workdir, config)
  except ConvertError as e:
    raise ConvertError(f"--torch_checkpoint={torch_checkpoint}: {e}") from None
  return (f"converted {torch_checkpoint} ({torch_import.summary(variables)}) -> "
          f"{checkpoint.checkpoint_dir(workdir)}/0")


def check_fresh(workdir: str) -> None:
  ckpts = checkpoint.checkpoint_dir(workdir)
  if os.path.isdir(ckpts) and os.listdir(ckpts):
    raise ConvertError(f"--workdir={workdir} already holds a checkpoint; use a fresh directory")


def write_run(model: str, state_dicts: dict, workdir: str,
              config: ml_collections.ConfigDict | None = None) -> dict:
  """The run directory of ``state_dicts`` (``{entry: {tensor: array}}``, as the authors'
  checkpoint holds them): ``config.json`` (the config with the checkpoint's sizes) and a step-0
  checkpoint. Returns the converted variables."""
  check_fresh(workdir)
  config = (config or default_config(model)).copy_and_resolve_references()
  if config.model.name != model:
    raise ConvertError(f"--config builds model {config.model.name!r}, not {model!r}")
  try:
    sizes = torch_import.infer_sizes(model, state_dicts)
  except KeyError as e:
    raise ConvertError(f"no tensor {e}: not a {model} checkpoint") from None
  except torch_import.ConversionError as e:
    raise ConvertError(str(e)) from None
  prior = sizes.pop("prior", None)
  if prior is not None and prior != config.model.get("prior"):
    # MRFA trained with another prior (prior_model: fomm): that prior's published config.
    from minerf_jax.models import mrfa  # pylint: disable=g-import-not-at-top
    config.model = mrfa.published_model_config("full", prior)
    print(f"the checkpoint's prior is {prior!r}: model.prior={prior}", file=sys.stderr)
  changed = [f"model.{k}={v}" for k, v in sizes.items()
             if _plain(_get(config.model, k)) != _plain(v)]
  config.model.update_from_flattened_dict(sizes)
  built = models.build(config)
  s = int(config.data.image_size)
  batch = {"source": np.zeros((2, s, s, 3), np.float32),
           "driving": np.zeros((2, s, s, 3), np.float32)}
  init_rng, train_rng = loop.seed_keys(config)
  init = lambda: built.init_variables(init_rng, batch)
  expected = jax.eval_shape(init)
  default = init() if model == "tpsmm" and "bg_predictor" not in state_dicts else None
  try:
    variables, report = torch_import.convert(model, state_dicts, expected, default)
  except torch_import.ConversionError as e:
    raise ConvertError(str(e)) from None
  params = jax.tree.map(jnp.asarray, variables["params"])
  batch_stats = jax.tree.map(jnp.asarray, variables["batch_stats"])
  tx = loop.make_optimizer(config, built.trainable)
  train_state = state_lib.TrainState.create(params, tx, train_rng, batch_stats)
  loop.write_config(config, workdir)
  ckpt = checkpoint.Checkpointer(workdir, model_name=model, every=1, keep=1, async_save=False)
  try:
    ckpt.save(0, train_state, config)
  finally:
    ckpt.close()
  for line in report + ([f"sizes from the checkpoint: {', '.join(changed)}"] if changed else []):
    print(line, file=sys.stderr)
  return variables


def _get(config: ml_collections.ConfigDict, dotted: str):
  """The value at ``dotted`` (None where a field is absent: a module default applies)."""
  for k in dotted.split("."):
    if k not in config:
      return None
    config = config[k]
  return config


def _plain(value):
  return tuple(value) if isinstance(value, (list, tuple)) else value


def main(argv):
  del argv
  print(convert(_MODEL.value, _TORCH_CHECKPOINT.value, _WORKDIR.value, _CONFIG.value,
                _TRUST.value))


if __name__ == "__main__":
  cli.run(main)

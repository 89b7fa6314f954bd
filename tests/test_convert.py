"""launch.convert: an authors' checkpoint becomes a run that our launchers load like a trained one.

The state dicts are the TPSMM golden fixture's (``tools/make_goldens.py``): the run written from
them must predict the reference's own frames. Reading ``.pth`` files needs PyTorch, an optional
extra; that part is tested when PyTorch is installed.
"""
from __future__ import annotations

import importlib.util
import os

import jax
import numpy as np
import pytest

from configs import mcnet as mcnet_config
from configs import mrfa as mrfa_config
from configs import tpsmm as tpsmm_config
from launch import convert
from launch import runs
from minerf_jax import models
from minerf_jax.models import torch_import
from minerf_jax.train import checkpoint

import _golden as goldens


@pytest.fixture(scope="module")
def golden():
  return goldens.load_golden("tpsmm")


def small_config(image_size: int):
  config = tpsmm_config.get_config("test")
  config.data.image_size = config.data.resolution = image_size
  return config


def test_converted_run_predicts_the_reference_frames(golden, tmp_path):
  meta, state_dicts, ref = golden
  workdir = str(tmp_path / "run")
  config = small_config(meta["sizes"]["image_size"])
  assert config.model.num_tps != meta["sizes"]["num_tps"]     # the checkpoint sets the sizes
  convert.write_run("tpsmm", state_dicts, workdir, config)
  saved = runs.load_config(workdir)
  assert saved.model.num_tps == meta["sizes"]["num_tps"]
  assert dict(saved.model.generator) == {**dict(config.model.generator),
                                         **meta["sizes"]["generator"]}
  model = models.build(saved)
  params = checkpoint.load_params(workdir, model_name="tpsmm")
  batch_stats = checkpoint.load_params(workdir, model_name="tpsmm", item="batch_stats")
  batch = {k: goldens.nhwc(ref[f"in/{k}"]) for k in ("source", "driving")}
  out = model.predict(params, batch, batch_stats=batch_stats)
  goldens.close(out["kp_source"], ref["eval/kp_source"], "keypoints from the converted run")
  goldens.close(out["prediction"], goldens.nhwc(ref["eval/prediction"]),
                "prediction of the converted run (absolute motion, background)")
  with pytest.raises(convert.ConvertError, match="already holds a checkpoint"):
    convert.write_run("tpsmm", state_dicts, workdir, config)


def test_a_torch_checkpoint_file_reads_back_as_its_state_dicts(golden, tmp_path):
  path = str(tmp_path / "missing.pth.tar")
  with pytest.raises(convert.ConvertError) as e:
    convert.read_torch_checkpoint(path)
  assert "\n" not in str(e.value)
  if importlib.util.find_spec("torch") is None:   # the optional 'convert' extra
    assert "pip install -e '.[convert]'" in str(e.value)
    return
  import torch  # pylint: disable=g-import-not-at-top
  _, state_dicts, _ = golden
  torch.save({k: {n: torch.from_numpy(v) for n, v in d.items()} for k, d in state_dicts.items()}
             | {"epoch": 3}, path)
  read = convert.read_torch_checkpoint(path)
  assert read["epoch"] == 3
  for entry, tensors in state_dicts.items():
    assert read[entry].keys() == tensors.keys()
    for name, value in tensors.items():
      np.testing.assert_array_equal(read[entry][name], value)
  assert os.path.getsize(path) > 0


def test_converted_mcnet_run_predicts_the_reference_frames(tmp_path):
  """The published MCNet: the golden fixture's state dicts, saved as the authors' DDP training
  writes them ('module.' prefixes, a discriminator and optimiser entries beside), become a run of
  configs/mcnet.py whose sizes come from the tensors; it predicts the reference's frames."""
  meta, state_dicts, ref = goldens.load_golden("mcnet")
  checkpoint_like = {k: {f"module.{n}": v for n, v in d.items()} for k, d in state_dicts.items()}
  checkpoint_like.update(discriminator={"module.down_blocks.0.conv.weight": np.zeros((2, 3, 4, 4))},
                         optimizer_generator={"state": {}}, epoch=99)
  config = mcnet_config.get_config("test")
  s = meta["sizes"]["image_size"]
  config.data.image_size = config.data.resolution = s
  assert config.model.num_kp != meta["sizes"]["num_kp"]         # the checkpoint sets the sizes
  workdir = str(tmp_path / "run")
  convert.write_run("mcnet", checkpoint_like, workdir, config)
  saved = runs.load_config(workdir)
  assert saved.model.num_kp == meta["sizes"]["num_kp"]
  assert saved.model.memory_bank.memory_size == meta["sizes"]["memory"]["mb_spatial"]
  model = models.build(saved)
  params = checkpoint.load_params(workdir, model_name="mcnet")
  batch_stats = checkpoint.load_params(workdir, model_name="mcnet", item="batch_stats")
  batch = {k: goldens.nhwc(ref[f"in/{k}"]) for k in ("source", "driving")}
  out = model.predict(params, batch, batch_stats=batch_stats)
  goldens.close(out["kp_source"]["value"], ref["eval/kp_source"], "keypoints")
  goldens.close(out["kp_source"]["jacobian"], ref["eval/jacobian_source"], "Jacobians")
  goldens.close(out["prediction"], goldens.nhwc(ref["eval/prediction"]),
                "prediction of the converted MCNet run")
  # A TPSMM checkpoint is not an MCNet one: one line naming the entry.
  _, tpsmm_dicts, _ = goldens.load_golden("tpsmm")
  with pytest.raises(convert.ConvertError) as e:
    convert.write_run("mcnet", tpsmm_dicts, str(tmp_path / "other"), config)
  assert "\n" not in str(e.value) and "mcnet" in str(e.value)


def test_converted_mrfa_run_predicts_the_reference_frames(tmp_path):
  """The published MRFA: the golden fixture's MTIA encoder, dense motion and decoder saved as
  the authors' Logger writes them (one 'model' state dict of a DDP module, with the loss's VGG,
  pyramid and anti-aliasing buffers beside; 'optimizer', 'epoch') become a run of
  configs/mrfa.py (sizes from the tensors) that predicts the reference's whole-model output."""
  meta, state_dicts, ref = goldens.load_golden("mrfa")
  flat = {f"module.{entry}.{n}": v for entry, d in state_dicts.items() for n, v in d.items()}
  flat.update({"module.vgg.slice1.0.weight": np.zeros((64, 3, 3, 3), np.float32),
               "module.pyramid.downs.0_5.weight": np.zeros((3, 1, 5, 5), np.float32),
               "module.down.weight": np.zeros((3, 1, 13, 13), np.float32)})
  config = mrfa_config.get_config("test")
  s = meta["sizes"]["image_size"]
  config.data.image_size = config.data.resolution = s
  workdir = str(tmp_path / "run")
  convert.write_run("mrfa", {"model": flat, "optimizer": {"state": {}}, "epoch": 99}, workdir,
                    config)
  saved = runs.load_config(workdir)
  assert saved.model.prior == "mtia" and saved.model.generator.num_up_blocks == 5
  assert tuple(saved.model.refine.corr_features) == tuple(meta["sizes"]["update"]["corr_features"])
  model = models.build(saved)
  params = checkpoint.load_params(workdir, model_name="mrfa")
  batch_stats = checkpoint.load_params(workdir, model_name="mrfa", item="batch_stats")
  batch = {k: goldens.nhwc(ref[f"in/{k}"]) for k in ("source", "driving")}
  out = model.predict(params, batch, batch_stats=batch_stats)
  goldens.close(out["kp_source"]["value"], ref["e2e/kp_source"], "MTIA keypoints")
  goldens.close(out["kp_source"]["jacobian"], ref["e2e/jacobian_source"], "MTIA Jacobians")
  goldens.close(out["prediction"], goldens.nhwc(ref["e2e/prediction"]),
                "prediction of the converted MRFA run")
  # celebvhq's model also holds a background predictor: skipped, and said so.
  prepared = torch_import.prepare("mrfa", {"model": {**flat, "module.bg_predictor.fc.bias":
                                                     np.zeros(6, np.float32)}})
  assert set(prepared) == {"encoder", "dense_motion", "decoder", "mrfa_bg_predictor"}
  expected = jax.eval_shape(lambda: {"params": params, "batch_stats": batch_stats})
  _, report = torch_import.convert("mrfa", prepared, expected)
  assert any("mrfa_bg_predictor" in line and "skipped" in line for line in report)
  # A stray module in the 'model' dict is one line naming the tensor.
  with pytest.raises(convert.ConvertError) as e:
    convert.write_run("mrfa", {"model": {**flat, "module.extra.weight": np.zeros(3)}},
                      str(tmp_path / "other"), config)
  assert "\n" not in str(e.value) and "model.extra.weight" in str(e.value)

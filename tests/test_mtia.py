"""MRFA's MTIA keypoint detector (``motion/mtia.py``) against the authors' code.

The fixture (``tools/make_mtia_golden.py``) holds a reduced, non-square reference detector's
random state dict, its input images and its outputs in eval and train mode; the state dict goes
through ``torch_import.MTIA_PARTS`` and ``torch_import.convert_table``. No PyTorch needed.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from minerf_jax.models import torch_import
from minerf_jax.motion import mtia

from _golden import close
from _golden import load_golden
from _golden import nhwc

# The reference's vox1 detector (config/vox1.yaml: mtia_kp_detector), counted by
# `tools/make_mtia_golden.py --count_full` (sum of numel over TokenPose_B.parameters()):
# 12,283,462 = 12,234,310 trainable + 49,152 (= 256 tokens x 192) in the fixed sine position
# embedding, which the reference stores as a requires_grad=False parameter and we compute.
REFERENCE_TRAINABLE = 12_234_310
REFERENCE_FIXED = 49_152


def detector(sizes: dict) -> mtia.MTIAKeypointDetector:
  fields = {k: tuple(v) if isinstance(v, list) else v for k, v in sizes.items() if k != "batch"}
  return mtia.MTIAKeypointDetector(**fields)


@pytest.fixture(scope="module")
def golden():
  meta, state_dicts, arrays = load_golden("mtia")
  net = detector(meta["sizes"])
  image = jnp.asarray(nhwc(arrays["in/image"]))
  expected = jax.eval_shape(lambda: net.init(jax.random.key(0), image))
  variables, report = torch_import.convert_table(torch_import.MTIA_PARTS, state_dicts,
                                                 as_part(expected), model="mtia")
  assert not report
  variables = {c: jax.tree.map(jnp.asarray, v["detector"]) for c, v in variables.items()}
  return meta, state_dicts, arrays, net, variables, image


def as_part(variables: dict) -> dict:
  """The detector's variables as the submodule ``detector`` of a model (convert_table's paths
  are ``(collection, submodule, ...)``)."""
  return {c: {"detector": v} for c, v in variables.items()}


def test_sine_position_embedding_is_the_references(golden):
  meta, state_dicts, _, net, _, _ = golden
  h, w = net.grid()
  pos = state_dicts["encoder"]["transformer.pos_embedding"]
  np.testing.assert_allclose(mtia.sine_position_embedding(h, w, meta["sizes"]["dim"]), pos[0],
                             atol=1e-6, rtol=0)
  assert h != w and torch_import.is_sine_embedding(pos)
  assert not torch_import.is_sine_embedding(pos + 1e-3)


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_detector_matches_the_reference(golden, mode):
  _, _, ref, net, variables, image = golden
  train = mode == "train"
  out, state = jax.jit(lambda v, x: net.apply(v, x, train, mutable=[
      "intermediates", *(["batch_stats"] if train else [])]))(variables, image)
  close(state["intermediates"]["features"][0], nhwc(ref[f"{mode}/features"]),
        f"{mode} HRNet features")
  close(state["intermediates"]["tokens"][0], ref[f"{mode}/tokens"], f"{mode} transformer tokens")
  close(out["value"], ref[f"{mode}/kp"], f"{mode} keypoints")
  close(out["jacobian"], ref[f"{mode}/jacobian"], f"{mode} Jacobians")


def test_unknown_tensor_and_learned_embedding_are_refused(golden):
  _, state_dicts, _, net, variables, image = golden
  expected = as_part(variables)
  bad = {"encoder": {**state_dicts["encoder"], "transformer.extra.weight": np.zeros((2, 2))}}
  with pytest.raises(torch_import.ConversionError, match="extra"):
    torch_import.convert_table(torch_import.MTIA_PARTS, bad, expected)
  learned = dict(state_dicts["encoder"])
  learned["transformer.pos_embedding"] = learned["transformer.pos_embedding"] + 0.01
  with pytest.raises(torch_import.ConversionError, match="sine"):
    torch_import.convert_table(torch_import.MTIA_PARTS, {"encoder": learned}, expected)


def test_initial_jacobians_are_identity_and_keypoints_inside_the_image(golden):
  _, _, _, net, _, image = golden
  out, variables = jax.jit(net.init_with_output)(jax.random.key(1, impl="rbg"), image)
  np.testing.assert_array_equal(out["jacobian"], np.broadcast_to(np.eye(2), out["jacobian"].shape))
  assert out["value"].shape == (image.shape[0], net.num_kp, 2)
  assert np.all(np.abs(out["value"]) < 1) and np.std(out["value"]) > 0
  tokens = variables["params"]["keypoint_tokens"]
  assert tokens.shape == (2 * net.num_kp, net.dim) and 0.01 < float(np.std(tokens)) < 0.03


def test_full_size_parameter_count_is_the_references():
  net = mtia.MTIAKeypointDetector()   # vox1: 256 px, 10 keypoints, dim 192, depth 12, 8 heads
  shapes = jax.eval_shape(net.init, jax.random.key(0), jnp.zeros((1, 256, 256, 3)))
  count = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes["params"]))
  assert count == REFERENCE_TRAINABLE
  assert net.grid() == (16, 16) and 16 * 16 * net.dim == REFERENCE_FIXED
  out = jax.eval_shape(net.apply, shapes, jnp.zeros((2, 256, 256, 3)))
  assert out["value"].shape == (2, 10, 2) and out["jacobian"].shape == (2, 10, 2, 2)


def test_wrong_image_size_is_refused():
  net = mtia.MTIAKeypointDetector(image_size=64, stem_width=8, layer1_blocks=1,
                                  stage2_blocks=(1, 1), stage3_blocks=(1, 1, 1), stage3_modules=1,
                                  depth=1, dim=16, heads=2)
  with pytest.raises(ValueError, match="built for"):
    jax.eval_shape(net.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))

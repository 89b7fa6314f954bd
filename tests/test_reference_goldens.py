"""Our ports against the authors' own numbers: golden fixtures of ``tools/make_goldens.py``.

Each fixture holds a reduced-width reference model's random state dict (saved by the authors'
code), its inputs and every stage's outputs, in eval mode and (BatchNorm networks) train mode.
The state dict goes through ``torch_import.convert`` (the converter ``launch.convert`` uses) and
each stage of our model, fed the reference's inputs to that stage, must match to 1e-4 in
float32. No PyTorch is needed: the fixtures are numbers.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import tpsmm as tpsmm_config
from minerf_jax import losses
from minerf_jax.models import animation
from minerf_jax.models import torch_import
from minerf_jax.motion import fomm
from minerf_jax.motion import generator
from minerf_jax.motion import keypoints
from minerf_jax.motion import memory
from minerf_jax.motion import raft_flow
from minerf_jax.motion import tps
from minerf_jax.motion import warp

from _golden import close
from _golden import load_golden
from _golden import maps
from _golden import nhwc


def tpsmm_net(meta: dict):
  sizes = meta["sizes"]
  config = tpsmm_config.get_config("test")
  config.model.update(num_tps=sizes["num_tps"], detector_width=sizes["detector_width"])
  config.model.generator.update(sizes["generator"])
  config.model.dense_motion.update(sizes["dense_motion"])
  config.data.image_size = config.data.resolution = sizes["image_size"]
  return animation.net_from_config(config)


@pytest.fixture(scope="module")
def tpsmm_golden():
  meta, state_dicts, arrays = load_golden("tpsmm")
  net = tpsmm_net(meta)
  source, driving = (jnp.asarray(nhwc(arrays[f"in/{k}"])) for k in ("source", "driving"))
  expected = jax.eval_shape(lambda: net.init(
      {"params": jax.random.key(0), "dropout": jax.random.key(0)}, source, driving))
  variables, _ = torch_import.convert("tpsmm", state_dicts, expected)
  return net, jax.tree.map(jnp.asarray, variables), arrays, source, driving


def test_tpsmm_keypoints_and_background_match_the_reference_in_eval_and_train_mode(tpsmm_golden):
  net, variables, ref, source, driving = tpsmm_golden
  for mode, train in (("eval", False), ("train", True)):
    apply = lambda method, *args: net.apply(variables, *args, train, method=method,
                                            mutable=["batch_stats"] if train else False)
    unpack = (lambda out: out[0]) if train else (lambda out: out)
    # The reference's training step runs source and driving through the detector as two batches.
    close(unpack(apply(animation.AnimationNet.keypoints, source)), ref[f"{mode}/kp_source"],
          f"{mode} keypoints of the source")
    close(unpack(apply(animation.AnimationNet.keypoints, driving)), ref[f"{mode}/kp_driving"],
          f"{mode} keypoints of the driving frame")
    close(unpack(apply(animation.AnimationNet.background, source, driving)),
          ref[f"{mode}/bg_param"], f"{mode} background affine")


def test_tpsmm_dense_motion_and_generator_match_the_reference_stage_by_stage(tpsmm_golden):
  net, variables, ref, source, driving = tpsmm_golden

  def run(n):   # the reference's keypoints and background in, so each stage is tested alone
    out = n.animate(source, jnp.asarray(ref["eval/kp_source"]), jnp.asarray(ref["eval/kp_driving"]),
                    jnp.asarray(ref["eval/bg_param"]))
    out["driving_features"] = n.driving_features(driving, out["motion"]["occlusion_map"])
    return out

  out = jax.jit(nn.apply(run, net))(variables)
  motion = out["motion"]
  close(motion["deformation"], ref["eval/deformation"], "dense flow")
  close(np.moveaxis(np.asarray(motion["contribution_maps"]), -1, 1),
        ref["eval/contribution_maps"], "contribution maps")
  close(np.moveaxis(np.asarray(motion["deformed_source"]), -1, 2), ref["eval/deformed_source"],
        "source warped by each transform")
  occlusion = maps(ref, "eval/occlusion_map")
  assert len(motion["occlusion_map"]) == len(occlusion) == 4
  for i, (ours, theirs) in enumerate(zip(motion["occlusion_map"], occlusion)):
    close(ours, nhwc(theirs), f"occlusion mask {i}")
  warped = maps(ref, "eval/warped_encoder_maps")
  for i, (ours, theirs) in enumerate(zip(out["warped_encoder_maps"], warped, strict=True)):
    close(ours, nhwc(theirs), f"warped encoder map {i}")
  # get_encode lists the masked driving features fine to coarse; ours are coarse to fine.
  encoded = maps(ref, "eval/driving_encode")[::-1]
  for i, (ours, theirs) in enumerate(zip(out["driving_features"], encoded, strict=True)):
    close(ours, nhwc(theirs), f"masked driving features {i}")
  close(out["deformed"], nhwc(ref["eval/deformed"]), "source warped by the flow")
  close(out["prediction"], nhwc(ref["eval/prediction"]), "prediction")
  # Not trivially equal: the stages carry signal (the flow is not the identity grid, etc.).
  assert float(np.std(ref["eval/prediction"])) > 0.01
  assert float(np.max(np.abs(ref["eval/bg_param"][:, :2] - np.eye(3)[:2]))) > 1e-3


def test_conversion_errors_name_the_tensor():
  meta, state_dicts, ref = load_golden("tpsmm")
  net = tpsmm_net(meta)
  x = jnp.zeros((1, 64, 64, 3))
  init = jax.eval_shape(lambda: net.init({"params": jax.random.key(0),
                                          "dropout": jax.random.key(0)}, x, x))
  del ref

  def fails(dicts, *fragments):
    with pytest.raises(torch_import.ConversionError) as e:
      torch_import.convert("tpsmm", dicts, init)
    message = str(e.value)
    assert "\n" not in message
    for f in fragments:
      assert f in message, message

  def edited(entry, fn):
    out = {k: dict(v) for k, v in state_dicts.items()}
    fn(out[entry])
    return out

  name = "resblock.1.conv2.weight"
  fails(edited("inpainting_network", lambda d: d.pop(name)), "generator/res_blocks_0_1/conv2/kernel")
  fails(edited("inpainting_network", lambda d: d.update({"extra.weight": np.zeros(3)})),
        "inpainting_network.extra.weight")
  fails(edited("inpainting_network", lambda d: d.update({name: d[name][:, :1]})),
        f"inpainting_network.{name}", "shape")
  fails({**state_dicts, "kp_extractor": {}}, "'kp_extractor'", "another model")
  fails({k: v for k, v in state_dicts.items() if k != "dense_motion_network"},
        "'dense_motion_network'")
  # A checkpoint without a background predictor (the reference's bg=False) converts, with the
  # identity background of our initialisation.
  predictor = keypoints.BackgroundMotionPredictor(meta["sizes"]["detector_width"])
  default = jax.jit(predictor.init)(jax.random.key(0), x, x)
  default = {c: {"bg_predictor": tree} for c, tree in default.items()}
  no_bg = {k: v for k, v in state_dicts.items() if k != "bg_predictor"}
  variables, report = torch_import.convert("tpsmm", no_bg, init, default)
  assert any("bg_predictor" in line for line in report)
  bg = jax.jit(predictor.apply)({c: t["bg_predictor"] for c, t in variables.items()},
                                x, x + jnp.linspace(0, 1, 64)[:, None, None])
  np.testing.assert_allclose(np.asarray(bg)[0], np.eye(3), atol=1e-7)


def test_sizes_are_read_from_the_checkpoint():
  meta, state_dicts, _ = load_golden("tpsmm")
  sizes = torch_import.infer_tpsmm_sizes(state_dicts)
  s = meta["sizes"]
  assert sizes == {"num_tps": s["num_tps"], "detector_width": s["detector_width"],
                   **{f"generator.{k}": v for k, v in s["generator"].items()},
                   **{f"dense_motion.{k}": v for k, v in s["dense_motion"].items()}}


# ---------------------------------------------------------------------------------------- MCNet


@pytest.fixture(scope="module")
def mcnet_golden():
  """MCNet's parts, built from our modules at the fixture's sizes, with converted weights."""
  meta, state_dicts, arrays = load_golden("mcnet")
  sizes = meta["sizes"]
  nets = {
      "detector": fomm.KeypointDetector(num_kp=sizes["num_kp"], **sizes["kp_detector"]),
      "dense_motion": fomm.DenseMotionNetwork(num_kp=sizes["num_kp"], **sizes["dense_motion"]),
      "generator": generator.InpaintingGenerator(num_channels=3, multi_mask=False, norm="batch",
                                                 **sizes["generator"]),
      "memory": memory.MemoryCompensation(
          memory_channels=sizes["memory"]["mb_channel"],
          memory_size=sizes["memory"]["mb_spatial"], style_features=512, style_hidden=128),
  }
  source, driving = (jnp.asarray(nhwc(arrays[f"in/{k}"])) for k in ("source", "driving"))
  kp = {"value": jnp.asarray(arrays["eval/kp_source"]),
        "jacobian": jnp.asarray(arrays["eval/jacobian_source"])}
  gen = nets["generator"]
  maps = jax.eval_shape(lambda: gen.init_with_output(jax.random.key(0), source,
                                                     method=gen.encode)[0])
  warped = [jax.ShapeDtypeStruct(m.shape, m.dtype) for m in reversed(maps)]
  init = {"detector": lambda n: n.init(jax.random.key(0), source),
          "dense_motion": lambda n: n.init(jax.random.key(0), source, kp, kp),
          "generator": lambda n: n.init(jax.random.key(0), source, {
              "deformation": jnp.zeros(source.shape[:3] + (2,)),
              "occlusion_map": [jnp.ones(source.shape[:3] + (1,))]}),
          "memory": lambda n: n.init(jax.random.key(0), [jnp.zeros(w.shape) for w in warped],
                                     kp["value"])}
  expected = {}
  for name, net in nets.items():
    for collection, sub in jax.eval_shape(lambda n=net, f=init[name]: f(n)).items():
      expected.setdefault(collection, {})[name] = sub
  split = torch_import.split_entry(state_dicts, "generator", torch_import.MCNET_SPLIT)
  variables, _ = torch_import.convert_table(torch_import.MCNET_PARTS, split, expected)
  variables = jax.tree.map(jnp.asarray, variables)
  part = {name: {c: t[name] for c, t in variables.items() if name in t} for name in nets}
  return nets, part, arrays, source, driving


def _kp(ref, mode, frame):
  return {"value": jnp.asarray(ref[f"{mode}/kp_{frame}"]),
          "jacobian": jnp.asarray(ref[f"{mode}/jacobian_{frame}"])}


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_mcnet_keypoints_and_dense_motion_match_the_reference(mcnet_golden, mode):
  nets, v, ref, source, driving = mcnet_golden
  train = mode == "train"
  run = lambda net, variables: jax.jit(lambda *a: net.apply(
      variables, *a, train=train, mutable=["batch_stats"] if train else False))
  unpack = (lambda out: out[0]) if train else (lambda out: out)
  for name, image in (("source", source), ("driving", driving)):   # two BatchNorm batches
    kp = unpack(run(nets["detector"], v["detector"])(image))
    close(kp["value"], ref[f"{mode}/kp_{name}"], f"{mode} keypoints of the {name}")
    close(kp["jacobian"], ref[f"{mode}/jacobian_{name}"], f"{mode} Jacobians of the {name}")
  out = unpack(run(nets["dense_motion"], v["dense_motion"])(
      source, _kp(ref, mode, "source"), _kp(ref, mode, "driving")))
  close(out["deformation"], ref[f"{mode}/deformation"], f"{mode} dense flow")
  close(np.moveaxis(np.asarray(out["mask"]), -1, 1), ref[f"{mode}/mask"], f"{mode} masks")
  close(np.moveaxis(np.asarray(out["sparse_deformed"]), -1, 2), ref[f"{mode}/sparse_deformed"],
        f"{mode} source warped by each local affine motion")
  close(out["occlusion_map"][0], nhwc(ref[f"{mode}/occlusion_map"]), f"{mode} occlusion map")
  # Not trivial: the Jacobians are not the identity and the keypoints not at the centre.
  assert float(np.abs(ref[f"{mode}/jacobian_source"] - np.eye(2)).max()) > 1e-2
  assert float(np.abs(ref[f"{mode}/kp_source"]).max()) > 1e-2


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_mcnet_generator_and_memory_match_the_reference_stage_by_stage(mcnet_golden, mode):
  """Fed the reference's flow and occlusion map: the warped maps, the memory's projections,
  values and compensated maps, the warped source and the prediction."""
  nets, v, ref, source, _ = mcnet_golden
  train = mode == "train"
  gen, mem = nets["generator"], nets["memory"]
  deformation = jnp.asarray(ref[f"{mode}/deformation"])
  occlusion = [jnp.asarray(nhwc(ref[f"{mode}/occlusion_map"]))]
  kp_source = jnp.asarray(ref[f"{mode}/kp_source"])

  @jax.jit
  def run(v_gen, v_mem):
    mutable = ["batch_stats"] if train else False
    maps = gen.apply(v_gen, source, train, method=gen.encode, mutable=mutable)
    maps = maps[0] if train else maps
    warped = generator.warp_features(maps, deformation, occlusion, multi_mask=False)
    compensated, aux = mem.apply(v_mem, warped, kp_source)
    last = generator.mask_at(occlusion, -1, source.shape[1:3], False)
    deformed = warp.warp(source, deformation)
    pred = gen.apply(v_gen, compensated, deformed, last, train, method=gen.decode,
                     mutable=mutable)
    return warped, compensated, aux, deformed, pred[0] if train else pred

  warped, compensated, aux, deformed, pred = run(v["generator"], v["memory"])
  for i, (ours, theirs) in enumerate(zip(warped, maps(ref, f"{mode}/warped_encoder_maps"),
                                         strict=True)):
    close(ours, nhwc(theirs), f"{mode} warped map {i}")
  for name, ours_list in (("memory_features", aux["features"]), ("memory_values", aux["values"]),
                          ("compensated", compensated[:-1])):
    for i, (ours, theirs) in enumerate(zip(ours_list, maps(ref, f"{mode}/{name}"), strict=True)):
      close(ours, nhwc(theirs), f"{mode} {name} {i}")
  close(deformed, nhwc(ref[f"{mode}/deformed"]), f"{mode} source warped by the flow")
  close(pred, nhwc(ref[f"{mode}/prediction"]), f"{mode} prediction")
  assert float(np.std(ref[f"{mode}/prediction"])) > 0.01


def test_mcnet_training_losses_match_the_reference(mcnet_golden):
  """The authors' GeneratorFullModel (train mode) on the fixture's pair: FOMM's random transform
  of the driving frame, the keypoints found on it (third BatchNorm batch), and the loss terms
  equivariance (values and Jacobians), keypoint distance and feature consistency, each from our
  functions fed the reference's inputs to that term."""
  nets, v, ref, _, driving = mcnet_golden
  b = driving.shape[0]
  transform = tps.TPS(
      affine=jnp.asarray(ref["loss/theta"]),
      control_points=jnp.broadcast_to(jnp.asarray(ref["loss/control_points"]).reshape(1, -1, 2),
                                      (b, 25, 2)),
      weights=jnp.swapaxes(jnp.asarray(ref["loss/control_params"]), 1, 2))
  # Our random transform draws the same kind of spline on the same control grid.
  drawn = tps.random_tps(jax.random.key(0), b)
  np.testing.assert_array_equal(drawn.control_points, transform.control_points)
  assert drawn.weights.shape == transform.weights.shape
  frame = losses.transform_frame(driving, transform, kernel="fomm", align_corners=False)
  close(frame, nhwc(ref["loss/transformed_frame"]), "transformed driving frame")
  kp_t, _ = jax.jit(lambda x: nets["detector"].apply(v["detector"], x, train=True,
                                                     mutable=["batch_stats"]))(
      jnp.asarray(nhwc(ref["loss/transformed_frame"])))
  close(kp_t["value"], ref["loss/kp_transformed"], "keypoints of the transformed frame")
  close(kp_t["jacobian"], ref["loss/jacobian_transformed"], "Jacobians of the transformed frame")
  kp_t = jnp.asarray(ref["loss/kp_transformed"])
  close(tps.warp_points(transform, kp_t, kernel="fomm"), ref["loss/warped_kp_transformed"],
        "transform at the keypoints")
  close(tps.jacobian_at(transform, kp_t, kernel="fomm"), ref["loss/transform_jacobian"],
        "transform Jacobian at the keypoints")
  kp_d = jnp.asarray(ref["loss/kp_driving"])
  close(losses.equivariance_loss(kp_d, kp_t, transform, 10.0, kernel="fomm"),
        ref["loss/equivariance_value"], "equivariance (values)")
  close(losses.equivariance_jacobian_loss(jnp.asarray(ref["loss/jacobian_driving"]), kp_t,
                                          jnp.asarray(ref["loss/jacobian_transformed"]),
                                          transform, 10.0, kernel="fomm"),
        ref["loss/equivariance_jacobian"], "equivariance (Jacobians)")
  distance = 10.0 * (losses.keypoint_distance_loss(jnp.asarray(ref["loss/kp_source"]))
                     + losses.keypoint_distance_loss(kp_d))
  close(distance, ref["loss/kp_distance"], "keypoint distance")
  features, values = (maps(ref, f"loss/memory_{k}") for k in ("features", "values"))
  consistency = 10.0 * memory.consistency_loss([jnp.asarray(nhwc(f)) for f in features],
                                               [jnp.asarray(nhwc(x)) for x in values])
  close(consistency, ref["loss/feat_consistent"], "feature consistency")
  # The other resizing (ours before this comparison) gives another value.
  other = 10.0 * memory.consistency_loss([jnp.asarray(nhwc(f)) for f in features],
                                         [jnp.asarray(nhwc(x)) for x in values], resize="value")
  assert abs(float(other) - float(ref["loss/feat_consistent"])) > 1e-3
  # Not trivial: the transform moves the frame, the terms are not at their minimum.
  assert float(np.abs(ref["loss/transformed_frame"] - ref["in/driving"]).mean()) > 1e-3
  assert min(float(ref[f"loss/{k}"]) for k in ("equivariance_value", "equivariance_jacobian",
                                                 "kp_distance", "feat_consistent")) > 0.1


# ----------------------------------------------------------------------------------------- MRFA


@pytest.fixture(scope="module")
def mrfa_golden():
  """MRFA's dense motion (FOMM's, occlusion logit) and RaftFlow decoder at the fixture's sizes."""
  meta, state_dicts, arrays = load_golden("mrfa")
  sizes = meta["sizes"]
  k, s = sizes["num_kp"], sizes["image_size"]
  enc, upd = sizes["encoder"], sizes["update"]
  nets = {
      "dense_motion": fomm.DenseMotionNetwork(num_kp=k, **sizes["dense_motion"]),
      "refine": raft_flow.RaftFlow(
          size=s, dim=sizes["dim"], generator_kw=sizes["generator"],
          encoder_block_expansion=enc["block_expansion"],
          encoder_num_blocks=enc["num_blocks"], encoder_max_features=enc["max_features"],
          context_features=upd["context_features"], hidden=upd["hidden"],
          motion_features=upd["motion_features"], corr_features=tuple(upd["corr_features"]),
          flow_features=tuple(upd["flow_features"])),
  }
  source = jnp.asarray(nhwc(arrays["in/source"]))
  kp = {"value": jnp.asarray(arrays["in/kp_source"]),
        "jacobian": jnp.asarray(arrays["in/jacobian_source"])}
  h = s // 4
  init = {"dense_motion": lambda n: n.init(jax.random.key(0), source, kp, kp),
          "refine": lambda n: n.init(jax.random.key(0), source, kp["value"], kp["value"],
                                     jnp.zeros((1, h, h, 2)), jnp.zeros((1, h, h, 1)))}
  expected = {}
  for name, net in nets.items():
    for collection, sub in jax.eval_shape(lambda n=net, f=init[name]: f(n)).items():
      expected.setdefault(collection, {})[name] = sub
  decoder_dicts = {k: v for k, v in state_dicts.items() if k != "encoder"}   # MTIA: e2e only
  variables, _ = torch_import.convert_table(torch_import.MRFA_DECODER_PARTS, decoder_dicts,
                                            expected)
  variables = jax.tree.map(jnp.asarray, variables)
  part = {name: {c: t[name] for c, t in variables.items() if name in t} for name in nets}
  return nets, part, arrays, source


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_mrfa_dense_motion_and_refinement_match_the_reference(mrfa_golden, mode):
  """Every stage of MRFA's decoder, fed the reference's keypoints, prior flow and occlusion
  logit: dense motion, encoder maps, structure features, each of the 6 steps' flow, looked-up
  correlation and increments, the refined and prior-warped maps, masks, warped source and
  prediction."""
  nets, v, ref, source = mrfa_golden
  train = mode == "train"
  run = lambda net, variables: jax.jit(lambda *a: net.apply(
      variables, *a, train=train, mutable=["batch_stats"] if train else False))
  unpack = (lambda out: out[0]) if train else (lambda out: out)
  kp = lambda who: {"value": jnp.asarray(ref[f"in/kp_{who}"]),
                    "jacobian": jnp.asarray(ref[f"in/jacobian_{who}"])}
  motion = unpack(run(nets["dense_motion"], v["dense_motion"])(source, kp("source"),
                                                                kp("driving")))
  close(motion["deformation"], ref[f"{mode}/deformation"], f"{mode} prior flow")
  close(motion["occlusion_logit"], nhwc(ref[f"{mode}/occlusion_logit"]), f"{mode} occlusion logit")
  close(np.moveaxis(np.asarray(motion["mask"]), -1, 1), ref[f"{mode}/mask"], f"{mode} masks")
  out = unpack(run(nets["refine"], v["refine"])(
      source, jnp.asarray(ref["in/kp_source"]), jnp.asarray(ref["in/kp_driving"]),
      jnp.asarray(ref[f"{mode}/deformation"]), jnp.asarray(nhwc(ref[f"{mode}/occlusion_logit"]))))
  close(out["query"], nhwc(ref[f"{mode}/q_d"]), f"{mode} driving structure features")
  close(out["key"], nhwc(ref[f"{mode}/k_s"]), f"{mode} source structure features")
  for name, ours in (("features", out["features"]), ("warped", out["warped"]),
                     ("prior", out["warped_prior"]), ("masks", out["occlusion_map"])):
    theirs = maps(ref, f"{mode}/{name}")
    assert len(ours) == len(theirs) == 6, name
    for i, (a, b) in enumerate(zip(ours, theirs)):
      close(a, nhwc(b), f"{mode} {name} {i}")
  for i, ((flow, corr), delta) in enumerate(zip(out["step_inputs"], out["increments"],
                                               strict=True)):
    close(flow, nhwc(ref[f"{mode}/step_flow/{i}"]), f"{mode} step {i} flow")
    if f"{mode}/step_corr/{i}" in ref:
      close(corr, nhwc(ref[f"{mode}/step_corr/{i}"]), f"{mode} step {i} correlation lookup")
    close(delta, nhwc(ref[f"{mode}/step_delta/{i}"]), f"{mode} step {i} increments")
  close(out["deformed"], nhwc(ref[f"{mode}/deformed"]), f"{mode} warped source")
  close(out["prediction"], nhwc(ref[f"{mode}/prediction"]), f"{mode} prediction")
  assert float(np.std(ref[f"{mode}/prediction"])) > 0.01
  assert float(np.abs(ref[f"{mode}/step_delta/3"]).mean()) > 1e-3   # the refinement moves

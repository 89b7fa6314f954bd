"""LokiTalk: deformation fields, identity hyper-networks, frame-ray data and the model seam."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import lokitalk as lokitalk_config
from minerf_jax import models
from minerf_jax.data import pipeline
from minerf_jax.models import lokitalk
from minerf_jax.nerf import deform
from minerf_jax.nerf import encoding
from minerf_jax.train import parallel
from minerf_jax.train import state as state_lib


def _config(data_dir, **overrides):
  config = lokitalk_config.get_config("test")
  config.data.data_dir = data_dir
  config.update_from_flattened_dict(overrides)
  return config


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="module")
def setup(data_dir):
  config = _config(data_dir)
  data = models.build_data(config)
  model = models.build(config)
  params = model.initialize_from_data(model.init(jax.random.key(0), data.example_batch()), data)
  return config, data, model, params


# ------------------------------------------------------------------------------ deformation


def _face(regions=True, adapter="film"):
  return deform.FaceDeformation(encoding.PositionalEncoding(0, 2), width=16, regions=regions,
                                adapter=adapter)


def _random_params(params, key, scale=0.5):
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(key, len(leaves))
  return jax.tree.unflatten(tree, [scale * jax.random.normal(k, x.shape)
                                   for k, x in zip(keys, leaves)])


@pytest.mark.parametrize("regions", [True, False])
@pytest.mark.parametrize("adapter", ["film", "lowrank"])
def test_deformation_is_zero_at_neutral_inputs(regions, adapter):
  face = _face(regions, adapter)
  x = jax.random.uniform(jax.random.key(0), (3, 5, 7, 3), minval=-1, maxval=1)
  conds = {"lips": jnp.ones((3, 1, 4)), "eyes": jnp.ones((3, 1, 2)), "head": jnp.ones((3, 1, 9))}
  z = jax.random.normal(jax.random.key(1), (3, 1, 6))
  params = _random_params(face.init(jax.random.key(2), x, conds, z), jax.random.key(3))
  neutral = {k: jnp.zeros_like(v) for k, v in conds.items()}
  x_c, offset, weights = face.apply(params, x, neutral, z)
  np.testing.assert_array_equal(np.asarray(offset), 0.0)      # exactly, not approximately
  np.testing.assert_array_equal(np.asarray(x_c), np.asarray(x))
  np.testing.assert_allclose(np.asarray(weights).sum(-1), 1.0, rtol=1e-6)
  _, moved, _ = face.apply(params, x, conds, z)
  assert np.abs(np.asarray(moved)).mean() > 1e-3
  assert np.abs(np.asarray(moved)).max() <= 0.25 + 1e-6       # deform_scale bounds a branch


def test_each_branch_moves_points_only_through_its_region_weight():
  """With the region weights pinned to one-hot 'eyes', the audio moves nothing and the blink
  moves the points."""
  face = _face()
  x = jax.random.uniform(jax.random.key(0), (2, 4, 6, 3), minval=-1, maxval=1)
  conds = {"lips": jnp.ones((2, 1, 4)), "eyes": jnp.zeros((2, 1, 2)), "head": jnp.zeros((2, 1, 9))}
  params = _random_params(face.init(jax.random.key(2), x, conds, None), jax.random.key(3))
  logits = params["params"]["region_logits"]
  eyes = deform.REGIONS.index("eyes")
  params["params"]["region_logits"] = {
      "kernel": jnp.zeros_like(logits["kernel"]),
      "bias": jnp.zeros_like(logits["bias"]).at[eyes].set(100.0)}
  _, offset, weights = face.apply(params, x, conds, None)
  assert float(np.asarray(weights)[..., eyes].min()) > 1 - 1e-6
  assert np.abs(np.asarray(offset)).max() < 1e-6
  blink = {**conds, "lips": jnp.zeros((2, 1, 4)), "eyes": jnp.ones((2, 1, 2))}
  _, offset, _ = face.apply(params, x, blink, None)
  assert np.abs(np.asarray(offset)).mean() > 1e-3


def test_identity_adapter_is_the_identity_at_a_zero_code():
  u = jax.random.normal(jax.random.key(0), (3, 5, 8))
  for kind in ("film", "lowrank"):
    adapter = deform.IdentityAdapter(kind)
    z = jax.random.normal(jax.random.key(1), (3, 4))
    params = _random_params(adapter.init(jax.random.key(2), u, z), jax.random.key(3))
    np.testing.assert_array_equal(np.asarray(adapter.apply(params, u, jnp.zeros_like(z))),
                                  np.asarray(u))
    assert np.abs(np.asarray(adapter.apply(params, u, z) - u)).mean() > 1e-2
    np.testing.assert_array_equal(np.asarray(adapter.apply(params, jnp.zeros_like(u), z)), 0.0)
  with pytest.raises(ValueError, match="model.hyper"):
    deform.IdentityAdapter("hyper").init(jax.random.key(0), u, z)


def test_torso_field_offset_is_zero_at_the_neutral_pose():
  torso = deform.TorsoField(encoding.TriplaneHashEncoding(planes=("xy",), num_levels=2,
                                                          log2_table_size=8, max_resolution=16),
                            encoding.PositionalEncoding(0, 2), width=16)
  uv = jax.random.uniform(jax.random.key(0), (2, 7, 2), minval=-1, maxval=1)
  pose = jnp.ones((2, 1, 9))
  params = _random_params(torso.init(jax.random.key(1), uv, pose), jax.random.key(2))
  rgb, alpha, offset = torso.apply(params, uv, jnp.zeros_like(pose))
  np.testing.assert_array_equal(np.asarray(offset), 0.0)
  assert rgb.shape == (2, 7, 3) and alpha.shape == (2, 7)
  assert 0 < float(alpha.min()) and float(alpha.max()) < 1
  _, _, moved = torso.apply(params, uv, pose)
  assert np.abs(np.asarray(moved)).mean() > 1e-4


# ------------------------------------------------------------------------------ data


def test_neighbour_index_stays_inside_runs():
  identity = np.array([0, 0, 0, 0, 1, 1, 1])
  frame = np.array([0, 1, 2, 5, 10, 11, 12])           # a gap after frame 2; a new identity
  idx = pipeline.neighbour_index(identity, frame, 1)
  np.testing.assert_array_equal(idx, [[0, 0, 1], [0, 1, 2], [1, 2, 2], [3, 3, 3],
                                      [4, 4, 5], [4, 5, 6], [5, 6, 6]])


def test_speech_region_is_the_lips_and_the_face_below_them():
  masks = np.zeros((2, 6, 5, len(pipeline.MASK_NAMES)), np.float32)
  face, lips = pipeline.MASK_NAMES.index("face"), pipeline.MASK_NAMES.index("lips")
  masks[:, 1:, 1:4, face] = 1                     # a face from row 1 down
  masks[0, 3, 2, lips] = 1                        # frame 0: lips on row 3; frame 1: none
  masks[0, 3, 2, face] = 0
  region = pipeline.speech_region(masks)
  expected = np.zeros((6, 5), bool)
  expected[3:, 1:4] = True                        # the face at and below row 3, lips included
  np.testing.assert_array_equal(region[0], expected)
  assert not region[1].any()


def test_region_rays_come_half_from_each_region(setup):
  """A quarter of each frame's rays from the speech and eyes regions, half from each."""
  config, data, _, _ = setup
  batch = data.train_batch(0)
  k = int(round(config.data.region_fraction * config.data.rays_per_frame))
  masks = batch["masks"][:, :k]
  for name in ("speech_region", "eyes_region"):
    inside = masks[..., pipeline.FRAME_MASK_NAMES.index(name)] > 0.5
    assert inside.sum(1).min() >= k // 2, name


def test_frame_ray_batches(setup):
  config, data, _, _ = setup
  batch = data.train_batch(3)
  f, r = config.data.frames_per_batch, config.data.rays_per_frame
  k = config.model.audio_context
  assert batch["audio"].shape == (f, 2 * k + 1, 16, 40)
  assert batch["directions"].shape == (f, r, 3) and batch["masks"].shape == (f, r, len(pipeline.FRAME_MASK_NAMES))
  assert batch["blink"].shape == (f, 2) and batch["rotation"].shape == (f, 3, 3)
  assert data.global_batch_size == f
  np.testing.assert_array_equal(data.train_batch(3)["rgb"], batch["rgb"])   # pure in the step
  # Each frame's audio window is the stored features of it and its neighbours.
  frames = data.train_frames
  n = int(np.flatnonzero(frames.frame == batch["frame"][0])[0])
  np.testing.assert_array_equal(batch["audio"][0], frames.audio[n])
  idx = pipeline.neighbour_index(frames.identity, frames.frame, k)[n]
  assert frames.frame[idx[k]] == batch["frame"][0]
  # The blink of synthetic frames is the expression's blink components.
  np.testing.assert_array_equal(batch["blink"], batch["expression"][:, 2:4])


# ------------------------------------------------------------------------------ the model


def _jit_apply(model):
  return jax.jit(lambda p, b: model.net.apply({"params": p}, b, None, False, model.silence))


def _frame_batch(data, n=2):
  return {k: jnp.asarray(v[:n]) for k, v in data.train_batch(0).items()}


def test_neutral_frame_has_zero_offsets_everywhere(setup):
  config, data, model, params = setup
  params = jax.tree.map(lambda x: x, params)
  batch = _frame_batch(data)
  neutral = {**batch, "audio": jnp.broadcast_to(model.silence, batch["audio"].shape),
             "blink": jnp.zeros_like(batch["blink"]),
             "rotation": jnp.broadcast_to(jnp.eye(3), batch["rotation"].shape)}
  apply = _jit_apply(model)
  out = apply(params, neutral)
  np.testing.assert_array_equal(np.asarray(out["offset_sq"]), 0.0)
  np.testing.assert_array_equal(np.asarray(out["torso_offset"]), 0.0)
  out = apply(params, batch)
  assert float(np.asarray(out["offset_sq"]).max()) > 0


def test_zero_identity_code_is_the_generic_model(setup):
  """The film model at z = 0 renders what the same network without any hyper-network renders
  (hyper='none' and no canonical/torso identity paths taking effect)."""
  config, data, model, params = setup
  batch = _frame_batch(data)
  params = _random_params(params, jax.random.key(5), 0.3)
  zero = {**batch, "identity_code": jnp.zeros((2, config.model.identity_dim))}
  apply = _jit_apply(model)
  film = apply(params, zero)["rgb"]
  generic_cfg = _config(config.data.data_dir, **{"model.hyper": "none"})
  generic = models.build(generic_cfg)
  shapes = jax.eval_shape(lambda: generic.net.init(jax.random.key(0), batch, None, False,
                                                   generic.silence)["params"])
  shared = _prune(params, shapes)
  assert _count(shared) < _count(params)              # the hyper-networks are gone
  plain = _jit_apply(generic)(shared, zero)["rgb"]
  np.testing.assert_allclose(np.asarray(film), np.asarray(plain), rtol=1e-6, atol=1e-7)
  # A non-zero code changes the render (the hyper-networks do something).
  some = {**batch, "identity_code": jnp.ones((2, config.model.identity_dim))}
  other = apply(params, some)["rgb"]
  assert np.abs(np.asarray(other - film)).mean() > 1e-4


def _prune(tree, like):
  return {k: (_prune(tree[k], v) if isinstance(v, dict) else tree[k]) for k, v in like.items()}


def _count(tree):
  return sum(int(np.size(x)) for x in jax.tree.leaves(tree))


def test_ablations_build_other_models(setup):
  config, data, _, params = setup
  batch = _frame_batch(data)
  for key, value, gone in (("model.regions", "off", ("face", "lips_branch")),
                           ("model.cascade", "off", ("torso",)),
                           ("model.transfer", "off", ("id_encoder",))):
    model = models.build(_config(config.data.data_dir, **{key: value}))
    p = jax.eval_shape(lambda m=model: m.net.init(jax.random.key(0), batch, None, False,
                                                  m.silence)["params"])
    node = p
    for name in gone[:-1]:
      node = node[name]
    assert gone[-1] not in node, (key, value)
    assert jax.eval_shape(model.loss, p, batch, jax.random.key(1), 0)[0].shape == ()
  one_branch = models.build(_config(config.data.data_dir, **{"model.regions": "off"}))
  p = one_branch.init(jax.random.key(0), batch)
  assert "global_branch" in p["face"] and "region_logits" not in p["face"]
  loss, metrics = jax.jit(one_branch.loss)(p, batch, jax.random.key(1), 0)
  assert np.isfinite(float(loss)) and np.isfinite(float(metrics["psnr"]))
  with pytest.raises(ValueError, match="model.regions"):
    models.build(_config(config.data.data_dir, **{"model.regions": "maybe"}))
  assert "references" in params and not models.build(config).trainable(params)["references"]


def test_gradients_reach_every_trainable_part(setup):
  config, data, model, params = setup
  batch = {k: jnp.asarray(v) for k, v in data.train_batch(0).items()}
  batch["blink"] = jax.random.uniform(jax.random.key(8), batch["blink"].shape)  # some blinks
  params = _random_params(params, jax.random.key(7), 0.1)
  params = {**params, "references": jnp.asarray(
      lokitalk.reference_frames(data.train_frames, params["references"].shape))}
  grads = jax.jit(jax.grad(lambda p: model.loss(p, batch, jax.random.key(1), 0)[0]))(params)
  trainable = model.trainable(params)
  for name in ("audio_frames", "audio_pool", "face", "field", "encoding", "id_encoder",
               "identity_codes", "canonical_hyper", "torso", "torso_encoding", "background"):
    assert trainable[name] and sum(float(np.abs(g).sum()) for g in jax.tree.leaves(
        grads[name])) > 0, name
  for branch in ("lips_branch", "eyes_branch", "head_branch"):
    g = grads["face"][branch]["gate"]["kernel"]
    assert float(np.abs(g).sum()) > 0, branch


def test_eight_devices_equal_one_device(setup):
  assert jax.device_count() == 8
  config, data, _, params = setup
  config = _config(config.data.data_dir, **{"model.randomized": False})
  model = models.build(config)
  tx = optax.adam(1e-2)
  rng = jax.random.key_data(jax.random.key(0))
  results = {}
  # (pmap is tested on MI-NeRF's step; its losses are means too, so that it agrees.)
  for name, strategy, devices in (("jit1", "jit", jax.devices()[:1]),
                                  ("jit8", "jit", jax.devices())):
    mesh = parallel.make_mesh(devices)
    step = parallel.make_train_step(model, tx, strategy, mesh)
    fresh = jax.tree.map(np.array, params)
    state = step.put_state(state_lib.TrainState.create(fresh, tx, np.array(rng)))
    for s in range(2):
      state, _ = step(state, step.put_batch(data.train_batch(s)))
    results[name] = jax.device_get(step.get_state(state).params)
  # atol: Adam divides each gradient by its own RMS, so a hash-table entry that one ray
  # touches, its gradient summed in another float32 order, may move by ~1e-3 of a step (1e-2).
  for name in ("jit8",):
    jax.tree_util.tree_map_with_path(
        lambda path, a, b, name=name: np.testing.assert_allclose(
            a, b, rtol=2e-5, atol=1e-5, err_msg=f"{name} {jax.tree_util.keystr(path)}"),
        results[name], results["jit1"])


def test_render_and_evaluate(setup):
  _, data, model, params = setup
  heldout = data.eval_data["heldout"]
  assert heldout.audio is not None and "transfer" not in data.eval_data
  out = model.render_frames(params, heldout)
  assert out["rgb"].shape == heldout.rgb.shape
  np.testing.assert_allclose(out["regions"].sum(-1)[out["acc"] > 0.05], 1.0, rtol=1e-4)
  results = model.evaluate(params, data.eval_data)
  for key in ("heldout/psnr", "heldout/face_psnr", "heldout/lips_psnr", "heldout/eyes_psnr",
              "heldout/region_recall_lips"):
    assert np.isfinite(results[key]), key
  with pytest.raises(ValueError, match="audio_context"):
    model.render_frames(params, pipeline.FrameSet(**{
        **{f: getattr(heldout, f) for f in ("rgb", "rotation", "translation", "intrinsics",
                                            "identity", "frame", "expression", "mask")}}))


# ------------------------------------------------------------------------------ after training


@pytest.fixture(scope="module")
def trained(data_dir, tmp_path_factory):
  """configs/lokitalk.py:test at 32x32 with 80 train frames per identity, 500 steps (~100 s on
  2 cores): enough for the region weights and the audio branch to take shape."""
  from minerf_jax.train import loop  # pylint: disable=g-import-not-at-top
  config = _config(data_dir, **{"data.resolution": 32, "data.frames_per_identity": 100,
                                "data.rays_per_frame": 32, "model.reference_size": 8,
                                "eval.frames_per_identity": 4, "total_steps": 500,
                                "eval_every": 500, "log_every": 100,
                                "checkpoint.every": 500})
  state = loop.train_and_evaluate(config, str(tmp_path_factory.mktemp("loki") / "run"))
  model = models.build(config)
  return model, jax.device_get(state.params), models.build_data(config).eval_data["heldout"]


def _change(model, params, frames, changed):
  base = model.render_frames(params, frames)["rgb"]
  return np.abs(model.render_frames(params, changed)["rgb"] - base).sum(-1)


@pytest.mark.slow
def test_after_training_the_audio_moves_the_speech_region_only(trained):
  """Swapping only the audio changes the render where speech moves the face (the lips and the
  jaw below them, ``pipeline.speech_region``, swept over neighbouring frames, dilated 1 px):
  the summed change outside it is < 5% of the change inside (the issue's criterion; measured
  here ~2%; the generator's own truth under a jaw-opening swap: ~0%), and the change is real
  (the audio branch is used)."""
  model, params, frames = trained
  n = len(frames)
  donor = (np.arange(n) + n // 2) % n
  change = _change(model, params, frames, dataclasses.replace(frames, audio=frames.audio[donor]))
  speech = lokitalk.dilate(
      frames.masks[..., pipeline.FRAME_MASK_NAMES.index("speech_region")] > 0.5, 1)
  inside, outside = change[speech].mean(), change[~speech].mean()
  assert inside > 1e-3, inside
  assert change[~speech].sum() < 0.05 * change[speech].sum(), (inside, outside)
  results = model.evaluate(params, {"heldout": frames})
  assert results["heldout/region_recall_lips"] > 0.7
  assert results["heldout/region_recall_eyes"] > 0.5
  assert results["heldout/audio_leak"] == pytest.approx(
      change[~speech].sum() / change[speech].sum(), rel=1e-4)


@pytest.mark.slow
def test_after_training_the_blink_moves_nothing_outside_the_eyes(trained):
  """Shutting open eyes (only the blink changed) changes the render in the eyes region more per
  pixel than anywhere else (> 5x)."""
  model, params, frames = trained
  shut = dataclasses.replace(frames, blink=(frames.blink < 0.5).astype(np.float32))
  change = _change(model, params, frames, shut)
  eyes = lokitalk.dilate(frames.masks[..., pipeline.FRAME_MASK_NAMES.index("eyes_region")] > 0.5,
                         1)
  assert change[eyes].mean() > 5 * change[~eyes].mean(), (change[eyes].mean(),
                                                            change[~eyes].mean())


def test_adaptation_to_a_new_identity(minerf_demo_run, lokitalk_test_run, tmp_path):
  """The :test run (identities 0-1) adapted to identity 2 from 4 frames: its code starts as the
  ID encoder's reading of its references (zero residual), only the named collections move."""
  from minerf_jax.train import checkpoint  # pylint: disable=g-import-not-at-top
  from minerf_jax.train import loop  # pylint: disable=g-import-not-at-top
  data_dir, base_dir = minerf_demo_run[2], lokitalk_test_run
  adapt = _config(data_dir, init_from=base_dir, total_steps=3, eval_every=0,
                  **{"adapt.identity": 2, "adapt.num_frames": 4})
  model, data = models.build(adapt), models.build_data(adapt)
  assert len(data.train_frames) == 4 and set(data.train_frames.identity) == {2}
  base = checkpoint.load_params(base_dir)
  fresh = model.initialize_from_data(model.init(jax.random.key(0), data.example_batch()), data)
  start = model.load_pretrained(fresh, base)
  np.testing.assert_array_equal(start["identity_codes"]["embedding"][2], 0.0)
  np.testing.assert_array_equal(start["references"][:2], base["references"])
  assert np.abs(np.asarray(start["references"][2])).sum() > 0       # its own frames
  state = loop.train_and_evaluate(adapt, str(tmp_path / "adapted"))
  new = jax.device_get(state.params)
  np.testing.assert_array_equal(new["identity_codes"]["embedding"][:2],
                                base["identity_codes"]["embedding"])
  assert np.abs(new["identity_codes"]["embedding"][2]).sum() > 0     # the new code trained
  for frozen in ("face", "field", "audio_frames", "id_encoder"):
    jax.tree.map(np.testing.assert_array_equal, new[frozen], base[frozen])
  trainable = model.trainable(new)
  assert trainable["identity_codes"]["embedding"] and not trainable["face"]["trunk"]["kernel"]
  with pytest.raises(ValueError, match="adapt.train names"):
    models.build(_config(data_dir, **{"adapt.identity": 2,
                                      "adapt.train": ("decoder",)})).trainable(new)


# ------------------------------------------------------------------------------ the benchmark


def test_benchmark_trains_every_model_on_one_dataset():
  from launch import lokitalk_bench  # pylint: disable=g-import-not-at-top
  cfgs = lokitalk_bench.configs("test", 7, "/data", {"data.resolution": 32})
  loki, mi, a2e = cfgs["lokitalk"], cfgs["minerf"], cfgs["audio2exp"]
  for name in ("lokitalk", *lokitalk_bench.ABLATIONS, "minerf"):
    assert cfgs[name].total_steps == 7 and cfgs[name].data.data_dir == "/data", name
  for field in ("resolution", "num_identities", "frames_per_identity", "seed"):
    assert mi.data[field] == loki.data[field], field
  assert mi.data.resolution == 32 and mi.model.name == "minerf"
  assert (a2e.data.num_identities, a2e.data.speech_frames) == (loki.data.num_identities,
                                                               loki.data.frames_per_identity)
  assert cfgs["regions_off"].model.regions == "off" and loki.model.regions == "on"
  assert cfgs["cascade_off"].model.cascade == "off" and cfgs["transfer_off"].model.transfer == "off"


def test_jaw_reading_recovers_the_truths_jaw():
  """Analysis by synthesis on the generator: a truth rendered at a grid opening reads back
  exactly that opening; one between grid points reads one of its two neighbours (the nearest
  in image error, which at 24 px need not be the nearest in opening)."""
  from launch import lokitalk_bench  # pylint: disable=g-import-not-at-top
  from minerf_jax.data import synthetic  # pylint: disable=g-import-not-at-top
  ident = synthetic.make_identity(0, 1)
  rot, trans = synthetic.pose_matrix(0.1, 0.0, 0.0, (0.0, 0.0, 0.0))
  truth = lambda t, e: synthetic.render(ident, e, rot, trans, 24, supersample=1)["rgb"]
  grid = np.linspace(0, 1, 5).astype(np.float32)
  jaws = np.array([0.0, 0.75, 0.3], np.float32)
  e = np.tile(np.array([[0, 0.4, 0, 0, 0]], np.float32), (3, 1))
  e[:, 0] = jaws
  rgb = np.stack([truth(t, e[t]) for t in range(3)])
  reading = lokitalk_bench._jaw_reading(rgb, e, truth, grid)
  np.testing.assert_array_equal(reading[:2], [0.0, 0.75])
  assert reading[2] in (0.25, 0.5)


def test_adaptation_benchmark_runs_differ_only_where_they_should():
  """lokitalk_adapt: every run adapts the same new identity from the same frames for the same
  horizon; the modes differ in what is trained and from where, and MI-NeRF sees the same data."""
  from launch import lokitalk_bench  # pylint: disable=g-import-not-at-top
  cfgs = lokitalk_bench.adapt_configs("test", 9, 5, 1, 3, "/data", {"data.resolution": 32})
  for mode in lokitalk_bench.ADAPT_MODES:
    c = cfgs[mode]
    block = c.personalise if mode.startswith("minerf") else c.adapt
    assert (c.total_steps, block.identity, block.num_frames) == (9, 1, 5), mode
    assert c.data.num_identities == 1 and c.data.data_dir == "/data", mode
    assert c.eval.frames_per_identity == 3 and c.data.resolution == 32, mode
  for field in ("resolution", "num_identities", "frames_per_identity", "seed"):
    assert cfgs["minerf"].data[field] == cfgs["transfer"].data[field], field
  assert tuple(cfgs["transfer"].adapt.train) == ("identity_codes", "background")
  assert tuple(cfgs["transfer_all"].adapt.train) == ("all",) == tuple(cfgs["scratch"].adapt.train)
  assert cfgs["encoder_off"].model.transfer == "off" == cfgs["base_encoder_off"].model.transfer
  assert cfgs["transfer"].model.transfer == "on"
  assert tuple(cfgs["encoder_off_all"].adapt.train) == ("all",)
  assert cfgs["encoder_off_all"].model.transfer == "off"
  assert cfgs["minerf"].personalise.freeze_shared and not cfgs["minerf_all"].personalise.freeze_shared
  assert lokitalk_bench.ADAPT_BASE["scratch"] is None
  assert lokitalk_bench.ADAPT_BASE["encoder_off"] == "base_encoder_off"


def test_adapt_train_all_trains_every_collection_but_the_frozen(setup):
  config, _, _, params = setup
  for train, want in ((("all",), set(params) - set(lokitalk.FROZEN)),
                      (("identity_codes",), {"identity_codes"})):
    c = config.copy_and_resolve_references()
    c.adapt.update(identity=0, train=train)
    mask = models.build(c).trainable(params)
    trained = {k for k, v in mask.items() if all(jax.tree.leaves(v))}
    assert trained == want, train

"""MCNet memory compensation and MRFA correlation refinement on tiny configurations."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from minerf_jax.motion import correlation
from minerf_jax.motion import memory
from minerf_jax.motion import params
from minerf_jax.motion import warp

# Same speed tricks as test_motion_parts.py: compile time dominates on CPU.
_jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})

K = 2                                            # TPS transforms -> K * 5 keypoints
SIZE = 32                                        # image size; base flow resolution 8
SCALES = (4, 8, 16, 32)                          # tiny generator scales, coarse to fine
CHANNELS = (32, 32, 16, 8)                       # block_expansion 8, max_features 32


def _key(seed):
  return jax.random.key(seed, impl="unsafe_rbg")


def _random(shape, seed=0, low=0.0, high=1.0):
  return jnp.asarray(np.random.default_rng(seed).uniform(low, high, shape), jnp.float32)


def _warped(seed=0):
  return [_random((2, s, s, c), seed + i, -1, 1) for i, (s, c) in enumerate(zip(SCALES, CHANNELS))]


_KP = _random((2, K * 5, 2), 11, -0.7, 0.7)


# ---------------------------------------------------------------------------------------- MCNet


def _tiny_memory():
  return memory.MemoryCompensation(memory_channels=16, memory_size=4, style_features=16,
                                   style_hidden=8)


@pytest.fixture(scope="module")
def tiny_memory():
  net = _tiny_memory()
  warped = _warped()
  v = _jit(net.init)(_key(0), warped, _KP)
  return net, v, warped


def test_memory_attention_rows_sum_to_one_and_shapes(tiny_memory):
  net, v, warped = tiny_memory
  out, aux = _jit(net.apply)(v, warped, _KP)
  assert [o.shape for o in out] == [w.shape for w in warped]
  # All but the finest scale are compensated (as in the reference).
  assert [a.shape for a in aux["attention"]] == [(2, s * s, 16) for s in SCALES[:-1]]
  for a in aux["attention"]:
    a = np.asarray(a)
    assert (a >= 0).all()
    np.testing.assert_allclose(a.sum(-1), 1.0, atol=1e-5)
  np.testing.assert_array_equal(out[-1], warped[-1])
  for o, w in zip(out[:-1], warped[:-1]):
    np.testing.assert_array_equal(o[..., 0::2], w[..., 0::2])   # even channels pass through
    assert float(jnp.abs(o[..., 1::2] - w[..., 1::2]).max()) > 1e-3
  assert [f.shape for f in aux["features"]] == [(2, s, s, 16) for s in SCALES[:-1]]
  assert all(x.shape == (2, 4, 4, 16) for x in aux["values"])
  assert all(x.shape == (2, 16) for x in aux["identity"])


def test_memory_output_depends_on_the_identity_code(tiny_memory):
  """MCNet's implicit identity: the same warped features compensated for another source's
  keypoints give another identity code and other features; the same keypoints, the same ones."""
  net, v, warped = tiny_memory
  apply = _jit(net.apply)
  out, aux = apply(v, warped, _KP)
  again, _ = apply(v, warped, _KP)
  other_kp = _random(_KP.shape, 12, -0.7, 0.7)
  other, other_aux = apply(v, warped, other_kp)
  for a, b in zip(out, again):
    np.testing.assert_array_equal(a, b)
  for ident, other_ident in zip(aux["identity"], other_aux["identity"]):
    assert float(jnp.abs(ident - other_ident).max()) > 1e-3
  for o, w in zip(out[:-1], other[:-1]):      # every compensated scale moves
    assert float(jnp.abs(o[..., 1::2] - w[..., 1::2]).mean()) > 1e-4
  np.testing.assert_array_equal(out[-1], other[-1])   # the finest scale is not compensated


def test_memory_off_is_exact_noop(tiny_memory):
  net, v, warped = tiny_memory
  out, aux = net.apply(v, warped, _KP, memory=False)
  assert aux == {}
  for o, w in zip(out, warped):
    assert o is w
  # Also under jit (same values, bit for bit).
  out = _jit(functools.partial(net.apply, memory=False))(v, warped, _KP)[0]
  for o, w in zip(out, warped):
    np.testing.assert_array_equal(o, w)


def test_memory_gradients_finite_and_nonzero(tiny_memory):
  net, v, warped = tiny_memory
  target = _warped(seed=20)

  def loss(p, feats):
    out, aux = net.apply({"params": p}, feats, _KP)
    rec = sum(jnp.abs(o - t).mean() for o, t in zip(out, target))
    return rec + memory.consistency_loss(aux["features"], aux["values"])

  g_p, g_x = _jit(jax.grad(loss, (0, 1)))(v["params"], warped)
  leaves = jax.tree_util.tree_leaves_with_path(g_p)
  for path, g in leaves:
    g = np.asarray(g)
    assert np.isfinite(g).all(), path
  nonzero = {jax.tree_util.keystr(p) for p, g in leaves if float(np.abs(g).sum()) > 0}
  # The memory bank, its identity-conditioned style path, the dynamic conv and every per-scale
  # layer all learn; the noise strength gets no gradient without a 'noise' rng (no noise drawn).
  zero = {jax.tree_util.keystr(p) for p, _ in leaves} - nonzero
  assert zero == {"['unit']['memory_style']['noise_strength']"}
  assert all(np.isfinite(np.asarray(g)).all() for g in g_x)
  assert float(jnp.abs(g_x[0]).sum()) > 0


def test_consistency_loss_value_and_gradient_routing():
  f = [_random((1, 4, 4, 3), 1), _random((1, 8, 8, 3), 2)]
  v = [_random((1, 4, 4, 3), 3), _random((1, 4, 4, 3), 4)]
  same = np.abs(np.asarray(f[0]) - np.asarray(v[0])).mean()
  # The reference (resize='feature'): the 8 x 8 feature map is resized to the 4 x 4 values.
  expected = same + np.abs(np.asarray(warp.resize_bilinear(f[1], (4, 4)))
                           - np.asarray(v[1])).mean()
  assert float(memory.consistency_loss(f, v)) == pytest.approx(expected, rel=1e-5)
  # Ours before the golden comparison (resize='value'): the values resized to the features.
  expected = same + np.abs(np.asarray(f[1])
                           - np.asarray(warp.resize_bilinear(v[1], (8, 8)))).mean()
  assert float(memory.consistency_loss(f, v, "value")) == pytest.approx(expected, rel=1e-5)
  for resize in memory.CONSISTENCY_RESIZE:
    g_f, g_v = jax.grad(memory.consistency_loss, (0, 1))(f, v, resize)
    assert all(float(jnp.abs(g).sum()) == 0 for g in g_f)         # features are detached
    assert all(float(jnp.abs(g).sum()) > 0 for g in g_v)
  with pytest.raises(ValueError, match="consistency resize 'nearest'"):
    memory.consistency_loss(f, v, "nearest")


# ----------------------------------------------------------------------------------------- MRFA


def _bilinear_zero(img, x, y):
  """Brute-force bilinear sample of a 2-D array at pixel (x, y), zero outside."""
  h, w = img.shape
  x0, y0 = int(np.floor(x)), int(np.floor(y))
  total = 0.0
  for xi, yi in ((x0, y0), (x0 + 1, y0), (x0, y0 + 1), (x0 + 1, y0 + 1)):
    wgt = (1 - abs(x - xi)) * (1 - abs(y - yi))
    if 0 <= xi < w and 0 <= yi < h:
      total += wgt * img[yi, xi]
  return total


def test_correlation_volume_pooling_and_lookup_match_brute_force():
  rng = np.random.default_rng(0)
  fd, fs = rng.normal(size=(2, 4, 6, 5)), rng.normal(size=(2, 9, 7, 5))
  corr = np.asarray(correlation.correlation_volume(jnp.asarray(fd, jnp.float32),
                                                   jnp.asarray(fs, jnp.float32)))
  np.testing.assert_allclose(corr, np.einsum("bijc,bklc->bijkl", fd, fs) / np.sqrt(5), atol=1e-5)
  by_driving = np.asarray(correlation.pool_driving(jnp.asarray(corr), 2))
  np.testing.assert_allclose(by_driving[:, 1, 2], corr[:, 2:4, 4:6].mean((1, 2)), atol=1e-6)

  levels, radius = 3, 2
  pyramid = correlation.correlation_pyramid(jnp.asarray(corr), levels)
  assert [p.shape[-2:] for p in pyramid] == [(9, 7), (4, 3), (2, 1)]
  ref_levels = [corr]
  for _ in range(levels - 1):
    c = ref_levels[-1]
    pooled = np.zeros(c.shape[:-2] + (c.shape[-2] // 2, c.shape[-1] // 2))
    for i in range(pooled.shape[-2]):
      for j in range(pooled.shape[-1]):
        pooled[..., i, j] = c[..., 2 * i:2 * i + 2, 2 * j:2 * j + 2].mean((-2, -1))
    ref_levels.append(pooled)
  for p, r in zip(pyramid, ref_levels):
    np.testing.assert_allclose(p, r, atol=1e-5)
  # Non-integer positions, some near and beyond the border.
  coords = rng.uniform(-1.5, 8.5, (2, 4, 6, 2)).astype(np.float32)
  coords[0, 0, 0] = [2.0, 3.0]                                     # an integer one too
  out = np.asarray(correlation.lookup(pyramid, jnp.asarray(coords), radius))
  n = 2 * radius + 1
  assert out.shape == (2, 4, 6, levels * n * n)
  expected = np.zeros_like(out)
  for b in range(2):
    for i in range(4):
      for j in range(6):
        x, y = coords[b, i, j]
        for lvl in range(levels):
          img = ref_levels[lvl][b, i, j]
          for a in range(n):                      # the first window axis moves x
            for c in range(n):
              expected[b, i, j, lvl * n * n + a * n + c] = _bilinear_zero(
                  img, x / 2 ** lvl + a - radius, y / 2 ** lvl + c - radius)
  np.testing.assert_allclose(out, expected, atol=1e-5)
  np.testing.assert_allclose(out[0, 0, 0, radius * n + radius], corr[0, 0, 0, 3, 2], atol=1e-6)


def _tiny_refinement(**kw):
  return correlation.CorrelationRefinement(
      dim=8, encoder_block_expansion=4, encoder_num_blocks=2, encoder_max_features=16,
      num_levels=2, radius=1, context_features=8, corr_features=(8, 8), flow_features=(8, 8),
      motion_features=8, hidden=8, **kw)


def _tiny_prior():
  ident = warp.coordinate_grid(8, 8)[None]
  deformation = ident + _random((2, 8, 8, 2), 30, -0.1, 0.1)
  masks = [_random((2, s, s, 1), 31 + i, 0.1, 0.9) for i, s in enumerate(SCALES)]
  return {"deformation": deformation, "occlusion_map": masks}


@pytest.fixture(scope="module")
def tiny_refinement():
  net = _tiny_refinement()
  src = _random((2, SIZE, SIZE, 3), 40)
  kp_d = _KP + _random(_KP.shape, 41, -0.05, 0.05)
  maps = list(reversed(_warped(seed=50)))                           # fine to coarse
  v = _jit(net.init)(_key(1), src, _KP, kp_d, maps, _tiny_prior())
  return net, v, (src, _KP, kp_d, maps, _tiny_prior())


def test_refine_steps_zero_returns_prior(tiny_refinement):
  _, v, inputs = tiny_refinement
  prior = inputs[-1]
  out = _tiny_refinement(refine_steps=0).apply(v, *inputs)
  for flow, s in zip(out["flows"], SCALES):
    np.testing.assert_array_equal(flow, warp.resize_flow(prior["deformation"], (s, s)))
  np.testing.assert_array_equal(out["flows"][1], prior["deformation"])
  for m, p in zip(out["occlusion_map"], prior["occlusion_map"]):
    assert m is p
  maps = inputs[3]
  for wf, f, m in zip(out["warped_features"], reversed(maps), prior["occlusion_map"]):
    np.testing.assert_allclose(wf, warp.warp(f, prior["deformation"]) * m, atol=1e-6)


def test_refinement_shapes_and_partial_steps(tiny_refinement):
  net, v, inputs = tiny_refinement
  out = _jit(net.apply)(v, *inputs)
  assert out["correlation"].shape == (2, 8, 8, 8, 8)
  assert [f.shape for f in out["flows"]] == [(2, s, s, 2) for s in SCALES]
  assert [m.shape for m in out["occlusion_map"]] == [(2, s, s, 1) for s in SCALES]
  assert [f.shape for f in out["warped_features"]] == [(2, s, s, c)
                                                       for s, c in zip(SCALES, CHANNELS)]
  assert out["deformation"].shape == (2, SIZE, SIZE, 2)
  masks = np.concatenate([np.asarray(m).ravel() for m in out["occlusion_map"]])
  assert ((masks > 0) & (masks < 1)).all()
  for flow, prior in zip(out["flows"], out["prior_flows"]):
    assert float(jnp.abs(flow - prior).max()) > 0                  # every scale refined
  # One step: the coarsest scale is refined, finer ones carry its upsampled increment.
  one = _jit(_tiny_refinement(refine_steps=1).apply)(v, *inputs)
  np.testing.assert_allclose(one["flows"][0], out["flows"][0], atol=1e-6)
  inc = one["flows"][0] - one["prior_flows"][0]
  np.testing.assert_allclose(one["flows"][1] - one["prior_flows"][1],
                             warp.resize_bilinear(inc, (8, 8)), atol=1e-5)


def test_refinement_gradients_finite_and_nonzero(tiny_refinement):
  net, v, inputs = tiny_refinement
  src, kp_s, kp_d, maps, prior = inputs
  target = _warped(seed=60)

  def loss(p, prior):
    out = net.apply({"params": p}, src, kp_s, kp_d, maps, prior)
    return sum(jnp.abs(w - t).mean() for w, t in zip(out["warped_features"], target))

  g_p, g_prior = _jit(jax.grad(loss, (0, 1)))(v["params"], prior)
  for path, g in jax.tree_util.tree_leaves_with_path(g_p):
    g = np.asarray(g)
    assert np.isfinite(g).all(), path
    assert float(np.abs(g).sum()) > 0, path
  assert np.isfinite(np.asarray(g_prior["deformation"])).all()
  assert float(jnp.abs(g_prior["deformation"]).sum()) > 0


def test_trained_refinement_lowers_the_flow_error_of_a_known_motion(tiny_refinement):
  """The driving frame is the source translated by a known shift and the prior flow is the
  identity (no motion). Trained 100 steps on the photometric error of the refined warp (never
  the true flow), the refinement removes most of the flow error: the update operator, its
  correlation lookups and the coarse-to-fine increments route a correction into the flow.
  Measured, not asserted: trained on random shifts instead, this tiny refinement (8 channels,
  radius 1) does not bring a held-out shift's error down in 400 steps (0.090 -> 0.090)."""
  import optax  # pylint: disable=g-import-not-at-top
  net, v, (_, kp_s, _, maps, prior) = tiny_refinement
  coarse = np.random.default_rng(70).uniform(0, 1, (2, 2, 6, 6, 3)).astype(np.float32)
  images = jnp.asarray(np.stack([np.asarray(warp.resize_bilinear(jnp.asarray(c), (SIZE, SIZE)))
                                 for c in coarse]))                      # [2, B, S, S, 3] smooth
  ident = warp.coordinate_grid(SIZE, SIZE)[None]

  def example(shift, source):
    truth = ident + shift[:, None, None, :]              # driving -> source sampling grid
    driving = warp.grid_sample(source, truth, padding_mode="border")
    feats = [jnp.tile(warp.resize_bilinear(source, m.shape[1:3]),
                      (1, 1, 1, -(-m.shape[-1] // 3)))[..., :m.shape[-1]]
             for m in maps]
    motion = {"deformation": jnp.broadcast_to(warp.coordinate_grid(8, 8)[None], (2, 8, 8, 2)),
              "occlusion_map": [jnp.ones_like(m) for m in prior["occlusion_map"]]}
    # Keypoints move with the content: a driving keypoint p shows the source point p + shift.
    return source, kp_s, kp_s - shift[:, None, :], feats, motion, driving, truth

  def flow_error(p, shift, source):
    src, ks, kd, feats, motion, _, truth = example(shift, source)
    flow = net.apply({"params": p}, src, ks, kd, feats, motion)["deformation"]
    return jnp.abs(flow - truth)[:, 4:-4, 4:-4].mean()   # away from the border

  def loss(p, shift, source):
    src, ks, kd, feats, motion, driving, _ = example(shift, source)
    flow = net.apply({"params": p}, src, ks, kd, feats, motion)["deformation"]
    return jnp.abs(warp.grid_sample(src, flow, padding_mode="border") - driving).mean()

  tx = optax.adam(1e-3)
  shift = jnp.asarray([[0.1, -0.08], [-0.06, 0.12]])     # 1.6 and 1.9 px at 32 px

  @_jit
  def train(p, opt):
    g = jax.grad(loss)(p, shift, images[0])
    updates, opt = tx.update(g, opt, p)
    return optax.apply_updates(p, updates), opt

  p, opt = v["params"], tx.init(v["params"])
  before = float(_jit(flow_error)(p, shift, images[0]))
  for _ in range(100):
    p, opt = train(p, opt)
  after = float(_jit(flow_error)(p, shift, images[0]))
  assert before > 0.05 and after < 0.2 * before, (before, after)   # 0.090 -> 0.002 measured


# ----------------------------------------------------------------------------------------- sizes


def test_full_size_parameter_counts():
  # Counted independently from the reference layer definitions (PyTorch, vox 256).
  mcnet = params.mcnet_parameter_counts()
  # ExpendMemoryUnit: memory 512x32x32, per-scale 1x1 projections (256/128/64 -> 512), query and
  # difference 1x1 convs, dynamic 3x3 conv (4 kernels, 512 -> 1024, attention 512->129->4),
  # per-scale 3x3 output convs + norms, style route (512 + 2N -> 128 -> 512), StyleConv.
  style_route = lambda n_kp: (512 + 2 * n_kp) * 128 + 128 + 128 * 512 + 512
  fixed = (524_288 + 131_584 + 66_048 + 33_280 + 262_656 + 18_945_032 + 262_656
           + 1_180_416 + 590_208 + 295_104 + 262_656 + 2_359_296 + 1 + 512)
  assert mcnet["memory_bank"] == 512 * 32 * 32
  assert mcnet["dynamic_kv"] == 18_945_032
  assert mcnet["memory"] == fixed + style_route(50)                # TPSMM: 50 keypoints
  assert mcnet["total"] == 85_095_490 + mcnet["memory"]
  mrfa = params.mrfa_parameter_counts()
  assert mrfa["structure_encoders"] == 18_892_416                  # 2 hourglasses + heads + pos
  # Shared operator (1,206,241) + context 1x1 projections of the 4 TPSMM scales to 192.
  assert mrfa["update_operator"] == 1_206_241 + (512 + 256 + 128 + 64 + 4) * 192
  assert mrfa["total"] == 85_095_490 + mrfa["correlation"]


def test_published_mcnet_parts_have_the_references_parameter_counts():
  """FOMM detector, dense motion, BatchNorm generator and memory at MCNet's vox-256 sizes:
  each part has exactly the parameters the authors' code builds (counted with it)."""
  ours = params.mcnet_published_parameter_counts()
  assert {k: v for k, v in ours.items() if k != "total"} == params.MCNET_REFERENCE_PARTS
  assert ours["total"] == 101_841_273
  # configs/mcnet.py's default builds exactly that model (and its :tpsmm variant is ours).
  from configs import mcnet as mcnet_config  # pylint: disable=g-import-not-at-top
  from minerf_jax import models  # pylint: disable=g-import-not-at-top
  for variant, total in (("", 101_841_273), ("tpsmm", params.mcnet_parameter_counts()["total"])):
    model = models.build(mcnet_config.get_config(variant))
    image = np.zeros((2, 256, 256, 3), np.float32)
    shapes = jax.eval_shape(lambda m=model: m.init_variables(
        jax.random.key(0), {"source": image, "driving": image}))
    assert params.count(shapes["params"]) == total, variant



def test_published_mrfa_has_the_references_parameter_counts():
  """configs/mrfa.py's default (MTIA detector, FOMM dense motion, RaftFlow) at 256x256: each part
  has exactly the trainable parameters of the authors' encoder, dense_motion and decoder
  (counted with their code; their encoder also stores the fixed sine embedding, which ours
  computes)."""
  from configs import mrfa as mrfa_config  # pylint: disable=g-import-not-at-top
  from minerf_jax import models  # pylint: disable=g-import-not-at-top
  model = models.build(mrfa_config.get_config())
  image = np.zeros((2, 256, 256, 3), np.float32)
  shapes = jax.eval_shape(lambda: model.init_variables(
      jax.random.key(0), {"source": image, "driving": image}))
  counts = {k: params.count(v) for k, v in shapes["params"].items()}
  assert counts == params.MRFA_REFERENCE_PARTS
  assert sum(counts.values()) == 114_339_206 - 49_152

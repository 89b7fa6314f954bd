"""TPSMM motion parts: grid sampling, TPS/affine transforms, networks, transfer, sizes."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial import ConvexHull

from minerf_jax.motion import dense_motion
from minerf_jax.motion import generator
from minerf_jax.motion import keypoints
from minerf_jax.motion import params
from minerf_jax.motion import tps
from minerf_jax.motion import transfer
from minerf_jax.motion import warp

K = 2          # transforms in the tiny networks
SIZE = 64      # image size of the tiny networks


# Compile time dominates these tests on CPU; XLA's backend optimisations roughly double it.
_jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})


def _key(seed):
  """Parameter-init key: XLA:CPU compiles threefry (the default) several times slower than rbg,
  and init compile time dominates these tests."""
  return jax.random.key(seed, impl="unsafe_rbg")


def _random(shape, seed=0, low=0.0, high=1.0):
  return jnp.asarray(np.random.default_rng(seed).uniform(low, high, shape), jnp.float32)


def _tiny_dense_motion(**kw):
  # 64 px * 0.25 = 16 px working resolution, 3 hourglass levels -> outputs at 2, 4, 8, 16 px;
  # masks from the last two plus two upsampling blocks: 8, 16, 32, 64 px.
  return dense_motion.DenseMotionNetwork(num_tps=K, block_expansion=8, num_blocks=3,
                                         max_features=32, **kw)


def _tiny_generator():
  return generator.InpaintingGenerator(block_expansion=8, max_features=32, num_down_blocks=3)


# ------------------------------------------------------------------------------ grids and sampling


def test_coordinate_grid_corners_and_order():
  g = np.asarray(warp.coordinate_grid(3, 5))
  assert g.shape == (3, 5, 2)
  np.testing.assert_allclose(g[0, 0], [-1, -1])
  np.testing.assert_allclose(g[0, -1], [1, -1])          # x runs along the width
  np.testing.assert_allclose(g[-1, 0], [-1, 1])
  np.testing.assert_allclose(g[1, :, 0], [-1, -0.5, 0, 0.5, 1])
  np.testing.assert_allclose(g[:, 2, 1], [-1, 0, 1])


def test_grid_sample_identity_returns_input():
  img = _random((2, 7, 9, 3))
  grid = jnp.broadcast_to(warp.coordinate_grid(7, 9)[None], (2, 7, 9, 2))
  np.testing.assert_allclose(warp.grid_sample(img, grid), img, atol=1e-5)
  np.testing.assert_allclose(warp.warp(img, grid[:, ::2, ::2]), img, atol=1e-5)   # resized flow


def _pixel_to_norm(px, py, h, w):
  return [2 * px / (w - 1) - 1, 2 * py / (h - 1) - 1]


def test_grid_sample_hand_computed_bilinear_and_zero_padding():
  img = jnp.asarray([[0.0, 10.0], [20.0, 70.0]])[None, :, :, None]
  pts = [(0.25, 0.5),     # 0.375*0 + 0.125*10 + 0.375*20 + 0.125*70 = 17.5
         (1.0, 0.0),      # a pixel centre
         (1.5, 1.0),      # half a pixel right of the last column: half the border value
         (3.0, 0.0)]      # far outside
  grid = jnp.asarray([[_pixel_to_norm(px, py, 2, 2) for px, py in pts]])[:, None]
  out = np.asarray(warp.grid_sample(img, grid))[0, 0, :, 0]
  np.testing.assert_allclose(out, [17.5, 10.0, 35.0, 0.0], atol=1e-5)
  # A linear image is reproduced exactly inside the image, and the gradient with respect to the
  # normalised grid is the image slope times (size - 1) / 2.
  h, w = 4, 6
  ramp = (jnp.arange(w)[None, :] + 3.0 * jnp.arange(h)[:, None])[None, :, :, None]
  pts = jnp.asarray([[[[-0.3, 0.1], [0.77, -0.6]]]])
  f = lambda g: warp.grid_sample(ramp, g).sum()
  px = (pts[..., 0] + 1) / 2 * (w - 1)
  py = (pts[..., 1] + 1) / 2 * (h - 1)
  np.testing.assert_allclose(warp.grid_sample(ramp, pts)[..., 0], px + 3 * py, atol=1e-5)
  grad = np.asarray(jax.grad(f)(pts))
  np.testing.assert_allclose(grad[..., 0], (w - 1) / 2, rtol=1e-5)
  np.testing.assert_allclose(grad[..., 1], 3 * (h - 1) / 2, rtol=1e-5)


def test_grid_sample_half_pixel_shift():
  h, w = 5, 8
  img = _random((1, h, w, 2), seed=1)
  grid = warp.coordinate_grid(h, w).at[..., 0].add(1.0 / (w - 1))[None]     # +0.5 pixel in x
  out = np.asarray(warp.grid_sample(img, grid))
  ref = np.asarray(img)
  np.testing.assert_allclose(out[:, :, :-1], 0.5 * (ref[:, :, :-1] + ref[:, :, 1:]), atol=1e-6)
  np.testing.assert_allclose(out[:, :, -1], 0.5 * ref[:, :, -1], atol=1e-6)   # zero padding


def test_grid_sample_border_and_reflection_padding():
  img = jnp.asarray([[0.0, 1.0, 4.0, 9.0]])[None, :, :, None]         # 1 x 4
  xs = [-1.0, 4.5, 3.5, 6.0]                                         # pixel x coordinates
  grid = jnp.asarray([[[[2 * x / 3 - 1, 0.0] for x in xs]]])
  border = np.asarray(warp.grid_sample(img, grid, padding_mode="border"))[0, 0, :, 0]
  np.testing.assert_allclose(border, [0, 9, 9, 9], atol=1e-5)
  # Reflection about the border pixel centres: -1 -> 1, 4.5 -> 1.5, 3.5 -> 2.5, 6 -> 0.
  refl = np.asarray(warp.grid_sample(img, grid, padding_mode="reflection"))[0, 0, :, 0]
  np.testing.assert_allclose(refl, [1.0, 2.5, 6.5, 0.0], atol=1e-5)


def test_resize_keeps_corner_aligned_grids_and_composes_affines():
  g = warp.coordinate_grid(4, 5)[None]
  np.testing.assert_allclose(warp.resize_bilinear(g, (7, 9))[0], warp.coordinate_grid(7, 9),
                             atol=1e-6)
  theta_a = jnp.asarray([[[0.9, 0.1, 0.05], [-0.1, 1.1, -0.02]]])
  theta_b = jnp.asarray([[[1.05, 0.0, -0.03], [0.02, 0.95, 0.04]]])
  outer, inner = tps.affine_grid(theta_a, 9, 9), tps.affine_grid(theta_b, 9, 9)
  ab = np.asarray(tps.affine_points(theta_a, tps.affine_points(theta_b, warp.coordinate_grid(
      9, 9).reshape(-1, 2)))).reshape(1, 9, 9, 2)
  composed = np.asarray(warp.compose_flows(outer, inner))
  inside = (np.abs(np.asarray(inner)) <= 1).all(-1)          # exact where inner stays inside
  assert inside.mean() > 0.7
  np.testing.assert_allclose(composed[inside], ab[inside], atol=1e-5)
  # Identity inner grid: outer itself.
  np.testing.assert_allclose(warp.compose_flows(outer, warp.coordinate_grid(9, 9)[None]), outer,
                             atol=1e-5)


# ------------------------------------------------------------------------------------ transforms


def test_tps_maps_driving_control_points_onto_source_ones():
  rng = np.random.default_rng(0)
  kp_drv = jnp.asarray(rng.uniform(-0.8, 0.8, (3, 4, 5, 2)), jnp.float32)
  kp_src = kp_drv + jnp.asarray(rng.normal(0, 0.1, (3, 4, 5, 2)), jnp.float32)
  exact = tps.fit_tps(kp_drv, kp_src, regularization=0.0)
  np.testing.assert_allclose(tps.warp_points(exact, kp_drv), kp_src, atol=1e-4)
  # The reference's ridge (0.01) gives an approximating spline: close, not exact.
  ridge = tps.warp_points(tps.fit_tps(kp_drv, kp_src), kp_drv)
  err = np.abs(np.asarray(ridge - kp_src)).max()
  assert 1e-4 < err < 0.2
  # On a grid the spline agrees with warp_points at the same coordinates.
  grid = tps.warp_grid(exact, 6, 7)
  assert grid.shape == (3, 4, 6, 7, 2)
  np.testing.assert_allclose(grid.reshape(3, 4, -1, 2),
                             tps.warp_points(exact, warp.coordinate_grid(6, 7).reshape(-1, 2)),
                             atol=1e-6)


def test_tps_of_affinely_related_points_is_that_affine_everywhere():
  rng = np.random.default_rng(1)
  kp = jnp.asarray(rng.uniform(-0.8, 0.8, (2, 5, 2)), jnp.float32)
  theta = jnp.asarray([[1.1, 0.2, 0.1], [-0.15, 0.9, -0.05]], jnp.float32)
  fitted = tps.fit_tps(kp, tps.affine_points(theta, kp), regularization=0.0)
  np.testing.assert_allclose(fitted.weights, 0.0, atol=1e-4)
  np.testing.assert_allclose(fitted.affine, np.broadcast_to(theta, (2, 2, 3)), atol=1e-4)
  pts = _random((2, 11, 2), seed=3, low=-1, high=1)
  np.testing.assert_allclose(tps.warp_points(fitted, pts), tps.affine_points(theta, pts),
                             atol=1e-4)


def test_identity_affine_background_and_random_transforms():
  ident = warp.coordinate_grid(5, 6)
  np.testing.assert_allclose(tps.affine_grid(tps.identity_affine((2,)), 5, 6),
                             np.broadcast_to(ident, (2, 5, 6, 2)), atol=1e-7)
  np.testing.assert_allclose(tps.background_grid(None, 5, 6, batch=2),
                             np.broadcast_to(ident, (2, 5, 6, 2)))
  np.testing.assert_allclose(tps.background_grid(jnp.eye(3)[None], 5, 6)[0], ident, atol=1e-7)
  shift = jnp.asarray([[[1.0, 0, 0.2], [0, 1.0, -0.1], [0, 0, 1.0]]])
  np.testing.assert_allclose(tps.background_grid(shift, 5, 6)[0], ident + jnp.asarray([0.2, -0.1]),
                             atol=1e-6)
  still = tps.random_tps(jax.random.key(0), 3, sigma_affine=0.0, sigma_tps=0.0)
  np.testing.assert_allclose(tps.warp_grid(still, 5, 6), np.broadcast_to(ident, (3, 5, 6, 2)),
                             atol=1e-6)
  moved = tps.random_tps(jax.random.key(0), 3)
  # One weight per control point, shared by x and y (as in the reference).
  assert moved.weights.shape == (3, 25, 1)
  assert float(jnp.abs(tps.warp_grid(moved, 5, 6) - ident).max()) > 1e-3


def test_keypoint_gaussians_and_antialias_downsample():
  kp = jnp.asarray([[[0.0, 0.0]]])
  g = np.asarray(dense_motion.keypoint_gaussians(kp, 5, 5, kp_variance=0.01))[0, :, :, 0]
  assert g[2, 2] == pytest.approx(1.0)
  assert g[2, 3] == pytest.approx(np.exp(-0.5 * 0.25 / 0.01), rel=1e-5)     # one step = 0.5
  const = jnp.full((1, 64, 64, 3), 0.7)
  down = np.asarray(dense_motion.antialias_downsample(const, 0.25))
  assert down.shape == (1, 16, 16, 3)
  # The normalised 13x13 Gaussian keeps a constant away from the zero-padded border.
  np.testing.assert_allclose(down[:, 2:-1, 2:-1], 0.7, atol=1e-5)
  assert dense_motion.antialias_downsample(const, 1.0) is const


# -------------------------------------------------------------------------------------- networks


def test_keypoint_detector_and_background_predictor_tiny():
  src, drv = _random((2, SIZE, SIZE, 3), 0), _random((2, SIZE, SIZE, 3), 1)
  det = keypoints.KeypointDetector(num_tps=K, width=0.125)
  bg = keypoints.BackgroundMotionPredictor(width=0.125)

  @_jit
  def run(src, drv):                     # one compilation for everything
    v = det.init(_key(0), src)
    _, updated = det.apply(v, src, train=True, mutable=["batch_stats"])
    return (det.apply(v, src), v["batch_stats"], updated["batch_stats"],
            bg.apply(bg.init(_key(1), src, drv), src, drv))

  kp, stats, updated, affine = run(src, drv)
  assert kp.shape == (2, K * 5, 2)
  assert (np.abs(np.asarray(kp)) < 1).all()
  assert keypoints.split_tps(kp).shape == (2, K, 5, 2)
  # Training mode moves the BatchNorm running statistics.
  moved = jax.tree_util.tree_map(lambda a, b: float(jnp.abs(a - b).max()), stats, updated)
  assert max(jax.tree_util.tree_leaves(moved)) > 0
  np.testing.assert_allclose(affine, np.broadcast_to(np.eye(3), (2, 3, 3)))   # identity at init


_EYE = jnp.broadcast_to(jnp.eye(3), (2, 3, 3))


@pytest.fixture(scope="module")
def tiny_motion():
  net = _tiny_dense_motion()
  src = _random((2, SIZE, SIZE, 3), 0)
  kp_s = _random((2, K * 5, 2), 1, -0.7, 0.7)
  kp_d = kp_s + _random((2, K * 5, 2), 2, -0.1, 0.1)
  v = _jit(net.init)(_key(0), src, kp_s, kp_d, _EYE)
  apply = _jit(net.apply, static_argnames="dropout")
  return net, apply, v, src, kp_s, kp_d


def test_dense_motion_shapes_and_normalisation(tiny_motion):
  _, apply, v, src, kp_s, kp_d = tiny_motion
  bg = jnp.asarray([[[1.0, 0, 0.05], [0, 1.0, 0], [0, 0, 1]]] * 2)
  out = apply(v, src, kp_s, kp_d, bg)
  assert out["deformation"].shape == (2, 16, 16, 2)
  assert out["contribution_maps"].shape == (2, 16, 16, K + 1)
  assert out["deformed_source"].shape == (2, K + 1, 16, 16, 3)
  assert [m.shape for m in out["occlusion_map"]] == [(2, s, s, 1) for s in (8, 16, 32, 64)]
  np.testing.assert_allclose(out["contribution_maps"].sum(-1), 1.0, atol=1e-5)
  m = np.concatenate([np.asarray(x).ravel() for x in out["occlusion_map"]])
  assert ((m > 0) & (m < 1)).all()
  # The flow is the contribution-weighted mix of the K+1 grids; grid 0 is the background affine.
  np.testing.assert_allclose(out["transformations"][:, 0],
                             tps.background_grid(bg, 16, 16), atol=1e-6)
  mix = np.einsum("bhwt,bthwd->bhwd", out["contribution_maps"], out["transformations"])
  np.testing.assert_allclose(out["deformation"], mix, atol=1e-5)


def test_dense_motion_identical_keypoints_give_identity_flow(tiny_motion):
  _, apply, v, src, kp_s, _ = tiny_motion
  ident = np.broadcast_to(warp.coordinate_grid(16, 16), (2, 16, 16, 2))
  # With the reference's ridge the flow is close to, not exactly, the identity.
  out = apply(v, src, kp_s, kp_s, _EYE)
  assert np.abs(np.asarray(out["deformation"]) - ident).max() < 0.05
  # Without it every TPS of identical keypoints is the identity, so any convex mix is.
  out = _jit(_tiny_dense_motion(tps_regularization=0.0).apply)(v, src, kp_s, kp_s, _EYE)
  np.testing.assert_allclose(out["deformation"], ident, atol=1e-4)
  small = dense_motion.antialias_downsample(src, 0.25)
  for t in range(K + 1):
    np.testing.assert_allclose(out["deformed_source"][:, t], small, atol=1e-4)


def test_transform_dropout(tiny_motion):
  logits = _random((3, 4, 4, K + 1), 5, -2, 2)
  keep_all = dense_motion.dropout_softmax(logits, jax.random.key(0), 0.0)
  np.testing.assert_allclose(keep_all, jax.nn.softmax(logits, -1), atol=1e-5)
  drop_all = np.asarray(dense_motion.dropout_softmax(logits, jax.random.key(0), 1.0))
  np.testing.assert_allclose(drop_all[..., 0], 1.0, atol=1e-4)               # background kept
  np.testing.assert_allclose(drop_all[..., 1:], 0.0)
  some = np.asarray(dense_motion.dropout_softmax(_random((64, 1, 1, 11), 6), jax.random.key(2),
                                                 0.5))
  dropped = (some[..., 1:] == 0).mean()
  assert 0.35 < dropped < 0.65 and (some[..., 0] > 0).all()
  _, apply, v, src, kp_s, kp_d = tiny_motion
  out = apply(v, src, kp_s, kp_d, _EYE, dropout=True, dropout_p=jnp.float32(1.0),
              rngs={"dropout": jax.random.key(1)})
  np.testing.assert_allclose(out["contribution_maps"][..., 0], 1.0, atol=1e-3)


def _identity_motion():
  return {"deformation": jnp.broadcast_to(warp.coordinate_grid(16, 16)[None], (2, 16, 16, 2)),
          "occlusion_map": [jnp.ones((2, s, s, 1)) for s in (8, 16, 32, 64)]}


@pytest.fixture(scope="module")
def tiny_generator():
  gen = _tiny_generator()
  return gen, _jit(gen.init)(_key(1), _random((2, SIZE, SIZE, 3), 0), _identity_motion())


def test_generator_identity_motion_with_open_masks_returns_source(tiny_generator):
  gen, v = tiny_generator
  src = _random((2, SIZE, SIZE, 3), 0)
  out = _jit(gen.apply)(v, src, _identity_motion())
  np.testing.assert_allclose(out["prediction"], src, atol=1e-5)             # all visible
  assert [f.shape for f in out["warped_features"]] == [
      (2, 8, 8, 32), (2, 16, 16, 32), (2, 32, 32, 16), (2, 64, 64, 8)]
  for warped, enc in zip(out["warped_features"], reversed(out["encoder_maps"])):
    np.testing.assert_allclose(warped, enc, atol=1e-4)


def test_full_pipeline_gradients(tiny_motion, tiny_generator):
  net, _, v_dm, src, kp_s, kp_d = tiny_motion
  gen, v_gen = tiny_generator
  drv = _random((2, SIZE, SIZE, 3), 7)

  def forward(p_dm, p_gen):
    motion = net.apply({"params": p_dm}, src, kp_s, kp_d, _EYE)
    return motion, gen.apply({"params": p_gen}, src, motion)

  def reconstruction(p_dm, p_gen):
    return jnp.abs(forward(p_dm, p_gen)[1]["prediction"] - drv).mean()

  def warp_loss(p_dm, p_gen):
    motion, out = forward(p_dm, p_gen)
    target = gen.apply({"params": p_gen}, drv, motion["occlusion_map"],
                       method=generator.InpaintingGenerator.masked_driving_features)
    return sum(jnp.abs(a - b).mean() for a, b in zip(target, out["warped_encoder_maps"]))

  @_jit
  def grads(p_dm, p_gen):                # both losses in one compilation
    return (jax.grad(reconstruction, (0, 1))(p_dm, p_gen),
            jax.grad(warp_loss, (0, 1))(p_dm, p_gen))

  (g_dm, g_gen), (w_dm, w_gen) = grads(v_dm["params"], v_gen["params"])
  for g in (g_dm, g_gen, w_dm):
    leaves = [np.asarray(x) for x in jax.tree_util.tree_leaves(g)]
    assert all(np.isfinite(x).all() for x in leaves)
    assert sum(float(np.abs(x).sum()) for x in leaves) > 0
  assert float(jnp.abs(g_gen["final"]["kernel"]).sum()) > 0
  assert float(jnp.abs(g_gen["first"]["conv"]["kernel"]).sum()) > 0
  assert float(jnp.abs(g_dm["maps"]["kernel"]).sum()) > 0
  # The warp loss trains only the dense motion (through the flow), as in the reference.
  assert all(float(jnp.abs(x).sum()) == 0 for x in jax.tree_util.tree_leaves(w_gen))
  assert float(jnp.abs(w_dm["maps"]["kernel"]).sum()) > 0


# -------------------------------------------------------------------------------------- transfer


def test_convex_hull_area_matches_scipy_and_degenerate_cases():
  pts = np.random.default_rng(0).uniform(-1, 1, (4, 50, 2)).astype(np.float32)
  areas = np.asarray(jax.jit(transfer.convex_hull_area)(jnp.asarray(pts)))
  np.testing.assert_allclose(areas, [ConvexHull(p).volume for p in pts], rtol=1e-5)
  # A square with collinear edge points, interior points and duplicates: area 4.
  square = [[-1, -1], [1, -1], [1, 1], [-1, 1], [0, -1], [1, 0], [0.2, 0.3], [-1, -1], [1, 1]]
  assert float(transfer.convex_hull_area(jnp.asarray(square, jnp.float32))) == pytest.approx(4.0)
  line = jnp.asarray([[0.0, 0.0], [1.0, 1.0], [0.5, 0.5]])
  assert float(transfer.convex_hull_area(line)) == pytest.approx(0.0, abs=1e-7)


def test_relative_keypoint_transfer():
  rng = np.random.default_rng(1)
  kp_src = jnp.asarray(rng.uniform(-0.5, 0.5, (1, 10, 2)), jnp.float32)
  kp_init = jnp.asarray(rng.uniform(-0.5, 0.5, (1, 10, 2)), jnp.float32)
  np.testing.assert_allclose(transfer.transfer_keypoints(kp_src, kp_init, kp_init), kp_src)
  move = jnp.asarray(rng.normal(0, 0.05, (1, 10, 2)), jnp.float32)
  # A source face twice the size of the driving one moves twice as far.
  out = transfer.relative_keypoints(2 * kp_init, kp_init + move, kp_init)
  np.testing.assert_allclose(out, 2 * kp_init + 2 * move, atol=1e-5)
  out = transfer.relative_keypoints(2 * kp_init, kp_init + move, kp_init, adapt_scale=False)
  np.testing.assert_allclose(out, 2 * kp_init + move, atol=1e-6)
  np.testing.assert_allclose(
      transfer.transfer_keypoints(kp_src, kp_init + move, kp_init, mode="standard"),
      kp_init + move)
  with pytest.raises(ValueError):
    transfer.transfer_keypoints(kp_src, kp_init, kp_init, mode="avd")


def test_relative_motion_moves_fomm_jacobians_relatively():
  """FOMM / MCNet keypoints (value + Jacobian): the values move as relative_keypoints; the
  Jacobians by the driving Jacobians' change from the initial frame, J_d J_0^-1 J_s; from the
  initial frame itself the source keypoints come back unchanged."""
  rng = np.random.default_rng(2)
  kp = lambda: {"value": jnp.asarray(rng.uniform(-0.5, 0.5, (2, 5, 2)), jnp.float32),
                "jacobian": jnp.asarray(np.eye(2) + rng.normal(0, 0.2, (2, 5, 2, 2)),
                                        jnp.float32)}
  source, driving, initial = kp(), kp(), kp()
  same = transfer.relative_motion(source, initial, initial)
  np.testing.assert_allclose(same["value"], source["value"], atol=1e-6)
  np.testing.assert_allclose(same["jacobian"], source["jacobian"], atol=1e-5)
  out = transfer.relative_motion(source, driving, initial)
  np.testing.assert_allclose(out["value"], transfer.relative_keypoints(
      source["value"], driving["value"], initial["value"]), atol=1e-6)
  change = np.asarray(driving["jacobian"]) @ np.linalg.inv(np.asarray(initial["jacobian"]))
  np.testing.assert_allclose(out["jacobian"], change @ np.asarray(source["jacobian"]), atol=1e-5)
  # Plain keypoints pass through to relative_keypoints.
  np.testing.assert_allclose(transfer.relative_motion(source["value"], driving["value"],
                                                      initial["value"]), out["value"])


def test_tps_jacobian_is_the_derivative_of_the_warp():
  """tps.jacobian_at (FOMM's Transform.jacobian) against central differences, both kernels."""
  transform = tps.random_tps(jax.random.key(3), 2, sigma_affine=0.1, sigma_tps=0.05)
  points = jax.random.uniform(jax.random.key(4), (2, 6, 2), minval=-0.9, maxval=0.9)
  eps = 1e-3
  for kernel in tps.KERNELS:
    jac = np.asarray(tps.jacobian_at(transform, points, kernel))
    for axis in range(2):
      step = jnp.zeros(2).at[axis].set(eps)
      diff = (tps.warp_points(transform, points + step, kernel)
              - tps.warp_points(transform, points - step, kernel)) / (2 * eps)
      np.testing.assert_allclose(jac[..., :, axis], np.asarray(diff), atol=2e-3)
    assert np.abs(jac - np.eye(2)).max() > 0.05   # not the identity


# ----------------------------------------------------------------------------------------- sizes


def test_full_size_parameter_counts_match_reference():
  counts = params.full_size_parameter_counts()
  # Counted independently from the reference's layer definitions (PyTorch modules at vox-256).
  assert counts["keypoint_detector"] == 11_176_512 + 512 * 100 + 100      # resnet18 trunk + fc
  assert counts["bg_predictor"] == 11_176_512 + 3 * 64 * 49 + 512 * 6 + 6   # 6-channel stem
  assert counts["dense_motion"] == 37_941_397
  assert counts["generator"] == 24_737_283
  assert counts["total"] == pytest.approx(85.1e6, rel=0.001)              # paper: 85.1 M

"""Radiance-field parts: rendering maths, sampling, encodings, fusion, field."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from minerf_jax.nerf import encoding
from minerf_jax.nerf import field
from minerf_jax.nerf import fusion
from minerf_jax.nerf import render


def test_weights_in_unit_interval_and_sum_at_most_one():
  rng = np.random.default_rng(0)
  sigma = jnp.asarray(rng.exponential(3.0, (64, 32)), jnp.float32)
  t = jnp.sort(jnp.asarray(rng.uniform(1, 3, (64, 32)), jnp.float32), -1)
  out = render.composite(sigma, jnp.ones((64, 32, 3)) * 0.5, t, jnp.full((64,), 3.0))
  w = np.asarray(out["weights"])
  assert (w >= 0).all() and (w <= 1).all()
  assert (w.sum(-1) <= 1 + 1e-6).all()
  np.testing.assert_allclose(out["acc"], w.sum(-1), rtol=1e-6)


@pytest.mark.parametrize("sigma", [0.1, 1.0, 5.0])
def test_constant_density_gives_analytic_opacity(sigma):
  near, far, n = 1.0, 2.5, 256
  t = render.stratified_samples(None, jnp.asarray([near]), jnp.asarray([far]), n, False)
  # Stratified midpoints start half a bin after near: integrate from t_0 to far.
  length = far - float(t[0, 0])
  out = render.composite(jnp.full((1, n), sigma), jnp.zeros((1, n, 3)), t, jnp.asarray([far]))
  np.testing.assert_allclose(out["acc"][0], 1 - np.exp(-sigma * length), rtol=2e-4)  # float32


def test_step_density_expected_depth():
  # Opaque slab starting at s: depth is s (up to one bin) and opacity 1.
  t = jnp.linspace(0.0, 4.0, 401)[None, :-1]
  sigma = jnp.where(t >= 2.0, 1e4, 0.0)
  out = render.composite(sigma, jnp.ones((1, 400, 3)), t, jnp.asarray([4.0]))
  assert out["acc"][0] == pytest.approx(1.0, abs=1e-6)
  assert out["depth"][0] == pytest.approx(2.0, abs=0.011)


def test_ray_box_intersect_hand_computed():
  o = jnp.asarray([[0.0, 0.0, -5.0], [0.0, 3.0, -5.0], [0.0, 0.0, 0.0]])
  d = jnp.asarray([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
  near, far, hit = render.ray_box_intersect(o, d, jnp.asarray([-1.0] * 3), jnp.asarray([1.0] * 3))
  np.testing.assert_allclose(near[0], 4.0)
  np.testing.assert_allclose(far[0], 6.0)
  assert not bool(hit[1])
  np.testing.assert_allclose([near[2], far[2]], [0.0, 1.0])  # origin inside: near clamped
  assert bool(hit[0]) and bool(hit[2])


def test_missed_rays_return_background_exactly():
  o = jnp.asarray([[0.0, 5.0, -5.0]])
  d = jnp.asarray([[0.0, 0.0, 1.0]])
  near, far, hit = render.ray_box_intersect(o, d, -jnp.ones(3), jnp.ones(3))
  dense = lambda p, dirs: (jnp.full(p.shape[:-1], 100.0), jnp.ones(p.shape))
  bg = jnp.asarray([[0.2, 0.4, 0.6]])
  out = render.render_rays(dense, jax.random.key(0), o, d, near, far, hit, num_coarse=8,
                           num_fine=8, randomized=True, background_rgb=bg)
  np.testing.assert_array_equal(out["rgb"], bg)
  assert float(out["acc"][0]) == 0.0


def test_to_canonical_inverts_pose():
  from minerf_jax.data import synthetic
  r, t = synthetic.pose_matrix(0.3, -0.2, 0.1, np.array([0.05, 0.0, 0.1]))
  p_head = np.array([0.2, -0.3, 0.4], np.float32)
  p_world = r @ p_head + t
  o = np.zeros(3, np.float32)
  d = p_world / np.linalg.norm(p_world)
  oc, dc = render.to_canonical(jnp.asarray(o), jnp.asarray(d), jnp.asarray(r), jnp.asarray(t))
  s = np.linalg.norm(p_world)
  np.testing.assert_allclose(np.asarray(oc) + s * np.asarray(dc), p_head, atol=1e-5)


def test_principal_point_ray_is_optical_axis():
  k = jnp.asarray([[50.0, 0, 32], [0, 50.0, 32], [0, 0, 1]])
  o, d = render.camera_rays(k, jnp.asarray([32.0, 32.0]))
  np.testing.assert_allclose(d, [0, 0, 1], atol=1e-7)
  np.testing.assert_array_equal(o, [0, 0, 0])
  _, d2 = render.camera_rays(k, render.pixel_grid(4, 4))
  np.testing.assert_allclose(jnp.linalg.norm(d2, axis=-1), 1.0, rtol=1e-6)


def test_sample_pdf_concentrates_on_spike():
  bins = jnp.linspace(0.0, 1.0, 11)[None]
  weights = jnp.zeros((1, 10)).at[0, 6].set(1.0)
  t = render.sample_pdf(jax.random.key(1), bins, weights, 64, randomized=True)
  frac_in = np.mean((np.asarray(t) >= 0.6) & (np.asarray(t) <= 0.7))
  assert frac_in > 0.95
  t_det = render.sample_pdf(None, bins, weights, 16, randomized=False)
  assert (np.diff(np.asarray(t_det)[0]) >= 0).all()


def test_positional_encoding_values():
  x = jnp.asarray([[0.5, -0.25, 1.0]])
  out = encoding.positional_encoding(x, 0, 2, include_input=True)
  assert out.shape == (1, 3 + 2 * 3 * 2)
  np.testing.assert_allclose(out[0, :3], x[0])
  np.testing.assert_allclose(out[0, 3:6], np.sin(np.asarray(x[0])), rtol=1e-6)
  np.testing.assert_allclose(out[0, 6:9], np.sin(2 * np.asarray(x[0])), rtol=1e-6)
  np.testing.assert_allclose(out[0, 9:12], np.cos(np.asarray(x[0])), atol=1e-6)


def test_hash_grid_exact_at_vertices_and_continuous():
  enc = encoding.HashGridEncoding(num_levels=2, features_per_level=2, log2_table_size=12,
                                  base_resolution=4, max_resolution=32)
  params = enc.init(jax.random.key(0), jnp.zeros((1, 3)))
  res = encoding.level_resolutions(2, 4, 32)
  assert res == [4, 32]
  # Level 0 is dense ((4+1)^3 <= 4096): vertex (i,j,k) is row i + 5*(j + 5*k).
  vertex = np.array([1, 3, 2])
  x = vertex / res[0] * 2 - 1
  feats = enc.apply(params, jnp.asarray(x[None], jnp.float32))
  table0 = params["params"]["level_0"]
  np.testing.assert_allclose(feats[0, :2], table0[1 + 5 * (3 + 5 * 2)], rtol=1e-5, atol=1e-9)
  # Level 1 is hashed (33^3 > 4096).
  idx = encoding.grid_index(jnp.asarray([[5, 7, 9]]), 32, 4096)
  expected = (5 * 1) ^ (7 * 2654435761 % 2 ** 32) ^ (9 * 805459861 % 2 ** 32)
  assert int(idx[0]) == expected % 4096
  a = enc.apply(params, jnp.asarray([[0.1, 0.2, 0.3]]))
  b = enc.apply(params, jnp.asarray([[0.1 + 1e-5, 0.2, 0.3]]))
  assert float(jnp.max(jnp.abs(a - b))) < 1e-6


def test_build_encoding_rejects_unknown_kind():
  with pytest.raises(ValueError, match="model.encoding.kind"):
    encoding.build_encoding(ml_collections.ConfigDict({"kind": "fourier"}))


def test_hadamard_reduces_to_plain_product():
  w = jax.random.normal(jax.random.key(0), (5, 8))
  e = jax.random.normal(jax.random.key(1), (5, 6))
  m = fusion.Fusion(kind="hadamard", features=4, first_order=False)
  p = m.init(jax.random.key(2), w, e)["params"]
  assert set(p) == {"U_w", "U_e"}
  expected = (w @ p["U_w"]["kernel"]) * (e @ p["U_e"]["kernel"])
  np.testing.assert_allclose(m.apply({"params": p}, w, e), expected, rtol=1e-5)
  m1 = fusion.Fusion(kind="hadamard", features=4, first_order=True)
  p1 = m1.init(jax.random.key(2), w, e)["params"]
  expected1 = ((w @ p1["U_w"]["kernel"]) * (e @ p1["U_e"]["kernel"]) + w @ p1["V_w"]["kernel"]
               + e @ p1["V_e"]["kernel"])
  np.testing.assert_allclose(m1.apply({"params": p1}, w, e), expected1, rtol=1e-5)


@pytest.mark.parametrize("kind", fusion.FUSION_KINDS)
def test_every_fusion_kind_shape_and_gradients(kind):
  w = jax.random.normal(jax.random.key(0), (3, 8))
  e = jax.random.normal(jax.random.key(1), (3, 5))
  m = fusion.Fusion(kind=kind, features=7)
  p = m.init(jax.random.key(2), w, e)
  assert m.apply(p, w, e).shape == (3, 7)
  gw, ge = jax.grad(lambda w, e: jnp.sum(m.apply(p, w, e) ** 2), argnums=(0, 1))(w, e)
  assert float(jnp.abs(gw).sum()) > 0 and float(jnp.abs(ge).sum()) > 0


def test_conditioned_field_outputs_and_gradients():
  f = field.ConditionedField(encoding=encoding.PositionalEncoding(max_deg=3), depth=3, width=16,
                             skips=(2,), dir_deg=2)
  x = jax.random.uniform(jax.random.key(0), (4, 5, 3), minval=-1, maxval=1)
  d = jnp.tile(jnp.asarray([[0.0, 0.0, 1.0]]), (4, 1))
  c = jax.random.normal(jax.random.key(1), (4, 6))
  p = f.init(jax.random.key(2), x, d, c)
  sigma, rgb = f.apply(p, x, d, c)
  assert sigma.shape == (4, 5) and rgb.shape == (4, 5, 3)
  assert (np.asarray(sigma) >= 0).all() and ((np.asarray(rgb) > 0) & (np.asarray(rgb) < 1)).all()
  sigma2, _ = f.apply(p, x, d, c + 1.0)
  assert float(jnp.max(jnp.abs(sigma2 - sigma))) > 1e-6
  grads = jax.grad(lambda p: jnp.sum(f.apply(p, x, d, c)[0]) + jnp.sum(f.apply(p, x, d, c)[1]))(p)
  for path, g in jax.tree_util.tree_leaves_with_path(grads):
    assert float(jnp.abs(g).sum()) > 0, path

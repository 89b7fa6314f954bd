"""Camera maths (``minerf_jax.camera``): pinholes, rays, box hits, poses, rotations, reprojection."""
import jax
import jax.numpy as jnp
import numpy as np

from minerf_jax import camera
from minerf_jax.data import synthetic as syn

BOX_MIN, BOX_MAX = -jnp.ones(3), jnp.ones(3)


def _rotation(axis, angle):
  """Rodrigues' formula, written independently of the code under test."""
  k = np.asarray(axis, np.float64) / np.linalg.norm(axis)
  kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
  return np.eye(3) + np.sin(angle) * kx + (1 - np.cos(angle)) * kx @ kx


def test_ray_box_intersect_hand_computed():
  s3 = np.sqrt(3.0)
  o = jnp.asarray([[0.0, 0.0, -5.0],     # straight through: [4, 6]
                   [0.0, 3.0, -5.0],     # parallel to the box, outside the y slab: miss
                   [0.0, 0.0, 0.0],      # origin inside: near clamped to 0
                   [-2.0, -2.0, -2.0],   # diagonal: [sqrt3, 3 sqrt3]
                   [0.0, 0.0, 5.0],      # box behind the camera: miss
                   [0.5, 0.5, -3.0]])    # zero x and y components inside their slabs
  d = jnp.asarray([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [1 / s3] * 3,
                   [0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
  near, far, hit = camera.ray_box_intersect(o, d, BOX_MIN, BOX_MAX)
  np.testing.assert_array_equal(hit, [True, False, True, True, False, True])
  np.testing.assert_allclose(near, [4.0, 0.0, 0.0, s3, 0.0, 2.0], rtol=1e-6)
  np.testing.assert_allclose(far, [6.0, 0.0, 1.0, 3 * s3, 0.0, 4.0], rtol=1e-6)
  # A non-cubic box.
  near, far, hit = camera.ray_box_intersect(jnp.asarray([[-4.0, 0.0, 0.0]]),
                                            jnp.asarray([[1.0, 0.0, 0.0]]),
                                            jnp.asarray([-1.0, -2.0, -0.5]),
                                            jnp.asarray([3.0, 2.0, 0.5]))
  np.testing.assert_allclose([near[0], far[0]], [3.0, 7.0])
  assert np.isfinite(np.asarray(near)).all() and np.isfinite(np.asarray(far)).all()


def test_to_canonical_inverts_pose():
  r = _rotation([0.3, -1.0, 0.5], 0.7)
  t = np.array([0.05, -0.1, 4.0])
  p_head = np.array([0.2, -0.3, 0.4])
  p_world = r @ p_head + t
  o = np.array([0.1, -0.2, 0.3])
  s = np.linalg.norm(p_world - o)
  d = (p_world - o) / s
  f32 = lambda v: jnp.asarray(v, jnp.float32)
  oc, dc = camera.to_canonical(f32(o), f32(d), f32(r), f32(t))
  np.testing.assert_allclose(np.asarray(oc) + s * np.asarray(dc), p_head, atol=1e-5)
  np.testing.assert_allclose(oc, r.T @ (o - t), atol=1e-5)
  np.testing.assert_allclose(np.linalg.norm(dc), 1.0, rtol=1e-6)
  # Batched poses broadcast against batched rays.
  rs = np.stack([r, _rotation([1, 0, 0], -0.4)])
  oc2, dc2 = camera.to_canonical(f32(np.stack([o, o])), f32(np.stack([d, d])), f32(rs),
                                 f32(np.stack([t, t])))
  np.testing.assert_allclose(dc2[1], rs[1].T @ d, atol=1e-6)
  np.testing.assert_allclose(oc2[0], oc, atol=1e-6)


def test_rays_pixels_and_projection():
  k = jnp.asarray([[50.0, 0, 32], [0, 50.0, 30], [0, 0, 1]])
  np.testing.assert_allclose(camera.ray_directions(k, jnp.asarray([32.0, 30.0])), [0, 0, 1],
                             atol=1e-7)
  d = camera.ray_directions(k, jnp.asarray([82.0, 30.0]))       # 50 px right: 45 degrees
  np.testing.assert_allclose(d, [np.sqrt(0.5), 0, np.sqrt(0.5)], atol=1e-6)
  # Projecting known 3-D points (with skew) and unprojecting at their depth recovers them.
  k_skew = np.array([[60.0, 2.0, 31.0], [0, 55.0, 29.0], [0, 0, 1]])
  points = np.array([[0.3, -0.2, 2.0], [-0.5, 0.4, 3.0]])
  uv = (points @ k_skew.T)[:, :2] / points[:, 2:]
  np.testing.assert_allclose(camera.project(points, k_skew), uv, rtol=1e-12)
  np.testing.assert_allclose(camera.unproject(uv, points[:, 2], k_skew), points, rtol=1e-12)
  d = camera.ray_directions(jnp.asarray(k_skew, jnp.float32), jnp.asarray(uv, jnp.float32))
  assert isinstance(d, jax.Array)
  np.testing.assert_allclose(d, points / np.linalg.norm(points, axis=-1, keepdims=True),
                             atol=1e-6)
  grid = camera.pixel_grid(2, 3)
  assert grid.shape == (2, 3, 2) and grid.dtype == np.float32
  np.testing.assert_array_equal(grid[1, 2], [2.5, 1.5])
  np.testing.assert_array_equal(camera.pixel_grid(2, 3, (0.25, 0.75))[1, 2], [2.25, 1.75])
  np.testing.assert_allclose(np.linalg.norm(camera.ray_directions(k, camera.pixel_grid(4, 5)),
                                            axis=-1), 1.0, rtol=1e-6)
  # Per-point intrinsics broadcast; numpy in stays numpy and keeps float64.
  ks = np.stack([k_skew, np.diag([30.0, 30.0, 1.0])])
  got = camera.project(points, ks)
  assert isinstance(got, np.ndarray) and got.dtype == np.float64
  np.testing.assert_allclose(got[1], 30 * points[1, :2] / points[1, 2])


def test_poses_compose_invert_and_relate():
  r1, t1 = _rotation([0.3, -1.0, 0.5], 0.7), np.array([0.05, -0.1, 4.0])
  r2, t2 = _rotation([1.0, 0.2, 0.0], -0.4), np.array([-0.2, 0.3, 5.0])
  x = np.array([[0.2, -0.3, 0.4], [1.0, 0.5, -0.2]])
  ri, ti = camera.invert(r1, t1)
  np.testing.assert_allclose(camera.transform(camera.transform(x, r1, t1), ri, ti), x, atol=1e-12)
  rc, tc = camera.compose((r2, t2), (r1, t1))
  np.testing.assert_allclose(camera.transform(x, rc, tc),
                             camera.transform(camera.transform(x, r1, t1), r2, t2), atol=1e-12)
  # relative(a, b) maps a point seen in camera a (head pose a) to where camera b sees it.
  rab, tab = camera.relative((r1, t1), (r2, t2))
  np.testing.assert_allclose(camera.transform(x @ r1.T + t1, rab, tab), x @ r2.T + t2,
                             atol=1e-12)
  # The same under jit, batched.
  f = jax.jit(lambda r, t: camera.compose(camera.invert(r, t), (r, t)))
  r_id, t_id = f(jnp.asarray(np.stack([r1, r2]), jnp.float32), jnp.asarray(np.stack([t1, t2]),
                                                                           jnp.float32))
  np.testing.assert_allclose(r_id, np.broadcast_to(np.eye(3), (2, 3, 3)), atol=1e-6)
  np.testing.assert_allclose(t_id, 0.0, atol=1e-6)


def test_euler_angles_round_trip_and_geodesic_angle():
  angles = np.deg2rad(np.array([[25.0, -10.0, 5.0], [-40.0, 15.0, -8.0], [0.0, 0.0, 0.0]]))
  rot = camera.rotation_matrix(angles[:, 0], angles[:, 1], angles[:, 2])
  assert rot.shape == (3, 3, 3) and rot.dtype == np.float64
  np.testing.assert_allclose(rot[0], _rotation([0, 1, 0], angles[0, 0])
                             @ _rotation([1, 0, 0], angles[0, 1]) @ _rotation([0, 0, 1],
                                                                             angles[0, 2]),
                             atol=1e-12)
  np.testing.assert_allclose(camera.euler_degrees(rot), np.rad2deg(angles), atol=1e-9)
  jrot = camera.rotation_matrix(*jnp.asarray(angles.T, jnp.float32))
  np.testing.assert_allclose(jrot, rot, atol=1e-6)
  np.testing.assert_allclose(camera.rotation_angle_degrees(rot[2], rot[0]),
                             np.rad2deg(np.arccos((np.trace(rot[0]) - 1) / 2)), rtol=1e-9)


def test_axis_angle_matches_rodrigues_and_is_smooth_at_zero():
  for axis, angle in (([0.3, -1.0, 0.5], 0.7), ([1, 0, 0], 2.5), ([0, 1, 1], 1e-4)):
    v = np.asarray(axis, np.float64) / np.linalg.norm(axis) * angle
    np.testing.assert_allclose(camera.axis_angle_matrix(v), _rotation(axis, angle), atol=1e-12)
  np.testing.assert_array_equal(camera.axis_angle_matrix(np.zeros(3)), np.eye(3))
  # d R / d v at zero is the hat map: finite, and the same from both sides of the switch.
  jac = jax.jacfwd(camera.axis_angle_matrix)(jnp.zeros(3))
  assert np.isfinite(np.asarray(jac)).all()
  np.testing.assert_allclose(jac[:, :, 2], [[0, -1, 0], [1, 0, 0], [0, 0, 0]], atol=1e-7)
  jac_off = jax.jacfwd(camera.axis_angle_matrix)(jnp.asarray([0.0, 0.0, 2e-3]))
  np.testing.assert_allclose(jac_off[:, :, 2], jac[:, :, 2], atol=5e-3)


def _bilinear(image, xy):
  """Sample image [H, W, C] at pixel positions xy [..., 2] (centres at +0.5); outside: NaN."""
  h, w = image.shape[:2]
  x, y = xy[..., 0] - 0.5, xy[..., 1] - 0.5
  inside = (x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1)
  x, y = np.clip(x, 0, w - 1), np.clip(y, 0, h - 1)
  x0, y0 = np.minimum(np.floor(x).astype(int), w - 2), np.minimum(np.floor(y).astype(int), h - 2)
  fx, fy = (x - x0)[..., None], (y - y0)[..., None]
  out = (image[y0, x0] * (1 - fx) * (1 - fy) + image[y0, x0 + 1] * fx * (1 - fy)
         + image[y0 + 1, x0] * (1 - fx) * fy + image[y0 + 1, x0 + 1] * fx * fy)
  return np.where(inside[..., None], out, np.nan)


def _inverse_warp(res, pose_src, pose_tgt):
  """Renders a synthetic pair and warps the source into the target with the target's true depth
  and the true relative pose; returns (source, target, warped source pixel positions, visible)."""
  ident, expression = syn.make_identity(0, 1), np.zeros(len(syn.EXPRESSION_NAMES))
  src, tgt = (syn.render(ident, expression, *p, res) for p in (pose_src, pose_tgt))
  k = syn.camera_intrinsics(res)
  xy, z = camera.reproject(camera.pixel_grid(res, res), tgt["depth"], k,
                           camera.relative(pose_tgt, pose_src), k)
  src_depth = _bilinear(src["depth"][..., None], xy)[..., 0]
  # Where the source sees the same surface: its own depth there agrees with the moved point's.
  visible = tgt["masks"][..., 0] & np.isfinite(src_depth) & (np.abs(src_depth - z) < 0.02 * z)
  assert visible.sum() > 0.7 * tgt["masks"][..., 0].sum()   # the rest is hidden in the source
  return src, tgt, xy, visible


def test_reprojection_with_true_depth_and_pose_reproduces_the_target():
  """The inverse warp of a synthetic pair (target depth, unprojected, moved by the true relative
  head pose, projected into the source) samples the target's own surface. The generator's light
  is fixed in the camera, so shading changes when the head turns: colours are compared for a
  translated head, surface labels (which turning does not change) for turned heads."""
  still = syn.pose_matrix(0.0, 0.0, 0.0, np.zeros(3))
  src, tgt, xy, visible = _inverse_warp(64, still, syn.pose_matrix(0.0, 0.0, 0.0, [0.2, 0.0, 0.0]))
  err = np.abs(_bilinear(src["rgb"], xy) - tgt["rgb"]).mean(-1)[visible]
  no_warp = np.abs(src["rgb"] - tgt["rgb"]).mean(-1)[visible]
  assert np.median(err) < 1e-3 and err.mean() < 0.15 * no_warp.mean(), (err.mean(), no_warp.mean())
  for yaw, pitch in ((12.0, -5.0), (30.0, 10.0)):
    turned = syn.pose_matrix(np.deg2rad(yaw), np.deg2rad(pitch), 0.0, [0.05, 0.0, 0.0])
    src, tgt, xy, visible = _inverse_warp(64, still, turned)
    ij = np.clip(np.floor(xy).astype(int), 0, 63)
    labels = src["segmentation"][ij[..., 1], ij[..., 0]]
    agree = (labels == tgt["segmentation"])[visible].mean()
    agree_no_warp = (src["segmentation"] == tgt["segmentation"])[visible].mean()
    assert agree > 0.97 and agree_no_warp < 0.91, (yaw, agree, agree_no_warp)


def test_scaled_intrinsics_see_the_same_point_at_scaled_pixels():
  k = syn.camera_intrinsics(64)
  point = np.array([0.3, -0.2, 5.0])
  half = camera.scale_intrinsics(k, 0.5)
  np.testing.assert_allclose(camera.project(point, half), camera.project(point, k) / 2, rtol=1e-6)
  # The centre of the 2x2 block of full-size pixels (2, 4)-(3, 5) is half-size pixel (1, 2)'s.
  np.testing.assert_allclose(camera.pixel_grid(32, 32)[2, 1] * 2, [3.0, 5.0])
  np.testing.assert_allclose(camera.scale_intrinsics(jnp.asarray(k), 0.25, 0.5)[:2, 2],
                             [8.0, 16.0])

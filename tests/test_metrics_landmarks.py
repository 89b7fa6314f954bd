"""Face-landmark motion metrics (AKD / ARD) on real faces from ../shared/media.

The tests on real images skip cleanly without ../shared/media or MediaPipe 0.10.21; the numpy
helpers (rotation angle, upsampling, input checks) are tested everywhere.
"""
from __future__ import annotations

import math
import os

import numpy as np
import pytest

from minerf_jax import camera
from minerf_jax.metrics import landmarks as lmm
from minerf_jax.data import face
from minerf_jax.data import video

MEDIA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "media")
needs_media = pytest.mark.skipif(not os.path.isdir(MEDIA), reason="../shared/media is absent")


def _rot(axis: str, deg: float) -> np.ndarray:
  c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
  return {"x": np.array([[1, 0, 0], [0, c, -s], [0, s, c]]),
          "y": np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]),
          "z": np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])}[axis]


def _shift(image: np.ndarray, dy: int, dx: int) -> np.ndarray:
  """Image content moved by (dy, dx) >= 0 pixels (down, right), edge pixels repeated."""
  h, w = image.shape[:2]
  padded = np.pad(image, ((dy, 0), (dx, 0), (0, 0)), mode="edge")
  return padded[:h, :w]


def _rotate(image: np.ndarray, degrees: float) -> np.ndarray:
  """Image rotated in-plane by ``degrees`` (counter-clockwise on screen) about its centre:
  inverse-mapped nearest-neighbour sampling, pixel centres at +0.5, edges clamped."""
  h, w = image.shape[:2]
  y, x = np.mgrid[0:h, 0:w] + 0.5
  dx, dy = x - w / 2, y - h / 2
  a = math.radians(degrees)  # y points down, so a screen-CCW turn is R(-a) in pixel coordinates
  sx = math.cos(a) * dx - math.sin(a) * dy + w / 2
  sy = math.sin(a) * dx + math.cos(a) * dy + h / 2
  xi = np.clip(np.floor(sx).astype(np.int64), 0, w - 1)
  yi = np.clip(np.floor(sy).astype(np.int64), 0, h - 1)
  return image[yi, xi]


# ----------------------------------------------------------------------------------------------
# numpy helpers (no MediaPipe needed).


def test_rotation_angle_is_geodesic():
  r1 = _rot("y", 20) @ _rot("x", -10)
  for axis, deg in (("x", 7.0), ("y", 15.0), ("z", 90.0), ("y", 179.0)):
    got = camera.rotation_angle_degrees(r1, r1 @ _rot(axis, deg))
    assert got == pytest.approx(deg, abs=1e-6)
    m = r1.T @ (r1 @ _rot(axis, deg))  # the arccos((trace - 1) / 2) definition
    assert got == pytest.approx(math.degrees(math.acos(np.clip((np.trace(m) - 1) / 2, -1, 1))),
                                abs=1e-4)
  assert camera.rotation_angle_degrees(r1.astype(np.float32), r1.astype(np.float32)) == 0.0
  batch = camera.rotation_angle_degrees(np.stack([r1, r1]), np.stack([r1, r1 @ _rot("z", 30)]))
  np.testing.assert_allclose(batch, [0.0, 30.0], atol=1e-6)


def test_upsample_keeps_pixel_centres():
  img = np.random.default_rng(0).integers(0, 256, (5, 7, 3), np.uint8)
  up = lmm.upsample(img, 3)
  assert up.shape == (15, 21, 3) and up.dtype == np.uint8
  # Output pixel 3 i + 1 has its centre at input continuous coordinate i + 0.5: the input pixel.
  np.testing.assert_array_equal(up[1::3, 1::3], img)
  assert lmm.upsample(img, 1) is img


def test_intrinsics_and_input_checks():
  k = lmm.image_intrinsics(64, 64)
  f = face.FOCAL_SCALE * 64
  np.testing.assert_allclose(k, [[f, 0, 32], [0, f, 32], [0, 0, 1]])
  metrics = lmm.LandmarkMetrics()  # no MediaPipe object until something is detected
  with pytest.raises(ValueError, match="differ in shape"):
    metrics.akd(np.zeros((2, 8, 8, 3), np.uint8), np.zeros((3, 8, 8, 3), np.uint8))
  with pytest.raises(ValueError, match=r"\[N, H, W, 3\]"):
    metrics.landmarks(np.zeros((2, 8, 8), np.uint8))
  assert metrics._mesh is None  # pylint: disable=protected-access
  metrics.close()


# ----------------------------------------------------------------------------------------------
# Real faces.


@pytest.fixture(scope="module")
def metrics():
  import mediapipe  # noqa: F401  (a hard dependency: missing fails)
  with lmm.LandmarkMetrics() as m:
    yield m
  assert m._mesh is None  # pylint: disable=protected-access


@pytest.fixture(scope="module")
def portrait():
  """uint8 [256, 256, 3] face crop of the TPSMM source portrait."""
  import mediapipe  # noqa: F401  (a hard dependency: missing fails)
  return face.process_image(os.path.join(MEDIA, "tpsmm_source.png")).rgb


@pytest.fixture(scope="module")
def driving():
  """uint8 [3, 256, 256, 3] face crops of three frames of the TPSMM driving video."""
  import mediapipe  # noqa: F401  (a hard dependency: missing fails)
  frames = video.read_video(os.path.join(MEDIA, "tpsmm_driving.mp4"),
                                with_audio=False).frames
  return np.stack([face.process_image(frames[i]).rgb for i in (0, 60, 120)])


@needs_media
def test_against_itself_is_zero(metrics, driving):
  points, found = metrics.landmarks(driving)
  assert points.shape == (3, 478, 2) and points.dtype == np.float32 and found.all()
  assert metrics.akd(driving, driving.copy()) == {"akd": 0.0, "akd_missing": 0.0}
  assert metrics.ard(driving, driving.copy()) == {"ard": 0.0, "ard_missing": 0.0}
  both = metrics.motion_metrics(driving.astype(np.float32) / 255, driving)  # float in [0, 1]
  assert both == {"akd": 0.0, "akd_missing": 0.0, "ard": 0.0, "ard_missing": 0.0}
  # Different frames of a talking head: the landmarks move, by a few pixels to tens.
  moved = metrics.motion_metrics(driving[:2], driving[1:])
  assert 1.0 < moved["akd"] < 40.0 and moved["ard"] > 0.0


@needs_media
@pytest.mark.parametrize("dy,dx", [(0, 8), (6, 6)])
def test_shift_gives_akd_of_the_shift(metrics, portrait, dy, dx):
  points, found = metrics.landmarks(portrait)
  assert found.all() and points.min() > 20 and points.max() < 256 - 20  # face well inside
  out = metrics.motion_metrics(portrait[None], _shift(portrait, dy, dx)[None])
  k = math.hypot(dy, dx)
  assert out["akd"] == pytest.approx(k, rel=0.25)  # measured: 7.80 for 8, 8.56 for 8.49
  # A pure image shift reads as a small head rotation under perspective (measured 1.5 / 2.4 deg).
  assert out["akd_missing"] == 0.0 and out["ard"] < 5.0


@needs_media
def test_small_image_is_detected_in_its_own_pixels(metrics, portrait):
  small = portrait.reshape(64, 4, 64, 4, 3).mean((1, 3)).round().astype(np.uint8)  # 4x4 box mean
  points, found = metrics.landmarks(small[None])
  assert found.all()
  assert (points >= 0).all() and (points < 64).all()
  full, _ = metrics.landmarks(portrait[None])
  # Same face, a quarter of the pixels: the landmarks agree after scaling (measured 0.27 px).
  assert np.linalg.norm(points - full / 4, axis=-1).mean() < 1.5
  out = metrics.motion_metrics(small[None] / 255.0, small[None])
  assert out == {"akd": 0.0, "akd_missing": 0.0, "ard": 0.0, "ard_missing": 0.0}


@needs_media
def test_noise_is_missing(metrics, portrait):
  noise = np.random.default_rng(0).integers(0, 256, (256, 256, 3), np.uint8)
  points, found = metrics.landmarks(np.stack([portrait, noise]))
  assert found.tolist() == [True, False] and np.isnan(points[1]).all()
  out = metrics.motion_metrics(np.stack([portrait, noise]), np.stack([portrait, portrait]))
  assert out == {"akd": 0.0, "akd_missing": 0.5, "ard": 0.0, "ard_missing": 0.5}
  none = metrics.motion_metrics(noise[None], portrait[None])
  assert math.isnan(none["akd"]) and math.isnan(none["ard"])
  assert none["akd_missing"] == 1.0 and none["ard_missing"] == 1.0
  assert math.isnan(metrics.akd(noise[None], noise[None])["akd"])


@needs_media
@pytest.mark.parametrize("degrees", [15.0, -15.0])
def test_in_plane_rotation_gives_ard_of_the_angle(metrics, portrait, degrees):
  out = metrics.motion_metrics(portrait[None], _rotate(portrait, degrees)[None])
  assert out["ard_missing"] == 0.0
  assert out["ard"] == pytest.approx(abs(degrees), abs=5.0)  # measured: 15.14 and 15.05
  assert out["akd"] > 5.0  # the landmarks turned with the face


@needs_media
def test_close_and_reuse(portrait):
  import mediapipe  # noqa: F401  (a hard dependency: missing fails)
  m = lmm.LandmarkMetrics()
  assert m.landmarks(portrait)[1].all()
  m.close()
  m.close()  # idempotent
  assert m.landmarks(portrait)[1].all()  # a new mesh on demand
  m.close()

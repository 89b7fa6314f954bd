"""The exact-truth evaluation protocols of the synthetic data (data/pairs.py) and the metric
table every animation model reports (models/animation.py:protocol_metrics)."""
import ml_collections
import numpy as np
import pytest

from configs import tpsmm
from minerf_jax import camera
from minerf_jax.data import pairs
from minerf_jax.data import pipeline
from minerf_jax.models import animation


@pytest.fixture(scope="module")
def frames_and_render(tmp_path_factory):
  config = tpsmm.get_config("test")
  config.data.data_dir = str(tmp_path_factory.getbasetemp() / "tfds_pairs")
  builder = pipeline.dataset_builder(config.data)
  frames = pairs.load_frames(builder, "train", 32)
  return frames, pairs.synthetic_renderer(builder, 32)


def test_truth_renderer_reproduces_the_stored_frames(frames_and_render):
  """The generator at a frame's own identity, expression and pose is that frame, bit for bit:
  the truth of A driven by B is the same render with B's expression and pose."""
  frames, render = frames_and_render
  for i in (0, len(frames) - 1):
    np.testing.assert_array_equal(
        render(frames.identity[i], frames.expression[i], frames.rotation[i],
               frames.translation[i]), frames.rgb[i])


def test_cross_truth_pairs_fill_each_yaw_bucket_with_other_identities(frames_and_render):
  frames, render = frames_and_render
  idx, bucket = pairs.cross_truth_pairs(frames, 3, edges=(20.0, 25.0), seed=1)
  yaw = pairs.yaw_degrees(frames)
  dyaw = np.abs(yaw[idx[:, 0]] - yaw[idx[:, 1]])
  present = np.unique(bucket)
  assert len(present) == 3 and all(np.sum(bucket == k) == 3 for k in present)
  assert np.all(frames.identity[idx[:, 0]] != frames.identity[idx[:, 1]])
  assert np.all(np.digitize(dyaw, (20.0, 25.0)) == bucket)
  sets = pairs.truth_sets(frames, render, 2, 0, seed=0)["cross_truth"]
  a, b = sets["source_index"][0], sets["driving_index"][0]
  # The truth carries A's identity with B's pose: it differs from both stored frames.
  assert not np.array_equal(sets["truth"][0], frames.rgb[a])
  assert not np.array_equal(sets["truth"][0], frames.rgb[b])
  assert set(sets["group"]) <= set(pairs.bucket_names())


def test_novel_views_turn_the_head_about_its_own_vertical_axis(frames_and_render):
  frames, render = frames_and_render
  idx, turn, rotation = pairs.novel_view_items(frames, 2, yaws=(-40.0, 0.0, 40.0))
  yaw = pairs.yaw_degrees(frames)[idx]
  np.testing.assert_allclose(turn, np.array([-40.0, 0.0, 40.0])[None] - yaw[:, None], atol=1e-4)
  zero = np.zeros_like(turn)
  np.testing.assert_allclose(rotation, frames.rotation[idx][:, None] @ camera.rotation_matrix(
      np.radians(turn), zero, zero), atol=1e-6)
  # Pitch and roll stay small, so the turned head's own yaw is close to the target.
  got = camera.euler_degrees(rotation)[..., 0]
  assert np.all(np.abs(got - np.array([-40.0, 0.0, 40.0])) < 8.0), got
  sets = pairs.truth_sets(frames, render, 0, 2, seed=0)["novel"]
  assert sets["truth"].shape == (2 * len(pairs.NOVEL_YAWS), 32, 32, 3)
  # The truth at the frame's own pose (a turn of 0) would be the frame; at +-40 it is not.
  assert not np.array_equal(sets["truth"][0], frames.rgb[sets["frame_index"][0]])


def test_protocol_metrics_per_group_and_overall():
  rng = np.random.default_rng(0)
  truth = rng.uniform(size=(6, 16, 16, 3)).astype(np.float32)
  pred = truth.copy()
  pred[3:] = np.clip(pred[3:] + 0.1, 0, 1)
  group = np.array(["a"] * 3 + ["b"] * 3)
  ec = ml_collections.ConfigDict(dict(chunk=4, lpips=False, landmarks=False))
  out = animation.protocol_metrics(ec, (truth, truth), None, {"cross_truth": (pred, truth, group)})
  assert out["cross_truth/a/psnr"] == np.inf and out["cross_truth/a/l1"] == 0.0
  assert out["cross_truth/b/l1"] == pytest.approx(np.abs(pred[3:] - truth[3:]).mean(), rel=1e-6)
  assert out["cross_truth/all/l1"] == pytest.approx(out["cross_truth/b/l1"] / 2, rel=1e-6)
  assert out["recon/psnr"] == np.inf
  assert {k.split("/")[1] for k in out if k.startswith("cross_truth")} == {"all", "a", "b"}

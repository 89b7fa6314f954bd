"""Source/driving pair data for the one-shot animation models."""
import numpy as np
import pytest

from minerf_jax.data import pairs
from minerf_jax.data.builders import synthetic_talking_heads


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
  builder = synthetic_talking_heads.build(str(tmp_path_factory.mktemp("tfds")), resolution=16,
                                          num_identities=3, frames_per_identity=10)
  return pairs.load_frames(builder, "train", image_size=8), pairs.load_frames(builder, "test")


def test_frames_are_grouped_by_clip_in_time_order(frames):
  train, test = frames
  assert train.rgb.shape == (24, 8, 8, 3) and train.rgb.dtype == np.uint8
  for c in np.unique(train.clip):
    sel = train.clip == c
    assert len(set(train.identity[sel].tolist())) == 1
    assert np.all(np.diff(train.time[sel]) > 0)
  assert test.rgb.shape[1:] == (16, 16, 3)


def test_pairs_come_from_one_clip_and_differ(frames):
  train, _ = frames
  ds = pairs.train_dataset(train, batch_size=6, seed=0)
  for step in range(5):
    b = ds[step]
    assert b["source"].shape == (6, 8, 8, 3) and b["source"].dtype == np.float32
    assert 0.0 <= b["source"].min() and b["driving"].max() <= 1.0
    # the driving frame belongs to the source's clip and is another frame
    for s, d, c in zip(b["source"], b["driving"], b["clip"]):
      members = train.rgb[train.clip == c].astype(np.float32) / 255
      assert any(np.array_equal(d, m) for m in members)
      assert not np.array_equal(s, d)
  np.testing.assert_array_equal(ds[3]["driving"], ds[3]["driving"])  # pure in the step
  assert not np.array_equal(ds[3]["source"], ds[4]["source"])


def test_reconstruction_and_cross_identity_protocols(frames):
  _, test = frames
  sets = pairs.reconstruction_sets(test)
  assert len(sets) == 3
  for s in sets:
    np.testing.assert_array_equal(s["source"], s["driving"][0])
  p = pairs.cross_identity_pairs(test, 12, seed=1)
  assert p.shape == (12, 2)
  assert np.all(test.identity[p[:, 0]] != test.identity[p[:, 1]])
  np.testing.assert_array_equal(p, pairs.cross_identity_pairs(test, 12, seed=1))


def test_single_identity_cross_pairs_error(frames):
  train, _ = frames
  one = pairs.Frames(rgb=train.rgb[:3], identity=np.zeros(3, int), clip=np.zeros(3, int),
                     time=np.arange(3.0))
  with pytest.raises(ValueError, match="two identities"):
    pairs.cross_identity_pairs(one, 2)


def test_clip_starts_index_each_frames_first_frame():
  f = pairs.Frames(rgb=np.zeros((6, 2, 2, 3), np.uint8), identity=np.array([0, 0, 0, 1, 1, 2]),
                   clip=np.array([5, 5, 5, 7, 7, 9]), time=np.arange(6.0))
  np.testing.assert_array_equal(pairs.clip_starts(f), [0, 0, 0, 3, 3, 5])

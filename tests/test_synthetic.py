"""The synthetic talking-heads generator and its TFDS builder."""
import numpy as np
import pytest

from minerf_jax.data import audio
from minerf_jax.data import synthetic as syn
from minerf_jax.data.builders import synthetic_talking_heads as sth

NEUTRAL = np.zeros(5)


def _frontal(ident, expression=NEUTRAL, res=64, yaw=0.0):
  r, t = syn.pose_matrix(yaw, 0.0, 0.0, np.zeros(3))
  return syn.render(ident, expression, r, t, res)


def _landmark(out, name):
  return out["landmarks"][syn.LANDMARK_NAMES.index(name)]


def test_deterministic_and_identities_distinct():
  a = _frontal(syn.make_identity(0, 0))
  np.testing.assert_array_equal(a["rgb"], _frontal(syn.make_identity(0, 0))["rgb"])
  faces = [_frontal(syn.make_identity(0, i)) for i in range(4)]
  means = [f["rgb"][f["masks"][..., 0]].mean(0) for f in faces]
  for i in range(4):
    for j in range(i + 1, 4):
      assert np.abs(means[i] - means[j]).sum() > 0.05, (i, j)


def test_jaw_open_moves_chin_and_opens_mouth():
  ident = syn.make_identity(0, 1)
  closed, opened = _frontal(ident, NEUTRAL, 128), _frontal(ident, [1, 0, 0, 0, 0], 128)
  assert _landmark(opened, "chin")[1] > _landmark(closed, "chin")[1] + 2
  assert _landmark(opened, "lip_lower")[1] > _landmark(closed, "lip_lower")[1] + 2
  mouth = closed["masks"][..., 1] | opened["masks"][..., 1]
  assert np.abs(opened["rgb"][mouth] - closed["rgb"][mouth]).mean() > 0.05
  assert opened["masks"][..., 1].sum() > closed["masks"][..., 1].sum()


def test_blink_closes_eyes_and_brows_move():
  ident = syn.make_identity(0, 2)
  open_eyes, shut = _frontal(ident, NEUTRAL, 128), _frontal(ident, [0, 0, 1, 1, 0], 128)
  assert shut["masks"][..., 2].sum() < 0.2 * open_eyes["masks"][..., 2].sum()
  raised = _frontal(ident, [0, 0, 0, 0, 1], 128)
  assert _landmark(raised, "brow_l_mid")[1] < _landmark(open_eyes, "brow_l_mid")[1] - 1


def test_landmarks_inside_image_and_nose_on_face():
  ident = syn.make_identity(0, 3)
  seq = syn.sample_sequence(0, 3, 30)
  for f in range(0, 30, 7):
    r, t = syn.pose_matrix(*seq["yaw_pitch_roll"][f], seq["translation"][f])
    out = syn.render(ident, seq["expression"][f], r, t, 64)
    lm = out["landmarks"]
    assert ((lm > 0) & (lm < 64)).all()
    x, y = np.floor(_landmark(out, "nose_tip")).astype(int)
    assert out["masks"][y, x, 0]


def test_yaw_moves_nose_in_expected_direction():
  ident = syn.make_identity(0, 0)
  left = _landmark(_frontal(ident, yaw=np.deg2rad(-25)), "nose_tip")[0]
  centre = _landmark(_frontal(ident), "nose_tip")[0]
  right = _landmark(_frontal(ident, yaw=np.deg2rad(25)), "nose_tip")[0]
  # R = Ry(yaw): positive yaw turns the (-z facing) nose towards -x in the image.
  assert right < centre - 2 and left > centre + 2


def test_depth_face_in_front_of_wall():
  out = _frontal(syn.make_identity(0, 0))
  face, bg = out["masks"][..., 0], out["segmentation"] == syn.SEG_BACKGROUND
  assert out["depth"][face].max() < out["depth"][bg].min()
  np.testing.assert_allclose(out["depth"][bg], syn.WALL_DEPTH, rtol=1e-5)


def test_head_geometry_inside_head_box():
  lo, hi = np.asarray(syn.HEAD_BOX)
  rng = np.random.default_rng(0)
  for i in range(6):
    ident = syn.make_identity(int(rng.integers(100)), i)
    expression = np.concatenate([[1.0], rng.uniform(0, 1, 3), [rng.uniform(-1, 1)]])
    r, t = syn.pose_matrix(*rng.uniform(-0.4, 0.4, 3), np.zeros(3))
    out = syn.render(ident, expression, r, t, 96, supersample=1)
    ys, xs = np.nonzero(out["masks"][..., 0])
    k = syn.camera_intrinsics(96)
    z = out["depth"][ys, xs]
    p_cam = np.stack([(xs + 0.5 - k[0, 2]) / k[0, 0] * z, (ys + 0.5 - k[1, 2]) / k[1, 1] * z, z],
                     -1)
    p_head = (p_cam - t) @ r
    assert (p_head > lo).all() and (p_head < hi).all()


def test_sequence_ranges_and_audio_drives_jaw():
  seq = syn.sample_sequence(0, 0, 200)
  ypr = np.rad2deg(seq["yaw_pitch_roll"])
  assert np.abs(ypr[:, 0]).max() <= 30.01 and np.abs(ypr[:, 0]).max() > 15
  assert np.abs(ypr[:, 1]).max() <= 15.01 and np.abs(ypr[:, 2]).max() <= 10.01
  assert seq["audio"].shape == (200 * 640,)
  env = syn.audio_envelope(seq["audio"], 16000, 25, 200)
  assert np.corrcoef(env, seq["expression"][:, 0])[0, 1] > 0.8
  assert (seq["expression"][:, 2] > 0.9).any()  # at least one blink in 8 s


def test_log_mel_puts_a_tone_in_the_right_band():
  sr = 16000
  tone = np.sin(2 * np.pi * 1000 * np.arange(sr) / sr).astype(np.float32)
  mel = audio.log_mel(tone, sr, n_mels=40)
  edges = audio.mel_to_hz(np.linspace(audio.hz_to_mel(0), audio.hz_to_mel(sr / 2), 42))
  band = int(np.argmax(mel[50]))
  assert edges[band] < 1000 < edges[band + 2]
  feats = audio.frame_features(tone, sr, 25, 25, window=16)
  assert feats.shape == (25, 16, 40)
  np.testing.assert_array_equal(feats[10, 8], mel[round(10.5 / 25 * sr / 160)])


def test_tfds_build_round_trip(tmp_path):
  b = sth.build(str(tmp_path), resolution=32, num_identities=2, frames_per_identity=10)
  train, test = b.as_data_source(split="train"), b.as_data_source(split="test")
  assert len(train) == 16 and len(test) == 4
  times = {s: {} for s in ("train", "test")}
  for name, src in (("train", train), ("test", test)):
    for i in range(len(src)):
      ex = src[i]
      times[name].setdefault(int(ex["identity"]), []).append(float(ex["time"]))
  for identity in (0, 1):
    assert max(times["train"][identity]) < min(times["test"][identity])
  ex = train[0]
  assert ex["rgb"].dtype == np.uint8 and ex["rgb"].shape == (32, 32, 3)
  fresh = sth.ground_truth(b.info.metadata, int(ex["identity"]), ex["expression"],
                           ex["rotation"], ex["translation"])
  np.testing.assert_array_equal(ex["rgb"], np.round(fresh["rgb"] * 255).astype(np.uint8))
  assert b.info.metadata["head_box"] == [list(v) for v in syn.HEAD_BOX]
  # A second call reuses the finished build.
  again = sth.build(str(tmp_path), resolution=32, num_identities=2, frames_per_identity=10)
  assert len(again.as_data_source(split="train")) == 16
  with pytest.raises(ValueError, match="resolution"):
    sth.SyntheticTalkingHeadsConfig.make(resolution=1024)

"""The synthetic talking-heads generator, its audio features and its TFDS builder."""
import numpy as np
import pytest
import tensorflow_datasets as tfds

from minerf_jax import camera
from minerf_jax.audio import features as audio
from minerf_jax.data import synthetic as syn
from minerf_jax.data.builders import synthetic_talking_heads as sth

NEUTRAL = np.zeros(5)
SR, FPS = 16000, 25


def _render(ident, expression=NEUTRAL, res=64, ypr=(0.0, 0.0, 0.0), translation=(0, 0, 0),
            **kwargs):
  r, t = syn.pose_matrix(*ypr, np.asarray(translation, np.float64))
  return syn.render(ident, np.asarray(expression, np.float64), r, t, res, **kwargs)


def _landmark(out, name):
  return out["landmarks"][syn.LANDMARK_NAMES.index(name)]


def _expr(**values):
  e = np.zeros(5)
  for k, v in values.items():
    e[syn.EXPRESSION_NAMES.index(k)] = v
  return e


# ----------------------------------------------------------------------------------------------
# Camera and pose conventions.


def test_pose_matrix_convention():
  r, t = syn.pose_matrix(0.0, 0.0, 0.0, [0.1, -0.05, 0.02])
  np.testing.assert_allclose(r, np.eye(3), atol=1e-7)
  np.testing.assert_allclose(t, [0.1, -0.05, syn.HEAD_DISTANCE + 0.02], rtol=1e-6)
  assert r.dtype == np.float32 and t.dtype == np.float32
  # Single axes: yaw 90 deg takes +z to +x, pitch 90 deg takes +z to -y, roll 90 deg +x to +y.
  np.testing.assert_allclose(syn.pose_matrix(np.pi / 2, 0, 0, np.zeros(3))[0] @ [0, 0, 1],
                             [1, 0, 0], atol=1e-6)
  np.testing.assert_allclose(syn.pose_matrix(0, np.pi / 2, 0, np.zeros(3))[0] @ [0, 0, 1],
                             [0, -1, 0], atol=1e-6)
  np.testing.assert_allclose(syn.pose_matrix(0, 0, np.pi / 2, np.zeros(3))[0] @ [1, 0, 0],
                             [0, 1, 0], atol=1e-6)
  # Composition order R = Ry @ Rx @ Rz.
  y, p, ro = 0.3, -0.2, 0.1
  expected = (syn.pose_matrix(y, 0, 0, np.zeros(3))[0] @ syn.pose_matrix(0, p, 0, np.zeros(3))[0]
              @ syn.pose_matrix(0, 0, ro, np.zeros(3))[0])
  r = syn.pose_matrix(y, p, ro, np.zeros(3))[0]
  np.testing.assert_allclose(r, expected, atol=1e-6)
  np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-6)


def test_intrinsics_put_the_head_origin_at_the_image_centre():
  k = syn.camera_intrinsics(64)
  assert k.dtype == np.float32
  np.testing.assert_allclose(k, [[syn.FOCAL_SCALE * 64, 0, 32], [0, syn.FOCAL_SCALE * 64, 32],
                                 [0, 0, 1]])
  np.testing.assert_allclose(camera.project(np.array([[0.0, 0.0, syn.HEAD_DISTANCE]]), k),
                             [[32.0, 32.0]])
  # The pixel-centre ray of pixel (x, y) goes through (x + 0.5, y + 0.5).
  d = syn.pixel_rays(64).reshape(64, 64, 3)
  np.testing.assert_allclose(camera.project(d[10, 3][None], k), [[3.5, 10.5]], atol=1e-5)


def test_framing_head_in_upper_two_thirds_neck_and_shoulders_below():
  out = _render(syn.make_identity(0, 0), res=96)
  seg = out["segmentation"]
  head_rows = np.flatnonzero(out["masks"][..., 0].any(1))
  assert head_rows.min() > 0 and 0.55 * 96 < head_rows.max() < 0.8 * 96
  assert (seg == syn.SEG_NECK).any() and (seg[-1] == syn.SEG_TORSO).sum() > 48
  assert seg[0].max() == syn.SEG_BACKGROUND           # hair does not touch the top border


# ----------------------------------------------------------------------------------------------
# Identities and determinism.


def test_render_is_deterministic():
  a = _render(syn.make_identity(0, 0), _expr(jaw_open=0.4, smile=0.3), ypr=(0.2, 0.1, 0.05))
  b = _render(syn.make_identity(0, 0), _expr(jaw_open=0.4, smile=0.3), ypr=(0.2, 0.1, 0.05))
  for key in a:
    np.testing.assert_array_equal(a[key], b[key], err_msg=key)
  assert syn.make_identity(3, 7) == syn.make_identity(3, 7)
  assert syn.make_identity(3, 7) != syn.make_identity(4, 7)
  other = _render(syn.make_identity(0, 1), _expr(jaw_open=0.4, smile=0.3), ypr=(0.2, 0.1, 0.05))
  assert np.abs(other["rgb"] - a["rgb"]).mean() > 0.05


@pytest.mark.parametrize("seed", [0, 1, 123])
def test_identities_are_distinct(seed):
  outs = [_render(syn.make_identity(seed, i)) for i in range(4)]
  face_means = [o["rgb"][o["masks"][..., 0]].mean(0) for o in outs]
  hair_means = [o["rgb"][o["segmentation"] == syn.SEG_HAIR].mean(0) for o in outs]
  for i in range(4):
    for j in range(i + 1, 4):
      colour = np.abs(face_means[i] - face_means[j]).sum() + np.abs(
          hair_means[i] - hair_means[j]).sum()
      assert colour > 0.15, (seed, i, j, colour)
      assert np.abs(outs[i]["rgb"] - outs[j]["rgb"]).mean() > 0.05


def test_outputs_types_and_consistency():
  out = _render(syn.make_identity(0, 2), _expr(jaw_open=0.7, smile=0.5), res=48)
  assert out["rgb"].dtype == np.float32 and out["rgb"].shape == (48, 48, 3)
  assert 0.0 <= out["rgb"].min() and out["rgb"].max() <= 1.0
  assert out["depth"].dtype == np.float32 and out["depth"].shape == (48, 48)
  assert out["masks"].dtype == bool and out["masks"].shape == (48, 48, 4)
  assert out["segmentation"].dtype == np.uint8 and out["segmentation"].max() <= 6
  assert out["landmarks"].dtype == np.float32
  assert out["landmarks"].shape == (len(syn.LANDMARK_NAMES), 2) and len(syn.LANDMARK_NAMES) >= 20
  seg, masks = out["segmentation"], out["masks"]
  np.testing.assert_array_equal(masks[..., 0], np.isin(seg, (1, 2, 3, 4)))
  np.testing.assert_array_equal(masks[..., 1], seg == syn.SEG_LIPS)
  np.testing.assert_array_equal(masks[..., 2], seg == syn.SEG_EYES)
  np.testing.assert_array_equal(masks[..., 3], np.isin(seg, (syn.SEG_NECK, syn.SEG_TORSO)))
  for label in range(7):
    assert (seg == label).any(), syn.SEGMENTATION_NAMES[label]


def test_supersampling_only_changes_edges():
  ident = syn.make_identity(0, 0)
  fine, coarse = _render(ident, res=64), _render(ident, res=64, supersample=1)
  np.testing.assert_array_equal(fine["segmentation"], coarse["segmentation"])
  np.testing.assert_array_equal(fine["depth"], coarse["depth"])
  diff = np.abs(fine["rgb"] - coarse["rgb"]).max(-1)
  seg = fine["segmentation"]
  edge = np.zeros_like(seg, bool)
  edge[:-1] |= seg[:-1] != seg[1:]
  edge[1:] |= seg[:-1] != seg[1:]
  edge[:, :-1] |= seg[:, :-1] != seg[:, 1:]
  edge[:, 1:] |= seg[:, :-1] != seg[:, 1:]
  assert diff[edge].mean() > 3 * diff[~edge].mean()


# ----------------------------------------------------------------------------------------------
# Expressions.


def test_jaw_open_drops_the_chin_and_opens_a_dark_mouth():
  ident = syn.make_identity(0, 1)
  closed, opened = _render(ident, NEUTRAL, 128), _render(ident, _expr(jaw_open=1.0), 128)
  assert _landmark(opened, "chin")[1] > _landmark(closed, "chin")[1] + 3
  assert _landmark(opened, "lip_lower")[1] > _landmark(closed, "lip_lower")[1] + 3
  np.testing.assert_allclose(_landmark(opened, "nose_tip"), _landmark(closed, "nose_tip"))
  mouth = closed["masks"][..., 1] | opened["masks"][..., 1]
  assert np.abs(opened["rgb"][mouth] - closed["rgb"][mouth]).mean() > 0.08
  assert opened["masks"][..., 1].sum() > 1.5 * closed["masks"][..., 1].sum()
  assert opened["rgb"][opened["masks"][..., 1]].mean() < closed["rgb"][
      closed["masks"][..., 1]].mean() - 0.05                          # dark mouth interior
  # Real 3-D deformation: the face silhouette reaches lower and the depth below the mouth changes.
  face_c, face_o = closed["masks"][..., 0], opened["masks"][..., 0]
  assert np.flatnonzero(face_o.any(1)).max() > np.flatnonzero(face_c.any(1)).max() + 3
  chin_row = int(_landmark(closed, "chin")[1])
  both = face_c[chin_row] & face_o[chin_row]
  assert np.abs(opened["depth"][chin_row, both] - closed["depth"][chin_row, both]).max() > 0.02


def test_smile_widens_the_mouth_and_lifts_its_corners():
  ident = syn.make_identity(0, 0)
  neutral, smiling = _render(ident, NEUTRAL, 128), _render(ident, _expr(smile=1.0), 128)
  width = lambda o: _landmark(o, "mouth_l")[0] - _landmark(o, "mouth_r")[0]
  assert width(smiling) > width(neutral) + 3
  assert _landmark(smiling, "mouth_l")[1] < _landmark(neutral, "mouth_l")[1] - 1.5
  mouth_width = lambda o: np.ptp(np.flatnonzero(o["masks"][..., 1].any(0)))
  assert mouth_width(smiling) > mouth_width(neutral) + 3


def test_blink_closes_the_eyes_one_at_a_time():
  ident = syn.make_identity(0, 2)
  open_eyes = _render(ident, NEUTRAL, 128)
  area = open_eyes["masks"][..., 2]
  assert area[:, :64].sum() > 20 and area[:, 64:].sum() > 20
  both = _render(ident, _expr(blink_left=1.0, blink_right=1.0), 128)
  assert both["masks"][..., 2].sum() == 0
  half = _render(ident, _expr(blink_left=0.5, blink_right=0.5), 128)
  assert 0.2 * area.sum() < half["masks"][..., 2].sum() < 0.8 * area.sum()
  # The subject's left eye is on the image right (+x) at zero pose.
  left = _render(ident, _expr(blink_left=1.0), 128)["masks"][..., 2]
  assert left[:, 64:].sum() == 0 and left[:, :64].sum() == area[:, :64].sum()
  lid = lambda o: _landmark(o, "lid_l_top")[1]
  assert lid(both) > lid(open_eyes) + 2


def test_brow_raise_moves_the_brows():
  ident = syn.make_identity(0, 3)
  rest = _render(ident, NEUTRAL, 128)
  up, down = _render(ident, _expr(brow_raise=1.0), 128), _render(ident, _expr(brow_raise=-1.0), 128)
  for name in ("brow_l_mid", "brow_r_inner", "brow_l_outer"):
    assert _landmark(up, name)[1] < _landmark(rest, name)[1] - 1.5 < _landmark(down, name)[1] - 3
  assert np.abs(up["rgb"] - rest["rgb"]).max() > 0.1


# ----------------------------------------------------------------------------------------------
# Landmarks, pose and depth.


def test_landmarks_inside_image_and_nose_tip_on_the_face():
  for index in range(3):
    ident = syn.make_identity(5, index)
    seq = syn.sample_sequence(5, index, 100)
    for f in range(0, 100, 11):
      r, t = syn.pose_matrix(*seq["yaw_pitch_roll"][f], seq["translation"][f])
      out = syn.render(ident, seq["expression"][f], r, t, 64)
      lm = out["landmarks"]
      assert ((lm > 0) & (lm < 64)).all(), (index, f)
      x, y = np.floor(_landmark(out, "nose_tip")).astype(int)
      assert out["masks"][y, x, 0], (index, f)


def test_landmarks_are_exact_surface_points():
  ident = syn.make_identity(0, 0)
  r, t = syn.pose_matrix(0.25, -0.1, 0.05, np.zeros(3))
  out = syn.render(ident, _expr(jaw_open=0.5), r, t, 256, supersample=1)
  points = syn.landmarks_3d(ident, _expr(jaw_open=0.5)) @ r.T.astype(np.float64) + t
  for name in ("nose_tip", "chin", "lip_lower", "eye_l_inner"):
    i = syn.LANDMARK_NAMES.index(name)
    x, y = np.floor(out["landmarks"][i]).astype(int)
    assert abs(out["depth"][y, x] - points[i, 2]) < 0.03, name


def test_yaw_and_pitch_move_the_nose_as_documented():
  ident = syn.make_identity(0, 0)
  nose = lambda **kw: _landmark(_render(ident, **kw), "nose_tip")
  centre = nose()
  # Positive yaw turns the face towards image left, positive pitch looks down.
  assert nose(ypr=(np.deg2rad(25), 0, 0))[0] < centre[0] - 2
  assert nose(ypr=(np.deg2rad(-25), 0, 0))[0] > centre[0] + 2
  assert nose(ypr=(0, np.deg2rad(12), 0))[1] > centre[1] + 1


def test_depth_face_in_front_of_the_wall():
  out = _render(syn.make_identity(0, 0))
  face, bg = out["masks"][..., 0], out["segmentation"] == syn.SEG_BACKGROUND
  assert out["depth"][face].max() < out["depth"][bg].min()
  np.testing.assert_allclose(out["depth"][bg], syn.WALL_DEPTH, rtol=1e-6)
  assert 3.5 < out["depth"][face].min() < syn.HEAD_DISTANCE


def test_torso_neck_and_wall_are_static_in_world():
  ident = syn.make_identity(0, 1)
  a = _render(ident, ypr=(0.4, 0.2, -0.15), translation=(0.08, -0.05, 0.05))
  b = _render(ident, ypr=(-0.4, -0.2, 0.15), translation=(-0.08, 0.05, -0.05))
  for label in (syn.SEG_TORSO, syn.SEG_BACKGROUND):
    same = (a["segmentation"] == label) & (b["segmentation"] == label)
    assert same.sum() > 100
    # Away from label edges (where supersampling mixes colours) the pixels are identical.
    interior = same.copy()
    for shift in ((0, 1), (0, -1), (1, 0), (-1, 0)):
      interior &= np.roll(same, shift, (0, 1))
    np.testing.assert_array_equal(a["rgb"][interior], b["rgb"][interior])
  assert (a["segmentation"] == syn.SEG_NECK).any()
  assert np.abs(a["rgb"] - b["rgb"]).max() > 0.3          # while the head moved


# ----------------------------------------------------------------------------------------------
# The head box.


def test_head_bounds_inside_head_box_for_many_identities():
  lo, hi = np.asarray(syn.HEAD_BOX)
  rng = np.random.default_rng(0)
  for _ in range(300):
    ident = syn.make_identity(int(rng.integers(1000)), int(rng.integers(1000)))
    b_lo, b_hi = syn.head_bounds(ident, jaw_open=1.0)
    assert (b_lo > lo).all() and (b_hi < hi).all(), (ident.seed, ident.index, b_lo, b_hi)


def test_head_surface_inside_head_box_from_all_directions():
  lo, hi = np.asarray(syn.HEAD_BOX)
  rng = np.random.default_rng(1)
  parts_hit = set()
  for k in range(12):
    ident = syn.make_identity(int(rng.integers(1000)), k)
    expression = np.concatenate([[rng.choice([1.0, rng.uniform()])], rng.uniform(0, 1, 3),
                                 [rng.uniform(-1, 1)]])
    n = 20000
    o = rng.normal(size=(n, 3))
    o = 4.0 * o / np.linalg.norm(o, axis=-1, keepdims=True)
    d = rng.uniform(lo, hi, (n, 3)) - o
    t, part = syn.intersect_head(ident, expression, o, d)
    hit = np.isfinite(t)
    assert hit.mean() > 0.3
    p = o[hit] + t[hit, None] * d[hit]
    assert (p > lo).all() and (p < hi).all(), k
    parts_hit |= set(part[hit].tolist())
  assert parts_hit == set(range(len(syn.PART_NAMES)))


def test_rendered_head_points_inside_head_box():
  lo, hi = np.asarray(syn.HEAD_BOX)
  rng = np.random.default_rng(2)
  for i in range(6):
    ident = syn.make_identity(int(rng.integers(100)), i)
    expression = np.concatenate([[1.0], rng.uniform(0, 1, 3), [rng.uniform(-1, 1)]])
    r, t = syn.pose_matrix(*rng.uniform(-0.5, 0.5, 3), rng.uniform(-0.1, 0.1, 3))
    out = syn.render(ident, expression, r, t, 96, supersample=1)
    ys, xs = np.nonzero(out["masks"][..., 0])
    rays = syn.pixel_rays(96).reshape(96, 96, 3)[ys, xs]
    p_head = (rays * out["depth"][ys, xs, None].astype(np.float64) - t) @ r
    assert (p_head > lo - 1e-4).all() and (p_head < hi + 1e-4).all()


# ----------------------------------------------------------------------------------------------
# Sequences and audio.


def test_sequence_is_deterministic_and_prefix_consistent():
  a, b = syn.sample_sequence(2, 1, 80), syn.sample_sequence(2, 1, 80)
  short = syn.sample_sequence(2, 1, 30)
  for key in a:
    np.testing.assert_array_equal(a[key], b[key])
    np.testing.assert_array_equal(short[key], a[key][:len(short[key])], err_msg=key)
  other = syn.sample_sequence(2, 2, 80)
  assert not np.allclose(other["yaw_pitch_roll"], a["yaw_pitch_roll"])
  assert not np.allclose(other["audio"], a["audio"])


def test_sequence_ranges_and_smooth_motion():
  seq = syn.sample_sequence(0, 0, 500)
  assert seq["expression"].shape == (500, 5) and seq["yaw_pitch_roll"].shape == (500, 3)
  assert seq["audio"].shape == (500 * SR // FPS,) and seq["audio"].dtype == np.float32
  ypr = np.rad2deg(seq["yaw_pitch_roll"])
  for axis, limit in enumerate((30, 15, 10)):
    assert np.abs(ypr[:, axis]).max() <= limit
    assert ypr[:, axis].max() > 0.6 * limit and ypr[:, axis].min() < -0.6 * limit
  assert np.abs(np.diff(ypr, axis=0)).max() < 4.0                   # degrees per frame
  assert np.abs(seq["translation"]).max() <= 0.1 and np.abs(seq["translation"]).max() > 0.05
  e = seq["expression"]
  for k, (low, high) in enumerate(syn.EXPRESSION_RANGES):
    assert low <= e[:, k].min() and e[:, k].max() <= high
  assert e[:, 1].max() - e[:, 1].min() > 0.5 and np.abs(np.diff(e[:, 1])).max() < 0.1
  assert e[:, 4].max() - e[:, 4].min() > 0.8 and np.abs(np.diff(e[:, 4])).max() < 0.15


def test_blinks_are_short_and_every_two_to_five_seconds():
  for index in range(4):
    blink = syn.sample_sequence(0, index, 750)["expression"][:, 2:4].max(-1)
    closed = np.concatenate([[0.0], (blink > 0).astype(float), [0.0]])
    starts = np.flatnonzero(np.diff(closed) == 1)
    ends = np.flatnonzero(np.diff(closed) == -1)
    assert 5 <= len(starts) <= 15
    assert ((ends - starts >= 3) & (ends - starts <= 5)).all()
    gaps = np.diff(starts) / FPS
    assert (gaps >= 2.0 - 1e-6).all() and (gaps <= 5.0 + 1e-6).all()
    assert blink.max() == 1.0


def test_audio_is_speech_like_and_drives_the_jaw():
  seq = syn.sample_sequence(0, 3, 250)
  x = seq["audio"].astype(np.float64)
  frames = x.reshape(250, SR // FPS)
  rms = np.sqrt((frames ** 2).mean(-1))
  jaw = seq["expression"][:, 0]
  assert np.corrcoef(rms, jaw)[0, 1] > 0.8
  assert jaw.max() > 0.9 and (jaw < 0.05).mean() > 0.05           # loud syllables and pauses
  silent = rms < 0.01 * rms.max()
  silent &= np.roll(silent, 1) & np.roll(silent, -1)                # and so are its neighbours
  assert silent.any() and jaw[silent].max() < 0.05
  # Syllable rate: peaks of the smoothed envelope at 3-6 Hz.
  active = (rms > 0.3 * rms.max()).astype(int)
  onsets = np.count_nonzero(np.diff(active) == 1) / 10.0
  assert 2.0 < onsets < 7.0, onsets
  # Voiced frames are harmonic with a pitch in ~100-250 Hz (autocorrelation peak).
  loud = frames[np.argsort(rms)[-20:]]
  lags = np.arange(SR // 270, SR // 90)
  for f in loud:
    f = f - f.mean()
    ac = np.array([np.dot(f[:-lag], f[lag:]) for lag in lags])
    assert 90 < SR / lags[np.argmax(ac)] < 270


def test_log_mel_puts_a_tone_in_the_right_band():
  for freq in (300.0, 1000.0, 3000.0):
    tone = np.sin(2 * np.pi * freq * np.arange(SR) / SR).astype(np.float32)
    mel = audio.log_mel(tone, SR, n_mels=40)
    assert mel.shape == (SR // 160 + 1, 40) and mel.dtype == np.float32
    edges = audio.mel_to_hz(np.linspace(0.0, audio.hz_to_mel(SR / 2), 42))
    band = int(np.argmax(mel[50]))
    assert edges[band] < freq < edges[band + 2]
    assert mel[50, band] > np.median(mel[50]) + 8


def test_frame_features_are_aligned_to_video_frames():
  num_frames = 25
  x = np.zeros(SR, np.float32)
  # A 20 ms tone burst at the centre of video frame 10.
  c = int(10.5 / FPS * SR)
  x[c - 160:c + 160] = np.sin(2 * np.pi * 1000 * np.arange(320) / SR)
  feats = audio.frame_features(x, SR, FPS, num_frames, window=16)
  assert feats.shape == (num_frames, 16, 40) and feats.dtype == np.float32
  energy = feats.max(-1)
  assert energy[10, 8] > energy[10, 0] + 10 and energy[10, 8] >= energy[10].max() - 1e-3
  # Frames 4 or more away (>= 160 ms) do not see the burst at all.
  assert energy[14].max() < energy[10, 8] - 10 and energy[6].max() < energy[10, 8] - 10
  # The window is centred: it shifts by 4 mel frames (40 ms) per video frame.
  mel = audio.log_mel(x, SR)
  np.testing.assert_array_equal(feats[10, 8], mel[round(10.5 / FPS * SR / 160)])
  np.testing.assert_array_equal(feats[11, 4], feats[10, 8])
  # Edge padding at both ends.
  np.testing.assert_array_equal(feats[0, 0], mel[0])
  np.testing.assert_array_equal(feats[-1, -1], mel[min(len(mel) - 1, audio.frame_centres(
      SR, FPS, num_frames)[-1] + 7)])


# ----------------------------------------------------------------------------------------------
# The TFDS builder.


def test_config_names_and_validation():
  c = sth.SyntheticTalkingHeadsConfig(resolution=32, num_identities=2, frames_per_identity=10)
  assert c.name == f"r32_i2_f10_fps25_s0_t20_g{syn.GENERATOR_VERSION}"
  assert sth.SyntheticTalkingHeadsConfig(seed=1).name != sth.SyntheticTalkingHeadsConfig().name
  with pytest.raises(ValueError, match="resolution"):
    sth.SyntheticTalkingHeadsConfig(resolution=1024)
  with pytest.raises(ValueError, match="empty"):
    sth.SyntheticTalkingHeadsConfig(frames_per_identity=2, test_fraction=0.1)
  with pytest.raises(ValueError, match="does not match"):
    sth.SyntheticTalkingHeadsConfig(name="r64", resolution=64)


def test_tfds_build_round_trip(tmp_path, monkeypatch):
  settings = dict(resolution=32, num_identities=2, frames_per_identity=10)
  b = sth.build(str(tmp_path), **settings)
  train = tfds.data_source("synthetic_talking_heads", split="train", data_dir=str(tmp_path),
                           builder_kwargs=dict(config=b.builder_config))
  test = b.as_data_source(split="test")
  assert len(train) == 16 and len(test) == 4
  records = {"train": [train[i] for i in range(len(train))],
             "test": [test[i] for i in range(len(test))]}
  for identity in (0, 1):
    times = {s: [float(r["time"]) for r in rs if int(r["identity"]) == identity]
             for s, rs in records.items()}
    assert len(times["train"]) == 8 and len(times["test"]) == 2
    assert max(times["train"]) < min(times["test"])
  # Records are stored in generation order: identity, then time.
  assert [r["frame"] for r in records["train"]] == [*range(8), *range(10, 18)]
  assert [r["frame"] for r in records["test"]] == [8, 9, 18, 19]
  ex = records["test"][3]
  expected = dict(rgb=(np.uint8, (32, 32, 3)), depth=(np.float32, (32, 32)),
                  masks=(np.uint8, (32, 32, 4)), segmentation=(np.uint8, (32, 32)),
                  landmarks=(np.float32, (len(syn.LANDMARK_NAMES), 2)),
                  rotation=(np.float32, (3, 3)), translation=(np.float32, (3,)),
                  intrinsics=(np.float32, (3, 3)), expression=(np.float32, (5,)),
                  identity=(np.int64, ()), frame=(np.int64, ()), time=(np.float32, ()),
                  audio=(np.float32, (SR // FPS,)), audio_features=(np.float32, (16, 40)))
  for key, (dtype, shape) in expected.items():
    assert b.info.features[key].np_dtype == dtype and b.info.features[key].shape == shape, key
    if shape:   # arrays decode to numpy arrays, scalars to Python numbers
      assert ex[key].dtype == dtype and ex[key].shape == shape, key
    else:
      assert isinstance(ex[key], int if dtype == np.int64 else float), key
  identity, frame = int(ex["identity"]), int(ex["frame"])
  t = frame - identity * 10
  assert identity == 1 and t == 9 and float(ex["time"]) == pytest.approx(t / FPS)
  # The stored frame is exactly the generator's frame.
  fresh = sth.ground_truth(b.info.metadata, identity, ex["expression"], ex["rotation"],
                           ex["translation"])
  np.testing.assert_array_equal(ex["rgb"], sth.to_uint8(fresh["rgb"]))
  np.testing.assert_array_equal(ex["segmentation"], fresh["segmentation"])
  np.testing.assert_array_equal(ex["masks"], fresh["masks"].astype(np.uint8))
  seq = syn.sample_sequence(0, identity, 10, FPS, SR)
  np.testing.assert_array_equal(ex["expression"], seq["expression"][t])
  np.testing.assert_array_equal(ex["audio"], seq["audio"][t * 640:(t + 1) * 640])
  np.testing.assert_array_equal(
      ex["audio_features"], audio.frame_features(seq["audio"], SR, FPS, 10)[t])
  r, tr = syn.pose_matrix(*seq["yaw_pitch_roll"][t], seq["translation"][t])
  np.testing.assert_array_equal(ex["rotation"], r)
  np.testing.assert_array_equal(ex["intrinsics"], syn.camera_intrinsics(32))
  meta = b.info.metadata
  assert meta["head_box"] == [list(v) for v in syn.HEAD_BOX]
  assert list(meta["expression_names"]) == list(syn.EXPRESSION_NAMES)
  assert (meta["seed"], meta["resolution"], meta["num_identities"], meta["frames_per_identity"],
          meta["fps"], meta["sample_rate"]) == (0, 32, 2, 10, 25, SR)
  assert meta["generator_version"] == syn.GENERATOR_VERSION
  # ground_truth also takes the config; a build from another generator version is refused.
  np.testing.assert_array_equal(
      sth.ground_truth(b.builder_config, identity, ex["expression"], ex["rotation"],
                       ex["translation"])["rgb"], fresh["rgb"])
  with pytest.raises(ValueError, match="rebuild"):
    sth.ground_truth({**dict(meta), "generator_version": "0"}, 0, NEUTRAL, r, tr)
  # A second call reuses the finished build: nothing is rendered.
  monkeypatch.setattr(syn, "render", lambda *a, **k: pytest.fail("rebuilt"))
  again = sth.build(str(tmp_path), **settings)
  assert len(again.as_data_source(split="train")) == 16

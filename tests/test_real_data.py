"""Real talking-face videos -> talking_faces (prepare_data), face.py on single images, and MI-NeRF
training on the result. Uses ../shared/media (skips cleanly without it) and MediaPipe 0.10.21."""
import json
import os

import numpy as np
import pytest

MEDIA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "media")
pytestmark = pytest.mark.skipif(not os.path.isdir(MEDIA), reason="../shared/media is absent")
import mediapipe as mp  # installed by `make install`: missing is a failure

from minerf_jax import camera  # pylint: disable=wrong-import-position
from minerf_jax.data import face  # pylint: disable=g-import-not-at-top,wrong-import-position
from minerf_jax.data import preprocess  # pylint: disable=g-import-not-at-top,wrong-import-position
from minerf_jax.data import video  # pylint: disable=g-import-not-at-top,wrong-import-position
from minerf_jax.data.builders import talking_faces  # pylint: disable=wrong-import-position

RES = 64
SECONDS = 2


def _clip(name, seconds, size=None, start=0):
  """(frames, audio) of the first seconds of a media clip, optionally resized square."""
  import cv2
  v = video.read_video(os.path.join(MEDIA, name))
  n = int(seconds * 25)
  frames = v.frames[start:start + n]
  if size:
    frames = np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in frames])
  audio = None if v.audio is None else v.audio[int(start / 25 * 16000):][:n * 640]
  return frames, audio


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
  """A folder with two real 2-second clips, a clip with a cut, and three bad files."""
  d = tmp_path_factory.mktemp("videos")
  a, a_audio = _clip("tpsmm_driving.mp4", SECONDS, size=256)
  b, b_audio = _clip("sadtalker_WDA_KatieHill_000.mp4", SECONDS, size=256)
  video.write_video(str(d / "a_tpsmm.mp4"), a, 25, a_audio)
  video.write_video(str(d / "b_katie.mp4"), b, 25, b_audio)
  # A hard cut between two people: frames across it must not share a clip.
  video.write_video(str(d / "c_cut.mp4"), np.concatenate([a[:25], b[:25]]), 25,
                    np.concatenate([a_audio[:16000], b_audio[:16000]]))
  (d / "d_text.mp4").write_text("this is not a video\n")
  whole = (d / "a_tpsmm.mp4").read_bytes()
  (d / "e_truncated.mp4").write_bytes(whole[:len(whole) // 3])
  rng = np.random.default_rng(0)
  video.write_video(str(d / "f_noise.mp4"), rng.integers(0, 256, (50, 96, 96, 3), np.uint8), 25)
  return str(d)


@pytest.fixture(scope="module")
def built(videos, tmp_path_factory):
  out = str(tmp_path_factory.mktemp("tfds"))
  lines = []
  builder, processed, rebuilt = talking_faces.prepare(videos, out, resolution=RES, log=lines.append,
                                                      progress_bars=False)
  return dict(builder=builder, processed=processed, rebuilt=rebuilt, lines=lines, out=out,
              videos=videos)


def _records(builder, split):
  src = builder.as_data_source(split=split)
  return [src[i] for i in range(len(src))]


def test_bad_files_are_reported_and_skipped(built):
  skipped = {os.path.basename(p): r for p, r in built["processed"].skipped}
  assert set(skipped) == {"d_text.mp4", "e_truncated.mp4", "f_noise.mp4"}
  assert "unreadable" in skipped["d_text.mp4"]
  assert "no face" in skipped["f_noise.mp4"]
  for name in skipped:  # one line each, naming the file
    assert sum(name in line and line.startswith("SKIP") for line in built["lines"]) == 1
  kept = sorted(os.path.basename(p) for _, p, *_ in built["processed"].kept)
  assert kept == ["a_tpsmm.mp4", "b_katie.mp4", "c_cut.mp4"]


def test_frame_counts_and_splits(built):
  b = built["builder"]
  meta = dict(b.info.metadata)
  assert meta["num_identities"] == 3
  assert [s["frames"] for s in meta["sources"]] == [50, 50, 50]
  assert all(s["kept_frames"] == 50 for s in meta["sources"])
  train, test = _records(b, "train"), _records(b, "test")
  assert len(train) + len(test) == 150 and len(test) == 15  # last 10% of each video
  for identity in range(3):
    tr = [int(r["time"] * 25) for r in train if r["identity"] == identity]
    te = [int(r["time"] * 25) for r in test if r["identity"] == identity]
    assert max(tr) < min(te)  # split by time
  frames = sorted(int(r["frame"]) for r in train + test)
  assert frames == list(range(150))


def test_shot_cut_splits_clips(built):
  meta = dict(built["builder"].info.metadata)
  cuts = {s["file"]: s["shot_cuts"] for s in meta["sources"]}
  assert cuts == {"a_tpsmm.mp4": 0, "b_katie.mp4": 0, "c_cut.mp4": 1}
  cut_id = meta["identity_names"].index("c_cut")
  recs = _records(built["builder"], "train") + _records(built["builder"], "test")
  clip = {int(r["source_frame"]): int(r["clip"]) for r in recs if r["identity"] == cut_id}
  assert {clip[f] for f in range(25)} == {0} and {clip[f] for f in range(25, 50)} == {1}


def test_landmarks_pose_masks_audio(built):
  recs = _records(built["builder"], "train")
  a_id = dict(built["builder"].info.metadata)["identity_names"].index("a_tpsmm")
  a = [r for r in recs if r["identity"] == a_id]
  lm = np.stack([r["landmarks"] for r in a])
  assert lm.shape == (len(a), 478, 3)
  assert np.all(lm[..., :2] > 0) and np.all(lm[..., :2] < RES)  # the face lies inside the crop
  # Pose: the clip opens on a frontal face; its PnP pose reprojects the canonical model onto
  # the landmarks.
  yaw, pitch, _ = camera.euler_degrees(a[0]["rotation"])
  assert abs(yaw) < 15 and abs(pitch) < 20
  x = face.canonical_head()[list(face.RIGID)] @ a[0]["rotation"].T + a[0]["translation"]
  k = a[0]["intrinsics"]
  uv = x[:, :2] / x[:, 2:] * k[0, 0] + k[:2, 2]
  assert np.abs(uv - lm[0, list(face.RIGID), :2]).mean() < 0.03 * RES
  masks = np.stack([r["masks"] for r in a]).astype(bool)
  area = masks.mean((0, 1, 2))
  assert 0.1 < area[0] < 0.8  # head
  assert 0.002 < area[1] < 0.05 and 0.002 < area[2] < 0.06  # lips, eyes
  assert not (masks[..., 0] & masks[..., 3]).any()  # head and torso are disjoint
  assert (masks[..., 1] & ~masks[..., 0]).mean() < 1e-3  # lips lie on the head
  feats = np.stack([r["audio_features"] for r in a])
  assert feats.shape == (len(a), 16, 40) and np.isfinite(feats).all() and feats.std() > 0.5
  assert a[0]["audio"].shape == (640,) and all(int(r["has_audio"]) for r in a)
  expr = np.stack([r["expression"] for r in recs])
  assert expr.shape == (len(recs), 32) and abs(expr[:, 0].std() - 1) < 0.2


def test_rerun_reuses_dataset_and_cache(built):
  lines = []
  _, processed, rebuilt = talking_faces.prepare(built["videos"], built["out"], resolution=RES,
                                                log=lines.append, progress_bars=False)
  assert not rebuilt
  assert sum(line.startswith("cached") for line in lines) == 3
  assert len(processed.skipped) == 3


def test_single_image_and_no_face():
  crop = face.process_image(os.path.join(MEDIA, "tpsmm_source.png"), resolution=128)
  assert crop.rgb.shape == (128, 128, 3) and crop.masks.shape == (128, 128, 4)
  assert abs(camera.euler_degrees(crop.rotation)[0]) < 15
  lo, hi = crop.landmarks[:, :2].min(0), crop.landmarks[:, :2].max(0)
  assert np.all(lo > 0) and np.all(hi < 128) and (hi - lo).max() > 0.35 * 128
  with pytest.raises(face.NoFaceError, match="no face found"):
    face.process_image(np.random.default_rng(0).integers(0, 256, (96, 96, 3), np.uint8))


def _repeated_rows(image: np.ndarray) -> int:
  """How many top rows equal the first one (a replicated-edge streak is many)."""
  same = np.all(image == image[:1], axis=(1, 2))
  return int(np.argmin(same)) if not same.all() else len(image)


def test_a_head_touching_the_top_edge_is_cropped_without_streaks():
  """The portrait cut so that the hair touches the top of the frame (and the frame is wide): the
  crop box (twice the landmark box) runs far past the top. The fitted crop holds only real pixels;
  the replicating crop of the same box starts with rows that repeat the top row."""
  rgb = face.load_image(os.path.join(MEDIA, "tpsmm_source.png"))[150:]
  rgb = np.concatenate([rgb[:, :80][:, ::-1], rgb, rgb[:, -80:][:, ::-1]], axis=1)  # wider
  with face.FaceMesh() as mesh:
    lm = mesh.landmarks(rgb)
    raw = face.landmark_box(lm)
    assert raw[1] - raw[2] / 2 < -40    # the box starts well above the frame
    fitted = face.crop_face(rgb, lm, raw, 128, mesh)
    old = face.crop(rgb, raw, 128, edge="replicate")
  h, w = rgb.shape[:2]
  x0, y0, side = face.integer_box(fitted.box)
  assert 0 <= x0 and 0 <= y0 and x0 + side <= w and y0 + side <= h and side == min(h, w)
  assert _repeated_rows(old) > 10 and _repeated_rows(fitted.rgb) <= 1
  # The crop is the frame's own pixels at the fitted box, and the geometry follows that box: the
  # landmarks, the crop intrinsics and the pose project consistently into the crop.
  import cv2  # pylint: disable=g-import-not-at-top
  direct = cv2.resize(rgb[y0:y0 + side, x0:x0 + side], (128, 128), interpolation=cv2.INTER_AREA)
  np.testing.assert_array_equal(fitted.rgb, direct)
  lo, hi = fitted.landmarks[:, :2].min(0), fitted.landmarks[:, :2].max(0)
  assert np.all(lo > 0) and np.all(hi < 128)
  np.testing.assert_allclose(face.to_crop(lm, fitted.box, 128), fitted.landmarks, rtol=1e-6)
  assert abs(camera.euler_degrees(fitted.rotation)[0]) < 15
  with pytest.raises(ValueError, match="edge='pad'"):
    face.crop(rgb, raw, 128, edge="pad")


def test_smooth_boxes_keeps_constants_and_reduces_jitter():
  rng = np.random.default_rng(0)
  boxes = np.tile(np.array([[50.0, 60.0, 40.0]]), (40, 1))
  np.testing.assert_allclose(preprocess.smooth_boxes(boxes, 3.0), boxes, rtol=1e-12)
  noisy = boxes + rng.normal(0, 2, boxes.shape)
  assert preprocess.smooth_boxes(noisy, 3.0).std(0).max() < 0.5 * noisy.std(0).min()


def test_minerf_real_trains_and_renders_transfer(built, tmp_path):
  """configs/minerf_real.py:test trains on the dataset; launch.render's transfer video of A
  driven by B has B's frame count and B's audio."""
  from configs import minerf_real
  from launch import videos
  from minerf_jax.train import loop
  config = minerf_real.get_config("test")
  config.data.data_dir = built["out"]
  config.data.num_identities = 3
  workdir = str(tmp_path / "run")
  state = loop.train_and_evaluate(config, workdir)
  assert int(state.step) == config.total_steps
  ids = dict(built["builder"].info.metadata)["identity_names"]
  a, b = ids.index("a_tpsmm"), ids.index("b_katie")
  written = videos.render_videos(workdir, str(tmp_path / "videos"), "transfer", identity=a,
                                 driver=b, scale=1)
  clip = video.read_video(written["transfer"])
  assert len(clip.frames) == 5  # b's held-out frames (last 10% of 50)
  assert clip.frames.shape[1:] == (16, 32, 3)  # [B driving | A render] at image_size 16
  assert clip.audio is not None and len(clip.audio) > 0.15 * 16000
  # Speech in: configs/audio2exp_real.py:test on the same dataset, then launch.talk drives A
  # with B's clip as speech, head poses and blinks tracked from that clip.
  from configs import audio2exp_real  # pylint: disable=g-import-not-at-top
  from launch import talking  # pylint: disable=g-import-not-at-top
  from minerf_jax.data import sequences  # pylint: disable=g-import-not-at-top
  a2e = audio2exp_real.get_config("test")
  a2e.data.update(data_dir=built["out"], num_identities=3)
  seqs = sequences.real_sequences(a2e.data, "train")
  assert {s.identity for s in seqs} == {0, 1, 2} and all(len(s.audio) == len(s) * 640 for s in seqs)
  a2e_dir = str(tmp_path / "a2e")
  loop.train_and_evaluate(a2e, a2e_dir)
  speech = os.path.join(built["videos"], "b_katie.mp4")
  out = str(tmp_path / "talk.mp4")
  result = talking.talk(workdir, a2e_dir, speech, a, out, pose=f"from_video={speech}",
                        blinks="video", scale=1, progress=False)
  talked = video.read_video(out)
  # the 2-second clip at 25 fps, +1 frame at most: AAC pads the end of the clip's sound
  assert len(talked.frames) == result["frames"] and abs(result["frames"] - 50) <= 1
  assert talked.frames.shape[1:] == (16, 16, 3)
  assert abs(len(talked.audio) / 16000 - 2.0) < 0.05


def test_lokitalk_real_trains_and_talks(built, tmp_path):
  """configs/lokitalk_real.py:test trains on the real-clip dataset (MediaPipe region masks,
  blinks, stored audio features) and launch.talk drives it with a clip's speech, head poses and
  blinks; no audio model."""
  from configs import lokitalk_real  # pylint: disable=g-import-not-at-top
  from launch import talking  # pylint: disable=g-import-not-at-top
  from minerf_jax.train import loop  # pylint: disable=g-import-not-at-top
  config = lokitalk_real.get_config("test")
  config.data.update(data_dir=built["out"], num_identities=3)
  workdir = str(tmp_path / "run")
  state = loop.train_and_evaluate(config, workdir)
  assert int(state.step) == config.total_steps
  evals = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  evals = [m for m in evals if m.get("split") == "eval"]
  assert evals and np.isfinite(evals[-1]["heldout/lips_psnr"])
  ids = dict(built["builder"].info.metadata)["identity_names"]
  speech = os.path.join(built["videos"], "b_katie.mp4")
  out = str(tmp_path / "talk.mp4")
  result = talking.talk(workdir, None, speech, ids.index("a_tpsmm"), out,
                        pose=f"from_video={speech}", blinks="video", scale=1, progress=False)
  talked = video.read_video(out)
  assert len(talked.frames) == result["frames"] and abs(result["frames"] - 50) <= 1
  assert talked.frames.shape[1:] == (16, 16, 3)
  assert result["blinks"].shape == (result["frames"], 2)
  # talk_real takes the LokiTalk run alone: one 'audio' row per identity with a held-out run
  from launch import talk_eval  # pylint: disable=g-import-not-at-top
  res = talk_eval.real(workdir, None, min_frames=4)
  assert res["model"] == "lokitalk" and res["identities"]
  for row in res["identities"].values():
    assert set(row) == {"frames", "seconds", "real", "audio"}
    assert np.isfinite(row["audio"]["psnr"]) and 0 < row["audio"]["lpips"] < 1

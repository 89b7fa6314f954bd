"""launch.animate end to end: a tiny TPSMM run animates the real portrait with a real driving
clip (frame count, fps and audio of the mp4), and bad inputs end in one-line errors. Uses
../shared/media (skips cleanly without it) and MediaPipe 0.10.21."""
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

import _tb

MEDIA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "media")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = [pytest.mark.skipif(not os.path.isdir(MEDIA), reason="../shared/media is absent"),
              pytest.mark.slow]
import mediapipe  # noqa: F401  (a hard dependency: missing fails)
import av  # noqa: F401  (a hard dependency: missing fails)

from minerf_jax.data import video  # pylint: disable=g-import-not-at-top,wrong-import-position

SOURCE = os.path.join(MEDIA, "tpsmm_source.png")
CLIP_FRAMES = 25   # 1 s at 25 fps


@pytest.fixture(scope="module")
def run_dir(tpsmm_test_run):
  """A TPSMM run trained for the few steps of configs/tpsmm.py:test (conftest, once)."""
  return tpsmm_test_run[0]


@pytest.fixture(scope="module")
def driving(tmp_path_factory):
  """The first second of the real driving video, with its audio."""
  v = video.read_video(os.path.join(MEDIA, "tpsmm_driving.mp4"))
  assert v.audio is not None and v.fps == 25
  path = str(tmp_path_factory.mktemp("clip") / "driving_1s.mp4")
  video.write_video(path, v.frames[:CLIP_FRAMES], v.fps,
                    v.audio[:int(CLIP_FRAMES / v.fps * v.sample_rate)], v.sample_rate)
  return path


def _animate(*args):
  return subprocess.run([sys.executable, "-m", "launch.animate", *args], cwd=REPO,
                        capture_output=True, text=True, timeout=600)


def _last_line(stderr: str) -> str:
  """The last non-empty line of stderr (MediaPipe and TFLite write harmless lines before it)."""
  return [line for line in stderr.splitlines() if line.strip()][-1]


def _assert_one_line_error(proc, *needles):
  assert proc.returncode != 0, proc.stdout
  assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
  last = _last_line(proc.stderr)
  assert last.startswith("error: "), proc.stderr[-3000:]
  for needle in needles:
    assert needle in last, last


def test_animates_clip_with_its_frames_fps_and_audio(run_dir, driving, tmp_path):
  out = str(tmp_path / "out.mp4")
  proc = _animate(f"--checkpoint={run_dir}", f"--source={SOURCE}", f"--driving={driving}",
                  f"--out={out}", "--side_by_side")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert f"wrote {out}: {CLIP_FRAMES} frames at 25 fps" in proc.stdout.strip().splitlines()[-1]
  assert "animate (tpsmm)" in proc.stderr and "frame/s" in proc.stderr   # tqdm progress
  clip = video.read_video(out)
  assert clip.fps == 25
  assert clip.frames.shape == (CLIP_FRAMES, 256, 3 * 256, 3)   # 3 panels of 32 px, x8
  assert clip.audio is not None
  assert len(clip.audio) / clip.sample_rate == pytest.approx(CLIP_FRAMES / 25, abs=0.15)
  assert np.abs(clip.audio).max() > 0.01   # the driving speech, not silence
  # The result panel is an image of the source person, not the driving frame copied.
  result, drv = clip.frames[:, :, 512:].astype(float), clip.frames[:, :, 256:512].astype(float)
  assert np.abs(result - drv).mean() > 5.0


def test_source_without_face(run_dir, driving, tmp_path):
  import cv2  # pylint: disable=g-import-not-at-top
  noise = str(tmp_path / "noise.png")
  cv2.imwrite(noise, np.random.default_rng(0).integers(0, 256, (128, 128, 3), np.uint8))
  proc = _animate(f"--checkpoint={run_dir}", f"--source={noise}", f"--driving={driving}",
                  f"--out={tmp_path / 'out.mp4'}")
  _assert_one_line_error(proc, noise, "no face")
  assert not os.path.exists(tmp_path / "out.mp4")


def test_unreadable_driving_video(run_dir, tmp_path):
  text = tmp_path / "not_a_video.mp4"
  text.write_text("this is not a video\n")
  proc = _animate(f"--checkpoint={run_dir}", f"--source={SOURCE}", f"--driving={text}",
                  f"--out={tmp_path / 'out.mp4'}")
  _assert_one_line_error(proc, str(text), "unreadable")


def test_checkpoint_of_another_model(run_dir, driving, tmp_path):
  proc = _animate(f"--checkpoint={run_dir}", f"--source={SOURCE}", f"--driving={driving}",
                  f"--out={tmp_path / 'out.mp4'}", "--config=configs/mcnet.py:test")
  _assert_one_line_error(proc, run_dir, "'tpsmm'", "'mcnet'")


def test_directory_without_checkpoint(driving, tmp_path):
  proc = _animate(f"--checkpoint={tmp_path}", f"--source={SOURCE}", f"--driving={driving}",
                  f"--out={tmp_path / 'out.mp4'}")
  _assert_one_line_error(proc, str(tmp_path), "no checkpoint")


# --------------------------------------------------------------------------- Head3D: --subject


@pytest.fixture(scope="module")
def subject(tmp_path_factory):
  """The first second of another real clip: the subject video."""
  v = video.read_video(os.path.join(MEDIA, "videoretalking_face2.mp4"))
  path = str(tmp_path_factory.mktemp("subject") / "subject_1s.mp4")
  n = int(round(v.fps))
  video.write_video(path, v.frames[:n], v.fps)
  return path


def test_head3d_animates_a_subject_video_with_novel_views(head3d_test_run, subject, driving,
                                                          tmp_path):
  out = str(tmp_path / "h3d.mp4")
  proc = _animate(f"--checkpoint={head3d_test_run}", f"--subject={subject}",
                  f"--driving={driving}", f"--out={out}", "--yaw=0,25")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "animate (head3d, yaw 25 pitch 0)" in proc.stderr
  clips = [video.read_video(str(tmp_path / f"h3d_yaw{y}_pitch0.mp4")) for y in (0, 25)]
  for clip in clips:
    assert clip.fps == 25 and clip.frames.shape == (CLIP_FRAMES, 256, 256, 3)
    assert clip.audio is not None and np.abs(clip.audio).max() > 0.01
  # The turned view is another image (the rendered head moved), not the same frames.
  assert np.abs(clips[0].frames.astype(float) - clips[1].frames.astype(float)).mean() > 0.1


def test_head3d_and_one_shot_inputs_are_not_mixed(head3d_test_run, run_dir, subject, driving,
                                                  tmp_path):
  out = f"--out={tmp_path / 'out.mp4'}"
  _assert_one_line_error(_animate(f"--checkpoint={head3d_test_run}", f"--source={SOURCE}",
                                  f"--driving={driving}", out), "--subject=VIDEO")
  _assert_one_line_error(_animate(f"--checkpoint={run_dir}", f"--subject={subject}",
                                  f"--driving={driving}", out), "pass --source=IMAGE")
  _assert_one_line_error(_animate(f"--checkpoint={run_dir}", f"--source={SOURCE}",
                                  f"--driving={driving}", out, "--yaw=20"), "novel views")


def test_evaluate_restores_a_head3d_runs_batch_statistics(head3d_test_run):
  """``launch.evaluate``'s path (runs.evaluate) gives ``model.evaluate`` a Head3D run's keypoint
  BatchNorm statistics with its parameters (it passed none, and evaluate stopped)."""
  from launch import runs  # pylint: disable=g-import-not-at-top
  from minerf_jax.train import checkpoint  # pylint: disable=g-import-not-at-top
  config = runs.load_config(head3d_test_run)
  stats = runs.batch_stats_kwargs(head3d_test_run, config)["batch_stats"]
  saved = checkpoint.load_params(head3d_test_run, model_name="head3d", item="batch_stats")
  leaves = jax.tree.leaves(stats)
  assert leaves and all(np.array_equal(a, b) for a, b in zip(leaves, jax.tree.leaves(saved)))
  assert any(np.abs(np.asarray(x)).max() > 0 for x in leaves)


def test_render_canonical_head_of_a_head3d_run(head3d_test_run, run_dir, tmp_path):
  """``launch.render --mode=canonical``: the PNG strip [K subject frames | frontal renders after
  1..K frames | generator's truth], the orbit mp4 [render | truth] and a face PSNR per number of
  folded frames; a one-shot run is a one-line error."""
  render = lambda *args: subprocess.run([sys.executable, "-m", "launch.render", *args], cwd=REPO,
                                        capture_output=True, text=True, timeout=600)
  proc = render(f"--workdir={head3d_test_run}", "--mode=canonical", f"--out_dir={tmp_path}",
                "--orbit_frames=4", "--scale=2")
  assert proc.returncode == 0, proc.stderr[-3000:]
  psnr = {line.split(":")[0]: float(line.split()[1]) for line in proc.stdout.splitlines()
          if line.startswith("psnr_k")}
  assert set(psnr) == {"psnr_k1", "psnr_k2"} and all(np.isfinite(list(psnr.values())))
  from PIL import Image  # pylint: disable=g-import-not-at-top
  strip = np.asarray(Image.open(tmp_path / "canonical_clip0.png"))
  assert strip.shape == (64, 64 * 5, 3)        # 32 px x2: 2 subject, 2 renders, 1 truth
  orbit = video.read_video(str(tmp_path / "canonical_orbit_clip0.mp4"), with_audio=False)
  assert orbit.frames.shape == (4, 64, 128, 3)
  _assert_one_line_error(render(f"--workdir={run_dir}", "--mode=canonical",
                                f"--out_dir={tmp_path}"), "run of 'tpsmm'")
  _assert_one_line_error(render(f"--workdir={head3d_test_run}", "--mode=orbit",
                                f"--out_dir={tmp_path}"), "--mode=canonical")


def test_head3d_run_logs_eval_strips_and_a_video(head3d_test_run):
  media = _tb.media(head3d_test_run)
  _, strip = media["eval/reconstruction"]
  _, video = media["eval/reconstruction_video"]
  assert strip.shape[1] == 3 * video.shape[1] and video.shape[0] > 1
  assert video.shape[2] == 3 * video.shape[1]

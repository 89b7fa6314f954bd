"""The absl apps end to end on the tiny configs: demo (train + evaluate + render), evaluate,
render, talk; their outputs are checked (metrics JSON, mp4 frame counts and audio, one-line
errors)."""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import _tb

from conftest import run_module as _run
from minerf_jax.data import video

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def demo_run(minerf_demo_run):
  return minerf_demo_run


@pytest.fixture(scope="module")
def a2e_run(a2e_test_run):
  return a2e_test_run


def test_demo_last_line_and_outputs(demo_run):
  out, workdir, _ = demo_run
  last = out.strip().splitlines()[-1]
  m = re.fullmatch(r"DEMO psnr=([\d.]+) ssim=([\d.]+) transfer_psnr=([\d.]+) "
                   r"transfer_face_psnr=([\d.]+) leakage=([\d.]+) video=(\S+)", last)
  assert m, last
  results = json.load(open(os.path.join(workdir, "eval.json")))
  assert float(m.group(1)) == pytest.approx(results["heldout/psnr"], abs=0.01)
  assert 0.0 <= float(m.group(2)) <= 1.0
  assert float(m.group(4)) == pytest.approx(results["transfer/face_psnr"], abs=0.01)
  assert float(m.group(5)) == pytest.approx(results["transfer/leakage"], abs=0.001)
  clip = video.read_video(m.group(6))
  assert clip.frames.shape[1:] == (16 * 4, 16 * 4 * 3, 3)   # 3 panels, upscaled x4
  assert clip.audio is not None and np.abs(clip.audio).max() > 0.01   # driver's speech muxed


def test_evaluate_and_render_apps(demo_run, tmp_path):
  _, workdir, data_dir = demo_run
  out_json = str(tmp_path / "metrics.json")
  _run("launch.evaluate", f"--workdir={workdir}", f"--out={out_json}", data_dir=data_dir)
  results = json.load(open(out_json))
  assert {"heldout/psnr", "heldout/ssim", "transfer/psnr", "novel_view/psnr"} <= set(results)
  assert results == pytest.approx(json.load(open(os.path.join(workdir, "eval.json"))))
  out_dir = str(tmp_path / "videos")
  _run("launch.render", f"--workdir={workdir}", f"--out_dir={out_dir}", "--mode=orbit",
       "--orbit_frames=10", "--scale=1", data_dir=data_dir)
  orbit = video.read_video(os.path.join(out_dir, "orbit_id0.mp4"))
  assert orbit.frames.shape == (10, 16, 32, 3)
  # The orbit turns the head: first and middle frames differ.
  assert np.abs(orbit.frames[0].astype(float) - orbit.frames[2].astype(float)).mean() > 1.0


# ----------------------------------------------------------------------------------------------
# launch.talk: speech in, talking head out.


def _speech(path, seconds, rate=16000, amplitude=0.3):
  import wave  # pylint: disable=g-import-not-at-top
  from minerf_jax.data import synthetic  # pylint: disable=g-import-not-at-top
  signal = synthetic.speech_audio(np.random.default_rng(0), int(seconds * rate), rate)
  pcm = (np.clip(signal * amplitude / 0.3, -1, 1) * 32767).astype(np.int16)
  with wave.open(str(path), "wb") as f:
    f.setnchannels(1)
    f.setsampwidth(2)
    f.setframerate(rate)
    f.writeframes(pcm.tobytes())
  return str(path)


def test_talk_writes_the_speech_video(demo_run, a2e_run, tmp_path):
  _, workdir, data_dir = demo_run
  speech = _speech(tmp_path / "speech.wav", 1.3)
  out = str(tmp_path / "talk.mp4")
  stdout = _run("launch.talk", f"--workdir={workdir}", f"--audio_model={a2e_run}",
                f"--audio={speech}", "--identity=1", f"--out={out}", "--scale=2", "--chunk=8",
                data_dir=data_dir)
  m = re.search(r"TALK frames=(\d+) fps=25 seconds=([\d.]+)", stdout)
  assert m and int(m.group(1)) == round(1.3 * 25), stdout
  clip = video.read_video(out)
  assert clip.frames.shape == (round(1.3 * 25), 32, 32, 3)
  assert clip.fps == 25
  assert abs(len(clip.audio) / 16000 - 1.3) < 0.05            # the speech, muxed in
  assert clip.frames.std(0).max() > 1.0        # frames change with the speech (6-step model)


def test_talk_bad_inputs_say_one_line_and_write_nothing(demo_run, a2e_run, tmp_path):
  from launch import talking  # pylint: disable=g-import-not-at-top
  _, workdir, data_dir = demo_run
  os.environ["MINERF_DATA_DIR"] = data_dir
  good = _speech(tmp_path / "good.wav", 0.5)
  mute = video.write_video(str(tmp_path / "mute.mp4"), np.zeros((5, 16, 16, 3), np.uint8))
  silent = _speech(tmp_path / "silent.wav", 1.0, amplitude=0.0)
  short = _speech(tmp_path / "short.wav", 0.01)
  junk = tmp_path / "junk.mp3"
  junk.write_bytes(b"\x00garbage" * 64)
  out = str(tmp_path / "out.mp4")
  cases = [
      (dict(audio=mute), "no audio stream"),
      (dict(audio=silent), "silence only"),
      (dict(audio=short), "less than one video frame"),
      (dict(audio=str(junk)), "unreadable"),
      (dict(workdir=a2e_run), "is a run of model 'audio2exp'"),
      (dict(audio_model=workdir), "is a run of model 'minerf'"),
      (dict(identity=7), "identities 0..1"),
      (dict(pose="from_video=" + mute), "needs a run on real videos"),
      (dict(audio_model=None), "takes expressions: pass --audio_model"),
  ]
  for overrides, message in cases:
    kw = dict(workdir=workdir, audio_model=a2e_run, audio=good, identity=0)
    kw.update(overrides)
    with pytest.raises(talking.TalkError, match=message) as err:
      talking.talk(kw.pop("workdir"), kw.pop("audio_model"), kw.pop("audio"), kw.pop("identity"),
                   out, progress=False, **kw)
    assert "\n" not in str(err.value)
    assert not os.path.exists(out) and not os.path.exists(out + ".tmp.mp4")
  proc = subprocess.run([sys.executable, "-m", "launch.talk", f"--workdir={workdir}",
                         f"--audio_model={a2e_run}", f"--audio={silent}", f"--out={out}"],
                        cwd=REPO, capture_output=True, text=True, timeout=600,
                        env={**os.environ, "MINERF_DATA_DIR": data_dir})
  assert proc.returncode != 0
  assert proc.stderr.strip().splitlines()[-1].startswith("error: --audio=")
  assert not os.path.exists(out)


# ----------------------------------------------------------------------------------------------
# LokiTalk runs through the same launchers.


def test_lokitalk_run_evaluates_renders_and_talks(demo_run, lokitalk_test_run, tmp_path):
  from launch import talking  # pylint: disable=g-import-not-at-top
  _, _, data_dir = demo_run
  workdir = lokitalk_test_run
  out_json = str(tmp_path / "metrics.json")
  _run("launch.evaluate", f"--workdir={workdir}", f"--out={out_json}", data_dir=data_dir)
  results = json.load(open(out_json))
  for key in ("heldout/psnr", "heldout/lips_psnr", "heldout/eyes_psnr", "heldout/face_psnr",
              "heldout/torso_neck_psnr", "heldout/region_recall_lips"):
    assert np.isfinite(results[key]), key
  out_dir = str(tmp_path / "videos")
  _run("launch.render", f"--workdir={workdir}", f"--out_dir={out_dir}", "--mode=transfer",
       "--scale=1", data_dir=data_dir)
  transfer = video.read_video(os.path.join(out_dir, "transfer_id0_from_id1.mp4"))
  assert transfer.frames.shape[1:] == (16, 48, 3) and transfer.audio is not None
  speech = _speech(tmp_path / "speech.wav", 1.0)
  out = str(tmp_path / "talk.mp4")
  stdout = _run("launch.talk", f"--workdir={workdir}", f"--audio={speech}", "--identity=1",
                f"--out={out}", "--scale=1", "--chunk=10", data_dir=data_dir)
  m = re.search(r"TALK frames=(\d+) fps=25 seconds=([\d.]+)", stdout)
  assert m and int(m.group(1)) == 25, stdout
  clip = video.read_video(out)
  assert clip.frames.shape == (25, 16, 16, 3) and abs(len(clip.audio) / 16000 - 1.0) < 0.05
  os.environ["MINERF_DATA_DIR"] = data_dir
  with pytest.raises(talking.TalkError, match="drop --audio_model"):
    talking.talk(workdir, workdir, speech, 0, str(tmp_path / "x.mp4"), progress=False)
  with pytest.raises(talking.TalkError, match="identities 0..1"):
    talking.talk(workdir, None, speech, 5, str(tmp_path / "x.mp4"), progress=False)
  assert not os.path.exists(str(tmp_path / "x.mp4"))


def _assert_media(workdir, strips, video, video_width):
  """Eval strips ``{tag: rows}`` and one eval video ``tag`` (frames wide ``video_width``
  panels) in the run's TensorBoard events, at its last evaluation."""
  media = _tb.media(workdir)
  steps = {step for step, _ in media.values()}
  assert len(steps) == 1, media.keys()
  for tag, rows in strips.items():
    _, frames = media[tag]
    assert frames.shape[0] == 1 and frames.shape[1] % rows == 0, (tag, frames.shape)
    assert 0 < frames.std()  # not a blank image
  _, frames = media[video]
  assert frames.shape[0] > 1 and frames.shape[2] == video_width * frames.shape[1]
  assert np.abs(np.diff(frames.astype(np.float32), axis=0)).mean() > 0  # it moves


def test_nerf_runs_log_eval_strips_and_a_video(demo_run, lokitalk_test_run):
  _, workdir, _ = demo_run
  _assert_media(workdir, {"eval/heldout": 2, "eval/transfer": 3, "eval/novel_view": 2},
                "eval/heldout_video", 2)
  _assert_media(lokitalk_test_run, {"eval/heldout": 2}, "eval/heldout_video", 2)

"""The absl apps end to end on the tiny config: demo (train + evaluate + render), evaluate,
render; their outputs are checked (metrics JSON, mp4 frame counts and audio)."""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from minerf_jax.data import video

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(module, *args, data_dir):
  proc = subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True,
                        text=True, timeout=600, env={**os.environ, "MINERF_DATA_DIR": data_dir})
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc.stdout


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
  root = tmp_path_factory.mktemp("demo")
  data_dir, workdir = str(root / "tfds"), str(root / "run")
  out = _run("launch.demo", "--config=configs/minerf.py:test", f"--workdir={workdir}",
             data_dir=data_dir)
  return out, workdir, data_dir


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

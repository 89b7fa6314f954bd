"""Every launcher answers a user's mistake with one line and no traceback (``launch/cli.py``), and
a dataset deleted or half-written under a run is named in one line (``pipeline.records``)."""
import glob
import os
import subprocess
import sys

import pytest

from configs import minerf
from minerf_jax.data import pipeline

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(module, *args, data_dir=None, timeout=600):
  env = dict(os.environ)
  if data_dir:
    env["MINERF_DATA_DIR"] = str(data_dir)
  return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True,
                        text=True, timeout=timeout, env=env)


def assert_one_line_error(proc, *needles):
  """Exit status 1, no traceback, and exactly one ``error:`` line, the last one of stderr,
  naming each needle (other stderr lines may be a dataset build's progress bars)."""
  assert proc.returncode == 1, (proc.returncode, proc.stderr[-3000:])
  assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
  lines = [line for line in proc.stderr.splitlines() if line.strip()]
  errors = [line for line in lines if line.startswith("error:")]
  assert len(errors) == 1 and lines[-1] == errors[0], proc.stderr[-3000:]
  for needle in needles:
    assert needle in errors[0], errors[0]
  return errors[0]


BAD_INPUTS = [
    # (module, args, what the line must name)
    ("launch.train", ["--config=configs/minerf.py:test"], ["--workdir is required"]),
    ("launch.train", ["--workdir={tmp}/w", "--config=configs/minerf.py:tset"],
     ["--config=configs/minerf.py:tset", "unknown variant 'tset'"]),
    ("launch.train", ["--workdir={tmp}/w", "--config=configs/nope.py"], ["configs/nope.py"]),
    ("launch.train", ["--workdir={tmp}/w", "--config=configs/minerf.py:test",
                      "--config.optimizer.schedule=bogus"],
     ["config.optimizer.schedule='bogus'", "exponential"]),
    ("launch.train", ["--workdir={tmp}/w", "--config=configs/minerf.py:test", "extra"],
     ["unexpected arguments: extra"]),
    ("launch.evaluate", [], ["--workdir is required"]),
    ("launch.evaluate", ["--workdir={tmp}/none"], ["{tmp}/none/config.json not found"]),
    ("launch.render", [], ["--workdir is required"]),
    ("launch.render", ["--workdir={tmp}/none"], ["{tmp}/none/config.json not found"]),
    ("launch.render", ["--workdir={tmp}/none", "--mode=sideways"], ["--mode", "sideways"]),
    ("launch.demo", ["--workdir={tmp}/d", "--config=configs/minerf.py:tset"],
     ["unknown variant 'tset'"]),
    ("launch.animate", ["--checkpoint={tmp}/none", "--driving=x.mp4", "--out={tmp}/o.mp4"],
     ["--source", "--subject"]),
    ("launch.convert", ["--model=tpsmm", "--workdir={tmp}/c"], ["--torch_checkpoint"]),
    ("launch.prepare_data", ["--videos={tmp}/none"], ["--out is required"]),
    ("launch.prepare_data", ["--videos={tmp}/none", "--out={tmp}/data"], ["{tmp}/none"]),
    ("launch.benchmark", ["--suite=bogus"], ["--suite", "bogus"]),
    ("launch.talk", ["--workdir={tmp}/none", "--audio_model={tmp}/none", "--audio=x.wav",
                     "--out={tmp}/t.mp4"],
     ["{tmp}/none"]),
]


@pytest.mark.parametrize("module,args,needles", BAD_INPUTS,
                         ids=[f"{m.split('.')[1]}-{i}" for i, (m, _, _) in enumerate(BAD_INPUTS)])
def test_bad_input_is_one_line(tmp_path, module, args, needles):
  fill = lambda text: text.replace("{tmp}", str(tmp_path))
  assert_one_line_error(_run(module, *map(fill, args)), *map(fill, needles))


def test_traceback_flag_shows_the_traceback(tmp_path):
  proc = _run("launch.evaluate", f"--workdir={tmp_path}", "--traceback")
  assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_invalid_config_value_found_while_building_is_one_line(tmp_path):
  proc = _run("launch.train", f"--workdir={tmp_path / 'w'}", "--config=configs/minerf.py:test",
              "--config.model.fusion=bogus", data_dir=tmp_path / "tfds")
  assert_one_line_error(proc, "config.model.fusion='bogus'", "hadamard")


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
  """(config, builder) of the minerf ':test' synthetic dataset in a fresh data_dir."""
  config = minerf.get_config("test")
  config.data.data_dir = str(tmp_path_factory.mktemp("tfds"))
  return config, pipeline.dataset_builder(config.data)


def _shard(builder, split):
  (path,) = glob.glob(os.path.join(builder.data_dir, f"*-{split}.array_record-*"))
  return path


def test_a_deleted_or_truncated_split_file_is_named_in_one_line(tiny_dataset, tmp_path):
  config, builder = tiny_dataset
  path = _shard(builder, "test")
  saved = open(path, "rb").read()
  try:
    with open(path, "r+b") as f:
      f.truncate(len(saved) // 3)
    with pytest.raises(pipeline.DatasetError, match=f"dataset {builder.data_dir}: split 'test' "
                       "is unreadable .*rebuilds itself"):
      pipeline.load_frames(builder, "test", (0, 1))
    os.remove(path)
    with pytest.raises(pipeline.DatasetError) as err:
      pipeline.load_frames(builder, "test", (0, 1))
    assert str(err.value) == (
        f"dataset {builder.data_dir} is incomplete: {os.path.basename(path)} is missing (deleted "
        "or half-written); delete it and rerun: the synthetic dataset rebuilds itself")
    # ... and through the launcher, before any training.
    proc = _run("launch.train", f"--workdir={tmp_path / 'w'}", "--config=configs/minerf.py:test",
                f"--config.data.data_dir={config.data.data_dir}")
    assert_one_line_error(proc, builder.data_dir, os.path.basename(path), "is missing")
  finally:
    with open(path, "wb") as f:
      f.write(saved)
  assert len(pipeline.load_frames(builder, "test", (0, 1))) > 0

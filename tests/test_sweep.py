"""Sweeps: ``configs/hyper.py`` points and names, and ``launch.sweep`` end to end on
``configs/minerf.py:test`` (run, ``kill -9`` of the sweep, re-run finishing only what was
missing, ``--collect``)."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from configs import hyper
from configs import lokitalk
from configs import mcnet
from configs import minerf
from configs import mrfa
from launch import sweeps

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_product_zip_and_names():
  points = hyper.product(hyper.sweep("model.fusion", ("hadamard", "concat")), hyper.seeds(2))
  assert [hyper.overrides(p) for p in points] == [
      {"model.fusion": "hadamard", "seed": 0}, {"model.fusion": "hadamard", "seed": 1},
      {"model.fusion": "concat", "seed": 0}, {"model.fusion": "concat", "seed": 1}]
  assert [p["_name"] for p in points] == ["fusion-hadamard_seed-0", "fusion-hadamard_seed-1",
                                          "fusion-concat_seed-0", "fusion-concat_seed-1"]
  assert [p["_group"] for p in points] == ["fusion-hadamard"] * 2 + ["fusion-concat"] * 2
  zipped = hyper.zipped(hyper.sweep("optimizer.lr", (1e-3, 2e-3)),
                        hyper.sweep("total_steps", (10, 20)))
  assert [hyper.overrides(p) for p in zipped] == [{"optimizer.lr": 1e-3, "total_steps": 10},
                                                  {"optimizer.lr": 2e-3, "total_steps": 20}]
  with pytest.raises(ValueError, match="different lengths"):
    hyper.zipped(hyper.sweep("a", (1, 2)), hyper.sweep("b", (1,)))
  with pytest.raises(ValueError, match="both set"):
    hyper.product(hyper.sweep("a", (1,)), hyper.sweep("a", (2,)))
  named = hyper.product(hyper.variants({"pure": {"m.x": 1, "m.y": 2}}), hyper.seeds(1))
  assert named == [{"m.x": 1, "m.y": 2, "seed": 0, "_name": "pure_seed-0", "_group": "pure"}]


def test_shipped_sweeps_build_and_apply_to_their_configs():
  cases = [(minerf, "", "fusion", 15), (mcnet, "test", "memory", 6),
           (mrfa, "tpsmm_test", "refine_steps", 9), (lokitalk, "test", "ablation", 12)]
  for module, variant, name, count in cases:
    config = module.get_config(variant)
    points = module.get_sweep(name, config)
    assert len(points) == count, (module.__name__, name)
    for point in points:  # every override names a declared field with a value of its type
      config.copy_and_resolve_references().update_from_flattened_dict(hyper.overrides(point))
  with pytest.raises(ValueError, match="unknown sweep 'fusoin'; use one of"):
    minerf.get_sweep("fusoin")
  with pytest.raises(ValueError, match="tpsmm"):
    mrfa.get_sweep("refine_steps", mrfa.get_config("test"))


def test_collect_means_stds_csv_and_png(tmp_path):
  points = hyper.product(hyper.sweep("model.fusion", ("a", "b")), hyper.seeds(2))
  (tmp_path / sweeps.DEFINITION).write_text(json.dumps(
      {"config": "configs/x.py", "sweep": "s", "base_overrides": [], "points": points}))
  values = {"fusion-a_seed-0": 10.0, "fusion-a_seed-1": 12.0, "fusion-b_seed-0": 20.0}
  for point in points:
    run = tmp_path / point["_name"]
    run.mkdir()
    if point["_name"] not in values:
      continue  # the failed point
    (run / sweeps.POINT_STATUS).write_text(json.dumps({"status": "done"}))
    with open(run / "metrics.jsonl", "w") as f:
      for step in (1, 2):
        f.write(json.dumps({"split": "train", "step": step, "loss": 1.0 / step}) + "\n")
      f.write(json.dumps({"split": "eval", "step": 2, "psnr": values[point["_name"]]}) + "\n")
  summary = sweeps.collect(str(tmp_path))
  a = summary["groups"]["fusion-a"]["metrics"]["psnr"]
  assert (a["mean"], a["n"]) == (11.0, 2) and a["std"] == pytest.approx(2 ** 0.5)
  assert summary["groups"]["fusion-b"]["metrics"]["psnr"]["values"] == [20.0]
  table = sweeps.markdown_table(summary)
  assert "| psnr | 11 +- 1.4 (2) | 20 +- 0 (1) |" in table
  assert "| points done | 2/2 | 1/2 |" in table
  csv_lines = (tmp_path / "collect.csv").read_text().splitlines()
  assert len(csv_lines) == 5 and "not run" in csv_lines[-1]
  assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _sweep(*args, data_dir):
  return [sys.executable, "-m", "launch.sweep", "--config=configs/minerf.py:test", "--sweep=test",
          *args], dict(os.environ, MINERF_DATA_DIR=str(data_dir))


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory):
  """The ':test' sweep of configs/minerf.py, killed with SIGKILL once its first point is done,
  then re-run to the end: (root, data_dir, killed run's output, re-run)."""
  root = tmp_path_factory.mktemp("sweep") / "root"
  data_dir = root.parent / "tfds"
  cmd, env = _sweep(f"--root={root}", data_dir=data_dir)
  proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
  first = root / "hadamard_seed-0" / sweeps.POINT_STATUS
  deadline = time.time() + 600
  while not first.exists() and proc.poll() is None and time.time() < deadline:
    time.sleep(0.5)
  assert first.exists(), proc.communicate()[0][-3000:] if proc.poll() is not None else "timeout"
  proc.send_signal(signal.SIGKILL)
  out = proc.communicate()[0]
  assert proc.returncode == -signal.SIGKILL
  # The running point got SIGTERM from the kernel when the sweep died and stopped by itself.
  second = root / "hadamard_seed-1"
  deadline = time.time() + 120
  while time.time() < deadline and "process ended" not in _state(second):
    time.sleep(0.5)
  assert "process ended" in _state(second)
  rerun = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
  return root, data_dir, out, rerun


@pytest.mark.slow
def test_sweep_survives_kill_9_then_finishes_only_what_is_missing_and_collects(finished_sweep):
  root, data_dir, out, rerun = finished_sweep
  assert "hadamard_seed-0: done" in out
  assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
  assert "[1/4] hadamard_seed-0: finished before, skipped" in rerun.stdout
  assert "sweep test: 3 trained, 1 finished before, 0 failed" in rerun.stdout
  for name in ("hadamard_seed-0", "hadamard_seed-1", "concat_seed-0", "concat_seed-1"):
    assert json.loads((root / name / sweeps.POINT_STATUS).read_text())["status"] == "done"
  config = json.loads((root / "concat_seed-1" / "config.json").read_text())
  assert config["model"]["fusion"] == "concat" and config["seed"] == 1

  collect = subprocess.run([sys.executable, "-m", "launch.sweep", f"--root={root}", "--collect",
                            "--metrics=heldout/psnr,transfer/psnr"], cwd=REPO,
                           capture_output=True, text=True, timeout=300)
  assert collect.returncode == 0, collect.stderr[-3000:]
  lines = collect.stdout.splitlines()
  assert lines[0] == "| metric | hadamard | concat |"
  assert lines[2].startswith("| heldout/psnr | ") and lines[2].count("(2)") == 2
  assert (root / "curves.png").exists() and (root / "collect.csv").exists()


@pytest.mark.slow
def test_sweeps_notebook_runs(finished_sweep, monkeypatch):
  root, data_dir, _, _ = finished_sweep
  from test_notebook import execute  # pylint: disable=g-import-not-at-top
  monkeypatch.setenv("MPLBACKEND", "Agg")
  monkeypatch.setenv("MINERF_DATA_DIR", str(data_dir))
  monkeypatch.setenv("MINERF_NOTEBOOK_CONFIG", "configs/minerf.py:test")
  monkeypatch.setenv("MINERF_NOTEBOOK_SWEEP", "test")
  monkeypatch.setenv("MINERF_NOTEBOOK_ROOT", str(root))
  monkeypatch.setenv("MINERF_NOTEBOOK_OVERRIDES", "")
  namespace = execute("sweeps.ipynb")
  assert "4 finished before" in namespace["run"].stdout   # nothing retrained
  assert namespace["table"].splitlines()[0] == "| metric | hadamard | concat |"
  assert namespace["curves"].ndim == 3


def _state(workdir) -> str:
  """'process ended' once no process holds the point's train.log open (its run stopped)."""
  log = os.path.realpath(workdir / sweeps.LOG)
  for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
      fds = os.listdir(f"/proc/{pid}/fd")
      if any(os.path.realpath(f"/proc/{pid}/fd/{fd}") == log for fd in fds):
        return "running"
    except OSError:
      continue
  return "process ended"

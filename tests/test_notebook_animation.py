"""The animate and head3d notebooks run top to bottom on copies of the session's trained tiny
runs (their training cells find them trained and return)."""
import os
import shutil

from configs import head3d as head3d_config
from configs import tpsmm as tpsmm_config
from test_notebook import execute


def _notebook_env(monkeypatch, workdir, data_dir, steps):
  monkeypatch.setenv("MPLBACKEND", "Agg")
  monkeypatch.setenv("MINERF_NOTEBOOK_VARIANT", "test")
  monkeypatch.setenv("MINERF_NOTEBOOK_STEPS", str(steps))
  monkeypatch.setenv("MINERF_NOTEBOOK_WORKDIR", str(workdir))
  monkeypatch.setenv("MINERF_DATA_DIR", str(data_dir))


def test_animate_notebook_runs(tpsmm_test_run, tmp_path, monkeypatch):
  run, _ = tpsmm_test_run
  shutil.copytree(run, tmp_path / "run")
  _notebook_env(monkeypatch, tmp_path / "run", os.path.join(os.path.dirname(run), "tfds"),
                tpsmm_config.get_config("test").total_steps)
  monkeypatch.setenv("MINERF_NOTEBOOK_MODEL", "tpsmm")
  namespace = execute("animate.ipynb")
  result, driving, source = namespace["result"], namespace["driving"], namespace["source"]
  assert result.shape == driving.shape and result.shape[1:] == source.shape
  assert 0.0 <= result.min() and result.max() <= 1.0
  assert namespace["strip"].shape == (3 * source.shape[0], len(namespace["idx"]) * source.shape[1],
                                      3)


def test_head3d_notebook_runs(head3d_test_run, tmp_path, monkeypatch):
  shutil.copytree(head3d_test_run, tmp_path / "run")
  _notebook_env(monkeypatch, tmp_path / "run",
                os.path.join(os.path.dirname(head3d_test_run), "tfds"),
                head3d_config.get_config("test").total_steps)
  namespace = execute("head3d.ipynb")
  k, size = len(namespace["subject"]["subject"]), namespace["subject"]["subject"].shape[1]
  assert len(namespace["fronts"]) == k
  assert namespace["sweep"].shape == (len(namespace["YAWS"]), size, size, 3)
  # Turning the head changes the render; the frontal view is the middle of the sweep.
  assert abs(namespace["sweep"][0] - namespace["sweep"][2]).mean() > 1e-4
  assert namespace["grid"].shape[0] == (len(namespace["YAWS"]) + 1) * size

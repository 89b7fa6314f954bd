"""The notebooks run top to bottom (tiny configs): quickstart shows its three strips, talk
writes its speech-driven video and sync plot."""
import json
import os


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def execute(name: str) -> dict:
  """Runs every code cell of notebooks/NAME top to bottom; returns the notebook's namespace."""
  with open(os.path.join(REPO, "notebooks", name)) as f:
    nb = json.load(f)
  namespace: dict = {}
  for cell in nb["cells"]:
    if cell["cell_type"] == "code":
      exec(compile("".join(cell["source"]), name, "exec"), namespace)  # pylint: disable=exec-used
  return namespace


def test_quickstart_notebook_runs(tmp_path, monkeypatch):
  import matplotlib  # noqa: F401  (a hard dependency: missing fails)
  monkeypatch.setenv("MPLBACKEND", "Agg")
  monkeypatch.setenv("MINERF_NOTEBOOK_VARIANT", "test")
  monkeypatch.setenv("MINERF_NOTEBOOK_STEPS", "4")
  monkeypatch.setenv("MINERF_NOTEBOOK_WORKDIR", str(tmp_path / "run"))
  monkeypatch.setenv("MINERF_DATA_DIR", str(tmp_path / "tfds"))
  namespace = execute("quickstart.ipynb")
  figures = namespace["figures"]
  assert set(figures) == {"heldout", "transfer", "novel_view"}
  for strip in figures.values():
    assert strip.ndim == 3 and strip.shape[0] == 2 * 16 and strip.shape[-1] == 3
  assert namespace["results"]["heldout/psnr"] > 5.0


def test_talk_notebook_runs(tmp_path, monkeypatch, minerf_demo_run, a2e_test_run):
  """Runs the notebook on copies of the session's trained tiny runs (its training cells find
  them trained and return), so the test pays for driving, plotting and writing only."""
  import shutil  # pylint: disable=g-import-not-at-top
  _, nerf_run, data_dir = minerf_demo_run
  shutil.copytree(nerf_run, tmp_path / "run" / "minerf")
  shutil.copytree(a2e_test_run, tmp_path / "run" / "a2e")
  monkeypatch.setenv("MPLBACKEND", "Agg")
  monkeypatch.setenv("MINERF_NOTEBOOK_VARIANT", "test")
  monkeypatch.setenv("MINERF_NOTEBOOK_STEPS", "4")
  monkeypatch.setenv("MINERF_NOTEBOOK_A2E_STEPS", "10")
  monkeypatch.setenv("MINERF_NOTEBOOK_SECONDS", "1")
  monkeypatch.setenv("MINERF_NOTEBOOK_WORKDIR", str(tmp_path / "run"))
  monkeypatch.setenv("MINERF_DATA_DIR", data_dir)
  namespace = execute("talk.ipynb")
  assert namespace["result"]["frames"] == 25
  from minerf_jax.data import video  # pylint: disable=g-import-not-at-top
  clip = video.read_video(namespace["out"])
  assert clip.frames.shape == (25, 64, 64, 3) and clip.audio is not None
  assert namespace["score"]["lags"].shape == (21,)

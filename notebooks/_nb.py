"""Helpers of the notebook generators (make_*.py): cells, the Colab install cell, writing."""
import json

INSTALL = '''
# Colab: installs the project from your copy of the repository (skipped when installed), then
# reports the accelerator this notebook runs on.
REPO_URL = ""  # e.g. the git URL of your minerf_jax clone
import importlib.util, subprocess, sys
if importlib.util.find_spec("minerf_jax") is None:
  if not REPO_URL:
    raise RuntimeError("minerf_jax is not installed: set REPO_URL to your repository's git URL")
  subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                  f"minerf_jax[video,notebooks] @ git+{REPO_URL}"], check=True)
import jax
print(f"jax {jax.__version__}: {jax.device_count()} x {jax.devices()[0].device_kind} "
      f"({jax.default_backend()})")
'''


class Notebook:
  def __init__(self):
    self.cells = []

  def md(self, s):
    self.cells.append({"cell_type": "markdown", "metadata": {},
                       "source": s.strip("\n").splitlines(True)})

  def code(self, s):
    self.cells.append({"cell_type": "code", "metadata": {}, "execution_count": None,
                       "outputs": [], "source": s.strip("\n").splitlines(True)})

  def write(self, path):
    nb = {"cells": self.cells,
          "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python",
                                      "name": "python3"},
                       "language_info": {"name": "python"}, "accelerator": "GPU"},
          "nbformat": 4, "nbformat_minor": 5}
    with open(path, "w") as f:
      json.dump(nb, f, indent=1)

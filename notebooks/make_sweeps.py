"""Writes notebooks/sweeps.ipynb: python notebooks/make_sweeps.py notebooks/sweeps.ipynb"""
import os, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _nb  # noqa: E402
nb = _nb.Notebook()
nb.md("""
# minerf_jax: ablation sweeps

Runs (or resumes) a sweep a config defines in `get_sweep` — by default MI-NeRF's fusion ablation —
with `python -m launch.sweep`, one training run per point, then collects the final metrics
(mean +- std over seeds) and plots the curves. The same commands work in a terminal; see
`launch/sweep.py`.
""")
nb.code(_nb.INSTALL)
nb.code("""
# Parameters; the test-suite runs this notebook on the ':test' config's 'test' sweep.
import os
CONFIG = os.environ.get("MINERF_NOTEBOOK_CONFIG", "configs/minerf.py:demo")
SWEEP = os.environ.get("MINERF_NOTEBOOK_SWEEP", "fusion")
ROOT = os.environ.get("MINERF_NOTEBOOK_ROOT", "/tmp/minerf_sweep_fusion")
OVERRIDES = os.environ.get("MINERF_NOTEBOOK_OVERRIDES", "--config.total_steps=300").split()
METRICS = ["heldout/psnr", "transfer/psnr", "transfer/leakage"]
""")
nb.code("""
# Runs every point not yet finished (re-running resumes; finished points are skipped).
import subprocess, sys
import minerf_jax
repo = os.path.dirname(os.path.dirname(os.path.abspath(minerf_jax.__file__)))
run = subprocess.run([sys.executable, "-m", "launch.sweep", f"--config={CONFIG}", f"--sweep={SWEEP}",
                      f"--root={ROOT}", *OVERRIDES], cwd=repo, capture_output=True, text=True)
print(run.stdout[-3000:], run.stderr[-2000:])
assert run.returncode == 0, "the sweep failed; see the lines above"
""")
nb.code("""
import matplotlib.pyplot as plt
from launch import sweeps
summary = sweeps.collect(ROOT, METRICS)   # also writes ROOT/collect.json, collect.csv
table = sweeps.markdown_table(summary)
print(table)
curves = plt.imread(summary["png"])
plt.figure(figsize=(curves.shape[1] / 80, curves.shape[0] / 80))
plt.imshow(curves)
plt.axis("off")
plt.show()
""")
nb.write(sys.argv[1])

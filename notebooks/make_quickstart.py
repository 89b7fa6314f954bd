"""Writes notebooks/quickstart.ipynb: python notebooks/make_quickstart.py notebooks/quickstart.ipynb"""
import os, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _nb  # noqa: E402
nb = _nb.Notebook()
nb.md("""
# minerf_jax quick start: MI-NeRF on synthetic talking heads

Trains one MI-NeRF on four procedurally rendered identities (CPU: a few minutes), then shows a
held-out reconstruction, an expression-transfer strip (identity A driven by identity B's
expressions) and a novel-view strip, each next to the generator's exact ground truth.

On Colab run the install cell first; locally `make demo` / `pip install -e .[video,notebooks]`.
""")
nb.code(_nb.INSTALL)

nb.code("""
# Parameters. STEPS is the training length; the test-suite runs this notebook with tiny values.
import os
VARIANT = os.environ.get("MINERF_NOTEBOOK_VARIANT", "demo")   # configs/minerf.py:<VARIANT>
STEPS = int(os.environ.get("MINERF_NOTEBOOK_STEPS", "1500"))
WORKDIR = os.environ.get("MINERF_NOTEBOOK_WORKDIR", "/tmp/minerf_quickstart")
""")
nb.code("""
import dataclasses
import numpy as np
import matplotlib
import matplotlib.pyplot as plt

from configs import minerf as minerf_config
from minerf_jax import models
from minerf_jax.train import loop
from launch import runs

config = minerf_config.get_config(VARIANT)
config.total_steps = STEPS
config.eval_every = STEPS
state = loop.train_and_evaluate(config, WORKDIR)
""")
nb.code("""
config, model, params = runs.restore(WORKDIR)
data = models.build_data(config)
sets = data.eval_data
results = model.evaluate(params, sets)
for k in ("heldout/psnr", "heldout/ssim", "transfer/psnr", "transfer/face_psnr",
          "transfer/leakage", "novel_view/psnr"):
  if k in results:
    print(f"{k:18s} {results[k]:.3f}")
""")
nb.code("""
def strip(frames, n=6):
  idx = np.linspace(0, len(frames) - 1, num=min(n, len(frames))).round().astype(int)
  frames = frames.take(idx)
  pred = model.render_frames(params, frames)["rgb"]
  return np.concatenate([np.concatenate(list(frames.rgb), 1), np.concatenate(list(pred), 1)], 0)

figures = {}
for name in ("heldout", "transfer", "novel_view"):
  if name in sets:
    figures[name] = strip(sets[name])
    plt.figure(figsize=(12, 4))
    plt.imshow(np.clip(figures[name], 0, 1))
    plt.title(f"{name}: top ground truth, bottom MI-NeRF")
    plt.axis("off")
plt.show()
""")
nb.write(sys.argv[1])

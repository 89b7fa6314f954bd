"""Writes notebooks/animate.ipynb: python notebooks/make_animate.py notebooks/animate.ipynb"""
import os, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _nb  # noqa: E402
nb = _nb.Notebook()
nb.md("""
# minerf_jax: one-shot face animation (TPSMM, MCNet, MRFA)

Trains one of the keypoint animation models on the synthetic talking heads (or loads a run you
made with `launch.train`, or an authors' checkpoint converted with `launch.convert`), then
animates a portrait with a driving clip and shows the source, the driving frames and the result.

By default the portrait and the driving clip are held-out synthetic frames of two different
identities; set `PORTRAIT` and `DRIVING` to your own image and video to use `launch.animate`'s
face cropping on them.
""")
nb.code(_nb.INSTALL)
nb.code("""
# Parameters; the test-suite runs this notebook with the ':test' config and a trained run.
import os
MODEL = os.environ.get("MINERF_NOTEBOOK_MODEL", "tpsmm")        # tpsmm | mcnet | mrfa
VARIANT = os.environ.get("MINERF_NOTEBOOK_VARIANT", "cpu")      # configs/<MODEL>.py:<VARIANT>
STEPS = int(os.environ.get("MINERF_NOTEBOOK_STEPS", "2000"))
WORKDIR = os.environ.get("MINERF_NOTEBOOK_WORKDIR", f"/tmp/minerf_animate_{MODEL}")
CHECKPOINT = os.environ.get("MINERF_NOTEBOOK_CHECKPOINT", "")   # a run / launch.convert output
PORTRAIT = os.environ.get("MINERF_NOTEBOOK_PORTRAIT", "")       # your image (with DRIVING)
DRIVING = os.environ.get("MINERF_NOTEBOOK_DRIVING", "")         # your video
FRAMES = 8                                                       # driving frames shown
""")
nb.code("""
import importlib
import numpy as np
import matplotlib.pyplot as plt

from launch import runs
from minerf_jax import models
from minerf_jax.train import loop

if not CHECKPOINT:
  config = importlib.import_module(f"configs.{MODEL}").get_config(VARIANT)
  config.total_steps = STEPS
  config.eval_every = STEPS
  loop.train_and_evaluate(config, WORKDIR)   # returns at once when WORKDIR is trained
  CHECKPOINT = WORKDIR
config, model, params = runs.restore(CHECKPOINT)
stats = runs.batch_stats_kwargs(CHECKPOINT, config)
print(f"{config.model.name}: {sum(x.size for x in __import__('jax').tree.leaves(params)):,} "
      f"parameters, {config.data.resolution} px data")
""")
nb.code("""
# The portrait and the driving frames: held-out synthetic clips of two identities, or yours.
if PORTRAIT and DRIVING:
  from launch import animate as animate_lib
  out = os.path.join(WORKDIR, "animated.npz")
  animate_lib.animate(CHECKPOINT, DRIVING, out, source_path=PORTRAIT)
  saved = np.load(out)
  source, driving, result = saved["source"], saved["driving"], saved["prediction"]
else:
  clips = models.build_data(config).eval_data["reconstruction"]
  source = clips[0]["source"].astype(np.float32) / 255.0
  other = next((c for c in clips if c.get("identity") != clips[0].get("identity")), clips[-1])
  driving = other["driving"].astype(np.float32) / 255.0
  # Relative motion: the portrait follows the driving frames' motion from their first frame.
  result = model.animate(params, source, driving, relative=True, **stats)
print(f"animated {len(result)} frames of {result.shape[1]} px")
""")
nb.code("""
idx = np.linspace(0, len(result) - 1, num=min(FRAMES, len(result))).round().astype(int)
rows = [np.concatenate([source] * len(idx), 1), np.concatenate(list(driving[idx]), 1),
        np.concatenate(list(result[idx]), 1)]
strip = np.concatenate(rows, 0)
plt.figure(figsize=(2 * len(idx), 6))
plt.imshow(np.clip(strip, 0, 1))
plt.title(f"{config.model.name}: source (top), driving (middle), animated (bottom)")
plt.axis("off")
plt.show()
""")
nb.write(sys.argv[1])

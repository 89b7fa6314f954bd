"""Writes notebooks/head3d.ipynb: python notebooks/make_head3d.py notebooks/head3d.ipynb"""
import os, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _nb  # noqa: E402
nb = _nb.Notebook()
nb.md("""
# minerf_jax: 3-D-aware motion transfer (Head3D)

Trains Head3D on the synthetic talking heads, folds a held-out subject's frames into its
canonical 3-D head one frame at a time, renders it from the front after each frame, and turns it
through a yaw sweep; then drives the subject with another identity's clip from new viewpoints.
""")
nb.code(_nb.INSTALL)
nb.code("""
# Parameters; the test-suite runs this notebook with the ':test' config and a trained run.
import os
VARIANT = os.environ.get("MINERF_NOTEBOOK_VARIANT", "synthetic")  # configs/head3d.py:<VARIANT>
STEPS = int(os.environ.get("MINERF_NOTEBOOK_STEPS", "3000"))
WORKDIR = os.environ.get("MINERF_NOTEBOOK_WORKDIR", "/tmp/minerf_head3d")
YAWS = (-40, -20, 0, 20, 40)                                        # degrees
""")
nb.code("""
import numpy as np
import matplotlib.pyplot as plt

from configs import head3d as head3d_config
from launch import runs
from minerf_jax import models
from minerf_jax.train import loop

config = head3d_config.get_config(VARIANT)
config.total_steps = STEPS
config.eval_every = STEPS
loop.train_and_evaluate(config, WORKDIR)   # returns at once when WORKDIR is trained
config, model, params = runs.restore(WORKDIR)
stats = runs.batch_stats_kwargs(WORKDIR, config)
clips = models.build_data(config).eval_data["reconstruction"]
clip = clips[0]
subject = {k: v for k, v in clip.items() if k.startswith("subject")}
print(f"{len(clips)} held-out clips; {len(subject['subject'])} subject frames each")
""")
nb.code("""
# The canonical head after folding 1, 2, ..., K subject frames, rendered from the front.
k = len(subject["subject"])
fronts = [model.render_canonical(params, {n: v[:i] for n, v in subject.items()},
                                 model.frontal_pose([0.0]), **stats)["rgb"][0]
          for i in range(1, k + 1)]
# ... and with all K frames, turned through the yaw sweep.
sweep = model.render_canonical(params, subject, model.frontal_pose(np.float32(YAWS)), **stats)["rgb"]
fig, ax = plt.subplots(2, 1, figsize=(2 * max(2 * k, len(YAWS)), 5))
ax[0].imshow(np.clip(np.concatenate(list(subject["subject"]) + fronts, 1), 0, 1))
ax[0].set_title("subject frames | canonical head after 1..K of them")
ax[1].imshow(np.clip(np.concatenate(list(sweep), 1), 0, 1))
ax[1].set_title(f"canonical head at yaw {YAWS} degrees")
for a in ax:
  a.axis("off")
plt.show()
""")
nb.code("""
# The subject driven by another identity's held-out frames, each seen from every yaw.
other = next((c for c in clips if c.get("identity") != clip.get("identity")), clips[-1])
driving = {k: np.asarray(v)[:4] for k, v in other.items() if k.startswith("driving")}
views = {}
for yaw in YAWS:
  driving["view"] = np.tile(np.float32([yaw, 0.0]), (len(driving["driving"]), 1))
  views[yaw] = model.animate(params, subject, driving, **stats)
grid = np.concatenate([np.concatenate(list(driving["driving"]), 1)]
                      + [np.concatenate(list(views[y]), 1) for y in YAWS], 0)
plt.figure(figsize=(8, 2 * (len(YAWS) + 1)))
plt.imshow(np.clip(grid, 0, 1))
plt.title("driving (top); the subject driven, one row per yaw")
plt.axis("off")
plt.show()
""")
nb.write(sys.argv[1])

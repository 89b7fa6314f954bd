"""MI-NeRF end to end on the tiny synthetic dataset: overfitting, evaluation, personalisation,
the launcher's error messages, and 8-device == 1-device updates for the real model."""
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import minerf as minerf_config
from minerf_jax import models
from minerf_jax.data import pipeline
from minerf_jax.train import loop
from minerf_jax.train import parallel
from minerf_jax.train import state as state_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("tfds"))
  os.environ["MINERF_DATA_DIR"] = path
  return path


def _config(data_dir, **updates):
  config = minerf_config.get_config("test")
  config.data.data_dir = data_dir
  config.update_from_flattened_dict(updates)
  return config


def test_tiny_model_overfits_one_frame(data_dir):
  config = _config(data_dir, **{"model.width": 64, "model.depth": 3, "model.num_coarse": 24,
                                "model.num_fine": 24, "model.randomized": False})
  config.model.encoding.max_deg = 5
  model = models.build(config)
  builder = pipeline.dataset_builder(config.data)
  frames = pipeline.load_frames(builder, "train", (0,)).take(np.arange(1))
  batch = jax.tree.map(jnp.asarray, pipeline.frame_rays(frames, 0))
  params = model.init(jax.random.key(0), batch)
  tx = optax.adam(optax.exponential_decay(1e-2, 600, 0.1))
  opt = tx.init(params)

  @jax.jit
  def step(params, opt):
    (_, metrics), grads = jax.value_and_grad(model.loss, has_aux=True)(
        params, batch, jax.random.key(1), 0)
    updates, opt = tx.update(grads, opt, params)
    return optax.apply_updates(params, updates), opt, metrics

  for _ in range(600):
    params, opt, metrics = step(params, opt)
  rendered = model.render_frames(params, frames)["rgb"][0]
  psnr = -10 * np.log10(np.mean((rendered - frames.rgb[0]) ** 2))
  assert psnr > 30.0, psnr


def test_train_evaluate_and_personalise(data_dir, tmp_path):
  base_dir = str(tmp_path / "base")
  config = _config(data_dir)
  loop.train_and_evaluate(config, base_dir)
  metrics = [json.loads(l) for l in open(os.path.join(base_dir, "metrics.jsonl"))]
  evals = [m for m in metrics if m.get("split") == "eval"]
  assert evals and {"heldout/psnr", "transfer/psnr", "novel_view/psnr"} <= set(evals[-1])
  # Personalise: identity 2 is new (the base dataset has 2 identities).
  personal = _config(data_dir, init_from=base_dir, **{"personalise.identity": 2})
  model = models.build(personal)
  state = loop.train_and_evaluate(personal, str(tmp_path / "personal"))
  from minerf_jax.train import checkpoint
  base = checkpoint.load_params(base_dir)
  new = jax.device_get(state.params)
  assert new["identity_codes"]["embedding"].shape[0] == 3
  np.testing.assert_array_equal(new["identity_codes"]["embedding"][:2],
                                base["identity_codes"]["embedding"])      # old rows untouched
  assert not np.allclose(new["identity_codes"]["embedding"][2],
                         base["identity_codes"]["embedding"].mean(0))     # new row trained
  np.testing.assert_array_equal(new["field"]["layer_0"]["kernel"],
                                base["field"]["layer_0"]["kernel"])        # shared frozen
  assert model.trainable(new)["field"]["layer_0"]["kernel"] is False


def test_eight_devices_equal_one_device(data_dir):
  assert jax.device_count() == 8
  config = _config(data_dir, **{"model.randomized": False})
  model = models.build(config)
  data = models.build_data(config)
  params = model.init(jax.random.key(0), data.example_batch())
  tx = optax.adam(1e-2)
  rng = jax.random.key_data(jax.random.key(0))
  results = {}
  for name, strategy, devices in (("jit1", "jit", jax.devices()[:1]),
                                  ("jit8", "jit", jax.devices()),
                                  ("pmap8", "pmap", jax.devices())):
    mesh = parallel.make_mesh(devices)
    step = parallel.make_train_step(model, tx, strategy, mesh)
    fresh = jax.tree.map(np.array, params)  # the step donates its state
    state = step.put_state(state_lib.TrainState.create(fresh, tx, np.array(rng)))
    for s in range(2):
      state, _ = step(state, step.put_batch(data.train_batch(s)))
    results[name] = jax.device_get(step.get_state(state).params)
  # Adam divides by sqrt(v): where a gradient is ~0, reduction-order noise moves the step by a
  # visible fraction of lr (6e-6 after two steps seen on one data draw); 1e-5 is 0.1% of lr.
  for name in ("jit8", "pmap8"):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-5),
                 results[name], results["jit1"])


def _launch(*args, env=None):
  return subprocess.run([sys.executable, "-m", "launch.train", *args], cwd=REPO,
                        capture_output=True, text=True, timeout=300,
                        env={**os.environ, **(env or {})})


def test_misspelt_override_fails_in_one_line(tmp_path):
  proc = _launch("--config=configs/minerf.py:test", f"--workdir={tmp_path}",
                 "--config.model.fusoin=concat")
  assert proc.returncode != 0
  lines = [l for l in proc.stderr.strip().splitlines() if l.strip()]
  assert len(lines) == 1 and "fusoin" in lines[0], proc.stderr


def test_override_changes_model_and_foreign_checkpoint_refused(data_dir, tmp_path):
  workdir = str(tmp_path / "run")
  proc = _launch("--config=configs/minerf.py:test", f"--workdir={workdir}",
                 "--config.model.fusion=concat", "--config.total_steps=3",
                 env={"MINERF_DATA_DIR": data_dir})
  assert proc.returncode == 0, proc.stderr[-2000:]
  saved = json.load(open(os.path.join(workdir, "config.json")))
  assert saved["model"]["fusion"] == "concat"
  from minerf_jax.train import checkpoint
  params = checkpoint.load_params(workdir)
  assert "W" in params["fuse"] and "U_w" not in params["fuse"]   # the concat model was built
  # The same workdir with the hadamard model: a checkpoint of another model shape.
  proc = _launch("--config=configs/minerf.py:test", f"--workdir={workdir}",
                 "--config.total_steps=6", env={"MINERF_DATA_DIR": data_dir})
  assert proc.returncode != 0
  # Logs of the run precede it; the error itself is one line, with no traceback.
  assert "Traceback" not in proc.stderr
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith("error: checkpoint") and "fuse/" in last and "fresh --workdir" in last

"""Training machinery (minerf_jax/train, launch/train.py) on a toy model and toy data."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import _tb
import _toy
from minerf_jax.train import checkpoint
from minerf_jax.train import logging as train_logging
from minerf_jax.train import loop
from minerf_jax.train import parallel
from minerf_jax.train import state as state_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_config(**overrides) -> ml_collections.ConfigDict:
  config = _toy.get_config()
  config.update_from_flattened_dict(overrides)
  return config


def train(config, workdir, **data_kwargs):
  return loop.train_and_evaluate(config, str(workdir), model=_toy.ToyModel(config),
                                 data=_toy.ToyData(config, **data_kwargs))


def host(tree):
  return jax.tree.map(np.asarray, jax.device_get(tree))


def assert_trees_equal(a, b):
  jax.tree.map(np.testing.assert_array_equal, host(a), host(b))


def fresh_state(config, seed=0):
  model = _toy.ToyModel(config)
  data = _toy.ToyData(config)
  tx = loop.make_optimizer(config, model.trainable)
  params = model.init(jax.random.PRNGKey(seed), data.example_batch())
  return model, data, tx, state_lib.TrainState.create(params, tx, jax.random.PRNGKey(seed + 1))


def run_steps(config, strategy, devices, steps=3, nan_steps=()):
  model, data, tx, state = fresh_state(config)
  step = parallel.make_train_step(model, tx, strategy, parallel.make_mesh(devices))
  state = step.put_state(state)
  data = _toy.ToyData(config, nan_steps=nan_steps)
  metrics = []
  for i in range(steps):
    state, m = step(state, step.put_batch(data.train_batch(i)))
    metrics.append(step.host_metrics(m))
  return host(step.get_state(state)), metrics


# ----------------------------------------------------------------------------------------------
# Data parallel step.


def test_mesh_is_1d_auto_over_all_devices():
  mesh = parallel.make_mesh()
  assert mesh.axis_names == ("data",)
  assert mesh.devices.size == jax.device_count() == 8
  assert mesh.axis_types == (jax.sharding.AxisType.Auto,)
  # The reason for Auto axes: linen nn.Embed with batch-sharded ids works under jit.
  embed = nn.Embed(10, 4)
  params = embed.init(jax.random.PRNGKey(0), jnp.zeros([8], jnp.int32))
  ids = parallel.shard_batch(mesh, {"ids": np.arange(16, dtype=np.int32) % 10})["ids"]
  out = jax.jit(lambda p, i: embed.apply(p, i))(parallel.replicate(mesh, params), ids)
  np.testing.assert_array_equal(np.asarray(out), np.asarray(params["params"]["embedding"])[
      np.arange(16) % 10])


@pytest.mark.parametrize("strategy", ["jit", "pmap"])
def test_eight_devices_update_equals_one_device(strategy):
  config = make_config(**{"optimizer.schedule": "constant"})
  reference, ref_metrics = run_steps(config, "jit", jax.devices()[:1])
  one, one_metrics = run_steps(config, strategy, jax.devices()[:1])
  eight, eight_metrics = run_steps(config, strategy, jax.devices())
  _, _, _, init = fresh_state(config)
  moved = [np.abs(a - np.asarray(b)).max() for a, b in zip(
      jax.tree.leaves(reference.params), jax.tree.leaves(init.params))]
  assert min(moved) > 1e-3  # three Adam steps at lr 1e-2 move every leaf
  for params in (one.params, eight.params):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
                 params, reference.params)
  assert int(eight.step) == 3
  for ms in (one_metrics, eight_metrics):
    for m, r in zip(ms, ref_metrics):
      np.testing.assert_allclose(m["loss"], r["loss"], rtol=1e-6)
      # The same step rng on every device: the (pmean'd) draw equals the single-device one.
      assert m["draw"] == pytest.approx(r["draw"], rel=1e-6)


def test_step_rng_is_seed_folded_with_step():
  config = make_config()
  _, metrics = run_steps(config, "jit", jax.devices(), steps=2)
  _, _, _, state = fresh_state(config)
  for i, m in enumerate(metrics):
    expected = float(jax.random.uniform(jax.random.fold_in(state.rng, i)))
    assert m["draw"] == pytest.approx(expected, abs=0)
  assert metrics[0]["draw"] != metrics[1]["draw"]


@pytest.mark.parametrize("strategy", ["jit", "pmap"])
def test_nonfinite_loss_skips_the_update(strategy):
  config = make_config()
  model, data, tx, state = fresh_state(config)
  before = host(state)
  step = parallel.make_train_step(model, tx, strategy)
  state = step.put_state(state)
  bad = _toy.ToyData(config, nan_steps={0})
  state, metrics = step(state, step.put_batch(bad.train_batch(0)))
  metrics = step.host_metrics(metrics)
  after = host(step.get_state(state))
  assert metrics["skipped_nonfinite"] == 1.0 and np.isnan(metrics["loss"])
  assert int(after.step) == 1
  assert_trees_equal(after.params, before.params)
  assert_trees_equal(after.opt_state, before.opt_state)
  state, metrics = step(state, step.put_batch(bad.train_batch(1)))
  assert step.host_metrics(metrics)["skipped_nonfinite"] == 0.0
  assert not np.array_equal(host(step.get_state(state)).params["head"]["kernel"],
                            before.params["head"]["kernel"])


def test_frozen_leaves_do_not_change():
  config = make_config(**{"model.frozen": ("hidden",)})
  _, _, _, init = fresh_state(config)
  final, _ = run_steps(config, "jit", jax.devices(), steps=3)
  assert_trees_equal(final.params["hidden"], init.params["hidden"])
  head = np.asarray(init.params["head"]["kernel"])
  assert not np.array_equal(final.params["head"]["kernel"], head)


def test_batch_must_split_over_devices(tmp_path):
  config = make_config(**{"data.batch_size": 12})
  with pytest.raises(ValueError, match="global batch size 12 is not divisible by the 8 devices"):
    train(config, tmp_path)


def test_learning_rate_schedules():
  opt = make_config(**{"optimizer.warmup_steps": 10, "optimizer.lr": 1e-2,
                       "optimizer.lr_end": 1e-4}).optimizer
  for kind in ("exponential", "cosine"):
    opt.schedule = kind
    schedule = loop.learning_rate_schedule(opt, total_steps=110)
    assert float(schedule(0)) == 0.0
    np.testing.assert_allclose(float(schedule(5)), 5e-3, rtol=1e-6)
    np.testing.assert_allclose(float(schedule(10)), 1e-2, rtol=1e-6)
    np.testing.assert_allclose(float(schedule(110)), 1e-4, rtol=1e-5)
  opt.schedule = "exponential"
  np.testing.assert_allclose(float(loop.learning_rate_schedule(opt, 110)(60)), 1e-3, rtol=1e-5)
  opt.schedule = "cosine"
  np.testing.assert_allclose(float(loop.learning_rate_schedule(opt, 110)(60)),
                             (1e-2 + 1e-4) / 2, rtol=1e-5)
  opt.schedule = "linear"
  with pytest.raises(ValueError, match="schedule='linear'"):
    loop.learning_rate_schedule(opt, 110)


def test_grad_clip_limits_the_first_adam_step():
  # Adam's first update is lr * g / (|g| + eps) whatever the scale of g, so compare raw
  # clipped gradients through the optimizer chain instead: clip_by_global_norm(1e-3).
  config = make_config(**{"optimizer.grad_clip": 1e-3, "optimizer.schedule": "constant",
                          "optimizer.b1": 0.0, "optimizer.b2": 0.0, "optimizer.eps": 1.0})
  tx = loop.make_optimizer(config, lambda p: jax.tree.map(lambda _: True, p))
  params = {"w": jnp.ones([4])}
  updates, _ = tx.update({"w": jnp.full([4], 10.0)}, tx.init(params), params)
  # b1=b2=0, eps=1: update = -lr * g / (|g| + 1) with g clipped to global norm 1e-3.
  g = 1e-3 / 2
  np.testing.assert_allclose(np.asarray(updates["w"]), -1e-2 * g / (g + 1.0), rtol=1e-5)


def test_common_config_is_locked_against_typos():
  from configs import common
  config = common.get_config()
  config.lock()
  config.optimizer.lr = 2e-3
  config.checkpoint.keep = 5
  assert (config.optimizer.lr, config.checkpoint.keep) == (2e-3, 5)
  with pytest.raises(AttributeError, match="lrr"):
    config.optimizer.lrr = 1.0
  with pytest.raises(TypeError):
    config.total_steps = "many"
  assert config.init_from == "" and config.parallel.strategy == "jit"


def test_distributed_args_from_the_environment():
  assert parallel.distributed_args({}) == {}
  assert parallel.distributed_args({"JAX_NUM_PROCESSES": "4", "JAX_PROCESS_ID": "0"}) == {
      "num_processes": 4, "process_id": 0}
  with pytest.raises(ValueError, match=r"\$JAX_PROCESS_ID='one' must be an integer"):
    parallel.distributed_args({"JAX_PROCESS_ID": "one"})


def test_initialize_distributed_is_a_noop_single_host():
  assert not parallel.initialize_distributed("auto", environ={})
  assert not parallel.initialize_distributed("off", environ={"JAX_COORDINATOR_ADDRESS": "h:1"})
  assert parallel._multihost_env({"JAX_COORDINATOR_ADDRESS": "host:1234"})
  assert parallel._multihost_env({"SLURM_NTASKS": "4"})
  assert not parallel._multihost_env({"SLURM_NTASKS": "1", "TPU_WORKER_HOSTNAMES": "localhost"})
  with pytest.raises(ValueError, match="distributed='yes'"):
    parallel.initialize_distributed("yes")


# ----------------------------------------------------------------------------------------------
# Checkpoints.


def test_checkpoint_round_trip_keep_n_and_restore_or_none(tmp_path):
  config = make_config(**{"checkpoint.keep": 2})
  _, _, _, state = fresh_state(config)
  mesh = parallel.make_mesh()
  ckpt = checkpoint.Checkpointer.from_config(str(tmp_path), config, model_name="toy_mlp")
  states = {}
  for step in range(1, 5):
    states[step] = parallel.replicate(mesh, state.replace(
        step=jnp.asarray(step, jnp.int32),
        params=jax.tree.map(lambda x, s=step: x * s + 0.1 * s, state.params)))
    assert ckpt.save(step, states[step], config)
  assert not ckpt.save(4, states[4], config)  # already saved
  ckpt.wait()
  assert ckpt.all_steps() == [3, 4]
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["3", "4"]
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                          states[4])
  restored = checkpoint.restore_or_none(str(tmp_path), abstract, config)
  assert_trees_equal(restored, states[4])
  assert isinstance(restored, state_lib.TrainState)
  assert_trees_equal(ckpt.restore(abstract, step=3), states[3])
  ckpt.close()
  meta = json.load(open(tmp_path / "checkpoints/4/meta/metadata"))
  assert meta["model"] == "toy_mlp" and meta["step"] == 4 and meta["version"]
  assert meta["params"]["hidden/kernel"] == [[3, 8], "float32"]
  saved_config = json.load(open(tmp_path / "checkpoints/4/config/metadata"))
  assert saved_config["model"]["width"] == 8
  assert checkpoint.restore_or_none(str(tmp_path / "empty"), abstract, config) is None
  # load_params: from the workdir (latest), the checkpoints dir, or one step dir.
  assert_trees_equal(checkpoint.load_params(str(tmp_path)), states[4].params)
  assert_trees_equal(checkpoint.load_params(str(tmp_path / "checkpoints")), states[4].params)
  assert_trees_equal(checkpoint.load_params(str(tmp_path / "checkpoints" / "3")), states[3].params)
  with pytest.raises(checkpoint.CheckpointMismatchError, match="holds model 'toy_mlp'"):
    checkpoint.load_params(str(tmp_path), model_name="minerf")
  with pytest.raises(FileNotFoundError, match="holds no checkpoint"):
    checkpoint.load_params(str(tmp_path / "empty"))


def _save_toy_checkpoint(workdir, config):
  _, _, _, state = fresh_state(config)
  ckpt = checkpoint.Checkpointer.from_config(str(workdir), config, model_name="toy_mlp")
  ckpt.save(5, parallel.replicate(parallel.make_mesh(), state), config)
  ckpt.close()


def _abstract_for(config, model_name="toy_mlp"):
  _, _, _, state = fresh_state(config)
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                      parallel.replicate(parallel.make_mesh(), state))


def test_restoring_another_shape_or_model_fails_in_one_line(tmp_path):
  _save_toy_checkpoint(tmp_path, make_config())
  wider = make_config(**{"model.width": 16})
  with pytest.raises(checkpoint.CheckpointMismatchError) as info:
    checkpoint.restore_or_none(str(tmp_path), _abstract_for(wider), wider)
  message = str(info.value)
  assert "\n" not in message
  path = os.path.join(str(tmp_path), "checkpoints", "5")
  assert message == (
      f"checkpoint {path} of model 'toy_mlp' holds 'head/kernel' with (8, 2) float32 but the "
      "config builds (16, 2) float32 (3 paths differ) (parameter mismatch); use a fresh "
      "--workdir or a config that matches the checkpoint")
  other = make_config(**{"model.name": "other_model"})
  with pytest.raises(checkpoint.CheckpointMismatchError,
                     match=r"holds model 'toy_mlp' but the config builds model 'other_model'; "
                           r"use a fresh --workdir"):
    checkpoint.restore_or_none(str(tmp_path), _abstract_for(other), other)
  # Through the loop: resuming the workdir with a config that builds other shapes.
  with pytest.raises(checkpoint.CheckpointMismatchError, match="head/kernel"):
    train(wider, tmp_path)


def test_first_difference_names_missing_and_extra_paths():
  built = {"a": [[2], "float32"], "b": [[3], "float32"]}
  assert checkpoint.first_difference(built, built) is None
  assert checkpoint.first_difference({"a": [[2], "float32"]}, built) == (
      "has no 'b' but the config builds it with (3,) float32")
  assert checkpoint.first_difference({**built, "c": [[1], "int32"]}, built) == (
      "holds 'c' (1,) int32 which the config does not build")


def test_stop_signal_sets_flag_and_restores_handler():
  previous = signal.getsignal(signal.SIGTERM)
  with checkpoint.StopSignal() as stop:
    assert not stop.requested
    os.kill(os.getpid(), signal.SIGTERM)
    assert stop.requested
  assert signal.getsignal(signal.SIGTERM) is previous


# ----------------------------------------------------------------------------------------------
# The loop: resume, init_from, logs.


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
  """An uninterrupted 8-step run (rng-dependent loss) and its final params."""
  config = make_config(**{"total_steps": 8, "model.input_noise": 0.1})
  workdir = tmp_path_factory.mktemp("reference")
  state = train(config, workdir)
  return config, workdir, host(state)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_saves_returns_and_resume_is_bit_exact(reference_run, tmp_path, capsys, signum):
  config, _, reference = reference_run
  sent = []

  def preempt(step):
    if step == 4 and not sent:
      sent.append(step)
      os.kill(os.getpid(), signum)

  previous = signal.getsignal(signum)
  stopped = train(config, tmp_path, on_step=preempt)
  assert signal.getsignal(signum) is previous
  assert int(stopped.step) == 5  # batch 4 was trained, then the loop saved and returned
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["3", "5"]
  assert f"stop requested ({signal.Signals(signum).name}): saved" in capsys.readouterr().out
  final = train(config, tmp_path)
  assert "resuming from" in capsys.readouterr().out
  assert int(final.step) == 8
  assert_trees_equal(final.params, reference.params)
  assert_trees_equal(final.opt_state, reference.opt_state)
  assert_trees_equal(final.rng, reference.rng)


# A toy run in a subprocess that SIGKILLs itself when Orbax renames the finished temporary
# directory of checkpoint 6 into place: every file of that checkpoint is written, none is
# committed (the last instant of a write; earlier instants leave less behind).
_KILL_AT_COMMIT = """
import os, signal, sys
sys.path.insert(0, 'tests')
import _toy
from minerf_jax.train import loop
real_rename, real_replace = os.rename, os.replace
def dying(real):
  def rename(src, dst, *a, **k):
    if os.path.basename(os.fspath(dst)) == '6':
      os.kill(os.getpid(), signal.SIGKILL)
    return real(src, dst, *a, **k)
  return rename
os.rename, os.replace = dying(real_rename), dying(real_replace)
config = _toy.get_config()
config.total_steps, config.model.input_noise = 8, 0.1
loop.train_and_evaluate(config, sys.argv[1], model=_toy.ToyModel(config), data=_toy.ToyData(config))
"""


def test_kill_9_during_a_checkpoint_write_resumes_from_the_last_complete_one(reference_run,
                                                                           tmp_path, capsys):
  config, _, reference = reference_run
  proc = subprocess.run([sys.executable, "-c", _KILL_AT_COMMIT, str(tmp_path)], cwd=REPO,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
  left = sorted(os.listdir(tmp_path / "checkpoints"))
  assert left[0] == "3" and left[1].startswith("6.") and "tmp" in left[1], left  # uncommitted
  final = train(config, tmp_path)
  assert f"resuming from {tmp_path / 'checkpoints' / '3'}" in capsys.readouterr().out
  assert_trees_equal(final.params, reference.params)
  assert_trees_equal(final.opt_state, reference.opt_state)
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["6", "8"]


def _truncate_checkpoint(step_dir):
  for root, _, files in os.walk(step_dir / "state"):
    for name in files:
      path = os.path.join(root, name)
      with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


def test_unreadable_latest_checkpoint_is_reported_in_one_line_and_the_previous_used(
    reference_run, tmp_path, capsys):
  config, _, reference = reference_run

  def crash(step):
    if step == 7:
      raise RuntimeError("host lost")

  with pytest.raises(RuntimeError, match="host lost"):
    train(config, tmp_path, on_step=crash)
  _truncate_checkpoint(tmp_path / "checkpoints" / "6")
  capsys.readouterr()
  final = train(config, tmp_path)
  out, err = capsys.readouterr()
  warnings = [line for line in err.splitlines() if line.startswith("warning:")]
  assert len(warnings) == 1, err
  assert warnings[0].startswith(f"warning: checkpoint {tmp_path / 'checkpoints' / '6'} is "
                                "unreadable (")
  assert f"moved it to {tmp_path / 'checkpoints_unreadable' / '6'}" in warnings[0]
  assert f"resuming from {tmp_path / 'checkpoints' / '3'}" in out
  assert os.path.isdir(tmp_path / "checkpoints_unreadable" / "6" / "state")  # nothing deleted
  assert_trees_equal(final.params, reference.params)
  assert_trees_equal(final.opt_state, reference.opt_state)


def test_load_params_skips_an_unreadable_latest_checkpoint(reference_run, tmp_path, capsys):
  _, workdir, reference = reference_run
  copy = tmp_path / "run"
  shutil.copytree(workdir, copy)
  steps = sorted(int(s) for s in os.listdir(copy / "checkpoints"))
  _truncate_checkpoint(copy / "checkpoints" / str(steps[-1]))
  params = checkpoint.load_params(str(copy), model_name="toy_mlp")
  err = capsys.readouterr().err
  assert f"checkpoint {copy / 'checkpoints' / str(steps[-1])} is unreadable" in err
  assert not np.array_equal(host(params)["head"]["kernel"], reference.params["head"]["kernel"])
  for step in steps:
    _truncate_checkpoint(copy / "checkpoints" / str(step))
  with pytest.raises(checkpoint.CheckpointUnreadableError, match="no older checkpoint"):
    checkpoint.load_params(str(copy), model_name="toy_mlp")


def test_repeated_nonfinite_steps_stop_the_run_in_one_line(tmp_path):
  config = make_config(**{"max_nonfinite_steps": 3})
  with pytest.raises(loop.TrainingDiverged) as err:
    train(config, tmp_path, nan_steps=range(2, 100))
  message = str(err.value)
  assert "\n" not in message
  assert message.startswith("training diverged: steps 3-5 (3 in a row) had a non-finite loss")
  assert f"the last checkpoint is {tmp_path / 'checkpoints' / '3'}" in message
  # Isolated non-finite steps are skipped and training goes on.
  state = train(make_config(**{"max_nonfinite_steps": 2}), tmp_path / "ok", nan_steps=(1, 3))
  assert int(state.step) == 6


@pytest.mark.parametrize("strategy", ["jit", "pmap"])
def test_crash_then_resume_from_periodic_checkpoint_is_bit_exact(reference_run, tmp_path, capsys,
                                                                 strategy):
  config, reference_dir, reference = reference_run
  config = ml_collections.ConfigDict(config.to_dict())
  config.parallel.strategy = strategy
  if strategy == "pmap":  # pmap's own reference (same math as jit, other reductions)
    reference = host(train(config, tmp_path / "pmap_reference"))

  def crash(step):
    if step == 7:
      raise RuntimeError("data source died")

  with pytest.raises(RuntimeError, match="data source died"):
    train(config, tmp_path / "run", on_step=crash)
  assert sorted(os.listdir(tmp_path / "run" / "checkpoints")) == ["3", "6"]
  final = train(config, tmp_path / "run")
  assert f"resuming from {tmp_path / 'run' / 'checkpoints' / '6'}" in capsys.readouterr().out
  assert_trees_equal(final.params, reference.params)
  assert_trees_equal(final.opt_state, reference.opt_state)
  # The logs read as one run: the steps logged before the crash were not duplicated.
  steps = [(r["split"], r["step"]) for r in train_logging.read_metrics(tmp_path / "run")]
  assert steps == [(r["split"], r["step"]) for r in train_logging.read_metrics(reference_dir)]


def test_finished_run_is_not_retrained(reference_run, capsys):
  config, workdir, reference = reference_run
  state = train(config, workdir)
  assert "already trained to step 8" in capsys.readouterr().out
  assert_trees_equal(state.params, reference.params)


def test_init_from_loads_params_and_frozen_leaves_stay(reference_run, tmp_path):
  config, workdir, reference = reference_run
  config = ml_collections.ConfigDict(config.to_dict())
  config.init_from = str(workdir)
  config.total_steps = 2
  config.model.frozen = ("hidden",)
  state = host(train(config, tmp_path))
  assert_trees_equal(state.params["hidden"], reference.params["hidden"])
  head_delta = np.abs(state.params["head"]["kernel"] - reference.params["head"]["kernel"]).max()
  assert 0 < head_delta < 0.1  # fine-tuned from the loaded head, not from a fresh init


def test_interval_metrics_average_finite_values_and_count_skips():
  nan = float("nan")
  pending = [{"loss": 1.0, "skipped_nonfinite": 0.0}, {"loss": nan, "skipped_nonfinite": 1.0},
             {"loss": 3.0, "skipped_nonfinite": 0.0}]
  assert loop.interval_metrics(pending) == {"loss": 2.0, "skipped_nonfinite": 1.0}
  assert np.isnan(loop.interval_metrics(pending[1:2])["loss"])


def test_metrics_jsonl_tensorboard_and_progress(tmp_path, capsys):
  config = make_config(**{"total_steps": 5, "log_every": 2, "eval_every": 2})
  train(config, tmp_path, nan_steps={2})
  out = capsys.readouterr().out
  records = train_logging.read_metrics(tmp_path)
  train_records = [r for r in records if r["split"] == "train"]
  eval_records = [r for r in records if r["split"] == "eval"]
  assert [r["step"] for r in train_records] == [2, 4, 5]
  assert [r["step"] for r in eval_records] == [2, 4, 5]
  assert [r["skipped_nonfinite"] for r in train_records] == [0.0, 1.0, 0.0]
  assert np.isfinite(train_records[1]["loss"])  # interval means skip the counted NaN step
  for r in train_records:
    assert {"loss", "mse", "psnr", "grad_norm", "lr"} <= set(r)
  assert set(eval_records[-1]) == {"step", "split", "mse", "psnr"}
  written = json.load(open(tmp_path / "config.json"))
  assert written["total_steps"] == 5 and written["model"]["name"] == "toy_mlp"

  events = _tb.read_events(tmp_path / "tensorboard")
  scalars = {(v.tag, e.step): v.simple_value for e in events for v in e.summary.value
             if v.HasField("simple_value")}
  assert scalars[("train/mse", 4)] == pytest.approx(train_records[1]["mse"], rel=1e-6)
  assert scalars[("eval/psnr", 5)] == pytest.approx(eval_records[-1]["psnr"], rel=1e-6)
  images = [(e.step, v.image) for e in events for v in e.summary.value if v.HasField("image")]
  assert [(s, i.height, i.width) for s, i in images] == [(2, 4, 4), (4, 4, 4), (5, 4, 4)]
  assert _tb.decode_png(images[-1][1].encoded_image_string).shape == (4, 4, 3)

  lines = [l for l in out.splitlines() if l.startswith("step ")]
  assert len(lines) == 3
  pattern = r"step \d+/5  loss \S+  psnr \S+( {2}skipped 1 non-finite)?  [\d.]+ steps/s  ETA \d+s"
  for line in lines:
    assert re.fullmatch(pattern, line), line
  assert "skipped 1 non-finite" in lines[1]
  assert re.search(r"^eval step 5  mse \S+  psnr \S+$", out, re.M)


def test_png_encoder_round_trips():
  image = np.random.default_rng(0).integers(0, 256, size=(5, 7, 3)).astype(np.uint8)
  np.testing.assert_array_equal(_tb.decode_png(train_logging.encode_png(image)), image)
  summary = train_logging.image_summary("eval/x", image.astype(np.float32) / 255.0)
  np.testing.assert_array_equal(_tb.decode_png(summary.value[0].image.encoded_image_string), image)


def test_apng_video_summary_round_trips():
  video = np.random.default_rng(1).integers(0, 256, size=(4, 5, 7, 3)).astype(np.uint8)
  frames, delay = _tb.decode_apng(train_logging.encode_apng(video, fps=10))
  np.testing.assert_array_equal(frames, video)
  assert delay == 100
  summary = train_logging.image_summary("eval/v", video.astype(np.float32) / 255.0)
  image = summary.value[0].image
  assert (image.height, image.width) == (5, 7)
  np.testing.assert_array_equal(_tb.decode_apng(image.encoded_image_string)[0], video)


def test_progress_line_format_and_rate_excludes_compile():
  assert train_logging.format_progress(
      120, 2000, {"loss": 0.012341, "psnr": 21.34, "mse": 3.0}, 4.8) == (
          "step 120/2000  loss 0.01234  psnr 21.3  4.8 steps/s  ETA 6m32s")
  assert train_logging.format_progress(3, 10, {"loss": 1.0}, None) == "step 3/10  loss 1"
  assert train_logging.format_duration(7325) == "2h02m"
  times = iter([100.0, 102.0, 104.0])  # start (after the compiling step), two updates
  progress = train_logging.ProgressLine(21, clock=lambda: next(times), enabled=False)
  progress.start(1)
  assert progress.update(11, {"loss": 0.5}) == "step 11/21  loss 0.5  5.0 steps/s  ETA 2s"
  assert progress.update(21, {"loss": 0.25}).endswith("  5.0 steps/s  ETA 0s")


def test_metric_writer_purges_steps_of_a_failed_attempt(tmp_path):
  with train_logging.MetricWriter(str(tmp_path)) as writer:
    for step in (1, 2, 3, 4):
      writer.write_scalars(step, {"loss": step / 10})
  with train_logging.MetricWriter(str(tmp_path), purge_step=3) as writer:
    writer.write_scalars(3, {"loss": 0.0})
  assert [(r["step"], r["loss"]) for r in train_logging.read_metrics(tmp_path)] == [
      (1, 0.1), (2, 0.2), (3, 0.0)]
  with open(tmp_path / "metrics.jsonl", "a") as f:
    f.write('{"step": 4, "split": "tr')  # killed mid-write
  train_logging.MetricWriter(str(tmp_path), purge_step=4).close()
  assert [r["step"] for r in train_logging.read_metrics(tmp_path)] == [1, 2, 3]
  off = train_logging.MetricWriter(str(tmp_path / "off"), enabled=False)
  off.write_scalars(1, {"loss": 1.0})
  off.close()
  assert not os.path.exists(tmp_path / "off")


# ----------------------------------------------------------------------------------------------
# The launcher.


def _launch(args, toy_data=False):
  if toy_data:
    prefix = [sys.executable, "-c",
              "import sys; sys.path.insert(0, 'tests'); import _toy; _toy.launch_with_toy_data()"]
  else:
    prefix = [sys.executable, "-m", "launch.train"]
  return subprocess.run(prefix + ["--config=tests/toy_config.py"] + args, cwd=REPO,
                        capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("override,field", [("--config.modle.width=3", "modle"),
                                            ("--config.optimizer.lrr=1", "lrr")])
def test_launcher_misspelt_override_fails_in_one_line(tmp_path, override, field):
  result = _launch([f"--workdir={tmp_path}", override])
  assert result.returncode != 0
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1, result.stderr
  assert lines[0].startswith(f"error: {override.split('=')[0]}: the config has no field "
                             f"'{field}'")
  assert not os.path.exists(tmp_path / "config.json")


def test_launcher_override_reaches_config_json_and_mismatch_exits_in_one_line(tmp_path):
  result = _launch([f"--workdir={tmp_path}", "--config.optimizer.lr=0.02",
                    "--config.total_steps=2", "--config.eval_every=0"], toy_data=True)
  assert result.returncode == 0, result.stderr
  written = json.load(open(tmp_path / "config.json"))
  assert written["optimizer"]["lr"] == 0.02 and written["total_steps"] == 2
  assert "step 2/2  loss" in result.stdout
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2"]
  # Quiet by default: no library INFO log lines (absl's "I1205 ..." prefix; Orbax logs many).
  assert not re.search(r"^I\d{4} ", result.stderr, re.M), result.stderr[-2000:]

  result = _launch([f"--workdir={tmp_path}", "--config.model.width=16"], toy_data=True)
  assert result.returncode == 1
  assert "Traceback" not in result.stderr
  errors = [l for l in result.stderr.splitlines() if l.startswith("error:")]
  assert len(errors) == 1, result.stderr
  assert errors[0].startswith(f"error: checkpoint {tmp_path / 'checkpoints' / '2'} of model "
                              "'toy_mlp' holds 'head/kernel' with (8, 2) float32 but the config "
                              "builds (16, 2) float32")
  assert errors[0].endswith("use a fresh --workdir or a config that matches the checkpoint")


def test_per_module_inf_norm_clipping_is_torchs():
  """optimizer.clip_norm (clip_norm_type='inf'): PyTorch's clip_grad_norm_(norm_type=inf) on
  each named module."""
  tx = loop.clip_modules_by_norm(10.0, ("a", "b"))
  grads = {"a": {"x": jnp.array([20.0, -5.0]), "y": jnp.array([1.0])},
           "b": {"z": jnp.array([-4.0])}, "c": {"w": jnp.array([100.0])}}
  out, _ = tx.update(grads, tx.init(grads))
  coef = 10.0 / (20.0 + 1e-6)   # a: max |g| = 20 > 10; b is under the bound; c is not clipped
  np.testing.assert_allclose(out["a"]["x"], [20.0 * coef, -5.0 * coef], rtol=1e-6)
  np.testing.assert_allclose(out["a"]["y"], [coef], rtol=1e-6)
  np.testing.assert_array_equal(out["b"]["z"], [-4.0])
  np.testing.assert_array_equal(out["c"]["w"], [100.0])
  with pytest.raises(ValueError, match=r"clip_modules names \['d'\]"):
    loop.clip_modules_by_norm(10.0, ("d",)).update(grads, None)


def test_grouped_l2_norm_clipping_is_torchs():
  """clip_norm_type='2' with a group 'b+c' (MCNet: the generator with its dense motion and
  memory): one Euclidean norm over the group's gradients, as one clip_grad_norm_ call."""
  tx = loop.clip_modules_by_norm(10.0, ("a", "b+c"), "2")
  grads = {"a": {"x": jnp.array([3.0, 4.0])}, "b": {"y": jnp.array([12.0])},
           "c": {"z": jnp.array([-16.0])}, "d": {"w": jnp.array([100.0])}}
  out, _ = tx.update(grads, tx.init(grads))
  np.testing.assert_array_equal(out["a"]["x"], [3.0, 4.0])        # norm 5: under the bound
  coef = 10.0 / (20.0 + 1e-6)                                      # |(12, -16)| = 20
  np.testing.assert_allclose(out["b"]["y"], [12.0 * coef], rtol=1e-6)
  np.testing.assert_allclose(out["c"]["z"], [-16.0 * coef], rtol=1e-6)
  np.testing.assert_array_equal(out["d"]["w"], [100.0])
  with pytest.raises(ValueError, match="clip_norm_type='1'"):
    loop.clip_modules_by_norm(10.0, ("a",), "1")


def test_multistep_milestones_are_fractions_of_the_schedule():
  """MCNet's x0.1 at 80% (optimizer.milestones=(0.8,)); the default (0.7, 0.9) of TPSMM."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  opt = ml_collections.ConfigDict(dict(lr=1.0, lr_end=0.0, schedule="multistep",
                                       milestones=(0.8,)))
  lr = loop.learning_rate_schedule(opt, 100)
  np.testing.assert_allclose([float(lr(s)) for s in (0, 79, 80, 99)], [1.0, 1.0, 0.1, 0.1])
  opt.milestones = (0.7, 0.9)
  lr = loop.learning_rate_schedule(opt, 100)
  np.testing.assert_allclose([float(lr(s)) for s in (69, 70, 89, 90)], [1.0, 0.1, 0.1, 0.01],
                             rtol=1e-6)

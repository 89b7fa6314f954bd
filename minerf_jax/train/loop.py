"""``train_and_evaluate``: one training loop for every model (see DESIGN.md section 3).

The loop knows models only through the seam in ``minerf_jax/models/__init__.py`` and data only
through the ``Data`` interface of ``minerf_jax/data/pipeline.py``:

  data.train_batch(step) -> dict of arrays     # this process's share of the global batch
  data.global_batch_size -> int
  data.eval_data                               # opaque, passed to model.evaluate
  data.example_batch() -> dict                 # one small host batch for model.init

Batches and the step rng (``fold_in(rng, step)``) are pure functions of the step, so a run that
resumes from a checkpoint ends with bit-identical parameters to one that never stopped.

Per step ``s`` (1-based count of finished steps): train metrics + progress line every
``log_every`` (the only host syncs), ``model.evaluate`` every ``eval_every`` and at the end,
a checkpoint every ``checkpoint.every``, at the end and on SIGTERM or SIGINT (then the loop
returns). A step whose loss or gradient is non-finite is skipped (``parallel.train_step_fn``);
``config.max_nonfinite_steps`` consecutive ones stop the run with ``TrainingDiverged`` (found
at the logging step that fetches them; the last checkpoint stays the one to resume from).
Models may also offer ``summary_images(params, eval_data) -> {name: [H, W, 3]}``, written to
TensorBoard at each evaluation.
"""
from __future__ import annotations

import json
import os
import signal
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from jax.experimental import multihost_utils

from minerf_jax.train import checkpoint
from minerf_jax.train import logging as train_logging
from minerf_jax.train import parallel
from minerf_jax.train import state as state_lib

PyTree = Any
# Metrics reported as counts over a logging interval rather than means.
COUNT_METRICS = ("skipped_nonfinite",)



class TrainingDiverged(ValueError):
  """Too many consecutive non-finite steps (``config.max_nonfinite_steps``); one-line message."""


# ----------------------------------------------------------------------------------------------
# Optimizer.


def learning_rate_schedule(opt: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
  """Linear warmup 0 -> ``lr`` over ``warmup_steps``, then ``lr`` -> ``lr_end`` by ``schedule``.

  ``exponential``: lr * (lr_end / lr) ** (t / T); ``cosine``: half-cosine from lr to lr_end;
  ``multistep``: lr, x0.1 at each fraction of T in ``milestones`` (default 70% and 90%, the TPSMM
  references; MCNet: 80%; lr_end unused); ``constant``: lr. T is the number of steps after warmup.
  """
  lr, lr_end = float(opt.lr), float(opt.lr_end)
  warmup = int(opt.get("warmup_steps", 0))
  kind = opt.get("schedule", "exponential")
  if lr <= 0:
    raise ValueError(f"config.optimizer.lr={lr} must be > 0")
  decay_steps = max(int(total_steps) - warmup, 1)
  if kind == "constant":
    decay = optax.constant_schedule(lr)
  elif kind == "exponential":
    if lr_end <= 0:
      raise ValueError(f"config.optimizer.lr_end={lr_end} must be > 0 for an exponential decay")
    decay = optax.exponential_decay(lr, decay_steps, decay_rate=lr_end / lr, end_value=lr_end)
  elif kind == "cosine":
    decay = optax.cosine_decay_schedule(lr, decay_steps, alpha=lr_end / lr)
  elif kind == "multistep":  # x0.1 at each milestone (fractions of the decay steps)
    milestones = tuple(float(m) for m in opt.get("milestones", (0.7, 0.9)))
    if not milestones or any(not 0 < m < 1 for m in milestones):
      raise ValueError(f"config.optimizer.milestones={milestones}: fractions in (0, 1)")
    decay = optax.piecewise_constant_schedule(
        lr, {int(m * decay_steps): 0.1 for m in milestones})
  else:
    raise ValueError(f"config.optimizer.schedule={kind!r}; use exponential, cosine, multistep "
                     "or constant")
  if warmup <= 0:
    return decay
  return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), decay], [warmup])


CLIP_NORM_TYPES = ("inf", "2")


def clip_modules_by_norm(max_norm: float, modules: tuple[str, ...], norm_type: str = "inf"
                         ) -> optax.GradientTransformation:
  """PyTorch's ``clip_grad_norm_(params, max_norm, norm_type)`` for each group of top-level
  parameter subtrees in ``modules`` separately: a group's gradients are scaled by
  ``max_norm / (norm + 1e-6)`` when that is below 1, ``norm`` their largest absolute value
  (``'inf'``) or their joint Euclidean norm (``'2'``). An entry ``'a+b'`` is one group of the
  subtrees ``a`` and ``b`` (one ``clip_grad_norm_`` call over both networks' parameters, as
  MCNet clips its generator with the dense motion and memory inside). Other subtrees pass
  unchanged."""
  if norm_type not in CLIP_NORM_TYPES:
    raise ValueError(f"config.optimizer.clip_norm_type={norm_type!r}; use one of "
                     f"{CLIP_NORM_TYPES}")
  groups = [tuple(str(m).split("+")) for m in modules]

  def norm_of(leaves):
    if norm_type == "inf":
      return jnp.max(jnp.stack([jnp.max(jnp.abs(g)) for g in leaves]))
    return jnp.sqrt(sum(jnp.sum(jnp.square(g.astype(jnp.float32))) for g in leaves))

  def update(updates, state, params=None):
    del params
    missing = [m for group in groups for m in group if m not in updates]
    if missing:
      raise ValueError(f"config.optimizer.clip_modules names {missing}, not parameters of this "
                       f"model (it has {sorted(updates)})")
    out = dict(updates)
    for group in groups:
      leaves = jax.tree.leaves([updates[m] for m in group])
      if not leaves:
        continue
      scale = jnp.minimum(1.0, max_norm / (norm_of(leaves) + 1e-6))
      for m in group:
        out[m] = jax.tree.map(lambda g: g * scale.astype(g.dtype), updates[m])
    return type(updates)(out) if not isinstance(updates, dict) else out, state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def make_optimizer(config: ml_collections.ConfigDict, trainable: Callable[[PyTree], PyTree],
                   schedule: optax.Schedule | None = None) -> optax.GradientTransformation:
  """Adam (+ optional global-norm clipping) on trainable leaves, ``set_to_zero`` on frozen ones."""
  opt = config.optimizer
  schedule = schedule or learning_rate_schedule(opt, config.total_steps)
  chain = []
  if opt.get("grad_clip", 0.0) and opt.grad_clip > 0:
    chain.append(optax.clip_by_global_norm(float(opt.grad_clip)))
  if opt.get("clip_norm", 0.0) and opt.clip_norm > 0:
    chain.append(clip_modules_by_norm(float(opt.clip_norm), tuple(opt.clip_modules),
                                      str(opt.get("clip_norm_type", "inf"))))
  chain.append(optax.adam(schedule, b1=opt.get("b1", 0.9), b2=opt.get("b2", 0.999),
                          eps=opt.get("eps", 1e-8)))

  def labels(params):
    return jax.tree.map(lambda t: "trainable" if t else "frozen", trainable(params))

  return optax.multi_transform(
      {"trainable": optax.chain(*chain), "frozen": optax.set_to_zero()}, labels)


# ----------------------------------------------------------------------------------------------
# Helpers.


def _build(config, model, data):
  from minerf_jax import models  # pylint: disable=g-import-not-at-top
  if model is None:
    model = models.build(config)
  if data is None:
    data = models.build_data(config)
  return model, data


def write_config(config: ml_collections.ConfigDict, workdir: str) -> str:
  """Writes the resolved config to ``WORKDIR/config.json`` (process 0); returns the path."""
  path = os.path.join(workdir, "config.json")
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    with open(path + ".tmp", "w") as f:
      f.write(json.dumps(json.loads(config.to_json()), indent=2, sort_keys=True) + "\n")
    os.replace(path + ".tmp", path)
  return path


def _abstract(tree: PyTree) -> PyTree:
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


def interval_metrics(pending: list[dict[str, float]]) -> dict[str, float]:
  """Per-step host metrics of one logging interval -> means (counts for COUNT_METRICS).

  Means are over the finite values (a skipped non-finite step, already counted by
  ``skipped_nonfinite``, does not hide the interval's loss); NaN if none is finite.
  """
  out = {}
  for name in pending[0]:
    values = np.asarray([m[name] for m in pending], np.float64)
    finite = values[np.isfinite(values)]
    if name in COUNT_METRICS:
      out[name] = float(values.sum())
    else:
      out[name] = float(finite.mean()) if finite.size else float("nan")
  return out


class NonFiniteRun:
  """Counts consecutive skipped (non-finite) steps; raises TrainingDiverged at ``limit``."""

  def __init__(self, limit: int, ckpt: checkpoint.Checkpointer):
    self.limit, self.ckpt = int(limit), ckpt
    self.count, self.first = 0, None

  def update(self, first_step: int, skipped: list[float]) -> None:
    """``skipped[i]``: the ``skipped_nonfinite`` metric of step ``first_step + i`` (1-based)."""
    for i, flag in enumerate(skipped):
      if flag > 0:
        self.first = first_step + i if self.count == 0 else self.first
        self.count += 1
      else:
        self.count = 0
      if 0 < self.limit <= self.count:
        last = self.ckpt.latest_step()
        resume = (f"the last checkpoint is {self.ckpt.step_path(last)}" if last is not None
                  else "no checkpoint was written")
        raise TrainingDiverged(
            f"training diverged: steps {self.first}-{first_step + i} ({self.count} in a row) "
            f"had a non-finite loss or gradient and were skipped "
            f"(config.max_nonfinite_steps={self.limit}); {resume}; lower "
            "config.optimizer.lr or add clipping (config.optimizer.grad_clip)")


def _stop_requested(stop: checkpoint.StopSignal, step: int, log_every: int) -> bool:
  """Single host: the SIGTERM flag. Multi-host: agreed by all processes at log steps."""
  if jax.process_count() == 1:
    return stop.requested
  if step % max(log_every, 1):
    return False
  flags = multihost_utils.process_allgather(np.asarray(stop.requested, np.int32))
  return bool(np.any(flags))


def _signal_name(signum: int | None) -> str:
  try:
    return signal.Signals(signum).name
  except (TypeError, ValueError):
    return "signal"


def _evaluate(model, data, state, writer: train_logging.MetricWriter, step: int) -> dict:
  params = state.params
  kw = {} if state.batch_stats is None else {"batch_stats": state.batch_stats}
  results = {k: float(v) for k, v in model.evaluate(params, data.eval_data, **kw).items()}
  writer.write_scalars(step, results, split="eval")
  summary_images = getattr(model, "summary_images", None)
  if summary_images is not None:
    writer.write_images(step, summary_images(params, data.eval_data, **kw), split="eval")
  writer.flush()
  if jax.process_index() == 0:
    shown = [f"{k} {train_logging.format_value(k, v)}" for k, v in sorted(results.items())]
    print(f"eval step {step}  {'  '.join(shown)}", flush=True)
  return results


# ----------------------------------------------------------------------------------------------
# The loop.


def seed_keys(config) -> tuple[jax.Array, jax.Array]:
  """(init rng, train rng) of a run: both from ``config.seed``."""
  init_rng, train_rng = jax.random.split(jax.random.PRNGKey(int(config.seed)))
  return init_rng, train_rng


def initial_variables(config, model, data, *, from_data: bool = True):
  """(params, batch_stats, train rng) of a fresh run: ``model.init`` from the seed (or
  ``model.init_variables`` for models with BatchNorm statistics; else batch_stats is None), then
  the model's optional ``initialize_from_data`` hook (e.g. data-driven backgrounds)."""
  init_rng, train_rng = seed_keys(config)
  batch_stats = None
  if hasattr(model, "init_variables"):
    variables = model.init_variables(init_rng, data.example_batch())
    params, batch_stats = variables["params"], variables.get("batch_stats")
  else:
    params = model.init(init_rng, data.example_batch())
  if from_data and hasattr(model, "initialize_from_data"):
    params = model.initialize_from_data(params, data)
  return params, batch_stats, train_rng


def initial_params(config, model, data, *, from_data: bool = True):
  """(params, train rng) of a fresh run (see ``initial_variables``)."""
  params, _, train_rng = initial_variables(config, model, data, from_data=from_data)
  return params, train_rng


def init_state(config, model, data, mesh, ckpt: checkpoint.Checkpointer, tx
               ) -> state_lib.TrainState:
  """Fresh (or ``init_from``) state replicated over ``mesh``, replaced by the workdir's latest
  checkpoint when there is one."""
  resume = ckpt.latest_step() is not None
  params, batch_stats, train_rng = initial_variables(config, model, data, from_data=not resume)
  if config.get("init_from") and not resume:
    params = model.load_pretrained(params, checkpoint.load_params(config.init_from))
    if batch_stats is not None:
      batch_stats = checkpoint.load_params(config.init_from, item="batch_stats")
    print(f"initialised parameters from {config.init_from}", flush=True)
  state = parallel.replicate(mesh, state_lib.TrainState.create(params, tx, train_rng,
                                                               batch_stats))
  if resume:
    state = ckpt.restore(_abstract(state))
    print(f"resuming from {ckpt.step_path(int(state.step))}", flush=True)
  return state


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *, model=None,
                       data=None) -> state_lib.TrainState:
  """Trains ``config.model`` on ``config.data`` in ``workdir`` (resuming if it has checkpoints).

  ``model`` / ``data`` (built from the config when None) let tests inject toy ones. Returns the
  final TrainState, replicated over all devices (a normal pytree of jax.Arrays).
  """
  parallel.initialize_distributed(config.parallel.get("distributed", "auto"))
  logging.info("config:\n%s", config)
  model, data = _build(config, model, data)
  mesh = parallel.make_mesh()
  parallel.check_batch_size(int(data.global_batch_size), mesh)
  write_config(config, workdir)
  total, log_every = int(config.total_steps), max(int(config.log_every), 1)
  eval_every = int(config.get("eval_every", 0))
  schedule = learning_rate_schedule(config.optimizer, total)
  tx = make_optimizer(config, model.trainable, schedule)
  ckpt = checkpoint.Checkpointer.from_config(workdir, config, model_name=model.name)
  try:
    state = init_state(config, model, data, mesh, ckpt, tx)
    start = int(state.step)
    if start >= total:
      print(f"{workdir} is already trained to step {start} (total_steps={total})", flush=True)
      return state
    train_step = parallel.make_train_step(model, tx, config.parallel.strategy, mesh)
    n = mesh.devices.size
    print(f"training {model.name}: steps {start} -> {total}, {n} device{'s' * (n != 1)} "
          f"({config.parallel.strategy}), global batch {data.global_batch_size}, "
          f"workdir {workdir}", flush=True)
    # Records after the checkpoint we start from belong to an attempt that did not finish.
    with train_logging.MetricWriter(workdir, purge_step=start + 1) as writer, (
        checkpoint.StopSignal()) as stop:
      state = _run(config, model, data, train_step, state, ckpt, writer, stop, schedule,
                   start=start, total=total, log_every=log_every, eval_every=eval_every)
    return state
  finally:
    ckpt.close()


def _run(config, model, data, train_step, state, ckpt, writer, stop, schedule, *, start, total,
         log_every, eval_every) -> state_lib.TrainState:
  """The step loop; returns the canonical (replicated) state."""
  progress = train_logging.ProgressLine(total)
  nonfinite = NonFiniteRun(config.get("max_nonfinite_steps", 0), ckpt)
  state = train_step.put_state(state)
  pending = []
  done = start
  for step in range(start, total):
    state, metrics = train_step(state, train_step.put_batch(data.train_batch(step)))
    done = step + 1
    pending.append(metrics)
    if done == start + 1:  # compiled and ran: rates start here
      jax.block_until_ready(metrics)
      progress.start(done)
    if done % log_every == 0 or done == total:
      fetched = [train_step.host_metrics(m) for m in jax.device_get(pending)]  # one host sync
      nonfinite.update(done - len(fetched) + 1, [m.get("skipped_nonfinite", 0.0) for m in fetched])
      summary = interval_metrics(fetched)
      summary["lr"] = float(schedule(done - 1))
      pending = []
      writer.write_scalars(done, summary, split="train")
      progress.update(done, summary)
    if eval_every > 0 and done % eval_every == 0 and done != total:
      _evaluate(model, data, train_step.get_state(state), writer, done)
    if ckpt.should_save(done):
      ckpt.save(done, train_step.get_state(state), config)
    if _stop_requested(stop, done, log_every):
      ckpt.save(done, train_step.get_state(state), config)
      ckpt.wait()
      writer.flush()
      print(f"stop requested ({_signal_name(stop.signum)}): saved {ckpt.step_path(done)}; "
            "resume by re-running",
            flush=True)
      return train_step.get_state(state)
  state = train_step.get_state(state)
  _evaluate(model, data, state, writer, done)
  ckpt.save(done, state, config)
  return state

"""Devices: the one module of the project that knows about them.

Data parallelism over every device of every process:

* ``strategy='jit'`` (default): a 1-D ``('data',)`` mesh with **Auto** axis types (``jax.make_mesh``
  defaults to Explicit, under which linen ``nn.Embed`` with batch-sharded ids fails); the train
  step is one ``jax.jit`` with the state replicated, the batch sharded along dim 0 and the state
  donated. XLA inserts the gradient all-reduce.
* ``strategy='pmap'``: an explicit ``jax.pmap`` step with ``lax.pmean`` of gradients and metrics
  over axis ``'data'``; the state carries a leading device axis (``to_device_axis`` /
  ``from_device_axis``) and the batch is reshaped to ``[devices, per_device, ...]``.

Both compute the update of one device seeing the whole global batch: a model's loss is a mean
over its batch, so the mean over equal per-device shards is the global mean.

RNG: the step rng is ``fold_in(state.rng, step)``, the same on every device under both strategies
(the pmap step deliberately does not fold in the device index). Under jit a model that draws
per-example randomness from it draws for the global batch; under pmap each device draws for its
own shard with the same key, so per-example draws repeat across devices (and differ from the jit
draws). Losses that do not use the rng give the same update under jit, pmap and one device.

Multi-host: ``initialize_distributed`` starts ``jax.distributed``; each process feeds its own
share of the global batch (``Data.train_batch``) and ``jax.make_array_from_process_local_data``
assembles the global array.
"""
from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from minerf_jax.train import state as state_lib

PyTree = Any
DATA_AXIS = "data"
STRATEGIES = ("jit", "pmap")


# ----------------------------------------------------------------------------------------------
# Processes and meshes.


def _multihost_env(environ: Mapping[str, str]) -> bool:
  """Whether the environment describes a multi-process job that jax.distributed can join."""
  if environ.get("JAX_COORDINATOR_ADDRESS"):
    return True
  for count in ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"):
    if int(environ.get(count, "1") or 1) > 1:
      return True
  return "," in environ.get("TPU_WORKER_HOSTNAMES", "")


def initialize_distributed(mode: str = "auto", environ: Mapping[str, str] | None = None) -> bool:
  """Starts ``jax.distributed`` for multi-host jobs; returns whether it is initialised.

  ``mode``: 'on' always initialises (cluster auto-detection or ``JAX_COORDINATOR_ADDRESS`` etc.),
  'off' never, 'auto' when the environment names a coordinator or a multi-task SLURM / Open MPI /
  multi-worker TPU job. Single-host runs are a no-op. Must run before anything touches a device.
  ``JAX_COORDINATOR_ADDRESS`` + ``JAX_NUM_PROCESSES`` + ``JAX_PROCESS_ID`` start a job on any
  machines (tests/_multihost.py uses them on localhost).
  """
  if mode not in ("auto", "on", "off"):
    raise ValueError(f"config.parallel.distributed={mode!r}; use 'auto', 'on' or 'off'")
  if jax.distributed.is_initialized():
    return True
  environ = os.environ if environ is None else environ
  if mode == "on" or (mode == "auto" and _multihost_env(environ)):
    jax.distributed.initialize(**distributed_args(environ))
    return True
  return False


def distributed_args(environ: Mapping[str, str]) -> dict:
  """``jax.distributed.initialize`` arguments from ``JAX_NUM_PROCESSES`` / ``JAX_PROCESS_ID``
  (JAX itself reads only ``JAX_COORDINATOR_ADDRESS``; SLURM, Open MPI and TPU pods are detected
  without them)."""
  args = {}
  for name, key in (("num_processes", "JAX_NUM_PROCESSES"), ("process_id", "JAX_PROCESS_ID")):
    if environ.get(key, "") != "":
      try:
        args[name] = int(environ[key])
      except ValueError:
        raise ValueError(f"${key}={environ[key]!r} must be an integer") from None
  return args


def make_mesh(devices=None) -> jax.sharding.Mesh:
  """A 1-D ``('data',)`` mesh with Auto axis types over ``devices`` (default: all devices)."""
  devices = list(jax.devices() if devices is None else devices)
  return jax.make_mesh((len(devices),), (DATA_AXIS,),
                       axis_types=(jax.sharding.AxisType.Auto,), devices=devices)


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: jax.sharding.Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def local_device_count(mesh: jax.sharding.Mesh) -> int:
  """Devices of ``mesh`` that belong to this process."""
  return sum(d.process_index == jax.process_index() for d in mesh.devices.flat)


def check_batch_size(global_batch_size: int, mesh: jax.sharding.Mesh) -> None:
  """Raises unless the global batch splits evenly over the mesh's devices."""
  n = mesh.devices.size
  if global_batch_size % n:
    raise ValueError(f"global batch size {global_batch_size} is not divisible by the {n} devices; "
                     f"change the data config so that the batch is a multiple of {n}")


def replicate(mesh: jax.sharding.Mesh, tree: PyTree) -> PyTree:
  """Puts ``tree`` on every device of ``mesh`` (replicated)."""
  return jax.device_put(tree, replicated(mesh))


def _check_local_batch(mesh: jax.sharding.Mesh, local_batch: Mapping[str, Any]) -> int:
  n = local_device_count(mesh)
  sizes = {k: np.shape(v)[0] for k, v in local_batch.items()}
  if len(set(sizes.values())) > 1:
    raise ValueError(f"batch arrays disagree on the batch dimension: {sizes}")
  size = next(iter(sizes.values()))
  if size % n:
    raise ValueError(f"this process's batch of {size} does not split over its {n} devices")
  return n


def shard_batch(mesh: jax.sharding.Mesh, local_batch: Mapping[str, Any]) -> dict:
  """This process's share of the global batch -> global arrays sharded along dim 0."""
  _check_local_batch(mesh, local_batch)
  sharding = batch_sharded(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in local_batch.items()}


def shard_batch_pmap(mesh: jax.sharding.Mesh, local_batch: Mapping[str, Any]) -> dict:
  """This process's batch -> ``[devices, per_device, ...]`` arrays, one slice per device."""
  n = _check_local_batch(mesh, local_batch)
  sharding = batch_sharded(mesh)
  out = {}
  for k, v in local_batch.items():
    v = np.asarray(v)
    out[k] = jax.make_array_from_process_local_data(
        sharding, v.reshape((n, v.shape[0] // n) + v.shape[1:]))
  return out


@functools.lru_cache(maxsize=None)
def _broadcaster(mesh: jax.sharding.Mesh):
  n = mesh.devices.size
  return jax.jit(lambda t: jax.tree.map(lambda x: jnp.broadcast_to(x, (n,) + x.shape), t),
                 out_shardings=batch_sharded(mesh))


@functools.lru_cache(maxsize=None)
def _first(mesh: jax.sharding.Mesh):
  return jax.jit(lambda t: jax.tree.map(lambda x: x[0], t), out_shardings=replicated(mesh))


def to_device_axis(mesh: jax.sharding.Mesh, tree: PyTree) -> PyTree:
  """A (replicated) pytree -> copies stacked along a leading device axis (pmap layout)."""
  return _broadcaster(mesh)(replicate(mesh, tree))


def from_device_axis(mesh: jax.sharding.Mesh, tree: PyTree) -> PyTree:
  """The pmap layout -> the first device's copy, replicated over ``mesh`` (bit-exact)."""
  return _first(mesh)(tree)


# ----------------------------------------------------------------------------------------------
# The train step.


def _all_finite(tree: PyTree) -> jax.Array:
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def zero_frozen(grads: PyTree, trainable: PyTree) -> PyTree:
  """Zeroes the gradients of leaves whose ``trainable`` flag is False."""
  return jax.tree.map(lambda g, t: g if t else jnp.zeros_like(g), grads, trainable)


def train_step_fn(model, tx: optax.GradientTransformation, axis_name: str | None = None
                  ) -> Callable[[state_lib.TrainState, dict], tuple[state_lib.TrainState, dict]]:
  """The pure step ``(state, batch) -> (state, metrics)`` (``axis_name``: pmean inside pmap).

  rng = fold_in(state.rng, step); gradients of frozen leaves are zero; if the loss or any
  gradient is non-finite the update is skipped (params, optimizer state and batch statistics
  unchanged, the step still advances) and ``metrics['skipped_nonfinite']`` is 1. Metrics also
  carry ``loss`` and the global gradient norm ``grad_norm``.

  With ``state.batch_stats`` (BatchNorm models) the model's loss takes ``batch_stats=`` and
  returns ``(loss, (metrics, new_batch_stats))``; under pmap the new statistics are averaged over
  devices (under jit BatchNorm already normalises over the global batch).
  """

  def step_fn(state: state_lib.TrainState, batch: dict):
    rng = jax.random.fold_in(state.rng, state.step)
    stateful = state.batch_stats is not None

    def loss_fn(params):
      if stateful:  # BatchNorm models: loss(..., batch_stats) -> (loss, (metrics, new stats))
        return model.loss(params, batch, rng, state.step, batch_stats=state.batch_stats)
      loss, metrics = model.loss(params, batch, rng, state.step)
      return loss, (metrics, None)

    (loss, (metrics, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params)
    grads = zero_frozen(grads, model.trainable(state.params))
    metrics = {**metrics, "loss": loss}
    if axis_name is not None:
      grads, metrics, batch_stats = jax.lax.pmean((grads, metrics, batch_stats), axis_name)
    finite = jnp.isfinite(metrics["loss"]) & _all_finite(grads)
    metrics["skipped_nonfinite"] = jnp.logical_not(finite).astype(jnp.float32)
    metrics["grad_norm"] = optax.global_norm(grads)

    # A conditional, not a per-leaf select: selecting between updated and old leaves lets XLA
    # fuse the update into the gradient computation, which multiplied compile times by 4.
    def apply(state):
      updated = state.apply_gradients(grads, tx)
      return updated.replace(batch_stats=batch_stats) if stateful else updated

    def skip(state):
      return state.replace(step=state.step + 1)

    return jax.lax.cond(finite, apply, skip, state), metrics

  return step_fn


@dataclasses.dataclass(frozen=True)
class TrainStep:
  """A compiled train step plus the layout conversions its strategy needs.

  The canonical state (what checkpoints hold and ``train_and_evaluate`` returns) is replicated
  over ``mesh``; ``put_state`` / ``get_state`` convert to and from the strategy's layout and
  ``put_batch`` turns this process's host batch into the step's input.
  """
  strategy: str
  mesh: jax.sharding.Mesh
  step: Callable[[state_lib.TrainState, dict], tuple[state_lib.TrainState, dict]]

  def __call__(self, state, batch):
    return self.step(state, batch)

  def put_state(self, state: state_lib.TrainState) -> state_lib.TrainState:
    if self.strategy == "pmap":
      return to_device_axis(self.mesh, state)
    return replicate(self.mesh, state)

  def get_state(self, state: state_lib.TrainState) -> state_lib.TrainState:
    if self.strategy == "pmap":
      return from_device_axis(self.mesh, state)
    return state

  def put_batch(self, local_batch: Mapping[str, Any]) -> dict:
    if self.strategy == "pmap":
      return shard_batch_pmap(self.mesh, local_batch)
    return shard_batch(self.mesh, local_batch)

  def host_metrics(self, metrics: Mapping[str, jax.Array]) -> dict[str, float]:
    """Device metrics of one step -> Python floats (this syncs with the device)."""
    metrics = jax.device_get(dict(metrics))
    if self.strategy == "pmap":  # pmean'd: every device holds the same value
      metrics = {k: np.asarray(v).reshape(-1)[0] for k, v in metrics.items()}
    return {k: float(v) for k, v in metrics.items()}


def make_train_step(model, tx: optax.GradientTransformation, strategy: str = "jit",
                    mesh: jax.sharding.Mesh | None = None) -> TrainStep:
  """The data-parallel train step of ``model`` under ``strategy`` ('jit' or 'pmap') on ``mesh``."""
  mesh = make_mesh() if mesh is None else mesh
  if strategy == "jit":
    step = jax.jit(train_step_fn(model, tx), in_shardings=(replicated(mesh), batch_sharded(mesh)),
                   out_shardings=(replicated(mesh), replicated(mesh)), donate_argnums=0)
  elif strategy == "pmap":
    step = jax.pmap(train_step_fn(model, tx, axis_name=DATA_AXIS), axis_name=DATA_AXIS,
                    devices=list(mesh.devices.flat), donate_argnums=0)
  else:
    raise ValueError(f"config.parallel.strategy={strategy!r}; use one of {STRATEGIES}")
  return TrainStep(strategy, mesh, step)

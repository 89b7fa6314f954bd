"""The train state: everything a step reads and writes, as one pytree.

The rng is a raw ``uint32[2]`` key (``jax.random.PRNGKey``): it checkpoints as a plain array and
the step folds the step number into it, so a resumed run draws exactly the numbers an
uninterrupted run would.
"""
from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

PyTree = Any


@flax.struct.dataclass
class TrainState:
  """Step counter, parameters, optimizer state, base rng and (optional) batch statistics."""
  step: jax.Array
  params: PyTree
  opt_state: optax.OptState
  rng: jax.Array
  batch_stats: PyTree = None

  @classmethod
  def create(cls, params: PyTree, tx: optax.GradientTransformation, rng: jax.Array,
             batch_stats: PyTree = None) -> "TrainState":
    """A step-0 state with ``tx``'s initial optimizer state for ``params``."""
    return cls(step=jnp.asarray(0, jnp.int32), params=params, opt_state=tx.init(params),
               rng=jnp.asarray(rng), batch_stats=batch_stats)

  def apply_gradients(self, grads: PyTree, tx: optax.GradientTransformation) -> "TrainState":
    """One optimizer update; the step advances by one."""
    updates, opt_state = tx.update(grads, self.opt_state, self.params)
    return self.replace(step=self.step + 1, params=optax.apply_updates(self.params, updates),
                        opt_state=opt_state)

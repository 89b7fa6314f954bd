"""Fields shared by every experiment config (read by ``minerf_jax/train``).

Experiment configs start from this one and fill in ``model`` and ``data``::

  config = common.get_config()
  config.total_steps = 20_000
  config.model = ml_collections.ConfigDict(dict(name="minerf", ...))
  config.data = ml_collections.ConfigDict(dict(name="synthetic_talking_heads", ...))

The launcher locks the config (``config_flags.DEFINE_config_file(..., lock_config=True)``), so
``--config.optimizer.lr=1e-3`` overrides a declared field while a misspelt one
(``--config.optimizer.lrr=1e-3``) fails. The workdir is a flag, not a config field, so one config
can be launched into many run directories.
"""
import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The shared training config; ``arg`` is unused (experiment configs own the variants)."""
  del arg
  config = ml_collections.ConfigDict()
  config.seed = 0                   # parameter init and the train rng (folded in by step)
  config.total_steps = 1_000
  config.log_every = 50             # progress line + train metrics (host sync) every N steps
  config.eval_every = 1_000         # model.evaluate every N steps and at the end; 0: only at end
  config.init_from = ""             # checkpoint dir or workdir to initialise params from
  config.max_nonfinite_steps = 20   # stop (one-line error) after N consecutive steps whose loss
                                    # or gradient is non-finite (each one's update is skipped);
                                    # 0: skip them forever

  config.optimizer = ml_collections.ConfigDict(dict(
      lr=1e-3,                      # peak learning rate (after warmup)
      lr_end=1e-4,                  # learning rate at total_steps
      schedule="exponential",       # exponential | cosine | multistep | constant (lr -> lr_end)
      warmup_steps=0,               # linear warmup from 0 to lr
      grad_clip=0.0,                # > 0: clip the global gradient norm (trainable leaves)
      b1=0.9,
      b2=0.999,
      eps=1e-8,
  ))
  config.checkpoint = ml_collections.ConfigDict(dict(
      every=1_000,                  # save every N steps (and at the end, on SIGTERM / SIGINT)
      keep=3,                       # keep the N most recent checkpoints
      async_save=True,              # write in a background thread (state is copied first)
  ))
  config.parallel = ml_collections.ConfigDict(dict(
      strategy="jit",               # jit (sharded jax.jit over a ('data',) mesh) | pmap
      distributed="auto",           # auto | on | off: jax.distributed.initialize() multi-host
  ))
  # Filled in by experiment configs.
  config.model = ml_collections.ConfigDict()
  config.data = ml_collections.ConfigDict()
  return config

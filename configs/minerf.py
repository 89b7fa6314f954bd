"""MI-NeRF on the embedded synthetic multi-identity dataset.

  python -m launch.train --config=configs/minerf.py --workdir=runs/minerf
  python -m launch.train --config=configs/minerf.py:test --workdir=/tmp/minerf_test   # seconds
  python -m launch.train --config=configs/minerf.py --workdir=runs/concat \
      --config.model.fusion=concat                                                   # ablation
  python -m launch.train --config=configs/minerf.py --workdir=runs/personal \
      --config.init_from=runs/minerf --config.personalise.identity=4                 # new person

Variants (``:arg``): '' full (64x64, 4 identities; sized for an accelerator), 'demo' (what
``make demo`` trains: 1000 steps, ~7 minutes on 2 CPU cores), 'test' (tiny, for CI).
"""
import ml_collections

from configs import common
from configs import hyper
from minerf_jax.data import synthetic


# Fusion variants: name -> model overrides (every one sets all three fields, so the default
# config's choice does not leak into an ablation).
FUSION_VARIANTS = {
    "hadamard": {"model.fusion": "hadamard", "model.first_order": False,
                 "model.augment_expression": False},
    # The previous default: the pure product with N(0, 0.1) codes and no init calibration.
    "hadamard_raw_init": {"model.fusion": "hadamard", "model.first_order": False,
                          "model.augment_expression": False, "model.identity_init": 0.1,
                          "model.condition_share": 0.0},
    "hadamard_augmented": {"model.fusion": "hadamard", "model.first_order": False,
                           "model.augment_expression": True},
    "hadamard_first_order": {"model.fusion": "hadamard", "model.first_order": True,
                             "model.augment_expression": False},
    # The default without the per-frame latent (the shortcut that bypasses M).
    "hadamard_augmented_no_latent": {"model.fusion": "hadamard", "model.first_order": False,
                                     "model.augment_expression": True, "model.latent_dim": 0},
    "concat": {"model.fusion": "concat", "model.first_order": False,
               "model.augment_expression": False},
    "additive": {"model.fusion": "additive", "model.first_order": False,
                 "model.augment_expression": False},
    "film": {"model.fusion": "film", "model.first_order": False,
             "model.augment_expression": False},
}


def make_tiny(config: ml_collections.ConfigDict) -> None:
  """The CI-sized schedule and MI-NeRF (seconds on a CPU), shared by every ':test' variant."""
  config.total_steps = 6
  config.log_every = 2
  config.eval_every = 6
  config.checkpoint.every = 3
  config.model.update(identity_dim=8, fusion_features=16, latent_dim=4, depth=2, width=32,
                      skips=(), num_coarse=8, num_fine=8)
  config.model.encoding.max_deg = 3


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = common.get_config()
  config.total_steps = 20_000
  config.log_every = 100
  config.eval_every = 2_000
  config.optimizer.lr = 5e-3
  config.optimizer.lr_end = 2e-4
  config.optimizer.warmup_steps = 200
  config.checkpoint.every = 1_000

  config.model = ml_collections.ConfigDict(dict(
      name="minerf",
      fusion="hadamard",          # hadamard (MI-NeRF) | concat | additive | film
      first_order=False,          # M(w,e) = (U_w w)*(U_e e) [+ V_w w + V_e e]
      augment_expression=True,    # hadamard: (U_w w)*(U_e [e, 1]), an identity-only path
      identity_init=1.0,          # std of the identity codes at init
      condition_share=0.25,       # condition's share of the first pre-activation's variance
                                  # at init (calibrated; 0 keeps the raw lecun-normal scale)
      identity_dim=32,
      fusion_features=64,
      latent_dim=16,              # per-frame latent that bypasses M
      encoding=dict(kind="positional", min_deg=0, max_deg=6, include_input=True,
                    num_levels=12, features_per_level=2, log2_table_size=15,
                    base_resolution=8, max_resolution=256),
      depth=4,
      width=96,
      skips=(2,),
      dir_deg=2,
      view_dependent=True,
      background="image",         # image (per-identity, learned) | constant
      box=tuple(tuple(float(v) for v in c) for c in synthetic.HEAD_BOX),
      num_coarse=32,
      num_fine=32,
      randomized=True,
      coarse_weight=0.1,
      latent_weight=1e-3,
      mask_weight=0.1,            # opacity vs the data's head mask (0 disables)
  ))
  config.data = ml_collections.ConfigDict(dict(
      name="synthetic_talking_heads",
      data_dir="",                # '' -> $MINERF_DATA_DIR or ~/.cache/minerf_jax/tfds
      resolution=64,
      num_identities=4,
      frames_per_identity=60,
      seed=0,
      identities=(),              # train on a subset of identities; () = all
      frames_per_batch=64,
      rays_per_frame=64,
      head_fraction=0.75,
  ))
  config.eval = ml_collections.ConfigDict(dict(
      frames_per_identity=6,
      novel_view_yaws=(-40.0, -20.0, 0.0, 20.0, 40.0),
      chunk=8192,
  ))
  config.personalise = ml_collections.ConfigDict(dict(
      identity=-1,                # >= 0: add this identity and fine-tune on it (needs init_from)
      freeze_shared=True,         # train only identity-specific tables
      num_frames=0,               # > 0: few-shot, only the first N train frames of the identity
  ))

  if arg == "demo":  # 2 CPU cores: ~2.4 steps/s, ~7 minutes of training
    config.total_steps = 1_000
    config.log_every = 50
    config.eval_every = 500
    config.checkpoint.every = 250
    config.optimizer.warmup_steps = 50
    config.model.update(width=64, num_coarse=24, num_fine=24)
    config.data.update(frames_per_batch=32, rays_per_frame=64)
  elif arg == "test":
    make_tiny(config)
    config.data.update(resolution=16, num_identities=2, frames_per_identity=10,
                       frames_per_batch=8, rays_per_frame=16)
    config.eval.update(frames_per_identity=1, novel_view_yaws=(0.0,), chunk=256)
  elif arg:
    raise ValueError(f"configs/minerf.py: unknown variant {arg!r}; use '', 'demo' or 'test'")
  return config


def get_sweep(name: str, config: ml_collections.ConfigDict | None = None) -> list[dict]:
  """Sweeps of ``python -m launch.sweep --config=configs/minerf.py[:variant] --sweep=NAME``.

  * ``fusion``: the fusion ablation (MI-NeRF's Hadamard product against concatenation, and our
    additive, FiLM and augmented-Hadamard alternatives), 3 seeds each, at the variant's
    ``fusion_features`` (equal width; ``launch.benchmark --suite=minerf_fusion`` instead equalises
    the shared parameter count).
  * ``test``: Hadamard and concatenation, 2 seeds: what the test suite runs on ``:test``.
  """
  del config
  pick = lambda *names: hyper.variants({n: FUSION_VARIANTS[n] for n in names})
  return hyper.choose({
      "fusion": hyper.product(pick("hadamard", "hadamard_augmented", "concat", "additive",
                                   "film"), hyper.seeds(3)),
      "test": hyper.product(pick("hadamard", "concat"), hyper.seeds(2)),
  }, name, "configs/minerf.py")

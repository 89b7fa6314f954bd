"""LokiTalk on the embedded synthetic multi-identity dataset (``models/lokitalk.py``).

  python -m launch.train --config=configs/lokitalk.py --workdir=runs/lokitalk
  python -m launch.train --config=configs/lokitalk.py:test --workdir=/tmp/loki_test   # seconds
  python -m launch.train --config=configs/lokitalk.py --workdir=runs/loki_noregions \
      --config.model.regions=off                                                     # ablation

Ablations (each on|off): ``model.regions`` (off: one global deformation conditioned on audio,
blink and pose at once), ``model.cascade`` (off: no torso field, the torso is the static
background image), ``model.transfer`` (off: free identity codes, no ID encoder); and
``model.hyper`` = film | lowrank | none (how the identity code changes the deformation).

The dataset has more frames per identity than MI-NeRF's (10 s of speech each): the lips are
learnt from the rendered frames themselves, end to end.

Adapting to a new person (identity 4 was never trained on), from 2 s of video::

  python -m launch.train --config=configs/lokitalk.py --workdir=runs/loki_id4 \
      --config.init_from=runs/lokitalk --config.adapt.identity=4 --config.adapt.num_frames=50

Variants (``:arg``): '' (64x64, 4 identities; sized for an accelerator), 'demo' (2 CPU cores,
tens of minutes), 'test' (tiny, for CI).
"""
import ml_collections

from configs import common
from configs import hyper
from minerf_jax.data import synthetic


def model_config() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      name="lokitalk",
      identity_dim=32,
      identity_init=1.0,          # std of the free identity codes (transfer=off)
      latent_dim=0,               # > 0: per-frame latent (zero for new frames), as MI-NeRF; it
                                  # absorbs the mouth motion the audio must explain (README)
      condition_features=64,      # canonical field's condition: Dense(z) (+ latent)
      encoding=dict(kind="triplane", planes=("xy", "yz", "xz"), num_levels=8,
                    features_per_level=2, log2_table_size=14, base_resolution=8,
                    max_resolution=256),
      deform_encoding=dict(kind="positional", min_deg=0, max_deg=4, include_input=True),
      # the region weights' own point features ('shared': the deformation encoding's); finer
      # than the offsets', so that a branch's effect ends at its region's border
      region_encoding=dict(kind="triplane", min_deg=0, max_deg=6, include_input=True,
                           planes=("xy", "yz", "xz"), num_levels=4, features_per_level=2,
                           log2_table_size=12, base_resolution=8, max_resolution=64),
      torso_encoding=dict(kind="triplane", planes=("xy",), num_levels=6, features_per_level=2,
                          log2_table_size=12, base_resolution=8, max_resolution=128),
      depth=3,
      width=64,
      skips=(),
      dir_deg=2,
      view_dependent=True,
      box=tuple(tuple(float(v) for v in c) for c in synthetic.HEAD_BOX),
      num_coarse=24,
      num_fine=24,
      randomized=True,
      # audio branch (audio/encoder.py), trained end to end
      audio_channels=(32, 32, 64, 64),
      audio_code=32,
      temporal="attention",       # attention | conv | none, over 2 * audio_context + 1 frames
      audio_context=4,
      # deformation fields (nerf/deform.py)
      deform_width=32,
      deform_depth=2,
      deform_scale=0.25,          # largest offset per branch (normalised box units)
      regions="on",               # on: lips/eyes/head branches + region weights; off: one branch
      cascade="on",               # on: torso field beneath the head; off: static background
      transfer="on",              # on: ID encoder + residual codes; off: free codes
      hyper="film",               # film | lowrank | none: identity code -> branch parameters
      torso_width=32,
      num_references=4,           # reference frames per identity for the ID encoder
      reference_size=16,          # their side (must divide the frame size)
      # losses
      coarse_weight=0.1,
      mask_weight=0.1,
      latent_weight=1e-3,
      offset_weight=0.01,
      region_weight=0.05,
      torso_weight=0.1,
  ))


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = common.get_config()
  config.total_steps = 20_000
  config.log_every = 100
  config.eval_every = 2_000
  config.optimizer.lr = 5e-3
  config.optimizer.lr_end = 2e-4
  config.optimizer.warmup_steps = 200
  config.checkpoint.every = 1_000
  config.model = model_config()
  config.data = ml_collections.ConfigDict(dict(
      name="synthetic_talking_heads",
      data_dir="",                # '' -> $MINERF_DATA_DIR or ~/.cache/minerf_jax/tfds
      resolution=64,
      num_identities=4,
      frames_per_identity=250,    # 10 s at 25 fps (8 s train, 2 s held out)
      fps=25.0,
      seed=0,
      identities=(),
      frames_per_batch=32,        # frames per step; the global batch counts frames
      rays_per_frame=128,
      head_fraction=0.75,         # rays from pixels whose ray meets the head box ...
      region_fraction=0.25,       # ... of which these from the speech and eyes regions, half each
  ))
  config.eval = ml_collections.ConfigDict(dict(
      frames_per_identity=6,
      chunk=4096,
  ))
  config.audio = ml_collections.ConfigDict(dict())   # audio.features.FeatureSettings defaults
  config.adapt = ml_collections.ConfigDict(dict(
      identity=-1,                # >= 0: fit this new identity (needs init_from)
      num_frames=0,               # > 0: only its first N train frames (2 s = 50 at 25 fps)
      train=("identity_codes", "background"),   # collections fine-tuned, all others frozen;
                                                # ('all',): every one
  ))

  if arg == "demo":
    config.total_steps = 2_000
    config.log_every = 50
    config.eval_every = 1_000
    config.checkpoint.every = 250
    config.optimizer.warmup_steps = 50
    config.data.update(resolution=32, frames_per_batch=16, rays_per_frame=96)
    config.model.update(reference_size=8)
  elif arg == "test":
    config.update(total_steps=6, log_every=2, eval_every=6)
    config.checkpoint.every = 3
    config.model.update(identity_dim=8, condition_features=16, depth=2, width=32,
                        num_coarse=8, num_fine=8, audio_channels=(8, 8), audio_code=8,
                        audio_context=1, deform_width=16, torso_width=16, num_references=2,
                        reference_size=8)
    config.model.encoding.update(num_levels=2, log2_table_size=8, max_resolution=16)
    config.model.deform_encoding.max_deg = 2
    config.model.torso_encoding.update(num_levels=2, log2_table_size=8, max_resolution=16)
    config.data.update(resolution=16, num_identities=2, frames_per_identity=10,
                       frames_per_batch=8, rays_per_frame=16)
    config.eval.update(frames_per_identity=1, chunk=256)
  elif arg:
    raise ValueError(f"configs/lokitalk.py: unknown variant {arg!r}; use '', 'demo' or 'test'")
  return config


def get_sweep(name, config=None):
  """Sweeps of ``launch.sweep --config=configs/lokitalk.py[:variant] --sweep=NAME``.

  ``ablation``: the paper's component ablation, the full model and each of region-specific
  deformation (``model.regions``), the cascaded torso field (``model.cascade``) and ID-aware
  knowledge transfer (``model.transfer``) turned off alone, 3 seeds each. ``regions``,
  ``cascade``, ``transfer``: one switch on and off.
  """
  del config
  full = {"model.regions": "on", "model.cascade": "on", "model.transfer": "on"}
  without = lambda part: {**full, f"model.{part}": "off"}
  switch = lambda part: hyper.product(hyper.sweep(f"model.{part}", ("on", "off")),
                                      hyper.seeds(3))
  return hyper.choose({
      "ablation": hyper.product(hyper.variants({
          "full": full, "no_regions": without("regions"), "no_cascade": without("cascade"),
          "no_transfer": without("transfer")}), hyper.seeds(3)),
      "regions": switch("regions"), "cascade": switch("cascade"), "transfer": switch("transfer"),
  }, name, "configs/lokitalk.py")

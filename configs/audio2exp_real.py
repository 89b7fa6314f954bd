"""Audio-to-expression on real talking-face videos (the ``talking_faces`` dataset).

  python -m launch.prepare_data --videos=DIR --out=data/real          # once (as for MI-NeRF)
  python -m launch.train --config=configs/audio2exp_real.py --workdir=runs/a2e_real \
      --config.data.data_dir=data/real
  python -m launch.talk --workdir=runs/real --audio_model=runs/a2e_real --audio=SPEECH.wav \
      --identity=1 --out=runs/talk_real.mp4

Targets: the dataset's 32-value expression (PCA of pose-normalised landmarks), less the blink
part (``audio/blinks.py``: fitted from the dataset's ``blink`` signal); errors are weighted by
each component's variance (``model.variance_weighted``), i.e. measured in landmark units.
Videos without audio are left out of training. ``data.num_identities`` must match the MI-NeRF
run it drives.

Variants (``:arg``): '' (a minute or two on 2 CPU cores), 'test' (tiny; the 2-second clip dataset
the tests build).
"""
import ml_collections

from configs import audio2exp
from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = common.get_config()
  config.total_steps = 2_000
  config.log_every = 100
  config.eval_every = 1_000
  config.checkpoint.every = 1_000
  config.optimizer.update(lr=2e-3, lr_end=1e-4, warmup_steps=100, grad_clip=1.0)
  config.audio = audio2exp.audio_config()
  config.model = audio2exp.model_config(expression_dim=32)
  config.model.variance_weighted = True
  config.data = ml_collections.ConfigDict(dict(
      name="talking_faces",
      data_dir="",                # '' -> $MINERF_DATA_DIR or ~/.cache/minerf_jax/tfds
      resolution=256,
      fps=25.0,
      num_identities=6,
      frames_per_batch=64,
  ))
  if arg == "test":
    config.total_steps = 20
    config.log_every = 10
    config.eval_every = 20
    config.checkpoint.every = 10
    config.optimizer.warmup_steps = 0
    config.model.update(code_dim=16, channels=(8, 16), hidden=32, context=2, unroll=4)
    config.data.update(resolution=64, num_identities=2, frames_per_batch=8)
  elif arg:
    raise ValueError(f"configs/audio2exp_real.py: unknown variant {arg!r}; use '' or 'test'")
  return config

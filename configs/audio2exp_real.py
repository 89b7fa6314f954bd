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


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = audio2exp.base_config(total_steps=2_000, expression_dim=32)
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
    audio2exp.make_tiny(config, steps=20)
    config.data.update(resolution=64, num_identities=2, frames_per_batch=8)
  elif arg:
    raise ValueError(f"configs/audio2exp_real.py: unknown variant {arg!r}; use '' or 'test'")
  return config

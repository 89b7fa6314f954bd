"""LokiTalk on real talking-face videos (the ``talking_faces`` dataset of launch.prepare_data).

  python -m launch.prepare_data --videos=DIR --out=data/real           # once: crops + annotations
  python -m launch.train --config=configs/lokitalk_real.py --workdir=runs/loki_real \
      --config.data.data_dir=data/real
  python -m launch.talk --workdir=runs/loki_real --audio=speech.wav --identity=0 --out=talk.mp4

As ``configs/lokitalk.py`` with the real data's head box (``face.HEAD_BOX``), its MediaPipe
masks (face, lips, eyes, torso/neck) and blink signal, and the per-frame audio features stored
with each frame. Crops are prepared at 256x256 and trained at ``data.image_size``.

Variants (``:arg``): '' (64x64 training, 4000 steps), 'test' (tiny, for CI: the dataset the tests
build from a 2-second clip).
"""
import ml_collections

from configs import lokitalk
from configs import minerf_real
from minerf_jax.data import face


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = lokitalk.get_config("test" if arg == "test" else "")
  config.total_steps = 4_000
  config.log_every = 100
  config.eval_every = 1_000
  config.checkpoint.every = 500
  config.optimizer.warmup_steps = 100
  config.model.box = tuple(tuple(float(v) for v in c) for c in face.HEAD_BOX)
  config.data = minerf_real.get_config().data      # the same real dataset and split
  config.data.update(frames_per_batch=16, rays_per_frame=96)
  config.data.region_fraction = 0.25
  config.eval.update(frames_per_identity=6)
  if arg == "test":
    config.update(total_steps=6, log_every=2, eval_every=6)
    config.checkpoint.every = 3
    config.data.update(resolution=64, image_size=16, num_identities=2, num_frames=512,
                       frames_per_batch=8, rays_per_frame=16)
    config.eval.update(frames_per_identity=1, chunk=256)
  elif arg:
    raise ValueError(f"configs/lokitalk_real.py: unknown variant {arg!r}; use '' or 'test'")
  return config

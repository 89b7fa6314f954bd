"""MI-NeRF on real talking-face videos (the ``talking_faces`` dataset of launch.prepare_data).

  python -m launch.prepare_data --videos=DIR --out=data/real           # once: crops + annotations
  python -m launch.train --config=configs/minerf_real.py --workdir=runs/real \
      --config.data.data_dir=data/real --config.data.num_identities=6
  python -m launch.render --workdir=runs/real --mode=transfer --identity=0 --driver=1

The field models the head box of face.HEAD_BOX (canonical face model coordinates, decimetres:
face, hair and upper neck); everything else (torso, room) is a per-identity background image
initialised from the frames (median of the non-head pixels of the face crops) and refined. The
expression vector is the dataset's PCA of pose-normalised landmarks (32 values); a per-frame latent
absorbs what landmarks do not explain. Crops are prepared at 256x256 and trained at
``data.image_size`` (64 here: what 2 CPU cores train in tens of minutes; 128 or 256 on a GPU).

Variants (``:arg``): '' (64x64 training, 4000 steps), 'test' (tiny, for CI: the dataset the tests
build from a 2-second clip).
"""
import ml_collections

from configs import minerf
from minerf_jax.data import face


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = minerf.get_config("demo")
  config.total_steps = 4_000
  config.log_every = 100
  config.eval_every = 1_000
  config.checkpoint.every = 500
  config.optimizer.warmup_steps = 100
  config.model.update(
      box=tuple(tuple(float(v) for v in c) for c in face.HEAD_BOX),
      width=64, num_coarse=24, num_fine=24, latent_dim=16, mask_weight=0.1)
  config.data = ml_collections.ConfigDict(dict(
      name="talking_faces",
      data_dir="",                # '' -> $MINERF_DATA_DIR or ~/.cache/minerf_jax/tfds
      resolution=256,             # crops as prepared (launch.prepare_data --resolution)
      fps=25.0,
      image_size=64,              # train/evaluate at this size (area downscale; 0 = as prepared)
      num_identities=6,           # must not exceed the dataset's identities
      num_frames=4096,            # rows of the per-frame latent table (>= the dataset's frames)
      seed=0,
      identities=(),
      frames_per_batch=32,
      rays_per_frame=64,
      head_fraction=0.75,
  ))
  config.eval.update(frames_per_identity=6, novel_view_yaws=())

  if arg == "test":
    minerf.make_tiny(config)
    config.data.update(resolution=64, image_size=16, num_identities=2, num_frames=512,
                       frames_per_batch=8, rays_per_frame=16)
    config.eval.update(frames_per_identity=1, chunk=256)
  elif arg:
    raise ValueError(f"configs/minerf_real.py: unknown variant {arg!r}; use '' or 'test'")
  return config

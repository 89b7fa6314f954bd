r"""Animates a portrait with a driving video using a trained one-shot model (TPSMM, MCNet, MRFA).

  python -m launch.animate --checkpoint=runs/tpsmm --source=photo.png --driving=talk.mp4 \
      --out=animated.mp4 [--relative=true] [--side_by_side=false] [--config=configs/X.py[:variant]]

* The face is cropped in both inputs with the dataset's own code (``minerf_jax/data/face.py``):
  the source like ``face.process_image``; the driving video is tracked like
  ``launch.prepare_data`` tracks a video (``preprocess.track``, crop boxes smoothed over time per
  shot). Every driving frame is kept: a frame where the face is lost reuses the last box (frames
  before the first face, the first box). Crops are taken at ``config.data.resolution`` and
  area-downscaled to the model's image size. Progress bars (tqdm, frames/s) go to stderr; the last
  line printed (stdout) sums up the frames, fps, duration and output path.
* ``--relative`` (default): the source's keypoints follow the driving keypoints' motion from the
  first driving frame (the references' animation demo); ``--norelative``: absolute motion.
* The mp4 has the driving video's frame count, frame rate and audio; small models' frames are
  upscaled (nearest neighbour) to at least 256 px. ``--side_by_side``: [source | driving | result].
* Without ``--config`` the run's own ``config.json`` is used; with it, its model must be the
  checkpoint's.

A source with no face, an unreadable file, a video with no face, a directory without a checkpoint
or a checkpoint of another model each end with a one-line error (exit status 1).
"""
from __future__ import annotations

import math
import os
import sys
import time

from absl import app
from absl import flags
from absl import logging
import ml_collections
from ml_collections import config_flags
import numpy as np
from tqdm import tqdm

from launch import runs
from minerf_jax import models
from minerf_jax.data import face
from minerf_jax.data import pipeline
from minerf_jax.data import preprocess
from minerf_jax.data import video
from minerf_jax.models import animation
from minerf_jax.train import checkpoint

_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Training run directory (or its "
                                  "'checkpoints' directory, or one '<step>' directory in it).",
                                  required=True)
_SOURCE = flags.DEFINE_string("source", None, "Source portrait (PNG or JPEG).", required=True)
_DRIVING = flags.DEFINE_string("driving", None, "Driving video (its audio is muxed in).",
                               required=True)
_OUT = flags.DEFINE_string("out", None, "Output mp4 path.", required=True)
_RELATIVE = flags.DEFINE_bool("relative", True, "Relative motion (else absolute).")
_SIDE_BY_SIDE = flags.DEFINE_bool("side_by_side", False,
                                  "Write [source | driving | result] panels.")
_CHUNK = flags.DEFINE_integer("chunk", 16, "Frames per compiled inference call.")
_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file[:variant] (default: the run's config.json).", lock_config=True)

MIN_SIDE = 256          # output frames smaller than this are upscaled
SAMPLE_RATE = 16000


class AnimateError(Exception):
  """A problem with the inputs; the message is the one-line error."""


def one_line(text) -> str:
  return " ".join(str(text).split())


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing with one-line errors (missing flags, bad values, bad overrides)."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    sys.exit(f"error: {one_line(e)}")
  except (KeyError, AttributeError) as e:  # an override of a field the config lacks
    while e.args and isinstance(e.args[0], BaseException):  # AttributeError(KeyError(...))
      e = e.args[0]
    sys.exit(f"error: a --config override names a field the config lacks: "
             f"{one_line(e.args[0] if e.args else e)}")


# ----------------------------------------------------------------------------------------------
# Model.


def load_checkpoint(path: str, config: ml_collections.ConfigDict | None):
  """(config, params, batch_stats) of the latest checkpoint under ``path``; the config is the
  run's ``config.json`` unless given, and must build the checkpoint's model."""
  given = config is not None
  try:
    directory, _ = checkpoint.resolve(path)
  except FileNotFoundError as e:
    raise AnimateError(f"--checkpoint={path}: {e}") from None
  if config is None:
    workdir = os.path.dirname(directory) if os.path.basename(directory) == "checkpoints" else path
    try:
      config = runs.load_config(workdir)
    except FileNotFoundError:
      raise AnimateError(f"--checkpoint={path}: {os.path.join(workdir, 'config.json')} not found; "
                         "point --checkpoint at a training run directory or pass --config"
                         ) from None
  name = config.model.name
  if name not in animation.SYSTEMS:
    where = "--config builds" if given else "it is a run of"
    raise AnimateError(f"--checkpoint={path}: {where} model {name!r}, not a one-shot animation "
                       f"model; use a run of {', '.join(animation.SYSTEMS)}")
  try:
    params = checkpoint.load_params(path, model_name=name)
    batch_stats = checkpoint.load_params(path, model_name=name, item="batch_stats")
  except FileNotFoundError as e:
    raise AnimateError(f"--checkpoint={path}: {e}") from None
  except checkpoint.CheckpointMismatchError as e:
    hint = "; or leave out --config to use the run's own config.json" if given else ""
    raise AnimateError(f"--checkpoint={path}: {e}{hint}") from None
  return config, params, batch_stats


# ----------------------------------------------------------------------------------------------
# Inputs.


def to_model_size(crops: np.ndarray, size: int) -> np.ndarray:
  """uint8 crops [N, R, R, 3] -> float32 [N, size, size, 3] in [0, 1] (area downscale)."""
  images = crops.astype(np.float32) / 255.0
  r = images.shape[1]
  if r == size or (r > size and r % size == 0):
    return pipeline.area_downscale(images, size).astype(np.float32)
  import cv2  # pylint: disable=g-import-not-at-top  (the 'face' extra)
  interp = cv2.INTER_AREA if r > size else cv2.INTER_CUBIC
  return np.clip(np.stack([cv2.resize(x, (size, size), interpolation=interp) for x in images]),
                 0.0, 1.0)


def source_crop(path: str, resolution: int) -> np.ndarray:
  """uint8 [R, R, 3] face crop of the portrait, as the dataset crops its frames."""
  try:
    return face.process_image(path, resolution=resolution).rgb
  except FileNotFoundError as e:
    raise AnimateError(f"--source={e}; give the path of a PNG or JPEG portrait") from None
  except ValueError as e:  # NoFaceError, or not an image
    raise AnimateError(f"--source={e}") from None


def video_fps(path: str) -> float:
  """Frame rate of the first video stream (one-line error for a missing or unreadable file)."""
  _, container = preprocess._open(path)  # pylint: disable=protected-access
  with container:
    stream = container.streams.video[0]
    return float(stream.average_rate or stream.guessed_rate or 25.0)


def crop_boxes(tr, fps: float, smooth_seconds: float) -> np.ndarray:
  """float32 [T, 3] crop box of every frame of a ``preprocess.Track``.

  Boxes as ``preprocess.process_video``: ``face.landmark_box`` of each frame with a face,
  smoothed over time within each shot; a frame without a face takes the box of the last frame
  with one (or, before the first face, of the first).
  """
  total = len(tr.landmarks)
  has_face = np.array([lm is not None for lm in tr.landmarks])
  boxes = np.zeros((total, 3), np.float32)
  for shot in np.unique(tr.shot):
    idx = np.flatnonzero((tr.shot == shot) & has_face)
    if len(idx):
      raw = np.stack([face.landmark_box(tr.landmarks[i]) for i in idx])
      boxes[idx] = preprocess.smooth_boxes(raw, smooth_seconds * fps)
  found = np.flatnonzero(has_face)
  # Index of the last frame with a face at or before each frame (the first one before it).
  last = np.maximum.accumulate(np.where(has_face, np.arange(total), -1))
  return boxes[np.where(last >= 0, last, found[0])]


def driving_crops(path: str, resolution: int, progress: bool = True
                  ) -> tuple[np.ndarray, float]:
  """(uint8 [T, R, R, 3] face crops of every frame, fps) of the driving video. ``progress``: a
  tqdm bar over the crop pass (the tracking pass has no per-frame hook)."""
  if progress:
    tqdm.write(f"tracking the face in {path} ...", file=sys.stderr)
  try:
    fps = video_fps(path)
    tr = preprocess.track(path, fps)
  except preprocess.SkipVideo as e:
    raise AnimateError(f"--driving={path}: {e}; use a complete, readable video file (e.g. an "
                       "H.264 mp4)") from None
  total = len(tr.landmarks)
  if not any(lm is not None for lm in tr.landmarks):
    raise AnimateError(f"--driving={path}: no face found in any of its {total} frames; use a "
                       "video with one clearly visible face")
  boxes = crop_boxes(tr, fps, preprocess.Settings().smooth_seconds)
  crops = []
  with tqdm(total=total, desc="crop driving", unit="frame", disable=not progress) as bar:
    for i, rgb in enumerate(preprocess.iter_frames(path, fps)):
      if i >= total:
        break
      crops.append(face.crop(rgb, boxes[i], resolution))
      bar.update(1)
  if len(crops) != total:
    raise AnimateError(f"--driving={path}: decoded {len(crops)} frames on the second pass but "
                       f"{total} on the first; re-encode the video (e.g. with ffmpeg)")
  return np.stack(crops), fps


def driving_audio(path: str, num_frames: int, fps: float) -> np.ndarray | None:
  """The driving video's mono audio cut or padded to its frames' duration (None: no audio)."""
  av = video._av()  # pylint: disable=protected-access
  try:
    audio = video.read_audio(path, SAMPLE_RATE)
  except av.error.FFmpegError as e:
    print(f"warning: --driving={path}: cannot decode its audio ({one_line(e)}); writing the "
          "video without sound", file=sys.stderr)
    return None
  if audio is None or not len(audio):
    return None
  n = int(round(num_frames / fps * SAMPLE_RATE))
  return np.pad(audio[:n], (0, max(0, n - len(audio))))


# ----------------------------------------------------------------------------------------------
# Main.


def output_frames(result: np.ndarray, source: np.ndarray | None = None,
                  driving: np.ndarray | None = None) -> np.ndarray:
  """uint8 frames of the output video: ``result`` (or [source | driving | result] panels),
  upscaled by an integer factor to at least ``MIN_SIDE`` pixels."""
  frames = video.to_uint8(result)
  if source is not None and driving is not None:
    src = np.broadcast_to(video.to_uint8(source)[None], frames.shape)
    frames = np.concatenate([src, video.to_uint8(driving), frames], axis=2)
  return video.upscale(frames, max(1, math.ceil(MIN_SIDE / frames.shape[1])))


def animate(checkpoint_path: str, source_path: str, driving_path: str, out: str, *,
            config: ml_collections.ConfigDict | None = None, relative: bool = True,
            side_by_side: bool = False, chunk: int = 16) -> dict:
  """Writes the animated video; returns a summary (frames, fps, seconds, path, timings)."""
  config, params, batch_stats = load_checkpoint(checkpoint_path, config)
  size, resolution = pipeline.image_size(config), int(config.data.resolution)
  try:
    source = to_model_size(source_crop(source_path, resolution)[None], size)[0]
    crops, fps = driving_crops(driving_path, resolution)
  except ImportError as e:
    raise AnimateError(one_line(e)) from None
  driving = to_model_size(crops, size)
  del crops
  audio = driving_audio(driving_path, len(driving), fps)
  model = models.build(config)
  start = time.time()
  with tqdm(total=len(driving), desc=f"animate ({config.model.name})", unit="frame") as bar:
    result = model.animate(params, source, driving, relative=relative, batch_stats=batch_stats,
                           chunk=chunk, progress=lambda done: bar.update(done - bar.n))
  seconds = time.time() - start
  frames = output_frames(result, *((source, driving) if side_by_side else ()))
  try:
    video.write_video(out, frames, fps, audio, SAMPLE_RATE)
  except OSError as e:
    raise AnimateError(f"--out={out}: cannot write ({one_line(e)}); choose a writable path"
                       ) from None
  return dict(frames=len(frames), fps=fps, seconds=len(frames) / fps, path=out,
              animate_seconds=seconds, audio=audio is not None)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  if not flags.FLAGS["verbosity"].present:  # the progress bars and the summary; -v 0 for logs
    logging.set_verbosity(logging.ERROR)
  config = _CONFIG.value
  if config is not None:
    try:
      config.keys()  # a config file that failed to load raises on first use
    except OSError as e:
      sys.exit(f"error: --config: {one_line(e.__cause__ or e)}")
  try:
    s = animate(_CHECKPOINT.value, _SOURCE.value, _DRIVING.value, _OUT.value, config=config,
                relative=_RELATIVE.value, side_by_side=_SIDE_BY_SIDE.value, chunk=_CHUNK.value)
  except AnimateError as e:
    sys.exit(f"error: {e}")
  print(f"wrote {s['path']}: {s['frames']} frames at {s['fps']:g} fps ({s['seconds']:.2f} s"
        f"{', with the driving audio' if s['audio'] else ', no audio'}); animated in "
        f"{s['animate_seconds']:.1f} s ({s['frames'] / max(s['animate_seconds'], 1e-9):.1f} "
        "frames/s)")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)

r"""Animates a portrait (one-shot models) or a subject video (Head3D) with a driving video.

  python -m launch.animate --checkpoint=runs/tpsmm --source=photo.png --driving=talk.mp4 \
      --out=animated.mp4 [--relative=true] [--side_by_side=false] [--config=configs/X.py[:variant]]
  python -m launch.animate --checkpoint=runs/head3d --subject=person.mp4 --driving=talk.mp4 \
      --out=animated.mp4 [--yaw=-20,0,20] [--pitch=0]        # Head3D; one mp4 per view

* Head3D (``--subject``): ``model.num_subject`` frames of the subject video, evenly spaced over
  its frames with a face, are the subject frames; every driving frame is animated. Each crop
  keeps its camera (the crop's intrinsics) and its landmark PnP head pose, as the dataset's
  frames do. ``--yaw`` / ``--pitch`` (degrees, lists) turn the rendered head further for novel
  views; with more than one view, ``--out=x.mp4`` becomes ``x_yaw<Y>_pitch<P>.mp4`` per view.

* The face is cropped in both inputs with the dataset's own code (``minerf_jax/data/face.py``):
  the source like ``face.process_image``; the driving video is tracked like
  ``launch.prepare_data`` tracks a video (``preprocess.track``, crop boxes smoothed over time per
  shot). Every driving frame is kept: a frame where the face is lost reuses the last box (frames
  before the first face, the first box). Crops are taken at ``config.data.resolution`` and
  area-downscaled to the model's image size. Progress bars (tqdm, frames/s) go to stderr; the last
  line printed (stdout) sums up the frames, fps, duration and output path.
* ``--relative`` (default): the source's keypoints follow the driving keypoints' motion from the
  first driving frame (the references' animation demo); ``--norelative``: absolute motion.
* ``--out=x.npz`` instead writes the model's frames losslessly: ``prediction`` [T, S, S, 3],
  the ``source`` [S, S, 3] and ``driving`` [T, S, S, 3] crops it was given (floats in [0, 1],
  at the model's size) and ``fps``; ``tools/reference_animate.py`` runs an authors' model on the
  same crops and compares.
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
import ml_collections
from ml_collections import config_flags
import numpy as np
from tqdm import tqdm

from launch import cli
from launch import runs
from minerf_jax import camera
from minerf_jax import models
from minerf_jax.data import face
from minerf_jax.data import pairs
from minerf_jax.data import pipeline
from minerf_jax.data import preprocess
from minerf_jax.data import video
from minerf_jax.models import animation
from minerf_jax.train import checkpoint

_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Training run directory (or its "
                                  "'checkpoints' directory, or one '<step>' directory in it).",
                                  required=True)
_SOURCE = flags.DEFINE_string("source", None, "Source portrait (PNG or JPEG): one-shot models.")
_SUBJECT = flags.DEFINE_string("subject", None, "Subject video (Head3D: its frames are the "
                               "subject frames).")
_YAW = flags.DEFINE_list("yaw", ["0"], "Head3D: extra head yaw in degrees (a list: one mp4 per "
                         "value).")
_PITCH = flags.DEFINE_list("pitch", ["0"], "Head3D: extra head pitch in degrees (a list).")
_DRIVING = flags.DEFINE_string("driving", None, "Driving video (its audio is muxed in).",
                               required=True)
_OUT = flags.DEFINE_string("out", None, "Output mp4 path (or .npz: the frames as floats, with "
                           "the input crops).", required=True)
_RELATIVE = flags.DEFINE_bool("relative", True, "Relative motion (else absolute).")
_SIDE_BY_SIDE = flags.DEFINE_bool("side_by_side", False,
                                  "Write [source | driving | result] panels.")
_CHUNK = flags.DEFINE_integer("chunk", 16, "Frames per compiled inference call.")
_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file[:variant] (default: the run's config.json).", lock_config=True)

MIN_SIDE = 256          # output frames smaller than this are upscaled
ANIMATORS = animation.SYSTEMS + ("head3d",)
SAMPLE_RATE = 16000


class AnimateError(cli.UserError):
  """A problem with the inputs; the message is the one-line error."""


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
  if name not in ANIMATORS:
    where = "--config builds" if given else "it is a run of"
    raise AnimateError(f"--checkpoint={path}: {where} model {name!r}, not an animation "
                       f"model; use a run of {', '.join(ANIMATORS)}")
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


def driving_crops(path: str, resolution: int, progress: bool = True, flag: str = "driving"
                  ) -> tuple[np.ndarray, float, dict]:
  """(uint8 [T, R, R, 3] face crops of every frame, fps, cameras) of a video; ``cameras``:
  each crop's ``intrinsics`` [T, 3, 3] and landmark PnP head pose (``rotation`` [T, 3, 3],
  ``translation`` [T, 3]), and ``has_face`` [T]. ``progress``: a tqdm bar over the crop pass
  (the tracking pass has no per-frame hook); ``flag`` names the video in errors."""
  if progress:
    tqdm.write(f"tracking the face in {path} ...", file=sys.stderr)
  try:
    fps = video_fps(path)
    tr = preprocess.track(path, fps)
  except preprocess.SkipVideo as e:
    raise AnimateError(f"--{flag}={path}: {e}; use a complete, readable video file (e.g. an "
                       "H.264 mp4)") from None
  total = len(tr.landmarks)
  if not any(lm is not None for lm in tr.landmarks):
    raise AnimateError(f"--{flag}={path}: no face found in any of its {total} frames; use a "
                       "video with one clearly visible face")
  boxes = crop_boxes(tr, fps, preprocess.Settings().smooth_seconds)
  crops, cams = [], {"intrinsics": [], "rotation": [], "translation": []}
  pose = None
  with tqdm(total=total, desc=f"crop {flag}", unit="frame", disable=not progress) as bar:
    for i, rgb in enumerate(preprocess.iter_frames(path, fps)):
      if i >= total:
        break
      box = face.fit_box(boxes[i], rgb.shape[:2])  # inside the frame: no replicated edges
      crops.append(face.crop(rgb, box, resolution))
      k = face.crop_intrinsics(box, resolution, rgb.shape[:2])
      if tr.landmarks[i] is not None:   # a frame without a face keeps the last pose
        pose = face.head_pose(face.to_crop(tr.landmarks[i], box, resolution), k)
      cams["intrinsics"].append(k)
      cams["rotation"].append(None if pose is None else pose[0])
      cams["translation"].append(None if pose is None else pose[1])
      bar.update(1)
  if len(crops) != total:
    raise AnimateError(f"--{flag}={path}: decoded {len(crops)} frames on the second pass but "
                       f"{total} on the first; re-encode the video (e.g. with ffmpeg)")
  first = next(i for i, r in enumerate(cams["rotation"]) if r is not None)
  for key in ("rotation", "translation"):   # frames before the first face take its pose
    cams[key] = [cams[key][first] if v is None else v for v in cams[key]]
  cameras = {key: np.stack(v).astype(np.float32) for key, v in cams.items()}
  cameras["has_face"] = np.array([lm is not None for lm in tr.landmarks])
  return np.stack(crops), fps, cameras


def driving_audio(path: str, num_frames: int, fps: float) -> np.ndarray | None:
  """The driving video's mono audio cut or padded to its frames' duration (None: no audio)."""
  av = video._av()  # pylint: disable=protected-access
  try:
    audio = video.read_audio(path, SAMPLE_RATE)
  except av.error.FFmpegError as e:
    print(f"warning: --driving={path}: cannot decode its audio ({cli.one_line(e)}); writing the "
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


def view_path(out: str, yaw: float, pitch: float, many: bool) -> str:
  """``out`` itself for a single view; else ``<stem>_yaw<Y>_pitch<P><ext>``."""
  if not many:
    return out
  stem, ext = os.path.splitext(out)
  return f"{stem}_yaw{yaw:g}_pitch{pitch:g}{ext or '.mp4'}"


def subject_inputs(path: str, resolution: int, size: int, count: int) -> dict:
  """Head3D's subject frames: ``count`` crops evenly spaced over the frames with a face, at the
  model's size, with their intrinsics (scaled to it) and head poses."""
  crops, _, cams = driving_crops(path, resolution, flag="subject")
  idx = pairs.subject_indices(np.flatnonzero(cams["has_face"]), count)
  return {"subject": to_model_size(crops[idx], size),
          "subject_intrinsics": camera.scale_intrinsics(cams["intrinsics"][idx], size / resolution),
          "subject_rotation": cams["rotation"][idx], "subject_translation": cams["translation"][idx]}


def animate(checkpoint_path: str, driving_path: str, out: str, *, source_path: str | None = None,
            subject_path: str | None = None, config: ml_collections.ConfigDict | None = None,
            relative: bool = True, side_by_side: bool = False, chunk: int = 16,
            views: tuple[tuple[float, float], ...] = ((0.0, 0.0),)) -> dict:
  """Writes the animated video (one per view for Head3D); returns a summary (frames, fps,
  seconds, paths, timings)."""
  config, params, batch_stats = load_checkpoint(checkpoint_path, config)
  head3d = config.model.name == "head3d"
  if head3d and not subject_path:
    raise AnimateError(f"--checkpoint={checkpoint_path}: a Head3D run animates many frames of a "
                       "subject; pass --subject=VIDEO (not --source)")
  if not head3d and not source_path:
    raise AnimateError(f"--checkpoint={checkpoint_path}: a {config.model.name} run animates one "
                       "portrait; pass --source=IMAGE (--subject is Head3D's)")
  if not head3d and tuple(views) != ((0.0, 0.0),):
    raise AnimateError("--yaw/--pitch: only Head3D runs render novel views")
  size, resolution = pipeline.image_size(config), int(config.data.resolution)
  try:
    if head3d:
      subject = subject_inputs(subject_path, resolution, size, int(config.model.num_subject))
      source = subject["subject"][0]
    else:
      source = to_model_size(source_crop(source_path, resolution)[None], size)[0]
    crops, fps, cams = driving_crops(driving_path, resolution)
  except ImportError as e:
    raise AnimateError(cli.one_line(e)) from None
  driving = to_model_size(crops, size)
  del crops
  audio = driving_audio(driving_path, len(driving), fps)
  model = models.build(config)
  paths, seconds = [], 0.0
  for yaw, pitch in views:
    start = time.time()
    desc = f"animate ({config.model.name}" + (f", yaw {yaw:g} pitch {pitch:g})" if head3d else ")")
    with tqdm(total=len(driving), desc=desc, unit="frame") as bar:
      progress = lambda done: bar.update(done - bar.n)  # pylint: disable=cell-var-from-loop
      if head3d:
        drive = {"driving": driving,
                 "driving_intrinsics": camera.scale_intrinsics(cams["intrinsics"],
                                                               size / resolution),
                 "driving_rotation": cams["rotation"], "driving_translation": cams["translation"],
                 "view": np.tile(np.deg2rad([yaw, pitch]).astype(np.float32), (len(driving), 1))}
        result = model.animate(params, subject, drive, batch_stats=batch_stats, chunk=chunk,
                               progress=progress)
      else:
        result = model.animate(params, source, driving, relative=relative,
                               batch_stats=batch_stats, chunk=chunk, progress=progress)
    seconds += time.time() - start
    path = view_path(out, yaw, pitch, len(views) > 1)
    try:
      if path.endswith(".npz"):   # lossless: the model's inputs and outputs as floats
        np.savez_compressed(path, prediction=np.asarray(result, np.float32),
                            source=np.asarray(source, np.float32),
                            driving=np.asarray(driving, np.float32), fps=np.float32(fps))
      else:
        video.write_video(path, output_frames(result, *((source, driving) if side_by_side
                                                        else ())), fps, audio, SAMPLE_RATE)
    except OSError as e:
      raise AnimateError(f"--out={path}: cannot write ({cli.one_line(e)}); choose a writable path"
                         ) from None
    paths.append(path)
  return dict(frames=len(driving), fps=fps, seconds=len(driving) / fps, path=", ".join(paths),
              paths=paths, animate_seconds=seconds, audio=audio is not None)


def parse_views(yaws: list[str], pitches: list[str]) -> tuple[tuple[float, float], ...]:
  """--yaw / --pitch lists -> (yaw, pitch) pairs: one list may have one value for all."""
  try:
    y, p = [float(v) for v in yaws], [float(v) for v in pitches]
  except ValueError as e:
    raise AnimateError(f"--yaw/--pitch: {e}; give degrees, e.g. --yaw=-20,0,20") from None
  if len(y) != len(p) and 1 not in (len(y), len(p)):
    raise AnimateError(f"--yaw has {len(y)} values and --pitch {len(p)}: give equally many, or "
                       "one of them a single value")
  n = max(len(y), len(p))
  return tuple(zip(y * n if len(y) == 1 else y, p * n if len(p) == 1 else p))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  config = _CONFIG.value
  cli.check_config(config)
  if bool(_SOURCE.value) == bool(_SUBJECT.value):
    raise AnimateError("pass one of --source=IMAGE (TPSMM, MCNet, MRFA) or --subject=VIDEO "
                       "(Head3D)")
  s = animate(_CHECKPOINT.value, _DRIVING.value, _OUT.value, source_path=_SOURCE.value,
              subject_path=_SUBJECT.value, config=config, relative=_RELATIVE.value,
              side_by_side=_SIDE_BY_SIDE.value, chunk=_CHUNK.value,
              views=parse_views(_YAW.value, _PITCH.value))
  print(f"wrote {s['path']}: {s['frames']} frames at {s['fps']:g} fps ({s['seconds']:.2f} s"
        f"{', with the driving audio' if s['audio'] else ', no audio'}); animated in "
        f"{s['animate_seconds']:.1f} s ({s['frames'] / max(s['animate_seconds'], 1e-9):.1f} "
        "frames/s)")


if __name__ == "__main__":
  cli.run(main)

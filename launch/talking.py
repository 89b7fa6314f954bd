"""Speech in, talking head out: the pieces of ``launch.talk`` (defines no flags).

``TalkRuns.load`` restores an MI-NeRF run and an audio-to-expression run and checks that they fit
together; ``expression_track`` turns speech into per-frame expressions (speech part from the audio
model, blinks from the measured schedule, a reference video, or none); ``pose_track`` gives the
head poses (the identity's first held-out pose held still, or a reference video's tracked
poses, repeated back and forth when the video is shorter than the speech); ``render_chunks``
renders them a chunk at a time, so a minutes-long speech never sits in memory at once; ``talk``
writes the mp4 with the speech muxed in.

Every input problem raises ``TalkError`` with one line naming it, before anything is written.
"""
from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Iterator

import ml_collections
import numpy as np

from launch import runs
from minerf_jax.audio import blinks as blinks_lib
from minerf_jax.audio import features as features_lib
from minerf_jax.data import pipeline
from minerf_jax.data import video


class TalkError(ValueError):
  """A bad input of ``launch.talk``; the message is one line."""


def _restore(workdir: str, flag: str, want: str):
  try:
    config = runs.load_config(workdir)
  except FileNotFoundError as e:
    raise TalkError(f"{flag}={workdir}: no config.json there; pass a training run directory"
                    ) from e
  name = config.model.get("name", "?")
  if name != want:
    raise TalkError(f"{flag}={workdir} is a run of model {name!r}; it must be a {want!r} run")
  try:
    return runs.restore(workdir, config)
  except (FileNotFoundError, ValueError) as e:
    raise TalkError(f"{flag}={workdir}: {str(e).splitlines()[0]}") from e


@dataclasses.dataclass
class TalkRuns:
  nerf_config: ml_collections.ConfigDict
  nerf: Any
  nerf_params: Any
  a2e_config: ml_collections.ConfigDict
  a2e: Any
  a2e_params: Any
  builder: Any
  fps: float

  @classmethod
  def load(cls, workdir: str, audio_model: str) -> "TalkRuns":
    nc, nerf, np_ = _restore(workdir, "--workdir", "minerf")
    ac, a2e, ap = _restore(audio_model, "--audio_model", "audio2exp")
    if nc.data.name != ac.data.name:
      raise TalkError(f"--audio_model={audio_model} was trained on {ac.data.name!r} but "
                      f"--workdir={workdir} on {nc.data.name!r}")
    builder = pipeline.dataset_builder(nc.data,
                                       num_identities=pipeline.effective_num_identities(nc))
    e_nerf = int(builder.info.features["expression"].shape[-1])
    if int(ac.model.expression_dim) != e_nerf:
      raise TalkError(f"--audio_model={audio_model} predicts {ac.model.expression_dim} expression "
                      f"values but --workdir={workdir} takes {e_nerf}")
    fps = float(builder.info.metadata.get("fps", 25))
    return cls(nc, nerf, np_, ac, a2e, ap, builder, fps)

  @property
  def num_identities(self) -> int:
    return pipeline.effective_num_identities(self.nerf_config)

  def check_identity(self, identity: int) -> None:
    n = self.num_identities
    if not 0 <= identity < n:
      raise TalkError(f"--identity={identity}: the MI-NeRF run has identities 0..{n - 1}")


def style_identity(runs_: TalkRuns, identity: int) -> int:
  """The audio model's speaking-style row for ``identity`` (row 0 when it has fewer)."""
  return identity if identity < int(runs_.a2e_config.data.num_identities) else 0


def expression_track(runs_: TalkRuns, signal: np.ndarray, identity: int, num_frames: int, *,
                     expression_scale: float = 1.0, blinks: str = "schedule",
                     blink_track: np.ndarray | None = None, seed: int = 0) -> np.ndarray:
  """[T, E] expressions for ``signal``: speech part + blink part (see module docstring)."""
  speech = runs_.a2e.predict_speech(runs_.a2e_params, signal, runs_.fps,
                                    style_identity(runs_, identity), num_frames)
  if blinks == "schedule":
    blink = blinks_lib.schedule(runs_.a2e.blink_stats(runs_.a2e_params), num_frames,
                                np.random.default_rng(seed))
  elif blinks == "video":
    if blink_track is None:
      raise TalkError("--blinks=video needs --pose=from_video=VIDEO (the video's blinks)")
    blink = _loop(blink_track, num_frames)
  elif blinks == "none":
    blink = np.zeros((num_frames, 2), np.float32)
  else:
    raise TalkError(f"--blinks={blinks!r}: use schedule, video or none")
  return runs_.a2e.expressions(runs_.a2e_params, speech, blink, expression_scale)


def _loop(track: np.ndarray, n: int) -> np.ndarray:
  """``n`` rows of ``track`` played forwards then backwards, repeatedly."""
  m = len(track)
  order = np.concatenate([np.arange(m), np.arange(m)[::-1]]) if m > 1 else np.zeros(1, int)
  return np.asarray(track)[order[np.arange(n) % len(order)]]


@dataclasses.dataclass
class Poses:
  rotation: np.ndarray     # [T, 3, 3]
  translation: np.ndarray  # [T, 3]
  intrinsics: np.ndarray   # [T, 3, 3] at the model's image size
  blink: np.ndarray | None = None


def pose_track(runs_: TalkRuns, identity: int, num_frames: int, pose: str = "still") -> Poses:
  """Head poses of every output frame: 'still' or 'from_video=PATH'."""
  size = pipeline.image_size(runs_.nerf_config)
  if pose == "still":
    held = pipeline.load_frames(runs_.builder, "test", (identity,), image_size=size).take(
        np.zeros(1, int))
    rep = lambda x: np.repeat(x, num_frames, 0)
    return Poses(rep(held.rotation), rep(held.translation), rep(held.intrinsics))
  if pose.startswith("from_video="):
    return _video_poses(runs_, pose.split("=", 1)[1], num_frames, size)
  raise TalkError(f"--pose={pose!r}: use still or from_video=VIDEO")


def _video_poses(runs_: TalkRuns, path: str, num_frames: int, size: int) -> Poses:
  from minerf_jax.data import preprocess  # pylint: disable=g-import-not-at-top
  if runs_.nerf_config.data.name != "talking_faces":
    raise TalkError("--pose=from_video needs an MI-NeRF run on real videos (talking_faces): "
                    "the synthetic heads' camera does not match a tracked video's")
  meta = runs_.builder.info.metadata
  settings = preprocess.Settings(resolution=int(meta["resolution"]), fps=runs_.fps,
                                 focal_scale=float(meta["focal_scale"]))
  try:
    arrays, _ = preprocess.process_video(path, settings)
  except preprocess.SkipVideo as e:
    raise TalkError(f"--pose=from_video={path}: {e}") from e
  scale = np.diag([size / settings.resolution, size / settings.resolution, 1.0]).astype(np.float32)
  openness = arrays["eye_openness"]
  blink = np.clip(1 - openness / np.percentile(openness, 90, axis=0), 0, 1).astype(np.float32)
  return Poses(_loop(arrays["rotation"], num_frames), _loop(arrays["translation"], num_frames),
               _loop(np.einsum("ij,njk->nik", scale, arrays["intrinsics"]), num_frames),
               blink=blink)


def render_chunks(runs_: TalkRuns, identity: int, expressions: np.ndarray, poses: Poses,
                  chunk: int = 25) -> Iterator[np.ndarray]:
  """Yields rendered rgb [<=chunk, H, W, 3] float chunks in frame order."""
  size = pipeline.image_size(runs_.nerf_config)
  for start in range(0, len(expressions), chunk):
    sl = slice(start, min(start + chunk, len(expressions)))
    n = sl.stop - sl.start
    frames = pipeline.FrameSet(
        rgb=np.zeros((n, size, size, 3), np.float32), rotation=poses.rotation[sl],
        translation=poses.translation[sl], intrinsics=poses.intrinsics[sl],
        identity=np.full(n, identity, np.int32), frame=np.full(n, -1, np.int32),
        expression=expressions[sl], mask=np.zeros((n, size, size), np.float32))
    yield runs_.nerf.render_frames(runs_.nerf_params, frames)["rgb"]


def talk(workdir: str, audio_model: str, audio: str, identity: int, out: str, *,
         pose: str = "still", expression_scale: float = 1.0, blinks: str = "schedule",
         scale: int = 4, chunk: int = 25, seed: int = 0, progress: bool = True) -> dict:
  """Writes the talking-head mp4; returns {'path', 'frames', 'seconds', 'expressions', ...}."""
  if not out.endswith(".mp4") or os.path.isdir(out):
    raise TalkError(f"--out={out}: must name an .mp4 file")
  start = time.time()
  runs_ = TalkRuns.load(workdir, audio_model)
  runs_.check_identity(identity)
  try:
    signal = features_lib.load_speech(audio, features_lib.SAMPLE_RATE, fps=runs_.fps)
  except features_lib.SpeechError as e:
    raise TalkError(f"--audio={e}") from e
  n = features_lib.num_video_frames(len(signal), runs_.fps)
  poses = pose_track(runs_, identity, n, pose)
  expressions = expression_track(runs_, signal, identity, n, expression_scale=expression_scale,
                                 blinks=blinks, blink_track=poses.blink, seed=seed)
  prepared = time.time()
  bar = None
  if progress:
    from tqdm import tqdm  # pylint: disable=g-import-not-at-top
    bar = tqdm(total=n, unit="frame", desc="talk")
  with video.VideoWriter(out, runs_.fps, signal, features_lib.SAMPLE_RATE) as writer:
    for rgb in render_chunks(runs_, identity, expressions, poses, chunk):
      writer.write(video.upscale(rgb, scale))
      if bar is not None:
        bar.update(len(rgb))
  if bar is not None:
    bar.close()
  return {"path": out, "frames": n, "fps": runs_.fps, "audio_seconds": len(signal) / 16000,
          "prepare_seconds": prepared - start, "render_seconds": time.time() - prepared,
          "expressions": expressions}


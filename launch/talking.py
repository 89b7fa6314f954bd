"""Speech in, talking head out: the pieces of ``launch.talk`` (defines no flags).

Two kinds of runs talk. An MI-NeRF run takes expressions: ``TalkRuns.load`` restores it with an
audio-to-expression run and checks that they fit together, and ``expression_track`` turns speech
into per-frame expressions (speech part from the audio model, blinks from the measured schedule,
a reference video, or none). A LokiTalk run is audio-driven itself (no audio model):
``audio_track`` gives each frame's audio feature windows and its blinks (same choices). Both
become a ``Drive``. ``pose_track`` gives the
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


# Models launch.talk drives: those that take expressions need an audio model, the audio-driven
# ones do not.
EXPRESSION_DRIVEN = ("minerf",)
AUDIO_DRIVEN = ("lokitalk",)


def _restore(workdir: str, flag: str, want: tuple[str, ...]):
  try:
    config = runs.load_config(workdir)
  except FileNotFoundError as e:
    raise TalkError(f"{flag}={workdir}: no config.json there; pass a training run directory"
                    ) from e
  name = config.model.get("name", "?")
  if name not in want:
    raise TalkError(f"{flag}={workdir} is a run of model {name!r}; it must be a "
                    f"{' or '.join(repr(w) for w in want)} run")
  try:
    return runs.restore(workdir, config)
  except (FileNotFoundError, ValueError) as e:
    raise TalkError(f"{flag}={workdir}: {str(e).splitlines()[0]}") from e


@dataclasses.dataclass
class TalkRuns:
  nerf_config: ml_collections.ConfigDict
  nerf: Any
  nerf_params: Any
  a2e_config: ml_collections.ConfigDict | None   # None for audio-driven runs
  a2e: Any
  a2e_params: Any
  builder: Any
  fps: float

  @property
  def audio_driven(self) -> bool:
    return self.a2e is None

  @classmethod
  def load(cls, workdir: str, audio_model: str | None) -> "TalkRuns":
    nc, nerf, np_ = _restore(workdir, "--workdir", EXPRESSION_DRIVEN + AUDIO_DRIVEN)
    if nc.model.name in AUDIO_DRIVEN:
      if audio_model:
        raise TalkError(f"--audio_model={audio_model}: a {nc.model.name!r} run is driven by "
                        "the audio itself; drop --audio_model")
      builder = pipeline.dataset_builder(nc.data,
                                         num_identities=pipeline.effective_num_identities(nc))
      return cls(nc, nerf, np_, None, None, None, builder,
                 float(builder.info.metadata.get("fps", 25)))
    if not audio_model:
      raise TalkError(f"--workdir={workdir} is a {nc.model.name!r} run, which takes expressions: "
                      "pass --audio_model=A2E_RUN (configs/audio2exp*.py)")
    ac, a2e, ap = _restore(audio_model, "--audio_model", ("audio2exp",))
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
      raise TalkError(f"--identity={identity}: the {self.nerf_config.model.name} run has "
                      f"identities 0..{n - 1}")


def style_identity(runs_: TalkRuns, identity: int) -> int:
  """The audio model's speaking-style row for ``identity`` (row 0 when it has fewer)."""
  return identity if identity < int(runs_.a2e_config.data.num_identities) else 0


@dataclasses.dataclass
class Drive:
  """What drives each output frame: expressions [T, E] (MI-NeRF), or audio feature windows
  [T, 2K+1, W, M] and blinks [T, 2] (audio-driven runs)."""
  expression: np.ndarray | None = None
  audio: np.ndarray | None = None
  blink: np.ndarray | None = None
  audio_scale: float = 1.0

  def __len__(self) -> int:
    return len(self.expression if self.expression is not None else self.audio)

  def take(self, sl: slice) -> "Drive":
    cut = lambda x: None if x is None else x[sl]
    return Drive(cut(self.expression), cut(self.audio), cut(self.blink), self.audio_scale)


def blinks_for(stats: blinks_lib.BlinkStats, num_frames: int, blinks: str,
                video_blinks: np.ndarray | None, seed: int) -> np.ndarray:
  """[T, 2] blinks: drawn from ``stats`` ('schedule'), a reference video's ``video_blinks``
  ('video'), or none."""
  if blinks == "schedule":
    return blinks_lib.schedule(stats, num_frames, np.random.default_rng(seed))
  if blinks == "video":
    if video_blinks is None:
      raise TalkError("--blinks=video needs --pose=from_video=VIDEO (the video's blinks)")
    return _loop(video_blinks, num_frames)
  if blinks == "none":
    return np.zeros((num_frames, 2), np.float32)
  raise TalkError(f"--blinks={blinks!r}: use schedule, video or none")


def expression_track(runs_: TalkRuns, signal: np.ndarray, identity: int, num_frames: int, *,
                     expression_scale: float = 1.0, blinks: str = "schedule",
                     blink_track: np.ndarray | None = None, seed: int = 0) -> np.ndarray:
  """[T, E] expressions for ``signal``: speech part + blink part (see module docstring)."""
  speech = runs_.a2e.predict_speech(runs_.a2e_params, signal, runs_.fps,
                                    style_identity(runs_, identity), num_frames)
  blink = blinks_for(runs_.a2e.blink_stats(runs_.a2e_params), num_frames, blinks, blink_track,
                     seed)
  return runs_.a2e.expressions(runs_.a2e_params, speech, blink, expression_scale)


def audio_track(runs_: TalkRuns, signal: np.ndarray, num_frames: int, *,
                expression_scale: float = 1.0, blinks: str = "schedule",
                video_blinks: np.ndarray | None = None, seed: int = 0) -> Drive:
  """The drive of an audio-driven run: each frame's feature window and its neighbours' (the
  run's ``config.audio`` settings and ``model.audio_context``), blinks as ``blinks_for``."""
  config = runs_.nerf_config
  settings = features_lib.FeatureSettings.from_config(config.get("audio"))
  feats = features_lib.features(signal, runs_.fps, num_frames, settings)
  t = np.arange(num_frames)
  windows = feats[pipeline.neighbour_index(np.zeros_like(t), t, pipeline.audio_context(config))]
  blink = blinks_for(runs_.nerf.blink_stats(runs_.nerf_params), num_frames, blinks,
                     video_blinks, seed)
  return Drive(audio=windows, blink=blink.astype(np.float32), audio_scale=expression_scale)


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
    raise TalkError("--pose=from_video needs a run on real videos (talking_faces): "
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


def render_chunks(runs_: TalkRuns, identity: int, drive: Drive | np.ndarray, poses: Poses,
                  chunk: int = 25) -> Iterator[np.ndarray]:
  """Yields rendered rgb [<=chunk, H, W, 3] float chunks in frame order (``drive``: a Drive or
  an MI-NeRF expression track [T, E])."""
  if not isinstance(drive, Drive):
    drive = Drive(expression=np.asarray(drive))
  size = pipeline.image_size(runs_.nerf_config)
  num_masks = len(pipeline.FRAME_MASK_NAMES)
  for start in range(0, len(drive), chunk):
    sl = slice(start, min(start + chunk, len(drive)))
    n = sl.stop - sl.start
    part = drive.take(sl)
    expression = part.expression if part.expression is not None else np.zeros((n, 0), np.float32)
    extras = {}
    if part.audio is not None:
      extras = dict(audio=part.audio, blink=part.blink,
                    masks=np.zeros((n, size, size, num_masks), np.float32))
    frames = pipeline.FrameSet(
        rgb=np.zeros((n, size, size, 3), np.float32), rotation=poses.rotation[sl],
        translation=poses.translation[sl], intrinsics=poses.intrinsics[sl],
        identity=np.full(n, identity, np.int32), frame=np.full(n, -1, np.int32),
        expression=expression, mask=np.zeros((n, size, size), np.float32), **extras)
    if part.audio is not None:
      yield runs_.nerf.render_frames(runs_.nerf_params, frames, part.audio_scale)["rgb"]
    else:
      yield runs_.nerf.render_frames(runs_.nerf_params, frames)["rgb"]


def talk(workdir: str, audio_model: str | None, audio: str, identity: int, out: str, *,
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
  if runs_.audio_driven:
    drive = audio_track(runs_, signal, n, expression_scale=expression_scale, blinks=blinks,
                        video_blinks=poses.blink, seed=seed)
  else:
    drive = Drive(expression=expression_track(
        runs_, signal, identity, n, expression_scale=expression_scale, blinks=blinks,
        blink_track=poses.blink, seed=seed))
  prepared = time.time()
  bar = None
  if progress:
    from tqdm import tqdm  # pylint: disable=g-import-not-at-top
    bar = tqdm(total=n, unit="frame", desc="talk")
  with video.VideoWriter(out, runs_.fps, signal, features_lib.SAMPLE_RATE) as writer:
    for rgb in render_chunks(runs_, identity, drive, poses, chunk):
      writer.write(video.upscale(rgb, scale))
      if bar is not None:
        bar.update(len(rgb))
  if bar is not None:
    bar.close()
  return {"path": out, "frames": n, "fps": runs_.fps, "audio_seconds": len(signal) / 16000,
          "prepare_seconds": prepared - start, "render_seconds": time.time() - prepared,
          "expressions": drive.expression, "blinks": drive.blink}


"""One talking-face video -> per-frame face crops and annotations (used by ``talking_faces``).

Steps, for each video:
  1. decode with PyAV, resampled to the target fps by nearest timestamp (frames are streamed
     twice; a long 720p video never sits in memory);
  2. shot changes: the colour-histogram distance between consecutive frames (8x8x8 RGB bins of a
     64x64 thumbnail, half the L1 distance, in [0, 1]) above ``CUT_THRESHOLD``, or a face-box jump
     of more than half the box side; frames across a cut never share a clip, and the face
     tracker restarts at each cut;
  3. 478 landmarks per frame with MediaPipe FaceMesh; frames with no face are dropped and
     counted; shots with fewer than ``min_shot_frames`` faces are dropped and counted;
  4. the crop box (``face.landmark_box``) is smoothed over time within each shot by a Gaussian of
     ``smooth_seconds``, so the crop follows the head without jitter;
  5. per kept frame: the crop, landmarks in crop pixels, pose-normalised landmarks, head pose,
     crop intrinsics, region masks, eye openness, the frame's audio chunk and log-mel window.

The result of each video is cached under ``<out>/cache/`` keyed by the file's path, size, mtime and
every setting, and written atomically, so a re-run reuses finished videos. Problems with one file
(unreadable, no video stream, no face, too few frames) raise ``SkipVideo`` with a one-line reason;
a missing audio track is a warning (zeros, ``has_audio=False``).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Callable, Iterator

import numpy as np

from minerf_jax.audio import features as audio_lib
from minerf_jax.data import face

PREPROCESS_VERSION = "5"   # 4: stereo audio is the mean of its channels; 5: crop boxes fitted
                           # inside the frame (face.fit_box), no replicated edge pixels
SAMPLE_RATE = 16000
AUDIO_WINDOW, N_MELS = 16, 40
CUT_THRESHOLD = 0.2      # within-shot distances on the media clips stay <= 0.06; a cut between
                         # two of them measured 0.40
BOX_JUMP = 0.5           # face-box centre jump (fraction of its side) that also means a new shot


class SkipVideo(Exception):
  """A video that cannot be used; the message is the one-line reason."""


@dataclasses.dataclass(frozen=True)
class Settings:
  resolution: int = 256
  fps: float = 25.0
  focal_scale: float = face.FOCAL_SCALE
  smooth_seconds: float = 0.3
  min_frames: int = 25          # a video with fewer kept frames is skipped (too short)
  min_shot_frames: int = 8      # shots with fewer face frames are dropped

  def key(self) -> dict:
    return dict(dataclasses.asdict(self), version=PREPROCESS_VERSION)


# ----------------------------------------------------------------------------------------------
# Decoding.


def _open(path: str):
  from minerf_jax.data import video  # pylint: disable=g-import-not-at-top
  av = video._av()  # pylint: disable=protected-access
  if not os.path.exists(path):
    raise SkipVideo("no such file")
  try:
    container = av.open(path)
  except av.error.FFmpegError as e:
    raise SkipVideo(f"unreadable ({type(e).__name__}: {e.strerror or e})") from e
  if not container.streams.video:
    container.close()
    raise SkipVideo("no video stream")
  return av, container


def iter_frames(path: str, fps: float) -> Iterator[np.ndarray]:
  """RGB uint8 frames resampled to ``fps`` (nearest earlier-or-equal source timestamp)."""
  av, container = _open(path)
  with container:
    stream = container.streams.video[0]
    src_fps = float(stream.average_rate or fps)
    k, last = 0, None
    try:
      for n, frame in enumerate(container.decode(video=0)):
        t = float(frame.time) if frame.time is not None else n / src_fps
        rgb = None
        while k / fps < t + 0.5 / src_fps - 1e-6:  # output slots nearest this source frame
          rgb = frame.to_ndarray(format="rgb24") if rgb is None else rgb
          yield rgb
          k += 1
        last = frame
    except av.error.FFmpegError as e:
      if last is None:
        raise SkipVideo(f"unreadable ({type(e).__name__}: {e.strerror or e})") from e
      # A truncated file: keep the frames decoded so far (reported as a warning by the caller).


def histogram(rgb: np.ndarray) -> np.ndarray:
  """float32 [512] normalised 8x8x8 colour histogram of a 64x64 thumbnail."""
  import cv2  # pylint: disable=g-import-not-at-top
  small = cv2.resize(rgb, (64, 64), interpolation=cv2.INTER_AREA)
  idx = (small // 32).astype(np.int32)
  flat = idx[..., 0] * 64 + idx[..., 1] * 8 + idx[..., 2]
  return (np.bincount(flat.reshape(-1), minlength=512) / flat.size).astype(np.float32)


def hist_distance(a: np.ndarray, b: np.ndarray) -> float:
  return float(0.5 * np.abs(a - b).sum())


# ----------------------------------------------------------------------------------------------
# Pass 1: shots and landmarks.


@dataclasses.dataclass
class Track:
  landmarks: list            # per output frame: [478, 3] source pixels or None
  shot: np.ndarray           # int [T] shot index per output frame
  image_hw: tuple[int, int]
  cut_distances: np.ndarray  # float [T] histogram distance to the previous frame


def track(path: str, fps: float) -> Track:
  """Decodes once: histogram shot cuts, then landmarks with a tracker restarted at each cut."""
  landmarks, shots, dists = [], [], []
  prev_hist, shot, mesh, hw = None, 0, None, None
  try:
    for rgb in iter_frames(path, fps):
      hw = rgb.shape[:2]
      hist = histogram(rgb)
      d = 0.0 if prev_hist is None else hist_distance(hist, prev_hist)
      prev_hist = hist
      if mesh is None or d > CUT_THRESHOLD:
        if mesh is not None:
          mesh.close()
          shot += 1
        mesh = face.FaceMesh(tracking=True)
      lm = mesh.landmarks(rgb)
      if lm is not None and landmarks and landmarks[-1] is not None and shots[-1] == shot:
        a, b = face.landmark_box(landmarks[-1]), face.landmark_box(lm)
        if np.linalg.norm(a[:2] - b[:2]) > BOX_JUMP * a[2]:  # another face: a cut the
          shot += 1                                        # histogram missed
      landmarks.append(lm)
      shots.append(shot)
      dists.append(d)
  finally:
    if mesh is not None:
      mesh.close()
  if hw is None:
    raise SkipVideo("no decodable frames")
  return Track(landmarks, np.asarray(shots), hw, np.asarray(dists, np.float32))


def smooth_boxes(boxes: np.ndarray, sigma_frames: float) -> np.ndarray:
  """Gaussian smoothing over time of [T, 3] boxes (edges renormalised, not zero-padded)."""
  if sigma_frames <= 0 or len(boxes) < 2:
    return boxes
  r = int(np.ceil(3 * sigma_frames))
  offsets = np.arange(-r, r + 1)
  weights = np.exp(-0.5 * (offsets / sigma_frames) ** 2)
  out = np.empty_like(boxes)
  for i in range(len(boxes)):
    j = np.clip(i + offsets, 0, len(boxes) - 1)
    valid = (i + offsets >= 0) & (i + offsets < len(boxes))
    w = weights * valid
    out[i] = (w[:, None] * boxes[j]).sum(0) / w.sum()
  return out


# ----------------------------------------------------------------------------------------------
# The whole video.


def process_video(path: str, settings: Settings,
                  progress: Callable[[int, int], None] | None = None) -> tuple[dict, dict]:
  """(arrays, report) for one video; raises SkipVideo with a one-line reason.

  arrays: per kept frame ``rgb`` uint8 [N,R,R,3], ``masks`` uint8 [N,R,R,4], ``landmarks``
  [N,478,3] (crop pixels), ``head_landmarks`` [N,478,3] (dm), ``rotation`` [N,3,3],
  ``translation`` [N,3], ``intrinsics`` [N,3,3], ``eye_openness`` [N,2], ``box`` [N,3] (source
  pixels), ``time`` [N] (s), ``source_frame`` [N] (index at the target fps), ``clip`` [N] (shot
  index), ``audio`` [N, SAMPLE_RATE/fps], ``audio_features`` [N,16,40]; plus scalars.
  """
  from minerf_jax.data import video  # pylint: disable=g-import-not-at-top
  s = settings
  tr = track(path, s.fps)
  total = len(tr.landmarks)
  has_face = np.array([lm is not None for lm in tr.landmarks])
  report = dict(frames=total, face_frames=int(has_face.sum()),
                cuts=int(tr.shot.max()) if total else 0, dropped_shots=0, dropped_frames=0,
                warnings=[])
  if not has_face.any():
    raise SkipVideo(f"no face found in any of its {total} frames")
  keep = has_face.copy()
  boxes = np.zeros((total, 3), np.float32)
  for shot in np.unique(tr.shot):
    idx = np.flatnonzero((tr.shot == shot) & has_face)
    if len(idx) < s.min_shot_frames:
      keep[idx] = False
      report["dropped_shots"] += 1
      report["dropped_frames"] += len(idx)
      continue
    raw = np.stack([face.landmark_box(tr.landmarks[i]) for i in idx])
    boxes[idx] = smooth_boxes(raw, s.smooth_seconds * s.fps)
  kept = np.flatnonzero(keep)
  if len(kept) < s.min_frames:
    raise SkipVideo(f"too short: {len(kept)} frames with a face after dropping short shots "
                    f"(need >= {s.min_frames})")

  audio = video.read_audio(path, SAMPLE_RATE)
  has_audio = audio is not None and len(audio) > 0
  if not has_audio:
    report["warnings"].append("no audio track: audio features are zeros (has_audio=False)")
    audio = np.zeros(int(np.ceil(total / s.fps * SAMPLE_RATE)), np.float32)
  chunk = int(round(SAMPLE_RATE / s.fps))
  audio = np.pad(audio, (0, max(0, total * chunk - len(audio))))
  feats = audio_lib.frame_features(audio, SAMPLE_RATE, s.fps, total, AUDIO_WINDOW, N_MELS)

  out = {k: [] for k in ("rgb", "masks", "landmarks", "head_landmarks", "rotation",
                         "translation", "intrinsics", "eye_openness", "box")}
  kept_set = set(kept.tolist())
  with face.FaceMesh(tracking=False) as mesh:
    for i, rgb in enumerate(iter_frames(path, s.fps)):
      if i >= total:
        break
      if i in kept_set:
        c = face.crop_face(rgb, tr.landmarks[i], boxes[i], s.resolution, mesh, s.focal_scale)
        out["rgb"].append(c.rgb)
        out["masks"].append(c.masks.astype(np.uint8))
        out["landmarks"].append(c.landmarks)
        out["head_landmarks"].append(c.head_landmarks)
        out["rotation"].append(c.rotation)
        out["translation"].append(c.translation)
        out["intrinsics"].append(c.intrinsics)
        out["eye_openness"].append(face.eye_openness(c.head_landmarks))
        out["box"].append(c.box)
      if progress is not None:
        progress(i + 1, total)
  arrays = {k: np.stack(v) for k, v in out.items()}
  arrays.update(
      time=(kept / s.fps).astype(np.float32), source_frame=kept.astype(np.int64),
      clip=tr.shot[kept].astype(np.int64),
      audio=np.stack([audio[i * chunk:(i + 1) * chunk] for i in kept]).astype(np.float32),
      audio_features=feats[kept].astype(np.float32),
      has_audio=np.asarray(has_audio), image_hw=np.asarray(tr.image_hw),
      cut_distances=tr.cut_distances)
  report.update(kept_frames=len(kept), has_audio=has_audio,
                jitter_px=landmark_jitter(arrays["landmarks"], arrays["clip"],
                                          arrays["source_frame"], s.resolution))
  return arrays, report


def landmark_jitter(landmarks: np.ndarray, clip: np.ndarray, source_frame: np.ndarray,
                    resolution: int) -> float:
  """Mean landmark displacement between consecutive frames of a clip, in pixels at 256x256."""
  same = (clip[1:] == clip[:-1]) & (source_frame[1:] == source_frame[:-1] + 1)
  if not same.any():
    return float("nan")
  d = np.linalg.norm(landmarks[1:, :, :2] - landmarks[:-1, :, :2], axis=-1)[same]
  return float(d.mean() * 256.0 / resolution)


# ----------------------------------------------------------------------------------------------
# Per-video cache.


def cache_path(cache_dir: str, path: str, settings: Settings) -> str:
  st = os.stat(path)
  key = json.dumps(dict(path=os.path.abspath(path), size=st.st_size, mtime=st.st_mtime_ns,
                        **settings.key()), sort_keys=True)
  digest = hashlib.sha1(key.encode()).hexdigest()[:16]
  return os.path.join(cache_dir, f"{os.path.basename(path)}.{digest}.npz")


def cached_process_video(path: str, settings: Settings, cache_dir: str,
                         progress: Callable[[int, int], None] | None = None
                         ) -> tuple[dict, dict, bool]:
  """process_video through the cache: (arrays, report, from_cache). Skips are cached too."""
  if not os.path.exists(path):
    raise SkipVideo("no such file")
  cpath = cache_path(cache_dir, path, settings)
  if os.path.exists(cpath):
    with np.load(cpath, allow_pickle=False) as z:
      report = json.loads(str(z["report"]))
      if "skip" in report:
        raise SkipVideo(report["skip"])
      return {k: z[k] for k in z.files if k != "report"}, report, True
  os.makedirs(cache_dir, exist_ok=True)
  tmp = cpath + ".tmp.npz"
  try:
    arrays, report = process_video(path, settings, progress)
  except SkipVideo as e:
    np.savez(tmp, report=np.asarray(json.dumps({"skip": str(e)})))
    os.replace(tmp, cpath)
    raise
  np.savez(tmp, report=np.asarray(json.dumps(report)), **arrays)
  os.replace(tmp, cpath)
  return arrays, report, False

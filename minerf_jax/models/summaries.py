"""What a model shows in TensorBoard at each evaluation (``summary_images`` of the model seam):
image strips of a few held-out frames and one short video, all as float arrays in [0, 1].

* ``grid(rows)``: rows of equally sized frames ``[N, H, W, 3]`` -> one ``[R*H, N*W, 3]`` image
  (e.g. ground truth above, prediction below).
* ``side_by_side(*videos)``: ``[T, H, W, 3]`` videos -> ``[T, H, sum W, 3]``.
* ``nerf_summaries``: MI-NeRF and LokiTalk: for every evaluation set its first frames rendered
  under the truth (the driver above them for expression transfer), and a video of the held-out
  frames, truth beside render.
* ``pair_summaries``: the one-shot animation models (TPSMM, MCNet, MRFA) and Head3D: the first
  held-out clip animated from its first frame (source, driving, prediction side by side, a video,
  and its first frames as a strip) and the cross-identity pairs as a strip.

The renders are a few frames beyond what ``evaluate`` already draws (at most ``FRAMES`` per set
and ``VIDEO_FRAMES`` for the video), so summaries add a small fraction to each evaluation.
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np

FRAMES = 4
VIDEO_FRAMES = 12


def as_float(images: np.ndarray) -> np.ndarray:
  """uint8 (0..255) or float (0..1) images -> float32 in [0, 1]."""
  images = np.asarray(images)
  if images.dtype == np.uint8:
    return images.astype(np.float32) / 255.0
  return np.clip(images.astype(np.float32), 0.0, 1.0)


def grid(rows: Sequence[np.ndarray]) -> np.ndarray:
  """Rows of frames ``[N, H, W, 3]`` (equal N, H, W) -> ``[len(rows) * H, N * W, 3]``."""
  rows = [as_float(r) for r in rows]
  n, h, w, c = rows[0].shape
  for r in rows:
    if r.shape != (n, h, w, c):
      raise ValueError(f"grid rows differ in shape: {r.shape} vs {(n, h, w, c)}")
  return np.concatenate([np.concatenate(list(r), axis=1) for r in rows], axis=0)


def side_by_side(*videos: np.ndarray) -> np.ndarray:
  """Videos ``[T, H, W_i, 3]`` (or one frame ``[H, W, 3]``, repeated) -> ``[T, H, sum W, 3]``."""
  t = max(len(v) for v in videos if np.ndim(v) == 4)
  full = [np.repeat(as_float(v)[None], t, 0) if np.ndim(v) == 3 else as_float(v) for v in videos]
  return np.concatenate(full, axis=2)


def nerf_summaries(render: Callable, eval_sets: Mapping[str, object], video_set: str = "heldout"
                   ) -> dict[str, np.ndarray]:
  """``render(frames) -> [N, H, W, 3]`` of a ``pipeline.FrameSet``; ``eval_sets``: name ->
  FrameSet. Returns ``{name: strip}`` and ``{video_set + '_video': [T, H, 2W, 3]}``."""
  out = {}
  for name, frames in eval_sets.items():
    n = min(VIDEO_FRAMES if name == video_set else FRAMES, len(frames))
    if n == 0:
      continue
    some = frames.take(slice(0, n))
    pred = render(some)
    k = min(FRAMES, n)
    rows = [some.rgb[:k], pred[:k]]
    if getattr(some, "driver_rgb", None) is not None:
      rows.insert(0, some.driver_rgb[:k])
    out[name] = grid(rows)
    if name == video_set:
      out[f"{name}_video"] = side_by_side(some.rgb, pred)
  return out


def pair_summaries(animate: Callable, pairs: Callable, eval_data: Mapping[str, object]
                   ) -> dict[str, np.ndarray]:
  """``animate(clip, n) -> (source [H, W, 3], driving [n, H, W, 3], prediction [n, H, W, 3])``
  of the first ``n`` frames of a held-out clip; ``pairs(batch) -> [N, H, W, 3]`` of a dict of
  uint8 source/driving pairs (``PairData.eval_data['cross']``)."""
  out = {}
  clips = eval_data.get("reconstruction") or []
  if clips:
    source, driving, pred = animate(clips[0], VIDEO_FRAMES)
    out["reconstruction_video"] = side_by_side(source, driving, pred)
    k = min(FRAMES, len(pred))
    out["reconstruction"] = grid([np.repeat(as_float(source)[None], k, 0), driving[:k],
                                  pred[:k]])
  cross = eval_data.get("cross")
  if cross is not None and len(cross["driving"]):
    k = min(FRAMES, len(cross["driving"]))
    some = {key: np.asarray(v)[:k] for key, v in cross.items() if np.ndim(v) >= 1}
    source = some["source"] if "source" in some else some["subject"][:, 0]  # Head3D: frame 0
    out["cross"] = grid([source, some["driving"], pairs(some)])
  return out

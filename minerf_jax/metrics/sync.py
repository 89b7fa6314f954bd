"""Lip-sync metrics that need no downloaded model: mouth opening vs speech energy, and LMD.

SyncNet-based scores (LSE-C/D) need a pretrained network that cannot be downloaded here; these
are the model-free measures the issue asks for, computable on any video, real or rendered.

Mouth opening (``mouth_opening``)
  Per frame, the mean vertical gap between the inner lips at three MediaPipe FaceMesh landmark
  pairs (82-87, 13-14, 312-317: left of centre, centre, right of centre), divided by the
  inter-ocular distance (outer eye corners 33-263), so it does not depend on image size or head
  distance. On the synthetic generator's landmarks the same idea is ``synthetic_mouth_opening``
  (upper-to-lower lip gap over the outer-eye-corner distance), exact and detector-free.

Speech energy (``energy_envelope``)
  RMS of the speech over a window of one video frame centred on each frame's interval centre
  ``(i + 0.5) / fps`` (the frame/audio convention of the datasets), in dB (``20 log10(rms +
  1e-4)``): the log scale keeps quiet syllables from being swamped by loud ones.

Sync offset (``sync_offset``)
  Pearson correlation of ``mouth[t + lag]`` with ``energy[t]`` over their overlap, for every lag in
  ``-max_lag..max_lag`` frames (+-10 by default) that keeps at least half the frames (NaN beyond). A positive lag means the mouth follows the
  sound. The score is the peak correlation and the lag at the peak; in sync speech, the peak is
  near lag 0 (measured on the real clips in ``tests/test_metrics_sync.py``). Shifting the audio
  later by k frames moves the peak lag by -k.

LMD (``mouth_lmd``)
  Mouth landmark distance: the 40 lip landmarks of MediaPipe's mesh (``face.region_loops()``'s
  outer lip loop plus the inner lip loop), each frame's points mean-centred (head translation
  removed) and scaled to pixels of a 256-pixel image side (``256 / image side``), then the mean
  Euclidean distance between corresponding points of the generated and the reference frame,
  over frames where both have a face. The literature's LMD (Chen et al. 2018) uses 68-point dlib
  landmarks; values are comparable between methods evaluated with this module only.
"""
from __future__ import annotations

import math

import numpy as np

INNER_LIP_PAIRS = ((82, 87), (13, 14), (312, 317))
EYE_CORNERS = (33, 263)
LMD_SIDE = 256


def mouth_opening(points: np.ndarray) -> np.ndarray:
  """float [N] inner-lip gap over inter-ocular distance from MediaPipe points [N, 478, 2|3]
  (NaN rows stay NaN)."""
  p = np.asarray(points, np.float64)[..., :2]
  gaps = np.stack([np.linalg.norm(p[:, a] - p[:, b], axis=-1) for a, b in INNER_LIP_PAIRS], -1)
  eyes = np.linalg.norm(p[:, EYE_CORNERS[0]] - p[:, EYE_CORNERS[1]], axis=-1)
  return gaps.mean(-1) / np.maximum(eyes, 1e-9)


def energy_envelope(signal: np.ndarray, sample_rate: int, fps: float, num_frames: int
                    ) -> np.ndarray:
  """float [num_frames] speech energy in dB over one frame's duration at each frame's centre."""
  x = np.asarray(signal, np.float64).reshape(-1)
  power = np.concatenate([[0.0], np.cumsum(x ** 2)])
  half = max(1, int(round(0.5 * sample_rate / fps)))
  centre = np.round((np.arange(num_frames) + 0.5) / fps * sample_rate).astype(int)
  lo, hi = np.clip(centre - half, 0, x.size), np.clip(centre + half, 0, x.size)
  rms = np.sqrt((power[hi] - power[lo]) / np.maximum(hi - lo, 1))
  return 20.0 * np.log10(rms + 1e-4)


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
  ok = np.isfinite(a) & np.isfinite(b)
  if ok.sum() < 3:
    return math.nan
  a, b = a[ok] - a[ok].mean(), b[ok] - b[ok].mean()
  denom = math.sqrt(float((a * a).sum() * (b * b).sum()))
  return float((a * b).sum() / denom) if denom > 0 else math.nan


def lagged_correlation(mouth: np.ndarray, energy: np.ndarray, max_lag: int = 10
                       ) -> tuple[np.ndarray, np.ndarray]:
  """(lags int [2L+1], corr float [2L+1]): Pearson of mouth[t + lag] with energy[t]."""
  mouth, energy = np.asarray(mouth, np.float64), np.asarray(energy, np.float64)
  if mouth.shape != energy.shape or mouth.ndim != 1:
    raise ValueError(f"sync: mouth {mouth.shape} and energy {energy.shape} must be equal 1-D tracks")
  n = len(mouth)
  lags = np.arange(-max_lag, max_lag + 1)
  corr = np.full(len(lags), math.nan)
  min_overlap = max(3, n // 2)   # short clips: only lags that keep half the frames
  for i, lag in enumerate(lags):
    if n - abs(lag) >= min_overlap:
      m = mouth[max(lag, 0):n + min(lag, 0)]
      e = energy[max(-lag, 0):n - max(lag, 0)]
      corr[i] = _pearson(m, e)
  return lags, corr


def sync_offset(mouth: np.ndarray, energy: np.ndarray, max_lag: int = 10) -> dict:
  """{'sync_corr': peak correlation, 'sync_lag': lag (frames) at the peak, 'lags', 'corr'}."""
  lags, corr = lagged_correlation(mouth, energy, max_lag)
  if not np.isfinite(corr).any():
    return {"sync_corr": math.nan, "sync_lag": math.nan, "lags": lags, "corr": corr}
  k = int(np.nanargmax(corr))
  return {"sync_corr": float(corr[k]), "sync_lag": int(lags[k]), "lags": lags, "corr": corr}


def speech_sync(mouth: np.ndarray, signal: np.ndarray, sample_rate: int, fps: float,
                max_lag: int = 10) -> dict:
  """``sync_offset`` of a mouth-opening track against the speech that should drive it."""
  return sync_offset(mouth, energy_envelope(signal, sample_rate, fps, len(mouth)), max_lag)


def lip_indices() -> np.ndarray:
  """The 40 MediaPipe lip landmark indices (outer and inner lip loops)."""
  from minerf_jax.data import face  # pylint: disable=g-import-not-at-top
  edges = face._mediapipe().solutions.face_mesh.FACEMESH_LIPS  # pylint: disable=protected-access
  return np.asarray(sorted({i for e in edges for i in e}), np.int64)


def mouth_lmd(pred_points: np.ndarray, ref_points: np.ndarray, image_side: int,
              indices: np.ndarray | None = None) -> float:
  """Mouth LMD in pixels at 256 (see module docstring); NaN when no frame has both faces."""
  idx = lip_indices() if indices is None else np.asarray(indices)
  p = np.asarray(pred_points, np.float64)[:, idx, :2]
  r = np.asarray(ref_points, np.float64)[:, idx, :2]
  ok = np.isfinite(p).all((1, 2)) & np.isfinite(r).all((1, 2))
  if not ok.any():
    return math.nan
  scale = LMD_SIDE / float(image_side)
  p = (p[ok] - p[ok].mean(1, keepdims=True)) * scale
  r = (r[ok] - r[ok].mean(1, keepdims=True)) * scale
  return float(np.linalg.norm(p - r, axis=-1).mean())


def synthetic_mouth_opening(landmarks: np.ndarray, names) -> np.ndarray:
  """[N] lip gap over eye distance from the synthetic generator's landmarks [N, L, 2|3]."""
  names = list(names)
  p = np.asarray(landmarks, np.float64)
  gap = np.linalg.norm(p[:, names.index("lip_upper")] - p[:, names.index("lip_lower")],
                       axis=-1)
  eyes = np.linalg.norm(p[:, names.index("eye_r_outer")] - p[:, names.index("eye_l_outer")], axis=-1)
  return gap / np.maximum(eyes, 1e-9)

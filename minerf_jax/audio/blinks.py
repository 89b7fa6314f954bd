"""Blinks for speech-driven heads: measured from training data, replayed as a schedule.

Blinks are not in speech, so an audio-to-expression model should neither learn nor predict them.
A dataset gives a blink signal per eye in [0, 1] (``talking_faces``: ``blink``; the synthetic
generator: its blink_left/right expression components). Three steps (ours; the papers drive
eyes by a separate blink input or by AU45 from the reference video):

1. ``fit_basis``: least squares ``expression ~ blink @ B`` over the train clips (both
   high-passed in time, so slow expression changes do not alias into B), B [2, E]:
   how a blink moves each expression component (for the synthetic data B is exactly the two
   blink rows of the identity; for a landmark PCA it is the eyelid motion in PCA space). The
   audio model learns ``expression - blink @ B`` (the speech part) and the blink part is added
   back at render time.
2. ``measure``: events where either eye's signal exceeds ``threshold``; the rate (events per
   second of video), the inter-blink intervals and the mean event profile (per eye, from onset).
3. ``schedule``: a renewal process with gamma-distributed intervals of the measured mean and
   coefficient of variation, each event the measured mean profile; or the blink signal of a
   reference video (``--blinks=from_video`` in ``launch.talk``).
"""
from __future__ import annotations

import dataclasses

import numpy as np

PROFILE_FRAMES = 12


def _high_pass(x: np.ndarray, window: int) -> np.ndarray:
  """x minus its centred moving average over ``window`` frames (edges replicated)."""
  x = np.asarray(x, np.float64)
  pad = np.pad(x, ((window // 2, window - 1 - window // 2), (0, 0)), mode="edge")
  c = np.cumsum(np.concatenate([np.zeros((1, x.shape[1])), pad]), 0)
  return x - (c[window:] - c[:-window]) / window


def fit_basis(expressions: list[np.ndarray], blinks: list[np.ndarray],
              window: int = 25) -> np.ndarray:
  """float32 [2, E]: the least-squares effect of each eye's blink on each expression component.

  Fitted on temporally high-passed tracks (each minus its ``window``-frame moving average, per
  clip): a blink lasts a few frames, so this keeps it and removes slow processes (smiles, brows,
  speech prosody) that would otherwise correlate with the blinks by chance.
  """
  x = np.concatenate([_high_pass(b, window) for b in blinks])
  y = np.concatenate([_high_pass(e, window) for e in expressions])
  coef, *_ = np.linalg.lstsq(x, y, rcond=None)
  coef[:, np.abs(coef).max(0) < 1e-6] = 0.0
  return coef.astype(np.float32)


@dataclasses.dataclass(frozen=True)
class BlinkStats:
  rate_hz: float                 # events per second
  interval_mean_s: float
  interval_cv: float             # std / mean of the intervals
  profile: np.ndarray            # [PROFILE_FRAMES, 2] mean event signal from onset
  fps: float

  def to_arrays(self) -> dict[str, np.ndarray]:
    return {"rate_hz": np.float32(self.rate_hz), "interval_mean_s": np.float32(self.interval_mean_s),
            "interval_cv": np.float32(self.interval_cv), "profile": self.profile.astype(np.float32),
            "fps": np.float32(self.fps)}

  @classmethod
  def from_arrays(cls, arrays: dict) -> "BlinkStats":
    return cls(rate_hz=float(arrays["rate_hz"]), interval_mean_s=float(arrays["interval_mean_s"]),
               interval_cv=float(arrays["interval_cv"]), profile=np.asarray(arrays["profile"]),
               fps=float(arrays["fps"]))


def onsets(blink: np.ndarray, threshold: float = 0.5) -> np.ndarray:
  """Frame indices where max(left, right) first exceeds ``threshold`` (rising edges)."""
  above = np.asarray(blink).max(-1) > threshold
  return np.flatnonzero(above & ~np.concatenate([[False], above[:-1]]))


def measure(tracks: list[np.ndarray], fps: float, threshold: float = 0.5) -> BlinkStats:
  """Blink statistics of contiguous blink tracks [T_i, 2] (one per clip)."""
  total_s, intervals, profiles, count = 0.0, [], [], 0
  for track in tracks:
    track = np.asarray(track, np.float64)
    total_s += len(track) / fps
    starts = onsets(track, threshold)
    count += len(starts)
    intervals.extend(np.diff(starts) / fps)
    for s in starts:
      s0 = max(0, s - 1)  # include the frame before the crossing: the lid starts to move there
      seg = track[s0:s0 + PROFILE_FRAMES]
      profiles.append(np.pad(seg, ((0, PROFILE_FRAMES - len(seg)), (0, 0))))
  rate = count / total_s if total_s else 0.0
  mean = float(np.mean(intervals)) if intervals else (1.0 / rate if rate else np.inf)
  cv = float(np.std(intervals) / mean) if len(intervals) > 1 and mean > 0 else 0.5
  profile = np.mean(profiles, 0) if profiles else np.zeros((PROFILE_FRAMES, 2))
  return BlinkStats(rate_hz=rate, interval_mean_s=mean, interval_cv=cv, profile=profile, fps=fps)


def schedule(stats: BlinkStats, num_frames: int, rng: np.random.Generator) -> np.ndarray:
  """float32 [num_frames, 2] blink signal: gamma-renewal events with the measured profile."""
  out = np.zeros((num_frames, 2))
  if not np.isfinite(stats.interval_mean_s) or stats.rate_hz <= 0:
    return out.astype(np.float32)
  cv = float(np.clip(stats.interval_cv, 0.1, 2.0))
  shape, scale = 1.0 / cv ** 2, stats.interval_mean_s * cv ** 2
  t = rng.uniform(0.0, stats.interval_mean_s)  # stationary-ish start
  while int(t * stats.fps) < num_frames:
    k = int(t * stats.fps)
    seg = stats.profile[:num_frames - k]
    out[k:k + len(seg)] = np.maximum(out[k:k + len(seg)], seg)
    t += max(rng.gamma(shape, scale), len(stats.profile) / stats.fps)
  return out.astype(np.float32)

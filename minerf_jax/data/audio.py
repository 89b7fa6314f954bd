"""Log-mel audio features aligned to video frames (numpy only).

``log_mel``: Hann-windowed STFT power (25 ms windows, 10 ms hop at 16 kHz) through an HTK mel
filterbank, ``log(x + 1e-6)``. ``frame_features``: for video frame i, the ``window`` mel frames
centred on the frame's centre time, edge-padded, so each frame sees a fixed audio context.
"""
from __future__ import annotations

import numpy as np


def hz_to_mel(f):
  return 2595.0 * np.log10(1.0 + np.asarray(f, np.float64) / 700.0)


def mel_to_hz(m):
  return 700.0 * (10.0 ** (np.asarray(m, np.float64) / 2595.0) - 1.0)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0,
                   fmax: float | None = None) -> np.ndarray:
  """[n_mels, n_fft//2+1] triangular HTK mel filters."""
  fmax = fmax or sample_rate / 2
  edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
  freqs = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
  lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
  up = (freqs - lo) / np.maximum(mid - lo, 1e-9)
  down = (hi - freqs) / np.maximum(hi - mid, 1e-9)
  return np.maximum(0.0, np.minimum(up, down)).astype(np.float32)


def log_mel(signal: np.ndarray, sample_rate: int, n_fft: int = 512, hop: int = 160,
            win: int = 400, n_mels: int = 40) -> np.ndarray:
  """[frames, n_mels] log-mel energies; frame j is centred on sample j*hop."""
  signal = np.asarray(signal, np.float32)
  padded = np.pad(signal, (win // 2, win // 2), mode="reflect" if signal.size > win else "constant")
  count = 1 + max(0, (padded.size - win) // hop)
  idx = np.arange(win)[None, :] + hop * np.arange(count)[:, None]
  frames = padded[idx] * np.hanning(win).astype(np.float32)
  power = np.abs(np.fft.rfft(frames, n=n_fft, axis=-1)) ** 2
  return np.log(power @ mel_filterbank(sample_rate, n_fft, n_mels).T + 1e-6).astype(np.float32)


def frame_features(signal: np.ndarray, sample_rate: int, fps: float, num_frames: int,
                   window: int = 16, n_mels: int = 40, hop: int = 160) -> np.ndarray:
  """[num_frames, window, n_mels]: the mel frames around each video frame's centre time."""
  mel = log_mel(signal, sample_rate, hop=hop, n_mels=n_mels)
  centres = np.round((np.arange(num_frames) + 0.5) / fps * sample_rate / hop).astype(int)
  idx = centres[:, None] + np.arange(window)[None, :] - window // 2
  return mel[np.clip(idx, 0, len(mel) - 1)].astype(np.float32)

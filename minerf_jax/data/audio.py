"""Log-mel audio features aligned to video frames (numpy only, no librosa).

``log_mel``: Hann-windowed STFT (25 ms windows, 10 ms hop at 16 kHz, zero-padded to ``n_fft``),
power spectrum through an HTK-scale triangular mel filterbank, ``log(x + 1e-6)``. The signal is
reflect-padded by half a window so mel frame j is centred on sample ``j * hop``.

``frame_features``: video frame i covers [i/fps, (i+1)/fps) and owns those audio samples (the
convention of ``synthetic.sample_sequence`` and the datasets); its feature is the ``window`` mel
frames centred on that interval's centre ``(i + 0.5) / fps`` (frames ``c - window//2 ..
c + window//2 - 1``), edge-padded at both ends, so every frame sees the same audio context
(160 ms with the defaults) whatever its position in the clip.
"""
from __future__ import annotations

import numpy as np

Array = np.ndarray


def hz_to_mel(f: Array | float) -> Array:
  """HTK mel scale."""
  return 2595.0 * np.log10(1.0 + np.asarray(f, np.float64) / 700.0)


def mel_to_hz(m: Array | float) -> Array:
  return 700.0 * (10.0 ** (np.asarray(m, np.float64) / 2595.0) - 1.0)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0,
                   fmax: float | None = None) -> Array:
  """float32 [n_mels, n_fft//2+1] triangular filters with peaks equally spaced in mel.

  Filter m rises from edge m to its peak at edge m+1 and falls to zero at edge m+2, where the
  n_mels+2 edges are equally spaced in mel between fmin and fmax (unit peak height, HTK style).
  """
  fmax = sample_rate / 2.0 if fmax is None else fmax
  edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
  freqs = np.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1)
  lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
  up = (freqs - lo) / np.maximum(mid - lo, 1e-9)
  down = (hi - freqs) / np.maximum(hi - mid, 1e-9)
  return np.maximum(0.0, np.minimum(up, down)).astype(np.float32)


def log_mel(signal: Array, sample_rate: int, n_fft: int = 512, hop: int = 160, win: int = 400,
            n_mels: int = 40) -> Array:
  """float32 [frames, n_mels] log-mel energies; frame j is centred on sample j*hop."""
  if win > n_fft:
    raise ValueError(f"log_mel: win={win} must not exceed n_fft={n_fft}")
  signal = np.asarray(signal, np.float32).reshape(-1)
  mode = "reflect" if signal.size > win // 2 else "constant"
  padded = np.pad(signal, (win // 2, win // 2), mode=mode)
  count = 1 + max(0, (padded.size - win) // hop)
  idx = np.arange(win)[None, :] + hop * np.arange(count)[:, None]
  frames = padded[idx] * np.hanning(win).astype(np.float32)
  power = np.abs(np.fft.rfft(frames, n=n_fft, axis=-1)) ** 2
  mel = power @ mel_filterbank(sample_rate, n_fft, n_mels).T
  return np.log(mel + 1e-6).astype(np.float32)


def frame_centres(sample_rate: int, fps: float, num_frames: int, hop: int = 160) -> Array:
  """int [num_frames] index of the mel frame nearest each video frame's interval centre."""
  return np.round((np.arange(num_frames) + 0.5) / fps * sample_rate / hop).astype(int)


def frame_features(signal: Array, sample_rate: int, fps: float, num_frames: int,
                   window: int = 16, n_mels: int = 40, hop: int = 160) -> Array:
  """float32 [num_frames, window, n_mels]: the mel frames around each video frame's centre."""
  mel = log_mel(signal, sample_rate, hop=hop, n_mels=n_mels)
  idx = frame_centres(sample_rate, fps, num_frames, hop)[:, None] + np.arange(window) - window // 2
  return mel[np.clip(idx, 0, len(mel) - 1)]

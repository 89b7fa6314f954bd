"""Speech features aligned to video frames (numpy only, no librosa), and loading speech files.

``log_mel``: Hann-windowed STFT (``win`` samples, ``hop`` between frames, zero-padded to
``n_fft``), power spectrum through an HTK-scale triangular mel filterbank, ``log(x + 1e-6)``. The
signal is reflect-padded by half a window so mel frame j is centred on sample ``j * hop``.

``frame_features``: video frame i covers [i/fps, (i+1)/fps) and owns those audio samples (the
convention of ``synthetic.sample_sequence`` and the datasets); its feature is the ``window`` mel
frames centred on that interval's centre ``(i + 0.5) / fps`` (mel frames ``c - window//2 ..
c + window//2 - 1``), edge-padded at both ends, so every frame sees the same audio context
whatever its position in the clip, at any fps, and audio shorter than the video is padded with
its last mel frame (longer audio is ignored past the last video frame's context).

``FeatureSettings`` holds the settings; the configs' ``config.audio`` block mirrors it.
Defaults (ours): 40 mels, 10 ms hop, 25 ms window, a 16-step (160 ms) window per video frame.
``n_mels=80`` gives the 80-mel x 16-step window of the Wav2Lip / SadTalker family (their hop is
12.5 ms, ``hop=200``; their window covers 200 ms).

``load_speech``: any audio PyAV decodes (wav, mp3, m4a, the audio track of a video), resampled to
16 kHz mono, any length; a file with no audio stream, an unreadable file, silence only or less
audio than one video frame raises ``SpeechError`` with a one-line message.
"""
from __future__ import annotations

import dataclasses
import os

import numpy as np

Array = np.ndarray
SAMPLE_RATE = 16000
SILENCE_RMS = 1e-4       # a file whose RMS is below this (-80 dBFS) is "silence only"


class SpeechError(ValueError):
  """A speech input that cannot be used; the message is one line naming the file and problem."""


@dataclasses.dataclass(frozen=True)
class FeatureSettings:
  sample_rate: int = SAMPLE_RATE
  n_mels: int = 40
  window: int = 16           # mel frames per video frame
  hop: int = 160             # samples between mel frames (10 ms at 16 kHz)
  win: int = 400             # STFT window (25 ms)
  n_fft: int = 512

  @classmethod
  def from_config(cls, audio_config) -> "FeatureSettings":
    """From a ``config.audio`` ConfigDict (or dict); missing fields keep the defaults."""
    fields = {f.name for f in dataclasses.fields(cls)}
    values = dict(audio_config) if audio_config is not None else {}
    unknown = set(values) - fields
    if unknown:
      raise ValueError(f"config.audio has unknown fields {sorted(unknown)}; known: {sorted(fields)}")
    return cls(**{k: int(v) for k, v in values.items()})


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
                   window: int = 16, n_mels: int = 40, hop: int = 160, win: int = 400,
                   n_fft: int = 512) -> Array:
  """float32 [num_frames, window, n_mels]: the mel frames around each video frame's centre."""
  mel = log_mel(signal, sample_rate, n_fft=n_fft, hop=hop, win=win, n_mels=n_mels)
  idx = frame_centres(sample_rate, fps, num_frames, hop)[:, None] + np.arange(window) - window // 2
  return mel[np.clip(idx, 0, len(mel) - 1)]


def features(signal: Array, fps: float, num_frames: int,
             settings: FeatureSettings = FeatureSettings()) -> Array:
  """``frame_features`` with the settings of a ``FeatureSettings``."""
  s = settings
  return frame_features(signal, s.sample_rate, fps, num_frames, window=s.window,
                        n_mels=s.n_mels, hop=s.hop, win=s.win, n_fft=s.n_fft)


def num_video_frames(num_samples: int, fps: float, sample_rate: int = SAMPLE_RATE) -> int:
  """Video frames a speech of ``num_samples`` spans: round(duration * fps)."""
  return int(round(num_samples / sample_rate * fps))


def load_speech(path: str, sample_rate: int = SAMPLE_RATE, fps: float | None = None) -> Array:
  """float32 [S] mono speech at ``sample_rate`` from any file PyAV decodes (see module docstring).

  ``fps`` given: speech shorter than one video frame at that rate is an error too.
  """
  from minerf_jax.data import video  # pylint: disable=g-import-not-at-top
  av = video._av()  # pylint: disable=protected-access
  if not os.path.isfile(path):
    raise SpeechError(f"{path}: no such file; pass --audio=PATH to a speech file (wav, mp3, m4a, "
                      "or a video with sound)")
  try:
    signal = video.read_audio(path, sample_rate=sample_rate)
  except (av.error.FFmpegError, OSError, ValueError) as e:
    raise SpeechError(f"{path}: unreadable as audio ({type(e).__name__}: "
                      f"{getattr(e, 'strerror', None) or e}); pass a wav, mp3, m4a or mp4 file"
                      ) from e
  if signal is None:
    raise SpeechError(f"{path}: has no audio stream; pass a file with speech in it")
  if fps is not None and signal.size < sample_rate / fps:
    raise SpeechError(f"{path}: {signal.size / sample_rate * 1000:.0f} ms of audio is less than "
                      f"one video frame ({1000 / fps:.0f} ms at {fps:g} fps)")
  if signal.size == 0 or float(np.sqrt(np.mean(np.square(signal, dtype=np.float64)))) < SILENCE_RMS:
    raise SpeechError(f"{path}: is silence only (RMS below {20 * np.log10(SILENCE_RMS):.0f} dBFS); "
                      "pass a file with speech in it")
  return signal

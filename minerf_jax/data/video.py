"""Video + audio IO with PyAV (H.264 / AAC in mp4), shared by every launcher.

PyAV is imported lazily so that the core library (training on TFDS data) does not need it; it is
the ``video`` extra of setup.cfg.
"""
from __future__ import annotations

import dataclasses
import fractions
import os

import numpy as np


def _av():
  try:
    import av  # pylint: disable=g-import-not-at-top
  except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("video IO needs PyAV: pip install 'minerf_jax[video]'") from e
  return av


@dataclasses.dataclass
class Video:
  frames: np.ndarray                # [T,H,W,3] uint8
  fps: float
  audio: np.ndarray | None = None   # [S] float32 mono in [-1,1]
  sample_rate: int | None = None


def to_uint8(frames: np.ndarray) -> np.ndarray:
  """Float images in [0,1] (or uint8) -> uint8."""
  frames = np.asarray(frames)
  if frames.dtype == np.uint8:
    return frames
  return (np.clip(frames, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def upscale(frames: np.ndarray, factor: int) -> np.ndarray:
  """Nearest-neighbour upscaling of [..., H, W, C] so tiny renders are watchable."""
  if factor <= 1:
    return frames
  return np.repeat(np.repeat(frames, factor, axis=-3), factor, axis=-2)


class VideoWriter:
  """Streams frames into an H.264 mp4 with optional mono AAC ``audio``, chunk by chunk.

  ``with VideoWriter(path, fps, audio) as w: w.write(frames)`` for [T,H,W,3] chunks (float in
  [0,1] or uint8); all chunks share one size. Odd sizes are padded by one pixel (yuv420p needs
  even sizes). Frames go to a temporary file that is renamed on a clean exit and deleted on an
  exception, so an interrupted write never leaves a broken mp4 behind.
  """

  def __init__(self, path: str, fps: float = 25.0, audio: np.ndarray | None = None,
               sample_rate: int = 16000, crf: int = 18):
    self.path, self.fps, self.crf = path, fps, crf
    self.audio, self.sample_rate = audio, int(sample_rate)
    self.tmp = f"{path}.tmp.mp4"
    self.frames_written = 0
    self._container = self._stream = None

  def __enter__(self) -> "VideoWriter":
    os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
    self._container = _av().open(self.tmp, "w")
    return self

  def _open_streams(self, height: int, width: int):
    av, c = _av(), self._container
    self._stream = c.add_stream("libx264", rate=int(round(self.fps)))
    self._stream.height, self._stream.width = height, width
    self._stream.pix_fmt = "yuv420p"
    self._stream.options = {"crf": str(self.crf)}
    if self.audio is not None and len(self.audio):
      astream = c.add_stream("aac", rate=self.sample_rate)
      astream.layout = "mono"
      samples = np.clip(np.asarray(self.audio, np.float32), -1, 1)[None]
      aframe = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
      aframe.sample_rate = self.sample_rate
      # pts 0 makes the encoder's priming packets negative, so the muxer writes an edit list
      # and players (and read_audio) start at the first real sample: without it the sound
      # plays ~64 ms (1024 samples) late against the video.
      aframe.pts = 0
      aframe.time_base = fractions.Fraction(1, self.sample_rate)
      for packet in list(astream.encode(aframe)) + list(astream.encode(None)):
        c.mux(packet)

  def write(self, frames: np.ndarray) -> None:
    av = _av()
    frames = to_uint8(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
      raise ValueError(f"VideoWriter({self.path!r}): frames must be [T,H,W,3], got {frames.shape}")
    pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
    if pad_h or pad_w:
      frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    if self._stream is None:
      self._open_streams(*frames.shape[1:3])
    elif (self._stream.height, self._stream.width) != frames.shape[1:3]:
      raise ValueError(f"VideoWriter({self.path!r}): chunk of size {frames.shape[1:3]} after "
                       f"{(self._stream.height, self._stream.width)}")
    for frame in frames:
      for packet in self._stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
        self._container.mux(packet)
    self.frames_written += len(frames)

  def __exit__(self, exc_type, exc, tb):
    try:
      if exc_type is None and self._stream is not None:
        for packet in self._stream.encode(None):
          self._container.mux(packet)
    finally:
      self._container.close()
    if exc_type is None and self._stream is not None:
      os.replace(self.tmp, self.path)
    elif os.path.exists(self.tmp):
      os.remove(self.tmp)
    if exc_type is None and self._stream is None:
      raise ValueError(f"VideoWriter({self.path!r}): no frames were written")


def write_video(path: str, frames: np.ndarray, fps: float = 25.0, audio: np.ndarray | None = None,
                sample_rate: int = 16000, crf: int = 18) -> str:
  """Writes [T,H,W,3] frames (float in [0,1] or uint8) as H.264 mp4, muxing mono ``audio``
  (``VideoWriter`` in one call)."""
  with VideoWriter(path, fps, audio, sample_rate, crf) as writer:
    writer.write(frames)
  return path


def read_video(path: str, *, with_audio: bool = True, sample_rate: int = 16000) -> Video:
  """Decodes every frame as RGB uint8 and the audio as mono float32 at ``sample_rate``."""
  av = _av()
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path}: no such video file")
  try:
    with av.open(path) as container:
      vstreams = container.streams.video
      if not vstreams:
        raise ValueError(f"{path}: has no video stream")
      fps = float(vstreams[0].average_rate or 25)
      frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
  except (av.error.FFmpegError, ValueError) as e:  # corrupt / not a video
    raise ValueError(f"{path}: cannot decode video ({e}); check the file is a complete "
                     "video") from e
  audio = None
  if with_audio:
    audio = read_audio(path, sample_rate=sample_rate)
  return Video(frames=frames, fps=fps, audio=audio,
               sample_rate=sample_rate if audio is not None else None)


def read_audio(path: str, sample_rate: int = 16000) -> np.ndarray | None:
  """Mono float32 audio resampled to ``sample_rate`` (the mean of the channels); None when the
  file has no audio. (FFmpeg's own stereo-to-mono downmix scales by 1/sqrt(2) per channel, which
  would make stereo speech 3 dB louder than the same speech in mono.)"""
  av = _av()
  with av.open(path) as container:
    if not container.streams.audio:
      return None
    stream = container.streams.audio[0]
    resampler = av.AudioResampler(format="fltp", layout=stream.layout.name, rate=sample_rate)
    chunks = []
    for frame in container.decode(stream):
      for out in resampler.resample(frame):
        chunks.append(out.to_ndarray().mean(0))
    for out in resampler.resample(None):
      chunks.append(out.to_ndarray().mean(0))
  return np.concatenate(chunks).astype(np.float32) if chunks else None


def write_png(path: str, image: np.ndarray) -> str:
  """Writes an [H, W, 3] image (float in [0, 1] or uint8) as an 8-bit RGB PNG (stdlib zlib; no
  image library needed), atomically."""
  import struct  # pylint: disable=g-import-not-at-top
  import zlib  # pylint: disable=g-import-not-at-top
  rgb = np.asarray(image)
  if rgb.dtype != np.uint8:
    rgb = np.round(np.clip(rgb, 0.0, 1.0) * 255.0).astype(np.uint8)
  if rgb.ndim != 3 or rgb.shape[2] != 3:
    raise ValueError(f"write_png({path!r}): want an [H, W, 3] image, got {rgb.shape}")
  h, w = rgb.shape[:2]
  chunk = lambda kind, data: (struct.pack(">I", len(data)) + kind + data
                              + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
  rows = b"".join(b"\x00" + rgb[y].tobytes() for y in range(h))   # filter type 0 per row
  data = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
          + chunk(b"IDAT", zlib.compress(rows, 6)) + chunk(b"IEND", b""))
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = path + ".tmp"
  with open(tmp, "wb") as f:
    f.write(data)
  os.replace(tmp, path)
  return path


"""Video + audio IO with PyAV (H.264 / AAC in mp4), shared by every launcher.

PyAV is imported lazily so that the core library (training on TFDS data) does not need it; it is
the ``video`` extra of setup.cfg.
"""
from __future__ import annotations

import dataclasses
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


def write_video(path: str, frames: np.ndarray, fps: float = 25.0, audio: np.ndarray | None = None,
                sample_rate: int = 16000, crf: int = 18) -> str:
  """Writes [T,H,W,3] frames (float in [0,1] or uint8) as H.264 mp4, muxing mono ``audio``.

  Odd frame sizes are padded by one pixel (yuv420p needs even sizes). The file is written to a
  temporary name and renamed, so an interrupted write never leaves a broken mp4 behind.
  """
  av = _av()
  frames = to_uint8(frames)
  if frames.ndim != 4 or frames.shape[-1] != 3:
    raise ValueError(f"write_video({path!r}): frames must be [T,H,W,3], got {frames.shape}")
  pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
  if pad_h or pad_w:
    frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f"{path}.tmp.mp4"
  with av.open(tmp, "w") as container:
    stream = container.add_stream("libx264", rate=int(round(fps)))
    stream.height, stream.width = frames.shape[1:3]
    stream.pix_fmt = "yuv420p"
    stream.options = {"crf": str(crf)}
    astream = None
    if audio is not None and len(audio):
      astream = container.add_stream("aac", rate=int(sample_rate))
      astream.layout = "mono"
    for frame in frames:
      for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
        container.mux(packet)
    for packet in stream.encode(None):
      container.mux(packet)
    if astream is not None:
      samples = np.clip(np.asarray(audio, np.float32), -1, 1)[None]
      aframe = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
      aframe.sample_rate = int(sample_rate)
      for packet in astream.encode(aframe):
        container.mux(packet)
      for packet in astream.encode(None):
        container.mux(packet)
  os.replace(tmp, path)
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
  """Mono float32 audio resampled to ``sample_rate``; None when the file has no audio."""
  av = _av()
  with av.open(path) as container:
    if not container.streams.audio:
      return None
    resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
    chunks = []
    for frame in container.decode(audio=0):
      for out in resampler.resample(frame):
        chunks.append(out.to_ndarray().reshape(-1))
    for out in resampler.resample(None):
      chunks.append(out.to_ndarray().reshape(-1))
  return np.concatenate(chunks).astype(np.float32) if chunks else None

"""Run logs: ``metrics.jsonl``, TensorBoard events (tensorboardX, no TensorFlow), progress line.

``WORKDIR/metrics.jsonl`` holds one JSON object per line: ``{"step": 120, "split": "train",
"loss": 0.0123, ...}`` (non-finite values as the strings "nan"/"inf"). TensorBoard events go to
``WORKDIR/tensorboard`` with tags ``<split>/<name>``; images are PNG-encoded here (zlib) because
tensorboardX's own ``add_image`` needs Pillow, which the project does not depend on. Short
videos are animated PNGs (APNG) in an image summary: TensorBoard's image dashboard serves them as
PNG and browsers play them (its video support needs moviepy). In multi-host jobs only process 0
writes.

A resumed run re-does the steps after its last checkpoint; ``MetricWriter(purge_step=s)`` drops
what an earlier attempt logged at steps >= s, so the logs read as one uninterrupted run.
"""
from __future__ import annotations

import json
import math
import os
import struct
import sys
import time
import zlib
from typing import Any, Callable, Mapping, TextIO

import jax
import numpy as np

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"


def read_metrics(workdir: str) -> list[dict]:
  """The records of ``WORKDIR/metrics.jsonl`` (empty if none)."""
  path = os.path.join(workdir, METRICS_FILE)
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def _step_of(line: str) -> int | None:
  try:
    return int(json.loads(line)["step"])
  except (ValueError, KeyError, TypeError):
    return None  # e.g. a line cut short when the process was killed


def _purge_jsonl(path: str, purge_step: int) -> None:
  """Rewrites ``path`` without records at steps >= ``purge_step`` nor unreadable lines."""
  if not os.path.exists(path):
    return
  with open(path) as f:
    lines = [line for line in f if line.strip()]
  keep = [line for line in lines if (_step_of(line) is not None and _step_of(line) < purge_step)]
  if len(keep) == len(lines):
    return
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    f.writelines(keep)
  os.replace(tmp, path)


def _png_chunk(tag: bytes, data: bytes) -> bytes:
  return (struct.pack(">I", len(data)) + tag + data
          + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF))


def _png_rows(image: np.ndarray) -> bytes:
  """zlib stream of unfiltered rows of a ``[H, W, C]`` uint8 image."""
  return zlib.compress(b"".join(b"\x00" + row.tobytes() for row in image), 6)


def _png_header(h: int, w: int, c: int) -> bytes:
  return _png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, {1: 0, 3: 2, 4: 6}[c], 0, 0, 0))


def encode_png(image: np.ndarray) -> bytes:
  """``[H, W, C]`` uint8 (C = 1, 3 or 4) -> PNG bytes (8-bit, unfiltered rows, zlib)."""
  image = np.ascontiguousarray(image, np.uint8)
  h, w, c = image.shape
  return (b"\x89PNG\r\n\x1a\n" + _png_header(h, w, c)
          + _png_chunk(b"IDAT", _png_rows(image)) + _png_chunk(b"IEND", b""))


def encode_apng(frames: np.ndarray, fps: float = 8.0) -> bytes:
  """``[T, H, W, C]`` uint8 -> animated PNG bytes, looping, ``fps`` frames per second. A viewer
  without APNG support shows the first frame."""
  frames = np.ascontiguousarray(frames, np.uint8)
  t, h, w, c = frames.shape
  delay = max(1, int(round(1000 / fps)))  # milliseconds (delay_num / delay_den=1000)
  out = [b"\x89PNG\r\n\x1a\n", _png_header(h, w, c),
         _png_chunk(b"acTL", struct.pack(">II", t, 0))]
  sequence = 0
  for i, frame in enumerate(frames):
    out.append(_png_chunk(b"fcTL", struct.pack(">IIIIIHHBB", sequence, w, h, 0, 0, delay, 1000,
                                               0, 0)))
    sequence += 1
    data = _png_rows(frame)
    if i == 0:
      out.append(_png_chunk(b"IDAT", data))
    else:
      out.append(_png_chunk(b"fdAT", struct.pack(">I", sequence) + data))
      sequence += 1
  out.append(_png_chunk(b"IEND", b""))
  return b"".join(out)


def image_summary(tag: str, image: np.ndarray, fps: float = 8.0):
  """A TensorBoard ``Summary`` holding one ``[H, W, C]`` float image in [0, 1] (clipped), or a
  ``[T, H, W, C]`` video as an animated PNG."""
  from tensorboardX.proto import summary_pb2  # pylint: disable=g-import-not-at-top
  image = np.asarray(image, np.float32)
  if image.ndim not in (3, 4) or image.shape[-1] not in (1, 3, 4):
    raise ValueError(f"image {tag!r} has shape {image.shape}; expected [H, W, 1|3|4] or a video "
                     "[T, H, W, 1|3|4]")
  pixels = np.round(np.clip(np.nan_to_num(image), 0.0, 1.0) * 255).astype(np.uint8)
  h, w, c = pixels.shape[-3:]
  encoded = encode_png(pixels) if pixels.ndim == 3 else encode_apng(pixels, fps)
  return summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, image=(
      summary_pb2.Summary.Image(height=h, width=w, colorspace=c,
                                encoded_image_string=encoded)))])


def _to_float(value: Any) -> float:
  return float(np.asarray(value).reshape(()))


class MetricWriter:
  """Scalars to JSONL + TensorBoard, images to TensorBoard; a no-op off process 0."""

  def __init__(self, workdir: str, *, purge_step: int | None = None, enabled: bool | None = None):
    self.workdir = workdir
    self.enabled = jax.process_index() == 0 if enabled is None else enabled
    self._jsonl: TextIO | None = None
    self._tb = None
    if not self.enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, METRICS_FILE)
    if purge_step is not None:
      _purge_jsonl(path, purge_step)
    self._jsonl = open(path, "a", buffering=1)  # line-buffered: records survive a kill
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
    self._tb = SummaryWriter(logdir=os.path.join(workdir, TENSORBOARD_DIR), purge_step=purge_step,
                             flush_secs=30)

  def write_scalars(self, step: int, scalars: Mapping[str, Any], split: str = "train") -> None:
    """One JSONL record and one TensorBoard scalar per name."""
    if not self.enabled:
      return
    values = {name: _to_float(v) for name, v in scalars.items()}
    record = {"step": int(step), "split": split}
    record.update({k: (v if math.isfinite(v) else str(v)) for k, v in values.items()})
    self._jsonl.write(json.dumps(record) + "\n")
    for name, value in values.items():
      self._tb.add_scalar(f"{split}/{name}", value, int(step))

  def write_images(self, step: int, images: Mapping[str, Any], split: str = "eval") -> None:
    """``name -> [H, W, 3]`` float images in [0, 1] (clipped) as TensorBoard images, and
    ``name -> [T, H, W, 3]`` videos as animated PNGs (module docstring)."""
    if not self.enabled:
      return
    for name, image in images.items():
      # SummaryWriter's event file writer (its add_image would need Pillow).
      self._tb._get_file_writer().add_summary(  # pylint: disable=protected-access
          image_summary(f"{split}/{name}", image), int(step))

  def flush(self) -> None:
    if self.enabled and self._jsonl is not None:
      self._jsonl.flush()
      self._tb.flush()

  def close(self) -> None:
    if self.enabled and self._jsonl is not None:
      self._jsonl.close()
      self._tb.close()
      self._jsonl = None

  def __enter__(self) -> "MetricWriter":
    return self

  def __exit__(self, *exc) -> None:
    self.close()


# ----------------------------------------------------------------------------------------------
# Progress line.


def format_duration(seconds: float) -> str:
  """``42s``, ``6m31s``, ``2h05m``."""
  seconds = max(0, int(round(seconds)))
  if seconds < 60:
    return f"{seconds}s"
  if seconds < 3600:
    return f"{seconds // 60}m{seconds % 60:02d}s"
  return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def format_value(name: str, value: float) -> str:
  if "psnr" in name:
    return f"{value:.1f}"
  return f"{value:.4g}"


def format_progress(step: int, total_steps: int, metrics: Mapping[str, float],
                    steps_per_sec: float | None, keys=("loss", "psnr")) -> str:
  """``step 120/2000  loss 0.01234  psnr 21.3  4.8 steps/s  ETA 6m31s``.

  Shows the ``keys`` present in ``metrics``; rate and ETA only when ``steps_per_sec`` is known.
  """
  parts = [f"step {step}/{total_steps}"]
  parts += [f"{k} {format_value(k, metrics[k])}" for k in keys if k in metrics]
  if metrics.get("skipped_nonfinite"):
    parts.append(f"skipped {int(metrics['skipped_nonfinite'])} non-finite")
  if steps_per_sec is not None and steps_per_sec > 0:
    rate = f"{steps_per_sec:.1f}" if steps_per_sec >= 1 else f"{steps_per_sec:.3f}"
    parts.append(f"{rate} steps/s")
    parts.append(f"ETA {format_duration((total_steps - step) / steps_per_sec)}")
  return "  ".join(parts)


class ProgressLine:
  """Prints ``format_progress`` lines (stdout, flushed) on process 0.

  Rates are measured between consecutive ``update`` calls; ``start(step)`` marks the beginning of
  the first interval and is called after the first (compiling) step has finished, so compile
  time never enters the rate.
  """

  def __init__(self, total_steps: int, *, keys=("loss", "psnr"), stream: TextIO | None = None,
               clock: Callable[[], float] = time.perf_counter, enabled: bool | None = None):
    self.total_steps = int(total_steps)
    self.keys = tuple(keys)
    self.stream = stream
    self.clock = clock
    self.enabled = jax.process_index() == 0 if enabled is None else enabled
    self._mark: tuple[int, float] | None = None

  def start(self, step: int) -> None:
    self._mark = (int(step), self.clock())

  def update(self, step: int, metrics: Mapping[str, float]) -> str:
    """Prints and returns the line for ``step``; restarts the rate interval."""
    now = self.clock()
    rate = None
    if self._mark is not None and step > self._mark[0] and now > self._mark[1]:
      rate = (step - self._mark[0]) / (now - self._mark[1])
    if self._mark is not None:
      self._mark = (int(step), now)
    line = format_progress(step, self.total_steps, metrics, rate, self.keys)
    if self.enabled:
      stream = self.stream or sys.stdout
      print(line, file=stream, flush=True)
    return line

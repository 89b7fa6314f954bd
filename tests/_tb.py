"""Reading what a run wrote for TensorBoard (event files, PNG images, APNG videos) in tests."""
import glob
import os
import struct
import zlib

import numpy as np


def read_events(logdir):
  from tensorboardX.proto import event_pb2
  events = []
  for path in sorted(glob.glob(os.path.join(logdir, "events.out.tfevents.*"))):
    data = open(path, "rb").read()
    pos = 0
    while pos < len(data):
      (length,) = struct.unpack("<Q", data[pos:pos + 8])
      events.append(event_pb2.Event.FromString(data[pos + 12:pos + 12 + length]))
      pos += 12 + length + 4
  return events


def decode_png(png: bytes) -> np.ndarray:
  assert png[:8] == b"\x89PNG\r\n\x1a\n"
  pos, chunks = 8, {}
  while pos < len(png):
    (length,) = struct.unpack(">I", png[pos:pos + 4])
    tag, body = png[pos + 4:pos + 8], png[pos + 8:pos + 8 + length]
    assert struct.unpack(">I", png[pos + 8 + length:pos + 12 + length])[0] == zlib.crc32(tag + body)
    chunks[tag] = chunks.get(tag, b"") + body
    pos += 12 + length
  w, h, depth, color = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
  assert depth == 8 and color == 2
  rows = np.frombuffer(zlib.decompress(chunks[b"IDAT"]), np.uint8).reshape(h, 1 + w * 3)
  assert not rows[:, 0].any()
  return rows[:, 1:].reshape(h, w, 3)


def decode_apng(png: bytes) -> tuple[np.ndarray, int]:
  """(frames [T, H, W, 3], delay in ms) of an RGB APNG whose frames all cover the image."""
  assert png[:8] == b"\x89PNG\r\n\x1a\n"
  pos, chunks = 8, []
  while pos < len(png):
    (length,) = struct.unpack(">I", png[pos:pos + 4])
    tag, body = png[pos + 4:pos + 8], png[pos + 8:pos + 8 + length]
    assert struct.unpack(">I", png[pos + 8 + length:pos + 12 + length])[0] == zlib.crc32(tag + body)
    chunks.append((tag, body))
    pos += 12 + length
  assert [t for t, _ in chunks[:2]] == [b"IHDR", b"acTL"] and chunks[-1][0] == b"IEND"
  w, h = struct.unpack(">II", chunks[0][1][:8])
  (count, loops) = struct.unpack(">II", chunks[1][1])
  frames, sequence, delays = [], 0, set()
  for tag, body in chunks[2:-1]:
    if tag == b"fcTL":
      seq, fw, fh, x, y, num, den = struct.unpack(">IIIIIHH", body[:24])
      assert (seq, fw, fh, x, y) == (sequence, w, h, 0, 0)
      delays.add(1000 * num // den)
      sequence += 1
    else:
      if tag == b"fdAT":
        assert struct.unpack(">I", body[:4])[0] == sequence
        body, sequence = body[4:], sequence + 1
      rows = np.frombuffer(zlib.decompress(body), np.uint8).reshape(h, 1 + w * 3)
      frames.append(rows[:, 1:].reshape(h, w, 3))
  assert len(frames) == count and loops == 0 and len(delays) == 1
  return np.stack(frames), delays.pop()


def media(workdir) -> dict[str, tuple[int, np.ndarray]]:
  """``{tag: (step, frames [T, H, W, 3])}`` of the last image/video summary of each tag in a
  run's TensorBoard events (T = 1 for an image)."""
  out = {}
  for event in read_events(os.path.join(workdir, "tensorboard")):
    for value in event.summary.value:
      if value.HasField("image"):
        png = value.image.encoded_image_string
        frames = decode_apng(png)[0] if b"acTL" in png[:64] else decode_png(png)[None]
        out[value.tag] = (int(event.step), frames)
  return out

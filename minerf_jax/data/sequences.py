"""Speech sequences for audio-to-expression models: batch kind ``'sequences'``.

A ``Sequence`` is one contiguous clip of one identity: its speech (16 kHz mono), per-frame
expression targets and blink signal, at the dataset's fps. Audio features are computed here from
the speech with the settings of ``config.audio`` (``audio.features.FeatureSettings``), so the
feature window is a config choice rather than a property of the dataset.

Sources (``config.data.name``):

* ``synthetic_talking_heads``: the generator itself (``synthetic.sample_sequence``), which needs
  no rendering: ``data.speech_frames`` frames per identity (prefix-consistent with the MI-NeRF
  dataset of the same seed), the first ``1 - test_fraction`` for training, the rest held out
  ('test'); plus ``data.heldout_speakers`` sequences of new speech (generator index
  ``HELDOUT_SPEAKER_BASE + k``, never trained on) as 'speech'. The blink signal is the
  expression's blink_left/right components.
* ``talking_faces``: the prepared real dataset; each video's frames are split into runs of
  consecutive source frames (a dropped face frame or a shot cut ends a run); the blink signal is
  the dataset's ``blink``. Videos without an audio track are left out.

Batches (``train_batch(step)``, a pure function of the step): ``frames_per_batch`` windows, each
``unroll`` consecutive target frames of one sequence with ``context`` frames of audio on either
side (edge-clamped within the sequence): ``features`` [B, unroll + 2 context, W, M],
``expression`` [B, unroll, E], ``blink`` [B, unroll, 2], ``identity`` [B].
"""
from __future__ import annotations

import dataclasses
import functools

import ml_collections
import numpy as np

from minerf_jax.audio import features as features_lib
from minerf_jax.data import synthetic

HELDOUT_SPEAKER_BASE = 1000
SYNTHETIC_BLINK = synthetic.BLINK_COMPONENTS


@dataclasses.dataclass(frozen=True)
class Sequence:
  audio: np.ndarray        # [S] float32, 16 kHz mono; frame i owns samples [i, i+1) * S/T
  expression: np.ndarray   # [T, E] float32
  blink: np.ndarray        # [T, 2] float32 in [0, 1]
  identity: int
  fps: float
  name: str = ""
  frames: np.ndarray | None = None   # [T] the dataset's global frame indices (real data)

  def __len__(self) -> int:
    return int(self.expression.shape[0])


def synthetic_sequences(data: ml_collections.ConfigDict, split: str) -> list[Sequence]:
  """Generator sequences: split 'train' | 'test' | 'speech' (held-out speakers)."""
  fps, sr = float(data.get("fps", 25)), features_lib.SAMPLE_RATE
  total = int(data.speech_frames)
  cut = int(round(total * (1.0 - float(data.get("test_fraction", 0.1)))))
  spf = int(round(sr / fps))
  out = []
  if split == "speech":
    for k in range(int(data.heldout_speakers)):
      seq = synthetic.sample_sequence(data.seed, HELDOUT_SPEAKER_BASE + k, total - cut, fps, sr)
      e = seq["expression"]
      out.append(Sequence(seq["audio"], e, e[:, SYNTHETIC_BLINK], k % int(data.num_identities),
                          fps, f"speaker{HELDOUT_SPEAKER_BASE + k}"))
    return out
  for identity in range(int(data.num_identities)):
    seq = synthetic.sample_sequence(data.seed, identity, total, fps, sr)
    lo, hi = (0, cut) if split == "train" else (cut, total)
    e = seq["expression"][lo:hi]
    out.append(Sequence(seq["audio"][lo * spf:hi * spf], e, e[:, SYNTHETIC_BLINK], identity, fps,
                        f"identity{identity}:{split}"))
  return out


def real_sequences(data: ml_collections.ConfigDict, split: str, min_frames: int = 8
                   ) -> list[Sequence]:
  """Runs of consecutive frames of the talking_faces dataset (see module docstring)."""
  from minerf_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  builder = pipeline.dataset_builder(data)
  fps = float(builder.info.metadata["fps"])
  keys = ("frame", "identity", "video", "clip", "source_frame", "audio", "expression", "blink",
          "has_audio")
  rows = []
  for example in pipeline.records(builder, split):  # decodes each example once
    rows.append({k: np.asarray(example[k]) for k in keys})
  rows.sort(key=lambda r: int(r["frame"]))
  wanted = set(range(int(data.num_identities)))
  runs: list[list[dict]] = []
  for r in rows:
    if int(r["identity"]) not in wanted or not int(r["has_audio"]):
      continue   # a video without sound teaches nothing about speech
    last = runs[-1][-1] if runs else None
    if (last is None or int(last["video"]) != int(r["video"]) or int(last["clip"]) != int(r["clip"])
        or int(r["source_frame"]) != int(last["source_frame"]) + 1):
      runs.append([])
    runs[-1].append(r)
  out = []
  for run in runs:
    if len(run) < min_frames:
      continue
    stack = lambda k, run=run: np.stack([r[k] for r in run]).astype(np.float32)
    out.append(Sequence(np.concatenate([r["audio"] for r in run]).astype(np.float32),
                        stack("expression"), stack("blink"), int(run[0]["identity"]), fps,
                        f"video{int(run[0]['video'])}:frame{int(run[0]['source_frame'])}",
                        np.asarray([int(r["frame"]) for r in run])))
  return out


def load_sequences(data: ml_collections.ConfigDict, split: str) -> list[Sequence]:
  if data.name == "synthetic_talking_heads":
    return synthetic_sequences(data, split)
  if data.name == "talking_faces":
    return real_sequences(data, split)
  raise ValueError(f"config.data.name={data.name!r} has no speech sequences; choose "
                   "'synthetic_talking_heads' or 'talking_faces'")


def sequence_features(seq: Sequence, settings: features_lib.FeatureSettings) -> np.ndarray:
  """[T, W, M] audio features of every frame of ``seq``."""
  return features_lib.features(seq.audio, seq.fps, len(seq), settings)


def window_index(length: int, start: np.ndarray, unroll: int, context: int) -> np.ndarray:
  """[B, unroll + 2 context] frame indices around targets start..start+unroll-1, clamped."""
  offsets = np.arange(-context, unroll + context)
  return np.clip(np.asarray(start)[:, None] + offsets, 0, length - 1)


class SequenceData:
  """The Data object of audio-to-expression training (see train/loop.py and the module doc)."""

  def __init__(self, config: ml_collections.ConfigDict, *, process_index: int | None = None,
               process_count: int | None = None):
    from minerf_jax.data import pipeline  # pylint: disable=g-import-not-at-top
    self.config = config
    dc, mc = config.data, config.model
    self.process_index, self.process_count = pipeline.this_process(
        process_index, process_count, dc.frames_per_batch, "data.frames_per_batch")
    self.global_batch_size = int(dc.frames_per_batch)
    self.local_batch = self.global_batch_size // self.process_count
    self.unroll, self.context = int(mc.unroll), int(mc.context)
    self.settings = features_lib.FeatureSettings.from_config(config.get("audio"))
    self.train_sequences = load_sequences(dc, "train")
    if not self.train_sequences:
      raise ValueError(f"config.data ({dc.name}) has no training sequences")
    self.fps = self.train_sequences[0].fps
    self._features = [sequence_features(s, self.settings) for s in self.train_sequences]
    lengths = np.asarray([len(s) for s in self.train_sequences])
    # Windows start anywhere their targets fit inside the sequence; sequences are drawn in
    # proportion to their number of windows, so every frame is equally likely.
    self._starts = np.maximum(lengths - self.unroll + 1, 1)
    self._p = self._starts / self._starts.sum()

  def _window(self, s: int, start: int) -> dict[str, np.ndarray]:
    seq, feats = self.train_sequences[s], self._features[s]
    idx = window_index(len(seq), np.asarray([start]), self.unroll, self.context)[0]
    tgt = np.clip(start + np.arange(self.unroll), 0, len(seq) - 1)
    return {"features": feats[idx], "expression": seq.expression[tgt], "blink": seq.blink[tgt],
            "identity": np.int32(seq.identity)}

  def train_batch(self, step: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng((int(self.config.seed), int(step), self.process_index))
    which = rng.choice(len(self.train_sequences), size=self.local_batch, p=self._p)
    starts = (rng.random(self.local_batch) * self._starts[which]).astype(int)
    items = [self._window(int(s), int(t)) for s, t in zip(which, starts)]
    return {k: np.stack([it[k] for it in items]) for k in items[0]}

  def example_batch(self) -> dict[str, np.ndarray]:
    return self.train_batch(0)

  @functools.cached_property
  def train_targets(self) -> tuple[np.ndarray, np.ndarray]:
    """(expression [N, E], blink [N, 2]) of every train frame (for data-driven statistics)."""
    return (np.concatenate([s.expression for s in self.train_sequences]),
            np.concatenate([s.blink for s in self.train_sequences]))

  @functools.cached_property
  def eval_data(self) -> dict[str, list[Sequence]]:
    """Held-out sequences by name: 'test' (the held-out end of each identity's speech) and, for
    the synthetic data, 'speech' (new speakers, never trained on)."""
    sets = {"test": load_sequences(self.config.data, "test")}
    if self.config.data.name == "synthetic_talking_heads" and int(
        self.config.data.get("heldout_speakers", 0)):
      sets["speech"] = load_sequences(self.config.data, "speech")
    return {k: v for k, v in sets.items() if v}


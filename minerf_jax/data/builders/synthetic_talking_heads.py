"""TFDS builder ``synthetic_talking_heads``: the embedded, download-free default dataset.

One example per frame of ``num_identities`` procedurally rendered talking heads (see
``minerf_jax/data/synthetic.py``), array_record files (no TensorFlow needed), read back with
``tfds.data_source``. Splits are by time per identity: the first ``1 - test_fraction`` of every
identity's frames are 'train', the rest 'test'. The config name encodes every setting, so
different settings never share a directory; TFDS writes into a temporary directory and renames it
when done, so an interrupted build leaves nothing half-written behind.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from minerf_jax.data import audio as audio_lib
from minerf_jax.data import synthetic

GENERATOR_VERSION = "2"
SAMPLE_RATE = 16000
AUDIO_WINDOW, N_MELS = 16, 40


@dataclasses.dataclass
class SyntheticTalkingHeadsConfig(tfds.core.BuilderConfig):
  resolution: int = 64
  num_identities: int = 4
  frames_per_identity: int = 60
  fps: int = 25
  seed: int = 0
  test_fraction: float = 0.2

  @classmethod
  def make(cls, **kwargs) -> "SyntheticTalkingHeadsConfig":
    c = cls(name="tmp", **kwargs)
    if not 16 <= c.resolution <= 512:
      raise ValueError(f"synthetic_talking_heads: resolution={c.resolution} must be in [16, 512]")
    name = (f"r{c.resolution}_i{c.num_identities}_f{c.frames_per_identity}_fps{c.fps}"
            f"_s{c.seed}_t{int(round(100 * c.test_fraction))}")
    return cls(name=name, **kwargs)


def split_point(frames_per_identity: int, test_fraction: float) -> int:
  """Index of the first test frame of each identity."""
  return int(round(frames_per_identity * (1.0 - test_fraction)))


class SyntheticTalkingHeads(tfds.core.GeneratorBasedBuilder):
  """Procedural multi-identity talking heads with exact ground truth."""
  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES = {"1.1.0": "Tight head box.", "1.0.0": "Initial release."}
  BUILDER_CONFIGS = [SyntheticTalkingHeadsConfig.make()]
  name = "synthetic_talking_heads"

  def __init__(self, *, file_format="array_record", **kwargs):
    super().__init__(file_format=file_format, **kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    c = self.builder_config
    h = w = c.resolution
    spf = SAMPLE_RATE // c.fps
    t = tfds.features.Tensor
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict({
            "rgb": t(shape=(h, w, 3), dtype=np.uint8),
            "depth": t(shape=(h, w), dtype=np.float32),
            "masks": t(shape=(h, w, 4), dtype=np.uint8),
            "segmentation": t(shape=(h, w), dtype=np.uint8),
            "landmarks": t(shape=(len(synthetic.LANDMARK_NAMES), 2), dtype=np.float32),
            "rotation": t(shape=(3, 3), dtype=np.float32),
            "translation": t(shape=(3,), dtype=np.float32),
            "intrinsics": t(shape=(3, 3), dtype=np.float32),
            "expression": t(shape=(len(synthetic.EXPRESSION_NAMES),), dtype=np.float32),
            "identity": t(shape=(), dtype=np.int64),
            "frame": t(shape=(), dtype=np.int64),
            "time": t(shape=(), dtype=np.float32),
            "audio": t(shape=(spf,), dtype=np.float32),
            "audio_features": t(shape=(AUDIO_WINDOW, N_MELS), dtype=np.float32),
        }),
        metadata=tfds.core.MetadataDict(
            seed=c.seed, resolution=c.resolution, num_identities=c.num_identities,
            frames_per_identity=c.frames_per_identity, fps=c.fps, sample_rate=SAMPLE_RATE,
            test_fraction=c.test_fraction,
            head_box=[list(v) for v in synthetic.HEAD_BOX],
            expression_names=list(synthetic.EXPRESSION_NAMES),
            landmark_names=list(synthetic.LANDMARK_NAMES),
            generator_version=GENERATOR_VERSION),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download
    return {"train": self._generate_examples("train"), "test": self._generate_examples("test")}

  def _generate_examples(self, split: str):
    c = self.builder_config
    cut = split_point(c.frames_per_identity, c.test_fraction)
    frames = range(cut) if split == "train" else range(cut, c.frames_per_identity)
    for identity in range(c.num_identities):
      for key, example in identity_examples(c, identity, frames):
        yield key, example


def identity_examples(c: SyntheticTalkingHeadsConfig, identity: int, frames):
  """(key, example) for the given frame indices of one identity."""
  ident = synthetic.make_identity(c.seed, identity)
  seq = synthetic.sample_sequence(c.seed, identity, c.frames_per_identity, c.fps, SAMPLE_RATE)
  spf = SAMPLE_RATE // c.fps
  feats = audio_lib.frame_features(seq["audio"], SAMPLE_RATE, c.fps, c.frames_per_identity,
                                   AUDIO_WINDOW, N_MELS)
  k = synthetic.camera_intrinsics(c.resolution)
  for f in frames:
    rot, trans = synthetic.pose_matrix(*seq["yaw_pitch_roll"][f], seq["translation"][f])
    out = synthetic.render(ident, seq["expression"][f], rot, trans, c.resolution)
    global_frame = identity * c.frames_per_identity + f
    yield f"{global_frame:08d}", {
        "rgb": np.round(out["rgb"] * 255).astype(np.uint8),
        "depth": out["depth"],
        "masks": out["masks"].astype(np.uint8),
        "segmentation": out["segmentation"],
        "landmarks": out["landmarks"],
        "rotation": rot,
        "translation": trans,
        "intrinsics": k,
        "expression": seq["expression"][f],
        "identity": identity,
        "frame": global_frame,
        "time": np.float32(f / c.fps),
        "audio": seq["audio"][f * spf:(f + 1) * spf],
        "audio_features": feats[f],
    }


def build(data_dir: str, **config_kwargs) -> SyntheticTalkingHeads:
  """Builds the dataset for these settings (or reuses a finished build) and returns the builder."""
  config = SyntheticTalkingHeadsConfig.make(**config_kwargs)
  predefined = {c.name for c in SyntheticTalkingHeads.BUILDER_CONFIGS}
  builder = SyntheticTalkingHeads(data_dir=data_dir,  # TFDS wants predefined configs by name
                                  config=config.name if config.name in predefined else config)
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(verify_ssl=False))
  return builder


def ground_truth(metadata, identity: int, expression, rotation, translation) -> dict:
  """Exact render of any identity with any expression and pose at the dataset's settings."""
  meta = dict(metadata)
  return synthetic.render(synthetic.make_identity(int(meta["seed"]), identity), expression,
                          rotation, translation, int(meta["resolution"]))

"""TFDS builder ``synthetic_talking_heads``: the embedded, download-free default dataset.

One example per video frame of ``num_identities`` procedurally rendered talking heads
(``minerf_jax/data/synthetic.py``), stored as array_record (no TensorFlow needed) and read back
with ``tfds.data_source`` / ``builder.as_data_source``. Design choices:

* Every setting is a ``SyntheticTalkingHeadsConfig`` field and the config name is derived from
  all of them plus the generator version (``r64_i4_f60_fps25_s0_t20_g3``), so different
  settings, or a changed generator, never share a directory and a stale build is never reused.
* Splits are by time per identity: the first ``1 - test_fraction`` of each identity's frames are
  'train', the rest 'test', so held-out frames are unseen expressions/poses of known people.
* Records are stored in generation order (identity, then time; shuffling disabled): index i of a
  split is a stable frame, and readers shuffle themselves.
* TFDS generates into a temporary directory and renames it when complete, so the build is
  atomic; ``build`` reuses a finished build.
* ``ground_truth`` re-renders any identity with any expression and pose at a build's settings:
  exact targets for expression transfer and novel views.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
import tensorflow_datasets as tfds

from minerf_jax.audio import features as audio_lib
from minerf_jax.data import synthetic

GENERATOR_VERSION = synthetic.GENERATOR_VERSION
SAMPLE_RATE = 16000
AUDIO_WINDOW, N_MELS = 16, 40
MAX_RESOLUTION = 512


@dataclasses.dataclass(eq=False)
class SyntheticTalkingHeadsConfig(tfds.core.BuilderConfig):
  """Generator settings; ``name`` is derived from them (passing another name is an error)."""
  name: str = ""
  resolution: int = 64
  num_identities: int = 4
  frames_per_identity: int = 60
  fps: int = 25
  seed: int = 0
  test_fraction: float = 0.2

  def __post_init__(self):
    if not 8 <= self.resolution <= MAX_RESOLUTION:
      raise ValueError(f"synthetic_talking_heads: resolution={self.resolution} must be in "
                       f"[8, {MAX_RESOLUTION}]")
    if self.num_identities < 1:
      raise ValueError(f"synthetic_talking_heads: num_identities={self.num_identities} < 1")
    if self.fps < 1 or SAMPLE_RATE % self.fps:
      raise ValueError(f"synthetic_talking_heads: fps={self.fps} must divide {SAMPLE_RATE}")
    cut = split_point(self.frames_per_identity, self.test_fraction)
    if not 0 < cut < self.frames_per_identity:
      raise ValueError(
          f"synthetic_talking_heads: frames_per_identity={self.frames_per_identity} with "
          f"test_fraction={self.test_fraction} leaves a split empty")
    derived = config_name(self.resolution, self.num_identities, self.frames_per_identity,
                          self.fps, self.seed, self.test_fraction)
    if self.name and self.name != derived:
      raise ValueError(f"synthetic_talking_heads: config name {self.name!r} does not match its "
                       f"settings ({derived!r}); leave name empty")
    self.name = derived
    self.description = (f"{self.num_identities} identities x {self.frames_per_identity} frames "
                        f"at {self.resolution}x{self.resolution}, {self.fps} fps, seed {self.seed}")


def config_name(resolution: int, num_identities: int, frames_per_identity: int, fps: int,
                seed: int, test_fraction: float) -> str:
  return (f"r{resolution}_i{num_identities}_f{frames_per_identity}_fps{fps}_s{seed}"
          f"_t{int(round(100 * test_fraction))}_g{GENERATOR_VERSION}")


def split_point(frames_per_identity: int, test_fraction: float) -> int:
  """Index of the first test frame of each identity."""
  return int(round(frames_per_identity * (1.0 - test_fraction)))


def split_frames(config: SyntheticTalkingHeadsConfig, split: str) -> range:
  """Per-identity frame indices of a split ('train': the first ones, 'test': the last)."""
  cut = split_point(config.frames_per_identity, config.test_fraction)
  if split == "train":
    return range(cut)
  if split == "test":
    return range(cut, config.frames_per_identity)
  raise ValueError(f"unknown split {split!r}; use 'train' or 'test'")


class SyntheticTalkingHeads(tfds.core.GeneratorBasedBuilder):
  """Procedural multi-identity talking heads with exact ground truth."""
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [SyntheticTalkingHeadsConfig()]
  name = "synthetic_talking_heads"

  def __init__(self, *, file_format: str = "array_record", **kwargs):
    super().__init__(file_format=file_format, **kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    c = self.builder_config
    h = w = c.resolution
    t = tfds.features.Tensor
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict({
            "rgb": t(shape=(h, w, 3), dtype=np.uint8),
            "depth": t(shape=(h, w), dtype=np.float32),
            "masks": t(shape=(h, w, len(synthetic.MASK_NAMES)), dtype=np.uint8),
            "segmentation": t(shape=(h, w), dtype=np.uint8),
            "landmarks": t(shape=(len(synthetic.LANDMARK_NAMES), 2), dtype=np.float32),
            "rotation": t(shape=(3, 3), dtype=np.float32),
            "translation": t(shape=(3,), dtype=np.float32),
            "intrinsics": t(shape=(3, 3), dtype=np.float32),
            "expression": t(shape=(len(synthetic.EXPRESSION_NAMES),), dtype=np.float32),
            "identity": t(shape=(), dtype=np.int64),
            "frame": t(shape=(), dtype=np.int64),
            "time": t(shape=(), dtype=np.float32),
            "audio": t(shape=(SAMPLE_RATE // c.fps,), dtype=np.float32),
            "audio_features": t(shape=(AUDIO_WINDOW, N_MELS), dtype=np.float32),
        }),
        metadata=tfds.core.MetadataDict(metadata(c)),
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download
    return {split: self._generate_examples(split) for split in ("train", "test")}

  def _generate_examples(self, split: str) -> Iterator[tuple[str, dict[str, Any]]]:
    c = self.builder_config
    for identity in range(c.num_identities):
      yield from identity_examples(c, identity, split_frames(c, split))


def metadata(c: SyntheticTalkingHeadsConfig) -> dict[str, Any]:
  """The dataset's metadata: generator settings and the scene constants models rely on."""
  return dict(
      seed=c.seed, resolution=c.resolution, num_identities=c.num_identities,
      frames_per_identity=c.frames_per_identity, fps=c.fps, sample_rate=SAMPLE_RATE,
      test_fraction=c.test_fraction, generator_version=GENERATOR_VERSION,
      head_box=[list(v) for v in synthetic.HEAD_BOX],
      focal_scale=synthetic.FOCAL_SCALE, head_distance=synthetic.HEAD_DISTANCE,
      wall_depth=synthetic.WALL_DEPTH,
      expression_names=list(synthetic.EXPRESSION_NAMES),
      landmark_names=list(synthetic.LANDMARK_NAMES),
      mask_names=list(synthetic.MASK_NAMES),
      segmentation_names=list(synthetic.SEGMENTATION_NAMES),
      audio_window=AUDIO_WINDOW, n_mels=N_MELS)


def identity_examples(c: SyntheticTalkingHeadsConfig, identity: int, frames: Iterable[int]
                      ) -> Iterator[tuple[str, dict[str, Any]]]:
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
    yield f"{global_frame:09d}", {
        "rgb": to_uint8(out["rgb"]),
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


def to_uint8(rgb: np.ndarray) -> np.ndarray:
  """The dataset's rgb quantisation of a float image in [0, 1]."""
  return np.round(np.clip(rgb, 0.0, 1.0) * 255.0).astype(np.uint8)


def build(data_dir: str, **config_kwargs) -> SyntheticTalkingHeads:
  """Builds the dataset for these settings (or reuses a finished build); returns the builder."""
  config = SyntheticTalkingHeadsConfig(**config_kwargs)
  predefined = {c.name for c in SyntheticTalkingHeads.BUILDER_CONFIGS}
  builder = SyntheticTalkingHeads(data_dir=data_dir,  # TFDS wants predefined configs by name
                                  config=config.name if config.name in predefined else config)
  builder.download_and_prepare()
  return builder


def _settings(source: Any) -> tuple[int, int]:
  """(seed, resolution) of a config, a builder, or a build's metadata."""
  if isinstance(source, SyntheticTalkingHeadsConfig):
    return source.seed, source.resolution
  meta = dict(source.info.metadata if hasattr(source, "info") else source)
  version = str(meta.get("generator_version"))
  if version != GENERATOR_VERSION:
    raise ValueError(f"synthetic_talking_heads: data built with generator version {version}, "
                     f"this code renders version {GENERATOR_VERSION}; rebuild the dataset")
  return int(meta["seed"]), int(meta["resolution"])


def ground_truth(metadata_or_config: Mapping[str, Any] | SyntheticTalkingHeadsConfig,
                 identity_index: int, expression: Sequence[float], rotation: np.ndarray,
                 translation: np.ndarray) -> dict[str, np.ndarray]:
  """Exact render (synthetic.render's dict) of any identity/expression/pose at a build's settings.

  ``metadata_or_config``: ``builder.info.metadata``, a SyntheticTalkingHeadsConfig, or a builder.
  """
  seed, resolution = _settings(metadata_or_config)
  return synthetic.render(synthetic.make_identity(seed, int(identity_index)), expression,
                          rotation, translation, resolution)

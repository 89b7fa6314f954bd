"""TFDS builder ``talking_faces``: a folder of real talking-face videos as a training dataset.

Built by ``python -m launch.prepare_data --videos=DIR --out=DATA_DIR`` (array_record, no
TensorFlow). One example per kept video frame; see ``preprocess.py`` for what happens to each
video. Identities: one per video file, or one per sub-folder when DIR has sub-folders (all videos
inside a sub-folder are the same person). Identity labels are assigned in sorted name order over
the identities that kept at least one video.

Dataset-level steps (need every video, done here rather than per video):
  * split by time per video: the last ``test_fraction`` of each video's kept frames are 'test';
  * expression vector (``expression_dim`` values, default 32): the pose-normalised 3-D landmarks
    (head coordinates) minus the identity's mean over its train frames (removes face shape, keeps
    expression), flattened and projected on the principal components of all train frames of all
    identities; divided by the standard deviation of the first component, so the dominant
    expression mode has unit scale and the others keep their relative size. The basis, the scale
    and each identity's mean are in the metadata, so new frames can be encoded the same way;
  * blink signal per eye: 1 - openness / (the identity's 90th-percentile openness), in [0, 1].

Config names carry every preprocessing setting plus the preprocessing version
(``r256_fps25_p1``). The metadata records the sources (file, identity, fps, frames, crop boxes),
the input fingerprint, shot cuts and skipped videos. TFDS writes into a temporary directory and
renames it when done, so the build is atomic; ``prepare`` rebuilds only when the inputs changed,
and per-video results are cached, so a re-run after a kill redoes at most one video.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from typing import Any, Callable, Iterator

import numpy as np
import tensorflow_datasets as tfds

from minerf_jax.data import face
from minerf_jax.data import preprocess

VIDEO_EXTENSIONS = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v")
EXPRESSION_DIM = 32


@dataclasses.dataclass(eq=False)
class TalkingFacesConfig(tfds.core.BuilderConfig):
  """Preprocessing settings; ``name`` is derived from them."""
  name: str = ""
  resolution: int = 256
  fps: float = 25.0
  focal_scale: float = face.FOCAL_SCALE
  smooth_seconds: float = 0.3
  min_frames: int = 25
  min_shot_frames: int = 8
  test_fraction: float = 0.1
  expression_dim: int = EXPRESSION_DIM

  def __post_init__(self):
    if not 16 <= self.resolution <= 1024:
      raise ValueError(f"talking_faces: resolution={self.resolution} must be in [16, 1024]")
    if not 0 < self.test_fraction < 1:
      raise ValueError(f"talking_faces: test_fraction={self.test_fraction} must be in (0, 1)")
    derived = config_name(self.resolution, self.fps, self._extra_settings())
    if self.name and self.name != derived:
      raise ValueError(f"talking_faces: config name {self.name!r} does not match its settings "
                       f"({derived!r}); leave name empty")
    self.name = derived
    self.description = f"face crops at {self.resolution}x{self.resolution}, {self.fps:g} fps"

  def _extra_settings(self) -> dict:
    """Settings that differ from the defaults (they get a hash in the config name)."""
    defaults = dict(focal_scale=face.FOCAL_SCALE, smooth_seconds=0.3, min_frames=25,
                    min_shot_frames=8, test_fraction=0.1, expression_dim=EXPRESSION_DIM)
    return {k: getattr(self, k) for k, v in defaults.items() if getattr(self, k) != v}

  @property
  def settings(self) -> preprocess.Settings:
    return preprocess.Settings(resolution=self.resolution, fps=self.fps,
                               focal_scale=self.focal_scale, smooth_seconds=self.smooth_seconds,
                               min_frames=self.min_frames, min_shot_frames=self.min_shot_frames)


def config_name(resolution: int, fps: float, extra: dict | None = None) -> str:
  """``r256_fps25_p1`` for default settings, plus a hash of any non-default ones."""
  name = f"r{resolution}_fps{fps:g}_p{preprocess.PREPROCESS_VERSION}"
  if extra:
    name += "_" + hashlib.sha1(json.dumps(extra, sort_keys=True).encode()).hexdigest()[:8]
  return name


def _builder(config: "TalkingFacesConfig", data_dir: str, **kwargs) -> "TalkingFaces":
  predefined = {c.name for c in TalkingFaces.BUILDER_CONFIGS}  # TFDS wants these by name
  return TalkingFaces(config=config.name if config.name in predefined else config,
                      data_dir=data_dir, **kwargs)


# ----------------------------------------------------------------------------------------------
# Inputs.


def list_videos(videos_dir: str) -> list[tuple[str, str]]:
  """[(identity name, video path)] sorted: sub-folders are identities, loose files their own."""
  if not os.path.isdir(videos_dir):
    raise FileNotFoundError(f"--videos={videos_dir}: no such directory")
  out = []
  for entry in sorted(os.listdir(videos_dir)):
    path = os.path.join(videos_dir, entry)
    if os.path.isdir(path):
      out += [(entry, os.path.join(path, f)) for f in sorted(os.listdir(path))
              if f.lower().endswith(VIDEO_EXTENSIONS)]
    elif entry.lower().endswith(VIDEO_EXTENSIONS):
      out.append((os.path.splitext(entry)[0], path))
  return out


def fingerprint(videos: list[tuple[str, str]], config: TalkingFacesConfig) -> str:
  items = [(name, os.path.basename(p), os.path.getsize(p), os.stat(p).st_mtime_ns)
           for name, p in videos]
  key = json.dumps(dict(items=items, settings=config.settings.key(),
                        test_fraction=config.test_fraction,
                        expression_dim=config.expression_dim), sort_keys=True)
  return hashlib.sha1(key.encode()).hexdigest()[:16]


@dataclasses.dataclass
class Processed:
  """Per-video results of ``process_all``."""
  kept: list[tuple[str, str, dict, dict]]   # (identity name, path, arrays, report)
  skipped: list[tuple[str, str]]            # (path, reason)


def process_all(videos: list[tuple[str, str]], config: TalkingFacesConfig, cache_dir: str,
                log: Callable[[str], None] = lambda s: None, progress_bars: bool = False
                ) -> Processed:
  """Runs (or loads from the cache) every video; bad files are logged and skipped."""
  kept, skipped = [], []
  for name, path in videos:
    bar = None
    if progress_bars:
      from tqdm import tqdm  # pylint: disable=g-import-not-at-top
      bar = tqdm(total=0, desc=os.path.basename(path), unit="frame", leave=False, mininterval=1)

    def progress(i, n, bar=bar):
      if bar is not None:
        bar.total = n
        bar.update(i - bar.n)
    try:
      arrays, report, cached = preprocess.cached_process_video(path, config.settings, cache_dir,
                                                               progress)
    except preprocess.SkipVideo as e:
      skipped.append((path, str(e)))
      log(f"SKIP {path}: {e}")
      continue
    finally:
      if bar is not None:
        bar.close()
    for w in report.get("warnings", []):
      log(f"WARN {path}: {w}")
    kept.append((name, path, arrays, report))
    log(f"{'cached' if cached else 'done  '} {os.path.basename(path)}: "
        f"{report['kept_frames']}/{report['frames']} frames kept, "
        f"{report['face_frames'] / max(report['frames'], 1):.1%} with a face, "
        f"{report['cuts']} shot cuts, jitter {report['jitter_px']:.2f} px")
  return Processed(kept, skipped)


# ----------------------------------------------------------------------------------------------
# Dataset-level annotations.


def split_index(n: int, test_fraction: float) -> int:
  """First test frame of a video with n kept frames (both splits non-empty for n >= 2)."""
  return int(np.clip(round(n * (1 - test_fraction)), 1, n - 1))


def expression_basis(head_landmarks: list[np.ndarray], identity: list[np.ndarray],
                     train: list[np.ndarray], num_identities: int, dim: int) -> dict[str, Any]:
  """Identity means, PCA basis and scale over the train frames (see module docstring)."""
  lm = np.concatenate(head_landmarks).astype(np.float64)
  ids = np.concatenate(identity)
  tr = np.concatenate(train)
  means = np.stack([lm[(ids == i) & tr].mean(0) for i in range(num_identities)])
  delta = (lm - means[ids]).reshape(len(lm), -1)
  x = delta[tr]
  centre = x.mean(0)
  _, sig, vt = np.linalg.svd(x - centre, full_matrices=False)
  k = min(dim, len(sig))
  components = np.zeros((dim, x.shape[1]))
  components[:k] = vt[:k]
  scale = float(sig[0] / np.sqrt(max(len(x) - 1, 1))) or 1.0
  explained = (sig[:k] ** 2).sum() / max((sig ** 2).sum(), 1e-12)
  return dict(means=means.astype(np.float32), centre=centre.astype(np.float32),
              components=components.astype(np.float32), scale=scale,
              explained_variance=float(explained))


def encode_expression(head_landmarks: np.ndarray, identity_mean: np.ndarray,
                      basis: dict[str, Any]) -> np.ndarray:
  """float32 [..., dim] expression of pose-normalised landmarks [..., 478, 3]."""
  delta = (np.asarray(head_landmarks, np.float64) - identity_mean).reshape(
      *np.shape(head_landmarks)[:-2], -1)
  return ((delta - np.asarray(basis["centre"])) @ np.asarray(basis["components"]).T
          / basis["scale"]).astype(np.float32)


def annotate(processed: Processed, config: TalkingFacesConfig) -> tuple[list[dict], dict]:
  """Per-video arrays with identity, split, frame index, expression and blink; plus metadata."""
  names = sorted({name for name, *_ in processed.kept})
  label = {n: i for i, n in enumerate(names)}
  videos, frame0 = [], 0
  for name, path, arrays, report in sorted(processed.kept, key=lambda v: (label[v[0]], v[1])):
    n = len(arrays["rgb"])
    cut = split_index(n, config.test_fraction)
    videos.append(dict(arrays, identity=np.full(n, label[name]), train=np.arange(n) < cut,
                       frame=frame0 + np.arange(n), path=path, name=name, report=report))
    frame0 += n
  basis = expression_basis([v["head_landmarks"] for v in videos], [v["identity"] for v in videos],
                           [v["train"] for v in videos], len(names), config.expression_dim)
  openness = np.concatenate([v["eye_openness"] for v in videos])
  ids = np.concatenate([v["identity"] for v in videos])
  tr = np.concatenate([v["train"] for v in videos])
  open_level = np.stack([np.percentile(openness[(ids == i) & tr], 90, axis=0)
                         for i in range(len(names))])
  for v in videos:
    i = v["identity"]
    v["expression"] = encode_expression(v["head_landmarks"], basis["means"][i], basis)
    v["blink"] = np.clip(1 - v["eye_openness"] / open_level[i], 0, 1).astype(np.float32)
  meta = dict(
      resolution=config.resolution, fps=config.fps, sample_rate=preprocess.SAMPLE_RATE,
      preprocess_version=preprocess.PREPROCESS_VERSION, focal_scale=config.focal_scale,
      test_fraction=config.test_fraction, num_identities=len(names), identity_names=names,
      num_frames=int(frame0), head_box=[list(c) for c in face.HEAD_BOX],
      mask_names=list(face.MASK_NAMES), expression_dim=config.expression_dim,
      expression_explained_variance=basis["explained_variance"],
      expression_scale=basis["scale"], expression_centre=basis["centre"].tolist(),
      expression_components=basis["components"].round(6).tolist(),
      identity_mean_landmarks=basis["means"].round(6).tolist(),
      eye_open_level=open_level.tolist(),
      sources=[dict(file=os.path.basename(v["path"]), identity=int(v["identity"][0]),
                    name=v["name"], fps=config.fps, frames=int(v["report"]["frames"]),
                    kept_frames=int(len(v["rgb"])), shot_cuts=int(v["report"]["cuts"]),
                    has_audio=bool(v["report"]["has_audio"]),
                    jitter_px=float(v["report"]["jitter_px"]),
                    crop_boxes=np.asarray(v["box"]).round(1).tolist()) for v in videos],
      skipped=[dict(file=os.path.basename(p), reason=r) for p, r in processed.skipped])
  return videos, meta


# ----------------------------------------------------------------------------------------------
# The builder.


class TalkingFaces(tfds.core.GeneratorBasedBuilder):
  """Real talking-face videos (manual_dir = the folder of videos)."""
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [TalkingFacesConfig()]
  MANUAL_DOWNLOAD_INSTRUCTIONS = "Run python -m launch.prepare_data --videos=DIR --out=DATA_DIR."
  name = "talking_faces"

  def __init__(self, *, file_format: str = "array_record", cache_dir: str | None = None,
               log: Callable[[str], None] = lambda s: None, processed: Processed | None = None,
               **kwargs):
    """``processed``: the videos already run by ``prepare`` (else they are run, or loaded from
    ``cache_dir``, when the dataset is generated)."""
    super().__init__(file_format=file_format, **kwargs)
    self._cache_dir = cache_dir
    self._log = log
    self._processed = processed

  def _info(self) -> tfds.core.DatasetInfo:
    c = self.builder_config
    r = c.resolution
    t = tfds.features.Tensor
    chunk = int(round(preprocess.SAMPLE_RATE / c.fps))
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict({
            "rgb": t(shape=(r, r, 3), dtype=np.uint8),
            "masks": t(shape=(r, r, len(face.MASK_NAMES)), dtype=np.uint8),
            "landmarks": t(shape=(face.NUM_LANDMARKS, 3), dtype=np.float32),
            "head_landmarks": t(shape=(face.NUM_LANDMARKS, 3), dtype=np.float32),
            "rotation": t(shape=(3, 3), dtype=np.float32),
            "translation": t(shape=(3,), dtype=np.float32),
            "intrinsics": t(shape=(3, 3), dtype=np.float32),
            "expression": t(shape=(c.expression_dim,), dtype=np.float32),
            "eye_openness": t(shape=(2,), dtype=np.float32),
            "blink": t(shape=(2,), dtype=np.float32),
            "identity": t(shape=(), dtype=np.int64),
            "frame": t(shape=(), dtype=np.int64),
            "video": t(shape=(), dtype=np.int64),
            "clip": t(shape=(), dtype=np.int64),
            "source_frame": t(shape=(), dtype=np.int64),
            "time": t(shape=(), dtype=np.float32),
            "box": t(shape=(3,), dtype=np.float32),
            "audio": t(shape=(chunk,), dtype=np.float32),
            "audio_features": t(shape=(preprocess.AUDIO_WINDOW, preprocess.N_MELS),
                                dtype=np.float32),
            "has_audio": t(shape=(), dtype=np.int64),
        }),
        metadata=tfds.core.MetadataDict(),
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    c = self.builder_config
    videos = list_videos(str(dl_manager.manual_dir))
    processed = self._processed
    if processed is None:
      cache_dir = self._cache_dir or os.path.join(str(dl_manager.manual_dir),
                                                  ".talking_faces_cache")
      processed = process_all(videos, c, cache_dir, self._log)
    if not processed.kept:
      raise ValueError(f"{dl_manager.manual_dir}: no usable video (skipped: "
                       f"{len(processed.skipped)}); see the SKIP lines above")
    annotated, meta = annotate(processed, c)
    meta["fingerprint"] = fingerprint(videos, c)
    self.info.metadata.update(meta)
    return {split: self._generate_examples(annotated, split) for split in ("train", "test")}

  def _generate_examples(self, videos: list[dict], split: str) -> Iterator[tuple[str, dict]]:
    keys = ("rgb", "masks", "landmarks", "head_landmarks", "rotation", "translation",
            "intrinsics", "expression", "eye_openness", "blink", "frame", "clip", "source_frame",
            "time", "box", "audio", "audio_features", "identity")
    for v_index, v in enumerate(videos):
      sel = v["train"] if split == "train" else ~v["train"]
      for i in np.flatnonzero(sel):
        ex = {k: v[k][i] for k in keys}
        ex.update(video=v_index, has_audio=int(bool(v["has_audio"])))
        yield f"{int(v['frame'][i]):08d}", ex


# ----------------------------------------------------------------------------------------------
# Entry points.


def load(data_dir: str, resolution: int = 256, fps: float = 25.0, **settings):
  """The prepared builder; a one-line error naming the fix when it was never built."""
  config = TalkingFacesConfig(resolution=resolution, fps=fps, **settings)
  builder = _builder(config, data_dir)
  if not builder.is_prepared():
    raise FileNotFoundError(
        f"no talking_faces dataset at {data_dir} ({config.name}); build it with python -m "
        f"launch.prepare_data --videos=DIR --out={data_dir} --resolution={resolution} "
        f"--fps={fps:g}")
  return builder


def prepare(videos_dir: str, data_dir: str, *, log: Callable[[str], None] = print,
            progress_bars: bool = True, **settings) -> tuple[Any, Processed, bool]:
  """Builds (or reuses) the dataset: (builder, per-video results, rebuilt?)."""
  config = TalkingFacesConfig(**settings)
  videos = list_videos(videos_dir)
  if not videos:
    raise FileNotFoundError(f"--videos={videos_dir}: no video files ({', '.join(VIDEO_EXTENSIONS)})")
  cache_dir = os.path.join(data_dir, "talking_faces_cache", config.name)
  processed = process_all(videos, config, cache_dir, log, progress_bars)
  if not processed.kept:
    raise ValueError(f"--videos={videos_dir}: no usable video among {len(videos)}")
  builder = _builder(config, data_dir)
  fp = fingerprint(videos, config)
  rebuilt = True
  if builder.is_prepared():
    if dict(builder.info.metadata or {}).get("fingerprint") == fp:
      rebuilt = False
    else:  # inputs changed: replace the old build (the per-video cache makes this cheap)
      shutil.rmtree(builder.data_dir)
  if rebuilt:
    builder = _builder(config, data_dir, processed=processed)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=videos_dir))
    builder = _builder(config, data_dir)
  return builder, processed, rebuilt

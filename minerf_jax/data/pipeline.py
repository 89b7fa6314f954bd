"""Input pipeline: TFDS data source -> grain -> this process's share of each global batch.

One pipeline serves every model; the model's ``batch_spec`` names the batch kind:

* ``'rays'`` (NeRF models). Frames of this process's slice of the train split
  (``tfds.split_for_jax_process``) are read once through ``tfds.data_source`` and kept in host
  memory. A grain ``MapDataset`` shuffles frame indices, groups ``frames_per_batch`` of them and
  samples ``rays_per_frame`` pixels from each, so every batch mixes rays from many frames and
  identities. A fraction ``head_fraction`` of each frame's rays is drawn from pixels whose ray
  hits the head box (where the radiance field has something to learn); the rest is uniform so
  the background keeps being fitted.
* ``'frame_rays'`` (audio-driven NeRF models, LokiTalk): the same rays grouped by frame, with
  each frame's audio window, blink and region masks (``FrameRayData``).
* ``'pairs'`` (one-shot animation models): source/driving frames of one clip
  (``data/pairs.py: PairData``).
* ``'sequences'`` (audio-to-expression models): windows of speech features and expression
  targets (``data/sequences.py: SequenceData``).

Batches are pure functions of the step: ``train_batch(step)`` indexes the grain dataset, so a
resumed run sees exactly the batches an uninterrupted run would have seen, with no iterator state
in the checkpoint. Sequential reads are served by a grain iterator with background prefetch.

Held-out evaluation data is a dict of named ``FrameSet``s (full frames + conditioning): the
held-out frames of the test split, plus, for the synthetic dataset whose generator can render any
identity with any expression and pose, exact ground truth for expression transfer (identity A
with identity B's expressions) and novel views (a yaw orbit).
"""
from __future__ import annotations

import dataclasses
import functools
import os
import warnings
from typing import Iterator

import grain
import jax
import ml_collections
import numpy as np
import tensorflow_datasets as tfds

from minerf_jax import camera
from minerf_jax.data import synthetic

# Per-frame fields that every ray-dataset provides.
FRAME_KEYS = ("rgb", "masks", "rotation", "translation", "intrinsics", "identity", "frame",
              "expression")
# The region-mask channels, the same in both datasets (``face.MASK_NAMES`` too).
MASK_NAMES = synthetic.MASK_NAMES
# Channels of ``FrameSet.masks``: the dataset's, then the speech and eyes regions united over
# each frame's ``REGION_CONTEXT`` neighbours on either side (within its run). A closing lid
# covers the eye it belongs to, and an opening mouth reaches past its closed lips: the union
# over a blink's or a syllable's span is the area those motions sweep, whatever this frame's
# phase. The speech region is the lips plus the face at and below the lips' top row
# (``speech_region``): speech opens the jaw, so the chin and the cheeks below the mouth move
# with the lips (on the synthetic data the ground truth re-rendered with another frame's
# jaw opening changes ~0% outside this region dilated by 1 px per 32, ~100% outside the lips).
FRAME_MASK_NAMES = MASK_NAMES + ("speech_region", "eyes_region")
REGION_CONTEXT = 4


def speech_region(masks: np.ndarray) -> np.ndarray:
  """bool [N,H,W]: per frame the lips and the face pixels at or below the lips' top image row
  (``masks``: [N,H,W,len(MASK_NAMES)]); empty where a frame shows no lips."""
  lips = masks[..., MASK_NAMES.index("lips")] > 0.5
  face = masks[..., MASK_NAMES.index("face")] > 0.5
  rows = lips.any(-1)                                               # [N,H]
  top = np.where(rows.any(-1), rows.argmax(-1), lips.shape[1])      # [N]
  below = np.arange(lips.shape[1])[None, :, None] >= top[:, None, None]
  return lips | (face & below)


def default_data_dir() -> str:
  return os.environ.get("MINERF_DATA_DIR", os.path.expanduser("~/.cache/minerf_jax/tfds"))


@dataclasses.dataclass(frozen=True)
class FrameSet:
  """Full frames plus everything needed to render them: arrays with leading dim N.

  ``frame`` is the global frame index used for per-frame latent codes, -1 where none exists
  (held-out or synthesised frames).
  """
  rgb: np.ndarray          # [N,H,W,3] float32 in [0,1]
  rotation: np.ndarray     # [N,3,3] head-to-world
  translation: np.ndarray  # [N,3]
  intrinsics: np.ndarray   # [N,3,3]
  identity: np.ndarray     # [N] int32
  frame: np.ndarray        # [N] int32
  expression: np.ndarray   # [N,E] float32
  mask: np.ndarray         # [N,H,W] float32: 1 on the head (the dataset's 'face' mask channel)
  # Expression transfer on synthetic data only: the driver B rendered with the same expression
  # and pose (the look that identity leakage would pull the render towards), and its head mask.
  driver_rgb: np.ndarray | None = None   # [N,H,W,3]
  driver_mask: np.ndarray | None = None  # [N,H,W]
  # Audio-driven models (``load_frames(audio_context=K)``): each frame's audio feature window
  # and those of its K neighbours on either side, the blink signal and every region mask.
  audio: np.ndarray | None = None        # [N,2K+1,W,M] float32
  blink: np.ndarray | None = None        # [N,2] float32 in [0,1] (left, right)
  masks: np.ndarray | None = None        # [N,H,W,len(FRAME_MASK_NAMES)] float32 in {0,1}

  def __len__(self) -> int:
    return int(self.rgb.shape[0])

  @property
  def resolution(self) -> tuple[int, int]:
    return int(self.rgb.shape[1]), int(self.rgb.shape[2])

  def take(self, index) -> "FrameSet":
    def pick(value):
      return None if value is None else value[index]
    return FrameSet(**{f.name: pick(getattr(self, f.name)) for f in dataclasses.fields(self)})


# ----------------------------------------------------------------------------------------------
# Dataset access.


def dataset_builder(data_config: ml_collections.ConfigDict, *, num_identities: int | None = None):
  """Builds (or reuses) the TFDS dataset named by ``data_config.name``; returns the builder."""
  data_dir = data_config.get("data_dir") or default_data_dir()
  if data_config.name == "synthetic_talking_heads":
    from minerf_jax.data.builders import synthetic_talking_heads
    return synthetic_talking_heads.build(
        data_dir,
        resolution=data_config.resolution,
        num_identities=num_identities or data_config.num_identities,
        frames_per_identity=data_config.frames_per_identity,
        seed=data_config.seed)
  if data_config.name == "talking_faces":
    from minerf_jax.data.builders import talking_faces
    builder = talking_faces.load(data_dir, resolution=data_config.resolution,
                                 fps=float(data_config.get("fps", 25.0)))
    have = int(builder.info.metadata["num_identities"])
    want = num_identities or int(data_config.num_identities)
    if want > have:
      raise ValueError(f"config.data.num_identities={want} but the talking_faces dataset in "
                       f"{data_dir} has {have} identities; pass --config.data.num_identities={have}")
    return builder
  raise ValueError(f"config.data.name={data_config.name!r} is not a known dataset; "
                   "choose 'synthetic_talking_heads' or 'talking_faces'")


class DatasetError(FileNotFoundError):
  """A dataset directory that is missing files or holds unreadable ones (one-line message)."""


def _rebuild_hint(builder) -> str:
  if builder.name == "synthetic_talking_heads":
    return "delete it and rerun: the synthetic dataset rebuilds itself"
  return "delete it and rebuild it with python -m launch.prepare_data"


def _brief(error: BaseException) -> str:
  return " ".join(str(error).split())[:200]


def records(builder, split: str):
  """Every example of ``split``, in file order, read through ``tfds.data_source``.

  A split file that is missing, empty or unreadable (the directory deleted or half-written
  under a run, a build interrupted by hand) raises ``DatasetError`` naming the file and the
  fix, instead of an ArrayRecord error from deep inside the read.
  """
  where = builder.data_dir
  try:
    paths = [str(p) for p in builder.info.splits[split].filepaths]
  except Exception as e:  # pylint: disable=broad-except
    raise DatasetError(f"dataset {where} has no readable split {split!r} ({_brief(e)}); "
                       f"{_rebuild_hint(builder)}") from None
  for path in paths:
    if not os.path.isfile(path) or os.path.getsize(path) == 0:
      state = "is empty" if os.path.isfile(path) else "is missing"
      raise DatasetError(f"dataset {where} is incomplete: {os.path.basename(path)} {state} "
                         f"(deleted or half-written); {_rebuild_hint(builder)}")
  try:
    source = builder.as_data_source(split=split)
    for i in range(len(source)):
      yield source[i]
  except Exception as e:  # pylint: disable=broad-except
    raise DatasetError(f"dataset {where}: split {split!r} is unreadable ({_brief(e)}); "
                       f"{_rebuild_hint(builder)}") from None


def new_identity(config: ml_collections.ConfigDict) -> tuple[int, int]:
  """(k, frames) of a run that fits a new identity k to a trained one: MI-NeRF's
  ``config.personalise`` or LokiTalk's ``config.adapt`` (``identity``, ``num_frames``; 0
  frames: all its train frames); (-1, 0) for an ordinary run."""
  for block in ("personalise", "adapt"):
    k = int(config.get(block, {}).get("identity", -1))
    if k >= 0:
      return k, int(config[block].get("num_frames", 0))
  return -1, 0


def effective_num_identities(config: ml_collections.ConfigDict) -> int:
  """Identity count of the dataset: personalising to identity k needs at least k+1 identities."""
  return max(int(config.data.num_identities), new_identity(config)[0] + 1)


def image_size(config: ml_collections.ConfigDict) -> int:
  """Side of the frames models see: ``data.image_size`` when set, else ``data.resolution``."""
  return int(config.data.get("image_size", 0)) or int(config.data.resolution)


def num_frame_codes(config: ml_collections.ConfigDict) -> int:
  """Rows of per-frame tables: ``data.num_frames`` when set, else identities x frames each."""
  return int(config.data.get("num_frames", 0)) or (
      effective_num_identities(config) * int(config.data.get("frames_per_identity", 0)))


def audio_context(config: ml_collections.ConfigDict) -> int:
  """K of audio-driven NeRF models (``config.model.audio_context``: frames carry audio windows
  of 2K+1 frames, blink and region masks); -1 for models that take expressions."""
  return int(config.model.get("audio_context", -1))


def train_identities(config: ml_collections.ConfigDict) -> tuple[int, ...]:
  """Identities whose frames are trained on: the personalised one, a subset, or all."""
  new = new_identity(config)[0]
  if new >= 0:
    return (new,)
  subset = tuple(int(i) for i in config.data.get("identities", ()) or ())
  return subset or tuple(range(effective_num_identities(config)))


def area_downscale(images: np.ndarray, size: int) -> np.ndarray:
  """[N, H, H, ...] -> [N, size, size, ...] by averaging (float) over integer-factor blocks;
  ``size`` 0 or H: unchanged."""
  h, w = images.shape[1:3]
  if size <= 0 or size == h:
    return images
  if h != w or h % size:
    raise ValueError(f"config.data.image_size={size} must divide the dataset's {h}x{w} frames")
  f = h // size
  return images.reshape(images.shape[0], size, f, size, f, *images.shape[3:]).mean((2, 4))


def resize_frames(frames: FrameSet, size: int) -> FrameSet:
  """Downscales square frames by an integer factor (area average; intrinsics scaled to match,
  masks re-thresholded at 0.5). ``size`` 0 or the current size: unchanged."""
  h, _ = frames.resolution
  if size <= 0 or size == h:
    return frames
  pool = lambda x: area_downscale(x, size)
  f = h // size
  scale = np.diag([1.0 / f, 1.0 / f, 1.0]).astype(np.float32)
  masks = None if frames.masks is None else (pool(frames.masks) > 0.5).astype(np.float32)
  return dataclasses.replace(frames, rgb=pool(frames.rgb),
                             mask=(pool(frames.mask) > 0.5).astype(np.float32), masks=masks,
                             intrinsics=np.einsum("ij,njk->nik", scale, frames.intrinsics))


def neighbour_index(identity: np.ndarray, frame: np.ndarray, context: int) -> np.ndarray:
  """int [N, 2K+1]: for frames in time order, the positions of each frame's K neighbours on
  either side within its run (consecutive ``frame`` indices of one identity), clamped at the
  run's ends (a gap or a new identity starts a new run)."""
  n = len(frame)
  new_run = np.ones(n, bool)
  new_run[1:] = (identity[1:] != identity[:-1]) | (frame[1:] != frame[:-1] + 1)
  run = np.cumsum(new_run) - 1
  starts = np.flatnonzero(new_run)
  ends = np.append(starts[1:], n) - 1
  offsets = np.arange(-context, context + 1)
  return np.clip(np.arange(n)[:, None] + offsets, starts[run][:, None], ends[run][:, None])


def load_frames(builder, split: str, identities: tuple[int, ...],
                max_frames_per_identity: int = 0, image_size: int = 0,
                audio_context: int = -1) -> FrameSet:
  """Reads the frames of ``identities`` from a split into host memory as a FrameSet, in time
  order within each identity (one pass over the split).

  ``max_frames_per_identity`` > 0 keeps only each identity's first frames (in time order), the
  few-shot setting of personalisation. ``image_size`` > 0 downscales (``resize_frames``).
  ``audio_context`` K >= 0 also reads what audio-driven models need: ``audio`` (the dataset's
  per-frame ``audio_features`` window of each frame and its K neighbours, ``neighbour_index``),
  ``blink`` and all region ``masks`` (``FRAME_MASK_NAMES``).
  """
  wanted = set(identities)
  rows = [r for r in records(builder, split) if int(r["identity"]) in wanted]
  rows.sort(key=lambda r: int(r["frame"]))
  if max_frames_per_identity > 0:
    count: dict[int, int] = {}
    kept = []
    for r in rows:
      identity = int(r["identity"])
      if count.get(identity, 0) < max_frames_per_identity:
        kept.append(r)
        count[identity] = count.get(identity, 0) + 1
    rows = kept
  if not rows:
    raise ValueError(f"split {split!r} of {builder.name} has no frames of identities {identities}")
  arrays = {k: np.stack([np.asarray(r[k]) for r in rows]) for k in FRAME_KEYS}
  extras = {}
  if audio_context >= 0:
    feats = np.stack([np.asarray(r["audio_features"], np.float32) for r in rows])
    extras["audio"] = feats[neighbour_index(arrays["identity"], arrays["frame"], audio_context)]
    extras["blink"] = (np.stack([np.asarray(r["blink"]) for r in rows]) if "blink" in rows[0]
                       else arrays["expression"][:, list(synthetic.BLINK_COMPONENTS)]).astype(np.float32)
    masks = arrays["masks"].astype(np.float32)
    near = neighbour_index(arrays["identity"], arrays["frame"], REGION_CONTEXT)
    regions = (speech_region(masks).astype(np.float32), masks[..., MASK_NAMES.index("eyes")])
    swept = [region[near].max(1) for region in regions]
    extras["masks"] = np.concatenate([masks, np.stack(swept, -1)], -1)
  return resize_frames(FrameSet(
      rgb=arrays["rgb"].astype(np.float32) / 255.0,
      rotation=arrays["rotation"].astype(np.float32),
      translation=arrays["translation"].astype(np.float32),
      intrinsics=arrays["intrinsics"].astype(np.float32),
      identity=arrays["identity"].astype(np.int32),
      frame=arrays["frame"].astype(np.int32),
      expression=arrays["expression"].astype(np.float32),
      mask=arrays["masks"][..., 0].astype(np.float32), **extras), image_size)


def load_audio(builder, split: str, identity: int) -> np.ndarray:
  """The identity's audio over a split, in time order (per-frame chunks concatenated)."""
  rows = sorted((r for r in records(builder, split) if int(r["identity"]) == identity),
                key=lambda r: int(r["frame"]))
  return np.concatenate([np.asarray(r["audio"], np.float32) for r in rows])


def estimate_backgrounds(frames: FrameSet, num_identities: int) -> np.ndarray:
  """[num_identities,H,W,3] per-identity background: the per-pixel median over the frames where
  the pixel is not covered by the head mask (static camera). Pixels the head always covers take
  the median of the visible background; identities without frames take the mean image."""
  h, w = frames.resolution
  out = np.empty((num_identities, h, w, 3), np.float32)
  seen = np.zeros(num_identities, bool)
  for identity in range(num_identities):
    sel = frames.identity == identity
    if not sel.any():
      continue
    rgb = np.where(frames.mask[sel][..., None] > 0.5, np.nan, frames.rgb[sel])
    with warnings.catch_warnings():  # all-NaN pixels (always covered) are expected
      warnings.simplefilter("ignore", RuntimeWarning)
      med = np.nanmedian(rgb, axis=0)
      fill = np.nanmedian(rgb.reshape(-1, 3), axis=0)
    out[identity] = np.where(np.isnan(med), np.nan_to_num(fill, nan=0.5), med)
    seen[identity] = True
  out[~seen] = out[seen].mean(0) if seen.any() else 0.5
  return out


# ----------------------------------------------------------------------------------------------
# Rays.


def _pixel_centres(height: int, width: int) -> np.ndarray:
  """[H*W, 2] float32 pixel centres, row-major."""
  return camera.pixel_grid(height, width).reshape(-1, 2)


def head_box_hits(frames: FrameSet, box: np.ndarray) -> np.ndarray:
  """[N, H*W] bool: whether each pixel's ray passes through the (posed) head box."""
  h, w = frames.resolution
  pix = _pixel_centres(h, w)
  hits = np.zeros([len(frames), h * w], bool)
  for n in range(len(frames)):
    d = camera.ray_directions(frames.intrinsics[n], pix)
    o, d = camera.to_canonical(np.zeros(3, np.float32), d, frames.rotation[n],
                               frames.translation[n])
    hits[n] = camera.ray_box_intersect(o, d, box[0], box[1])[2]
  return hits


def frame_rays(frames: FrameSet, index: int, pixels: np.ndarray | None = None) -> dict:
  """Ray batch for (a subset of) the pixels of one frame of a FrameSet (predict/render input)."""
  h, w = frames.resolution
  flat = np.arange(h * w) if pixels is None else pixels
  pix = _pixel_centres(h, w)[flat]
  return _ray_batch(frames, np.full(flat.shape, index), flat, pix, h, w)


def _ray_batch(frames: FrameSet, frame_idx: np.ndarray, flat: np.ndarray, pix: np.ndarray,
               h: int, w: int) -> dict[str, np.ndarray]:
  dirs = camera.ray_directions(frames.intrinsics[frame_idx], pix).astype(np.float32)
  extras = {}
  if frames.audio is not None:
    extras = {"audio": frames.audio[frame_idx], "blink": frames.blink[frame_idx],
              "masks": frames.masks.reshape(len(frames), h * w, -1)[frame_idx, flat]}
  return {**extras,
      "origins": np.zeros_like(dirs),
      "directions": dirs,
      "rotation": frames.rotation[frame_idx],
      "translation": frames.translation[frame_idx],
      "identity": frames.identity[frame_idx],
      "frame": frames.frame[frame_idx],
      "expression": frames.expression[frame_idx],
      "pixel": (pix / np.asarray([w, h], np.float32)).astype(np.float32),
      "rgb": frames.rgb.reshape(len(frames), h * w, 3)[frame_idx, flat],
      "mask": frames.mask.reshape(len(frames), h * w)[frame_idx, flat],
  }


class _SampleRays:
  """grain random map: a group of frame indices -> a ray batch from those frames."""

  def __init__(self, frames: FrameSet, head_pixels: list[np.ndarray], rays_per_frame: int,
               head_fraction: float):
    self.frames = frames
    self.head_pixels = head_pixels
    self.rays_per_frame = rays_per_frame
    self.num_head = int(round(head_fraction * rays_per_frame))
    self.h, self.w = frames.resolution
    self.pixels = _pixel_centres(self.h, self.w)

  def pixels_of(self, f: int, rng: np.random.Generator) -> np.ndarray:
    """The ``rays_per_frame`` flat pixel indices drawn from frame ``f``."""
    head = self.head_pixels[f]
    k = self.num_head if head.size else 0
    chosen = [rng.choice(head, size=k, replace=head.size < k)] if k else []
    chosen.append(rng.integers(0, self.h * self.w, size=self.rays_per_frame - k))
    return np.concatenate(chosen)

  def __call__(self, frame_group: np.ndarray, rng: np.random.Generator) -> dict:
    flat = np.concatenate([self.pixels_of(int(f), rng) for f in frame_group])
    frame_idx = np.repeat(np.asarray(frame_group), self.rays_per_frame)
    return _ray_batch(self.frames, frame_idx, flat, self.pixels[flat], self.h, self.w)


# ----------------------------------------------------------------------------------------------
# The Data objects consumed by train/loop.py.


class StepBatches:
  """``batches(step)``: item ``step`` of a grain ``MapDataset`` (the batch of that step).

  The train loop asks for consecutive steps; they are served from a prefetching iterator, with a
  fall back to random access (which returns identical batches) when the step jumps.
  """

  def __init__(self, dataset, num_threads: int = 2, prefetch: int = 4):
    self.dataset = dataset
    self.options = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch)
    self._iterator: Iterator | None = None
    self._next_step = -1

  def __call__(self, step: int) -> dict[str, np.ndarray]:
    if self._iterator is None or step != self._next_step:
      self._iterator = iter(self.dataset[step:].to_iter_dataset(self.options))
    self._next_step = step + 1
    return next(self._iterator)


def this_process(process_index: int | None, process_count: int | None, units: int,
                 field: str) -> tuple[int, int]:
  """(process index, process count), defaulting to JAX's; ``units`` per global batch (config
  ``field``) must split evenly over the processes."""
  index = jax.process_index() if process_index is None else process_index
  count = jax.process_count() if process_count is None else process_count
  if units % count:
    raise ValueError(f"config.{field}={units} must be divisible by the number of processes "
                     f"({count})")
  return index, count


class RayData:
  """Ray batches for NeRF models (see module docstring)."""
  audio_context = -1   # >= 0: frames carry audio windows, blink and masks (``load_frames``)

  def __init__(self, config: ml_collections.ConfigDict, *, process_index: int | None = None,
               process_count: int | None = None):
    self.config = config
    dc = config.data
    self.process_index, self.process_count = this_process(
        process_index, process_count, dc.frames_per_batch, "data.frames_per_batch")
    self.global_batch_size = int(dc.frames_per_batch * dc.rays_per_frame)
    self.builder = dataset_builder(dc, num_identities=effective_num_identities(config))
    self.metadata = dict(self.builder.info.metadata or {})
    self.box = np.asarray(self.metadata["head_box"], np.float32)
    split = tfds.split_for_jax_process("train", process_index=self.process_index,
                                       process_count=self.process_count)
    few_shot = new_identity(config)[1]
    self.train_frames = load_frames(self.builder, split, train_identities(config), few_shot,
                                    image_size=int(dc.get("image_size", 0)),
                                    audio_context=self.audio_context)
    num_frames = int(self.metadata.get("num_frames", 0))
    if num_frames > num_frame_codes(config):
      raise ValueError(f"the dataset has {num_frames} frames but config.data.num_frames="
                       f"{num_frame_codes(config)}; pass --config.data.num_frames={num_frames}")
    hits = head_box_hits(self.train_frames, self.box)
    head_pixels = [np.flatnonzero(h) for h in hits]
    local_frames = dc.frames_per_batch // self.process_count
    seed = int(config.seed) * 1000 + self.process_index
    self._dataset = (
        grain.MapDataset.range(len(self.train_frames))
        .shuffle(seed=seed)
        .repeat()
        .batch(local_frames, drop_remainder=True)
        .random_map(self._sampler(head_pixels), seed=seed + 1))
    self.train_batch = StepBatches(self._dataset)

  def _sampler(self, head_pixels: list[np.ndarray]):
    dc = self.config.data
    return _SampleRays(self.train_frames, head_pixels, dc.rays_per_frame, dc.head_fraction)

  @functools.cached_property
  def background_estimate(self) -> np.ndarray:
    return estimate_backgrounds(self.train_frames, effective_num_identities(self.config))

  def example_batch(self) -> dict[str, np.ndarray]:
    return self._dataset[0]

  @functools.cached_property
  def eval_data(self) -> dict[str, FrameSet]:
    return eval_frame_sets(self.config, self.builder, audio_context=self.audio_context)


# Per-frame fields of a frame-ray batch; every other field is per ray, [F, R, ...].
FRAME_FIELDS = ("rotation", "translation", "intrinsics", "identity", "frame", "expression",
                "audio", "blink", "audio_scale")


def frame_ray_batch(flat: dict[str, np.ndarray], num_frames: int) -> dict[str, np.ndarray]:
  """A flat ray batch of ``num_frames`` frames (rays grouped by frame, ``_ray_batch`` order) ->
  per-frame fields [F, ...] and per-ray fields [F, R, ...]: one batch axis, the frames, so that
  sharding over devices keeps each frame's rays with its conditions."""
  out = {}
  rays = len(flat["rgb"]) // num_frames
  for k, v in flat.items():
    v = v.reshape((num_frames, rays) + v.shape[1:])
    out[k] = v[:, 0] if k in FRAME_FIELDS else v
  return out


class _SampleFrameRays(_SampleRays):
  """grain random map for ``FrameRayData``: like ``_SampleRays`` (the region masks and each
  frame's audio window and blink included, grouped by frame), with a fraction
  ``region_fraction`` of each frame's rays drawn from its speech and eyes regions, half from
  each (a region a frame lacks gives its share to the other), as they are small but what the
  region branches must learn (taken from the head-box share)."""

  REGIONS = ("speech_region", "eyes_region")

  def __init__(self, frames: FrameSet, head_pixels: list[np.ndarray], rays_per_frame: int,
               head_fraction: float, region_fraction: float):
    super().__init__(frames, head_pixels, rays_per_frame, head_fraction)
    channels = [FRAME_MASK_NAMES.index(name) for name in self.REGIONS]
    self.region_pixels = [[np.flatnonzero(m[..., c].reshape(-1) > 0.5) for c in channels]
                          for m in frames.masks]
    self.num_region = min(int(round(region_fraction * rays_per_frame)), self.num_head)

  def pixels_of(self, f: int, rng: np.random.Generator) -> np.ndarray:
    regions = [r for r in self.region_pixels[f] if r.size]
    head = self.head_pixels[f]
    shares = np.diff(np.linspace(0, self.num_region, len(regions) + 1).round().astype(int))
    drawn = [rng.choice(r, size=k, replace=r.size < k) for r, k in zip(regions, shares)]
    kr = int(shares.sum())
    kh = (self.num_head - kr) if head.size else 0
    return np.concatenate(drawn + [rng.choice(head, size=kh, replace=head.size < kh),
                                   rng.integers(0, self.h * self.w,
                                                size=self.rays_per_frame - kr - kh)])

  def __call__(self, frame_group: np.ndarray, rng: np.random.Generator) -> dict:
    return frame_ray_batch(super().__call__(frame_group, rng), len(frame_group))


class FrameRayData(RayData):
  """Batch kind ``'frame_rays'`` (audio-driven NeRF models, LokiTalk): ``frames_per_batch``
  frames per step, each with ``rays_per_frame`` rays; per-frame ``audio`` [F, 2K+1, W, M]
  (``config.model.audio_context`` = K), ``blink`` [F, 2], pose, identity, frame; per-ray
  [F, R, ...] origins, directions, pixel, rgb, mask and region ``masks``
  (``FRAME_MASK_NAMES``).
  The global batch size is counted in frames."""

  def __init__(self, config: ml_collections.ConfigDict, **kwargs):
    self.audio_context = audio_context(config)
    super().__init__(config, **kwargs)
    self.global_batch_size = int(config.data.frames_per_batch)

  def _sampler(self, head_pixels: list[np.ndarray]):
    dc = self.config.data
    return _SampleFrameRays(self.train_frames, head_pixels, dc.rays_per_frame, dc.head_fraction,
                            float(dc.get("region_fraction", 0.0)))


def _sample_evenly(n: int, k: int) -> np.ndarray:
  return np.unique(np.linspace(0, n - 1, num=min(n, k)).round().astype(int))


def eval_frame_sets(config: ml_collections.ConfigDict, builder,
                    audio_context: int = -1) -> dict[str, FrameSet]:
  """Named held-out FrameSets: 'heldout', and for synthetic data 'transfer' and 'novel_view'
  (not for audio-driven models, ``audio_context`` >= 0, which do not take expressions)."""
  ec = config.eval
  ids = train_identities(config)
  test = load_frames(builder, "test", ids, image_size=int(config.data.get("image_size", 0)),
                     audio_context=audio_context)
  keep = np.concatenate([np.flatnonzero(test.identity == i)[
      _sample_evenly(int((test.identity == i).sum()), ec.frames_per_identity)] for i in ids])
  heldout = test.take(keep)
  heldout = dataclasses.replace(heldout, frame=np.full_like(heldout.frame, -1))
  sets = {"heldout": heldout}
  if config.data.name == "synthetic_talking_heads" and audio_context < 0:
    sets.update(synthetic_ground_truth_sets(config, builder, heldout))
  return sets


def synthetic_ground_truth_sets(config, builder, heldout: FrameSet) -> dict[str, FrameSet]:
  """Exact ground truth from the generator: expression transfer and a novel-view orbit.

  transfer: every held-out frame of identity A re-rendered with the expression of another
  identity B (round-robin over the other identities) at one of B's held-out times, keeping A's
  pose; ``driver_rgb`` / ``driver_mask`` hold B rendered with the same expression and pose (the
  reference of the identity-leakage metric, ``metrics.colour_leakage``). novel_view: each identity at ``config.eval.novel_view_yaws`` (degrees, may lie beyond
  the training range) with a frontal, centred head.
  """
  from minerf_jax.data.builders import synthetic_talking_heads as sth
  meta = dict(builder.info.metadata)
  ids = sorted(set(heldout.identity.tolist()))
  sources = tuple(range(effective_num_identities(config)))
  sets = {}
  if len(sources) > 1:
    pool = load_frames(builder, "test", sources)
    exprs, drivers = [], []
    for n in range(len(heldout)):
      others = [b for b in sources if b != int(heldout.identity[n])]
      drivers.append(others[n % len(others)])
      b_idx = np.flatnonzero(pool.identity == drivers[-1])
      exprs.append(pool.expression[b_idx[(3 * n) % len(b_idx)]])
    exprs = np.stack(exprs).astype(np.float32)
    truth = lambda who, n: sth.ground_truth(meta, who, exprs[n], heldout.rotation[n],
                                            heldout.translation[n])
    gt = [truth(int(heldout.identity[n]), n) for n in range(len(heldout))]
    gt_b = [truth(drivers[n], n) for n in range(len(heldout))]
    stack = lambda renders, key: np.stack([g[key] for g in renders]).astype(np.float32)
    sets["transfer"] = dataclasses.replace(
        heldout, rgb=stack(gt, "rgb"), expression=exprs, mask=stack(gt, "masks")[..., 0],
        driver_rgb=stack(gt_b, "rgb"), driver_mask=stack(gt_b, "masks")[..., 0])
  views = []
  for a in ids:
    i = int(np.flatnonzero(heldout.identity == a)[0])
    for yaw in np.deg2rad(np.asarray(config.eval.novel_view_yaws, np.float64)):
      r, t = synthetic.pose_matrix(float(yaw), 0.0, 0.0, np.zeros(3))
      views.append((i, r, t, sth.ground_truth(meta, a, heldout.expression[i], r, t)))
  if views:
    base = heldout.take(np.asarray([v[0] for v in views]))
    sets["novel_view"] = dataclasses.replace(
        base, rotation=np.stack([v[1] for v in views]).astype(np.float32),
        translation=np.stack([v[2] for v in views]).astype(np.float32),
        rgb=np.stack([v[3]["rgb"] for v in views]).astype(np.float32),
        mask=np.stack([v[3]["masks"][..., 0] for v in views]).astype(np.float32))
  return sets

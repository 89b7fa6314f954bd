"""Source/driving frame pairs for one-shot animation models (TPSMM, MCNet, MRFA).

Training pairs are two frames of the same clip (the same person, camera and shot: the model learns
motion, not identity change): on ``talking_faces`` a clip is a shot of one video (frames across a
shot cut never pair), on ``synthetic_talking_heads`` an identity's frames. Batches are pure
functions of the step (a grain ``MapDataset`` over clip-weighted frame indices), like the ray
pipeline, so a resumed run sees the batches an uninterrupted run would have seen.

Evaluation follows the two protocols of the papers:
  * reconstruction: every held-out clip is animated from its first frame (source) driven by all
    its frames; the targets are the driving frames themselves;
  * cross-identity: a fixed, seeded list of (source frame of identity A, driving frame of
    identity B != A) pairs; no ground truth exists, so only motion metrics (AKD against the
    driving landmarks) apply.

On synthetic data two protocols no peer has use the generator's exact truth (``truth_sets``):
  * cross-identity with truth: A's source frame driven by B's frame, against the generator's
    render of A with B's expression and head pose, in buckets of the yaw difference between the
    source and the driver (``POSE_BUCKETS``: |dyaw| < 10, 10-25, > 25 degrees); the pairs are
    drawn so that every bucket holds the same number;
  * novel views: a held-out frame of A with its head turned to a yaw of ``NOVEL_YAWS`` (about its
    own vertical axis: ``R @ Ry(Y - yaw)``, yaw Y exactly when pitch and roll are 0), against the
    generator's render of that turned head.
"""
from __future__ import annotations

import dataclasses
import functools

import ml_collections
import numpy as np

from minerf_jax import camera
from minerf_jax.data import pipeline


@dataclasses.dataclass(frozen=True)
class Frames:
  """Frames of one split in host memory, ordered by (clip, time), with their cameras and head
  poses (``X_cam = R X_head + t``: the generator's own on synthetic data, landmark PnP on real
  clips), intrinsics for the stored ``S``, the face mask and, on synthetic data, z-depth."""
  rgb: np.ndarray       # uint8 [N, S, S, 3]
  identity: np.ndarray  # int [N]
  clip: np.ndarray      # int [N] clip id, unique over the split
  time: np.ndarray      # float [N] seconds (or frame index) within the video
  intrinsics: np.ndarray | None = None    # float32 [N, 3, 3]
  rotation: np.ndarray | None = None      # float32 [N, 3, 3]
  translation: np.ndarray | None = None   # float32 [N, 3]
  face: np.ndarray | None = None          # uint8 [N, S, S] face mask (0/255)
  depth: np.ndarray | None = None         # float32 [N, S, S] (synthetic only)
  expression: np.ndarray | None = None    # float32 [N, E] (generator's; landmark PCA on real)

  def __len__(self) -> int:
    return int(self.rgb.shape[0])


def load_frames(builder, split: str, image_size: int = 0) -> Frames:
  """Reads a split (``talking_faces`` or ``synthetic_talking_heads``) into a Frames."""
  records = list(pipeline.records(builder, split))
  if not records:
    raise ValueError(f"split {split!r} of {builder.name} is empty")
  identity = np.array([int(r["identity"]) for r in records])
  if "clip" in records[0]:  # talking_faces: shots of videos
    key = np.array([(int(r["video"]), int(r["clip"])) for r in records])
    _, clip = np.unique(key, axis=0, return_inverse=True)
    time = np.array([float(r["time"]) for r in records])
  else:  # synthetic: one continuous clip per identity
    _, clip = np.unique(identity, return_inverse=True)
    time = np.array([float(r["frame"]) for r in records])
  order = np.lexsort((time, clip))
  stack = lambda key: np.stack([np.asarray(records[i][key]) for i in order])
  rgb = stack("rgb")
  stored = rgb.shape[1]
  face = np.stack([np.asarray(records[i]["masks"])[..., 0] > 0 for i in order]).astype(
      np.uint8) * 255
  depth = stack("depth").astype(np.float32) if "depth" in records[0] else None
  expression = stack("expression").astype(np.float32) if "expression" in records[0] else None
  if 0 < image_size != stored:
    rgb = pipeline.area_downscale(rgb, image_size).round().astype(np.uint8)
    face = pipeline.area_downscale(face, image_size).round().astype(np.uint8)
    if depth is not None:
      depth = pipeline.area_downscale(depth, image_size).astype(np.float32)
  scale = rgb.shape[1] / stored
  return Frames(rgb=rgb, identity=identity[order],
                clip=np.asarray(clip).reshape(-1)[order], time=time[order],
                intrinsics=camera.scale_intrinsics(stack("intrinsics").astype(np.float32),
                                                   scale).astype(np.float32),
                rotation=stack("rotation").astype(np.float32),
                translation=stack("translation").astype(np.float32), face=face, depth=depth,
                expression=expression)


def clip_members(frames: Frames) -> list[np.ndarray]:
  """Frame indices of each clip that has at least two frames (a pair needs two)."""
  groups = [np.flatnonzero(frames.clip == c) for c in np.unique(frames.clip)]
  return [g for g in groups if len(g) >= 2]


def clip_of_frame(frames: Frames) -> dict[int, np.ndarray]:
  """Frame index -> the indices of its clip, for every clip (one-frame clips included)."""
  return {int(i): g for c in np.unique(frames.clip) for g in [np.flatnonzero(frames.clip == c)]
          for i in g}


def sample_pairs(frames: Frames, members: list[np.ndarray], batch: np.ndarray,
                 rng: np.random.Generator) -> dict[str, np.ndarray]:
  """For each source index in ``batch``, a different driving frame of the same clip."""
  clip_of = {int(i): g for g in members for i in g}
  drivers = []
  for i in batch:
    group = clip_of[int(i)]
    j = group[rng.integers(0, len(group) - 1)]
    drivers.append(j if j != i else group[-1])  # uniform over the clip's other frames
  drivers = np.asarray(drivers)
  to_float = lambda x: x.astype(np.float32) / 255.0
  return {"source": to_float(frames.rgb[batch]), "driving": to_float(frames.rgb[drivers]),
          "identity": frames.identity[batch].astype(np.int32),
          "clip": frames.clip[batch].astype(np.int32)}


def reconstruction_sets(frames: Frames, max_frames: int = 0) -> list[dict[str, np.ndarray]]:
  """Per held-out clip: its first frame as source and all (or ``max_frames``) frames as driving."""
  out = []
  for g in clip_members(frames):
    g = g[:max_frames] if max_frames > 0 else g
    out.append({"source": frames.rgb[g[0]], "driving": frames.rgb[g],
                "identity": int(frames.identity[g[0]]), "clip": int(frames.clip[g[0]])})
  return out


def cross_identity_pairs(frames: Frames, num_pairs: int, seed: int = 0) -> np.ndarray:
  """int [num_pairs, 2] fixed (source index, driving index) pairs with different identities."""
  ids = np.unique(frames.identity)
  if len(ids) < 2:
    raise ValueError("cross-identity evaluation needs at least two identities")
  rng = np.random.default_rng(seed)
  pairs = []
  for n in range(num_pairs):
    a = ids[n % len(ids)]
    b = rng.choice(ids[ids != a])
    pairs.append((rng.choice(np.flatnonzero(frames.identity == a)),
                  rng.choice(np.flatnonzero(frames.identity == b))))
  return np.asarray(pairs, np.int64)


POSE_BUCKETS = (10.0, 25.0)              # |yaw difference| bucket edges, degrees
NOVEL_YAWS = (-40.0, -20.0, 0.0, 20.0, 40.0)


def bucket_names(edges=POSE_BUCKETS) -> tuple[str, ...]:
  """``('dyaw<10', 'dyaw10-25', 'dyaw>25')`` for the default edges."""
  e = [f"{v:g}" for v in edges]
  return (f"dyaw<{e[0]}",) + tuple(f"dyaw{a}-{b}" for a, b in zip(e, e[1:])) + (f"dyaw>{e[-1]}",)


def yaw_degrees(frames: Frames) -> np.ndarray:
  return camera.euler_degrees(frames.rotation)[:, 0]


def cross_truth_pairs(frames: Frames, per_bucket: int, edges=POSE_BUCKETS, seed: int = 0
                      ) -> tuple[np.ndarray, np.ndarray]:
  """(int [P, 2] (source A, driver B != A) pairs, int [P] bucket of |yaw_A - yaw_B|):
  ``per_bucket`` pairs drawn uniformly from every bucket's candidates (with repeats only where a
  bucket has fewer), so that each bucket is measured on as many pairs; a bucket with no
  candidate pair is left out."""
  yaw = yaw_degrees(frames)
  a, b = np.nonzero(frames.identity[:, None] != frames.identity[None, :])
  if not len(a):
    raise ValueError("cross-identity evaluation needs at least two identities")
  bucket = np.digitize(np.abs(yaw[a] - yaw[b]), edges)
  rng = np.random.default_rng(seed)
  idx, which = [], []
  for k in range(len(edges) + 1):
    cand = np.flatnonzero(bucket == k)
    if not len(cand):   # too few held-out frames (tiny test data): the bucket is not reported
      continue
    pick = rng.choice(cand, per_bucket, replace=len(cand) < per_bucket)
    idx.append(np.stack([a[pick], b[pick]], -1))
    which.append(np.full(per_bucket, k))
  return np.concatenate(idx).reshape(-1, 2), np.concatenate(which).astype(int)


def novel_view_items(frames: Frames, count: int, yaws=NOVEL_YAWS, seed: int = 0
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(frame index [N], yaw turn in degrees [N, V], rotation [N, V, 3, 3]) for ``count`` frames
  (identities in turn): each frame's head turned about its own vertical axis to yaw ``yaws``."""
  rng = np.random.default_rng(seed)
  ids = np.unique(frames.identity)
  idx = np.array([rng.choice(np.flatnonzero(frames.identity == ids[n % len(ids)]))
                  for n in range(count)], np.int64)
  turn = np.asarray(yaws, np.float64)[None] - yaw_degrees(frames)[idx][:, None]
  zero = np.zeros_like(turn)
  rotation = frames.rotation[idx][:, None].astype(np.float64) @ camera.rotation_matrix(
      np.radians(turn), zero, zero)
  return idx, turn, rotation.astype(np.float32)


def truth_sets(frames: Frames, render, per_bucket: int, novel_count: int, seed: int = 0) -> dict:
  """The exact-truth protocols of the module docstring, as frame indices and truth images.

  ``render(identity, expression, rotation, translation) -> uint8 [S, S, 3]`` is the generator at
  the frames' size (``synthetic_renderer``). Returns ``{'cross_truth': {'source_index',
  'driving_index', 'truth' [P, S, S, 3], 'group' [P] (bucket names)}, 'novel': {'source_index'
  (the clip's first frame), 'frame_index', 'turn' (degrees), 'rotation' (the turned head's),
  'truth' [N * V, S, S, 3], 'group' ('yaw-40', ...)}}``, each part only when its count is > 0."""
  out = {}
  if per_bucket > 0:
    idx, bucket = cross_truth_pairs(frames, per_bucket, seed=seed)
    a, b = idx[:, 0], idx[:, 1]
    truth = np.stack([render(frames.identity[i], frames.expression[j], frames.rotation[j],
                             frames.translation[j]) for i, j in zip(a, b)])
    out["cross_truth"] = {"source_index": a, "driving_index": b, "truth": truth,
                          "group": np.asarray(bucket_names())[bucket]}
  if novel_count > 0:
    idx, turn, rotation = novel_view_items(frames, novel_count, seed=seed + 1)
    first = {i: g[0] for i, g in clip_of_frame(frames).items()}
    v = turn.shape[1]
    truth = np.stack([render(frames.identity[f], frames.expression[f], rotation[n, j],
                             frames.translation[f]) for n, f in enumerate(idx) for j in range(v)])
    out["novel"] = {"source_index": np.repeat([first[int(f)] for f in idx], v),
                    "frame_index": np.repeat(idx, v), "turn": turn.reshape(-1),
                    "rotation": rotation.reshape(-1, 3, 3), "truth": truth,
                    "group": np.tile([f"yaw{y:+g}" for y in NOVEL_YAWS], len(idx))}
  return out


def synthetic_renderer(builder, image_size: int):
  """``render`` of ``truth_sets``: the generator at ``builder``'s settings, quantised like the
  dataset and area-downscaled like ``load_frames`` to ``image_size``."""
  from minerf_jax.data.builders import synthetic_talking_heads as sth  # pylint: disable=g-import-not-at-top
  meta = builder.info.metadata

  def render(identity, expression, rotation, translation):
    rgb = sth.to_uint8(sth.ground_truth(meta, int(identity), expression, rotation,
                                        translation)["rgb"])
    if rgb.shape[0] != image_size:
      rgb = pipeline.area_downscale(rgb[None], image_size)[0].round().astype(np.uint8)
    return rgb

  return render


class _SamplePairs:
  """grain random map: a group of source frame indices -> a pair batch."""

  def __init__(self, frames: Frames, members: list[np.ndarray]):
    self.frames = frames
    self.members = members

  def __call__(self, batch: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    return sample_pairs(self.frames, self.members, np.asarray(batch), rng)


def train_dataset(frames: Frames, batch_size: int, seed: int):
  """grain MapDataset: index ``step`` is the batch of that step (shuffled, repeated)."""
  import grain  # pylint: disable=g-import-not-at-top
  members = clip_members(frames)
  if not members:
    raise ValueError("no clip has two frames: cannot form source/driving pairs")
  usable = np.concatenate(members)
  return (grain.MapDataset.source(usable.tolist())
          .shuffle(seed=seed)
          .repeat()
          .batch(batch_size, drop_remainder=True)
          .random_map(_SamplePairs(frames, members), seed=seed + 1))


def eval_sets(frames: Frames, max_clip_frames: int = 0, max_clips: int = 0,
              num_cross_pairs: int = 0, seed: int = 0) -> dict:
  """Both evaluation protocols on held-out frames (uint8 images).

  ``{'reconstruction': reconstruction_sets(...)[:max_clips], 'cross': {'source': [P,S,S,3],
  'driving': [P,S,S,3], 'driving_initial': [P,S,S,3]}}``; 'cross' only with ``num_cross_pairs``
  > 0 and two identities. ``driving_initial`` is the first frame of each driving frame's clip:
  the references animate across identities with relative motion from it.
  """
  clips = reconstruction_sets(frames, max_clip_frames)
  out = {"reconstruction": clips[:max_clips] if max_clips > 0 else clips}
  if num_cross_pairs > 0 and len(np.unique(frames.identity)) > 1:
    idx = cross_identity_pairs(frames, num_cross_pairs, seed=seed)
    out["cross"] = {"source": frames.rgb[idx[:, 0]], "driving": frames.rgb[idx[:, 1]],
                    "driving_initial": frames.rgb[clip_starts(frames)[idx[:, 1]]]}
  return out


def clip_starts(frames: Frames) -> np.ndarray:
  """int [N]: the index of the first frame of each frame's clip (frames are in clip order)."""
  first = {}
  for i, c in enumerate(frames.clip.tolist()):
    first.setdefault(c, i)
  return np.asarray([first[c] for c in frames.clip.tolist()], np.int64)


class PairData:
  """The 'pairs' Data object of ``train/loop.py``: this process's share of each pair batch.

  Config fields: ``data.batch_size`` (global), ``data.image_size`` (area downscale; 0 = as
  stored), ``config.eval.{max_clip_frames, max_clips, num_cross_pairs}``. Frames of this
  process's slice of the train split (``tfds.split_for_jax_process``) are held in host memory as
  uint8; batches are float32 in [0, 1].
  """

  def __init__(self, config: ml_collections.ConfigDict, *, process_index: int | None = None,
               process_count: int | None = None):
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    self.config = config
    dc = config.data
    self.process_index, self.process_count = pipeline.this_process(
        process_index, process_count, dc.batch_size, "data.batch_size")
    self.global_batch_size = int(dc.batch_size)
    self.builder = pipeline.dataset_builder(dc)
    split = tfds.split_for_jax_process("train", process_index=self.process_index,
                                       process_count=self.process_count)
    self.image_size = pipeline.image_size(config)
    self.train_frames = load_frames(self.builder, split, self.image_size)
    if self.train_frames.rgb.shape[1] != self.image_size:
      raise ValueError(f"frames are {self.train_frames.rgb.shape[1]}px but the config wants "
                       f"{self.image_size}px: set config.data.image_size to a divisor")
    seed = int(config.seed) * 1000 + self.process_index
    self._dataset = train_dataset(self.train_frames, dc.batch_size // self.process_count, seed)
    self.train_batch = pipeline.StepBatches(self._dataset)

  def example_batch(self) -> dict[str, np.ndarray]:
    return self._dataset[0]

  @functools.cached_property
  def eval_data(self) -> dict:
    ec = self.config.eval
    frames = load_frames(self.builder, "test", self.image_size)
    out = eval_sets(frames, int(ec.max_clip_frames), int(ec.max_clips),
                    int(ec.num_cross_pairs), seed=int(self.config.seed))
    for name, t in self.truth(frames).items():   # one source frame; novel views: driven by truth
      drive = frames.rgb[t["driving_index"]] if name == "cross_truth" else t["truth"]
      out[name] = {"source": frames.rgb[t["source_index"]], "driving": drive,
                   "truth": t["truth"], "group": t["group"]}
    return out

  def truth(self, frames: Frames) -> dict:
    """``truth_sets`` of held-out ``frames`` as ``config.eval.cross_truth_per_bucket`` and
    ``config.eval.novel_views`` ask (0: none); they need the generator (synthetic data)."""
    ec = self.config.eval
    per_bucket, novel = int(ec.get("cross_truth_per_bucket", 0)), int(ec.get("novel_views", 0))
    if not per_bucket and not novel:
      return {}
    if self.builder.name != "synthetic_talking_heads":
      raise ValueError("config.eval.cross_truth_per_bucket / novel_views need the generator's "
                       f"truth (synthetic_talking_heads), not {self.builder.name}: set them to 0")
    return truth_sets(frames, synthetic_renderer(self.builder, self.image_size), per_bucket,
                      novel, seed=int(self.config.seed))


# ----------------------------------------------------------------------------------------------
# Subject frames + a driving frame (Head3D: many frames of the subject video, not one source).


def _frame_fields(frames: Frames, idx: np.ndarray, prefix: str) -> dict[str, np.ndarray]:
  """Image, camera and pose of frames ``idx`` (any shape) under ``prefix_*`` keys."""
  return {prefix: frames.rgb[idx].astype(np.float32) / 255.0,
          f"{prefix}_intrinsics": frames.intrinsics[idx],
          f"{prefix}_rotation": frames.rotation[idx],
          f"{prefix}_translation": frames.translation[idx]}


def subject_indices(group: np.ndarray, count: int, exclude: int | None = None,
                    rng: np.random.Generator | None = None) -> np.ndarray:
  """``count`` frames of a clip's ``group`` in time order: random distinct ones (``rng``; drawn
  with repeats only when the clip is too short), else evenly spaced over the clip."""
  pool = group if exclude is None or len(group) <= count else group[group != exclude]
  if rng is None:
    pick = np.linspace(0, len(pool) - 1, count).round().astype(int)
  else:
    pick = np.sort(rng.choice(len(pool), count, replace=len(pool) < count))
  return pool[pick]


def sample_subjects(frames: Frames, members: list[np.ndarray], batch: np.ndarray,
                    rng: np.random.Generator, num_subject: int) -> dict[str, np.ndarray]:
  """For each driving index in ``batch``, ``num_subject`` other frames of its clip."""
  clip_of = {int(i): g for g in members for i in g}
  subjects = np.stack([subject_indices(clip_of[int(i)], num_subject, int(i), rng)
                       for i in batch])
  return {**_frame_fields(frames, subjects, "subject"), **_frame_fields(frames, batch, "driving"),
          "driving_face": frames.face[batch].astype(np.float32) / 255.0,
          "identity": frames.identity[batch].astype(np.int32),
          "clip": frames.clip[batch].astype(np.int32)}


class _SampleSubjects:
  """grain random map: a group of driving frame indices -> a subject batch."""

  def __init__(self, frames: Frames, members: list[np.ndarray], num_subject: int):
    self.frames, self.members, self.num_subject = frames, members, num_subject

  def __call__(self, batch: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    return sample_subjects(self.frames, self.members, np.asarray(batch), rng, self.num_subject)


def subject_eval_sets(frames: Frames, num_subject: int, max_clip_frames: int = 0,
                      max_clips: int = 0, num_cross_pairs: int = 0, seed: int = 0) -> dict:
  """Both protocols with subject frames (evenly spaced over the subject's clip).

  ``reconstruction``: per held-out clip, its subject frames and its frames as driving (with
  their cameras and poses; on synthetic data ``true_subject_depth`` and ``true_subject_face``). ``cross``: ``num_cross_pairs``
  fixed (clip of identity A, frame of identity B) pairs (``cross_identity_pairs``' draw).
  """
  members = clip_members(frames)
  clips = []
  for g in members[:max_clips] if max_clips > 0 else members:
    drive = g[:max_clip_frames] if max_clip_frames > 0 else g
    subject = subject_indices(g, num_subject)
    item = {**_frame_fields(frames, subject, "subject"),
            **_frame_fields(frames, drive, "driving"),
            "identity": int(frames.identity[g[0]]), "clip": int(frames.clip[g[0]])}
    if frames.depth is not None:   # the truth, for the geometry's evaluation (not model input)
      item["true_subject_depth"] = frames.depth[subject]
      item["true_subject_face"] = frames.face[subject] > 127
      item["true_subject_expression"] = frames.expression[subject]
    clips.append(item)
  out = {"reconstruction": clips}
  if num_cross_pairs > 0 and len(np.unique(frames.identity)) > 1:
    idx = cross_identity_pairs(frames, num_cross_pairs, seed=seed)
    clip_of = clip_of_frame(frames)   # a one-frame clip's subject frames repeat that frame
    subjects = np.stack([subject_indices(clip_of[int(a)], num_subject) for a in idx[:, 0]])
    out["cross"] = {**_frame_fields(frames, subjects, "subject"),
                    **_frame_fields(frames, idx[:, 1], "driving")}
  return out


class SubjectData(PairData):
  """The 'subjects' Data object: like ``PairData`` (same frames, splits, seeds and process
  sharding), each batch item is ``model.num_subject`` frames of a clip plus another of its
  frames to drive them (``sample_subjects``)."""

  def __init__(self, config: ml_collections.ConfigDict, **kwargs):
    super().__init__(config, **kwargs)
    import grain  # pylint: disable=g-import-not-at-top
    members = clip_members(self.train_frames)
    usable = np.concatenate(members)
    seed = int(config.seed) * 1000 + self.process_index
    self._dataset = (grain.MapDataset.source(usable.tolist()).shuffle(seed=seed).repeat()
                     .batch(config.data.batch_size // self.process_count, drop_remainder=True)
                     .random_map(_SampleSubjects(self.train_frames, members,
                                                 int(config.model.num_subject)), seed=seed + 1))
    self.train_batch = pipeline.StepBatches(self._dataset)

  @functools.cached_property
  def eval_data(self) -> dict:
    ec = self.config.eval
    frames = load_frames(self.builder, "test", self.image_size)
    k = int(self.config.model.num_subject)
    out = subject_eval_sets(frames, k, int(ec.max_clip_frames), int(ec.max_clips),
                            int(ec.num_cross_pairs), seed=int(self.config.seed))
    clip_of = clip_of_frame(frames)
    # The one-shot models' source frame first, then k - 1 more of its clip.
    subjects = lambda first: _frame_fields(frames, np.stack([
        np.concatenate([[a], subject_indices(clip_of[int(a)], k - 1, int(a))]) for a in first]),
                                           "subject")
    for name, t in self.truth(frames).items():
      base = {**subjects(t["source_index"]), "truth": t["truth"], "group": t["group"]}
      if name == "cross_truth":
        out[name] = {**base, **_frame_fields(frames, t["driving_index"], "driving")}
        continue
      f = t["frame_index"]
      out["novel"] = {**base, "driving": t["truth"].astype(np.float32) / 255.0,
                      "driving_intrinsics": frames.intrinsics[f], "driving_rotation": t["rotation"],
                      "driving_translation": frames.translation[f]}
      zero = np.zeros_like(t["turn"])
      out["novel_view"] = {**base, **_frame_fields(frames, f, "driving"),
                           "view": np.radians(np.stack([t["turn"], zero], -1)).astype(np.float32)}
    return out

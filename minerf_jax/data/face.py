"""Faces in real images: detection + 478 landmarks, crop, head pose, region masks, expression.

One code path serves video frames (``launch.prepare_data``) and single portraits
(``process_image``), so an animated photo is cropped exactly like the training data.

Tools: MediaPipe 0.10.21 FaceMesh (478 landmarks with iris refinement; the models ship in the
wheel, so it works offline) and SelfieSegmentation (a person mask, used to include hair in the head
mask). MediaPipe is imported lazily: the rest of the package works without it.

Conventions (shared with the synthetic dataset and the NeRF renderer)
  * Pixel coordinates are continuous with pixel centres at +0.5 (MediaPipe's normalised
    coordinates times the image size are already in this convention).
  * Camera: OpenCV pinhole (x right, y down, z forward). The original video's focal length is
    unknown; it is taken as ``focal_scale * max(H, W)`` of the source frame (recorded in the
    dataset metadata) and carried into every crop: a crop of side S resized to R scales focal and
    principal point by R / S.
  * Head coordinates: MediaPipe's canonical face model (``assets/canonical_face_model.txt``,
    centimetres, y up, z to the viewer) flipped to y down / z forward and scaled to decimetres,
    so the face looks towards -z and its half-width is ~0.78, the scale of the synthetic heads.
    ``X_cam = R X_head + t``.
  * Crops near the frame edge (``EDGE_MODES``): the square crop box (twice the landmark box) is
    moved inside the frame, and shrunk to the frame's shorter side only when it is larger than that,
    so a head near the top or side of a video never gets edge pixels replicated into streaks
    that every model would then learn. The box actually used is the one recorded (metadata) and
    the one the crop intrinsics come from, so camera geometry stays exact. Ours; the reference
    preprocessing scripts crop with a padded border. ``edge='replicate'`` keeps the earlier
    crops (edge pixels repeated) for comparison.
  * Head pose is a PnP fit of the canonical model to the 2-D landmarks of the rigid part of the
    face (forehead, nose, eye corners, cheekbones, temples): the mouth, jaw, lids and brows move
    with expression and would bias the pose.
  * Pose-normalised landmarks are the 3-D landmarks mapped into head coordinates by the
    similarity (Umeyama) that best aligns their rigid part with the canonical model; what remains
    is expression (and identity shape, removed later per identity).
"""
from __future__ import annotations

import dataclasses
import functools
import os
from typing import Iterable

import numpy as np

from minerf_jax import camera

NUM_LANDMARKS = 478          # 468 mesh points + 10 iris points
NUM_MESH = 468               # points that the canonical model has
CENTIMETRES_PER_UNIT = 10.0  # head coordinates are in decimetres
FOCAL_SCALE = 1.6            # assumed source-camera focal length / max(H, W)
CROP_SCALE = 2.0             # crop side / size of the landmark box (room for hair and neck)
CROP_SHIFT = 0.08            # crop centre moved up by this fraction of the landmark box side
EDGE_MODES = ("fit", "replicate")  # crop box near the frame edge (module docstring)
MASK_NAMES = ("face", "lips", "eyes", "torso_neck")  # same channels as synthetic_talking_heads
# Head box for the radiance field, head coordinates (dm): the canonical face spans
# x in [-0.78, 0.78], y in [-0.83, 0.94] (forehead to chin), z in [-0.76, 0.24]; the box adds
# hair above and behind, and the upper neck below.
HEAD_BOX = ((-1.15, -1.45, -1.0), (1.15, 1.45, 1.25))

# Rigid landmarks (move little with expression): forehead, nose bridge and tip, eye corners,
# cheekbones and temples.
RIGID = (10, 151, 9, 8, 108, 337, 67, 297, 109, 338, 168, 6, 197, 195, 5, 4, 1, 33, 133, 362,
         263, 130, 359, 127, 356, 234, 454, 116, 345, 123, 352, 50, 280, 48, 278, 98, 327)
CHIN, FOREHEAD = 152, 10
# Eyelid landmarks: (upper, lower, outer corner, inner corner) per eye (subject's right, left).
EYES = ((159, 145, 33, 133), (386, 374, 263, 362))


class NoFaceError(ValueError):
  """No face was found in an image."""


# ----------------------------------------------------------------------------------------------
# MediaPipe (lazy).


def _mediapipe():
  try:
    import mediapipe as mp  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError("face processing needs mediapipe 0.10.21: run `make install` or "
                      "`pip install --no-deps mediapipe==0.10.21` and `pip install -e .[face]`"
                      ) from e
  return mp


class FaceMesh:
  """MediaPipe FaceMesh + SelfieSegmentation. ``tracking=True`` for consecutive video frames
  (MediaPipe tracks the face between frames); use a fresh one after a shot change."""

  def __init__(self, tracking: bool = False):
    mp = _mediapipe()
    self._mesh = mp.solutions.face_mesh.FaceMesh(
        static_image_mode=not tracking, max_num_faces=1, refine_landmarks=True,
        min_detection_confidence=0.5, min_tracking_confidence=0.5)
    self._segmenter = None

  def landmarks(self, rgb: np.ndarray) -> np.ndarray | None:
    """float32 [478, 3] landmarks in pixels (x, y, z; z in x's scale, larger = farther) or
    None when no face is found."""
    h, w = rgb.shape[:2]
    result = self._mesh.process(np.ascontiguousarray(rgb))
    if not result.multi_face_landmarks:
      return None
    pts = np.array([(p.x, p.y, p.z) for p in result.multi_face_landmarks[0].landmark], np.float32)
    return pts * np.array([w, h, w], np.float32)

  def person_mask(self, rgb: np.ndarray) -> np.ndarray:
    """float32 [H, W] probability that a pixel shows the person (hair and clothes included)."""
    if self._segmenter is None:
      self._segmenter = _mediapipe().solutions.selfie_segmentation.SelfieSegmentation(
          model_selection=0)
    return np.asarray(self._segmenter.process(np.ascontiguousarray(rgb)).segmentation_mask,
                      np.float32)

  def close(self):
    self._mesh.close()
    if self._segmenter is not None:
      self._segmenter.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


# ----------------------------------------------------------------------------------------------
# Geometry.


@functools.lru_cache(maxsize=None)
def canonical_head() -> np.ndarray:
  """float32 [468, 3] canonical face model in head coordinates (dm, y down, z forward)."""
  path = os.path.join(os.path.dirname(__file__), "assets", "canonical_face_model.txt")
  cm = np.loadtxt(path, dtype=np.float64)
  return (cm * np.array([1.0, -1.0, -1.0]) / CENTIMETRES_PER_UNIT).astype(np.float32)


def landmark_box(landmarks: np.ndarray) -> np.ndarray:
  """[..., 3] square crop box (centre x, centre y, side) around 2-D landmarks [..., L, >=2]."""
  lo, hi = landmarks[..., :2].min(-2), landmarks[..., :2].max(-2)
  side = CROP_SCALE * (hi - lo).max(-1)
  centre = (lo + hi) / 2
  centre = centre - np.stack([np.zeros_like(side), CROP_SHIFT * side], -1)
  return np.concatenate([centre, side[..., None]], -1).astype(np.float32)


def integer_box(box: np.ndarray) -> tuple[int, int, int]:
  """(x0, y0, side) in whole pixels for a (cx, cy, side) box."""
  side = max(int(round(float(box[2]))), 2)
  return int(round(float(box[0]) - side / 2)), int(round(float(box[1]) - side / 2)), side


def fit_box(box: np.ndarray, image_hw: tuple[int, int]) -> np.ndarray:
  """A (cx, cy, side) box moved inside an ``image_hw`` frame, its side shrunk to the frame's
  shorter side when larger and made whole (so ``integer_box`` of it lies inside the frame)."""
  h, w = int(image_hw[0]), int(image_hw[1])
  side = float(min(max(int(round(float(box[2]))), 2), h, w))
  cx = float(np.clip(float(box[0]), side / 2, w - side / 2))
  cy = float(np.clip(float(box[1]), side / 2, h - side / 2))
  return np.asarray([cx, cy, side], np.float32)


def crop(rgb: np.ndarray, box: np.ndarray, resolution: int, edge: str = "fit") -> np.ndarray:
  """uint8 [R, R, 3] square crop of ``rgb`` at ``box``: ``edge='fit'`` first moves the box inside
  the image (``fit_box``); ``'replicate'`` repeats edge pixels where it runs outside."""
  import cv2  # pylint: disable=g-import-not-at-top
  if edge not in EDGE_MODES:
    raise ValueError(f"edge={edge!r}; use one of {EDGE_MODES}")
  if edge == "fit":
    box = fit_box(box, rgb.shape[:2])
  x0, y0, side = integer_box(box)
  h, w = rgb.shape[:2]
  pad = max(0, -x0, -y0, x0 + side - w, y0 + side - h)
  if pad:
    rgb = cv2.copyMakeBorder(rgb, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
  patch = rgb[y0 + pad:y0 + pad + side, x0 + pad:x0 + pad + side]
  interp = cv2.INTER_AREA if side > resolution else cv2.INTER_CUBIC
  return cv2.resize(patch, (resolution, resolution), interpolation=interp)


def to_crop(points: np.ndarray, box: np.ndarray, resolution: int) -> np.ndarray:
  """Maps pixel points [..., >=2] of the source image into crop pixels (z scales with x, y)."""
  x0, y0, side = integer_box(box)
  s = resolution / side
  out = np.array(points, np.float32, copy=True)
  out[..., 0] = (out[..., 0] - x0) * s
  out[..., 1] = (out[..., 1] - y0) * s
  out[..., 2:] *= s
  return out


def crop_intrinsics(box: np.ndarray, resolution: int, image_hw: tuple[int, int],
                    focal_scale: float = FOCAL_SCALE) -> np.ndarray:
  """float32 [3, 3] intrinsics of a crop: the source camera (focal ``focal_scale * max(H, W)``,
  principal point at the image centre) seen through the crop window."""
  h, w = image_hw
  x0, y0, side = integer_box(box)
  s = resolution / side
  return camera.intrinsics(focal_scale * max(h, w) * s, (w / 2 - x0) * s, (h / 2 - y0) * s)


def head_pose(landmarks_2d: np.ndarray, intrinsics: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """PnP of the canonical head's rigid points to 2-D landmarks: (R [3,3], t [3]) float32 with
  ``X_cam = R X_head + t`` (head coordinates in dm)."""
  import cv2  # pylint: disable=g-import-not-at-top
  obj = canonical_head()[list(RIGID)].astype(np.float64)
  img = np.asarray(landmarks_2d, np.float64)[list(RIGID), :2]
  k = np.asarray(intrinsics, np.float64)
  ok, rvec, tvec = cv2.solvePnP(obj, img, k, None, flags=cv2.SOLVEPNP_SQPNP)
  if not ok:
    raise NoFaceError("head pose fit failed")
  ok, rvec, tvec = cv2.solvePnP(obj, img, k, None, rvec, tvec, useExtrinsicGuess=True,
                                flags=cv2.SOLVEPNP_ITERATIVE)
  rot, _ = cv2.Rodrigues(rvec)
  return rot.astype(np.float32), tvec.reshape(3).astype(np.float32)


def similarity(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
  """Umeyama: (s, R, t) minimising ||s R src + t - dst||^2 over points [N, 3]."""
  src = np.asarray(src, np.float64)
  dst = np.asarray(dst, np.float64)
  mu_s, mu_d = src.mean(0), dst.mean(0)
  a, b = src - mu_s, dst - mu_d
  u, sig, vt = np.linalg.svd(b.T @ a / len(src))
  d = np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))])
  rot = u @ d @ vt
  scale = float(np.trace(np.diag(sig) @ d) / a.var(0).sum())
  return scale, rot, mu_d - scale * rot @ mu_s


def normalise_pose(landmarks_3d: np.ndarray) -> np.ndarray:
  """float32 [478, 3]: 3-D landmarks (pixels) in head coordinates (dm), via the similarity that
  aligns their rigid points with the canonical model."""
  rigid = list(RIGID)
  s, rot, t = similarity(landmarks_3d[rigid], canonical_head()[rigid])
  return (s * np.asarray(landmarks_3d, np.float64) @ rot.T + t).astype(np.float32)


def eye_openness(head_landmarks: np.ndarray) -> np.ndarray:
  """float32 [..., 2] lid gap / eye width per eye (subject's right, left), pose-normalised."""
  out = []
  for upper, lower, outer, inner in EYES:
    gap = np.linalg.norm(head_landmarks[..., upper, :] - head_landmarks[..., lower, :], axis=-1)
    width = np.linalg.norm(head_landmarks[..., outer, :] - head_landmarks[..., inner, :], axis=-1)
    out.append(gap / np.maximum(width, 1e-6))
  return np.stack(out, -1).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# Region masks.


def _loops(edges: Iterable[tuple[int, int]]) -> list[list[int]]:
  """Closed vertex loops of an undirected edge set (each vertex of degree 2)."""
  adj: dict[int, list[int]] = {}
  for a, b in edges:
    adj.setdefault(a, []).append(b)
    adj.setdefault(b, []).append(a)
  seen, loops = set(), []
  for start in sorted(adj):
    if start in seen:
      continue
    loop, prev, cur = [start], None, start
    seen.add(start)
    while True:
      nxt = [v for v in adj[cur] if v != prev]
      if not nxt or nxt[0] == start:
        break
      prev, cur = cur, nxt[0]
      if cur in seen:
        break
      seen.add(cur)
      loop.append(cur)
    loops.append(loop)
  return loops


@functools.lru_cache(maxsize=None)
def region_loops() -> dict[str, tuple[tuple[int, ...], ...]]:
  """Landmark index loops of the face oval, outer lips and both eyes (MediaPipe's mesh edges)."""
  fm = _mediapipe().solutions.face_mesh
  lips = _loops(fm.FACEMESH_LIPS)
  return {
      "face": tuple(tuple(l) for l in _loops(fm.FACEMESH_FACE_OVAL)),
      # outer contour = the longer loop; the inner one bounds the mouth opening (inside it)
      "lips": (tuple(max(lips, key=len)),),
      "eyes": tuple(tuple(l) for e in (fm.FACEMESH_LEFT_EYE, fm.FACEMESH_RIGHT_EYE)
                    for l in _loops(e)),
  }


def _fill(loops, points: np.ndarray, resolution: int) -> np.ndarray:
  import cv2  # pylint: disable=g-import-not-at-top
  mask = np.zeros((resolution, resolution), np.uint8)
  polys = [np.round(points[list(l), :2] * 16).astype(np.int32) for l in loops]
  cv2.fillPoly(mask, polys, 1, lineType=cv2.LINE_8, shift=4)
  return mask.astype(bool)


def region_masks(landmarks: np.ndarray, person: np.ndarray) -> np.ndarray:
  """bool [R, R, 4] masks (MASK_NAMES) of a crop from its landmarks (crop pixels) and person
  probability [R, R].

  face: the whole head (hair included): person pixels above a neck line a fifth of the
  forehead-chin distance below the chin, plus the landmark face oval. lips: the outer lip
  contour (mouth opening included). eyes: both eye contours dilated by a tenth of the eye width
  (lids included). torso_neck: person pixels that are not head.
  """
  import cv2  # pylint: disable=g-import-not-at-top
  res = person.shape[0]
  loops = region_loops()
  oval = _fill(loops["face"], landmarks, res)
  lips = _fill(loops["lips"], landmarks, res)
  eyes = _fill(loops["eyes"], landmarks, res)
  eye_w = np.linalg.norm(landmarks[33, :2] - landmarks[133, :2])
  k = max(1, int(round(0.2 * eye_w)))
  eyes = cv2.dilate(eyes.astype(np.uint8), np.ones((2 * k + 1, 2 * k + 1), np.uint8)) > 0
  chin_y = landmarks[CHIN, 1]
  neck_y = chin_y + 0.2 * (chin_y - landmarks[FOREHEAD, 1])
  rows = (np.arange(res) + 0.5)[:, None] < neck_y
  body = person > 0.5
  head = (body & rows) | oval
  return np.stack([head, lips, eyes, body & ~head], -1)


# ----------------------------------------------------------------------------------------------
# Single images.


@dataclasses.dataclass(frozen=True)
class FaceCrop:
  """A face cropped like the training data."""
  rgb: np.ndarray          # uint8 [R, R, 3]
  landmarks: np.ndarray    # float32 [478, 3] crop pixels (z in x's scale)
  head_landmarks: np.ndarray  # float32 [478, 3] pose-normalised, head coordinates (dm)
  rotation: np.ndarray     # float32 [3, 3]
  translation: np.ndarray  # float32 [3]
  intrinsics: np.ndarray   # float32 [3, 3]
  masks: np.ndarray        # bool [R, R, 4] (MASK_NAMES)
  box: np.ndarray          # float32 (cx, cy, side) in source pixels


def crop_face(rgb: np.ndarray, landmarks: np.ndarray, box: np.ndarray, resolution: int,
              mesh: FaceMesh, focal_scale: float = FOCAL_SCALE, edge: str = "fit") -> FaceCrop:
  """Everything about one face given its source-image landmarks and (smoothed) crop box (moved
  inside the frame first with ``edge='fit'``; ``FaceCrop.box`` is the box used)."""
  if edge == "fit":
    box = fit_box(box, rgb.shape[:2])
  patch = crop(rgb, box, resolution, edge)
  lm = to_crop(landmarks, box, resolution)
  k = crop_intrinsics(box, resolution, rgb.shape[:2], focal_scale)
  rot, t = head_pose(lm, k)
  masks = region_masks(lm, mesh.person_mask(patch))
  return FaceCrop(rgb=patch, landmarks=lm, head_landmarks=normalise_pose(lm), rotation=rot,
                  translation=t, intrinsics=k, masks=masks, box=np.asarray(box, np.float32))


def load_image(path: str) -> np.ndarray:
  """uint8 [H, W, 3] RGB; a one-line error for a missing or unreadable file."""
  import cv2  # pylint: disable=g-import-not-at-top
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path}: no such image file")
  bgr = cv2.imread(path, cv2.IMREAD_COLOR)
  if bgr is None:
    raise ValueError(f"{path}: cannot decode image; use a PNG or JPEG file")
  return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def process_image(image: np.ndarray | str, resolution: int = 256,
                  focal_scale: float = FOCAL_SCALE) -> FaceCrop:
  """Crops a single portrait (array or path) exactly as ``prepare_data`` crops video frames.

  Raises NoFaceError (one line naming the file) when no face is found.
  """
  name = image if isinstance(image, str) else "image"
  rgb = load_image(image) if isinstance(image, str) else np.asarray(image)
  if rgb.ndim != 3 or rgb.shape[-1] != 3 or rgb.dtype != np.uint8:
    raise ValueError(f"{name}: expected an RGB uint8 image [H, W, 3], got {rgb.dtype} "
                     f"{rgb.shape}")
  with FaceMesh(tracking=False) as mesh:
    lm = mesh.landmarks(rgb)
    if lm is None:
      raise NoFaceError(f"{name}: no face found; use a photo with one clearly visible face")
    return crop_face(rgb, lm, landmark_box(lm), resolution, mesh, focal_scale)

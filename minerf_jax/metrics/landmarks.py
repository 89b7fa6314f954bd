"""Face-landmark motion metrics for one-shot face animation: AKD and ARD.

The image metrics of ``minerf_jax.metrics`` (PSNR, SSIM, ...) say how close a generated frame is
to the ground truth pixel by pixel; the motion metrics of the face animation literature (FOMM,
TPSMM, MCNet, MRFA) say whether the generated face *moves* like the driving face. Both compare a
generated frame with the ground-truth (driving) frame of the same time step, in the reconstruction
setting where the driving video is also the target.

AKD (average keypoint distance)
  Face landmarks are detected independently on the generated and the ground-truth frame; AKD is
  the Euclidean distance between corresponding landmarks, in pixels of the evaluated image
  resolution, averaged over the landmarks and then over the frames where *both* images have a
  detected face. ``akd_missing`` is the fraction of frames where detection failed on either image
  (the "missing keypoint rate" of the papers, per frame rather than per keypoint). An evaluation
  where no frame has a face on both sides has ``akd = nan``.

ARD (average rotation distance)
  The head rotation of each frame is a PnP fit (``face.head_pose``) of MediaPipe's canonical face
  model to the rigid landmarks; ARD is the geodesic angle between the two rotations,
  ``arccos((trace(R1^T R2) - 1) / 2)`` in degrees, averaged over the frames where both poses were
  found (``ard_missing`` is the fraction where either was not). The angle is evaluated as
  ``atan2(|vee(M - M^T)| / 2, (trace M - 1) / 2)`` with ``M = R1^T R2``: the same angle, but
  exactly 0 for identical rotations and accurate near 0 and 180 degrees, where arccos is not.

Differences from the papers' numbers
  The papers detect 68 landmarks with ``face-alignment`` (and AKD in FOMM is on 256 x 256 frames);
  here the detector is MediaPipe FaceMesh (478 landmarks incl. iris, ``face.FaceMesh``), so values
  are comparable between methods evaluated with this module, not with published tables. The papers'
  ARD uses a separate head-pose network (Hopenet, Euler angles); this one uses PnP on the
  landmarks and a geodesic angle.

Camera
  A frame of S x S pixels is assumed to come from a pinhole camera with focal length
  ``face.FOCAL_SCALE * S`` and principal point at the image centre (the convention of
  ``face.crop_intrinsics`` for an uncropped image). ARD only compares the rotations of two frames
  of the same size under the same assumed camera, so the assumed focal length matters little
  (it shifts both poses' perspective alike; an in-plane image rotation about the centre is
  exactly a camera roll whatever the focal).

Small images
  Evaluated frames may be 64 x 64, far below the sizes MediaPipe is made for. Each image whose
  shorter side is below ``min_detect_size`` is upsampled by the smallest integer factor that
  reaches it (bilinear, pixel-centre aligned, numpy only) before detection, and the landmarks are
  mapped back to the original pixel units (continuous coordinates with pixel centres at +0.5, as
  everywhere in ``face``). With MediaPipe 0.10.21 on the real clips of ``../shared/media``, faces
  were found at 32 and 64 px with or without it, but the landmarks of a 64 x 64 frame were about
  twice as accurate with it (0.39 px against 0.75 px mean distance to the landmarks of the same
  frame at 256 px, scaled down).

Detection runs MediaPipe in static-image mode (no tracking): frames are independent, and tracking
would let a failed frame borrow the previous frame's face. Everything here is numpy + MediaPipe +
OpenCV on the CPU; nothing is jitted.
"""
from __future__ import annotations

import math

import numpy as np

from minerf_jax import camera
from minerf_jax.data import face
from minerf_jax.data import video


def _as_uint8_batch(images) -> np.ndarray:
  """uint8 [N, H, W, 3] from uint8 or float-in-[0,1] images, batched or a single [H, W, 3]."""
  arr = np.asarray(images)
  if arr.ndim == 3:
    arr = arr[None]
  if arr.ndim != 4 or arr.shape[-1] != 3:
    raise ValueError(f"landmark metrics expect RGB images [N, H, W, 3], got shape {arr.shape}")
  return video.to_uint8(arr)


def upsample(image: np.ndarray, factor: int) -> np.ndarray:
  """Bilinear integer upsampling of a uint8 [H, W, C] image to [factor H, factor W, C].

  Pixel-centre aligned: output pixel centre ``j + 0.5`` samples the input at ``(j + 0.5) / factor``
  (edges clamped), so a point at continuous coordinate ``x`` of the output is at ``x / factor`` in
  the input.
  """
  if factor <= 1:
    return image

  def axis_weights(n: int):
    x = (np.arange(n * factor) + 0.5) / factor - 0.5
    x0 = np.floor(x).astype(np.int64)
    w = (x - x0).astype(np.float32)
    return np.clip(x0, 0, n - 1), np.clip(x0 + 1, 0, n - 1), w

  img = image.astype(np.float32)
  r0, r1, wr = axis_weights(image.shape[0])
  c0, c1, wc = axis_weights(image.shape[1])
  rows = img[r0] * (1 - wr)[:, None, None] + img[r1] * wr[:, None, None]
  out = rows[:, c0] * (1 - wc)[None, :, None] + rows[:, c1] * wc[None, :, None]
  return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def image_intrinsics(height: int, width: int,
                     focal_scale: float = face.FOCAL_SCALE) -> np.ndarray:
  """float32 [3, 3]: focal ``focal_scale * max(H, W)``, principal point at the image centre."""
  return camera.intrinsics(focal_scale * max(height, width), width / 2, height / 2)


class LandmarkMetrics:
  """AKD / ARD of generated frames against ground-truth frames (see the module docstring).

  The MediaPipe FaceMesh is created on first use and released by ``close()``; use the object as a
  context manager, or keep one for a whole evaluation (creating the mesh takes ~0.5 s).

  Args:
    min_detect_size: images whose shorter side is smaller are upsampled by an integer factor to at
      least this size before detection (MediaPipe's landmarks are more accurate on the
      upsampled image); landmarks are still returned in pixels of the given images.
  """

  def __init__(self, min_detect_size: int = 192):
    self.min_detect_size = int(min_detect_size)
    self._mesh: face.FaceMesh | None = None

  # -- lifetime --------------------------------------------------------------------------------

  def _get_mesh(self) -> face.FaceMesh:
    if self._mesh is None:
      self._mesh = face.FaceMesh(tracking=False)  # one-line ImportError without mediapipe
    return self._mesh

  def close(self):
    """Releases the MediaPipe graph (a later call creates a new one)."""
    if self._mesh is not None:
      self._mesh.close()
      self._mesh = None

  def __enter__(self) -> LandmarkMetrics:
    return self

  def __exit__(self, *exc):
    self.close()

  # -- detection -------------------------------------------------------------------------------

  def landmarks(self, images) -> tuple[np.ndarray, np.ndarray]:
    """Detects the face landmarks of each image independently.

    Args:
      images: [N, S, S, 3] (or [N, H, W, 3], or one [H, W, 3]) uint8, or float in [0, 1].

    Returns:
      (points float32 [N, 478, 2] in pixels of the given images (x, y; pixel centres at +0.5),
      NaN where no face was found; found bool [N]).
    """
    frames = _as_uint8_batch(images)
    n, h, w = frames.shape[:3]
    factor = max(1, math.ceil(self.min_detect_size / max(1, min(h, w))))
    points = np.full((n, face.NUM_LANDMARKS, 2), np.nan, np.float32)
    found = np.zeros(n, bool)
    mesh = self._get_mesh() if n else None
    for i, frame in enumerate(frames):
      lm = mesh.landmarks(upsample(frame, factor))
      if lm is not None:
        points[i] = lm[:, :2] / factor
        found[i] = True
    return points, found

  def rotations(self, points: np.ndarray, found: np.ndarray,
                image_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Head rotations from landmarks: (R float32 [N, 3, 3], NaN where missing; ok bool [N]).

    ``points``/``found`` as returned by ``landmarks``; ``image_hw`` the images' (H, W), which
    sets the assumed camera (``image_intrinsics``).
    """
    k = image_intrinsics(*image_hw)
    rots = np.full((len(found), 3, 3), np.nan, np.float32)
    ok = np.zeros(len(found), bool)
    for i in np.flatnonzero(found):
      try:
        rots[i], _ = face.head_pose(points[i], k)
      except face.NoFaceError:
        continue
      ok[i] = np.isfinite(rots[i]).all()
    return rots, ok

  # -- metrics ---------------------------------------------------------------------------------

  @staticmethod
  def _akd(pred_points, pred_found, target_points, target_found) -> dict:
    both = pred_found & target_found
    n = len(both)
    missing = float(1 - both.mean()) if n else math.nan
    if not both.any():
      return {"akd": math.nan, "akd_missing": missing}
    dist = np.linalg.norm(pred_points[both].astype(np.float64)
                          - target_points[both].astype(np.float64), axis=-1)  # [F, 478]
    return {"akd": float(dist.mean(-1).mean()), "akd_missing": missing}

  def _ard(self, pred_points, pred_found, target_points, target_found, image_hw) -> dict:
    pred_rot, pred_ok = self.rotations(pred_points, pred_found, image_hw)
    target_rot, target_ok = self.rotations(target_points, target_found, image_hw)
    both = pred_ok & target_ok
    n = len(both)
    missing = float(1 - both.mean()) if n else math.nan
    if not both.any():
      return {"ard": math.nan, "ard_missing": missing}
    angles = camera.rotation_angle_degrees(pred_rot[both], target_rot[both])
    return {"ard": float(angles.mean()), "ard_missing": missing}

  def _detect_pair(self, pred, target):
    pred, target = _as_uint8_batch(pred), _as_uint8_batch(target)
    if pred.shape != target.shape:
      raise ValueError(f"pred and target differ in shape: {pred.shape} vs {target.shape}")
    return self.landmarks(pred), self.landmarks(target), pred.shape[1:3]

  def akd(self, pred, target) -> dict:
    """{'akd': mean landmark distance in pixels (nan if no frame has a face on both sides),
    'akd_missing': fraction of frames where either side has no face}."""
    (pp, pf), (tp, tf), _ = self._detect_pair(pred, target)
    return self._akd(pp, pf, tp, tf)

  def ard(self, pred, target) -> dict:
    """{'ard': mean geodesic head-rotation difference in degrees (nan if none valid),
    'ard_missing': fraction of frames where either side has no pose}."""
    (pp, pf), (tp, tf), hw = self._detect_pair(pred, target)
    return self._ard(pp, pf, tp, tf, hw)

  def grouped_motion_metrics(self, pred, target, groups) -> dict[str, dict]:
    """``motion_metrics`` of each group of frames (``groups`` [N] labels) and of ``'all'``,
    detecting every image once."""
    (pp, pf), (tp, tf), hw = self._detect_pair(pred, target)
    groups = np.asarray(groups)
    out = {}
    for name in ["all"] + sorted(set(groups.tolist()), key=groups.tolist().index):
      m = np.ones(len(groups), bool) if name == "all" else groups == name
      out[name] = {**self._akd(pp[m], pf[m], tp[m], tf[m]),
                   **self._ard(pp[m], pf[m], tp[m], tf[m], hw)}
    return out

  def motion_metrics(self, pred, target) -> dict:
    """AKD and ARD together (``akd``, ``akd_missing``, ``ard``, ``ard_missing``), detecting the
    landmarks of each image set once."""
    (pp, pf), (tp, tf), hw = self._detect_pair(pred, target)
    return {**self._akd(pp, pf, tp, tf), **self._ard(pp, pf, tp, tf, hw)}

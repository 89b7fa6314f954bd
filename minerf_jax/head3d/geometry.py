"""Self-supervised head geometry: a depth network, a pose network, and the reprojection losses.

What is the paper's (Ni et al., WACV 2024, "3D-Aware Talking-Head Video Motion Transfer"; no
public code, the abstract only): a self-supervised 3-D head geometry module predicts head pose and
depth maps from 2-D frames of the subject video. Everything below is ours, after monodepth2
(Godard et al., 2019), whose recipe the abstract's "self-supervised" most plausibly means:

* ``DepthNet``: frame -> z-depth, an hourglass (TPSMM's, ``motion.dense_motion.Hourglass``) and a
  sigmoid disparity mapped into ``[1 / max_depth, 1 / min_depth]`` (monodepth2's depth range
  prior; here it fixes the metric scale that monocular self-supervision leaves open).
* ``PoseNet``, two forms (``geometry.pose_net``):
    - ``absolute`` (default): one frame -> its head pose ``X_cam = R X_head + t`` as a rotation
      (axis-angle) and a translation about a prior head position ``(0, 0, head_depth)``. Heads turn
      about their own centre, so relative poses composed from two absolute ones pivot where heads
      pivot, and A->B->A is the identity by construction. The canonical (head) frame is
      unsupervised up to one rotation; ``pose_centring`` pulls the batch-mean rotation to the
      identity, so the canonical head faces the camera as the average frame does.
    - ``pairwise``: two frames -> the relative pose (monodepth2's form; the rotation pivots about
      the camera, and A->B->A is only learned, which the tests measure).
  Rotations and translations leave the last layer at ``rotation_scale`` / ``translation_scale``
  (monodepth2 uses 0.01 for both; ours 0.1 for the rotation: head turns of 20-40 deg are 0.35-0.7
  rad, and at 0.01 a pose net taught the data's rotations is still at 18.5 of 20 deg error after
  300 steps, at 0.1 at 6.7); the last layer starts at zero, so an untrained net predicts the
  prior pose.
* The loss for a target frame and its source frames: the source warped into the target through
  the target's depth and the target->source pose (``camera.reproject`` + bilinear sampling), a
  photometric error ``alpha (1 - SSIM) / 2 + (1 - alpha) L1`` (alpha 0.85), the per-pixel minimum
  over the sources, auto-masking (a pixel counts only where the warp explains it better than the
  unwarped source does: the static wall and torso behind a turning head drop out, as do frames
  that do not move), plus an edge-aware smoothness of the mean-normalised disparity. One scale,
  not monodepth2's four (ours: the heads here are small images).

``pose_source=landmarks`` (the data's per-frame pose: PnP of the landmarks on real clips, the
generator's own on synthetic ones) replaces the pose network by the data's pose; the depth network
is still learned. ``pose_supervision`` (ours; default 0, the paper's self-supervision alone) adds a
teacher term instead: the squared Frobenius distance between the pose network's relative rotation
and the data's, so the network is still what predicts the pose (of any frame, with or without
landmarks) but learns it from the landmark PnP. Why it is there: on the generator's 64-px heads
the photometric signal is weak. Optimising each pair's pose directly, with the *true* depth,
recovers only ~30% of a 2.7 deg rotation, and a pose net trained by reprojection alone stays at
the identity (``launch.benchmark --suite=head3d_pose_signal``).
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from minerf_jax import camera
from minerf_jax.metrics import image as image_metrics
from minerf_jax.motion import dense_motion
from minerf_jax.motion import warp

POSE_NETS = ("absolute", "pairwise")


def default_config() -> ml_collections.ConfigDict:
  """``config.model.geometry``: the fields this module reads."""
  return ml_collections.ConfigDict(dict(
      pose_net="absolute",        # absolute | pairwise (see the module docstring)
      pose_source="learned",      # learned | landmarks (the data's per-frame pose)
      block_expansion=16, num_blocks=4, max_features=128,   # depth hourglass
      pose_features=(16, 32, 64, 128),                      # pose encoder (stride-2 blocks)
      min_depth=2.0, max_depth=12.0,
      head_depth=5.0,             # prior head distance (the synthetic generator's 5.0)
      rotation_scale=0.1, translation_scale=0.01,
      ssim_weight=0.85, smoothness_weight=1e-3, pose_centring=1e-2,
      pose_supervision=0.0,       # weight of the data's relative rotation as a teacher (ours)
  ))


class DepthNet(nn.Module):
  """frames [B, H, W, 3] in [0, 1] -> (z-depth [B, H, W], disparity [B, H, W])."""
  block_expansion: int = 16
  num_blocks: int = 4
  max_features: int = 128
  min_depth: float = 2.0
  max_depth: float = 12.0

  @nn.compact
  def __call__(self, frames: jax.Array) -> tuple[jax.Array, jax.Array]:
    feats = dense_motion.Hourglass(self.block_expansion, self.num_blocks, self.max_features,
                                   name="hourglass")(frames)[-1]
    logit = dense_motion.conv(1, 3, "disparity")(feats)[..., 0]
    lo, hi = 1.0 / self.max_depth, 1.0 / self.min_depth
    disparity = lo + (hi - lo) * jax.nn.sigmoid(logit)
    return 1.0 / disparity, disparity


class PoseNet(nn.Module):
  """images [B, H, W, C] -> (axis-angle [B, 3], translation [B, 3]), scaled; zero at init."""
  features: Sequence[int] = (16, 32, 64, 128)
  rotation_scale: float = 0.1
  translation_scale: float = 0.01

  @nn.compact
  def __call__(self, images: jax.Array) -> tuple[jax.Array, jax.Array]:
    x = images
    for i, f in enumerate(self.features):
      x = dense_motion.DownBlock(f, name=f"down{i}")(x)
    x = nn.Conv(6, (1, 1), kernel_init=nn.initializers.zeros, name="pose")(x)
    x = jnp.mean(x, axis=(1, 2))
    return x[:, :3] * self.rotation_scale, x[:, 3:] * self.translation_scale


class Geometry(nn.Module):
  """The depth and pose networks of ``config.model.geometry`` (``default_config``'s fields).

  ``depth(frames)``; ``head_pose(frames)`` (absolute form only); ``relative_pose(target,
  source)``: the pose mapping target-camera points to source-camera points.
  """
  config: ml_collections.ConfigDict

  def setup(self):
    c = self.config
    if c.pose_net not in POSE_NETS:
      raise ValueError(f"config.model.geometry.pose_net={c.pose_net!r}; choose one of {POSE_NETS}")
    self.depth_net = DepthNet(c.block_expansion, c.num_blocks, c.max_features, c.min_depth,
                              c.max_depth)
    self.pose_net = PoseNet(tuple(c.pose_features), c.rotation_scale, c.translation_scale)

  def depth(self, frames: jax.Array) -> tuple[jax.Array, jax.Array]:
    return self.depth_net(frames)

  def head_pose(self, frames: jax.Array) -> camera.Pose:
    """Absolute form: each frame's ``X_cam = R X_head + t``."""
    if self.config.pose_net != "absolute":
      raise ValueError("head_pose needs config.model.geometry.pose_net='absolute'")
    rot, trans = self.pose_net(frames)
    prior = jnp.asarray([0.0, 0.0, self.config.head_depth], trans.dtype)
    return camera.axis_angle_matrix(rot), trans + prior

  def relative_pose(self, target: jax.Array, source: jax.Array) -> camera.Pose:
    if self.config.pose_net == "absolute":
      return camera.relative(self.head_pose(target), self.head_pose(source))
    rot, trans = self.pose_net(jnp.concatenate([target, source], -1))
    return camera.axis_angle_matrix(rot), trans

  def __call__(self, target: jax.Array, source: jax.Array):
    """(depth of target, relative pose target->source): what ``init`` traces."""
    return self.depth(target), self.relative_pose(target, source)


# ----------------------------------------------------------------------------------------------
# Warping and losses (pure functions of arrays).


def pixel_to_grid(xy: jax.Array, height: int, width: int) -> jax.Array:
  """Pixel positions (centres at +0.5) -> ``warp.grid_sample``'s ``[-1, 1]`` (align_corners)."""
  scale = jnp.asarray([max(width - 1, 1), max(height - 1, 1)], xy.dtype)
  return 2.0 * (xy - 0.5) / scale - 1.0


def inverse_warp(source: jax.Array, target_depth: jax.Array, k_target: jax.Array,
                 pose: camera.Pose, k_source: jax.Array) -> tuple[jax.Array, jax.Array]:
  """The source image [B, H, W, C] seen from the target camera.

  Every target pixel, unprojected at ``target_depth`` [B, H, W], moved by ``pose`` (target ->
  source camera, [B, 3, 3] and [B, 3]) and projected with ``k_source``, samples the source
  bilinearly (border padding). Returns (warped [B, H, W, C], valid [B, H, W]: lands on the
  source image, pixel areas included, and in front of its camera).
  """
  b, h, w = target_depth.shape
  pixels = jnp.asarray(camera.pixel_grid(h, w))
  r, t = pose
  xy, z = camera.reproject(pixels[None], target_depth, k_target[:, None, None],
                           (r[:, None, None], t[:, None, None]), k_source[:, None, None])
  valid = ((z > 1e-3) & (xy[..., 0] >= 0.0) & (xy[..., 0] <= w)
           & (xy[..., 1] >= 0.0) & (xy[..., 1] <= h))
  warped = warp.grid_sample(source, pixel_to_grid(xy, h, w), padding_mode="border")
  return warped, valid


def photometric_error(pred: jax.Array, target: jax.Array, ssim_weight: float = 0.85,
                      ) -> jax.Array:
  """[B, H, W]: ``a (1 - SSIM) / 2 + (1 - a) L1``, per pixel, channel mean; SSIM over 3x3
  Gaussian windows of the reflection-padded images (monodepth2 pads the same way, with box
  windows)."""
  l1 = jnp.mean(jnp.abs(pred - target), -1)
  pad = lambda x: jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
  ssim = jnp.mean(image_metrics.ssim_map(pad(pred), pad(target), filter_size=3,
                                         filter_sigma=0.75), -1)
  return ssim_weight * jnp.clip(1.0 - ssim, 0.0, 2.0) / 2.0 + (1.0 - ssim_weight) * l1


def smoothness(disparity: jax.Array, image: jax.Array) -> jax.Array:
  """Edge-aware smoothness of the mean-normalised disparity [B, H, W] (scalar)."""
  d = disparity / (jnp.mean(disparity, axis=(1, 2), keepdims=True) + 1e-7)
  dx, dy = jnp.abs(d[:, :, 1:] - d[:, :, :-1]), jnp.abs(d[:, 1:] - d[:, :-1])
  ix = jnp.mean(jnp.abs(image[:, :, 1:] - image[:, :, :-1]), -1)
  iy = jnp.mean(jnp.abs(image[:, 1:] - image[:, :-1]), -1)
  return jnp.mean(dx * jnp.exp(-ix)) + jnp.mean(dy * jnp.exp(-iy))


def reprojection_loss(target: jax.Array, sources: Sequence[jax.Array],
                      warped: Sequence[jax.Array], valid: Sequence[jax.Array],
                      ssim_weight: float = 0.85) -> tuple[jax.Array, jax.Array]:
  """monodepth2's per-pixel minimum over sources with auto-masking.

  A pixel's error is the smallest over the sources of the warped source's photometric error
  (an invalid sample counts as error 1); it counts only where that is below the smallest error
  of the *unwarped* sources (ties go to the unwarped side, so a pixel that nothing moves is out).
  Returns (mean error over the counted pixels, the mask [B, H, W]).
  """
  warped_err = jnp.stack([jnp.where(v, photometric_error(p, target, ssim_weight), 1.0)
                          for p, v in zip(warped, valid)])
  still_err = jnp.stack([photometric_error(s, target, ssim_weight) for s in sources])
  best = jnp.min(warped_err, 0)
  mask = best < jnp.min(still_err, 0)
  loss = jnp.sum(jnp.where(mask, best, 0.0)) / jnp.maximum(jnp.sum(mask), 1.0)
  return loss, mask


def rotation_distance(r1: jax.Array, r2: jax.Array) -> jax.Array:
  """Mean squared Frobenius distance of rotations [..., 3, 3] (``4 (1 - cos angle)``): smooth
  at zero, unlike the geodesic angle."""
  return jnp.mean(jnp.sum(jnp.square(r1 - r2), (-2, -1)))


def loss(geometry: Geometry, params, target: jax.Array, sources: Sequence[jax.Array],
         k_target: jax.Array, k_sources: Sequence[jax.Array],
         poses: Sequence[camera.Pose] | None = None,
         teacher: Sequence[camera.Pose] | None = None) -> tuple[jax.Array, dict]:
  """The self-supervised geometry loss of one target frame batch and its source frames.

  ``poses`` (target -> each source), when given, replace the pose network's
  (``pose_source=landmarks``). ``teacher`` (the same, from the data) is the target of the
  ``pose_supervision`` term when its weight is set. Returns (scalar loss, metrics).
  """
  c = geometry.config
  depth, disparity = geometry.apply(params, target, method=Geometry.depth)
  warped, valid, supervised = [], [], []
  for i, (src, k_src) in enumerate(zip(sources, k_sources)):
    if poses is None:
      pose = geometry.apply(params, target, src, method=Geometry.relative_pose)
      if c.pose_supervision and teacher is not None:
        supervised.append(rotation_distance(pose[0], teacher[i][0]))
    else:
      pose = poses[i]
    w_img, v = inverse_warp(src, depth, k_target, pose, k_src)
    warped.append(w_img)
    valid.append(v)
  repro, mask = reprojection_loss(target, sources, warped, valid, c.ssim_weight)
  smooth = smoothness(disparity, target)
  total = repro + c.smoothness_weight * smooth
  metrics = {"geometry/reprojection": repro, "geometry/smoothness": smooth,
             "geometry/automask": jnp.mean(mask)}
  if supervised:
    teach = sum(supervised) / len(supervised)
    total = total + c.pose_supervision * teach
    metrics["geometry/pose_supervision"] = teach
  if poses is None and c.pose_net == "absolute" and c.pose_centring:
    frames = jnp.concatenate([target] + list(sources), 0)
    rot, _ = geometry.apply(params, frames, method=lambda m, x: m.pose_net(x))
    centring = jnp.sum(jnp.square(jnp.mean(rot, 0)))
    total = total + c.pose_centring * centring
    metrics["geometry/centring"] = centring
  return total, metrics

"""Head3D: 3-D-aware talking-head motion transfer from many subject frames (Ni et al., WACV 2024).

The paper has no public code; its abstract says: unlike one-shot methods it uses many frames of
the subject video; a self-supervised 3-D head geometry module predicts head pose and depth; a
recurrent network fuses the frames into a visually interpretable 3-D canonical head, which is
transformed to each driving pose and rendered; an attention-based fusion network adds background
and details from the subject frames. Each part's docstring says what it chose; the composition
here is ours too:

1. **Geometry** (``head3d/geometry.py``): z-depth of every subject frame; head poses of the
   subject frames and of the driving frame: the absolute pose net (default), the pairwise net
   (poses relative to the first subject frame, which is put at the prior pose), or the data's
   own poses (``model.geometry.pose_source=landmarks``); ``model.geometry.pose_supervision``
   lets the data's relative rotations teach the learned pose net (ours, off by default).
2. **Canonical head** (``head3d/canonical.py``): the subject frames, lifted with their depth and
   moved to head coordinates, folded one after another into a tri-plane; rendered at the driving
   frame's pose (colour, opacity, features) at the frame's size.
3. **2-D warping** (TPSMM's parts: keypoint detector, dense motion, the generator's encoder and
   decoder; ``model.warper`` holds their sizes): every subject frame's encoder maps warped to the
   driving frame with its dense motion (absolute keypoints; the background affine is not used)
   and occlusion masks.
4. **Fusion** (``head3d/fuse.py``, ``model.fusion``): at every encoder level, per-pixel attention
   over the rendered head (its features, colour and opacity, area-downsampled to the level) and
   the K warped subject maps, with each subject frame's pose agreement with the driving pose;
   the fused levels go through the generator's decoder (its occlusion blend with a warped source
   is not used: the decoder renders every pixel).

Training loss (``config.loss``): the reconstruction of the driving frame (perceptual pyramid as
TPSMM's, or L1), keypoint equivariance, the self-supervised geometry loss with the driving frame as
target and the subject frames as sources, and the canonical head's own photometric loss on the
driving frame's face mask plus its opacity against that mask (``loss.canonical``,
``loss.canonical_mask``). Inference: ``animate`` (subject frames + driving frames; pose overrides
for novel views), ``render_canonical`` (the canonical head at any head pose; ``frontal_pose``
gives the canonical frame's front view; ``launch.render --mode=canonical``).
"""
from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from minerf_jax import camera
from minerf_jax import losses
from minerf_jax.head3d import canonical as canonical_lib
from minerf_jax.head3d import fuse
from minerf_jax.head3d import geometry as geometry_lib
from minerf_jax.models import animation
from minerf_jax.models import summaries
from minerf_jax.motion import generator as generator_lib

POSE_SOURCES = ("learned", "landmarks")


def batch_spec(config: ml_collections.ConfigDict) -> str:
  del config
  return "subjects"


def data_relative_poses(batch: dict) -> list[camera.Pose]:
  """The data's relative poses driving frame -> each subject frame of a 'subjects' batch (one
  ``(R [B, 3, 3], t [B, 3])`` per subject frame)."""
  rel = camera.relative((batch["driving_rotation"][:, None], batch["driving_translation"][:, None]),
                        (batch["subject_rotation"], batch["subject_translation"]))
  return [(rel[0][:, i], rel[1][:, i]) for i in range(batch["subject"].shape[1])]


def _flat(x: jax.Array) -> jax.Array:
  return x.reshape((-1,) + x.shape[2:])


class Head3DNet(nn.Module):
  """Geometry, canonical head, TPSMM warper and the per-level fusions (module docstring)."""
  config: ml_collections.ConfigDict

  def setup(self):
    mc = self.config
    if mc.geometry.pose_source not in POSE_SOURCES:
      raise ValueError(f"config.model.geometry.pose_source={mc.geometry.pose_source!r}; choose "
                       f"one of {POSE_SOURCES}")
    self.geometry = geometry_lib.Geometry(mc.geometry)
    self.canonical = canonical_lib.CanonicalHead(mc.canonical, tuple(map(tuple, mc.box)))
    w = mc.warper
    self.warper = animation.AnimationNet(
        system="tpsmm", num_tps=int(w.num_tps), points_per_tps=int(w.points_per_tps),
        detector_width=float(w.detector_width), dense_motion_kw=dict(w.dense_motion),
        generator_kw=dict(w.generator), memory_kw={}, refine_kw={})
    gen = w.generator
    levels = gen.num_down_blocks + 1
    width = lambda i: min(gen.max_features, gen.block_expansion * 2 ** i)
    # Encoder level i (fine to coarse) has width(i) channels; decoder order is coarse to fine.
    self.fusions = [fuse.AttentionFusion(width(i), mc.fusion, name=f"fusion{i}")
                    for i in range(levels)]

  # -- the subject side: what the subject frames alone determine --------------------------------

  def encode_subject(self, batch: dict, train: bool = False, driving: jax.Array | None = None,
                     transformed: jax.Array | None = None) -> dict:
    """The subject frames' images, depth and disparity, head poses, canonical state, keypoints
    and encoder maps, every array with the batch axis first ([B, K, ...]; the state [B, ...]).

    With ``driving`` (the forward pass of training and ``predict``) the pose and keypoint
    networks take the subject and driving frames as one batch (one set of BatchNorm statistics
    in training) and the driving frame's pose and keypoints come back as ``pose_driving`` and
    ``kp_driving``; without it (``Head3D.animate``) the result drives any number of frames.
    ``transformed`` (training: the equivariance loss's warped driving frames) joins the keypoint
    batch too, so that one step updates the BatchNorm statistics once (``kp_transformed``)."""
    subject = batch["subject"]
    b, k, h, w = subject.shape[:4]
    flat = _flat(subject)
    depth, disparity = self.geometry.depth(flat)
    out = {"subject": subject, "depth": depth.reshape(b, k, h, w),
           "disparity": disparity.reshape(b, k, h, w)}
    gc = self.config.geometry
    both = flat if driving is None else jnp.concatenate([flat, driving])
    if gc.pose_source == "landmarks":
      out["pose_subject"] = (batch["subject_rotation"], batch["subject_translation"])
    elif gc.pose_net == "absolute":
      r, t = self.geometry.head_pose(both)
      out["pose_subject"] = (r[:b * k].reshape(b, k, 3, 3), t[:b * k].reshape(b, k, 3))
      if driving is not None:
        out["pose_driving"] = (r[b * k:], t[b * k:])
    else:   # pairwise: relative to the first subject frame, which sits at the prior pose
      rel = self.geometry.relative_pose(jnp.repeat(subject[:, :1], k, 1).reshape(flat.shape),
                                        flat)
      r, t = camera.compose(rel, tuple(jnp.repeat(p, k, 0) for p in self._prior(b)))
      out["pose_subject"] = (r.reshape(b, k, 3, 3), t.reshape(b, k, 3))
    out["state"] = self.canonical.fold_all(subject, out["depth"], batch["subject_intrinsics"],
                                           out["pose_subject"])
    kp = self.warper.keypoints(both if transformed is None else jnp.concatenate(
        [both, transformed]), train)
    out["kp_subject"] = kp[:b * k].reshape((b, k) + kp.shape[1:])
    if driving is not None:
      out["kp_driving"] = kp[b * k:b * k + len(driving)]
    if transformed is not None:
      out["kp_transformed"] = kp[len(both):]
    out["maps"] = [m.reshape((b, k) + m.shape[1:]) for m in self.warper.generator.encode(flat)]
    return out

  def _prior(self, b: int) -> camera.Pose:
    return (jnp.broadcast_to(jnp.eye(3), (b, 3, 3)),
            jnp.broadcast_to(jnp.asarray([0.0, 0.0, self.config.geometry.head_depth]), (b, 3)))

  def driving_pose(self, subject: dict, batch: dict) -> camera.Pose:
    """The driving frame's head pose [B] (``encode_subject`` gives it when it saw the frame)."""
    if "pose_driving" in subject:
      return subject["pose_driving"]
    if self.config.geometry.pose_source == "landmarks":
      return batch["driving_rotation"], batch["driving_translation"]
    driving = batch["driving"]
    if self.config.geometry.pose_net == "absolute":
      return self.geometry.head_pose(driving)
    rel = self.geometry.relative_pose(subject["subject"][:, 0], driving)
    return camera.compose(rel, self._prior(driving.shape[0]))

  # -- the driving side ----------------------------------------------------------------------

  def decode(self, rendered: dict, warped: list[jax.Array], pose_angle: jax.Array
             ) -> tuple[jax.Array, list[jax.Array]]:
    """Fuses the rendered head with the warped maps at every level and decodes the frame."""
    head = jnp.concatenate([rendered["features"], rendered["rgb"], rendered["acc"][..., None]], -1)
    fused, attention = [], []
    size = head.shape[1]
    for level, w in enumerate(warped):             # coarse to fine
      factor = size // w.shape[2]
      r = nn.avg_pool(head, (factor, factor), (factor, factor)) if factor > 1 else head
      i = len(warped) - 1 - level                  # encoder level (0 = finest)
      f, a = self.fusions[i](r, w, pose_angle)
      fused.append(f)
      attention.append(a)
    zeros = jnp.zeros(head.shape[:3] + (1,), head.dtype)
    pred = self.warper.generator.decode(fused, jnp.zeros(head.shape[:3] + (3,), head.dtype), zeros)
    return pred, attention

  def drive(self, batch: dict, subject: dict, train: bool = False) -> dict:
    """The driving frames of ``batch`` from ``encode_subject``'s ``subject`` (same batch size):
    the canonical head rendered at the driving pose (turned further by ``batch['view']``, [B, 2]
    yaw and pitch in radians, for novel views), every subject frame's encoder maps warped to the
    driving frame (TPSMM's dense motion, absolute keypoints, no background affine), fused and
    decoded."""
    driving = batch["driving"]
    b, h, w = driving.shape[:3]
    k = subject["depth"].shape[1]
    pose_s = subject["pose_subject"]
    pose_d = self.driving_pose(subject, batch)
    if "view" in batch:
      yaw, pitch = batch["view"][:, 0], batch["view"][:, 1]
      pose_d = (pose_d[0] @ camera.rotation_matrix(yaw, pitch, jnp.zeros_like(yaw)), pose_d[1])
    rendered = self.canonical.render(subject["state"], batch["driving_intrinsics"], pose_d, h, w)
    kp_d = subject["kp_driving"] if "kp_driving" in subject else self.warper.keypoints(driving,
                                                                                       train)
    motion = self.warper.dense_motion(_flat(subject["subject"]), _flat(subject["kp_subject"]),
                                      jnp.repeat(kp_d, k, 0), None)
    warped = generator_lib.warp_features([_flat(m) for m in subject["maps"]],
                                         motion["deformation"], motion["occlusion_map"])
    angle = jax.lax.stop_gradient(camera.rotation_angle_degrees(
        pose_s[0], jnp.repeat(pose_d[0][:, None], k, 1)))
    pred, attention = self.decode(rendered, [x.reshape((b, k) + x.shape[1:]) for x in warped],
                                  angle)
    return {"prediction": pred, "rendered": rendered, "attention": attention,
            "subject_depth": subject["depth"], "subject_disparity": subject["disparity"],
            "pose_subject": pose_s, "pose_driving": pose_d, "kp_driving": kp_d,
            "pose_angle": angle}

  def __call__(self, batch: dict, train: bool = False, transformed: jax.Array | None = None
               ) -> dict:
    """The whole forward pass (``drive`` of ``encode_subject``); with ``transformed`` also its
    keypoints (``kp_transformed``)."""
    subject = self.encode_subject(batch, train, batch["driving"], transformed)
    out = self.drive(batch, subject, train)
    if transformed is not None:
      out["kp_transformed"] = subject["kp_transformed"]
    return out


class Head3D:
  """The model seam (``minerf_jax/models/__init__.py``) for Head3D; like the animation models,
  ``params`` and ``batch_stats`` (the keypoint ResNet's BatchNorm) are separate trees."""

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    self.name = config.model.name
    self.net = Head3DNet(config.model)
    self.geometry = geometry_lib.Geometry(config.model.geometry)   # params: params['geometry']
    self.features = animation.perceptual_features(config)
    self._forward = jax.jit(self._forward_fn)
    self._encode = jax.jit(self._encode_fn)
    self._drive = jax.jit(self._drive_fn)
    self._render_canonical = jax.jit(self._render_canonical_fn, static_argnames=("size",))

  # -- init / training ---------------------------------------------------------------------------

  def init_variables(self, rng: jax.Array, batch: dict) -> dict:
    small = {k: jnp.asarray(v[:1]) for k, v in batch.items() if k.startswith(("subject",
                                                                              "driving"))}
    variables = jax.jit(functools.partial(self.net.init, train=False))(
        {"params": rng, "dropout": rng}, small)
    return {"params": variables["params"], "batch_stats": variables["batch_stats"]}

  def init(self, rng: jax.Array, batch: dict) -> Any:
    return self.init_variables(rng, batch)["params"]

  def loss(self, params, batch, rng, step, batch_stats=None):
    """``(total, (metrics, new_batch_stats))``; see the module docstring for the terms."""
    del step
    lc, mc = self.config.loss, self.config.model
    driving = batch["driving"]
    transformed, transform = losses.random_transform_frame(rng, driving)

    out, updates = self.net.apply({"params": params, "batch_stats": batch_stats}, batch,
                                  train=True, transformed=transformed, mutable=["batch_stats"])
    pred = out["prediction"]
    terms = animation.reconstruction_terms(self.features, lc, pred, driving, out["kp_driving"],
                                           out["kp_transformed"], transform)
    geo_metrics = {}
    if lc.geometry > 0:
      data_poses = None
      if mc.geometry.pose_source == "landmarks" or mc.geometry.pose_supervision:
        data_poses = data_relative_poses(batch)
      geo, geo_metrics = self._geometry_loss(params, batch, data_poses)
      terms["geometry"] = lc.geometry * geo
    face = batch["driving_face"]
    rendered = out["rendered"]
    if lc.canonical > 0:
      err = jnp.sum(jnp.abs(rendered["rgb"] - driving) * face[..., None]) / (
          3.0 * jnp.maximum(jnp.sum(face), 1.0))
      terms["canonical"] = lc.canonical * err
    if lc.canonical_mask > 0:
      terms["canonical_mask"] = lc.canonical_mask * jnp.mean(jnp.abs(rendered["acc"] - face))
    total = sum(terms.values())
    mse = jnp.mean((pred - driving) ** 2)
    head_mse = jnp.sum((rendered["rgb"] - driving) ** 2 * face[..., None]) / (
        3.0 * jnp.maximum(jnp.sum(face), 1.0))
    metrics_out = {**{f"loss_{k}": v for k, v in terms.items()}, **geo_metrics,
                   "psnr": -10.0 * jnp.log10(mse), "canonical_psnr": -10.0 * jnp.log10(head_mse),
                   "attention_rendered": jnp.mean(out["attention"][-1][..., 0])}
    return total, (metrics_out, updates["batch_stats"])

  def _geometry_loss(self, params, batch, data_poses):
    """The self-supervised geometry loss: the driving frame as target, each subject frame as a
    source. ``data_poses`` (driving -> each subject frame, from the data's poses) replace the
    pose network's under ``pose_source=landmarks``, or teach it under ``pose_supervision``."""
    k = batch["subject"].shape[1]
    landmarks = self.config.model.geometry.pose_source == "landmarks"
    return geometry_lib.loss(
        self.geometry, {"params": params["geometry"]}, batch["driving"],
        [batch["subject"][:, i] for i in range(k)], batch["driving_intrinsics"],
        [batch["subject_intrinsics"][:, i] for i in range(k)],
        poses=data_poses if landmarks else None, teacher=None if landmarks else data_poses)

  def trainable(self, params):
    return jax.tree.map(lambda _: True, params)

  def load_pretrained(self, params, pretrained):
    return animation.AnimationModel.load_pretrained(self, params, pretrained)

  # -- inference ---------------------------------------------------------------------------------

  def _variables(self, params, batch_stats):
    if batch_stats is None:
      raise ValueError(f"model {self.name!r} needs its BatchNorm statistics (batch_stats)")
    return {"params": params, "batch_stats": batch_stats}

  @staticmethod
  def _outputs(out: dict) -> dict:
    return {"prediction": out["prediction"], "rendered_rgb": out["rendered"]["rgb"],
            "rendered_acc": out["rendered"]["acc"], "subject_depth": out["subject_depth"],
            "pose_subject": out["pose_subject"], "pose_driving": out["pose_driving"]}

  def _forward_fn(self, params, batch_stats, batch):
    return self._outputs(self.net.apply(self._variables(params, batch_stats), batch))

  def _encode_fn(self, params, batch_stats, subject):
    return self.net.apply(self._variables(params, batch_stats), subject,
                          method=Head3DNet.encode_subject)

  def _drive_fn(self, params, batch_stats, batch, subject):
    """``subject``: one subject's ``encode_subject`` (batch 1), broadcast over the batch."""
    n = batch["driving"].shape[0]
    subject = jax.tree.map(lambda x: jnp.broadcast_to(x, (n,) + x.shape[1:]), subject)
    return self._outputs(self.net.apply(self._variables(params, batch_stats), batch, subject,
                                        method=Head3DNet.drive))

  def predict(self, params, batch: dict, batch_stats=None) -> dict:
    """A subject batch (``pairs.sample_subjects``' keys) -> prediction, rendered head, depth and
    poses. ``view`` [B, 2] (yaw, pitch in radians) turns the driving head further: a novel view
    of the canonical head (``R_driving @ Ry(yaw) Rx(pitch)``; the warped frames still follow the
    driving frame, and the attention sees the turned pose)."""
    return self._forward(params, batch_stats, {k: jnp.asarray(v) for k, v in batch.items()
                                               if k.startswith(("subject", "driving", "view"))})

  def animate(self, params, subject: dict, driving: dict, *, batch_stats=None, chunk: int = 16,
              progress=None, outputs: tuple[str, ...] = ("prediction",)):
    """Subject frames (``subject``, ``subject_intrinsics``, ... of K frames) driven by each
    driving frame (``driving``, ``driving_intrinsics``, ... [T, ...]; ``view`` [T, 2] for novel
    views, see ``predict``) -> ``prediction`` [T, S, S, 3] (or a dict of the named ``predict``
    outputs, each over the T frames). The subject side (depth, poses, canonical head, keypoints,
    encoder maps) is computed once and drives every chunk."""
    encoded = self._encode(params, batch_stats,
                           {k: jnp.asarray(v)[None] for k, v in subject.items()})
    t = len(driving["driving"])
    out = {name: [] for name in outputs}
    for start in range(0, t, chunk):
      n = min(chunk, t - start)
      piece = {k: jnp.asarray(animation._pad_to(np.asarray(v[start:start + n]), chunk))  # pylint: disable=protected-access
               for k, v in driving.items()}
      result = jax.device_get(self._drive(params, batch_stats, piece, encoded))
      for name in outputs:
        out[name].append(jax.tree.map(lambda x: np.asarray(x)[:n], result[name]))
      if progress is not None:
        progress(start + n)
    out = {name: jax.tree.map(lambda *xs: np.concatenate(xs), *parts)
           for name, parts in out.items()}
    return out["prediction"] if outputs == ("prediction",) else out

  def _render_canonical_fn(self, params, batch_stats, subject, k, pose, size):
    def run(net):
      state = net.encode_subject(subject)["state"]
      n = pose[0].shape[0]
      state = jax.tree.map(lambda x: jnp.broadcast_to(x, (n,) + x.shape[1:]), state)
      out = net.canonical.render(state, jnp.broadcast_to(k, (n, 3, 3)), pose, size, size)
      return {"rgb": out["rgb"], "acc": out["acc"]}
    return nn.apply(run, self.net)(self._variables(params, batch_stats))

  def frontal_pose(self, yaw_degrees=0.0, pitch_degrees=0.0) -> camera.Pose:
    """Head pose(s) of the canonical frame seen from the front at the prior distance (turned by
    ``yaw``/``pitch``, arrays or floats): ``(R, (0, 0, model.geometry.head_depth))``."""
    yaw = np.radians(np.asarray(yaw_degrees, np.float32))
    pitch = np.radians(np.broadcast_to(np.asarray(pitch_degrees, np.float32), yaw.shape))
    rot = camera.rotation_matrix(yaw, pitch, np.zeros_like(yaw)).astype(np.float32)
    trans = np.broadcast_to(np.float32([0.0, 0.0, self.config.model.geometry.head_depth]),
                            yaw.shape + (3,))
    return rot, trans

  def render_canonical(self, params, subject: dict, pose: camera.Pose, *, batch_stats=None,
                       intrinsics: np.ndarray | None = None, size: int | None = None) -> dict:
    """The canonical head folded from the subject frames (``subject``, ``subject_intrinsics``,
    ... of K frames; any K) rendered at head poses ``pose`` ([V, 3, 3], [V, 3]; e.g.
    ``frontal_pose``) through ``intrinsics`` (default: the first subject frame's) at ``size``:
    ``{'rgb': [V, S, S, 3], 'acc': [V, S, S]}``."""
    size = size or subject["subject"].shape[-2]
    k = np.asarray(subject["subject_intrinsics"][0] if intrinsics is None else intrinsics)
    out = self._render_canonical(params, batch_stats,
                                 {k_: jnp.asarray(v)[None] for k_, v in subject.items()},
                                 jnp.asarray(k, jnp.float32),
                                 tuple(jnp.asarray(p, jnp.float32) for p in pose), size=int(size))
    return jax.device_get(out)

  def _items(self, params, batch_stats, items: dict, chunk: int) -> np.ndarray:
    """Predictions of N independent items (``subject*`` [N, K, ...], ``driving*`` [N, ...],
    optional ``view``), ``chunk`` at a time (the last chunk padded: one compiled shape)."""
    keys = [k for k in items if k.startswith(("subject", "driving", "view"))]
    return animation.in_chunks(
        lambda *values: self.predict(params, dict(zip(keys, values)), batch_stats)["prediction"],
        [items[k] for k in keys], chunk)

  def summary_images(self, params, eval_data: dict, batch_stats=None) -> dict:
    """TensorBoard media (``summaries.pair_summaries``): the first held-out clip driven from its
    subject frames (subject frame 0, driving, prediction; video and strip) and the
    cross-identity items."""
    chunk = int(self.config.eval.chunk)

    def animate(clip, n):
      subject = {k: v for k, v in clip.items() if k.startswith("subject")}
      driving = {k: np.asarray(v)[:n] for k, v in clip.items() if k.startswith("driving")}
      pred = self.animate(params, subject, driving, batch_stats=batch_stats, chunk=chunk)
      return clip["subject"][0], driving["driving"], pred

    return summaries.pair_summaries(
        animate, lambda b: self._items(params, batch_stats, b, chunk), eval_data)

  def evaluate(self, params, eval_data: dict, batch_stats=None) -> dict[str, float]:
    """The animation models' protocols (``animation.protocol_metrics``) with subject frames:
    reconstruction of each held-out clip, the cross-identity pairs (motion metrics against the
    driver) and, on synthetic data, the exact-truth cross-identity pairs, the novel views driven
    by the truth (``novel``) and the pose-controlled novel views (``novel_view``: A's own frame
    with the head turned by the model's ``view`` input). On synthetic data also the geometry
    against the generator's truth: ``depth_abs_rel`` of the subject frames' depth on their face
    pixels (and ``depth_abs_rel_scaled``, after the median scaling of monocular depth
    evaluation), and ``pose_error_deg``, the rotation error of the relative pose subject frame
    0 -> each driving frame."""
    ec = self.config.eval
    chunk = int(ec.chunk)
    preds, targets, abs_rel, abs_rel_scaled, rot_err = [], [], [], [], []
    for clip in eval_data["reconstruction"]:
      subject = {k: v for k, v in clip.items() if k.startswith("subject")}
      driving = {k: v for k, v in clip.items() if k.startswith("driving")}
      out = self.animate(params, subject, driving, batch_stats=batch_stats, chunk=chunk,
                         outputs=("prediction", "subject_depth", "pose_subject", "pose_driving"))
      preds.append(out["prediction"])
      targets.append(clip["driving"])
      if "true_subject_depth" in clip:
        face = clip["true_subject_face"]
        pred_d, true_d = out["subject_depth"][0][face], clip["true_subject_depth"][face]
        abs_rel.append(np.mean(np.abs(pred_d - true_d) / true_d))
        scaled = pred_d * np.median(true_d) / np.median(pred_d)
        abs_rel_scaled.append(np.mean(np.abs(scaled - true_d) / true_d))
        (r_s, _), (r_d, _) = out["pose_subject"], out["pose_driving"]
        pred_rel = r_d @ np.swapaxes(r_s[:, 0], -1, -2)
        true_rel = clip["driving_rotation"] @ clip["subject_rotation"][0].T
        rot_err.append(camera.rotation_angle_degrees(pred_rel, true_rel))
    cross = eval_data.get("cross")
    cross = (self._items(params, batch_stats, cross, chunk), cross["driving"]) if cross else None
    truths = {name: (self._items(params, batch_stats, eval_data[name], chunk),
                     eval_data[name]["truth"].astype(np.float32) / 255.0, eval_data[name]["group"])
              for name in ("cross_truth", "novel", "novel_view") if name in eval_data}
    results = animation.protocol_metrics(ec, (np.concatenate(preds), np.concatenate(targets)),
                                         cross, truths)
    if abs_rel:
      results.update({"geometry/depth_abs_rel": float(np.mean(abs_rel)),
                      "geometry/depth_abs_rel_scaled": float(np.mean(abs_rel_scaled)),
                      "geometry/pose_error_deg": float(np.mean(np.concatenate(rot_err)))})
    return results


def default_model_config(size: str, box) -> ml_collections.ConfigDict:
  """``config.model`` of Head3D at ``size`` ('full', 'cpu' or 'test'; TPSMM's warper sizes)."""
  from minerf_jax.models import tpsmm  # pylint: disable=g-import-not-at-top
  warper = tpsmm.model_config(size)
  geometry = geometry_lib.default_config()
  canon = canonical_lib.default_config()
  if size == "test":
    warper.generator.num_down_blocks = 2
    geometry.update(block_expansion=8, num_blocks=3, max_features=32, pose_features=(8, 16))
    canon.update(plane_resolution=16, state_dim=8, encoder_features=(8,), feature_dim=8,
                 mlp_width=16, num_samples=12)
  elif size == "cpu":
    canon.update(plane_resolution=32, state_dim=16, encoder_features=(16,), feature_dim=16,
                 mlp_width=32, num_samples=16)
  else:
    geometry.update(block_expansion=32, num_blocks=5, max_features=256,
                    pose_features=(32, 64, 128, 256, 256))
    canon.update(plane_resolution=64, state_dim=64, encoder_features=(32, 64), feature_dim=32,
                 mlp_width=128, num_samples=32)
  return ml_collections.ConfigDict(dict(
      name="head3d", num_subject=4 if size != "test" else 2, fusion="attention",
      box=tuple(tuple(float(v) for v in c) for c in box),
      geometry=geometry, canonical=canon,
      warper=dict(num_tps=warper.num_tps, points_per_tps=warper.points_per_tps,
                  detector_width=warper.detector_width, dense_motion=dict(warper.dense_motion),
                  generator=dict(warper.generator)),
  ))


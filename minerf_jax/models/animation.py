"""One-shot face animation: TPSMM, MCNet and MRFA behind the model seam.

``config.model.prior`` picks the keypoints and dense motion (``PRIORS``). With ``'tps'`` (TPSMM,
and our TPSMM-based MCNet and MRFA variants) a source image ``S`` and a driving frame ``D`` of
the same person go through the steps below. With ``'fomm'`` (the published MCNet; MRFA's FOMM
option) or ``'mtia'`` (the published MRFA) the detector gives K keypoints with 2x2 Jacobians
(``motion/fomm.py``, ``motion/mtia.py``), FOMM's dense motion blends local affine motions into
one flow with one occlusion map, and there is no background predictor; MCNet then runs the
BatchNorm generator with its memory as in 3, and MRFA hands flow and occlusion logit to
``motion/raft_flow.py``, which refines them while its own generator decodes. The losses add
the Jacobians' equivariance (``loss.equivariance_jacobian``) and MCNet's keypoint distance.

The TPS path (NHWC, ``[0, 1]``):

1. the keypoint detector (``motion.keypoints``): ``K x 5`` TPS control points on each frame, and
   the background predictor: a 3x3 affine from ``(S, D)``;
2. the dense motion network (``motion.dense_motion``): K thin-plate splines + the background
   affine combined into one backward flow, plus an occlusion mask per generator scale;
3. the generator (``motion.generator``): encode ``S``, warp and occlude its feature maps, then
   * **tpsmm** decodes them directly;
   * **mcnet** first compensates them with the identity-conditioned meta-memory
     (``motion.memory``; ``model.memory='off'`` skips it: TPSMM with MCNet's config);
   * **mrfa** first refines flow and occlusion coarse to fine from the keypoint structure
     correlation volume (``motion.correlation``; ``model.refine_steps=0`` keeps the prior);
   and decodes the prediction of ``D``.

Training losses (``config.loss``, reference weights of TPSMM's vox-256 config, see
``minerf_jax/losses.py``): the pyramid perceptual loss, keypoint equivariance under a random TPS,
the warp loss on encoder features, the background cycle loss (from ``model.bg_start`` of the
schedule on; before it the background transform is the identity, as the reference's
``bg_start`` epoch), MCNet's memory consistency loss, and an optional plain L1 term (0 in the
references). Dense-motion dropout of whole transforms (TPSMM) ramps from 0 to
``model.dropout_p`` over ``model.dropout_ramp`` of the schedule and stops at
``model.dropout_until``; fractions of ``total_steps``, so shorter schedules keep the proportions.

The keypoint detector and background predictor are ResNet-18s with BatchNorm: their running
statistics are the ``batch_stats`` collection, carried in ``TrainState.batch_stats`` (the loop
passes them to ``loss`` and takes the updated ones back). In one step the three frames whose
keypoints are needed (source, driving, and the randomly warped driving frame of the
equivariance loss) go through the detector as one batch, so they share batch statistics (the
reference runs them as three batches).

Inference (``animate``) uses the running statistics. Relative motion (``relative=True``, FOMM's
``find_best_frame=False`` demo setting) moves the source keypoints by the driving keypoints'
displacement from the first driving frame, scaled by the ratio of the keypoint hull areas; the
background is then kept still. Absolute motion (reconstruction) uses the driving keypoints and the
predicted background affine, as the references' reconstruction protocol.
"""
from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from minerf_jax import losses
from minerf_jax import metrics
from minerf_jax.data import augment
from minerf_jax.data import pipeline
from minerf_jax.motion import correlation
from minerf_jax.motion import dense_motion
from minerf_jax.motion import fomm
from minerf_jax.motion import generator as generator_lib
from minerf_jax.motion import keypoints
from minerf_jax.motion import memory as memory_lib
from minerf_jax.motion import mtia
from minerf_jax.motion import raft_flow
from minerf_jax.motion import tps as tps_lib
from minerf_jax.motion import transfer
from minerf_jax.motion import warp
from minerf_jax.models import summaries

SYSTEMS = ("tpsmm", "mcnet", "mrfa")
# config.model.prior: the keypoints and dense motion. 'tps': TPSMM's K thin-plate splines of 5
# keypoints (ResNet-18 detector, background affine, one occlusion mask per scale); 'fomm': FOMM's
# keypoints with local-affine Jacobians (hourglass detector, no background predictor; the base
# of the published MCNet), ``motion/fomm.py``; 'mtia': MRFA's default, FOMM's dense motion with
# keypoints and Jacobians from an HRNet + TokenPose detector (``motion/mtia.py``). MRFA on 'mtia'
# or 'fomm' is the published MRFA: the prior's dense motion with its occlusion logit refined by
# ``motion/raft_flow.py``'s RaftFlow, which has its own generator.
PRIORS = ("tps", "fomm", "mtia")
ON_OFF = ("on", "off")
DETECTOR_BATCHES = ("separate", "joint")
# config.data.augment: the references' vox-256 values (data/augment.py) and all off.
AUGMENT_REFERENCE = dict(time_flip=True, horizontal_flip=True, brightness=0.1, contrast=0.1,
                         saturation=0.1, hue=0.1)
AUGMENT_OFF = dict(time_flip=False, horizontal_flip=False, brightness=0.0, contrast=0.0,
                   saturation=0.0, hue=0.0)


def batch_spec(config: ml_collections.ConfigDict) -> str:
  del config
  return "pairs"


class AnimationNet(nn.Module):
  """TPSMM's four networks plus MCNet's memory or MRFA's refinement (``system``)."""
  system: str
  num_tps: int
  points_per_tps: int
  detector_width: float
  dense_motion_kw: dict
  generator_kw: dict
  memory_kw: dict
  refine_kw: dict
  use_memory: bool = True
  multi_mask: bool = True
  bn_axis_name: str | None = None
  prior: str = "tps"
  num_kp: int = 15                     # prior 'fomm' / 'mtia': keypoints
  kp_detector_kw: dict | None = None   # ... and the detector's sizes

  def setup(self):
    if self.system not in SYSTEMS:
      raise ValueError(f"config.model.name={self.system!r}; choose one of {SYSTEMS}")
    if self.prior not in PRIORS:
      raise ValueError(f"config.model.prior={self.prior!r}; choose one of {PRIORS}")
    if self.prior != "tps":
      detector = mtia.MTIAKeypointDetector if self.prior == "mtia" else fomm.KeypointDetector
      self.detector = detector(num_kp=self.num_kp, axis_name=self.bn_axis_name,
                               **(self.kp_detector_kw or {}))
      self.dense_motion = fomm.DenseMotionNetwork(num_kp=self.num_kp,
                                                  axis_name=self.bn_axis_name,
                                                  **self.dense_motion_kw)
    else:
      num_scales = self.generator_kw.get("num_down_blocks", 3) + 1
      self.detector = keypoints.KeypointDetector(self.num_tps, self.points_per_tps,
                                                 self.detector_width, self.bn_axis_name)
      self.bg_predictor = keypoints.BackgroundMotionPredictor(self.detector_width,
                                                              self.bn_axis_name)
      self.dense_motion = dense_motion.DenseMotionNetwork(
          num_tps=self.num_tps, points_per_tps=self.points_per_tps,
          num_occlusion_masks=num_scales, multi_mask=self.multi_mask, **self.dense_motion_kw)
    if self.published_mrfa:   # RaftFlow holds MRFA's own generator
      self.refine = raft_flow.RaftFlow(generator_kw=dict(self.generator_kw),
                                       axis_name=self.bn_axis_name, **self.refine_kw)
      return
    self.generator = generator_lib.InpaintingGenerator(multi_mask=self.multi_mask,
                                                       axis_name=self.bn_axis_name,
                                                       **self.generator_kw)
    if self.system == "mcnet":
      self.memory = memory_lib.MemoryCompensation(**self.memory_kw)
    if self.system == "mrfa":
      self.refine = correlation.CorrelationRefinement(
          scale_factor=self.dense_motion_kw.get("scale_factor", 0.25),
          points_per_tps=self.points_per_tps, **self.refine_kw)

  @property
  def published_mrfa(self) -> bool:
    """MRFA on a keypoint prior with Jacobians: the authors' RaftFlow decoder."""
    return self.system == "mrfa" and self.prior != "tps"

  def keypoints(self, images: jax.Array, train: bool = False):
    """TPS prior: ``[B, K * 5, 2]``; FOMM / MTIA prior: ``{'value': [B, K, 2], 'jacobian':
    [B, K, 2, 2]}``."""
    kp = self.detector(images, train)
    return {k: kp[k] for k in ("value", "jacobian") if k in kp} if self.prior != "tps" else kp

  def background(self, source: jax.Array, driving: jax.Array, train: bool = False) -> jax.Array:
    return self.bg_predictor(source, driving, train)

  def animate(self, source: jax.Array, kp_source, kp_driving, bg_param: jax.Array | None,
              dropout_p: jax.Array | None = None, train: bool = False) -> dict:
    """Source + keypoints (+ background affine) -> prediction and intermediate maps.

    ``dropout_p`` not None: TPSMM's transform dropout with that probability (``'dropout'`` rng).
    ``train``: batch statistics in the BatchNorm blocks (the FOMM prior's dense motion and a
    ``norm='batch'`` generator; the TPS prior's are instance-normalised).
    """
    if self.prior != "tps":
      motion = self.dense_motion(source, kp_source, kp_driving, train)
      if self.published_mrfa:
        refined = self.refine(source, kp_source["value"], kp_driving["value"],
                              motion["deformation"], motion["occlusion_logit"], train)
        return {"kp_source": kp_source, "kp_driving": kp_driving, "motion": motion,
                "refined": refined, "prediction": refined["prediction"],
                "deformed": refined["deformed"], "occlusion_map": refined["occlusion_map"]}
    else:
      motion = self.dense_motion(source, kp_source, kp_driving, bg_param,
                                 dropout=dropout_p is not None,
                                 dropout_p=0.0 if dropout_p is None else dropout_p)
    maps = self.generator.encode(source, train)
    occlusion = motion["occlusion_map"]
    deformation = motion["deformation"]
    warped = generator_lib.warp_features(maps, deformation, occlusion, self.multi_mask)
    out = {"kp_source": kp_source, "kp_driving": kp_driving, "motion": motion,
           # Warp-loss routing of the reference (features detached, flow not), on the prior flow.
           "warped_encoder_maps": generator_lib.warp_features(
               maps, deformation, occlusion, self.multi_mask, detach_features=True)}
    if self.system == "mcnet":
      warped, out["memory"] = self.memory(warped, keypoint_values(kp_source),
                                          memory=self.use_memory)
    elif self.system == "mrfa":
      refined = self.refine(source, kp_source, kp_driving, maps, motion)
      warped, occlusion, deformation = (refined["warped_features"], refined["occlusion_map"],
                                        refined["deformation"])
      out["refined"] = refined
    deformed = warp.warp(source, deformation)
    last = generator_lib.mask_at(occlusion, -1, source.shape[1:3], len(occlusion) > 1)
    out["prediction"] = self.generator.decode(warped, deformed, last, train)
    out["deformed"] = deformed
    out["occlusion_map"] = occlusion
    return out

  def driving_features(self, driving: jax.Array, occlusion: Sequence[jax.Array]):
    return self.generator.masked_driving_features(driving, occlusion)

  def __call__(self, source: jax.Array, driving: jax.Array, train: bool = False) -> dict:
    """Absolute-motion prediction of ``driving`` (used by ``init``: touches every parameter)."""
    b = source.shape[0]
    kp = self.keypoints(jnp.concatenate([source, driving]), train)
    bg = self.background(source, driving, train) if self.prior == "tps" else None
    out = self.animate(source, take(kp, 0, b), take(kp, b, 2 * b), bg, train=train)
    if not self.published_mrfa:
      out["driving_features"] = self.driving_features(driving, out["motion"]["occlusion_map"])
    return out


def keypoint_values(kp) -> jax.Array:
  """The ``[B, N, 2]`` keypoint positions of either prior's keypoints."""
  return kp["value"] if isinstance(kp, dict) else kp


def take(tree, start: int, stop: int):
  """Rows ``start:stop`` of every array in a keypoint tree (array or FOMM dict)."""
  return jax.tree.map(lambda x: x[start:stop], tree)


def net_from_config(config: ml_collections.ConfigDict) -> AnimationNet:
  mc = config.model
  system = mc.name
  memory = str(mc.get("memory", "on"))
  if memory not in ON_OFF:
    raise ValueError(f"config.model.memory={memory!r}; use 'on' or 'off'")
  refine_kw = dict(mc.get("refine", {}))
  prior = str(mc.get("prior", "tps"))
  if system == "mrfa" and prior == "tps":
    refine_kw["refine_steps"] = int(mc.refine_steps)
  elif system == "mrfa":   # the published decoder works at the data's image size
    refine_kw["size"] = pipeline.image_size(config)
  batches = str(mc.get("detector_batches", "joint"))
  if batches not in DETECTOR_BATCHES:
    raise ValueError(f"config.model.detector_batches={batches!r}; use one of {DETECTOR_BATCHES}")
  # Under strategy=pmap the ResNets' BatchNorm averages its statistics over the step's device
  # axis (parallel.DATA_AXIS), so that it sees the global batch as it does under jit.
  pmap = config.get("parallel", {}).get("strategy", "jit") == "pmap"
  fomm_kw = {}
  if prior != "tps":
    fomm_kw = dict(num_kp=int(mc.num_kp), kp_detector_kw=dict(mc.kp_detector))
    if prior == "mtia":   # its position embedding is fixed to the image size
      fomm_kw["kp_detector_kw"]["image_size"] = pipeline.image_size(config)
  return AnimationNet(
      system=system, num_tps=int(mc.get("num_tps", 0)),
      points_per_tps=int(mc.get("points_per_tps", 5)),
      detector_width=float(mc.get("detector_width", 1.0)), dense_motion_kw=dict(mc.dense_motion),
      generator_kw=dict(mc.generator), memory_kw=dict(mc.get("memory_bank", {})),
      refine_kw=refine_kw, use_memory=memory == "on",
      multi_mask=bool(mc.get("multi_mask", True)), bn_axis_name="data" if pmap else None,
      prior=prior, **fomm_kw)


def perceptual_features(config: ml_collections.ConfigDict) -> losses.PerceptualFeatures:
  """The perceptual loss network of ``config.loss`` (checked against its weights and scales)."""
  lc = config.loss
  if lc.perceptual_net == "vgg16_lpips":
    features = losses.PerceptualFeatures.vgg16_lpips()
  elif lc.perceptual_net == "vgg19_npz":
    if not lc.vgg19_npz:
      raise ValueError("config.loss.perceptual_net='vgg19_npz' needs config.loss.vgg19_npz=PATH")
    features = losses.PerceptualFeatures.vgg19_npz(lc.vgg19_npz)
  else:
    raise ValueError(f"config.loss.perceptual_net={lc.perceptual_net!r}; use 'vgg16_lpips' or "
                     "'vgg19_npz'")
  if len(lc.perceptual) != len(features.taps):
    raise ValueError(f"config.loss.perceptual has {len(lc.perceptual)} weights for "
                     f"{len(features.taps)} feature layers")
  size = pipeline.image_size(config)
  coarsest = size * min(lc.perceptual_scales)
  if lc.perceptual_weight > 0 and coarsest < 16:
    raise ValueError(f"config.loss.perceptual_scales={tuple(lc.perceptual_scales)} takes "
                     f"{size}px frames down to {coarsest:g}px; VGG needs >= 16: drop the "
                     "smallest scales")
  return features


def reconstruction_terms(features: losses.PerceptualFeatures, lc: ml_collections.ConfigDict,
                         pred: jax.Array, driving: jax.Array, kp_driving: jax.Array,
                         kp_transformed: jax.Array, transform, kernel: str = "tpsmm"
                         ) -> dict[str, jax.Array]:
  """The loss terms every keypoint-driven animation model shares (``config.loss`` weights; a
  zero weight drops its term): the pyramid perceptual loss and plain L1 of the prediction, and
  the keypoint equivariance under the random ``transform`` (radial ``kernel``, ``tps.KERNELS``)."""
  terms = {}
  if lc.perceptual_weight > 0:
    terms["perceptual"] = lc.perceptual_weight * losses.multiscale_perceptual_loss(
        features, pred, driving, tuple(lc.perceptual_scales), tuple(lc.perceptual))
  if lc.equivariance > 0:
    terms["equivariance"] = losses.equivariance_loss(kp_driving, kp_transformed, transform,
                                                     lc.equivariance, kernel)
  if lc.l1 > 0:
    terms["l1"] = lc.l1 * jnp.mean(jnp.abs(pred - driving))
  return terms


def schedule_value(step: jax.Array, total_steps: int, start: float, end: float,
                   ramp: float, value: float) -> jax.Array:
  """``value`` ramped linearly over ``ramp`` (fraction of ``total_steps``) from ``start`` and
  zero before ``start`` and from ``end`` on (fractions of ``total_steps``)."""
  t = jnp.asarray(step, jnp.float32) / max(int(total_steps), 1)
  ramped = value * jnp.clip((t - start) / max(ramp, 1e-9), 0.0, 1.0) if ramp > 0 else value
  return jnp.where((t >= start) & (t < end), ramped, 0.0)


def equivariance_kernel(mc: ml_collections.ConfigDict) -> str:
  """``config.model.equivariance_transform``: the random TPS's radial kernel (``tps.KERNELS``:
  TPSMM's, or FOMM's of MCNet); FOMM's also samples the frame with ``align_corners=False``."""
  kernel = str(mc.get("equivariance_transform", "tpsmm"))
  if kernel not in tps_lib.KERNELS:
    raise ValueError(f"config.model.equivariance_transform={kernel!r}; use one of "
                     f"{tps_lib.KERNELS}")
  return kernel


def dropout_schedule(step: jax.Array, total_steps: int, mc: ml_collections.ConfigDict
                     ) -> jax.Array:
  """TPSMM's transform-dropout probability at ``step``: ``min(start + max * t / ramp, max)`` for
  ``t = step / total_steps`` below ``dropout_until``, else 0 (the reference, in epochs:
  ``min(epoch / dropout_inc_epoch * dropout_maxp + dropout_startp, dropout_maxp)`` before
  ``dropout_epoch``)."""
  t = jnp.asarray(step, jnp.float32) / max(int(total_steps), 1)
  top, ramp = float(mc.dropout_p), float(mc.dropout_ramp)
  p = (jnp.minimum(float(mc.get("dropout_start_p", 0.0)) + top * t / ramp, top) if ramp > 0
       else jnp.asarray(top, jnp.float32))
  return jnp.where(t < float(mc.dropout_until), p, 0.0)


def augment_options(config: ml_collections.ConfigDict) -> dict:
  """``augment.augment_pair`` keywords of ``config.data.augment``; {} when it does nothing."""
  options = dict(config.data.get("augment", None) or {})
  unknown = set(options) - set(AUGMENT_OFF)
  if unknown:
    raise ValueError(f"config.data.augment has unknown field(s) {sorted(unknown)}; fields: "
                     f"{sorted(AUGMENT_OFF)}")
  return options if any(options.values()) else {}


def _pad_to(x: np.ndarray, n: int) -> np.ndarray:
  return np.concatenate([x, np.repeat(x[-1:], n - len(x), 0)]) if len(x) < n else x


class AnimationModel:
  """The model seam (``minerf_jax/models/__init__.py``) for TPSMM, MCNet and MRFA.

  ``params`` and ``batch_stats`` are separate trees; methods that run the ResNets take the
  ``batch_stats`` keyword (the running statistics).
  """

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    self.name = config.model.name
    self.net = net_from_config(config)
    self.features = perceptual_features(config)
    self._predict = jax.jit(self._predict_fn, static_argnames=("relative",))
    self._keypoints = jax.jit(self._keypoints_fn)

  # -- init ------------------------------------------------------------------------------------

  def init_variables(self, rng: jax.Array, batch: dict) -> dict:
    """``{'params': ..., 'batch_stats': ...}`` for a batch like ``Data.example_batch()``."""
    source = jnp.asarray(batch["source"][:2])
    driving = jnp.asarray(batch["driving"][:2])
    variables = jax.jit(functools.partial(self.net.init, train=False))(
        {"params": rng, "dropout": rng}, source, driving)
    return {"params": variables["params"], "batch_stats": variables["batch_stats"]}

  def init(self, rng: jax.Array, batch: dict) -> Any:
    return self.init_variables(rng, batch)["params"]

  # -- training --------------------------------------------------------------------------------

  def loss(self, params, batch, rng, step, batch_stats=None):
    """``(total, (metrics, new_batch_stats))``; see the module docstring for the terms."""
    mc, lc = self.config.model, self.config.loss
    total_steps = int(self.config.total_steps)
    source, driving = batch["source"], batch["driving"]
    b = source.shape[0]
    fomm_prior = str(mc.get("prior", "tps")) != "tps"   # keypoints with Jacobians
    augment_kw = augment_options(self.config)
    if augment_kw:   # only then a third key: runs without augmentation keep their draws
      rng, rng_aug = jax.random.split(rng)
      source, driving = augment.augment_pair(rng_aug, source, driving, **augment_kw)
    rng_eq, rng_drop = jax.random.split(rng)
    kernel = equivariance_kernel(mc)
    transformed, transform = losses.random_transform_frame(
        rng_eq, driving, kernel=kernel, align_corners=kernel == "tpsmm")
    if fomm_prior:   # FOMM has no background predictor and no transform dropout
      bg_on, dropout_p = jnp.asarray(False), None
    else:
      bg_on = schedule_value(step, total_steps, float(mc.bg_start), float("inf"), 0.0, 1.0) > 0
      dropout_p = dropout_schedule(step, total_steps, mc)
    separate = str(mc.get("detector_batches", "joint")) == "separate"

    def forward(net):
      if separate:   # the references: three detector batches (and two background ones)
        kp_s, kp_d, kp_t = (net.keypoints(x, train=True) for x in (source, driving, transformed))
      else:
        kp = net.keypoints(jnp.concatenate([source, driving, transformed]), train=True)
        kp_s, kp_d, kp_t = take(kp, 0, b), take(kp, b, 2 * b), take(kp, 2 * b, 3 * b)
      out = {"kp_transformed": kp_t}
      bg_param = None
      if not fomm_prior:
        if separate:
          bg, bg_reverse = (net.background(source, driving, train=True),
                            net.background(driving, source, train=True))
        else:
          pair = net.background(jnp.concatenate([source, driving]),
                                jnp.concatenate([driving, source]), train=True)
          bg, bg_reverse = pair[:b], pair[b:]
        eye = jnp.broadcast_to(jnp.eye(3, dtype=bg.dtype), bg.shape)
        bg_param = jnp.where(bg_on, bg, eye)
        out.update(bg=bg, bg_reverse=bg_reverse)
      out.update(net.animate(source, kp_s, kp_d, bg_param, dropout_p, train=True))
      if lc.warp > 0:
        out["driving_features"] = net.driving_features(driving, out["motion"]["occlusion_map"])
      return out

    out, updates = nn.apply(forward, self.net, mutable=["batch_stats"])(
        {"params": params, "batch_stats": batch_stats}, rngs={"dropout": rng_drop})
    pred = out["prediction"]
    kp_s, kp_d, kp_t = out["kp_source"], out["kp_driving"], out["kp_transformed"]
    terms = reconstruction_terms(self.features, lc, pred, driving, keypoint_values(kp_d),
                                 keypoint_values(kp_t), transform, kernel)
    l1 = terms.pop("l1", None)   # summed after warp and bg, as before the terms were shared
    if lc.get("equivariance_jacobian", 0.0) > 0 and fomm_prior:
      terms["equivariance_jacobian"] = losses.equivariance_jacobian_loss(
          kp_d["jacobian"], kp_t["value"], kp_t["jacobian"], transform,
          lc.equivariance_jacobian, kernel)
    if lc.get("kp_distance", 0.0) > 0:
      terms["kp_distance"] = lc.kp_distance * (
          losses.keypoint_distance_loss(keypoint_values(kp_s))
          + losses.keypoint_distance_loss(keypoint_values(kp_d)))
    if lc.warp > 0:
      terms["warp"] = losses.warp_loss(out["driving_features"], out["warped_encoder_maps"],
                                       lc.warp)
    if lc.bg > 0 and not fomm_prior:
      terms["bg"] = jnp.where(bg_on, losses.background_loss(out["bg"], out["bg_reverse"], lc.bg),
                              0.0)
    if l1 is not None:
      terms["l1"] = l1
    if "memory" in out and out["memory"] and lc.consistency > 0:
      terms["consistency"] = lc.consistency * memory_lib.consistency_loss(
          out["memory"]["features"], out["memory"]["values"],
          str(lc.get("consistency_resize", "feature")))
    total = sum(terms.values())
    mse = jnp.mean((pred - driving) ** 2)
    metrics_out = {**{f"loss_{k}": v for k, v in terms.items()},
                   "l1": jnp.mean(jnp.abs(pred - driving)), "psnr": metrics.mse_to_psnr(mse)}
    if not fomm_prior:
      metrics_out.update(dropout_p=dropout_p, bg_on=bg_on.astype(jnp.float32))
    return total, (metrics_out, updates["batch_stats"])

  def trainable(self, params):
    return jax.tree.map(lambda _: True, params)

  def load_pretrained(self, params, pretrained):
    """``init_from``: every parameter must exist with the same shape (fine-tuning)."""
    from minerf_jax.models.minerf import _flatten, _unflatten  # pylint: disable=g-import-not-at-top
    new, old = _flatten(params), _flatten(pretrained)
    for path, value in new.items():
      if path not in old or tuple(np.shape(old[path])) != tuple(value.shape):
        held = "missing" if path not in old else f"shape {tuple(np.shape(old[path]))}"
        raise ValueError(f"init_from parameter {'/'.join(path)!r} is {held} but this config "
                         f"builds {tuple(value.shape)}: another model or model config")
    return _unflatten({p: jnp.asarray(old[p], new[p].dtype) for p in new})

  # -- inference -------------------------------------------------------------------------------

  def _variables(self, params, batch_stats):
    if batch_stats is None:
      raise ValueError(f"model {self.name!r} needs its BatchNorm statistics (batch_stats)")
    return {"params": params, "batch_stats": batch_stats}

  def _keypoints_fn(self, params, batch_stats, images):
    return self.net.apply(self._variables(params, batch_stats), images,
                          method=AnimationNet.keypoints)

  def _predict_fn(self, params, batch_stats, source, kp_source, kp_driving, driving,
                  relative: bool):
    variables = self._variables(params, batch_stats)
    background = not relative and str(self.config.model.get("prior", "tps")) == "tps"

    def run(net):
      bg = net.background(source, driving) if background else None
      return net.animate(source, kp_source, kp_driving, bg)["prediction"]

    return nn.apply(run, self.net)(variables)

  def predict(self, params, batch: dict, batch_stats=None) -> dict:
    """Absolute motion: ``batch['source']``, ``batch['driving']`` ``[B, S, S, 3]`` ->
    ``{'prediction': [B, S, S, 3], 'kp_source', 'kp_driving'}``."""
    source, driving = jnp.asarray(batch["source"]), jnp.asarray(batch["driving"])
    kp_s = self._keypoints(params, batch_stats, source)
    kp_d = self._keypoints(params, batch_stats, driving)
    pred = self._predict(params, batch_stats, source, kp_s, kp_d, driving, relative=False)
    return {"prediction": pred, "kp_source": kp_s, "kp_driving": kp_d}

  def animate(self, params, source: np.ndarray, driving: np.ndarray, *, relative: bool = True,
              batch_stats=None, chunk: int = 16, progress=None) -> np.ndarray:
    """One source image ``[S, S, 3]`` and driving frames ``[T, S, S, 3]`` (floats in [0, 1]) ->
    animated frames ``[T, S, S, 3]``. ``relative``: see the module docstring. ``progress``:
    called with the number of frames done after each chunk."""
    driving = np.asarray(driving, np.float32)
    t = len(driving)
    src = np.repeat(np.asarray(source, np.float32)[None], chunk, 0)
    to_host = lambda tree: jax.tree.map(np.asarray, tree)
    kp_s = to_host(self._keypoints(params, batch_stats, src))   # the same row, chunk times
    out = []
    kp_initial = None
    for start in range(0, t, chunk):
      piece = driving[start:start + chunk]
      n = len(piece)
      piece = _pad_to(piece, chunk)
      kp_d = to_host(self._keypoints(params, batch_stats, piece))
      if kp_initial is None:
        kp_initial = jax.tree.map(lambda x: np.repeat(x[:1], chunk, 0), kp_d)
      if relative:
        kp_d = to_host(transfer.relative_motion(kp_s, kp_d, kp_initial))
      pred = self._predict(params, batch_stats, src, kp_s, kp_d, piece, relative=relative)
      out.append(np.asarray(pred)[:n])
      if progress is not None:
        progress(start + n)
    return np.concatenate(out)

  # -- evaluation ------------------------------------------------------------------------------

  def evaluate(self, params, eval_data: dict, batch_stats=None) -> dict[str, float]:
    """The protocols of ``pairs.py``: reconstruction of each held-out clip from its first frame,
    the fixed cross-identity pairs (absolute motion; motion metrics against the driving frame)
    and, on synthetic data, the exact-truth cross-identity pairs and novel views (absolute
    motion; the novel views are driven by the truth itself). ``protocol_metrics`` names the
    figures. ``eval_data``: ``PairData.eval_data``."""
    ec = self.config.eval
    chunk = int(ec.chunk)
    preds, targets = [], []
    for clip in eval_data["reconstruction"]:
      source = clip["source"].astype(np.float32) / 255.0
      driving = clip["driving"].astype(np.float32) / 255.0
      preds.append(self.animate(params, source, driving, relative=False,
                                batch_stats=batch_stats, chunk=chunk))
      targets.append(driving)
    pairwise = lambda s: self._pairs(params, batch_stats, s["source"], s["driving"], chunk)
    cross = eval_data.get("cross")
    cross_relative = None
    if cross and len(cross["source"]) and ec.landmarks:   # motion metrics need landmarks
      driving = cross["driving"].astype(np.float32) / 255.0
      if "driving_initial" in cross:
        cross_relative = (self._relative_pairs(params, batch_stats, cross, chunk), driving)
      cross = (pairwise(cross), driving)
    else:
      cross = None
    truths = {name: (pairwise(eval_data[name]), eval_data[name]["truth"].astype(np.float32) / 255.0,
                     eval_data[name]["group"])
              for name in ("cross_truth", "novel") if name in eval_data}
    return protocol_metrics(ec, (np.concatenate(preds), np.concatenate(targets)), cross, truths,
                            cross_relative=cross_relative)

  def summary_images(self, params, eval_data: dict, batch_stats=None) -> dict:
    """TensorBoard media (``summaries.pair_summaries``): the first held-out clip animated from
    its first frame (video and strip) and the cross-identity pairs."""
    chunk = int(self.config.eval.chunk)

    def animate(clip, n):
      source = clip["source"].astype(np.float32) / 255.0
      driving = clip["driving"][:n].astype(np.float32) / 255.0
      return source, driving, self.animate(params, source, driving, relative=False,
                                           batch_stats=batch_stats, chunk=chunk)

    return summaries.pair_summaries(
        animate, lambda b: self._pairs(params, batch_stats, b["source"], b["driving"], chunk),
        eval_data)

  def predict_relative(self, params, batch: dict, batch_stats=None) -> np.ndarray:
    """Relative motion for (source, driving, driving_initial) triples ``[B, S, S, 3]`` in [0, 1]:
    the source keypoints moved by the driving keypoints' displacement from the initial frame's
    (``transfer.relative_keypoints``), no background affine; the references' cross-identity
    animation with the initial frame of the driving video."""
    source, driving, initial = (jnp.asarray(batch[k]) for k in ("source", "driving",
                                                                "driving_initial"))
    kp_s, kp_d, kp_0 = (self._keypoints(params, batch_stats, x) for x in (source, driving,
                                                                          initial))
    kp = transfer.relative_motion(kp_s, kp_d, kp_0)
    return self._predict(params, batch_stats, source, kp_s, kp, driving, relative=True)

  def _relative_pairs(self, params, batch_stats, triples: dict, chunk: int) -> np.ndarray:
    to_float = lambda x: x.astype(np.float32) / 255.0
    return in_chunks(lambda s, d, d0: self.predict_relative(
        params, {"source": s, "driving": d, "driving_initial": d0}, batch_stats),
                     tuple(to_float(triples[k]) for k in ("source", "driving", "driving_initial")),
                     chunk)

  def _pairs(self, params, batch_stats, source, driving, chunk):
    """Absolute-motion predictions of uint8 (source, driving) pairs, ``chunk`` at a time."""
    to_float = lambda x: x.astype(np.float32) / 255.0
    return in_chunks(lambda s, d: self.predict(params, {"source": s, "driving": d},
                                               batch_stats)["prediction"],
                     (to_float(source), to_float(driving)), chunk)


def in_chunks(fn, arrays, chunk: int) -> np.ndarray:
  """``fn(*pieces) -> [chunk, ...]`` over fixed-size chunks of ``arrays`` (equal lengths; the
  last chunk padded with its last item: one compiled shape), trimmed and concatenated."""
  n = len(arrays[0])
  return np.concatenate([
      np.asarray(fn(*(_pad_to(np.asarray(a[i:i + chunk]), chunk) for a in arrays)))[
          :min(chunk, n - i)] for i in range(0, n, chunk)])


def _per_frame(fn, pred: np.ndarray, target: np.ndarray, chunk: int) -> np.ndarray:
  """``fn(pred, target) -> [chunk]`` over fixed-size (padded) chunks: one compiled shape."""
  return in_chunks(fn, (pred, target), chunk)


_SSIM = jax.jit(jax.vmap(metrics.ssim))


def image_metrics(pred: np.ndarray, target: np.ndarray, chunk: int = 16,
                  lpips: bool = True, prefix: str = "recon") -> dict[str, float]:
  """Reconstruction metrics over frames ``[N, S, S, 3]`` in [0, 1]: L1 (mean absolute error),
  PSNR (of the pooled MSE), SSIM and LPIPS (AlexNet; means over frames), as ``prefix/name``."""
  out = {f"{prefix}/l1": float(np.mean(np.abs(pred - target))),
         f"{prefix}/psnr": float(metrics.mse_to_psnr(np.mean((pred - target) ** 2)))}
  out[f"{prefix}/ssim"] = float(np.mean(_per_frame(_SSIM, pred, target, chunk)))
  if lpips:
    out[f"{prefix}/lpips"] = float(np.mean(_per_frame(losses.lpips_per_image, pred, target,
                                                      chunk)))
  return out


def protocol_metrics(ec: ml_collections.ConfigDict, recon: tuple[np.ndarray, np.ndarray],
                     cross: tuple[np.ndarray, np.ndarray] | None = None,
                     truths: dict | None = None,
                     cross_relative: tuple[np.ndarray, np.ndarray] | None = None
                     ) -> dict[str, float]:
  """The figures of every animation model's evaluation (``config.eval``: chunk, lpips,
  landmarks), from predictions and targets as floats in [0, 1]:

  * ``recon``: (pred, target) frames: ``recon/{l1,psnr,ssim,lpips}`` and, with landmarks,
    ``recon/{akd,ard}`` (+ ``_missing``, the fraction of frames without a face on either side);
  * ``cross``: (pred, driving) of the cross-identity pairs, absolute motion: ``cross/{akd,ard}``
    (no truth); ``cross_relative``: the same pairs animated with relative motion from the
    driving clip's first frame (the references' protocol): ``cross_relative/{akd,ard}``;
  * ``truths``: ``{name: (pred, truth, group [N])}`` (``pairs.truth_sets``): per group and over
    ``all``, ``name/group/{l1,psnr,ssim,lpips}`` and with landmarks ``name/group/{akd,ard}``.
  """
  chunk, lpips = int(ec.chunk), bool(ec.lpips)
  results = image_metrics(*recon, chunk, lpips=lpips)
  for name, (pred, truth, group) in (truths or {}).items():
    group = np.asarray(group)
    for g in ["all"] + sorted(set(group.tolist())):
      m = np.ones(len(group), bool) if g == "all" else group == g
      results.update(image_metrics(pred[m], truth[m], chunk, lpips=lpips, prefix=f"{name}/{g}"))
  if ec.landmarks:
    from minerf_jax.metrics import landmarks as landmark_metrics  # pylint: disable=g-import-not-at-top
    with landmark_metrics.LandmarkMetrics() as lm:
      results.update({f"recon/{k}": v for k, v in lm.motion_metrics(*recon).items()})
      if cross is not None:
        results.update({f"cross/{k}": v for k, v in lm.motion_metrics(*cross).items()})
      if cross_relative is not None:
        results.update({f"cross_relative/{k}": v
                        for k, v in lm.motion_metrics(*cross_relative).items()})
      for name, (pred, truth, group) in (truths or {}).items():
        for g, values in lm.grouped_motion_metrics(pred, truth, group).items():
          results.update({f"{name}/{g}/{k}": v for k, v in values.items()})
  return results

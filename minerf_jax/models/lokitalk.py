"""LokiTalk: an audio-driven talking-head NeRF with region-specific deformation fields and
ID-aware knowledge transfer.

What is the paper's (Li et al. 2024, arXiv 2411.19525, abstract; no code is public): portrait
motion decomposed into lip movements, eye blinking, head pose and torso movements, each driving
its own region; two cascaded deformation fields, face then torso; an ID-aware knowledge-transfer
module that learns generic dynamic and static correspondences from multi-identity videos and
injects identity-specific features through an ID encoder and hyper-networks.

What is ours (every form and number below; the alternatives are config fields):

* **Canonical field**: MI-NeRF's conditioned NeRF trunk (``nerf/field.py``) on a tri-plane hash
  encoding (``model.encoding.kind='triplane'``, as ER-NeRF), in MI-NeRF's head box. Its per-ray
  condition is ``[Dense(z), z_t]``: the identity code through a bias-free projection (the
  canonical field's hyper-network, a shift of the first layer) and a per-frame latent ``z_t``
  (as MI-NeRF: it absorbs what audio, blink and pose do not explain; zero for new frames).
* **Face deformation** (``nerf/deform.py: FaceDeformation``): branches lips <- audio code, eyes
  <- blink, head <- pose (``R - I``), each exactly zero at its neutral input, combined by
  learned per-point region weights; ``model.regions=False`` is one global branch.
  The audio code is ``audio/encoder.py``'s ``FrameEncoder`` over each frame's log-mel window and
  ``TemporalAttention`` over its ``audio_context`` neighbours on either side (the AudioNet /
  AudioAttNet design), trained end to end, minus the code of silence.
* **Region loss**: the rendered region weights (``sum_i w_i r(x_i)`` along each ray, normalised
  by the ray's opacity) are pulled by cross-entropy towards the data's masks: the speech region
  -> lips, eyes -> eyes, the rest of the face -> head (``model.region_weight``). The lips
  branch's region is the lips *and the jaw*: the lips plus the face at and below the lips' top
  row (``pipeline.speech_region``), since speech opens the jaw and the chin moves with the
  mouth (on the synthetic data the truth changes as much outside the lips mask as inside it
  when only the jaw opening changes; the lips mask alone would forbid the chin to move). Both
  regions are united over +-4 neighbouring frames (``pipeline.FRAME_MASK_NAMES``): a frame's
  own eye mask is empty mid-blink, yet the shut lid is what the eye branch must move. A share
  ``data.region_fraction`` of each frame's rays is drawn from these regions.
* **Torso field** (``model.cascade=True``): ``nerf/deform.py: TorsoField``, a 2-D layer beneath
  the head driven by the pose, over the per-identity background; its opacity is pulled towards
  the data's torso/neck mask where the head is not (``model.torso_weight``). ``cascade=False``
  leaves the torso to the static background image (MI-NeRF's treatment).
* **ID-aware transfer** (``model.transfer=True``): the identity code of person k is
  ``z_k = E(references_k) + r_k``: an ID encoder (a small CNN, mean-pooled over
  ``model.num_references`` reference frames of the person, frozen in the params) plus a learned
  residual that starts at zero. Hyper-networks (``model.hyper``: 'film' or 'lowrank', see
  ``nerf/deform.py: IdentityAdapter``) turn ``z`` into identity-specific modulations of every
  deformation branch and the region weights, and the canonical field's condition. A zero code
  is the generic model exactly. ``transfer=False``: ``z_k`` is a free per-identity table (no
  encoder), so a new person starts from the mean code instead of the encoder's reading of them.
* **Adaptation** to a new identity k (``--config.init_from=RUN --config.adapt.identity=K
  --config.adapt.num_frames=N``): the run's parameters are loaded, k's reference frames are
  its first frames and its code starts as the ID encoder's reading of them (with transfer;
  without, at the mean code), and only the collections ``config.adapt.train`` names are
  fine-tuned (default: the identity code, through which the hyper-networks adapt every
  branch and the canonical field, and the background; add e.g. 'face' or 'field' to
  fine-tune those too).
* A small L2 penalty on the offsets (``model.offset_weight``) keeps deformations small, so that
  the canonical head stays the neutral head.

Batches are ``'frame_rays'`` (``data/pipeline.py: FrameRayData``): per-frame conditions [F, ...]
and per-ray fields [F, R, ...].
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from minerf_jax import camera
from minerf_jax import metrics
from minerf_jax.audio import blinks as blinks_lib
from minerf_jax.audio import encoder as audio_encoder
from minerf_jax.audio import features as features_lib
from minerf_jax.data import pipeline
from minerf_jax.models import minerf
from minerf_jax.nerf import deform
from minerf_jax.nerf import encoding as encoding_lib
from minerf_jax.nerf import field as field_lib
from minerf_jax.nerf import render
from minerf_jax.models import summaries

# Parameter collections that belong to one identity (trained when adapting a frozen base).
IDENTITY_SPECIFIC = ("identity_codes", "frame_latents", "background")
FROZEN = ("references", "blinks")
# Parameters that are not the network's (data statistics kept with the run for launch.talk).
NOT_NET = ("blinks",)
# Regions whose rendered PSNR ``evaluate`` reports, by mask channel (``pipeline.MASK_NAMES``).
EVAL_REGIONS = ("face", "lips", "eyes", "torso_neck")


def batch_spec(config: ml_collections.ConfigDict) -> str:
  del config
  return "frame_rays"


class IdentityEncoder(nn.Module):
  """Reference frames [..., R, s, s, 3] of a person -> their identity code [..., D]: three
  strided 3x3 convolutions, a spatial mean, a dense layer, then the mean over the R frames."""
  features: int
  channels: tuple[int, ...] = (16, 32, 64)

  @nn.compact
  def __call__(self, references: jax.Array) -> jax.Array:
    lead = references.shape[:-3]
    x = references.reshape((-1,) + references.shape[-3:]) * 2.0 - 1.0
    for c in self.channels:
      x = nn.leaky_relu(nn.Conv(c, (3, 3), strides=(2, 2), padding="SAME")(x), 0.1)
    x = nn.Dense(self.features)(jnp.mean(x, (1, 2)))
    return jnp.mean(x.reshape(lead + (self.features,)), -2)


class LokiTalkNet(nn.Module):
  """Identity code, audio code, both deformation fields, the canonical field and the renderer
  for a frame-ray batch (see the module docstring)."""
  num_identities: int
  num_frames: int
  identity_dim: int
  latent_dim: int
  condition_features: int
  identity_init: float
  encoding: nn.Module
  deform_encoding: nn.Module
  region_encoding: nn.Module | None
  torso_encoding: nn.Module
  torso_deform_encoding: nn.Module
  depth: int
  width: int
  skips: tuple[int, ...]
  dir_deg: int
  view_dependent: bool
  background_shape: tuple[int, int]
  box: tuple[tuple[float, float, float], tuple[float, float, float]]
  num_coarse: int
  num_fine: int
  audio_channels: tuple[int, ...]
  audio_code_dim: int
  temporal: str
  deform_width: int
  deform_depth: int
  deform_scale: float
  regions: bool
  hyper: str
  cascade: bool
  torso_width: int
  transfer: bool
  reference_shape: tuple[int, int, int]      # (R, s, s)

  def setup(self):
    init = (nn.initializers.zeros if self.transfer
            else nn.initializers.normal(self.identity_init))
    self.identity_codes = nn.Embed(self.num_identities, self.identity_dim, embedding_init=init)
    if self.transfer:
      self.id_encoder = IdentityEncoder(self.identity_dim)
      self.references = self.param("references", nn.initializers.zeros,
                                   (self.num_identities, *self.reference_shape, 3))
    if self.latent_dim:
      self.frame_latents = nn.Embed(max(self.num_frames, 1), self.latent_dim,
                                    embedding_init=nn.initializers.zeros)
    self.audio_frames = audio_encoder.FrameEncoder(tuple(self.audio_channels), self.audio_code_dim)
    self.audio_pool = audio_encoder.temporal_pool(self.temporal)
    self.canonical_hyper = nn.Dense(self.condition_features, use_bias=False)
    self.face = deform.FaceDeformation(self.deform_encoding, self.deform_width, self.deform_depth,
                                       self.regions, self.deform_scale, self.hyper,
                                       self.region_encoding)
    self.field = field_lib.ConditionedField(
        encoding=self.encoding, depth=self.depth, width=self.width, skips=self.skips,
        dir_deg=self.dir_deg, view_dependent=self.view_dependent)
    if self.cascade:
      self.torso = deform.TorsoField(self.torso_encoding, self.torso_deform_encoding,
                                     self.torso_width, adapter=self.hyper)
    self.background_logits = self.param("background", nn.initializers.zeros,
                                        (self.num_identities, *self.background_shape, 3))

  # -- per-frame conditions ----------------------------------------------------------------

  def identity_code(self, batch: dict) -> jax.Array:
    """[F, D]: ``batch['identity_code']`` when given (analyses, adaptation), else z_k."""
    if "identity_code" in batch:
      return batch["identity_code"]
    residual = self.identity_codes(batch["identity"])
    if not self.transfer:
      return residual
    return self.id_encoder(self.references)[batch["identity"]] + residual

  def audio_code(self, audio: jax.Array) -> jax.Array:
    """[..., 2K+1, W, M] feature windows -> [..., A] codes."""
    codes = self.audio_frames(audio)
    return codes[..., codes.shape[-2] // 2, :] if self.audio_pool is None else self.audio_pool(
        codes)

  def conditions(self, batch: dict, silence: jax.Array) -> dict[str, jax.Array]:
    """Each region's condition [F, C]: its change from the neutral input."""
    f = batch["rotation"].shape[0]
    lips = self.audio_code(batch["audio"]) - self.audio_code(silence[None])
    if "audio_scale" in batch:   # launch.talk --expression_scale: more or less lip motion
      lips = lips * batch["audio_scale"][:, None]
    return {"lips": lips,
            "eyes": batch["blink"],
            "head": (batch["rotation"] - jnp.eye(3)).reshape(f, 9)}

  def background_rgb(self, batch: dict) -> jax.Array:
    colours = jax.nn.sigmoid(self.background_logits)
    pixel = batch["pixel"]
    identity = jnp.broadcast_to(batch["identity"][:, None], pixel.shape[:2])
    return minerf.bilinear_lookup(colours, identity, pixel)

  # -- rendering ---------------------------------------------------------------------------

  def __call__(self, batch: dict, rng: jax.Array | None, randomized: bool,
               silence: jax.Array) -> dict:
    f, r = batch["directions"].shape[:2]
    z = self.identity_code(batch)                                        # [F, D]
    conds = {k: v[:, None] for k, v in self.conditions(batch, silence).items()}   # [F, 1, C]
    z_ray = z[:, None]
    cond = self.canonical_hyper(z)
    if self.latent_dim:
      frame = batch["frame"]
      latent = self.frame_latents(jnp.maximum(frame, 0)) * (frame >= 0)[:, None]
      cond = jnp.concatenate([cond, latent], -1)
    cond = cond[:, None]
    rotation = jnp.broadcast_to(batch["rotation"][:, None], (f, r, 3, 3))
    translation = jnp.broadcast_to(batch["translation"][:, None], (f, r, 3))
    o, d = camera.to_canonical(batch["origins"], batch["directions"], rotation, translation)
    lo, hi = jnp.asarray(self.box[0]), jnp.asarray(self.box[1])
    near, far, hit = camera.ray_box_intersect(o, d, lo, hi)
    centre, half = (lo + hi) / 2, (hi - lo) / 2

    def field_fn(points, dirs):
      x_c, offset, weights = self.face((points - centre) / half, conds, z_ray)
      sigma, rgb = self.field(x_c, dirs, cond)
      return sigma, rgb, jnp.concatenate([weights, jnp.sum(offset ** 2, -1, keepdims=True)], -1)

    background = self.background_rgb(batch)
    out = {}
    if self.cascade:
      t_rgb, t_alpha, t_offset = self.torso(batch["pixel"] * 2.0 - 1.0, conds["head"], z_ray)
      background = t_alpha[..., None] * t_rgb + (1.0 - t_alpha[..., None]) * background
      out.update(torso_alpha=t_alpha, torso_offset=t_offset)
    res = render.render_rays(field_fn, rng, o, d, near, far, hit, num_coarse=self.num_coarse,
                             num_fine=self.num_fine, randomized=randomized,
                             background_rgb=background)
    k = len(deform.REGIONS)
    out.update({key: res[key] for key in ("rgb", "depth", "acc", "coarse_rgb")})
    out["regions"] = res["aux"][..., :k] / jnp.maximum(res["acc"], 1e-6)[..., None]
    out["offset_sq"] = res["aux"][..., k]
    out["latent"] = cond[:, 0, cond.shape[-1] - self.latent_dim:]
    return out


def _encoding(config, **overrides) -> nn.Module:
  return encoding_lib.build_encoding(ml_collections.ConfigDict({**dict(config), **overrides}))


def net_from_config(config: ml_collections.ConfigDict) -> LokiTalkNet:
  mc = config.model
  size = pipeline.image_size(config)
  ref = int(mc.reference_size)
  if size % ref:
    raise ValueError(f"config.model.reference_size={ref} must divide the frames' size {size}")
  return LokiTalkNet(
      num_identities=pipeline.effective_num_identities(config),
      num_frames=pipeline.num_frame_codes(config),
      identity_dim=int(mc.identity_dim),
      latent_dim=int(mc.latent_dim),
      condition_features=int(mc.condition_features),
      identity_init=float(mc.identity_init),
      encoding=encoding_lib.build_encoding(mc.encoding),
      deform_encoding=encoding_lib.build_encoding(mc.deform_encoding),
      region_encoding=(None if mc.region_encoding.kind == "shared"
                       else encoding_lib.build_encoding(mc.region_encoding)),
      torso_encoding=encoding_lib.build_encoding(mc.torso_encoding),
      torso_deform_encoding=encoding_lib.build_encoding(mc.deform_encoding),
      depth=int(mc.depth), width=int(mc.width), skips=tuple(mc.skips), dir_deg=int(mc.dir_deg),
      view_dependent=bool(mc.view_dependent),
      background_shape=(size, size),
      box=tuple(tuple(float(v) for v in corner) for corner in mc.box),
      num_coarse=int(mc.num_coarse), num_fine=int(mc.num_fine),
      audio_channels=tuple(int(c) for c in mc.audio_channels), audio_code_dim=int(mc.audio_code),
      temporal=str(mc.temporal),
      deform_width=int(mc.deform_width), deform_depth=int(mc.deform_depth),
      deform_scale=float(mc.deform_scale), regions=_switch(mc, "regions"),
      hyper=str(mc.hyper), cascade=_switch(mc, "cascade"), torso_width=int(mc.torso_width),
      transfer=_switch(mc, "transfer"),
      reference_shape=(int(mc.num_references), ref, ref))


def _switch(mc: ml_collections.ConfigDict, name: str) -> bool:
  """An on/off ablation field: True/False or the strings 'on'/'off'."""
  value = mc[name]
  if isinstance(value, str):
    if value not in ("on", "off"):
      raise ValueError(f"config.model.{name}={value!r}; use on|off")
    return value == "on"
  return bool(value)


class LokiTalk:
  """LokiTalk behind the model seam (see ``minerf_jax/models/__init__.py``)."""
  name = "lokitalk"

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    self.net = net_from_config(config)
    if str(config.model.hyper) not in deform.ADAPTER_KINDS:
      raise ValueError(f"config.model.hyper={config.model.hyper!r} is not one of "
                       f"{deform.ADAPTER_KINDS}")
    audio_encoder.temporal_pool(str(config.model.temporal))  # fail at build on a bad name
    self.settings = features_lib.FeatureSettings.from_config(config.get("audio"))
    fps = float(config.data.get("fps", 25.0))
    silence = features_lib.features(np.zeros(self.settings.sample_rate, np.float32), fps, 1,
                                    self.settings)[0]
    k = int(config.model.audio_context)
    self.silence = jnp.asarray(np.repeat(silence[None], 2 * k + 1, 0))   # [2K+1, W, M]
    self._render_chunk = jax.jit(functools.partial(self._apply, randomized=False, rng=None))

  def _apply(self, params, batch, rng, randomized):
    net_params = {k: v for k, v in params.items() if k not in NOT_NET}
    return self.net.apply({"params": net_params}, batch, rng, randomized, self.silence)

  # -- seam --------------------------------------------------------------------------------

  def init(self, rng: jax.Array, batch: dict) -> Any:
    small = {k: jnp.asarray(v)[:2] for k, v in batch.items()}
    init = jax.jit(lambda rng, b: self.net.init(rng, b, None, False, self.silence)["params"])
    stats = blinks_lib.BlinkStats(0.0, np.inf, 0.5, np.zeros((blinks_lib.PROFILE_FRAMES, 2)),
                                  25.0)
    return {**init(rng, small), "blinks": _blink_arrays(stats)}

  def initialize_from_data(self, params, data):
    """Backgrounds from the data's per-identity estimate (as MI-NeRF) and, with transfer, each
    identity's reference frames for the ID encoder, and the blink statistics of the training
    frames (rate, duration, profile: what ``launch.talk --blinks=schedule`` draws from)."""
    params = minerf.background_from_data(params, data)
    frames = data.train_frames
    tracks = [frames.blink[frames.identity == k] for k in np.unique(frames.identity)]
    fps = float(data.metadata.get("fps", 25.0))
    params = {**params, "blinks": _blink_arrays(blinks_lib.measure(tracks, fps))}
    if "references" in params:
      params = {**params, "references": jnp.asarray(
          reference_frames(data.train_frames, params["references"].shape))}
    return params

  def loss(self, params, batch, rng, step):
    del step
    mc = self.config.model
    out = self._apply(params, batch, rng, bool(mc.randomized))
    masks = batch["masks"]
    face = masks[..., 0]
    mse = jnp.mean((out["rgb"] - batch["rgb"]) ** 2)
    coarse_mse = jnp.mean((out["coarse_rgb"] - batch["rgb"]) ** 2)
    mask_mse = jnp.mean((out["acc"] - face) ** 2)
    latent_l2 = jnp.mean(jnp.sum(out["latent"] ** 2, -1))
    region_ce = region_cross_entropy(out["regions"], masks)
    offset_l2 = jnp.mean(out["offset_sq"])
    total = (mse + mc.coarse_weight * coarse_mse + mc.mask_weight * mask_mse
             + mc.latent_weight * latent_l2 + mc.offset_weight * offset_l2)
    if self.net.regions:
      total = total + mc.region_weight * region_ce
    metrics_ = {"mse": mse, "psnr": metrics.mse_to_psnr(mse), "coarse_mse": coarse_mse,
                "mask_mse": mask_mse, "latent_l2": latent_l2, "region_ce": region_ce,
                "offset_l2": offset_l2}
    if self.net.cascade:
      # A mean over all rays (0 where the head is), like every term: a mean over equal
      # per-device shards is then the global mean under pmap too.
      torso_mse = jnp.mean((1.0 - face) * (out["torso_alpha"] - masks[..., 3]) ** 2)
      total = total + mc.torso_weight * torso_mse
      metrics_["torso_mse"] = torso_mse
    return total, metrics_

  def blink_stats(self, params) -> blinks_lib.BlinkStats:
    return blinks_lib.BlinkStats.from_arrays({k: np.asarray(v) for k, v in params["blinks"].items()})

  def predict(self, params, batch: dict) -> dict:
    """Deterministic render of a frame-ray batch: rgb, depth, acc, regions [F, R, ...]."""
    out = self._render_chunk(params, batch)
    return {k: out[k] for k in ("rgb", "depth", "acc", "regions")}

  def render_frames(self, params, frames: pipeline.FrameSet,
                    audio_scale: float = 1.0) -> dict[str, np.ndarray]:
    """Renders every frame of a FrameSet (with audio, blink: ``load_frames(audio_context=K)``):
    rgb [N,H,W,3], depth, acc [N,H,W] and regions [N,H,W,len(REGIONS)]. ``audio_scale``
    scales the lips branch's condition (1: as trained)."""
    if frames.audio is None:
      raise ValueError("LokiTalk renders frames with audio windows and blinks: load them with "
                       "pipeline.load_frames(..., audio_context=config.model.audio_context)")
    h, w = frames.resolution
    chunk = min(int(self.config.eval.chunk), h * w)   # never pad a frame beyond its pixels
    outs = []
    for i in range(len(frames)):
      rays = pipeline.frame_rays(frames, i)
      if audio_scale != 1.0:
        rays["audio_scale"] = np.full(len(rays["rgb"]), audio_scale, np.float32)
      pieces = []
      for start in range(0, h * w, chunk):
        piece = {k: v[start:start + chunk] for k, v in rays.items()}
        pad = chunk - len(piece["rgb"])
        if pad:  # keep one compiled shape
          piece = {k: np.concatenate([v, np.repeat(v[-1:], pad, 0)]) for k, v in piece.items()}
        out = jax.device_get(self.predict(params, pipeline.frame_ray_batch(piece, 1)))
        pieces.append({k: v[0, :chunk - pad] for k, v in out.items()})
      outs.append({k: np.concatenate([p[k] for p in pieces]) for k in pieces[0]})
    stack = lambda k, *shape: np.stack([o[k] for o in outs]).reshape(len(frames), h, w, *shape)
    return {"rgb": stack("rgb", 3), "depth": stack("depth"), "acc": stack("acc"),
            "regions": stack("regions", len(deform.REGIONS))}

  def evaluate(self, params, eval_data: dict[str, pipeline.FrameSet]) -> dict[str, float]:
    """Per named FrameSet: PSNR of the whole frame and of each region of ``EVAL_REGIONS`` (the
    data's masks), SSIM, per region of ``deform.REGIONS`` the recall of the rendered region
    weights (the fraction of the region's face pixels whose largest weight is that region), and
    for the held-out frames ``locality``'s audio and blink leaks."""
    results = {}
    for name, frames in eval_data.items():
      out = self.render_frames(params, frames)
      pred = out["rgb"]
      err = (pred - frames.rgb) ** 2
      results[f"{name}/psnr"] = float(metrics.mse_to_psnr(np.mean(err)))
      results[f"{name}/ssim"] = float(np.mean([float(metrics.ssim(p, t))
                                               for p, t in zip(pred, frames.rgb)]))
      for region in EVAL_REGIONS:
        sel = frames.masks[..., pipeline.MASK_NAMES.index(region)] > 0.5
        if sel.any():
          results[f"{name}/{region}_psnr"] = float(metrics.mse_to_psnr(np.mean(err[sel])))
      target = region_targets(frames.masks)
      face = frames.masks[..., 0] > 0.5
      chosen = np.argmax(out["regions"], -1)
      for k, region in enumerate(deform.REGIONS):
        sel = face & (target == k)
        if sel.any():
          results[f"{name}/region_recall_{region}"] = float(np.mean(chosen[sel] == k))
      if name == "heldout" and len(frames) > 1:
        results.update({f"{name}/{k}": v for k, v in self.locality(params, frames, base=pred).items()})
    return results

  def summary_images(self, params, eval_data: dict[str, pipeline.FrameSet]) -> dict:
    """TensorBoard strips of every evaluation set and a held-out video (``summaries``)."""
    return summaries.nerf_summaries(lambda f: self.render_frames(params, f)["rgb"], eval_data)

  def locality(self, params, frames: pipeline.FrameSet, margin: int | None = None,
               base: np.ndarray | None = None) -> dict[str, float]:
    """How local each branch's effect is: each frame rendered with its own inputs, then with
    only its audio replaced (by that of the frame half the set away) and with only its blink
    replaced (eyes shut where open, open where shut). ``audio_leak`` is the summed absolute
    change outside the swept speech region (``pipeline.FRAME_MASK_NAMES``) over that inside it;
    ``blink_leak`` likewise for the swept eyes region. Regions are dilated by ``margin``
    pixels (default: 1 per 32 pixels of frame side), as shut lids and a wider-open mouth than
    the neighbouring frames' reach a little further. 0: perfectly local. ``base``: the
    frames' own render when the caller has it already."""
    h, _ = frames.resolution
    margin = max(1, h // 32) if margin is None else margin
    n = len(frames)
    if base is None:
      base = self.render_frames(params, frames)["rgb"]
    donor = (np.arange(n) + n // 2) % n
    swapped = dataclasses.replace(frames, audio=frames.audio[donor])
    shut = dataclasses.replace(frames, blink=(frames.blink < 0.5).astype(np.float32))
    out = {}
    for name, other, region in (("audio_leak", swapped, "speech_region"),
                                ("blink_leak", shut, "eyes_region")):
      channel = pipeline.FRAME_MASK_NAMES.index(region)
      change = np.abs(self.render_frames(params, other)["rgb"] - base).sum(-1)
      inside = dilate(frames.masks[..., channel] > 0.5, margin)
      out[name] = float(change[~inside].sum() / max(change[inside].sum(), 1e-12))
    return out

  def trainable(self, params):
    """Everything but ``FROZEN``; when adapting to a new identity (``config.adapt.identity``),
    only the collections that ``config.adapt.train`` names (``('all',)``: every one)."""
    adapting = int(self.config.get("adapt", {}).get("identity", -1)) >= 0
    names = tuple(self.config.adapt.train) if adapting else None
    if names == ("all",):   # fine-tune every collection (or, without init_from, train afresh)
      names = None
    unknown = sorted(set(names or ()) - set(params))
    if unknown:
      raise ValueError(f"config.adapt.train names {unknown}, which this model does not have; "
                       f"choose from {sorted(set(params) - set(FROZEN))}")
    keep = lambda k: k not in FROZEN and (names is None or k in names)
    return {k: jax.tree.map(lambda _, keep=keep(k): keep, v) for k, v in params.items()}

  def load_pretrained(self, params, pretrained):
    """A checkpoint into fresh params; a new identity's rows keep their fresh values: its
    references come from the data, and its code is the ID encoder's reading of them (a zero
    residual) with transfer, or the mean of the trained codes without."""
    mean_init = () if self.net.transfer else ("identity_codes",)
    return minerf.merge_pretrained(params, pretrained, IDENTITY_SPECIFIC + FROZEN, mean_init)


def dilate(mask: np.ndarray, pixels: int) -> np.ndarray:
  """[N, H, W] bool masks grown by ``pixels`` (square neighbourhood)."""
  out = mask.copy()
  for _ in range(pixels):
    grown = out.copy()
    grown[:, 1:] |= out[:, :-1]
    grown[:, :-1] |= out[:, 1:]
    grown[:, :, 1:] |= out[:, :, :-1]
    grown[:, :, :-1] |= out[:, :, 1:]
    grown[:, 1:, 1:] |= out[:, :-1, :-1]
    grown[:, :-1, :-1] |= out[:, 1:, 1:]
    grown[:, 1:, :-1] |= out[:, :-1, 1:]
    grown[:, :-1, 1:] |= out[:, 1:, :-1]
    out = grown
  return out


def _blink_arrays(stats: blinks_lib.BlinkStats) -> dict:
  return {k: jnp.asarray(v) for k, v in stats.to_arrays().items()}


def reference_frames(frames: pipeline.FrameSet, shape) -> np.ndarray:
  """[num_identities, R, s, s, 3]: R frames of each identity spread evenly over its frames,
  area-downscaled to s (identities without frames keep zeros)."""
  num_ids, r, s = shape[0], shape[1], shape[2]
  out = np.zeros(shape, np.float32)
  for identity in range(num_ids):
    idx = np.flatnonzero(frames.identity == identity)
    if idx.size:
      pick = idx[np.linspace(0, idx.size - 1, r).round().astype(int)]
      out[identity] = pipeline.area_downscale(frames.rgb[pick], s)
  return out


def region_targets(masks: np.ndarray | jax.Array):
  """Region index (``deform.REGIONS``) each pixel should belong to: lips in the swept speech
  region, eyes in the swept eyes region (and not lips), head elsewhere (channels
  ``pipeline.FRAME_MASK_NAMES``)."""
  xp = jnp if isinstance(masks, jax.Array) else np
  lips = masks[..., pipeline.FRAME_MASK_NAMES.index("speech_region")] > 0.5
  eyes = masks[..., pipeline.FRAME_MASK_NAMES.index("eyes_region")] > 0.5
  return xp.where(lips, deform.REGIONS.index("lips"),
                  xp.where(eyes, deform.REGIONS.index("eyes"), deform.REGIONS.index("head")))


def region_cross_entropy(regions: jax.Array, masks: jax.Array) -> jax.Array:
  """``-log p(target region)`` of the rendered region distribution on face rays, 0 on the
  others, averaged over all rays (a mean, so that equal device shards average exactly)."""
  face = masks[..., 0]
  target = region_targets(masks)
  p = jnp.take_along_axis(regions, target[..., None], -1)[..., 0]
  return jnp.mean(face * -jnp.log(jnp.clip(p, 1e-6, 1.0)))

"""MI-NeRF: one dynamic face NeRF for many identities.

A NeRFace-style dynamic radiance field lives in a canonical head box. Rays are moved into head
coordinates with the tracked head pose (``X_world = R X_head + t``), sampled stratified +
hierarchically inside the box, and the field ``x -> (sigma, rgb)`` is conditioned per ray on

    cond = [ M(w_id, e_t) , z_t ]

* ``w_id``: a learned identity code (one row per identity),
* ``e_t``: the frame's expression vector from the data (generator ground truth on synthetic data,
  landmark features on real video),
* ``M``: the multiplicative module ``(U_w w) * (U_e e)`` (optionally ``+ V_w w + V_e e``), or an
  ablation (``model.fusion = concat | additive | film``, see ``nerf/fusion.py``),
* ``z_t``: a per-frame latent code that bypasses M and absorbs what expression does not explain.
  Held-out and synthesised frames have no latent (``frame = -1``) and use zeros; an L2 penalty
  keeps training latents near zero so that this is the expected value.

An optional opacity loss (``model.mask_weight``) pulls the rendered opacity towards the
dataset's head mask, which removes semi-transparent floaters over the static background.

Everything outside the head box is background: a learned per-identity image (``background=
'image'``, static torso, neck and wall of a fixed camera) or a learned per-identity colour
(``'constant'``); composited as ``rgb + (1 - acc) * background``.

Personalisation (``config.personalise.identity = k``): the dataset is extended to identity k, the
identity table gets a new row initialised to the mean of the trained codes, and only
identity-specific tables (identity codes, frame latents, backgrounds) are trained when
``personalise.freeze_shared`` (the default), else everything is fine-tuned.
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
from minerf_jax import metrics
from minerf_jax.data import pipeline
from minerf_jax.nerf import encoding as encoding_lib
from minerf_jax.nerf import field as field_lib
from minerf_jax.nerf import fusion as fusion_lib
from minerf_jax.nerf import render
from minerf_jax.models import summaries

# Parameter collections that belong to one identity (trained when personalising a frozen base).
IDENTITY_SPECIFIC = ("identity_codes", "frame_latents", "background")


def batch_spec(config: ml_collections.ConfigDict) -> str:
  del config
  return "rays"


def bilinear_lookup(images: jax.Array, index: jax.Array, uv: jax.Array) -> jax.Array:
  """Samples ``images[index]`` ([N,H,W,C]) at ``uv`` in [0,1] (pixel centres at (i+0.5)/W)."""
  _, h, w, _ = images.shape
  x = jnp.clip(uv[..., 0] * w - 0.5, 0.0, w - 1.0)
  y = jnp.clip(uv[..., 1] * h - 0.5, 0.0, h - 1.0)
  x0, y0 = jnp.floor(x).astype(jnp.int32), jnp.floor(y).astype(jnp.int32)
  x1, y1 = jnp.minimum(x0 + 1, w - 1), jnp.minimum(y0 + 1, h - 1)
  fx, fy = (x - x0)[..., None], (y - y0)[..., None]
  at = lambda yy, xx: images[index, yy, xx]  # per-ray gathers, no [R,H,W,C] intermediate
  top = at(y0, x0) * (1 - fx) + at(y0, x1) * fx
  bottom = at(y1, x0) * (1 - fx) + at(y1, x1) * fx
  return top * (1 - fy) + bottom * fy


class MINeRFNet(nn.Module):
  """The conditioned field + volume renderer for a batch of rays."""
  num_identities: int
  num_frames: int
  identity_dim: int
  latent_dim: int
  fusion: str
  fusion_features: int
  first_order: bool
  augment_expression: bool
  identity_init: float
  encoding: nn.Module
  depth: int
  width: int
  skips: tuple[int, ...]
  dir_deg: int
  view_dependent: bool
  background: str
  background_shape: tuple[int, int]
  box: tuple[tuple[float, float, float], tuple[float, float, float]]
  num_coarse: int
  num_fine: int

  def setup(self):
    self.identity_codes = nn.Embed(self.num_identities, self.identity_dim,
                                   embedding_init=nn.initializers.normal(self.identity_init))
    if self.latent_dim:
      self.frame_latents = nn.Embed(max(self.num_frames, 1), self.latent_dim,
                                    embedding_init=nn.initializers.zeros)
    self.fuse = fusion_lib.Fusion(kind=self.fusion, features=self.fusion_features,
                                  first_order=self.first_order,
                                  augment_expression=self.augment_expression)
    self.field = field_lib.ConditionedField(
        encoding=self.encoding, depth=self.depth, width=self.width, skips=self.skips,
        dir_deg=self.dir_deg, view_dependent=self.view_dependent)
    shape = ((self.num_identities, *self.background_shape, 3) if self.background == "image"
             else (self.num_identities, 3))
    if self.background not in ("image", "constant"):
      raise ValueError(f"config.model.background={self.background!r}: choose 'image' or "
                       "'constant'")
    self.background_logits = self.param("background", nn.initializers.zeros, shape)

  def conditioning(self, batch: dict) -> jax.Array:
    w = self.identity_codes(batch["identity"])
    c = self.fuse(w, batch["expression"])
    if not self.latent_dim:
      return c
    frame = batch["frame"]
    z = self.frame_latents(jnp.maximum(frame, 0)) * (frame >= 0)[..., None]
    return jnp.concatenate([c, z], -1)

  def background_rgb(self, batch: dict) -> jax.Array:
    colours = jax.nn.sigmoid(self.background_logits)
    if self.background == "image":
      return bilinear_lookup(colours, batch["identity"], batch["pixel"])
    return colours[batch["identity"]]

  def _rays_and_field(self, batch: dict):
    """Rays in head coordinates, their box interval and the conditioned field function."""
    o, d = camera.to_canonical(batch["origins"], batch["directions"], batch["rotation"],
                               batch["translation"])
    lo, hi = jnp.asarray(self.box[0]), jnp.asarray(self.box[1])
    near, far, hit = camera.ray_box_intersect(o, d, lo, hi)
    cond = self.conditioning(batch)
    centre, half = (lo + hi) / 2, (hi - lo) / 2

    def field_fn(points, dirs):
      return self.field((points - centre) / half, dirs, cond)

    return o, d, near, far, hit, cond, field_fn

  def probe_field(self, batch: dict):
    """The field at the deterministic coarse samples only (what the renderer's first pass
    evaluates), without rendering: cheap init diagnostics (``first_layer_stds``)."""
    o, d, near, far, _, _, field_fn = self._rays_and_field(batch)
    t = render.stratified_samples(None, near, far, self.num_coarse, False)
    return field_fn(o[..., None, :] + t[..., None] * d[..., None, :], d)

  def __call__(self, batch: dict, rng: jax.Array | None, randomized: bool) -> dict:
    o, d, near, far, hit, cond, field_fn = self._rays_and_field(batch)
    out = render.render_rays(
        field_fn, rng, o, d, near, far, hit, num_coarse=self.num_coarse,
        num_fine=self.num_fine, randomized=randomized, background_rgb=self.background_rgb(batch))
    out["latent"] = cond[..., cond.shape[-1] - self.latent_dim:]
    return out


def net_from_config(config: ml_collections.ConfigDict) -> MINeRFNet:
  mc = config.model
  num_ids = pipeline.effective_num_identities(config)
  return MINeRFNet(
      num_identities=num_ids,
      num_frames=pipeline.num_frame_codes(config),
      identity_dim=mc.identity_dim,
      latent_dim=mc.latent_dim,
      fusion=mc.fusion,
      fusion_features=mc.fusion_features,
      first_order=mc.first_order,
      augment_expression=bool(mc.get("augment_expression", False)),
      identity_init=float(mc.get("identity_init", 0.1)),
      encoding=encoding_lib.build_encoding(mc.encoding),
      depth=mc.depth,
      width=mc.width,
      skips=tuple(mc.skips),
      dir_deg=mc.dir_deg,
      view_dependent=mc.view_dependent,
      background=mc.background,
      background_shape=(pipeline.image_size(config),) * 2,
      box=tuple(tuple(float(v) for v in corner) for corner in mc.box),
      num_coarse=mc.num_coarse,
      num_fine=mc.num_fine)


class MINeRF:
  """The MI-NeRF model seam (see ``minerf_jax/models/__init__.py``)."""
  name = "minerf"

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    self.net = net_from_config(config)
    self._render_chunk = jax.jit(functools.partial(self._apply, randomized=False, rng=None))

  def _apply(self, params, batch, rng, randomized):
    return self.net.apply({"params": params}, batch, rng, randomized)

  def init(self, rng: jax.Array, batch: dict) -> Any:
    """Fresh parameters; with ``model.condition_share`` > 0 the field's condition projections
    are rescaled so that the condition's share of the first pre-activation on ``batch`` is that
    fraction (see ``calibrate_condition``). The share before and after is printed."""
    small = {k: jnp.asarray(v)[:8] for k, v in batch.items()}
    params = self.net.init(rng, small, None, False)["params"]
    target = float(self.config.model.get("condition_share", 0.0))
    before = condition_share(self.net, params, batch)
    if target > 0 and np.isfinite(before):
      params = calibrate_condition(self.net, params, batch, target)
      print(f"minerf init: condition share of the first pre-activation {before:.4f} -> "
            f"{condition_share(self.net, params, batch):.4f} "
            f"(model.condition_share={target})", flush=True)
    else:
      print(f"minerf init: condition share of the first pre-activation {before:.4f} "
            "(not calibrated: model.condition_share=0)", flush=True)
    return params

  def loss(self, params, batch, rng, step):
    del step
    mc = self.config.model
    out = self._apply(params, batch, rng, mc.randomized)
    mse = jnp.mean((out["rgb"] - batch["rgb"]) ** 2)
    coarse_mse = jnp.mean((out["coarse_rgb"] - batch["rgb"]) ** 2)
    latent_l2 = jnp.mean(jnp.sum(out["latent"] ** 2, -1))
    # Opacity inside the head box should be the head: no floaters over the static background.
    mask_mse = jnp.mean((out["acc"] - batch["mask"]) ** 2)
    total = (mse + mc.coarse_weight * coarse_mse + mc.latent_weight * latent_l2
             + mc.mask_weight * mask_mse)
    return total, {"mse": mse, "psnr": metrics.mse_to_psnr(mse), "coarse_mse": coarse_mse,
                   "latent_l2": latent_l2, "mask_mse": mask_mse}

  def predict(self, params, batch: dict) -> dict:
    """Deterministic render of a ray batch: rgb, depth, acc."""
    out = self._render_chunk(params, batch)
    return {k: out[k] for k in ("rgb", "depth", "acc")}

  def render_frames(self, params, frames: pipeline.FrameSet) -> dict[str, np.ndarray]:
    """Renders every frame of a FrameSet: rgb [N,H,W,3], depth and acc [N,H,W]."""
    h, w = frames.resolution
    rays = [pipeline.frame_rays(frames, i) for i in range(len(frames))]
    flat = {k: np.concatenate([r[k] for r in rays]) for k in rays[0]}
    chunk = int(self.config.eval.chunk)
    total = len(flat["rgb"])
    outs = []
    for start in range(0, total, chunk):
      piece = {k: v[start:start + chunk] for k, v in flat.items()}
      pad = chunk - len(piece["rgb"])
      if pad:  # keep one compiled shape
        piece = {k: np.concatenate([v, np.repeat(v[-1:], pad, 0)]) for k, v in piece.items()}
      out = jax.device_get(self.predict(params, piece))
      outs.append({k: v[:chunk - pad] for k, v in out.items()})
    joined = {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}
    return {"rgb": joined["rgb"].reshape(len(frames), h, w, 3),
            "depth": joined["depth"].reshape(len(frames), h, w),
            "acc": joined["acc"].reshape(len(frames), h, w)}

  def evaluate(self, params, eval_data: dict[str, pipeline.FrameSet]) -> dict[str, float]:
    """PSNR, head-region PSNR and SSIM per named FrameSet (and per identity for held-out
    frames); for sets with the driver's truth (expression transfer) the mean identity leakage
    (``metrics.colour_leakage``). PSNR is that of the mean squared error over all frames of a
    set."""
    results = {}
    for name, frames in eval_data.items():
      pred = self.render_frames(params, frames)["rgb"]
      ssim = np.asarray([float(metrics.ssim(p, t)) for p, t in zip(pred, frames.rgb)])
      results[f"{name}/psnr"] = float(metrics.mse_to_psnr(np.mean((pred - frames.rgb) ** 2)))
      results[f"{name}/ssim"] = float(ssim.mean())
      # PSNR over head pixels only (the part the field must learn; the background is static).
      head = frames.mask > 0.5
      results[f"{name}/face_psnr"] = float(
          metrics.mse_to_psnr(np.mean((pred - frames.rgb)[head] ** 2)))
      if frames.driver_rgb is not None:  # expression transfer with the driver's truth
        results[f"{name}/leakage"] = float(np.mean(metrics.colour_leakage(
            pred, frames.rgb, frames.mask, frames.driver_rgb, frames.driver_mask)))
      if name == "heldout":
        for identity in sorted(set(frames.identity.tolist())):
          sel = frames.identity == identity
          results[f"{name}/psnr_id{identity}"] = float(
              metrics.mse_to_psnr(np.mean((pred[sel] - frames.rgb[sel]) ** 2)))
          results[f"{name}/ssim_id{identity}"] = float(ssim[sel].mean())
    return results

  def summary_images(self, params, eval_data: dict[str, pipeline.FrameSet]) -> dict:
    """TensorBoard strips of every evaluation set and a held-out video (``summaries``)."""
    return summaries.nerf_summaries(lambda f: self.render_frames(params, f)["rgb"], eval_data)

  def initialize_from_data(self, params, data):
    """Starts the background from the data's per-identity background estimate (a static camera
    sees the same wall and torso in every frame); a learned background then only refines it."""
    return background_from_data(params, data, self.net.background == "constant")

  def trainable(self, params):
    pc = self.config.personalise
    if int(pc.identity) < 0 or not pc.freeze_shared:
      return jax.tree.map(lambda _: True, params)
    return {k: jax.tree.map(lambda _, keep=k in IDENTITY_SPECIFIC: keep, v)
            for k, v in params.items()}

  def load_pretrained(self, params, pretrained):
    """Copies a checkpoint into fresh params; per-identity tables may gain rows (new identity).

    New identity-code rows start at the mean of the trained codes, new background and latent
    rows keep their fresh (data-driven) values; every other parameter must match in shape.
    """
    return merge_pretrained(params, pretrained, IDENTITY_SPECIFIC, ("identity_codes",))


def background_from_data(params, data, constant: bool = False):
  """``params['background']`` (logits) set from ``data.background_estimate`` when the data has
  one ([num_identities, H, W, 3]; its per-identity mean colour when ``constant``)."""
  estimate = getattr(data, "background_estimate", None)
  if estimate is None:
    return params
  estimate = np.clip(np.asarray(estimate, np.float32), 1e-3, 1 - 1e-3)
  if constant:
    estimate = estimate.mean((1, 2))
  logits = np.log(estimate) - np.log1p(-estimate)
  if logits.shape != params["background"].shape:
    raise ValueError(f"background estimate {logits.shape} does not match the model's "
                     f"{params['background'].shape}: config.data.resolution differs?")
  return {**params, "background": jnp.asarray(logits)}


def merge_pretrained(params, pretrained, growable: tuple[str, ...],
                     mean_init: tuple[str, ...] = ()):
  """Copies a checkpoint into fresh ``params``. Tables under ``growable`` collections may gain
  rows (new identities): the old rows are copied, new rows keep their fresh values, or start at
  the mean of the old rows for collections in ``mean_init``. Every other parameter must match
  in shape; a parameter missing from the checkpoint is an error naming it."""
  flat_new = _flatten(params)
  flat_old = _flatten(pretrained)
  missing = sorted(set(flat_new) - set(flat_old))
  if missing:
    raise ValueError(f"init_from checkpoint has no parameter {'/'.join(missing[0])!r}: it was "
                     "trained with another model or model config")
  merged = {}
  for path, new in flat_new.items():
    old = np.asarray(flat_old[path])
    if old.shape == new.shape:
      merged[path] = jnp.asarray(old, new.dtype)
    elif path[0] in growable and old.shape[1:] == new.shape[1:] and (
        old.shape[0] <= new.shape[0]):
      rows = np.asarray(new).copy()
      rows[:old.shape[0]] = old
      if path[0] in mean_init:
        rows[old.shape[0]:] = old.mean(0)
      merged[path] = jnp.asarray(rows, new.dtype)
    else:
      raise ValueError(f"init_from parameter {'/'.join(path)!r} has shape {old.shape} but "
                       f"this config builds {tuple(new.shape)}")
  return _unflatten(merged)


def first_layer_stds(net: MINeRFNet, params, batch: dict) -> tuple[float, float]:
  """Standard deviations of the positional and the condition part of the field's first
  pre-activation (``Dense(enc(x))`` and ``Dense_c(cond)``) over the rays of ``batch`` at the
  renderer's deterministic coarse samples; the condition part is 0 for an unconditioned field."""
  batch = {k: jnp.asarray(v) for k, v in batch.items()}
  _, state = net.apply({"params": params}, batch, method=MINeRFNet.probe_field,
                       mutable=["diagnostics"])
  diag = state["diagnostics"]["field"]
  position = float(diag["position_std"][0])
  condition = float(diag["condition_std"][0]) if "condition_std" in diag else 0.0
  return position, condition


def condition_share(net: MINeRFNet, params, batch: dict) -> float:
  """Fraction of the first pre-activation's variance that comes from the condition:
  ``var_c / (var_c + var_x)`` (0: the condition is invisible at init, 0.5: as loud as the
  position)."""
  position, condition = first_layer_stds(net, params, batch)
  return condition ** 2 / (condition ** 2 + position ** 2)


def calibrate_condition(net: MINeRFNet, params, batch: dict, share: float):
  """Rescales every ``field/cond_i`` kernel (the condition's projections into the trunk) by
  one factor so that ``condition_share`` on ``batch`` equals ``share`` (0 < share < 1).

  Ours (the paper gives no init): a data-dependent init in the spirit of LSUV. It treats every
  fusion kind alike (the product of two lecun-normal projections of small codes starts two
  orders of magnitude quieter than concatenation), so ablations compare the functional forms,
  not their accidental init scales.
  """
  if not 0.0 < share < 1.0:
    raise ValueError(f"config.model.condition_share={share} must lie in (0, 1) (0 disables)")
  position, condition = first_layer_stds(net, params, batch)
  if condition <= 0:
    return params
  factor = np.sqrt(share / (1.0 - share)) * position / condition
  field = dict(params["field"])
  for name in field:
    if name.startswith("cond_"):
      field[name] = {**field[name], "kernel": field[name]["kernel"] * factor}
  return {**params, "field": field}


def _flatten(tree, prefix=()):
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict) or hasattr(v, "items"):
      out.update(_flatten(v, prefix + (k,)))
    else:
      out[prefix + (k,)] = v
  return out


def _unflatten(flat):
  tree: dict = {}
  for path, v in flat.items():
    node = tree
    for k in path[:-1]:
      node = node.setdefault(k, {})
    node[path[-1]] = v
  return tree

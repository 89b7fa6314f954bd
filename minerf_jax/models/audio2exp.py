"""Audio-to-expression: speech -> the per-frame expression vector that drives MI-NeRF.

Network (``Audio2ExpNet``): each frame's log-mel window through ``audio.encoder.FrameEncoder``;
the codes of the 2K+1 frames around a target frame (``model.context`` = K, 4 by default: +-160 ms
at 25 fps) pooled by ``model.temporal`` (attention | conv | none; the AudioNet/AudioAttNet
design of RAD-NeRF and ER-NeRF, ours in the details); optionally concatenated with a learned
identity code (``model.identity_dim`` > 0: speaking style); an MLP predicts the expression.

Targets (ours): the speech part of the dataset's expression, ``expression - blink @ B`` with the
blink basis B of ``audio.blinks.fit_basis`` (blinks are not in speech and are added back at
render time from a schedule), normalised per component by the train frames' mean and std. B, the
normalisation and the measured blink statistics are data-derived constants stored in the
parameters (frozen), so a checkpoint is everything ``launch.talk`` needs.

Loss: per-component weighted L2 over ``model.unroll`` consecutive frames, plus
``model.velocity_weight`` x the weighted L2 of the frame-to-frame differences (temporal
smoothness that still follows fast mouth motion); ``model.component_weights`` (one per
component, () = all 1) lets mouth-related components count more; ``model.variance_weighted``
further weights each component by its train variance (errors in the data's units: for a
landmark PCA, landmark displacement, so the dominant jaw/lip modes count most).

Evaluation on held-out speech: normalised MSE, its ratio to the train-mean predictor, the
per-component Pearson correlation with the true track, and the lip-sync score of the predicted
mouth opening against the speech energy (``metrics.sync``).
"""
from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from minerf_jax.audio import blinks as blinks_lib
from minerf_jax.audio import encoder
from minerf_jax.audio import features as features_lib
from minerf_jax.data import sequences as seq_lib
from minerf_jax.metrics import sync

FROZEN = ("stats", "blink_basis", "blinks")


def batch_spec(config: ml_collections.ConfigDict) -> str:
  del config
  return "sequences"


class Audio2ExpNet(nn.Module):
  expression_dim: int
  num_identities: int
  identity_dim: int = 0
  code_dim: int = 64
  channels: tuple[int, ...] = (32, 32, 64, 64)
  hidden: int = 128
  context: int = 4
  temporal: str = "attention"

  @nn.compact
  def __call__(self, feats: jax.Array, identity: jax.Array) -> jax.Array:
    """feats [B, L + 2K, W, M], identity [B] -> normalised expression [B, L, E]."""
    codes = encoder.FrameEncoder(tuple(self.channels), self.code_dim)(feats)
    unroll = feats.shape[1] - 2 * self.context
    windows = encoder.neighbour_windows(codes, unroll, self.context)   # [B, L, 2K+1, D]
    pool = encoder.temporal_pool(self.temporal)
    x = windows[:, :, self.context] if pool is None else pool(windows)
    if self.identity_dim > 0:
      style = nn.Embed(self.num_identities, self.identity_dim,
                       embedding_init=nn.initializers.normal(1.0))(identity)
      x = jnp.concatenate([x, jnp.broadcast_to(style[:, None], x.shape[:2] + style.shape[-1:])],
                          -1)
    x = nn.leaky_relu(nn.Dense(self.hidden)(x), 0.02)
    x = nn.leaky_relu(nn.Dense(self.hidden)(x), 0.02)
    return nn.Dense(self.expression_dim)(x)


class Audio2Exp:
  """Audio-to-expression behind the model seam (see ``models/__init__.py``)."""
  name = "audio2exp"

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    mc = config.model
    self.settings = features_lib.FeatureSettings.from_config(config.get("audio"))
    self.net = Audio2ExpNet(
        expression_dim=int(mc.expression_dim), num_identities=int(config.data.num_identities),
        identity_dim=int(mc.identity_dim), code_dim=int(mc.code_dim),
        channels=tuple(int(c) for c in mc.channels), hidden=int(mc.hidden),
        context=int(mc.context), temporal=str(mc.temporal))
    encoder.temporal_pool(str(mc.temporal))  # fail at build on a bad name
    e = int(mc.expression_dim)
    w = tuple(float(v) for v in mc.get("component_weights", ()) or ())
    if w and len(w) != e:
      raise ValueError(f"config.model.component_weights has {len(w)} values but "
                       f"config.model.expression_dim={e}")
    self.weights = np.asarray(w or (1.0,) * e, np.float32)
    self._apply = jax.jit(self.net.apply)

  # -- seam --------------------------------------------------------------------------------

  def init(self, rng: jax.Array, batch: dict) -> Any:
    e = int(self.config.model.expression_dim)
    if batch["expression"].shape[-1] != e:
      raise ValueError(f"config.model.expression_dim={e} but the data's expression has "
                       f"{batch['expression'].shape[-1]} values; pass "
                       f"--config.model.expression_dim={batch['expression'].shape[-1]}")
    net = self.net.init(rng, jnp.asarray(batch["features"][:2]),
                        jnp.asarray(batch["identity"][:2]))["params"]
    stats = blinks_lib.BlinkStats(0.0, np.inf, 0.5, np.zeros((blinks_lib.PROFILE_FRAMES, 2)),
                                  25.0)
    return {"net": net,
            "stats": {"mean": jnp.zeros(e), "std": jnp.ones(e)},
            "blink_basis": jnp.zeros((2, e)),
            "blinks": {k: jnp.asarray(v) for k, v in stats.to_arrays().items()}}

  def initialize_from_data(self, params, data):
    """Blink basis, target normalisation and blink statistics from the train sequences."""
    expression, blink = data.train_targets
    basis = blinks_lib.fit_basis([s.expression for s in data.train_sequences],
                                 [s.blink for s in data.train_sequences])
    speech = expression - blink @ basis
    std = speech.std(0)
    std = np.where(std > 1e-6, std, 1.0)
    stats = blinks_lib.measure([s.blink for s in data.train_sequences], data.fps)
    return {**params, "stats": {"mean": jnp.asarray(speech.mean(0)), "std": jnp.asarray(std)},
            "blink_basis": jnp.asarray(basis),
            "blinks": {k: jnp.asarray(v) for k, v in stats.to_arrays().items()}}

  def _targets(self, params, batch):
    speech = batch["expression"] - jnp.einsum("blk,ke->ble", batch["blink"],
                                              params["blink_basis"])
    return (speech - params["stats"]["mean"]) / params["stats"]["std"]

  def loss(self, params, batch, rng, step):
    del rng, step
    mc = self.config.model
    pred = self.net.apply({"params": params["net"]}, batch["features"], batch["identity"])
    target = self._targets(params, batch)
    w = jnp.asarray(self.weights)
    if mc.get("variance_weighted", False):   # errors in the data's units, not per-std units
      var = params["stats"]["std"] ** 2
      w = w * var / jnp.mean(var)
    w = w / jnp.mean(w)
    l2 = jnp.mean(w * (pred - target) ** 2)
    vel = jnp.mean(w * (jnp.diff(pred, axis=1) - jnp.diff(target, axis=1)) ** 2) if (
        pred.shape[1] > 1) else jnp.zeros(())
    total = l2 + float(mc.velocity_weight) * vel
    return total, {"l2": l2, "velocity_l2": vel}

  def predict(self, params, batch: dict) -> dict:
    """{'speech': expression without blinks [B, L, E]} for a training-style batch."""
    pred = self._apply({"params": params["net"]}, batch["features"], batch["identity"])
    return {"speech": pred * params["stats"]["std"] + params["stats"]["mean"]}

  def trainable(self, params):
    return {k: jax.tree.map(lambda _, keep=k not in FROZEN: keep, v) for k, v in params.items()}

  def load_pretrained(self, params, pretrained):
    return jax.tree.map(lambda new, old: jnp.asarray(old, new.dtype), params, pretrained)

  # -- whole sequences -------------------------------------------------------------------------

  def predict_features(self, params, feats: np.ndarray, identity: int,
                       chunk: int = 256) -> np.ndarray:
    """[T, E] speech part of the expression for every frame of a [T, W, M] feature track."""
    k, t = int(self.config.model.context), len(feats)
    out = []
    for start in range(0, t, chunk):
      n = min(chunk, t - start)
      idx = seq_lib.window_index(t, np.asarray([start]), chunk, k)[0]   # fixed shape: one compile
      pred = self.predict(params, {"features": jnp.asarray(feats[idx][None]),
                                   "identity": jnp.full((1,), identity, jnp.int32)})["speech"]
      out.append(np.asarray(pred[0, :n]))
    return np.concatenate(out).astype(np.float32)

  def predict_speech(self, params, signal: np.ndarray, fps: float, identity: int,
                     num_frames: int | None = None) -> np.ndarray:
    """[T, E] speech part of the expression for a 16 kHz speech signal."""
    t = num_frames or features_lib.num_video_frames(len(signal), fps, self.settings.sample_rate)
    return self.predict_features(params, features_lib.features(signal, fps, t, self.settings),
                                 identity)

  def blink_stats(self, params) -> blinks_lib.BlinkStats:
    return blinks_lib.BlinkStats.from_arrays({k: np.asarray(v) for k, v in params["blinks"].items()})

  def expressions(self, params, speech: np.ndarray, blink: np.ndarray,
                  expression_scale: float = 1.0) -> np.ndarray:
    """Full expression track: the speech part (scaled about the train mean) plus ``blink @ B``."""
    mean = np.asarray(params["stats"]["mean"])
    return (mean + expression_scale * (speech - mean)
            + np.asarray(blink) @ np.asarray(params["blink_basis"])).astype(np.float32)

  # -- evaluation ------------------------------------------------------------------------------

  def evaluate(self, params, eval_data: dict[str, list[seq_lib.Sequence]]) -> dict[str, float]:
    names = component_names(self.config)
    basis = np.asarray(params["blink_basis"])
    mean, std = np.asarray(params["stats"]["mean"]), np.asarray(params["stats"]["std"])
    w = self.weights > 0
    results = {}
    for set_name, seqs in eval_data.items():
      preds, truths, curves = [], [], []
      for s in seqs:
        pred = self.predict_features(params, seq_lib.sequence_features(s, self.settings),
                                     s.identity)
        truth = s.expression - s.blink @ basis
        preds.append(pred)
        truths.append(truth)
        mouth = mouth_signal(self.config, pred, s.identity)
        if mouth is not None:
          curves.append(sync.speech_sync(mouth, s.audio, self.settings.sample_rate, s.fps)["corr"])
      p, t = (np.concatenate(preds) - mean) / std, (np.concatenate(truths) - mean) / std
      mse = float(np.mean(((p - t) ** 2)[:, w]))
      results[f"{set_name}/mse"] = mse
      results[f"{set_name}/mse_ratio"] = mse / max(float(np.mean((t ** 2)[:, w])), 1e-12)
      for i, name in enumerate(names[:5]):
        if w[i] and t[:, i].std() > 1e-6:
          results[f"{set_name}/mse_ratio/{name}"] = float(
              np.mean((p[:, i] - t[:, i]) ** 2) / max(float(np.mean(t[:, i] ** 2)), 1e-12))
          results[f"{set_name}/corr/{name}"] = (
              float(np.corrcoef(p[:, i], t[:, i])[0, 1]) if p[:, i].std() > 1e-9 else 0.0)
      curves = [c for c in curves if np.isfinite(c).any()]
      if curves:
        with np.errstate(all="ignore"):
          curve = np.nanmean(np.stack(curves), 0)
        k = int(np.nanargmax(curve))
        results[f"{set_name}/sync_corr"] = float(curve[k])
        results[f"{set_name}/sync_lag"] = float(k - (len(curve) - 1) // 2)
    return results


def component_names(config: ml_collections.ConfigDict) -> list[str]:
  """Names of the expression components (synthetic: the generator's; real: pc0, pc1, ...)."""
  if config.data.name == "synthetic_talking_heads":
    from minerf_jax.data import synthetic  # pylint: disable=g-import-not-at-top
    return list(synthetic.EXPRESSION_NAMES)
  return [f"pc{i}" for i in range(int(config.model.expression_dim))]


@functools.lru_cache(maxsize=4)
def _real_basis(data_dir: str, resolution: int, fps: float):
  from minerf_jax.data.builders import talking_faces  # pylint: disable=g-import-not-at-top
  meta = talking_faces.load(data_dir, resolution=resolution, fps=fps).info.metadata
  return (np.asarray(meta["identity_mean_landmarks"], np.float64),
          np.asarray(meta["expression_centre"], np.float64),
          np.asarray(meta["expression_components"], np.float64), float(meta["expression_scale"]))


def mouth_signal(config: ml_collections.ConfigDict, expression: np.ndarray,
                 identity: int) -> np.ndarray | None:
  """[T] mouth opening implied by an expression track: synthetic, jaw_open (the generator's lip
  gap is linear in it); real, the inner-lip gap of the landmarks the PCA code decodes to."""
  if config.data.name == "synthetic_talking_heads":
    return np.asarray(expression)[:, 0]
  if config.data.name == "talking_faces":
    from minerf_jax.data import pipeline  # pylint: disable=g-import-not-at-top
    means, centre, comps, scale = _real_basis(config.data.get("data_dir") or
                                              pipeline.default_data_dir(),
                                              int(config.data.resolution),
                                              float(config.data.get("fps", 25.0)))
    lm = (np.asarray(expression, np.float64) * scale) @ comps + centre
    lm = lm.reshape(len(expression), -1, 3) + means[identity]
    return sync.mouth_opening(lm)
  return None

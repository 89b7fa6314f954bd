"""The references' pair augmentation (minerf_jax/data/augment.py) against PIL's operations."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
from PIL import ImageEnhance

from minerf_jax.data import augment


def _image(seed=0, size=24):
  rng = np.random.default_rng(seed)
  coarse = rng.uniform(0, 255, (4, 4, 3))
  return np.asarray(Image.fromarray(coarse.astype(np.uint8)).resize((size, size),
                                                                    Image.BICUBIC))


def _pil_hue(image: np.ndarray, shift: float) -> np.ndarray:
  """torchvision's ``adjust_hue`` for PIL images: HSV, hue byte shifted with wrap-around."""
  h, s, v = Image.fromarray(image).convert("HSV").split()
  h = np.asarray(h, np.uint8)
  with np.errstate(over="ignore"):
    h = h + np.uint8(int(shift * 255) % 256)
  return np.asarray(Image.merge("HSV", (Image.fromarray(h, "L"), s, v)).convert("RGB"))


def test_each_jitter_operation_matches_pil():
  image = _image()
  x = jnp.asarray(image, jnp.float32) / 255
  pil = Image.fromarray(image)
  cases = [(augment.adjust_brightness, 1.08, lambda f: ImageEnhance.Brightness(pil).enhance(f)),
           (augment.adjust_brightness, 0.9, lambda f: ImageEnhance.Brightness(pil).enhance(f)),
           (augment.adjust_saturation, 1.1, lambda f: ImageEnhance.Color(pil).enhance(f)),
           (augment.adjust_saturation, 0.9, lambda f: ImageEnhance.Color(pil).enhance(f)),
           (augment.adjust_contrast, 1.1, lambda f: ImageEnhance.Contrast(pil).enhance(f)),
           (augment.adjust_contrast, 0.9, lambda f: ImageEnhance.Contrast(pil).enhance(f)),
           (augment.adjust_hue, 0.08, lambda f: _pil_hue(image, f)),
           (augment.adjust_hue, -0.1, lambda f: _pil_hue(image, f))]
  for op, factor, reference in cases:
    theirs = np.asarray(reference(factor), np.float64)
    if op is augment.adjust_hue:   # PIL shifts by whole hue bytes: int(f * 255) / 256 turns
      factor = (int(factor * 255) % 256) / 256
    ours = np.asarray(op(x, factor)) * 255
    err = np.abs(ours - theirs)
    # PIL rounds to 8 bits, its contrast mean to a whole byte and its HSV channels to bytes (a
    # hue byte is 1/256 turn: up to 6 levels of a saturated channel).
    bound = 7.0 if op is augment.adjust_hue else 1.5
    assert err.mean() < 1.0 and err.max() <= bound, (op.__name__, factor, err.mean(), err.max())
    assert np.abs(ours - image).mean() > 1.0, (op.__name__, factor)   # it did something


def test_hsv_round_trip_is_exact():
  x = jax.random.uniform(jax.random.key(1), (64, 3))
  np.testing.assert_allclose(augment.hsv_to_rgb(augment.rgb_to_hsv(x)), x, atol=1e-6)


def test_flips_follow_the_reference_probabilities_and_move_both_frames():
  n = 4000
  source = jnp.broadcast_to(jnp.arange(2.0)[None, None, :, None], (n, 1, 2, 1))   # [0, 1]
  driving = source + 10.0
  s, d = augment.random_flip(jax.random.key(0), source, driving)
  s, d = np.asarray(s)[:, 0, :, 0], np.asarray(d)[:, 0, :, 0]
  timed = s[:, 0] >= 10                      # source and driving swapped
  mirrored = (s[:, 0] % 10) == 1             # left-right reversed
  assert not np.any(timed & mirrored)        # the reference returns after a time flip
  assert abs(timed.mean() - 0.5) < 0.03 and abs(mirrored.mean() - 0.25) < 0.03
  np.testing.assert_array_equal(d, np.where(timed[:, None], s - 10, s + 10))   # together
  s0, d0 = augment.random_flip(jax.random.key(0), source, driving, time_flip=False,
                               horizontal_flip=False)
  np.testing.assert_array_equal(s0, source)
  np.testing.assert_array_equal(d0, driving)


def test_jitter_treats_both_frames_of_a_pair_alike():
  frame = jnp.asarray(_image(2, 16), jnp.float32) / 255
  pairs = jnp.broadcast_to(frame, (6, 2) + frame.shape)        # six pairs of identical frames
  out = np.asarray(augment.color_jitter(jax.random.key(3), pairs))
  np.testing.assert_allclose(out[:, 0], out[:, 1], atol=1e-6)  # one draw per pair
  assert np.abs(out[0, 0] - out[1, 0]).mean() > 1e-3           # another draw per pair
  assert np.abs(out - np.asarray(pairs)).mean() < 0.08         # strength 0.1: a small change
  off = augment.color_jitter(jax.random.key(3), pairs, 0.0, 0.0, 0.0, 0.0)
  np.testing.assert_array_equal(off, pairs)

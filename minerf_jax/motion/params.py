"""Parameter counts of the full-size TPSMM parts, computed without allocating any weights.

``full_size_parameter_counts()`` builds the vox-256 configuration (``config/vox-256.yaml`` in the
reference: ``num_tps=10``; generator ``block_expansion=64, max_features=512,
num_down_blocks=3``; dense motion ``block_expansion=64, max_features=1024, num_blocks=5,
scale_factor=0.25``; background predictor on) and initialises each module under
``jax.eval_shape``, so only shapes are traced. Only the ``params`` collection is counted
(BatchNorm running statistics are buffers in PyTorch as well).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from minerf_jax.motion import correlation
from minerf_jax.motion import dense_motion
from minerf_jax.motion import fomm
from minerf_jax.motion import generator
from minerf_jax.motion import generator
from minerf_jax.motion import keypoints
from minerf_jax.motion import memory

VOX256 = dict(num_tps=10, num_channels=3, image_size=256,
              generator=dict(block_expansion=64, max_features=512, num_down_blocks=3),
              dense_motion=dict(block_expansion=64, max_features=1024, num_blocks=5,
                                scale_factor=0.25))


def count(tree) -> int:
  """Number of scalars in a pytree of arrays or ``ShapeDtypeStruct`` s."""
  return int(sum(np.prod(x.shape, dtype=np.int64) for x in jax.tree_util.tree_leaves(tree)))


def build(config: dict = VOX256) -> dict:
  """The four TPSMM modules of ``config`` (keys as in ``VOX256``)."""
  k = config["num_tps"]
  g = config["generator"]
  return {
      "keypoint_detector": keypoints.KeypointDetector(num_tps=k),
      "bg_predictor": keypoints.BackgroundMotionPredictor(),
      "dense_motion": dense_motion.DenseMotionNetwork(
          num_tps=k, num_occlusion_masks=g["num_down_blocks"] + 1, **config["dense_motion"]),
      "generator": generator.InpaintingGenerator(num_channels=config["num_channels"], **g),
  }


def _abstract_inputs(config: dict):
  """Abstract ``(image, keypoints, background affine)`` of batch 1 for ``config``."""
  s, c, k = config["image_size"], config["num_channels"], config["num_tps"]
  return (jax.ShapeDtypeStruct((1, s, s, c), jnp.float32),
          jax.ShapeDtypeStruct((1, k * 5, 2), jnp.float32),
          jax.ShapeDtypeStruct((1, 3, 3), jnp.float32))


def _motion_shapes(dense_motion_net, image, kp, bg):
  """The dense motion network's output shapes (what the generator consumes)."""
  return jax.eval_shape(lambda img, a, b, m: dense_motion_net.init_with_output(
      jax.random.key(0), img, a, b, m)[0], image, kp, kp, bg)


def full_size_parameter_counts(config: dict = VOX256) -> dict[str, int]:
  """``{module: parameter count, ..., 'total': ...}`` via ``jax.eval_shape`` (no allocation)."""
  modules = build(config)
  image, kp, bg = _abstract_inputs(config)
  rng = jax.random.key(0)

  def shapes(module, *args):
    return jax.eval_shape(lambda *a: module.init(rng, *a), *args)["params"]

  dm = modules["dense_motion"]
  counts = {
      "keypoint_detector": count(shapes(modules["keypoint_detector"], image)),
      "bg_predictor": count(shapes(modules["bg_predictor"], image, image)),
      "dense_motion": count(shapes(dm, image, kp, kp, bg)),
      "generator": count(shapes(modules["generator"], image, _motion_shapes(dm, image, kp, bg))),
  }
  counts["total"] = sum(counts.values())
  return counts



def _tpsmm_shapes(config: dict):
  """Abstract inputs and the generator / dense-motion output shapes of ``config``."""
  modules = build(config)
  image, kp, bg = _abstract_inputs(config)
  gen = modules["generator"]
  motion = _motion_shapes(modules["dense_motion"], image, kp, bg)
  gen_out = jax.eval_shape(lambda img, m: gen.init_with_output(jax.random.key(0), img, m)[0],
                           image, motion)
  return image, kp, motion, gen_out


def mcnet_parameter_counts(config: dict = VOX256, **memory_kw) -> dict[str, int]:
  """Our MCNet variant (``configs/mcnet.py:tpsmm``): TPSMM parts + MCNet's ``MemoryCompensation`` (reference sizes: 512 x 32 x 32 memory).

  ``memory`` is the whole compensation module; ``memory_bank`` and ``dynamic_kv`` (the 3x3
  dynamic conv making keys and values, about three quarters of it) are broken out for the report.
  """
  counts = full_size_parameter_counts(config)
  _, kp, _, gen_out = _tpsmm_shapes(config)
  module = memory.MemoryCompensation(**memory_kw)
  shapes = jax.eval_shape(lambda w, k: module.init(jax.random.key(0), w, k),
                          gen_out["warped_features"], kp)["params"]
  counts["memory"] = count(shapes)
  counts["memory_bank"] = count(shapes["unit"]["memory"])
  counts["dynamic_kv"] = count(shapes["unit"]["key_value"])
  counts["total"] = counts.pop("total") + counts["memory"]
  return counts


# MCNet as published, counted with the authors' code (``modules/keypoint_detector.py:
# KPDetector`` and ``modules/generator.py: Unet_Generator_keypoint_aware`` with
# ``ExpendMemoryUnit``, config/vox-256.yaml and the README's --kp_num 15 --mb_spatial 32
# --mb_channel 512; torch 2.13, 2026-12-05): parameters per part.
MCNET_REFERENCE_PARTS = {"kp_detector": 14_258_268, "dense_motion": 37_796_433,
                         "memory": 25_049_289, "generator": 24_737_283}


def mcnet_published_parameter_counts(num_kp: int = 15, memory_channels: int = 512,
                                     memory_size: int = 32) -> dict[str, int]:
  """MCNet as its authors built it, from our parts: FOMM's detector (hourglass 32 / 1024 / 5)
  and dense motion network (64 / 1024 / 5), the BatchNorm U-Net generator (64 / 512 / 3) and the
  meta-memory (``motion/fomm.py``, ``generator.py``, ``memory.py``), traced at 256x256."""
  image = jax.ShapeDtypeStruct((1, 256, 256, 3), jnp.float32)
  detector = fomm.KeypointDetector(num_kp=num_kp)
  kp_shapes = jax.eval_shape(lambda x: detector.init_with_output(jax.random.key(0), x)[0], image)
  kp = {"value": kp_shapes["value"], "jacobian": kp_shapes["jacobian"]}
  dense = fomm.DenseMotionNetwork(num_kp=num_kp)
  gen = generator.InpaintingGenerator(num_channels=3, block_expansion=64, max_features=512,
                                      num_down_blocks=3, multi_mask=False, norm="batch")
  motion = {"deformation": jax.ShapeDtypeStruct((1, 64, 64, 2), jnp.float32),
            "occlusion_map": [jax.ShapeDtypeStruct((1, 64, 64, 1), jnp.float32)]}
  gen_out = jax.eval_shape(lambda x, m: gen.init_with_output(jax.random.key(0), x, m)[0], image,
                           motion)
  mem = memory.MemoryCompensation(memory_channels=memory_channels, memory_size=memory_size)
  params = lambda module, *args: jax.eval_shape(
      lambda *a: module.init(jax.random.key(0), *a), *args)["params"]
  counts = {"kp_detector": count(params(detector, image)),
            "dense_motion": count(params(dense, image, kp, kp)),
            "memory": count(params(mem, gen_out["warped_features"], kp["value"])),
            "generator": count(params(gen, image, motion))}
  counts["total"] = sum(counts.values())
  return counts


# MRFA as published (config/vox1.yaml, MTIA prior), counted with the authors' code (torch 2.13,
# 2026-12-05), under our names for the parts (theirs: encoder, dense_motion, decoder). The
# encoder's count leaves out the 49,152 numbers of its fixed sine position embedding, which the
# authors store as a requires_grad=False parameter and ours computes (motion/mtia.py).
MRFA_REFERENCE_PARTS = {"detector": 12_234_310, "dense_motion": 37_730_268,
                        "refine": 64_325_476}


def mrfa_parameter_counts(config: dict = VOX256, **refine_kw) -> dict[str, int]:
  """Our MRFA variant (``configs/mrfa.py:tpsmm``): TPSMM parts + ``CorrelationRefinement`` over the TPSMM generator's scales.

  ``structure_encoders`` (both hourglasses, heads and the position embedding) and
  ``update_operator`` (shared operator + per-scale context projections) are broken out.
  """
  counts = full_size_parameter_counts(config)
  image, kp, motion, gen_out = _tpsmm_shapes(config)
  module = correlation.CorrelationRefinement(
      scale_factor=config["dense_motion"]["scale_factor"], **refine_kw)
  shapes = jax.eval_shape(
      lambda img, k, maps, m: module.init(jax.random.key(0), img, k, k, maps, m),
      image, kp, gen_out["encoder_maps"], motion)["params"]
  counts["correlation"] = count(shapes)
  counts["structure_encoders"] = count([shapes["source_encoder"], shapes["driving_encoder"],
                                        shapes["position_embedding"]])
  counts["update_operator"] = counts["correlation"] - counts["structure_encoders"]
  counts["total"] = counts.pop("total") + counts["correlation"]
  return counts


if __name__ == "__main__":
  for title, fn in (("TPSMM", full_size_parameter_counts), ("MCNet", mcnet_parameter_counts),
                    ("MRFA", mrfa_parameter_counts)):
    print(title)
    for name, n in fn().items():
      print(f"  {name:20s} {n:>12,d}  ({n / 1e6:.2f} M)")

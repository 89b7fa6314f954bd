r"""Golden-output fixtures (and full-size checkpoints) from the authors' code, for our ports.

  python tools/make_goldens.py --reference_dir=PATH/Thin-Plate-Spline-Motion-Model --model=tpsmm \
      [--out=tests/data/golden_tpsmm.npz] [--full_checkpoint=/tmp/tpsmm_random.pth.tar]
  python tools/make_goldens.py --reference_dir=PATH/ICCV2023-MCNET --model=mcnet \
      [--full_checkpoint=/tmp/mcnet_random.pth.tar]
  python tools/make_goldens.py --reference_dir=PATH/MRFA --model=mrfa    # dense motion + decoder

Needs PyTorch (``pip install -e .[convert]``) and a checkout of the authors' repository; neither
enters this repository. It builds the reference model at a reduced width (``GOLDEN`` below), with
random weights, runs it on smooth random images in eval mode (BatchNorm running statistics) and, for the
BatchNorm networks, in train mode (batch statistics, each image batch separately as the
reference's training step runs them), and saves the state dicts, inputs and every stage's output
as a small ``.npz`` in the reference's own layouts (NCHW). The stages run in float64 (the
float32 weights cast up) and are stored as float32: the reference solves each thin-plate spline
through ``torch.inverse``, whose float32 rounding with random keypoints moves a warped pixel by up
to ~2e-4, and that is the reference's error, not the port's. ``tests/test_reference_goldens.py``
converts the state dicts with ``minerf_jax.models.torch_import`` and matches each stage; it needs
no PyTorch.

Random weights: PyTorch's default initialisation, then every norm's affine parameters and
BatchNorm running statistics are drawn around their defaults (scale U(0.5, 1.5), shift N(0, 0.1),
variance U(0.5, 1.5)) and the background predictor's zero-initialised ``fc`` gets small random
weights, so that no stage is an identity that a wrong port could match by accident.

``--full_checkpoint``: the full vox-256 model (``config/vox-256.yaml``) with random weights drawn
the same way, saved in the reference's checkpoint format (``{module: state_dict}`` plus
``avd_network`` and optimiser entries, as ``Logger.save_cpk`` writes them): the input of
``launch.convert`` and ``tools/reference_animate.py`` for the full-size equality check.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import types

import numpy as np
import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference  # pylint: disable=g-import-not-at-top,wrong-import-position

GOLDEN = {
    "tpsmm": dict(num_tps=3, image_size=64, batch=2, detector_width=0.0625,
                  generator=dict(block_expansion=4, max_features=16, num_down_blocks=3),
                  dense_motion=dict(block_expansion=4, max_features=16, num_blocks=3,
                                    scale_factor=0.25)),
    # MCNet (README command: --kp_num 15 --generator Unet_Generator_keypoint_aware --mbunit
    # ExpendMemoryUnit): FOMM detector, and the generator with its dense motion and memory.
    # 15 keypoints because the memory's identity route is Linear(C_m + 30, 128) in the code.
    "mcnet": dict(num_kp=15, image_size=64, batch=2,
                  kp_detector=dict(block_expansion=8, max_features=32, num_blocks=3,
                                   temperature=0.1, scale_factor=0.25),
                  generator=dict(block_expansion=4, max_features=32, num_down_blocks=3),
                  dense_motion=dict(block_expansion=4, max_features=16, num_blocks=3,
                                    scale_factor=0.25),
                  memory=dict(mb_spatial=4, mb_channel=8)),
}
GOLDEN["mrfa"] = dict(
    # MRFA's dense motion and RaftFlow decoder (config/vox1.yaml's raft_flow, reduced): the
    # keypoints are inputs here (the MTIA detector has its own fixture, golden_mtia.npz).
    num_kp=5, image_size=64, batch=1, dim=8,
    dense_motion=dict(block_expansion=4, max_features=16, num_blocks=3, scale_factor=0.25),
    generator=dict(block_expansion=4, max_features=16, num_up_blocks=5),
    encoder=dict(block_expansion=4, max_features=16, num_blocks=4),
    # The update operator, hard-coded in the reference (192 / 128 / (128, 96) / (128, 64)),
    # rebuilt narrower by narrow_update_operator.
    update=dict(context_features=8, hidden=8, motion_features=8, corr_features=(8, 8),
                flow_features=(8, 8)),
    # The whole model end to end (eval): an MTIA detector at configs/mrfa.py:test's sizes
    # (tools/make_mtia_golden.py builds it), so that a converted checkpoint can be run whole.
    mtia=dict(image_size=[64, 64], num_kp=5, patch_size=4, dim=16, depth=2, heads=2, mlp_ratio=3,
              stem_width=8, layer1_blocks=1, stage2_channels=[4, 8], stage2_blocks=[1, 1],
              stage2_modules=1, stage3_channels=[4, 8, 16], stage3_blocks=[1, 1, 1],
              stage3_modules=1))
VOX256 = dict(num_tps=10, generator=dict(block_expansion=64, max_features=512, num_down_blocks=3),
              dense_motion=dict(block_expansion=64, max_features=1024, num_blocks=5,
                                scale_factor=0.25))
TPSMM_MODULES = ["modules.keypoint_detector", "modules.bg_motion_predictor",
                 "modules.dense_motion", "modules.inpainting_network", "modules.avd_network"]


def randomize(module: nn.Module, generator: torch.Generator) -> None:
  """Norm affines and BatchNorm statistics drawn around their defaults (module docstring)."""
  with torch.no_grad():
    for m in module.modules():
      batch_norm = isinstance(m, nn.modules.batchnorm._BatchNorm)  # also SynchronizedBatchNorm2d
      if (batch_norm or isinstance(m, nn.InstanceNorm2d)) and m.affine:
        m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=generator))
        m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=generator))
      if batch_norm:
        m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=generator))
        m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=generator))


def build_tpsmm(mods: dict, sizes: dict, width: float, generator: torch.Generator):
  """The reference's four TPSMM networks (+ AVD) at ``sizes``, randomised."""
  reference.RESNET18_WIDTH["value"] = width
  kp = mods["modules.keypoint_detector"].KPDetector(num_tps=sizes["num_tps"])
  bg = mods["modules.bg_motion_predictor"].BGMotionPredictor()
  if width != 1.0:  # the reference hard-codes a 64-channel stem for its 6-channel input
    bg.bg_encoder.conv1 = nn.Conv2d(6, kp.fg_encoder.conv1.out_channels, kernel_size=7, stride=2,
                                    padding=3, bias=False)
  with torch.no_grad():
    fc = bg.bg_encoder.fc
    fc.weight.copy_(0.02 * torch.randn(fc.weight.shape, generator=generator))
    fc.bias.add_(0.02 * torch.randn(fc.bias.shape, generator=generator))
  dm = mods["modules.dense_motion"].DenseMotionNetwork(
      num_tps=sizes["num_tps"], num_channels=3, bg=True, multi_mask=True, **sizes["dense_motion"])
  gen = mods["modules.inpainting_network"].InpaintingNetwork(
      num_channels=3, multi_mask=True, **sizes["generator"])
  avd = mods["modules.avd_network"].AVDNetwork(num_tps=sizes["num_tps"], id_bottle_size=128,
                                               pose_bottle_size=128)
  for m in (kp, bg, dm, gen):
    randomize(m, generator)
  return {"kp_detector": kp, "bg_predictor": bg, "dense_motion_network": dm,
          "inpainting_network": gen, "avd_network": avd}


def smooth_images(shape, generator: torch.Generator) -> torch.Tensor:
  """Random images in [0, 1] with image-like smoothness: 8x8 noise, bicubically upsampled.

  White noise would make a warp's output as sensitive to float32 rounding in the flow as a port
  error is (its gradient is ~30 per normalised unit at 64 px).
  """
  *lead, c, h, w = shape
  coarse = torch.rand((int(np.prod(lead)), c, 8, 8), generator=generator)
  fine = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False)
  return fine.clamp(0, 1).reshape(shape)


def tpsmm_stages(nets: dict, source: torch.Tensor, driving: torch.Tensor) -> dict:
  """Every stage's output, eval mode first (weights unchanged), then the ResNets in train mode."""
  kp, bg, dm, gen = (nets[k] for k in ("kp_detector", "bg_predictor", "dense_motion_network",
                                       "inpainting_network"))
  out = {}
  with torch.no_grad():
    for m in nets.values():
      m.eval()
    kp_s, kp_d = kp(source), kp(driving)
    bg_param = bg(source, driving)
    motion = dm(source_image=source, kp_driving=kp_d, kp_source=kp_s, bg_param=bg_param)
    generated = gen(source, motion)
    encoded = gen.get_encode(driving, motion["occlusion_map"])
    out.update({"eval/kp_source": kp_s["fg_kp"], "eval/kp_driving": kp_d["fg_kp"],
                "eval/bg_param": bg_param, "eval/deformation": motion["deformation"],
                "eval/contribution_maps": motion["contribution_maps"],
                "eval/deformed_source": motion["deformed_source"],
                "eval/deformed": generated["deformed"], "eval/prediction": generated["prediction"]})
    for name, maps in (("occlusion_map", motion["occlusion_map"]),
                       ("warped_encoder_maps", generated["warped_encoder_maps"]),
                       ("driving_encode", encoded)):
      out.update({f"eval/{name}/{i}": m for i, m in enumerate(maps)})
    kp.train()
    bg.train()
    # Separate batches, as GeneratorFullModel runs the detector on source and driving.
    out.update({"train/kp_source": kp(source)["fg_kp"], "train/kp_driving": kp(driving)["fg_kp"],
                "train/bg_param": bg(source, driving)})
  return {k: v.numpy() for k, v in out.items()}


MCNET_MODULES = ["modules.keypoint_detector", "modules.generator", "modules.model"]
# GeneratorFullModel's loss weights for the README's command (perceptual and GAN off: VGG19
# weights cannot be downloaded here, and the perceptual pyramid is TPSMM's, golden-tested apart).
MCNET_LOSS_WEIGHTS = dict(generator_gan=0, discriminator_gan=1, feature_matching=[10, 10, 10, 10],
                          perceptual=[0, 0, 0, 0, 0], equivariance_value=10,
                          equivariance_jacobian=10, l1=0, kp_distance=10, feat_consistent=10)


class _Parallel(nn.Module):
  """What ``DataParallelWithCallback`` gives ``GeneratorFullModel``: ``.module`` and calls."""

  def __init__(self, module):
    super().__init__()
    self.module = module

  def forward(self, *args, **kwargs):
    return self.module(*args, **kwargs)


def mcnet_loss_stages(mods: dict, kp: nn.Module, gen: nn.Module, source: torch.Tensor,
                      driving: torch.Tensor, seed: int) -> dict:
  """The authors' ``GeneratorFullModel`` (train mode) on one pair: its random FOMM transform
  (parameters, transformed frame, transformed keypoints and Jacobians, the transform's values and
  Jacobians at them) and its loss terms. CUDA calls become no-ops on this CPU."""
  model_mod = mods["modules.model"]
  recorded = {}

  class RecordedTransform(model_mod.Transform):
    def __init__(self, bs, **kwargs):
      super().__init__(bs, **kwargs)
      recorded["transform"] = self

  cuda = torch.Tensor.cuda
  torch.Tensor.cuda = lambda self, *a, **k: self
  model_mod.Transform = RecordedTransform
  try:
    train_params = dict(scales=[1, 0.5, 0.25, 0.125], loss_weights=MCNET_LOSS_WEIGHTS,
                        transform_params=dict(sigma_affine=0.05, sigma_tps=0.005, points_tps=5))
    disc = types.SimpleNamespace(module=types.SimpleNamespace(scales=[1]))
    full = model_mod.GeneratorFullModel(_Parallel(kp), _Parallel(gen), disc, train_params,
                                        argparse.Namespace()).double()
    kp.train()
    gen.train()
    torch.manual_seed(seed)
    loss_values, generated = full({"source": source, "driving": driving})
  finally:
    torch.Tensor.cuda = cuda
    model_mod.Transform = model_mod.Transform.__mro__[1]
  t = recorded["transform"]
  kp_t = generated["transformed_kp"]
  out = {"loss/theta": t.theta, "loss/control_params": t.control_params,
         "loss/control_points": t.control_points,
         "loss/transformed_frame": generated["transformed_frame"],
         "loss/kp_transformed": kp_t["value"], "loss/jacobian_transformed": kp_t["jacobian"],
         "loss/kp_source": generated["kp_source"]["value"],
         "loss/kp_driving": generated["kp_driving"]["value"],
         "loss/jacobian_driving": generated["kp_driving"]["jacobian"],
         "loss/warped_kp_transformed": t.warp_coordinates(kp_t["value"]),
         "loss/transform_jacobian": t.jacobian(kp_t["value"])}
  out.update({f"loss/memory_features/{i}": f for i, f in enumerate(generated["feat_list"])})
  out.update({f"loss/memory_values/{i}": v for i, v in enumerate(generated["value_list"])})
  out.update({f"loss/{k}": v for k, v in loss_values.items()})
  return {k: v.detach().numpy().astype(np.float32) for k, v in out.items()}


def narrow_memory_unit(unit: nn.Module, widths: dict[int, int], generator: torch.Generator) -> None:
  """Re-size ``ExpendMemoryUnit``'s per-scale layers for a reduced-width golden.

  The reference names them by the map's width and hard-codes the vox-256 sizes
  (``feat_forward_proj_32`` takes 512 / 2 channels at 32 px, ``_64`` 256 / 2, ``_128`` 128 / 2),
  and ``forward`` looks them up by width. ``widths``: ``{map width: channels}`` of the reduced
  generator's compensated maps; the layers are rebuilt for those (same kinds of layer)."""
  for w in (32, 64, 128):
    for prefix in ("feat_forward_proj_", "conv_", "norm_"):
      delattr(unit, f"{prefix}{w}")
  cm = unit.channel_dim
  for w, c in widths.items():
    setattr(unit, f"feat_forward_proj_{w}", nn.Conv2d(c // 2, cm, kernel_size=1, padding=0))
    setattr(unit, f"conv_{w}", nn.Conv2d(cm, c // 2, kernel_size=3, padding=1))
    setattr(unit, f"norm_{w}", nn.InstanceNorm2d(c // 2, affine=True))
  with torch.no_grad():   # torch.Tensor(K, C): uninitialised memory in the reference
    unit.conv_kv.bias.copy_(0.1 * torch.randn(unit.conv_kv.bias.shape, generator=generator))


def build_mcnet(mods: dict, sizes: dict, generator: torch.Generator, narrow: bool = True):
  """The authors' MCNet (``KPDetector``, ``Unet_Generator_keypoint_aware`` with
  ``ExpendMemoryUnit``) at ``sizes``, randomised; ``narrow``: re-size the memory unit's per-scale
  layers for a reduced-width generator."""
  kp = mods["modules.keypoint_detector"].KPDetector(
      num_kp=sizes["num_kp"], num_channels=3, estimate_jacobian=True, **sizes["kp_detector"])
  gen = mods["modules.generator"].Unet_Generator_keypoint_aware(
      num_channels=3, num_kp=sizes["num_kp"], num_bottleneck_blocks=6,
      estimate_occlusion_map=True, dense_motion_params=sizes["dense_motion"],
      mbunit="ExpendMemoryUnit", **sizes["generator"], **sizes["memory"])
  s = sizes["image_size"]
  be, top, n = (sizes["generator"][k] for k in ("block_expansion", "max_features",
                                                 "num_down_blocks"))
  if narrow:
    # Compensated maps: the bottleneck and every skip but the finest, {width: channels}.
    widths = {s // 2 ** (n - i): min(top, be * 2 ** (n - i)) for i in range(n)}
    narrow_memory_unit(gen.mbUnit, widths, generator)
  else:
    with torch.no_grad():   # torch.Tensor(K, C): uninitialised memory in the reference
      gen.mbUnit.conv_kv.bias.copy_(0.1 * torch.randn(gen.mbUnit.conv_kv.bias.shape,
                                                      generator=generator))
  for m in (kp, gen):
    randomize(m, generator)
  with torch.no_grad():   # zero-initialised Jacobian head: small random weights
    kp.jacobian.weight.copy_(0.01 * torch.randn(kp.jacobian.weight.shape, generator=generator))
  return kp, gen


MCNET_VOX256 = dict(num_kp=15, image_size=256,
                    kp_detector=dict(block_expansion=32, max_features=1024, num_blocks=5,
                                     temperature=0.1, scale_factor=0.25),
                    generator=dict(block_expansion=64, max_features=512, num_down_blocks=3),
                    dense_motion=dict(block_expansion=64, max_features=1024, num_blocks=5,
                                      scale_factor=0.25),
                    memory=dict(mb_spatial=32, mb_channel=512))


def make_mcnet_checkpoint(reference_dir: str, out: str, seed: int = 0) -> None:
  """The full vox-256 MCNet (README command: 15 keypoints, 512 x 32 x 32 memory) with random
  weights, as the authors' DDP training saves it: ``module.``-prefixed state dicts of
  ``generator``, ``kp_detector`` and ``discriminator``, the three optimisers and ``epoch``."""
  mods = reference.import_reference(reference_dir, MCNET_MODULES + ["modules.discriminator"])
  g = torch.Generator().manual_seed(seed)
  torch.manual_seed(seed)
  kp, gen = build_mcnet(mods, MCNET_VOX256, g, narrow=False)
  disc = mods["modules.discriminator"].MultiScaleDiscriminator(
      scales=[1], block_expansion=32, max_features=512, num_blocks=4, use_kp=True, num_kp=15,
      num_channels=3, estimate_jacobian=True)
  nets = {"generator": gen, "kp_detector": kp, "discriminator": disc}
  checkpoint = {k: {f"module.{n}": v for n, v in m.state_dict().items()} for k, m in nets.items()}
  for k, m in nets.items():
    checkpoint[f"optimizer_{k}"] = torch.optim.Adam(m.parameters(), lr=2e-4).state_dict()
  checkpoint["epoch"] = 99
  torch.save(checkpoint, out)
  n = sum(p.numel() for k in ("generator", "kp_detector") for p in nets[k].parameters())
  print(f"wrote {out}: vox-256 MCNet with random weights, {n:,} parameters (without the "
        "discriminator)")


def make_mcnet_golden(reference_dir: str, out: str, seed: int = 0) -> None:
  """MCNet: FOMM detector, generator (dense motion, warps, memory, decoder), every stage."""
  sizes = GOLDEN["mcnet"]
  mods = reference.import_reference(reference_dir, MCNET_MODULES)
  g = torch.Generator().manual_seed(seed)
  torch.manual_seed(seed)
  kp, gen = build_mcnet(mods, sizes, g)
  s, b = sizes["image_size"], sizes["batch"]
  n = sizes["generator"]["num_down_blocks"]
  widths = {s // 2 ** (n - i) for i in range(n)}
  source, driving = smooth_images((2, b, 3, s, s), g)
  arrays = {f"sd/{entry}/{name}": value for entry, net in (("kp_detector", kp), ("generator", gen))
            for name, value in reference.numpy_state_dict(net).items()}
  kp64, gen64 = copy.deepcopy(kp).double(), copy.deepcopy(gen).double()
  source, driving = source.double(), driving.double()
  stages = {}
  with torch.no_grad():
    for mode in ("eval", "train"):
      for m in (kp64, gen64):
        m.train(mode == "train")
      kp_s, kp_d = kp64(source), kp64(driving)   # two batches, as GeneratorFullModel runs them
      o = gen64(source, kp_driving=kp_d, kp_source=kp_s)
      stages.update({f"{mode}/kp_source": kp_s["value"], f"{mode}/jacobian_source": kp_s["jacobian"],
                     f"{mode}/kp_driving": kp_d["value"],
                     f"{mode}/jacobian_driving": kp_d["jacobian"],
                     f"{mode}/deformation": o["deformation"], f"{mode}/mask": o["mask"],
                     f"{mode}/sparse_deformed": o["sparse_deformed"],
                     f"{mode}/occlusion_map": o["occlusion_map"], f"{mode}/deformed": o["deformed"],
                     f"{mode}/prediction": o["prediction"]})
      for name, maps in (("warped_encoder_maps", o["warped_encoder_maps"]),
                         ("memory_features", o["feat_list"]), ("memory_values", o["value_list"]),
                         ("compensated", [o[f"visual_after_{w}"] for w in sorted(widths)])):
        stages.update({f"{mode}/{name}/{i}": m for i, m in enumerate(maps)})
  arrays.update({k: v.numpy().astype(np.float32) for k, v in stages.items()})
  # The training losses, from fresh float64 copies (the loop above ran BatchNorm in train mode).
  arrays.update(mcnet_loss_stages(mods, copy.deepcopy(kp).double(), copy.deepcopy(gen).double(),
                                  source, driving, seed))
  arrays.update({"in/source": source.float().numpy(), "in/driving": driving.float().numpy()})
  save_fixture(out, arrays, "mcnet", reference_dir, seed)


MRFA_MODULES = ["modules.dense_motion", "modules.raft", "modules.util"]


def narrow_update_operator(decoder: nn.Module, widths: dict, context_in: list[int]) -> None:
  """Re-size RaftFlow's hard-coded update operator (``corr_enc``, ``refine``) and per-scale
  context projections (``to_context``, whose input widths the reference takes from a fixed
  table of the vox-256 generator) for a reduced-width golden; same kinds of layer."""
  c0, c1 = widths["corr_features"]
  f0, f1 = widths["flow_features"]
  m, hid, ctx = widths["motion_features"], widths["hidden"], widths["context_features"]
  enc, ref = decoder.corr_enc, decoder.refine
  planes = enc.convc1.in_channels
  enc.convc1, enc.convc2 = nn.Conv2d(planes, c0, 1), nn.Conv2d(c0, c1, 3, padding=1)
  enc.convf1, enc.convf2 = nn.Conv2d(2, f0, 7, padding=3), nn.Conv2d(f0, f1, 3, padding=1)
  enc.conv = nn.Conv2d(c1 + f1, m - 2, 3, padding=1)
  ref.convc1 = nn.Conv2d(ctx, hid, 3, padding=1)
  ref.conv1, ref.conv2 = nn.Conv2d(m + hid, hid, 3, padding=1), nn.Conv2d(hid, 2, 3, padding=1)
  ref.convo1, ref.convo2 = nn.Conv2d(m + hid, hid, 3, padding=1), nn.Conv2d(hid, 1, 3, padding=1)
  decoder.to_context = nn.ModuleList([nn.Conv2d(c, ctx, 1) for c in context_in])


def mrfa_decoder_stages(dm: nn.Module, decoder: nn.Module, down: nn.Module, source: torch.Tensor,
                        kp_s: dict, kp_d: dict) -> dict:
  """The dense motion and RaftFlow stages in the current mode (``train()`` / ``eval()``):
  the prior, the structure features, every step's lookup input and increment, the refined and
  prior-warped maps, masks, warped source and prediction (hooks record what ``forward`` keeps)."""
  rec = {"corr_enc": [], "refine": []}
  hooks = [decoder.corr_enc.register_forward_pre_hook(
               lambda m, args: rec["corr_enc"].append([a.detach().clone() for a in args])),
           decoder.refine.register_forward_hook(
               lambda m, args, out: rec["refine"].append(out[0].detach().clone())),
           decoder.kp_head.register_forward_hook(lambda m, a, out: rec.update(q_d=out)),
           decoder.kp_img_head.register_forward_hook(lambda m, a, out: rec.update(k_s=out))]
  gen = decoder.generator
  encode, decode = gen.encode, gen.decode

  def recording_encode(x):
    rec["features"] = encode(x)
    return rec["features"]

  def recording_decode(warp_f, warp_img, occlusion, warp_f_c=None, occlusion_c=None):
    # Copies: forward appends the prior's mask to ``occlusion`` after decoding.
    rec.update(warped=list(warp_f), deformed=warp_img, masks=list(occlusion),
               prior=list(warp_f_c))
    return decode(warp_f, warp_img, occlusion, warp_f_c, occlusion_c)

  gen.encode, gen.decode = recording_encode, recording_decode
  try:
    motion = dm(source, kp_d, kp_s)
    prediction, _, _ = decoder(kp_s["kp"], kp_d["kp"], motion, img=down(source), img_full=source)
  finally:
    gen.encode, gen.decode = encode, decode
    for h in hooks:
      h.remove()
  out = {"deformation": motion["deformation"], "occlusion_logit": motion["occlusion"],
         "mask": motion["mask"], "sparse_deformed": motion["sparse_deformed"],
         "q_d": rec["q_d"], "k_s": rec["k_s"], "deformed": rec["deformed"],
         "prediction": prediction}
  for name in ("features", "warped", "masks", "prior"):
    out.update({f"{name}/{i}": t for i, t in enumerate(rec[name])})
  for i, (flow, corr) in enumerate(rec["corr_enc"]):
    out.update({f"step_flow/{i}": flow, f"step_corr/{i}": corr, f"step_delta/{i}": rec["refine"][i]})
  return {k: v.detach() for k, v in out.items()}


def make_mrfa_golden(reference_dir: str, out: str, seed: int = 0) -> None:
  """MRFA's FOMM-style dense motion and RaftFlow (refinement + generator), every stage."""
  sizes = GOLDEN["mrfa"]
  mods = reference.import_reference(reference_dir, MRFA_MODULES)
  g = torch.Generator().manual_seed(seed)
  torch.manual_seed(seed)
  k, s, b = sizes["num_kp"], sizes["image_size"], sizes["batch"]
  dm = mods["modules.dense_motion"].DenseMotionNetwork(
      num_kp=k, num_channels=3, estimate_occlusion_map=True, **sizes["dense_motion"])
  enc = sizes["encoder"]
  decoder = mods["modules.raft"].RaftFlow(
      prior_only=False, num_kp=k, dim=sizes["dim"], size=s,
      generator=dict(num_channels=3, **sizes["generator"]),
      driving_encoder=dict(in_features=k, **enc), source_encoder=dict(in_features=k + 3, **enc))
  be, top, n = (sizes["generator"][x] for x in ("block_expansion", "max_features",
                                                 "num_up_blocks"))
  widths = [min(top, be * 2 ** (n - i)) for i in range(n + 1)]   # encoder maps, coarse to fine
  narrow_update_operator(decoder, sizes["update"], widths)
  for m in (dm, decoder):
    randomize(m, g)
  down = mods["modules.util"].AntiAliasInterpolation2d(3, 0.25)
  source = smooth_images((b, 3, s, s), g)
  kp = lambda: {"kp": 0.7 * (2 * torch.rand((b, k, 2), generator=g) - 1),
                "jacobian": torch.eye(2) + 0.1 * torch.randn((b, k, 2, 2), generator=g)}
  kp_s, kp_d = kp(), kp()
  arrays = {f"sd/{entry}/{name}": value for entry, net in (("dense_motion", dm),
                                                           ("decoder", decoder))
            for name, value in reference.numpy_state_dict(net).items()}
  nets64 = [copy.deepcopy(m).double() for m in (dm, decoder, down)]
  # CorrBlock returns .float(): keep the lookups in float64 with the rest of the stages.
  corr_block = mods["modules.raft"].CorrBlock
  lookup = corr_block.__call__
  corr_block.__call__ = lambda self, coords: lookup(self, coords).to(coords.dtype)
  d64 = lambda d: {key: v.double() for key, v in d.items()}
  stages = {}
  with torch.no_grad():
    for mode in ("eval", "train"):
      for m in nets64:
        m.train(mode == "train")
      result = mrfa_decoder_stages(*nets64, source.double(), d64(kp_s), d64(kp_d))
      stages.update({f"{mode}/{key}": v for key, v in result.items()})
  # The finest steps' looked-up correlations are most of the bytes: keep step 4 in eval mode
  # (the first step finer than the base resolution); the others are checked through the
  # increments, warps and prediction that follow from them.
  for key in ["eval/step_corr/5", "train/step_corr/5", "train/step_corr/4"]:
    del stages[key]
  # End to end: the MTIA encoder on source and driving, dense motion, decoder (eval, float64).
  import make_mtia_golden  # pylint: disable=g-import-not-at-top  (it imports this module)
  make_mtia_golden.install_standins()
  mtia_mods = reference.import_reference(reference_dir, make_mtia_golden.MODULES)
  mtia_sizes = sizes["mtia"]
  encoder = make_mtia_golden.build(mtia_mods, make_mtia_golden.reduced_config(
      make_mtia_golden.vox1_config(reference_dir), mtia_sizes), mtia_sizes)
  make_mtia_golden.randomize(encoder, g)
  driving = smooth_images((b, 3, s, s), g)
  arrays.update({f"sd/encoder/{name}": value
                 for name, value in reference.numpy_state_dict(encoder).items()})
  # Fresh copies: the train-mode pass above updated the BatchNorm running statistics.
  enc64, dm64, decoder64, down64 = (copy.deepcopy(m).double().eval()
                                    for m in (encoder, dm, decoder, down))
  with torch.no_grad():
    kp_s64, kp_d64 = enc64(source.double()), enc64(driving.double())
    motion = dm64(source.double(), kp_d64, kp_s64)
    prediction, _, _ = decoder64(kp_s64["kp"], kp_d64["kp"], motion, img=down64(source.double()),
                                 img_full=source.double())
  stages.update({"e2e/kp_source": kp_s64["kp"], "e2e/jacobian_source": kp_s64["jacobian"],
                 "e2e/kp_driving": kp_d64["kp"], "e2e/prediction": prediction})
  arrays["in/driving"] = driving.numpy()
  corr_block.__call__ = lookup
  arrays.update({key: v.numpy().astype(np.float32) for key, v in stages.items()})
  arrays.update({"in/source": source.numpy(), "in/kp_source": kp_s["kp"].numpy(),
                 "in/jacobian_source": kp_s["jacobian"].numpy(),
                 "in/kp_driving": kp_d["kp"].numpy(),
                 "in/jacobian_driving": kp_d["jacobian"].numpy()})
  save_fixture(out, arrays, "mrfa", reference_dir, seed)


def make_mrfa_checkpoint(reference_dir: str, out: str, seed: int = 0) -> None:
  """The published MRFA (``config/vox1.yaml``: MTIA prior, dense motion, RaftFlow) with random
  weights, as the authors' DDP training saves it: ``{'model': module.-prefixed state dict
  (encoder, dense_motion, decoder and the anti-aliasing buffer), 'optimizer', 'epoch'}`` (their
  loss's VGG19 is left out: its weights cannot be built here, and the converter drops it)."""
  import yaml  # pylint: disable=g-import-not-at-top
  import make_mtia_golden  # pylint: disable=g-import-not-at-top  (it imports this module)
  make_mtia_golden.install_standins()
  mods = reference.import_reference(reference_dir, MRFA_MODULES + make_mtia_golden.MODULES)
  with open(os.path.join(reference_dir, "config", "vox1.yaml")) as f:
    cfg = yaml.safe_load(f)
  g = torch.Generator().manual_seed(seed)
  torch.manual_seed(seed)
  encoder = make_mtia_golden.build(mods, cfg["mtia_kp_detector"])
  make_mtia_golden.randomize(encoder, g)
  dm = mods["modules.dense_motion"].DenseMotionNetwork(**cfg["dense_motion"])
  decoder = mods["modules.raft"].RaftFlow(**cfg["raft_flow"])
  for m in (dm, decoder):
    randomize(m, g)
  down = mods["modules.util"].AntiAliasInterpolation2d(3, 0.25)
  nets = {"encoder": encoder, "dense_motion": dm, "decoder": decoder, "down": down}
  state = {f"module.{k}.{n}": v for k, m in nets.items() for n, v in m.state_dict().items()}
  trainable = [p for k in ("encoder", "dense_motion", "decoder") for p in nets[k].parameters()]
  torch.save({"model": state, "optimizer": torch.optim.Adam(trainable, lr=2e-4).state_dict(),
              "epoch": 99}, out)
  n = sum(p.numel() for p in trainable)
  print(f"wrote {out}: vox1 MRFA (MTIA prior) with random weights, {n:,} parameters (with the "
        "fixed sine embedding the reference keeps as a parameter)")


def save_fixture(out: str, arrays: dict, model: str, reference_dir: str, seed: int) -> None:
  """``arrays`` plus a ``meta`` JSON (model, sizes, seed, reference commit, torch) to ``out``."""
  meta = dict(model=model, sizes=GOLDEN[model], seed=seed,
              reference_commit=git_head(reference_dir), torch=torch.__version__)
  arrays = {**arrays, "meta": np.asarray(json.dumps(meta))}
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  np.savez_compressed(out, **arrays)
  print(f"wrote {out}: {len(arrays)} arrays, {os.path.getsize(out) / 1e6:.2f} MB")


def git_head(path: str) -> str:
  try:
    return subprocess.run(["git", "-C", path, "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return "unknown"


def make_tpsmm_golden(reference_dir: str, out: str, seed: int = 0) -> None:
  sizes = GOLDEN["tpsmm"]
  mods = reference.import_reference(reference_dir, TPSMM_MODULES, narrow_resnet=True)
  g = torch.Generator().manual_seed(seed)
  torch.manual_seed(seed)
  nets = build_tpsmm(mods, sizes, sizes["detector_width"], g)
  s, b = sizes["image_size"], sizes["batch"]
  source, driving = smooth_images((2, b, 3, s, s), g)
  arrays = {f"sd/{entry}/{name}": value
            for entry in ("kp_detector", "bg_predictor", "dense_motion_network",
                          "inpainting_network")
            for name, value in reference.numpy_state_dict(nets[entry]).items()}
  # The stages in float64 (the same float32 weights, cast), stored as float32: see the docstring.
  nets64 = {k: copy.deepcopy(v).double() for k, v in nets.items()}
  arrays.update({k: v.astype(np.float32)
                 for k, v in tpsmm_stages(nets64, source.double(), driving.double()).items()})
  arrays.update({"in/source": source.numpy(), "in/driving": driving.numpy()})
  save_fixture(out, arrays, "tpsmm", reference_dir, seed)


def make_tpsmm_checkpoint(reference_dir: str, out: str, seed: int = 0) -> None:
  mods = reference.import_reference(reference_dir, TPSMM_MODULES)
  g = torch.Generator().manual_seed(seed)
  torch.manual_seed(seed)
  nets = build_tpsmm(mods, VOX256, 1.0, g)
  params = [p for k in ("inpainting_network", "dense_motion_network", "kp_detector")
            for p in nets[k].parameters()]
  checkpoint = {k: v.state_dict() for k, v in nets.items()}
  checkpoint["optimizer"] = torch.optim.Adam(params, lr=2e-4).state_dict()
  torch.save(checkpoint, out)
  n = sum(p.numel() for k, m in nets.items() if k != "avd_network" for p in m.parameters())
  print(f"wrote {out}: vox-256 TPSMM with random weights, {n:,} parameters (without AVD)")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--reference_dir", required=True)
  parser.add_argument("--model", default="tpsmm", choices=sorted(GOLDEN))
  parser.add_argument("--out", default=None, help="fixture path (default tests/data/golden_<model>"
                      ".npz); '' to skip")
  parser.add_argument("--full_checkpoint", default="", help="also write a full-size random "
                      "checkpoint in the authors' format here")
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = (os.path.join(root, "tests", "data", f"golden_{args.model}.npz") if args.out is None
         else args.out)
  if out:
    {"tpsmm": make_tpsmm_golden, "mcnet": make_mcnet_golden, "mrfa": make_mrfa_golden}[args.model](
        args.reference_dir, out, args.seed)
  if args.full_checkpoint:
    {"tpsmm": make_tpsmm_checkpoint, "mcnet": make_mcnet_checkpoint,
     "mrfa": make_mrfa_checkpoint}[args.model](
        args.reference_dir, args.full_checkpoint, args.seed)


if __name__ == "__main__":
  main()

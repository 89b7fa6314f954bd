r"""Golden fixture of MRFA's MTIA keypoint detector (HRNet + TokenPose) from the authors' code.

  python tools/make_mtia_golden.py --reference_dir=PATH/MRFA [--out=tests/data/golden_mtia.npz]
  python tools/make_mtia_golden.py --reference_dir=PATH/MRFA --count_full --out=''

Needs PyTorch and a checkout of the authors' repository (``JialeTao/MRFA``); neither enters
this repository. It builds the reference ``TokenPose_B`` (``modules/transformer/
pose_tokenpose_b.py``) from the authors' ``config/vox1.yaml: mtia_kp_detector`` with the sizes
of ``GOLDEN`` below: a non-square 64 x 48 input, a narrower HRNet and a 2-layer transformer. The
reference hard-codes its stem (64 channels, 4 ``layer1`` bottlenecks); those are rebuilt at
``stem_width`` / ``layer1_blocks`` with the reference's own ``_make_layer`` and
``_make_transition_layer``. The model gets random weights, runs on smooth random images in
float64 (the float32 weights cast up) in eval mode (BatchNorm running statistics) and in train
mode (batch statistics), and the state dict (``sd/encoder/<name>``, float32), the images
(``in/image``, NCHW) and the outputs are saved as float32 in the layout of
``tools/make_goldens.py`` (loaded by ``tests/_golden.py: load_golden``): per mode, the HRNet map
``features [B, C, H/4, W/4]``, the transformer's output sequence ``tokens [B, 2K + N, dim]``,
``kp [B, K, 2]`` and ``jacobian [B, K, 2, 2]``. ``meta`` holds our module's field values
(``sizes``), the seed, the reference commit and the torch version.

Random weights: PyTorch's default initialisation and the reference's own (``INIT: True``: timm
truncated normals of std 0.02, zero biases), then drawn around their defaults so that no stage
is an identity a wrong port could match by accident: BatchNorm and LayerNorm scale U(0.5, 1.5)
and shift N(0, 0.1), BatchNorm running mean N(0, 0.1) and variance U(0.5, 1.5), the linear
layers' zero biases N(0, 0.02), and the Jacobian head's zero weights N(0, 0.05).

``--count_full``: build the full vox1 detector and print its parameter counts (trainable, and
the fixed sine embedding the reference stores as a parameter): the numbers that
``tests/test_mtia.py`` checks our full-size module against.

The reference imports ``einops`` and ``timm.models.layers.weight_init.trunc_normal_``; where
they do not import, small stand-ins defined here are installed in ``sys.modules`` (``rearrange``
/ ``repeat`` for the axis patterns the reference uses; ``trunc_normal_`` as
``torch.nn.init.trunc_normal_``, which has timm's signature and absolute bounds).
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import re
import sys
import types

import numpy as np
import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_goldens  # pylint: disable=g-import-not-at-top,wrong-import-position
import reference  # pylint: disable=g-import-not-at-top,wrong-import-position

# Our MTIAKeypointDetector's fields (image_size is (H, W)) and the batch.
GOLDEN = dict(image_size=[64, 48], num_kp=10, patch_size=4, dim=32, depth=2, heads=4,
              mlp_ratio=3, stem_width=16, layer1_blocks=2, stage2_channels=[8, 16],
              stage2_blocks=[2, 2], stage2_modules=1, stage3_channels=[8, 16, 32],
              stage3_blocks=[2, 2, 2], stage3_modules=2, batch=2)
MODULES = ["modules.transformer.pose_tokenpose_b", "modules.transformer.hr_base"]


# --- stand-ins for einops and timm (only installed when the real packages do not import) -------

def _axes(side: str) -> list[list[str]]:
  """``'b c (h p1) (w p2)'`` -> ``[['b'], ['c'], ['h', 'p1'], ['w', 'p2']]``; ``()`` -> ``[]``."""
  groups, group = [], None
  for token in re.findall(r"\(|\)|\w+", side):
    if token == "(":
      group = []
    elif token == ")":
      groups.append(group)
      group = None
    elif group is not None:
      group.append(token)
    else:
      groups.append([token])
  return groups


def _decompose(tensor: torch.Tensor, left: list[list[str]], sizes: dict) -> torch.Tensor:
  if len(left) != tensor.dim():
    raise ValueError(f"pattern has {len(left)} axes, tensor {tensor.dim()}")
  for group, n in zip(left, tensor.shape):
    unknown = [a for a in group if a not in sizes]
    known = math.prod(sizes[a] for a in group if a in sizes)
    if len(unknown) > 1:
      raise ValueError(f"cannot infer the sizes of {unknown}")
    if unknown:
      sizes[unknown[0]] = n // known
  return tensor.reshape([sizes[a] for g in left for a in g])


def rearrange(tensor: torch.Tensor, pattern: str, **sizes) -> torch.Tensor:
  left, right = (_axes(s) for s in pattern.split("->"))
  x = _decompose(tensor, left, sizes)
  names = [a for g in left for a in g]
  x = x.permute([names.index(a) for g in right for a in g])
  return x.reshape([math.prod(sizes[a] for a in g) for g in right])


def repeat(tensor: torch.Tensor, pattern: str, **sizes) -> torch.Tensor:
  left, right = (_axes(s) for s in pattern.split("->"))
  x = _decompose(tensor, left, sizes)
  names = [a for g in left for a in g]
  out = [a for g in right for a in g]
  x = x.permute([names.index(a) for a in out if a in names])
  x = x.reshape([sizes[a] if a in names else 1 for a in out]).expand([sizes[a] for a in out])
  return x.reshape([math.prod(sizes[a] for a in g) for g in right])


def install_standins() -> list[str]:
  """Stand-ins for whichever of ``einops`` / ``timm`` does not import; their names."""
  installed = []
  try:
    import einops  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    einops = types.ModuleType("einops")
    einops.rearrange, einops.repeat = rearrange, repeat
    sys.modules["einops"] = einops
    installed.append("einops")
  if reference.install_timm_standin():
    installed.append("timm")
  return installed


# --- the reference model --------------------------------------------------------------------

class _Config(dict):
  """The yaml config with attribute access, as the reference's ``AttributeDict``."""

  def __getattr__(self, key):
    try:
      return self[key]
    except KeyError as e:
      raise AttributeError(key) from e


def _attributes(tree):
  return _Config({k: _attributes(v) for k, v in tree.items()}) if isinstance(tree, dict) else tree


def vox1_config(reference_dir: str) -> dict:
  import yaml  # pylint: disable=g-import-not-at-top
  with open(os.path.join(reference_dir, "config", "vox1.yaml")) as f:
    return yaml.safe_load(f)["mtia_kp_detector"]


def reduced_config(cfg: dict, sizes: dict) -> dict:
  """The vox1 detector config at ``sizes`` (our field names)."""
  cfg = copy.deepcopy(cfg)
  model = cfg["MODEL"]
  h, w = sizes["image_size"]
  model.update(IMAGE_SIZE=[w, h], HEATMAP_SIZE=[w // 4, h // 4], NUM_JOINTS=sizes["num_kp"],
               PATCH_SIZE=[sizes["patch_size"]] * 2, DIM=sizes["dim"],
               TRANSFORMER_DEPTH=sizes["depth"], TRANSFORMER_HEADS=sizes["heads"],
               TRANSFORMER_MLP_RATIO=sizes["mlp_ratio"],
               BASE_CHANNEL=sizes["stage3_channels"][0])
  for stage in ("stage2", "stage3"):
    model["EXTRA"][stage.upper()].update(
        NUM_MODULES=sizes[f"{stage}_modules"], NUM_BRANCHES=len(sizes[f"{stage}_channels"]),
        NUM_BLOCKS=list(sizes[f"{stage}_blocks"]), NUM_CHANNELS=list(sizes[f"{stage}_channels"]))
  return cfg


def build(mods: dict, cfg: dict, sizes: dict | None = None) -> nn.Module:
  """``TokenPose_B`` for ``cfg``; with ``sizes``, its stem rebuilt at ``stem_width`` /
  ``layer1_blocks`` by the reference's own builders."""
  model = mods["modules.transformer.pose_tokenpose_b"].get_pose_net(_attributes(cfg),
                                                                    is_train=True)
  if sizes is not None:
    hr, w = model.pre_feature, sizes["stem_width"]
    bottleneck = mods["modules.transformer.hr_base"].Bottleneck
    hr.conv1 = nn.Conv2d(3, w, kernel_size=3, stride=2, padding=1, bias=False)
    hr.bn1 = nn.BatchNorm2d(w, momentum=0.1)
    hr.conv2 = nn.Conv2d(w, w, kernel_size=3, stride=2, padding=1, bias=False)
    hr.bn2 = nn.BatchNorm2d(w, momentum=0.1)
    hr.inplanes = w
    # pylint: disable=protected-access
    hr.layer1 = hr._make_layer(bottleneck, w, sizes["layer1_blocks"])
    hr.transition1 = hr._make_transition_layer([w * bottleneck.expansion],
                                               list(sizes["stage2_channels"]))
  return model


def randomize(model: nn.Module, generator: torch.Generator) -> None:
  """Norms, biases and the Jacobian head drawn around their defaults (module docstring)."""
  make_goldens.randomize(model, generator)   # BatchNorm affines and running statistics
  with torch.no_grad():
    for m in model.modules():
      if isinstance(m, nn.LayerNorm):
        m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=generator))
        m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=generator))
      elif isinstance(m, nn.Linear) and m.bias is not None:
        m.bias.add_(0.02 * torch.randn(m.bias.shape, generator=generator))
    head = model.transformer.mlp_head_jacobian[-1]
    head.weight.copy_(0.05 * torch.randn(head.weight.shape, generator=generator))


def run(model: nn.Module, image: torch.Tensor, train: bool) -> dict:
  """The outputs and the two hooked intermediates of one forward pass."""
  seen = {}
  hooks = [model.pre_feature.register_forward_hook(
               lambda m, i, o: seen.__setitem__("features", o.clone())),
           model.transformer.transformer.register_forward_hook(
               lambda m, i, o: seen.__setitem__("tokens", o.clone()))]
  model.train(train)
  try:
    with torch.no_grad():
      out = model(image)
  finally:
    for h in hooks:
      h.remove()
  return {"features": seen["features"], "tokens": seen["tokens"], "kp": out["kp"],
          "jacobian": out["jacobian"]}


def make_golden(reference_dir: str, out: str, seed: int = 0) -> None:
  standins = install_standins()
  mods = reference.import_reference(reference_dir, MODULES)
  sizes = GOLDEN
  g = torch.Generator().manual_seed(seed)
  torch.manual_seed(seed)
  model = build(mods, reduced_config(vox1_config(reference_dir), sizes), sizes)
  randomize(model, g)
  h, w = sizes["image_size"]
  image = make_goldens.smooth_images((sizes["batch"], 3, h, w), g)
  arrays = {f"sd/encoder/{k}": v for k, v in reference.numpy_state_dict(model).items()}
  model64 = copy.deepcopy(model).double()
  for mode in ("eval", "train"):
    outputs = run(model64, image.double(), mode == "train")
    arrays.update({f"{mode}/{k}": v.numpy().astype(np.float32) for k, v in outputs.items()})
  arrays["in/image"] = image.numpy()
  meta = dict(model="mtia", sizes=sizes, seed=seed,
              reference_commit=make_goldens.git_head(reference_dir), torch=torch.__version__,
              standins=standins)
  arrays["meta"] = np.asarray(json.dumps(meta))
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  np.savez_compressed(out, **arrays)
  print(f"wrote {out}: {len(arrays)} arrays, {os.path.getsize(out) / 1e6:.2f} MB")


def count_full(reference_dir: str) -> None:
  install_standins()
  mods = reference.import_reference(reference_dir, MODULES)
  torch.manual_seed(0)
  model = build(mods, vox1_config(reference_dir))
  count = lambda trainable: sum(p.numel() for p in model.parameters()
                                if p.requires_grad == trainable)
  print(f"vox1 MTIA detector: {count(True) + count(False):,} parameters = {count(True):,} "
        f"trainable + {count(False):,} fixed (the sine position embedding); buffers "
        f"{sum(b.numel() for b in model.buffers()):,}")
  with torch.no_grad():
    out = model.eval()(torch.rand(1, 3, 256, 256))
  print("outputs:", {k: tuple(v.shape) for k, v in out.items()})


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--reference_dir", required=True)
  parser.add_argument("--out", default=None, help="fixture path (default "
                      "tests/data/golden_mtia.npz); '' to skip")
  parser.add_argument("--count_full", action="store_true",
                      help="print the full vox1 detector's parameter counts")
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = os.path.join(root, "tests", "data", "golden_mtia.npz") if args.out is None else args.out
  if out:
    make_golden(args.reference_dir, out, args.seed)
  if args.count_full:
    count_full(args.reference_dir)


if __name__ == "__main__":
  main()

r"""Runs an authors' model on the crops our ``launch.animate`` used, and compares the frames.

  python -m launch.animate --checkpoint=runs/tpsmm_vox --source=portrait.png --driving=talk.mp4 \
      --out=/tmp/ours.npz
  python tools/reference_animate.py --reference_dir=PATH/Thin-Plate-Spline-Motion-Model \
      --model=tpsmm --torch_checkpoint=vox.pth.tar --frames=/tmp/ours.npz [--mode=relative]
  python tools/reference_animate.py --reference_dir=PATH/ICCV2023-MCNET --model=mcnet \
      --torch_checkpoint=mcnet.pth.tar --frames=/tmp/ours_mcnet.npz
  python tools/reference_animate.py --reference_dir=PATH/MRFA --model=mrfa \
      --torch_checkpoint=mrfa.pth --frames=/tmp/ours_mrfa.npz

``--frames`` is what ``launch.animate --out=x.npz`` writes: the source and driving crops at the
model's size (floats in [0, 1]) and our predicted frames. The authors' own demo code
(``demo.py``: ``load_checkpoints`` and ``make_animation``, with ``config/vox-256.yaml``) animates
the same crops on the CPU (MCNet: its ``demo.py`` with the README's ``--kp_num 15 --generator
Unet_Generator_keypoint_aware --mbunit ExpendMemoryUnit --relative --adapt_scale``, given
``safe_load`` for its ``yaml.load`` without a loader, which PyYAML 6 refuses, and the
``skimage.util.pad`` / ``skimage.draw.circle`` that scikit-image 0.19 removed and its training
modules import), and the script prints the mean and max absolute difference per frame and over
all frames, in units of 1/255. Needs the ``reference`` extra: PyTorch and what the authors'
``demo.py`` imports (scipy, scikit-image, imageio, pyyaml, matplotlib; MCNet's also torchdiffeq,
scikit-learn and pandas).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference  # pylint: disable=g-import-not-at-top,wrong-import-position


def tpsmm_frames(reference_dir: str, torch_checkpoint: str, source: np.ndarray,
                 driving: np.ndarray, mode: str) -> np.ndarray:
  """The authors' ``make_animation`` of ``source`` [S, S, 3] by ``driving`` [T, S, S, 3]."""
  demo = reference.import_reference(reference_dir, ["demo"])["demo"]
  config = os.path.join(reference_dir, "config", "vox-256.yaml")
  nets = demo.load_checkpoints(config_path=config, checkpoint_path=torch_checkpoint,
                               device="cpu")
  return np.stack(demo.make_animation(source, list(driving), *nets, device="cpu", mode=mode))


def mcnet_frames(reference_dir: str, torch_checkpoint: str, source: np.ndarray,
                 driving: np.ndarray, mode: str) -> np.ndarray:
  """MCNet's ``demo.py``: ``load_checkpoints`` and ``make_animation`` (relative motion with
  relative Jacobians and the hull-area scale, or absolute) on the CPU."""
  import argparse as _argparse  # pylint: disable=g-import-not-at-top
  import types as _types  # pylint: disable=g-import-not-at-top
  import yaml  # pylint: disable=g-import-not-at-top
  _skimage_compat()
  demo = reference.import_reference(reference_dir, ["demo"])["demo"]
  demo.opt = _argparse.Namespace(kp_num=15, generator="Unet_Generator_keypoint_aware",
                                 mbunit="ExpendMemoryUnit", mb_spatial=32, mb_channel=512)
  demo.yaml = _types.SimpleNamespace(load=yaml.safe_load)
  config = os.path.join(reference_dir, "config", "vox-256.yaml")
  generator, kp_detector = demo.load_checkpoints(config, torch_checkpoint, cpu=True)
  relative = mode == "relative"
  _, _, predictions = demo.make_animation(source, list(driving), generator, kp_detector,
                                          relative=relative, adapt_movement_scale=relative,
                                          cpu=True)
  return np.stack(predictions)


def _skimage_compat() -> None:
  """Names the authors' training modules import that scikit-image 0.19 removed."""
  import skimage.draw  # pylint: disable=g-import-not-at-top
  import skimage.util  # pylint: disable=g-import-not-at-top
  if not hasattr(skimage.util, "pad"):
    skimage.util.pad = np.pad
  if not hasattr(skimage.draw, "circle"):
    skimage.draw.circle = lambda r, c, radius, shape=None: skimage.draw.disk((r, c), radius,
                                                                           shape=shape)


def mrfa_frames(reference_dir: str, torch_checkpoint: str, source: np.ndarray,
                driving: np.ndarray, mode: str) -> np.ndarray:
  """MRFA's ``demo.py: make_animation`` (relative motion with relative Jacobians and the hull
  scale, as its README's ``--relative --adapt_scale``) on the CPU. Its ``load_checkpoints``
  builds the whole training model (VGG19 with downloaded weights) on CUDA, so the three modules
  it returns are built here from ``config/vox1.yaml`` and loaded from the checkpoint's ``model``
  state dict instead; its ``.cuda()`` calls are no-ops."""
  import torch  # pylint: disable=g-import-not-at-top
  import yaml  # pylint: disable=g-import-not-at-top
  import make_mtia_golden  # pylint: disable=g-import-not-at-top
  _skimage_compat()
  torch.Tensor.cuda = lambda self, *a, **k: self
  torch.nn.Module.cuda = lambda self, *a, **k: self
  make_mtia_golden.install_standins()
  mods = reference.import_reference(reference_dir, ["demo", "modules.dense_motion",
                                                    "modules.raft", "modules.util",
                                                    *make_mtia_golden.MODULES])
  with open(os.path.join(reference_dir, "config", "vox1.yaml")) as f:
    raw = yaml.safe_load(f)
  cfg = mods["modules.util"].convert_dict_to_attrit_dict(raw)
  nets = {"encoder": make_mtia_golden.build(mods, raw["mtia_kp_detector"]),
          "dense_motion": mods["modules.dense_motion"].DenseMotionNetwork(**raw["dense_motion"]),
          "decoder": mods["modules.raft"].RaftFlow(**raw["raft_flow"])}
  state = torch.load(torch_checkpoint, map_location="cpu")["model"]
  state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
  for name, net in nets.items():
    net.load_state_dict({k[len(name) + 1:]: v for k, v in state.items()
                         if k.startswith(name + ".")})
    net.eval()
  relative = mode == "relative"
  return np.stack(mods["demo"].make_animation(
      cfg, source, list(driving), nets["encoder"], nets["dense_motion"], nets["decoder"],
      relative=relative, adapt_movement_scale=relative, cpu=True))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--reference_dir", required=True)
  parser.add_argument("--model", default="tpsmm", choices=["tpsmm", "mcnet", "mrfa"])
  parser.add_argument("--torch_checkpoint", required=True)
  parser.add_argument("--frames", required=True, help="launch.animate --out=x.npz output")
  parser.add_argument("--mode", default="relative", choices=["relative", "standard"])
  args = parser.parse_args()
  with np.load(args.frames) as z:
    ours, source, driving = z["prediction"], z["source"], z["driving"]
  start = time.time()
  frames = {"tpsmm": tpsmm_frames, "mcnet": mcnet_frames, "mrfa": mrfa_frames}[args.model]
  theirs = frames(args.reference_dir, args.torch_checkpoint, source, driving, args.mode)
  seconds = time.time() - start
  diff = np.abs(ours.astype(np.float64) - theirs.astype(np.float64)) * 255.0
  per_frame = diff.mean(axis=(1, 2, 3))
  print(f"reference {args.model} ({args.mode}) animated {len(theirs)} frames of "
        f"{source.shape[0]}x{source.shape[1]} in {seconds:.1f} s")
  print(f"|ours - reference| in 1/255: mean {diff.mean():.4f}, worst frame mean "
        f"{per_frame.max():.4f} (frame {int(per_frame.argmax())}), max {diff.max():.4f}")
  print(f"8-bit frames identical: {np.mean(np.round(ours * 255) == np.round(theirs * 255)):.4%} "
        "of values")


if __name__ == "__main__":
  main()

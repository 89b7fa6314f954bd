r"""Runs an authors' model on the crops our ``launch.animate`` used, and compares the frames.

  python -m launch.animate --checkpoint=runs/tpsmm_vox --source=portrait.png --driving=talk.mp4 \
      --out=/tmp/ours.npz
  python tools/reference_animate.py --reference_dir=PATH/Thin-Plate-Spline-Motion-Model \
      --model=tpsmm --torch_checkpoint=vox.pth.tar --frames=/tmp/ours.npz [--mode=relative]
  python tools/reference_animate.py --reference_dir=PATH/ICCV2023-MCNET --model=mcnet \
      --torch_checkpoint=mcnet.pth.tar --frames=/tmp/ours_mcnet.npz

``--frames`` is what ``launch.animate --out=x.npz`` writes: the source and driving crops at the
model's size (floats in [0, 1]) and our predicted frames. The authors' own demo code
(``demo.py``: ``load_checkpoints`` and ``make_animation``, with ``config/vox-256.yaml``) animates
the same crops on the CPU (MCNet: its ``demo.py`` with the README's ``--kp_num 15 --generator
Unet_Generator_keypoint_aware --mbunit ExpendMemoryUnit --relative --adapt_scale``; its
``yaml.load`` without a loader, which PyYAML 6 refuses, is given ``safe_load``), and the script prints the mean and max absolute difference per frame
and over all frames, in units of 1/255. Needs PyTorch (the ``convert`` extra) and what the
authors' ``demo.py`` imports (scipy, scikit-image, imageio, pyyaml, matplotlib).
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


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--reference_dir", required=True)
  parser.add_argument("--model", default="tpsmm", choices=["tpsmm", "mcnet"])
  parser.add_argument("--torch_checkpoint", required=True)
  parser.add_argument("--frames", required=True, help="launch.animate --out=x.npz output")
  parser.add_argument("--mode", default="relative", choices=["relative", "standard"])
  args = parser.parse_args()
  with np.load(args.frames) as z:
    ours, source, driving = z["prediction"], z["source"], z["driving"]
  start = time.time()
  frames = {"tpsmm": tpsmm_frames, "mcnet": mcnet_frames}[args.model]
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

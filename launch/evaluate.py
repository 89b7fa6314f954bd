r"""Held-out metrics of a trained run, as JSON.

  python -m launch.evaluate --workdir=runs/minerf [--out=runs/minerf/eval.json]
  python -m launch.evaluate --workdir=runs/minerf --config=configs/minerf.py \
      --config.eval.frames_per_identity=12

Without --config the run's own resolved config (workdir/config.json) is used. For the animation
models (TPSMM, MCNet, MRFA; Head3D from its subject frames) this runs their protocols
(``animation.protocol_metrics``): reconstruction of every held-out clip from its first frame
(recon/l1, psnr, ssim, lpips, akd, ard), the fixed cross-identity pairs (cross/akd, cross/ard
against the driving frames' landmarks; TPSMM, MCNet and MRFA also cross_relative/akd, ard: the
same pairs with relative motion from the driving clip's first frame, the references' protocol)
and, on synthetic data, A driven by B against the
generator's render of A with B's expression and pose per yaw-difference bucket
(cross_truth/<bucket>/...) and novel views turned to yaw -40..40 (novel/yaw+20/...; Head3D also
novel_view/..., turned by its view input, and geometry/... against the generator's depth/pose).
"""
import json
import os

from absl import flags
from ml_collections import config_flags

from launch import cli
from launch import runs

_WORKDIR = flags.DEFINE_string("workdir", None, "Training run directory.", required=True)
_OUT = flags.DEFINE_string("out", None, "JSON output path (default: WORKDIR/eval.json).")
config_flags.DEFINE_config_file("config", None, "Optional config file.", lock_config=True)


def main(argv):
  del argv
  results = runs.evaluate(_WORKDIR.value, flags.FLAGS.config)
  out = _OUT.value or os.path.join(_WORKDIR.value, "eval.json")
  with open(out, "w") as f:
    json.dump(results, f, indent=2, sort_keys=True)
  for name, value in sorted(results.items()):
    print(f"{name:28s} {value:.4f}")
  print(f"wrote {out}")


if __name__ == "__main__":
  cli.run(main)

r"""Render videos of a trained MI-NeRF or LokiTalk run (mp4, H.264 + AAC), or the canonical head
of a Head3D run.

  python -m launch.render --workdir=runs/minerf --out_dir=runs/minerf/videos \
      [--mode=all|reconstruction|transfer|orbit] [--identity=0] [--driver=1] [--scale=4]
      [--driver_split=test|train]

* reconstruction: the identity's held-out frames, [ground truth | render], with its audio.
* transfer: identity A driven by identity B's expressions (A's own held-out head poses),
  [B driving | A render | A ground truth], with B's audio muxed in. B's frames come from its
  held-out split, or with ``--driver_split=train`` its (longer) train split: A never saw those
  expressions either.
* orbit: a yaw sweep of the identity beyond the training poses, [render | ground truth].
* canonical (Head3D runs only): the canonical head folded from a held-out clip's subject
  frames (``--clip``), rendered from the front after 1, 2, ..., K frames (a PNG strip) and
  turned over +-``--orbit_yaw`` (mp4); on synthetic data beside the generator's truth, and the
  frontal render's face PSNR after each number of frames is printed:
  python -m launch.render --workdir=runs/head3d_syn --mode=canonical
Ground truth panels exist for synthetic data only (its generator renders any identity, expression
and pose); on real videos the panels are [B driving | A render] and [render].
"""
import os

from absl import flags

from launch import cli
from launch import videos

_WORKDIR = flags.DEFINE_string("workdir", None, "Training run directory.", required=True)
_OUT_DIR = flags.DEFINE_string("out_dir", None, "Output folder (default WORKDIR/videos).")
_MODE = flags.DEFINE_enum("mode", "all", ["all", "reconstruction", "transfer", "orbit",
                                          "canonical"], "Video (canonical: Head3D runs).")
_CLIP = flags.DEFINE_integer("clip", 0, "canonical: the held-out clip whose subject frames fold.")
_IDENTITY = flags.DEFINE_integer("identity", 0, "Identity A to render.")
_DRIVER = flags.DEFINE_integer("driver", 1, "Identity B whose expressions drive A (transfer).")
_SCALE = flags.DEFINE_integer("scale", 4, "Nearest-neighbour upscaling of the output frames.")
_ORBIT_FRAMES = flags.DEFINE_integer("orbit_frames", 50, "Frames of the yaw orbit.")
_DRIVER_SPLIT = flags.DEFINE_enum("driver_split", "test", ["test", "train"],
                                  "Split of identity B's frames that drive the transfer.")
_ORBIT_YAW = flags.DEFINE_float("orbit_yaw", 40.0, "Max |yaw| of the orbit in degrees.")


def main(argv):
  del argv
  out_dir = _OUT_DIR.value or os.path.join(_WORKDIR.value, "videos")
  if _MODE.value == "canonical":
    written = videos.canonical_views(_WORKDIR.value, out_dir, _CLIP.value, _SCALE.value,
                                     _ORBIT_FRAMES.value, _ORBIT_YAW.value)
  else:
    written = videos.render_videos(_WORKDIR.value, out_dir, _MODE.value, _IDENTITY.value,
                                   _DRIVER.value, _SCALE.value, _ORBIT_FRAMES.value,
                                   _ORBIT_YAW.value, driver_split=_DRIVER_SPLIT.value)
  for name, value in written.items():
    print(f"{name}: {value:.2f} dB" if name.startswith("psnr") else f"{name}: {value}")


if __name__ == "__main__":
  cli.run(main)

r"""End-to-end demo: build the synthetic dataset, train MI-NeRF, evaluate, render videos.

  python -m launch.demo [--workdir=runs/demo] [--config=configs/minerf.py:demo]

Re-running resumes (or reuses) the run in --workdir. The last line printed is

  DEMO psnr=<dB> ssim=<0..1> transfer_psnr=<dB> transfer_face_psnr=<dB> leakage=<ratio> video=<path>

with held-out reconstruction PSNR/SSIM, expression-transfer PSNR (whole frame and head pixels)
against the generator's exact ground truth, and the mean identity leakage of the transfer
(``metrics.colour_leakage``: 0 keeps identity A's colours, 1 takes the driver's).
"""
import json
import os
import time

from absl import flags
from ml_collections import config_flags

from launch import cli
from launch import runs
from launch import videos as videos_lib
from minerf_jax.train import loop

_WORKDIR = flags.DEFINE_string("workdir", "runs/demo", "Run directory.")
config_flags.DEFINE_config_file("config", "configs/minerf.py:demo", "Config.", lock_config=True)


def main(argv):
  del argv
  config, workdir = flags.FLAGS.config, _WORKDIR.value
  start = time.time()
  loop.train_and_evaluate(config, workdir)
  trained = time.time()
  results = runs.evaluate(workdir, config)
  with open(os.path.join(workdir, "eval.json"), "w") as f:
    json.dump(results, f, indent=2, sort_keys=True)
  videos = videos_lib.render_videos(workdir, os.path.join(workdir, "videos"))
  print(f"train {trained - start:.0f}s, evaluate+render {time.time() - trained:.0f}s; "
        f"metrics in {os.path.join(workdir, 'eval.json')}; videos: {', '.join(videos.values())}")
  print(f"DEMO psnr={results['heldout/psnr']:.2f} ssim={results['heldout/ssim']:.3f} "
        f"transfer_psnr={results['transfer/psnr']:.2f} "
        f"transfer_face_psnr={results['transfer/face_psnr']:.2f} "
        f"leakage={results['transfer/leakage']:.3f} video={videos['transfer']}")


if __name__ == "__main__":
  cli.run(main)

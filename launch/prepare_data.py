r"""Builds the TFDS dataset ``talking_faces`` from a folder of talking-face videos.

  python -m launch.prepare_data --videos=DIR --out=DATA_DIR [--resolution=256 --fps=25]

One identity per video file, or per sub-folder when DIR has sub-folders. Each video shows a
progress bar; an unusable file (unreadable, no face, too short) is reported on one line and
skipped; the summary counts kept/skipped videos and frames, the shot cuts found, and the landmark
quality (mean jitter between consecutive frames in pixels at 256x256, fraction of frames with a
face). Re-running reuses every finished video (per-video cache under DATA_DIR) and the dataset
itself when nothing changed. Train on it with ``--config=configs/minerf_real.py
--config.data.data_dir=DATA_DIR``.
"""
from absl import app
from absl import flags

from launch import cli

_VIDEOS = flags.DEFINE_string("videos", None, "Folder of videos (or of per-identity sub-folders).")
_OUT = flags.DEFINE_string("out", None, "TFDS data_dir to build into.")
_RESOLUTION = flags.DEFINE_integer("resolution", 256, "Side of the square face crops.")
_FPS = flags.DEFINE_float("fps", 25.0, "Frame rate to resample every video to.")
_FOCAL = flags.DEFINE_float("focal_scale", None,
                            "Assumed focal length / max(H, W) of the source videos.")
_TEST = flags.DEFINE_float("test_fraction", 0.1, "Last fraction of each video held out as 'test'.")
_EXPR = flags.DEFINE_integer("expression_dim", 32, "Size of the expression vector (PCA).")
_MIN = flags.DEFINE_integer("min_frames", 25, "Skip videos with fewer frames with a face.")


def summarise(processed) -> list[str]:
  """The summary lines printed at the end of a build."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  kept, skipped = processed.kept, processed.skipped
  frames = sum(r["frames"] for *_, r in kept)
  kept_frames = sum(r["kept_frames"] for *_, r in kept)
  face_frames = sum(r["face_frames"] for *_, r in kept)
  jitter = [(r["jitter_px"], r["kept_frames"]) for *_, r in kept if np.isfinite(r["jitter_px"])]
  mean_jitter = (sum(j * n for j, n in jitter) / max(sum(n for _, n in jitter), 1)
                 if jitter else float("nan"))
  lines = [f"videos: {len(kept)} kept, {len(skipped)} skipped; frames: {kept_frames} kept of "
           f"{frames} decoded ({frames - face_frames} without a face, "
           f"{sum(r['dropped_frames'] for *_, r in kept)} in dropped short shots)",
           f"identities: {len({name for name, *_ in kept})}",
           f"landmark quality: mean jitter {mean_jitter:.2f} px at 256x256 between consecutive "
           f"frames; {face_frames / max(frames, 1):.1%} of frames with a face"]
  for name, path, _, r in kept:
    lines.append(f"  {path}: identity {name!r}, {r['kept_frames']} frames, shot cuts "
                 f"{r['cuts']}, face {r['face_frames'] / max(r['frames'], 1):.1%}, jitter "
                 f"{r['jitter_px']:.2f} px{'' if r['has_audio'] else ', no audio'}")
  for path, reason in skipped:
    lines.append(f"  skipped {path}: {reason}")
  return lines


def main(argv):
  del argv
  from minerf_jax.data import face  # pylint: disable=g-import-not-at-top
  from minerf_jax.data.builders import talking_faces  # pylint: disable=g-import-not-at-top
  if not _VIDEOS.value or not _OUT.value:
    raise app.UsageError("--videos=DIR and --out=DATA_DIR are required")
  try:
    builder, processed, rebuilt = talking_faces.prepare(
        _VIDEOS.value, _OUT.value, resolution=_RESOLUTION.value, fps=_FPS.value,
        focal_scale=_FOCAL.value or face.FOCAL_SCALE, test_fraction=_TEST.value,
        expression_dim=_EXPR.value, min_frames=_MIN.value)
  except ImportError as e:  # the `face` extra is missing
    raise cli.UserError(f"{e}; pip install -e '.[face]'") from None
  for line in summarise(processed):
    print(line)
  meta = dict(builder.info.metadata)
  splits = {k: v.num_examples for k, v in builder.info.splits.items()}
  print(f"{'built' if rebuilt else 'up to date'}: {builder.data_dir} splits={splits} "
        f"expression_dim={meta['expression_dim']} (explains "
        f"{meta['expression_explained_variance']:.1%} of landmark variance)")


if __name__ == "__main__":
  flags.mark_flags_as_required(["videos", "out"])
  cli.run(main)

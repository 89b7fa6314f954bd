"""Videos of a trained MI-NeRF or LokiTalk run (used by launch.render and launch.demo; defines
no flags), and the canonical head of a Head3D run (``canonical_views``).

* reconstruction: the identity's held-out frames, [ground truth | render], with its audio.
* transfer: identity A driven by identity B's held-out expressions (A's own head poses),
  [B driving | A render | A ground truth], with B's audio muxed in. An audio-driven run
  (LokiTalk) is driven by B's audio and blinks instead: A speaks B's speech.
* orbit: a yaw sweep of the identity beyond the training poses, [render | ground truth].
Ground-truth panels exist for the synthetic dataset, whose generator renders any identity with any
expression and pose; on real videos (``talking_faces``) the transfer video is [B driving | A render]
and the orbit turns A's head about its own first held-out pose.
"""
import dataclasses
import os

import numpy as np

from launch import runs
from minerf_jax import camera
from minerf_jax.data import pipeline
from minerf_jax.data import video


def _ground_truth(builder, frames: pipeline.FrameSet) -> np.ndarray:
  from minerf_jax.data.builders import synthetic_talking_heads as sth
  meta = dict(builder.info.metadata)
  return np.stack([sth.ground_truth(meta, int(frames.identity[i]), frames.expression[i],
                                    frames.rotation[i], frames.translation[i])["rgb"]
                   for i in range(len(frames))]).astype(np.float32)


def render_videos(workdir, out_dir, mode="all", identity=0, driver=1, scale=4, orbit_frames=50,
                  orbit_yaw=40.0, driver_split="test") -> dict[str, str]:
  """Writes the requested videos; returns {mode: path}."""
  config, model, params = runs.restore(workdir)
  if not hasattr(model, "render_frames"):
    hint = ("; its canonical head: --mode=canonical" if config.model.name == "head3d" else
            "; animate it with launch.animate")
    raise ValueError(f"--workdir={workdir} is a run of {config.model.name!r}: these videos are "
                     f"of NeRF runs (MI-NeRF, LokiTalk){hint}")
  builder = pipeline.dataset_builder(config.data,
                                     num_identities=pipeline.effective_num_identities(config))
  fps = float(builder.info.metadata.get("fps", 25))
  sample_rate = int(builder.info.metadata.get("sample_rate", 16000))
  written = {}
  synthetic_data = config.data.name == "synthetic_talking_heads"
  size = pipeline.image_size(config)
  context = pipeline.audio_context(config)
  a = pipeline.load_frames(builder, "test", (identity,), image_size=size, audio_context=context)
  a = dataclasses.replace(a, frame=np.full_like(a.frame, -1))
  if mode in ("all", "reconstruction"):
    pred = model.render_frames(params, a)["rgb"]
    path = os.path.join(out_dir, f"reconstruction_id{identity}.mp4")
    written["reconstruction"] = video.write_video(
        path, video.upscale(np.concatenate([a.rgb, pred], axis=2), scale), fps,
        pipeline.load_audio(builder, "test", identity), sample_rate)
  if mode in ("all", "transfer"):
    b = pipeline.load_frames(builder, driver_split, (driver,), image_size=size,
                             audio_context=context)
    n = len(b)  # B's whole held-out clip; A's held-out poses repeat (ping-pong) if shorter
    poses = np.concatenate([np.arange(len(a)), np.arange(len(a))[::-1]])[np.arange(n) % (
        2 * len(a))]
    driven = dataclasses.replace(a.take(poses), expression=b.expression, audio=b.audio,
                                 blink=b.blink)
    pred = model.render_frames(params, driven)["rgb"]
    panels = [b.rgb, pred] + ([_ground_truth(builder, driven)] if synthetic_data else [])
    audio = pipeline.load_audio(builder, driver_split, driver)[:int(n * sample_rate / fps)]
    path = os.path.join(out_dir, f"transfer_id{identity}_from_id{driver}.mp4")
    written["transfer"] = video.write_video(
        path, video.upscale(np.concatenate(panels, axis=2), scale), fps, audio, sample_rate)
  if mode in ("all", "orbit"):
    from minerf_jax.data import synthetic
    yaws = orbit_yaw * np.sin(np.linspace(0, 2 * np.pi, orbit_frames, endpoint=False))
    if synthetic_data:
      poses = [synthetic.pose_matrix(float(np.deg2rad(y)), 0.0, 0.0, np.zeros(3)) for y in yaws]
      rotations = np.stack([p[0] for p in poses])
      translations = np.stack([p[1] for p in poses])
    else:  # turn the head in place about its own first held-out pose
      rotations = np.stack([a.rotation[0] @ camera.rotation_matrix(float(np.deg2rad(y)), 0.0,
                                                                      0.0) for y in yaws])
      translations = np.repeat(a.translation[:1], orbit_frames, 0)
    orbit = dataclasses.replace(
        a.take(np.zeros(orbit_frames, int)), rotation=rotations.astype(np.float32),
        translation=translations.astype(np.float32))
    pred = model.render_frames(params, orbit)["rgb"]
    panels = [pred] + ([_ground_truth(builder, orbit)] if synthetic_data else [])
    path = os.path.join(out_dir, f"orbit_id{identity}.mp4")
    written["orbit"] = video.write_video(
        path, video.upscale(np.concatenate(panels, axis=2), scale), fps)
  return written


def canonical_views(workdir: str, out_dir: str, clip: int = 0, scale: int = 4,
                    orbit_frames: int = 50, orbit_yaw: float = 40.0) -> dict:
  """A Head3D run's canonical head, folded from the subject frames of held-out clip ``clip``:

  * ``canonical_clip{c}.png``: [subject frames | the frontal render folded from the first 1, 2,
    ..., K of them | on synthetic data the generator's frontal render of the identity with the
    subject frames' mean expression];
  * ``canonical_orbit_clip{c}.mp4``: the canonical head (all K frames) turned over
    +-``orbit_yaw`` [render | generator's truth on synthetic data].

  Returns ``{'png': path, 'orbit': path}`` and, on synthetic data, ``psnr_k{n}``: the frontal
  render's PSNR on the truth's face pixels after folding n frames.
  """
  # pylint: disable=g-import-not-at-top
  from minerf_jax import models
  from minerf_jax.data.builders import synthetic_talking_heads as sth
  from minerf_jax.data import synthetic
  config, model, params = runs.restore(workdir)
  if config.model.name != "head3d":
    raise ValueError(f"--mode=canonical renders a Head3D run's canonical head; {workdir} is a "
                     f"run of {config.model.name!r}")
  stats = runs.batch_stats_kwargs(workdir, config)["batch_stats"]
  data = models.build_data(config)
  clips = data.eval_data["reconstruction"]
  if not 0 <= clip < len(clips):
    raise ValueError(f"--clip={clip}: the run's held-out split has {len(clips)} clips")
  item = clips[clip]
  subject = {k: v for k, v in item.items() if k.startswith("subject")}
  k = len(subject["subject"])
  size = pipeline.image_size(config)
  render = lambda n, pose: model.render_canonical(
      params, {key: v[:n] for key, v in subject.items()}, pose, batch_stats=stats)["rgb"]
  fronts = [render(n, model.frontal_pose([0.0]))[0] for n in range(1, k + 1)]
  yaws = orbit_yaw * np.sin(np.linspace(0, 2 * np.pi, orbit_frames, endpoint=False))
  orbit = render(k, model.frontal_pose(yaws))
  out = {}
  truth = truth_orbit = None
  if "true_subject_expression" in item:
    meta = dict(data.builder.info.metadata)
    expression = item["true_subject_expression"].mean(0)

    def generator(yaw):
      g = sth.ground_truth(meta, item["identity"], expression,
                           *synthetic.pose_matrix(float(np.radians(yaw)), 0.0, 0.0, np.zeros(3)))
      rgb, face = g["rgb"], g["masks"][..., 0].astype(np.float32)
      if rgb.shape[0] != size:
        rgb = pipeline.area_downscale(rgb[None], size)[0]
        face = pipeline.area_downscale(face[None], size)[0]
      return rgb, face > 0.5

    truth, face = generator(0.0)
    for n, front in enumerate(fronts, 1):
      mse = np.mean((front - truth)[face] ** 2)
      out[f"psnr_k{n}"] = float(-10 * np.log10(max(mse, 1e-10)))
    truth_orbit = np.stack([generator(y)[0] for y in yaws])
  strip = np.concatenate(list(subject["subject"]) + fronts + ([truth] if truth is not None
                                                              else []), axis=1)
  os.makedirs(out_dir, exist_ok=True)
  out["png"] = video.write_png(os.path.join(out_dir, f"canonical_clip{clip}.png"),
                               video.upscale(strip[None], scale)[0])
  panels = [orbit] + ([truth_orbit] if truth_orbit is not None else [])
  out["orbit"] = video.write_video(os.path.join(out_dir, f"canonical_orbit_clip{clip}.mp4"),
                                   video.upscale(np.concatenate(panels, axis=2), scale))
  return out

"""Videos of a trained MI-NeRF or LokiTalk run (used by launch.render and launch.demo; defines
no flags).

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

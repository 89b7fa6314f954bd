"""Speech-driven MI-NeRF measured: the ``talk_synthetic`` and ``talk_real`` benchmark suites.

talk_synthetic (exact): new speech from the generator (speakers never trained on,
``sequences.HELDOUT_SPEAKER_BASE + k``) drives identity ``k % N`` at its still pose. The
generator renders the truth for the speech's own expression track, so we report frame, head and
mouth-region (the lips mask over the clip, grown by 2 px) PSNR of MI-NeRF rendering (a) the true expressions (the ceiling of any audio model), (b) the
predicted speech part with the true blinks, (c) what ``launch.talk`` renders (predicted speech
+ scheduled blinks), (d) the train-mean expression (a model that ignores the audio); plus the
per-component correlation of the prediction with the true track and the sync peak/lag of the
predicted jaw against the speech.

talk_real: on each identity's held-out split (never trained on), MediaPipe mouth opening of
(i) the real frames, (ii) MI-NeRF driven by the true expressions, (iii) by the expressions the
audio model predicts from the held-out audio, (iv) by the train-mean expression, all at the
held-out frames' own head poses; the sync peak correlation and lag of each against the held-out
speech, and mouth LMD (``metrics.sync.mouth_lmd``), whole-frame PSNR (at the model's image size)
and LPIPS (AlexNet; the renders upsampled to the real frames' side) of (ii)-(iv) against the
real frames. An audio-driven run (LokiTalk) has
one rendered row instead, 'audio': driven by the held-out audio and the frames' own blinks.
With ``speech``, ``launch.talk`` also drives the first identity that has speech with it.
"""
from __future__ import annotations

import dataclasses
import time

import numpy as np

from launch import talking
from minerf_jax.audio import blinks as blinks_lib
from minerf_jax.audio import features as features_lib
from minerf_jax.data import pipeline
from minerf_jax.data import sequences
from minerf_jax.metrics import sync


def masked_psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
  """PSNR (dB) of frames ``a`` against ``b`` [..., 3], over the pixels of ``mask`` [...] when
  given (NaN where the mask is empty)."""
  err = (np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2
  if mask is not None:
    m = np.broadcast_to(np.asarray(mask, bool)[..., None], err.shape)
    err = err[m]
  return float(-10 * np.log10(max(err.mean(), 1e-12))) if err.size else float("nan")


def _mouth_region(lips: np.ndarray, grow: int = 2) -> np.ndarray:
  """[H, W] bool: the union over frames of the lips/mouth mask, grown by ``grow`` pixels (the
  region where an open or closed mouth differs)."""
  region = lips.any(0)
  for _ in range(grow):
    r = region.copy()
    r[1:] |= region[:-1]
    r[:-1] |= region[1:]
    r[:, 1:] |= region[:, :-1]
    r[:, :-1] |= region[:, 1:]
    region = r
  return region


def _render(runs_: talking.TalkRuns, identity: int, expressions, poses) -> np.ndarray:
  return np.concatenate(list(talking.render_chunks(runs_, identity, expressions, poses)))


def synthetic(nerf_run: str, audio_run: str, speakers: int = 4, frames: int = 50,
              seed: int = 0) -> dict:
  """The talk_synthetic suite (see module docstring)."""
  from minerf_jax.data import synthetic as gen  # pylint: disable=g-import-not-at-top
  from minerf_jax.data.builders import synthetic_talking_heads as sth  # pylint: disable=g-import-not-at-top
  runs_ = talking.TalkRuns.load(nerf_run, audio_run)
  if runs_.nerf_config.data.name != "synthetic_talking_heads":
    raise ValueError("talk_synthetic needs an MI-NeRF run on the synthetic dataset")
  meta = dict(runs_.builder.info.metadata)
  a2e, ap = runs_.a2e, runs_.a2e_params
  mean = np.asarray(ap["stats"]["mean"])
  conds = ("true", "predicted_true_blinks", "talk", "mean")
  per = {c: {"psnr": [], "face_psnr": [], "mouth_psnr": []} for c in conds}
  pred_all, true_all, curves, rows = [], [], [], []
  start = time.time()
  for k in range(speakers):
    identity = k % runs_.num_identities
    seq = gen.sample_sequence(int(meta["seed"]), sequences.HELDOUT_SPEAKER_BASE + k, frames,
                              runs_.fps, features_lib.SAMPLE_RATE)
    truth_e, blink = seq["expression"], seq["expression"][:, list(sequences.SYNTHETIC_BLINK)]
    poses = talking.pose_track(runs_, identity, frames, "still")
    gt = [sth.ground_truth(meta, identity, truth_e[t], poses.rotation[t], poses.translation[t])
          for t in range(frames)]
    gt_rgb = np.stack([g["rgb"] for g in gt]).astype(np.float32)
    gt_mask = np.stack([g["masks"][..., 0] for g in gt]) > 0.5
    mouth = _mouth_region(np.stack([g["masks"][..., 1] for g in gt]) > 0.5)
    speech = a2e.predict_speech(ap, seq["audio"], runs_.fps, talking.style_identity(runs_, identity),
                                frames)
    scheduled = blinks_lib.schedule(a2e.blink_stats(ap), frames, np.random.default_rng(seed + k))
    tracks = {"true": truth_e,
              "predicted_true_blinks": a2e.expressions(ap, speech, blink),
              "talk": a2e.expressions(ap, speech, scheduled),
              "mean": np.repeat(mean[None], frames, 0).astype(np.float32)}
    row = {"speaker": sequences.HELDOUT_SPEAKER_BASE + k, "identity": identity}
    for c in conds:
      rgb = _render(runs_, identity, tracks[c], poses)
      per[c]["psnr"].append(masked_psnr(rgb, gt_rgb))
      per[c]["face_psnr"].append(masked_psnr(rgb, gt_rgb, gt_mask))
      per[c]["mouth_psnr"].append(masked_psnr(rgb, gt_rgb, np.broadcast_to(mouth, gt_mask.shape)))
      row[c] = {m: per[c][m][-1] for m in per[c]}
    rows.append(row)
    pred_all.append(speech)
    true_all.append(truth_e - blink @ np.asarray(ap["blink_basis"]))
    curves.append(sync.speech_sync(speech[:, 0], seq["audio"], features_lib.SAMPLE_RATE,
                                   runs_.fps)["corr"])
    print(f"talk_synthetic speaker {k}: " + "  ".join(
        f"{c} {row[c]['psnr']:.2f}/{row[c]['face_psnr']:.2f}/{row[c]['mouth_psnr']:.2f}"
        for c in conds), flush=True)
  p, t = np.concatenate(pred_all), np.concatenate(true_all)
  names = gen.EXPRESSION_NAMES
  curve = np.nanmean(np.stack(curves), 0)
  k = int(np.nanargmax(curve))
  out = {"conditions": {c: {m: (float(np.mean(v)), float(np.std(v))) for m, v in d.items()}
                        for c, d in per.items()},
         "corr": {n: float(np.corrcoef(p[:, i], t[:, i])[0, 1]) for i, n in enumerate(names)
                  if t[:, i].std() > 1e-6 and p[:, i].std() > 1e-9},
         "sync_corr": float(curve[k]), "sync_lag": int(k - (len(curve) - 1) // 2),
         "speakers": rows, "frames": frames, "seconds": time.time() - start}
  print("talk_synthetic (mean +- std over speakers; PSNR in dB of frame / head / mouth region):")
  for c in conds:
    print(f"  {c:24s} " + "   ".join(f"{m:6.2f} +- {sd:4.2f}" for m, sd in (
        out["conditions"][c][k] for k in ("psnr", "face_psnr", "mouth_psnr"))))
  print(f"  jaw_open correlation {out['corr'].get('jaw_open', float('nan')):.3f}; sync peak "
        f"{out['sync_corr']:.3f} at lag {out['sync_lag']} frames; {out['seconds']:.0f} s")
  return out


@dataclasses.dataclass
class _Mouths:
  opening: np.ndarray
  points: np.ndarray


def _mouths(lm, frames: np.ndarray) -> _Mouths:
  points, _ = lm.landmarks(frames)
  return _Mouths(sync.mouth_opening(points), points)


def _lpips(losses, renders: np.ndarray, real_frames: np.ndarray, chunk: int = 16) -> float:
  """Mean LPIPS of renders, upsampled (bilinear) to the real frames' side, against them."""
  import jax  # pylint: disable=g-import-not-at-top
  n, side = len(real_frames), real_frames.shape[1]
  values = []
  for i in range(0, n, chunk):
    up = jax.image.resize(renders[i:i + chunk], (len(renders[i:i + chunk]), side, side, 3),
                          "bilinear")
    values.append(np.asarray(losses.lpips_per_image(up, real_frames[i:i + chunk])))
  return float(np.concatenate(values).mean())


def real(nerf_run: str, audio_run: str | None, speech: str | None = None, out_dir: str = "",
         max_frames: int = 0, min_frames: int = 8) -> dict:
  """The talk_real suite (see module docstring); with ``speech``, also ``launch.talk`` of
  identity 0 driven by it, written to ``out_dir/talk_real.mp4``. An audio-driven run (LokiTalk)
  takes no ``audio_run``: its one rendered row, 'audio', is driven by the held-out audio and
  the held-out frames' blinks."""
  from minerf_jax import losses  # pylint: disable=g-import-not-at-top
  from minerf_jax.metrics import landmarks as landmark_metrics  # pylint: disable=g-import-not-at-top
  runs_ = talking.TalkRuns.load(nerf_run, audio_run)
  if runs_.nerf_config.data.name != "talking_faces":
    raise ValueError(f"talk_real needs a run on the talking_faces dataset; {nerf_run} was "
                     f"trained on {runs_.nerf_config.data.name!r}")
  if runs_.audio_driven:
    data_config, conds = runs_.nerf_config.data, ("real", "audio")
  else:
    data_config, conds = runs_.a2e_config.data, ("real", "true", "predicted", "mean")
    a2e, ap = runs_.a2e, runs_.a2e_params
    mean = np.asarray(ap["stats"]["mean"])
  seqs = sequences.real_sequences(data_config, "test", min_frames=min_frames)
  size = pipeline.image_size(runs_.nerf_config)
  side = int(runs_.builder.info.metadata["resolution"])
  results, start = {"identities": {}, "model": runs_.nerf_config.model.name}, time.time()
  with landmark_metrics.LandmarkMetrics() as lm:
    frames = pipeline.load_frames(runs_.builder, "test",             # at 256, time order
                                  tuple(range(runs_.num_identities)))
    position = {int(f): i for i, f in enumerate(frames.frame)}
    for identity in range(runs_.num_identities):
      mine = [s for s in seqs if s.identity == identity]
      if not mine:
        continue
      s = max(mine, key=len)          # the longest contiguous held-out run of this identity
      idx = np.asarray([position[int(f)] for f in s.frames])
      if max_frames:
        idx = idx[:max_frames]
      n = len(idx)
      audio = s.audio[:int(round(n * features_lib.SAMPLE_RATE / s.fps))]
      held = frames.take(idx)
      small = pipeline.resize_frames(held, size)
      poses = talking.Poses(small.rotation, small.translation, small.intrinsics)
      if runs_.audio_driven:
        tracks = {"audio": talking.audio_track(runs_, s.audio, len(s), blinks="video",
                                               video_blinks=s.blink).take(slice(0, n))}
      else:
        predicted = a2e.predict_features(
            ap, features_lib.features(s.audio, s.fps, len(s), a2e.settings)[:n],
            talking.style_identity(runs_, identity))
        tracks = {"true": held.expression,
                  "predicted": a2e.expressions(ap, predicted, s.blink[:n]),
                  "mean": np.repeat(mean[None], n, 0).astype(np.float32)}
      mouths = {"real": _mouths(lm, held.rgb)}
      renders = {c: _render(runs_, identity, tracks[c], poses) for c in tracks}
      for c, rgb in renders.items():
        mouths[c] = _mouths(lm, rgb)
      row = {"frames": n, "seconds": n / s.fps}
      for c in conds:
        r = sync.speech_sync(mouths[c].opening, audio, features_lib.SAMPLE_RATE, s.fps)
        row[c] = {"sync_corr": r["sync_corr"], "sync_lag": r["sync_lag"],
                  "face_found": float(np.isfinite(mouths[c].opening).mean())}
        if c != "real":
          row[c]["lmd"] = sync.mouth_lmd(mouths[c].points * (side / size), mouths["real"].points,
                                         side)
          row[c]["psnr"] = masked_psnr(renders[c], small.rgb)
          row[c]["lpips"] = _lpips(losses, renders[c], held.rgb)
      results["identities"][identity] = row
      print(f"talk_real identity {identity} ({n} frames): " + "  ".join(
          f"{c} sync {row[c]['sync_corr']:.2f}@{row[c]['sync_lag']}"
          + (f" lmd {row[c]['lmd']:.2f} psnr {row[c]['psnr']:.2f} lpips {row[c]['lpips']:.3f}"
             if "lmd" in row[c] else "") for c in conds), flush=True)
  results["evaluate_seconds"] = time.time() - start
  if speech:
    import os  # pylint: disable=g-import-not-at-top
    t0 = time.time()
    who = min(results["identities"])   # the first identity with speech in its videos
    talked = talking.talk(nerf_run, audio_run, speech, who,
                          os.path.join(out_dir or ".", f"talk_real_id{who}.mp4"))
    results["talk_identity"] = who
    results["talk"] = {k: v for k, v in talked.items() if k != "expressions"}
    results["talk"]["seconds"] = time.time() - t0
  return results

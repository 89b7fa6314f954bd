"""LokiTalk, its ablations and audio-driven MI-NeRF at one budget on one dataset: the
``lokitalk_synthetic`` benchmark suite (``launch.benchmark --suite=lokitalk_synthetic``).

Training: every model is trained from scratch for ``steps`` steps on the same synthetic
dataset (``configs/lokitalk.py:VARIANT``'s data block: identities, frames, resolution): LokiTalk
(``configs/lokitalk.py``), each ablation (``model.regions=off``, ``model.cascade=off``,
``model.transfer=off``) and MI-NeRF (``configs/minerf.py:VARIANT`` with LokiTalk's data block)
driven by an audio-to-expression model (``configs/audio2exp.py``) trained on as much of the
same identities' generator speech as LokiTalk sees (``data.frames_per_identity`` frames each).
Runs live in ``out_dir/NAME``; a finished run is reused (training resumes, and stops at once).

Measuring (exact, no peer can): new speech from the generator (speakers never trained on,
``sequences.HELDOUT_SPEAKER_BASE + k``) drives identity ``k % N`` at its still pose with the
true blinks; the generator renders the truth of that speech's own expression track. Reported
per model: PSNR of the whole frame and of the truth's face, lips, eyes and torso/neck masks;
the jaw opening read back from each render by analysis-by-synthesis (the truth re-rendered at
``jaw_grid`` openings, all else the frame's truth; the nearest in squared error is the
reading); its correlation with the true jaw track, and the sync peak correlation and lag
(``metrics.sync.speech_sync``) of the reading against the speech (the truth's own reading is
the reference row). Training seconds include compiles and the final evaluation.
"""
from __future__ import annotations

import os

import numpy as np

from launch import runs
from launch import talk_eval
from launch import talking
from minerf_jax.audio import features as features_lib
from minerf_jax.data import sequences
from minerf_jax.metrics import sync

ABLATIONS = {"regions_off": {"model.regions": "off"},
             "cascade_off": {"model.cascade": "off"},
             "transfer_off": {"model.transfer": "off"}}
_with = runs.with_overrides
REGION_MASKS = ("face", "lips", "eyes", "torso_neck")


def configs(variant: str, steps: int, data_dir: str | None, overrides: dict) -> dict:
  """{name: config} of every run of the suite (the audio model under 'audio2exp')."""
  from configs import audio2exp as a2e_config  # pylint: disable=g-import-not-at-top
  from configs import lokitalk as loki_config  # pylint: disable=g-import-not-at-top
  from configs import minerf as minerf_config  # pylint: disable=g-import-not-at-top
  base = loki_config.get_config(variant)
  if data_dir:
    base.data.data_dir = data_dir
  base.update(total_steps=steps, eval_every=steps)
  base.checkpoint.every = steps
  base.update_from_flattened_dict(overrides)
  out = {"lokitalk": base}
  for name, extra in ABLATIONS.items():
    c = base.copy_and_resolve_references()
    c.update_from_flattened_dict(extra)
    out[name] = c
  m = minerf_config.get_config(variant)
  shared = ("data_dir", "resolution", "num_identities", "frames_per_identity", "fps", "seed",
            "test_fraction")
  m.data.update({k: base.data[k] for k in shared if k in base.data and k in m.data})
  m.update(total_steps=steps, eval_every=steps)
  m.checkpoint.every = steps
  out["minerf"] = m
  a = a2e_config.get_config()
  a.data.update(num_identities=int(base.data.num_identities), seed=int(base.data.seed),
                speech_frames=int(base.data.frames_per_identity))
  out["audio2exp"] = a
  return out


def _jaw_reading(rgb: np.ndarray, truth_e: np.ndarray, truth_fn, grid: np.ndarray) -> np.ndarray:
  """[T] jaw opening of each rendered frame: the grid value whose truth is nearest."""
  out = np.zeros(len(rgb), np.float32)
  for t in range(len(rgb)):
    errs = []
    for j in grid:
      e = truth_e[t].copy()
      e[0] = j
      errs.append(float(np.mean((truth_fn(t, e) - rgb[t]) ** 2)))
    out[t] = grid[int(np.argmin(errs))]
  return out


def _sync(jaw: np.ndarray, audio: np.ndarray, fps: float) -> np.ndarray:
  return sync.speech_sync(jaw, audio, features_lib.SAMPLE_RATE, fps)["corr"]


def suite(out_dir: str, variant: str = "demo", steps: int = 500, speakers: int = 3,
          frames: int = 40, jaw_grid: int = 9, data_dir: str | None = None,
          overrides: dict | None = None, models_: tuple[str, ...] | None = None) -> dict:
  """The lokitalk_synthetic suite (see module docstring)."""
  from minerf_jax.data import synthetic as gen  # pylint: disable=g-import-not-at-top
  from minerf_jax.data.builders import synthetic_talking_heads as sth  # pylint: disable=g-import-not-at-top
  cfgs = configs(variant, steps, data_dir, overrides or {})
  names = tuple(models_ or ("lokitalk", *ABLATIONS, "minerf"))
  seconds = {}
  for name in names + (("audio2exp",) if "minerf" in names else ()):
    seconds[name] = runs.train_timed(cfgs[name], os.path.join(out_dir, name))
    print(f"lokitalk_synthetic: trained {name} in {seconds[name]:.0f} s", flush=True)
  runs_ = {n: talking.TalkRuns.load(os.path.join(out_dir, n),
                                    os.path.join(out_dir, "audio2exp") if n == "minerf" else None)
           for n in names}
  first = runs_[names[0]]
  meta = dict(first.builder.info.metadata)
  grid = np.linspace(0.0, 1.0, jaw_grid).astype(np.float32)
  rows = {n: {"psnr": [], **{f"{m}_psnr": [] for m in REGION_MASKS}, "jaw": [], "corr": []}
          for n in ("truth",) + names}
  audios, true_jaws = [], []
  for k in range(speakers):
    identity = k % first.num_identities
    seq = gen.sample_sequence(int(meta["seed"]), sequences.HELDOUT_SPEAKER_BASE + k, frames,
                              first.fps, features_lib.SAMPLE_RATE)
    truth_e = seq["expression"]
    blink = truth_e[:, list(sequences.SYNTHETIC_BLINK)]
    poses = talking.pose_track(first, identity, frames, "still")
    truth_fn = lambda t, e, poses=poses, identity=identity: sth.ground_truth(
        meta, identity, e, poses.rotation[t], poses.translation[t])["rgb"]
    gt = [sth.ground_truth(meta, identity, truth_e[t], poses.rotation[t], poses.translation[t])
          for t in range(frames)]
    gt_rgb = np.stack([g["rgb"] for g in gt]).astype(np.float32)
    masks = np.stack([g["masks"] for g in gt])
    renders = {"truth": gt_rgb}
    for n in names:
      r = runs_[n]
      if r.audio_driven:
        drive = talking.audio_track(r, seq["audio"], frames)
        drive.blink = blink.astype(np.float32)
      else:
        drive = talking.expression_track(r, seq["audio"], identity, frames, blinks="video",
                                         blink_track=blink)
      renders[n] = np.concatenate(list(talking.render_chunks(r, identity, drive, poses)))
    for n, rgb in renders.items():
      row = rows[n]
      row["psnr"].append(talk_eval.masked_psnr(rgb, gt_rgb))
      for i, m in enumerate(REGION_MASKS):
        row[f"{m}_psnr"].append(talk_eval.masked_psnr(rgb, gt_rgb, masks[..., i]))
      jaw = truth_e[:, 0] if n == "truth" else _jaw_reading(rgb, truth_e, truth_fn, grid)
      row["jaw"].append(jaw)
      row["corr"].append(_sync(jaw, seq["audio"], first.fps))
    audios.append(seq["audio"])
    true_jaws.append(truth_e[:, 0])
    print(f"lokitalk_synthetic speaker {k} (identity {identity}): " + "  ".join(
        f"{n} {rows[n]['psnr'][-1]:.2f}" for n in names), flush=True)
  true_jaw = np.concatenate(true_jaws)
  out = {"variant": variant, "steps": steps, "speakers": speakers, "frames": frames,
         "train_seconds": seconds, "models": {}}
  for n, row in rows.items():
    curves = np.stack(row["corr"])
    curve = (np.nanmean(curves, 0) if np.isfinite(curves).any(0).all()
             else np.full(curves.shape[1], np.nan))          # a constant reading: no sync
    peak = int(np.nanargmax(curve)) if np.isfinite(curve).any() else (len(curve) - 1) // 2
    jaw = np.concatenate(row["jaw"])
    out["models"][n] = {
        **{m: float(np.mean(row[m])) for m in row if m.endswith("psnr")},
        "jaw_corr": float(np.corrcoef(jaw, true_jaw)[0, 1]) if jaw.std() > 0 else float("nan"),
        "sync_corr": float(curve[peak]), "sync_lag": int(peak - (len(curve) - 1) // 2)}
  print(f"lokitalk_synthetic: {steps} steps each, {speakers} new speakers x {frames} frames; "
        "PSNR dB frame / face / lips / eyes / torso_neck; jaw reading corr; sync peak @ lag")
  for n, f in out["models"].items():
    train = f"{seconds[n]:5.0f} s" if n in seconds else "      "
    print(f"  {n:13s} {train}  {f['psnr']:6.2f} {f['face_psnr']:6.2f} {f['lips_psnr']:6.2f} "
          f"{f['eyes_psnr']:6.2f} {f['torso_neck_psnr']:6.2f}   {f['jaw_corr']:6.3f}   "
          f"{f['sync_corr']:.3f} @ {f['sync_lag']:+d}")
  return out


# ------------------------------------------------------------------------------ lokitalk_adapt

ADAPT_MODES = ("transfer", "transfer_all", "encoder_off", "encoder_off_all", "scratch", "minerf",
               "minerf_all")


def adapt_configs(variant: str, steps: int, frames: int, base_identities: int,
                  probe_frames: int, data_dir: str | None, overrides: dict) -> dict:
  """{mode: config} of one adaptation to identity ``base_identities`` from its first ``frames``
  train frames, every run ``steps`` steps (``ADAPT_MODES``):

  * transfer: pretrained LokiTalk, the new code started at the ID encoder's reading of the
    clip, identity code and background fine-tuned (``configs/lokitalk.py``'s ``adapt.train``);
  * transfer_all: the same start, every collection fine-tuned;
  * encoder_off: a pretrained LokiTalk without the ID encoder (``model.transfer=off``), the new
    code started at the mean code, code and background fine-tuned; encoder_off_all: every
    collection;
  * scratch: a fresh LokiTalk trained on the clip alone, every collection;
  * minerf: MI-NeRF personalisation (``configs/minerf.py``'s ``personalise``: identity tables
    fine-tuned) of a pretrained MI-NeRF on the same data, given the frames' true expressions;
    minerf_all: every parameter fine-tuned (``personalise.freeze_shared=False``).

  Base configs (``base_*``, ``total_steps`` unset) train on identities 0..B-1."""
  from configs import lokitalk as loki_config  # pylint: disable=g-import-not-at-top
  from configs import minerf as minerf_config  # pylint: disable=g-import-not-at-top
  loki = loki_config.get_config(variant)
  if data_dir:
    loki.data.data_dir = data_dir
  loki.update_from_flattened_dict(overrides)
  loki.data.num_identities = base_identities
  loki.eval.frames_per_identity = probe_frames
  m = minerf_config.get_config(variant)
  m.data.update({k: loki.data[k] for k in ("data_dir", "resolution", "num_identities",
                                           "frames_per_identity", "fps", "seed")
                 if k in m.data})
  m.eval.frames_per_identity = probe_frames
  new = {"total_steps": steps, "adapt.identity": base_identities, "adapt.num_frames": frames}
  out = {"base_lokitalk": loki, "base_encoder_off": _with(loki, {"model.transfer": "off"}),
         "base_minerf": m}
  out["transfer"] = _with(loki, new)
  out["transfer_all"] = _with(loki, {**new, "adapt.train": ("all",)})
  out["encoder_off"] = _with(loki, {**new, "model.transfer": "off"})
  out["encoder_off_all"] = _with(loki, {**new, "model.transfer": "off", "adapt.train": ("all",)})
  out["scratch"] = _with(loki, {**new, "adapt.train": ("all",)})
  out["minerf"] = _with(m, {"total_steps": steps, "personalise.identity": base_identities,
                            "personalise.num_frames": frames})
  out["minerf_all"] = _with(out["minerf"], {"personalise.freeze_shared": False})
  return out


ADAPT_BASE = {"transfer": "base_lokitalk", "transfer_all": "base_lokitalk",
              "encoder_off": "base_encoder_off", "encoder_off_all": "base_encoder_off",
              "minerf": "base_minerf", "minerf_all": "base_minerf", "scratch": None}


def suite_adapt(variant: str = "demo", base_steps: int = 1000, steps: int = 300,
                frame_counts: tuple[int, ...] = (50, 250), base_identities: int = 2,
                modes: tuple[str, ...] = ADAPT_MODES, eval_every: int = 25,
                target: float = 0.95, probe_frames: int = 4, data_dir: str | None = None,
                overrides: dict | None = None) -> dict:
  """The lokitalk_adapt suite: a new identity (index ``base_identities``, never in
  pretraining) from 2 s (50 frames) and 10 s (250 frames) of its video, per ``ADAPT_MODES``.

  Every run has the schedule horizon ``steps``; the held-out head PSNR of the new identity
  (``minerf_claims.FrameProbe`` / ``HeadProbe``: the head pixels of ``probe_frames`` held-out
  frames, LokiTalk driven by their audio and blinks, MI-NeRF by their true expressions) is
  probed every ``eval_every`` steps. The stated target is ``target`` x (in dB) the pretrained
  LokiTalk's held-out head PSNR on the identities it was pretrained on: what pretraining
  reaches for people it has seen. Each run reports the steps and training seconds to the
  target (``minerf_claims.Curve.time_to``; compiles and probes excluded) and its final head
  PSNR; each base its pretraining seconds. The data must hold ``max(frame_counts)`` train
  frames per identity (``data.frames_per_identity`` >= that / (1 - test fraction)).
  """
  from launch import minerf_claims  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  unknown = sorted(set(modes) - set(ADAPT_MODES))
  if unknown:
    raise ValueError(f"lokitalk_adapt modes {unknown}: choose from {ADAPT_MODES}")
  overrides = dict(overrides or {})
  cfgs = {n: adapt_configs(variant, steps, n, base_identities, probe_frames, data_dir,
                           overrides) for n in frame_counts}
  first = cfgs[frame_counts[0]]
  needed = {ADAPT_BASE[m] for m in modes} - {None}
  bases, base_rows = {}, {}
  for name in ("base_lokitalk", "base_encoder_off", "base_minerf"):
    if name not in needed and name != "base_lokitalk":
      continue
    c = _with(first[name], {"total_steps": base_steps})
    trainer, curve = minerf_claims.train_curve(
        c, max(eval_every, base_steps // 10), probe_frames,
        label=f"{name} on identities 0..{base_identities - 1}")
    bases[name] = jax.device_get(trainer.params)
    converged = float(np.mean([curve.converged(i, 3) for i in curve.psnr]))
    base_rows[name] = {"seconds": trainer.train_seconds, "compile_seconds": curve.compile_seconds,
                       "heldout_head_psnr": converged, "curve": curve.to_json()}
  goal = target * base_rows["base_lokitalk"]["heldout_head_psnr"]
  print(f"lokitalk_adapt target: {goal:.2f} dB held-out head PSNR of the new identity "
        f"({100 * target:.0f}% of the pretrained LokiTalk's "
        f"{base_rows['base_lokitalk']['heldout_head_psnr']:.2f} dB on its own identities)",
        flush=True)
  table = {}
  for frames in frame_counts:
    for mode in modes:
      config = cfgs[frames][mode]
      base = ADAPT_BASE[mode]
      trainer, curve = minerf_claims.train_curve(
          config, eval_every, probe_frames, pretrained=bases[base] if base else None,
          label=f"{mode}, {frames} frames")
      seconds = curve.time_to({base_identities: goal})
      reached = np.asarray(curve.psnr[base_identities]) >= goal
      table[f"{frames} frames / {mode}"] = {
          "frames": frames, "mode": mode,
          "steps_to_target": int(curve.steps[int(np.argmax(reached))]) if reached.any() else None,
          "seconds_to_target": seconds,
          "final_head_psnr": float(curve.psnr[base_identities][-1]),
          "best_head_psnr": float(np.max(curve.psnr[base_identities])),
          "curve": curve.to_json()}
  fps = float(first["base_lokitalk"].data.fps)
  print(f"lokitalk_adapt: new identity {base_identities}, {steps} steps per run; head PSNR of "
        f"its held-out frames (dB); target {goal:.2f} dB")
  for name, row in base_rows.items():
    print(f"  {name:17s} pretraining {base_steps} steps {row['seconds']:6.1f} s, held-out head "
          f"PSNR {row['heldout_head_psnr']:.2f} dB on identities 0..{base_identities - 1}")
  for row in table.values():
    to = (f"{row['steps_to_target']:4d} steps {row['seconds_to_target']:6.1f} s"
          if row["steps_to_target"] is not None else "    not reached     ")
    print(f"  {row['frames'] / fps:4.0f} s ({row['frames']:3d} frames) {row['mode']:12s} "
          f"to target: {to}   final {row['final_head_psnr']:.2f}  best "
          f"{row['best_head_psnr']:.2f}", flush=True)
  return {"variant": variant, "target_psnr": goal, "target_fraction": target, "steps": steps,
          "base_steps": base_steps, "base_identities": base_identities, "bases": base_rows,
          "runs": runs}

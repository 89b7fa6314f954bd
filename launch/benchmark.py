r"""Benchmarks: print figures and write JSON. Never part of the test suite.

  python -m launch.benchmark --suite=minerf_scaling --num_identities=1,2,4,8 --seeds=3 \
      --plot=runs/bench/scaling.png --out=runs/bench/scaling.json
  python -m launch.benchmark --suite=minerf_fusion --seeds=3
  python -m launch.benchmark --suite=minerf_personalise
  python -m launch.benchmark --suite=minerf_throughput
  python -m launch.benchmark --suite=motion_params
  python -m launch.benchmark --suite=talk_synthetic --nerf_run=runs/demo --audio_run=runs/a2e
  python -m launch.benchmark --suite=talk_real --nerf_run=runs/real --audio_run=runs/a2e_real \
      --speech=../shared/media/synctalk_test.wav

minerf_scaling, minerf_fusion, minerf_personalise
  MI-NeRF's claims (one multi-identity model vs one model per person; the multiplicative module
  vs the ablations; personalisation from few frames), measured with the protocol of
  ``launch/minerf_claims.py``: demo-sized models (``--variant``), one schedule horizon
  (``--steps``) for every run, held-out head PSNR every ``--eval_every`` steps, training
  seconds with the device sync inside the timed window. ``--config_overrides`` (a JSON dict of
  dotted config fields) applies to every run of a suite.
minerf_throughput
  Train and render rays/s of the base config on this machine's devices.
motion_params
  Parameter counts of the full-size (vox-256) TPSMM, MCNet and MRFA models of configs/, traced
  with jax.eval_shape (nothing allocated), against the references' totals measured with the
  authors' code, and GMACs per animated 256x256 frame from XLA's cost analysis (lowered, not
  compiled).
talk_synthetic, talk_real
  Speech-driven MI-NeRF (``launch/talk_eval.py``): --nerf_run and --audio_run; exact PSNR
  against the generator's render of new speech, or lip sync, mouth LMD, PSNR and LPIPS on the
  real clips' held-out splits against the real frames (real, true-expression, predicted and
  mean rows). talk_real also takes a LokiTalk --nerf_run without --audio_run (its row: driven
  by the held-out audio and blinks).
lokitalk_synthetic
  LokiTalk, its ablations and audio-driven MI-NeRF trained for --horizon steps (default 500)
  on one dataset (configs/lokitalk.py:--variant's), in --out_dir/NAME; exact per-region PSNR
  and jaw sync on new generator speech (``launch/lokitalk_bench.py``):
  python -m launch.benchmark --suite=lokitalk_synthetic --variant=demo --horizon=500 \
      --out_dir=runs/bench/loki --out=runs/bench/loki.json
lokitalk_adapt
  Adaptation to an identity held out of pretraining from 2 s and 10 s of its video
  (--frame_counts, default 50,250): LokiTalk with knowledge transfer (ID encoder + code;
  or every collection fine-tuned), without the ID encoder (likewise), from scratch, and MI-NeRF
  personalisation (identity tables; or everything); steps and seconds to a held-out head-PSNR target (--targets' first value x
  the pretrained LokiTalk's own held-out head PSNR, default 0.95) within --horizon steps
  (default 300), after --base_steps of pretraining (default 1000):
  python -m launch.benchmark --suite=lokitalk_adapt --variant=demo \
      --config_overrides='{"data.frames_per_identity": 313}' --out=runs/bench/adapt.json
head3d_compare
  Head3D, TPSMM, MCNet and MRFA trained from configs/<model>.py:--variant (synthetic, cpu or
  test) for --horizon steps each (default 250) in --out_dir/<model>, evaluated with one
  protocol (``launch/head3d_bench.py``); --models picks some. On synthetic data: the exact-truth
  cross-identity figures per yaw-difference bucket, novel views, and Head3D's geometry error:
  python -m launch.benchmark --suite=head3d_compare --variant=synthetic --horizon=250 \
      --out_dir=runs/bench/h3d --out=runs/bench/h3d.json
head3d_pose_signal
  How much head rotation the photometric loss tells on the generator's heads: each pair's pose
  fitted directly (true or constant depth, frame gaps 2 and 8), and Head3D's pose net trained
  --horizon steps (default 300) by its geometry loss without and with pose_supervision:
  python -m launch.benchmark --suite=head3d_pose_signal
motion_step_time
  Seconds per training iteration of TPSMM, MCNet and MRFA (--variant of their configs, default
  'cpu'), --steps timed steps after the compile.
"""
from __future__ import annotations

import json
import time

from absl import app
from absl import flags
import jax
import numpy as np

from launch import cli
from launch import minerf_claims
from minerf_jax import models
from minerf_jax.data import pipeline
from minerf_jax.train import loop
from minerf_jax.train import parallel
from minerf_jax.train import state as state_lib

_SUITE = flags.DEFINE_enum("suite", "minerf_scaling",
                           ["minerf_scaling", "minerf_fusion", "minerf_personalise",
                            "minerf_throughput", "motion_params", "motion_step_time",
                            "talk_synthetic", "talk_real", "lokitalk_synthetic",
                            "lokitalk_adapt", "head3d_compare", "head3d_pose_signal"],
                           "Benchmark suite.")
_VARIANT = flags.DEFINE_string("variant", "demo", "configs/minerf.py variant to benchmark.")
_NUM_IDS = flags.DEFINE_list("num_identities", ["1", "2", "4", "8"], "minerf_scaling: N values.")
_SEEDS = flags.DEFINE_integer("seeds", 3, "Seeds per measurement (minerf_scaling, _fusion).")
_STEPS_H = flags.DEFINE_integer("horizon", 0, "Schedule horizon in steps of every run of a "
                                "minerf_* suite (0: the suite's default).")
_EVAL_EVERY = flags.DEFINE_integer("eval_every", 10, "Steps between held-out head-PSNR probes.")
_TARGETS = flags.DEFINE_list("targets", ["0.90", "0.95", "0.98"],
                             "minerf_scaling: targets as fractions (in dB) of each single "
                             "model's converged head PSNR.")
_WIDE = flags.DEFINE_integer("wide_width", 96, "minerf_scaling: width of the wider multi model "
                             "(0: none).")
_WIDE_SEEDS = flags.DEFINE_integer("wide_seeds", 1, "minerf_scaling: seeds of the wider model.")
_FUSIONS = flags.DEFINE_list("fusions", list(minerf_claims.FUSION_VARIANTS),
                             "minerf_fusion: variants.")
_FRAMES = flags.DEFINE_list("frame_counts", ["1", "5", "20", "0"],
                            "minerf_personalise: frames of the new identity (0: all).")
_BASE_STEPS = flags.DEFINE_integer("base_steps", 600, "minerf_personalise: base model steps.")
_OVERRIDES = flags.DEFINE_string("config_overrides", "{}", "minerf_*: JSON dict of dotted "
                                 "config overrides applied to every run.")
_PLOT = flags.DEFINE_string("plot", None, "minerf_scaling: write the PSNR-vs-seconds PNG here.")
_STEPS = flags.DEFINE_integer("steps", 10, "Timed steps per model (motion_step_time).")
_OUT = flags.DEFINE_string("out", None, "Write the figures as JSON here.")
_NERF_RUN = flags.DEFINE_string("nerf_run", "runs/demo", "talk_*: the MI-NeRF run.")
_AUDIO_RUN = flags.DEFINE_string("audio_run", "runs/a2e", "talk_*: the audio-to-expression run "
                                 "of an MI-NeRF --nerf_run (talk_real: none for LokiTalk).")
_SPEAKERS = flags.DEFINE_integer("speakers", 4, "talk_synthetic: held-out speech tracks.")
_TALK_FRAMES = flags.DEFINE_integer("talk_frames", 50, "talk_synthetic: frames per track; "
                                    "talk_real: max held-out frames per identity (0: all).")
_SPEECH = flags.DEFINE_string("speech", None, "talk_real: also drive identity 0 with this file.")
_OUT_DIR = flags.DEFINE_string("out_dir", "runs/bench", "talk_real: where the talk video goes; "
                               "lokitalk_synthetic: where its runs are trained.")
_LOKI_MODELS = flags.DEFINE_list("models", None, "head3d_compare: which of tpsmm, mcnet, mrfa, "
                                 "head3d (default all); lokitalk_synthetic: which of lokitalk, "
                                 "regions_off, cascade_off, transfer_off, minerf (default all); "
                                 "lokitalk_adapt: which of transfer, transfer_all, "
                                 "encoder_off, encoder_off_all, scratch, minerf, minerf_all "
                                 "(default all).")
_BASE_IDS = flags.DEFINE_integer("base_identities", 2, "lokitalk_adapt: identities of the "
                                 "pretraining; the next one is the new identity.")
_JAW_GRID = flags.DEFINE_integer("jaw_grid", 9, "lokitalk_synthetic: jaw openings of the "
                                 "analysis-by-synthesis reading.")


def _overrides() -> dict:
  try:
    value = json.loads(_OVERRIDES.value)
  except json.JSONDecodeError as e:
    raise app.UsageError(f"--config_overrides is not JSON ({e}): pass e.g. "
                         "'{\"model.width\": 64}'") from None
  if not isinstance(value, dict):
    raise app.UsageError("--config_overrides must be a JSON object of dotted config fields")
  return value


def _models(known) -> tuple[str, ...]:
  """--models (default: all of ``known``), checked against ``known``."""
  chosen = tuple(_LOKI_MODELS.value or known)
  unknown = sorted(set(chosen) - set(known))
  if unknown:
    raise app.UsageError(f"--models={','.join(unknown)}: choose from {','.join(known)}")
  return chosen


def _horizon(default: int) -> int:
  return _STEPS_H.value or default


def suite_scaling() -> dict:
  return minerf_claims.suite_scaling(
      _VARIANT.value, tuple(int(n) for n in _NUM_IDS.value), _SEEDS.value, _horizon(300),
      _EVAL_EVERY.value, tuple(float(t) for t in _TARGETS.value), _WIDE.value,
      _WIDE_SEEDS.value, overrides=_overrides(), plot=_PLOT.value)


def suite_fusion() -> dict:
  return minerf_claims.suite_fusion(_VARIANT.value, tuple(_FUSIONS.value), _SEEDS.value,
                                    _horizon(400), overrides=_overrides())


def suite_personalise() -> dict:
  return minerf_claims.suite_personalise(
      _VARIANT.value, _BASE_STEPS.value, _horizon(200), tuple(int(f) for f in _FRAMES.value),
      eval_every=_EVAL_EVERY.value, overrides=_overrides())


def suite_throughput() -> dict:
  config = minerf_claims.minerf_config(_VARIANT.value, **_overrides())
  trainer = minerf_claims.Trainer(config)
  trainer.train(3)
  steps = 20
  before = trainer.train_seconds
  trainer.train(steps)
  train_rays = steps * trainer.data.global_batch_size / (trainer.train_seconds - before)
  frames = trainer.data.eval_data["heldout"]
  params = trainer.params
  trainer.model.render_frames(params, frames.take(np.arange(1)))  # compile
  t0 = time.perf_counter()
  trainer.model.render_frames(params, frames)
  dt = time.perf_counter() - t0
  h, w = frames.resolution
  render_rays = len(frames) * h * w / dt
  print(f"train_rays_per_s={train_rays:.0f} render_rays_per_s={render_rays:.0f} "
        f"render_fps={len(frames) / dt:.2f} ({h}x{w}) devices={jax.device_count()} "
        f"({jax.devices()[0].platform})")
  return {"train_rays_per_s": train_rays, "render_rays_per_s": render_rays,
          "render_fps": len(frames) / dt, "resolution": [h, w], "devices": jax.device_count()}


# Counted with the authors' code at vox-256 (make_goldens.py --full_checkpoint; MCNet and MRFA
# part by part in motion/params.py). MRFA's is its trainable count: the authors' model also
# stores its fixed sine position embedding as a parameter (49,152 more: 114,339,206).
REFERENCE_PARAMS = {"tpsmm": 85_095_490, "mcnet": 101_841_273, "mrfa": 114_290_054}
REFERENCE_NOTES = {"mrfa": " trainable (114,339,206 with their fixed sine embedding)"}


def frame_gmacs(model, variables, size: int) -> float:
  """GMACs (XLA's HLO cost analysis, flops / 2) of animating one frame at ``size`` x ``size``:
  keypoints of the driving frame, background affine (TPS prior), dense motion and generator
  (+ memory or refinement). The source's keypoints are computed once per video and are not
  counted."""
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  image = jax.ShapeDtypeStruct((1, size, size, 3), np.float32)
  kp = jax.eval_shape(lambda v, x: model.net.apply(v, x, method=type(model.net).keypoints),
                      variables, image)
  background = model.net.prior == "tps"

  def frame(v, source, driving, kp_source):
    def run(net):
      kp_driving = net.keypoints(driving)
      bg = net.background(source, driving) if background else None
      return net.animate(source, kp_source, kp_driving, bg)
    return nn.apply(run, model.net)(v)["prediction"]

  cost = jax.jit(frame).lower(variables, image, image, kp).cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost["flops"]) / 2e9


def suite_motion_params() -> dict:
  """Full-size configs traced with jax.eval_shape: each system's default config (TPSMM and MCNet
  as published, MRFA ours so far) and our MCNet variant (``configs/mcnet.py:tpsmm``), with the
  authors' counts beside the published ones."""
  import importlib  # pylint: disable=g-import-not-at-top
  from minerf_jax.motion import params  # pylint: disable=g-import-not-at-top
  # label: (config module, variant, part counts, published?)
  # (None: the parts are the model's own top-level modules)
  builds = {"tpsmm": ("tpsmm", "", params.full_size_parameter_counts, True),
            "mcnet": ("mcnet", "", params.mcnet_published_parameter_counts, True),
            "mcnet:tpsmm": ("mcnet", "tpsmm", params.mcnet_parameter_counts, False),
            "mrfa": ("mrfa", "", None, True),
            "mrfa:tpsmm": ("mrfa", "tpsmm", params.mrfa_parameter_counts, False)}
  results = {}
  for label, (module, variant, breakdown, published) in builds.items():
    config = importlib.import_module(f"configs.{module}").get_config(variant)
    model = models.build(config)
    size = pipeline.image_size(config)
    image = np.zeros((2, size, size, 3), np.float32)
    variables = jax.eval_shape(lambda: model.init_variables(
        jax.random.PRNGKey(0), {"source": image, "driving": image}))
    total = params.count(variables["params"])
    counts = breakdown() if breakdown else {
        **{k: params.count(v) for k, v in variables["params"].items()}, "total": total}
    if counts["total"] != total:   # the model assembles exactly the parts counted below
      raise AssertionError(f"{label}: model {total} != parts {counts['total']}")
    gmacs = frame_gmacs(model, variables, size)
    ref = REFERENCE_PARAMS[module]
    results[label] = dict(counts, reference=ref, relative=total / ref - 1, gmacs_per_frame=gmacs,
                          image_size=size, published=published)
    parts = "  ".join(f"{k}={v:,d}" for k, v in counts.items() if k != "total")
    kind = ("published: equal to the authors'" if published and total == ref else
            "published" if published else "ours; the authors' published model has")
    print(f"{label:12s} params={total:>12,d}  ({kind} {ref:,.0f}{REFERENCE_NOTES.get(module, '')}, "
          f"{100 * (total / ref - 1):+.2f}%)"
          f"  GMACs/frame={gmacs:.1f} at {size}x{size}  {parts}", flush=True)
  for label, theirs in (("mcnet", params.MCNET_REFERENCE_PARTS),
                        ("mrfa", params.MRFA_REFERENCE_PARTS)):
    print(f"{label} parts, ours (reference): " + "  ".join(
        f"{k}={results[label][k]:,d} ({v:,d})" for k, v in theirs.items()), flush=True)
  return results


def suite_motion_step_time() -> dict:
  """Seconds per training iteration of the three one-shot systems (``--variant`` of their
  configs, default 'cpu'; the real dataset from $MINERF_DATA_DIR), after the compile."""
  import importlib  # pylint: disable=g-import-not-at-top
  variant = "cpu" if _VARIANT.value == "demo" else _VARIANT.value
  results = {}
  for name in ("tpsmm", "mcnet", "mrfa"):
    config = importlib.import_module(f"configs.{name}").get_config(variant)
    model, data = models.build(config), models.build_data(config)
    params, batch_stats, rng = loop.initial_variables(config, model, data)
    tx = loop.make_optimizer(config, model.trainable)
    step = parallel.make_train_step(model, tx, config.parallel.strategy)
    state = step.put_state(state_lib.TrainState.create(params, tx, rng, batch_stats))
    t0 = time.perf_counter()
    state, metrics = step(state, step.put_batch(data.train_batch(0)))
    jax.block_until_ready(metrics)
    compile_s = time.perf_counter() - t0
    n = _STEPS.value
    t0 = time.perf_counter()
    for i in range(1, n + 1):
      state, metrics = step(state, step.put_batch(data.train_batch(i)))
    jax.block_until_ready(metrics)
    per_step = (time.perf_counter() - t0) / n
    results[name] = {"seconds_per_step": per_step, "compile_seconds": compile_s,
                     "batch_size": data.global_batch_size,
                     "image_size": pipeline.image_size(config)}
    print(f"{name}: {per_step:.3f} s/step (batch {data.global_batch_size}, "
          f"{pipeline.image_size(config)}px, {n} steps; compile {compile_s:.0f} s) "
          f"on {jax.device_count()} {jax.devices()[0].platform} device(s)", flush=True)
  return results


def suite_talk_synthetic() -> dict:
  from launch import talk_eval  # pylint: disable=g-import-not-at-top
  return talk_eval.synthetic(_NERF_RUN.value, _AUDIO_RUN.value, _SPEAKERS.value,
                             _TALK_FRAMES.value)


def suite_talk_real() -> dict:
  from launch import talk_eval  # pylint: disable=g-import-not-at-top
  # An audio-driven run (LokiTalk) takes no audio model: --audio_run only when given.
  audio_run = _AUDIO_RUN.value if _AUDIO_RUN.present else None
  return talk_eval.real(_NERF_RUN.value, audio_run, _SPEECH.value, _OUT_DIR.value,
                        _TALK_FRAMES.value if _TALK_FRAMES.present else 0)


def suite_lokitalk_synthetic() -> dict:
  from launch import lokitalk_bench  # pylint: disable=g-import-not-at-top
  chosen = _models(("lokitalk", *lokitalk_bench.ABLATIONS, "minerf"))
  return lokitalk_bench.suite(
      _OUT_DIR.value, _VARIANT.value, _horizon(500),
      _SPEAKERS.value if _SPEAKERS.present else 3,
      _TALK_FRAMES.value if _TALK_FRAMES.present else 40, _JAW_GRID.value,
      overrides=_overrides(), models_=chosen if _LOKI_MODELS.value else None)


def suite_lokitalk_adapt() -> dict:
  from launch import lokitalk_bench  # pylint: disable=g-import-not-at-top
  modes = _models(lokitalk_bench.ADAPT_MODES)
  return lokitalk_bench.suite_adapt(
      _VARIANT.value, _BASE_STEPS.value if _BASE_STEPS.present else 1000, _horizon(300),
      tuple(int(f) for f in _FRAMES.value) if _FRAMES.present else (50, 250),
      base_identities=_BASE_IDS.value, modes=modes, eval_every=_EVAL_EVERY.value if _EVAL_EVERY.present else 25,
      target=float(_TARGETS.value[0]) if _TARGETS.present else 0.95,
      overrides=_overrides())


def suite_head3d_compare() -> dict:
  from launch import head3d_bench  # pylint: disable=g-import-not-at-top
  chosen = _LOKI_MODELS.value and _models(head3d_bench.KNOWN) or head3d_bench.MODELS
  variant = _VARIANT.value if _VARIANT.present else "synthetic"
  return head3d_bench.suite(_OUT_DIR.value, variant, _horizon(250), chosen,
                            overrides=_overrides())


def suite_head3d_pose_signal() -> dict:
  from launch import head3d_bench  # pylint: disable=g-import-not-at-top
  return head3d_bench.pose_signal(_VARIANT.value if _VARIANT.present else "synthetic",
                                  _horizon(300))


def main(argv):
  del argv
  results = {"minerf_scaling": suite_scaling,
             "minerf_fusion": suite_fusion,
             "minerf_personalise": suite_personalise,
             "minerf_throughput": suite_throughput,
             "motion_params": suite_motion_params,
             "motion_step_time": suite_motion_step_time,
             "talk_synthetic": suite_talk_synthetic,
             "talk_real": suite_talk_real,
             "lokitalk_synthetic": suite_lokitalk_synthetic,
             "lokitalk_adapt": suite_lokitalk_adapt,
             "head3d_compare": suite_head3d_compare,
             "head3d_pose_signal": suite_head3d_pose_signal}[_SUITE.value]()
  if _OUT.value:
    with open(_OUT.value, "w") as f:
      json.dump(results, f, indent=2)
    print(f"wrote {_OUT.value}")


if __name__ == "__main__":
  cli.run(main)

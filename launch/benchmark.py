r"""Benchmarks: print figures and write JSON. Never part of the test suite.

  python -m launch.benchmark --suite=minerf_time_to_psnr [--target_psnr=24 --max_steps=4000]
  python -m launch.benchmark --suite=minerf_throughput
  python -m launch.benchmark --suite=motion_params

minerf_time_to_psnr
  1. One multi-identity MI-NeRF on all N identities vs N single-identity MI-NeRFs (same
     architecture, batch and schedule), each trained until its held-out --metric (on the
     identities it trains on; default: PSNR over head pixels, since the data-initialised static
     background makes full-frame PSNR high from the start) reaches --target_psnr, evaluated every
     --eval_every steps. Prints
     ``time_ratio=<multi/sum_single>`` where times are training wall-clock seconds (evaluation and
     the one-off XLA compile excluded; the compile times are printed separately).
  2. The fusion ablation: hadamard vs concat vs additive (and film) trained for the same
     --ablation_steps; held-out and expression-transfer PSNR.
minerf_throughput
  Train and render rays/s of the base config on this machine's devices.
motion_params
  Parameter counts of the full-size (vox-256) TPSMM, MCNet and MRFA models of configs/, traced
  with jax.eval_shape (nothing allocated), against the references' totals measured with the
  authors' code, and GMACs per animated 256x256 frame from XLA's cost analysis (lowered, not
  compiled).
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
import ml_collections
import numpy as np

from configs import minerf as minerf_config
from minerf_jax import models
from minerf_jax.data import pipeline
from minerf_jax.train import loop
from minerf_jax.train import parallel
from minerf_jax.train import state as state_lib

_SUITE = flags.DEFINE_enum("suite", "minerf_time_to_psnr",
                           ["minerf_time_to_psnr", "minerf_throughput", "motion_params",
                            "motion_step_time"],
                           "Benchmark suite.")
_VARIANT = flags.DEFINE_string("variant", "demo", "configs/minerf.py variant to benchmark.")
_TARGET = flags.DEFINE_float("target_psnr", 22.0, "Held-out PSNR target (dB) for --metric.")
_METRIC = flags.DEFINE_enum("metric", "heldout/face_psnr", ["heldout/face_psnr", "heldout/psnr"],
                            "Time-to-PSNR metric: head pixels only (default) or the full frame.")
_MAX_STEPS = flags.DEFINE_integer("max_steps", 4000, "Step budget per model (time-to-PSNR).")
_EVAL_EVERY = flags.DEFINE_integer("eval_every", 250, "Steps between held-out evaluations.")
_ABLATION_STEPS = flags.DEFINE_integer("ablation_steps", 2000, "Steps per fusion variant.")
_FUSIONS = flags.DEFINE_list("fusions", ["hadamard", "concat", "additive", "film"], "Ablation.")
_STEPS = flags.DEFINE_integer("steps", 10, "Timed steps per model (motion_step_time).")
_OUT = flags.DEFINE_string("out", None, "Write the figures as JSON here.")


class Trainer:
  """The train loop's parts (optimizer, parallel step) without checkpoints, for timing."""

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    self.model = models.build(config)
    self.data = pipeline.build(config)
    self.mesh = parallel.make_mesh()
    schedule = loop.learning_rate_schedule(config.optimizer, int(config.total_steps))
    self.tx = loop.make_optimizer(config, self.model.trainable, schedule)
    params, rng = loop.initial_params(config, self.model, self.data)
    self.step_fn = parallel.make_train_step(self.model, self.tx, config.parallel.strategy,
                                            self.mesh)
    self.state = self.step_fn.put_state(state_lib.TrainState.create(params, self.tx, rng))
    self.step = 0
    self.train_seconds = 0.0
    self.compile_seconds = 0.0

  def train(self, steps: int) -> None:
    for _ in range(steps):
      batch = self.data.train_batch(self.step)
      t0 = time.perf_counter()
      self.state, metrics = self.step_fn(self.state, self.step_fn.put_batch(batch))
      if self.step == 0:
        jax.block_until_ready(metrics)
        self.compile_seconds = time.perf_counter() - t0
        t0 = time.perf_counter()
      self.step += 1
      self.train_seconds += time.perf_counter() - t0
    jax.block_until_ready(self.state)

  def evaluate(self, names=("heldout",)) -> dict[str, float]:
    params = self.step_fn.get_state(self.state).params
    return self.model.evaluate(params, {k: self.data.eval_data[k] for k in names
                                        if k in self.data.eval_data})


def _config(**overrides) -> ml_collections.ConfigDict:
  config = minerf_config.get_config(_VARIANT.value)
  config.update_from_flattened_dict(overrides)
  return config


def time_to_psnr(config, target: float, max_steps: int, eval_every: int) -> dict:
  trainer = Trainer(config)
  history = []
  while trainer.step < max_steps:
    trainer.train(eval_every)
    psnr = trainer.evaluate()[_METRIC.value]
    history.append((trainer.step, round(trainer.train_seconds, 2), round(psnr, 3)))
    print(f"  step {trainer.step:5d}  train {trainer.train_seconds:7.1f}s  "
          f"{_METRIC.value} {psnr:.2f} dB", flush=True)
    if psnr >= target:
      break
  reached = history[-1][2] >= target
  return {"reached": reached, "steps": trainer.step, "seconds": trainer.train_seconds,
          "compile_seconds": trainer.compile_seconds, "history": history}


def suite_time_to_psnr() -> dict:
  target, max_steps, every = _TARGET.value, _MAX_STEPS.value, _EVAL_EVERY.value
  base = _config(total_steps=max_steps)
  n = int(base.data.num_identities)
  print(f"== multi-identity MI-NeRF on {n} identities, target {_METRIC.value} >= {target} dB",
        flush=True)
  multi = time_to_psnr(base, target, max_steps, every)
  singles = []
  for i in range(n):
    print(f"== single-identity MI-NeRF, identity {i}", flush=True)
    singles.append(time_to_psnr(_config(total_steps=max_steps, **{"data.identities": (i,)}),
                                target, max_steps, every))
  sum_single = sum(s["seconds"] for s in singles)
  all_reached = multi["reached"] and all(s["reached"] for s in singles)
  ratio = multi["seconds"] / sum_single
  print(f"multi: {multi['seconds']:.1f}s ({multi['steps']} steps, reached={multi['reached']}); "
        f"singles: {', '.join('%.1fs/%d' % (s['seconds'], s['steps']) for s in singles)} "
        f"(sum {sum_single:.1f}s); compile excluded")
  print(f"time_ratio={ratio:.3f}" + ("" if all_reached else
                                     "  (a model did not reach the target: lower bound)"))
  print(f"== fusion ablation: {_ABLATION_STEPS.value} steps each", flush=True)
  ablation = {}
  for kind in _FUSIONS.value:
    trainer = Trainer(_config(total_steps=_ABLATION_STEPS.value, **{"model.fusion": kind}))
    trainer.train(_ABLATION_STEPS.value)
    res = trainer.evaluate(("heldout", "transfer"))
    ablation[kind] = {"heldout_psnr": res["heldout/psnr"], "heldout_ssim": res["heldout/ssim"],
                      "heldout_face_psnr": res["heldout/face_psnr"],
                      "transfer_face_psnr": res.get("transfer/face_psnr", float("nan")),
                      "transfer_psnr": res.get("transfer/psnr", float("nan")),
                      "train_seconds": trainer.train_seconds}
    print(f"fusion={kind:9s} heldout_psnr={res['heldout/psnr']:.2f} "
          f"heldout_face_psnr={res['heldout/face_psnr']:.2f} "
          f"transfer_face_psnr={res.get('transfer/face_psnr', float('nan')):.2f} "
          f"transfer_psnr={res.get('transfer/psnr', float('nan')):.2f} "
          f"ssim={res['heldout/ssim']:.3f} ({trainer.train_seconds:.0f}s)", flush=True)
  return {"target_psnr": target, "multi": multi, "singles": singles, "time_ratio": ratio,
          "all_reached": all_reached, "fusion_ablation": ablation,
          "devices": [str(d) for d in jax.devices()]}


def suite_throughput() -> dict:
  config = _config()
  trainer = Trainer(config)
  trainer.train(3)
  steps = 20
  before = trainer.train_seconds
  trainer.train(steps)
  train_rays = steps * trainer.data.global_batch_size / (trainer.train_seconds - before)
  frames = trainer.data.eval_data["heldout"]
  params = trainer.step_fn.get_state(trainer.state).params
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


REFERENCE_PARAMS = {"tpsmm": 85.1e6, "mcnet": 101.8e6, "mrfa": 114.3e6}


def frame_gmacs(model, variables, size: int) -> float:
  """GMACs (XLA's HLO cost analysis, flops / 2) of animating one frame at ``size`` x ``size``:
  keypoints of the driving frame, background affine, dense motion and generator (+ memory or
  refinement). The source's keypoints are computed once per video and are not counted."""
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  image = jax.ShapeDtypeStruct((1, size, size, 3), np.float32)
  kp = jax.ShapeDtypeStruct((1, model.net.num_tps * model.net.points_per_tps, 2), np.float32)

  def frame(v, source, driving, kp_source):
    def run(net):
      kp_driving = net.keypoints(driving)
      return net.animate(source, kp_source, kp_driving, net.background(source, driving))
    return nn.apply(run, model.net)(v)["prediction"]

  cost = jax.jit(frame).lower(variables, image, image, kp).cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost["flops"]) / 2e9


def suite_motion_params() -> dict:
  """Full-size configs (configs/{tpsmm,mcnet,mrfa}.py) traced with jax.eval_shape."""
  import importlib  # pylint: disable=g-import-not-at-top
  from minerf_jax.motion import params  # pylint: disable=g-import-not-at-top
  breakdowns = {"tpsmm": params.full_size_parameter_counts,
                "mcnet": params.mcnet_parameter_counts, "mrfa": params.mrfa_parameter_counts}
  results = {}
  for name in ("tpsmm", "mcnet", "mrfa"):
    config = importlib.import_module(f"configs.{name}").get_config()
    model = models.build(config)
    size = pipeline.image_size(config)
    image = np.zeros((2, size, size, 3), np.float32)
    variables = jax.eval_shape(lambda: model.init_variables(
        jax.random.PRNGKey(0), {"source": image, "driving": image}))
    total = params.count(variables["params"])
    counts = breakdowns[name]()
    if counts["total"] != total:   # the model assembles exactly the parts counted below
      raise AssertionError(f"{name}: model {total} != parts {counts['total']}")
    gmacs = frame_gmacs(model, variables, size)
    ref = REFERENCE_PARAMS[name]
    results[name] = dict(counts, reference=ref, relative=total / ref - 1, gmacs_per_frame=gmacs,
                         image_size=size)
    parts = "  ".join(f"{k}={v / 1e6:.2f}M" for k, v in counts.items() if k != "total")
    print(f"{name}: params={total / 1e6:.2f}M reference={ref / 1e6:.1f}M "
          f"({100 * (total / ref - 1):+.1f}%)  GMACs/frame={gmacs:.1f} at {size}x{size}  {parts}",
          flush=True)
  return results


def suite_motion_step_time() -> dict:
  """Seconds per training iteration of the three one-shot systems (``--variant`` of their
  configs, default 'cpu'; the real dataset from $MINERF_DATA_DIR), after the compile."""
  import importlib  # pylint: disable=g-import-not-at-top
  variant = "cpu" if _VARIANT.value == "demo" else _VARIANT.value
  results = {}
  for name in ("tpsmm", "mcnet", "mrfa"):
    config = importlib.import_module(f"configs.{name}").get_config(variant)
    model, data = models.build(config), pipeline.build(config)
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


def main(argv):
  del argv
  results = {"minerf_time_to_psnr": suite_time_to_psnr,
             "minerf_throughput": suite_throughput,
             "motion_params": suite_motion_params,
             "motion_step_time": suite_motion_step_time}[_SUITE.value]()
  if _OUT.value:
    with open(_OUT.value, "w") as f:
      json.dump(results, f, indent=2)
    print(f"wrote {_OUT.value}")


if __name__ == "__main__":
  app.run(main)

"""MI-NeRF's headline claims, measured: the ``minerf_*`` suites of ``launch.benchmark``.

Defines no flags; ``launch/benchmark.py`` maps its flags onto these functions, and the tests call
them with ``:test``-sized configs.

Protocol (shared by the suites):

* Every run of a suite has the same schedule horizon ``steps`` (``config.total_steps``): the
  learning rate decays over the same number of steps whether a run reaches a target early or
  not, so no run is compared while still at its warm-up peak rate.
* Seconds are training wall-clock seconds: from before the first timed step to after a device
  sync at the end of each training segment (data loading included; the first step, which
  compiles, and every evaluation excluded). Runs whose configs compile to the same program share
  one compiled step (``_programs``), so a later run pays no compile at all.
* Held-out quality along the way is the head PSNR of each identity (``HeadProbe``: PSNR over the
  head-mask pixels of a few held-out frames per identity, rendered deterministically), evaluated
  every ``eval_every`` steps; the time a run reaches a target is interpolated linearly between
  the two evaluations around the crossing.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any, Sequence

import jax
import ml_collections
import numpy as np

from configs import minerf as minerf_config_lib
from minerf_jax import metrics
from minerf_jax import models
from minerf_jax.data import pipeline
from minerf_jax.train import loop
from minerf_jax.train import parallel
from minerf_jax.train import state as state_lib

# Config fields that change the data or the init, never the compiled train step.
_DATA_ONLY_FIELDS = ("seed", "data.identities", "personalise.num_frames", "adapt.num_frames",
                     "init_from")
_programs: dict[str, tuple[Any, Any, Any]] = {}


def minerf_config(variant: str, **overrides) -> ml_collections.ConfigDict:
  """``configs/minerf.py:<variant>`` with dotted ``overrides``."""
  config = minerf_config_lib.get_config(variant)
  config.update_from_flattened_dict(overrides)
  return config


def _program_key(config: ml_collections.ConfigDict) -> str:
  flat = json.loads(config.to_json())
  for field in _DATA_ONLY_FIELDS:
    node = flat
    *parents, leaf = field.split(".")
    for p in parents:
      node = node.get(p, {})
    node.pop(leaf, None)
  return json.dumps(flat, sort_keys=True)


class Trainer:
  """The train loop's parts (optimizer, parallel step) without checkpoints, for timing.

  ``pretrained``: parameters to start from (``model.load_pretrained``, as ``init_from`` does).
  """

  def __init__(self, config: ml_collections.ConfigDict, *, pretrained=None):
    self.config = config
    key = _program_key(config)
    if key not in _programs:
      model = models.build(config)
      schedule = loop.learning_rate_schedule(config.optimizer, int(config.total_steps))
      tx = loop.make_optimizer(config, model.trainable, schedule)
      _programs[key] = (model, tx, parallel.make_train_step(model, tx, config.parallel.strategy,
                                                            parallel.make_mesh()))
    self.model, self.tx, self.step_fn = _programs[key]
    self.data = models.build_data(config)
    params, rng = loop.initial_params(config, self.model, self.data)
    if pretrained is not None:
      params = self.model.load_pretrained(params, pretrained)
    self.state = self.step_fn.put_state(state_lib.TrainState.create(params, self.tx, rng))
    self.step = 0
    self.train_seconds = 0.0
    self.compile_seconds = 0.0

  def train(self, steps: int) -> None:
    """``steps`` more steps; adds their seconds (sync included, first step excluded)."""
    if steps <= 0:
      return
    if self.step == 0:
      t0 = time.perf_counter()
      self.state, m = self.step_fn(self.state, self.step_fn.put_batch(self.data.train_batch(0)))
      jax.block_until_ready(m)
      self.compile_seconds = time.perf_counter() - t0
      self.step, steps = 1, steps - 1
    t0 = time.perf_counter()
    for _ in range(steps):
      batch = self.step_fn.put_batch(self.data.train_batch(self.step))
      self.state, _ = self.step_fn(self.state, batch)
      self.step += 1
    jax.block_until_ready(self.state)
    self.train_seconds += time.perf_counter() - t0

  @property
  def params(self):
    return self.step_fn.get_state(self.state).params

  def evaluate(self, names: Sequence[str] = ("heldout",)) -> dict[str, float]:
    return self.model.evaluate(self.params, {k: self.data.eval_data[k] for k in names
                                             if k in self.data.eval_data})


class HeadProbe:
  """Per-identity held-out head PSNR from the head pixels of ``frames_per_identity`` held-out
  frames per identity: cheap enough to evaluate every few steps."""

  def __init__(self, frames: pipeline.FrameSet, frames_per_identity: int, chunk: int):
    picks = []
    for identity in sorted(set(frames.identity.tolist())):
      idx = np.flatnonzero(frames.identity == identity)
      picks += list(idx[np.unique(np.linspace(0, len(idx) - 1, frames_per_identity).round()
                                  .astype(int))])
    rays = [pipeline.frame_rays(frames, int(i), np.flatnonzero(frames.mask[i].ravel() > 0.5))
            for i in picks]
    flat = {k: np.concatenate([r[k] for r in rays]) for k in rays[0]}
    self.count = len(flat["rgb"])
    pad = -self.count % chunk
    self.chunks = [{k: np.concatenate([v, np.repeat(v[-1:], pad, 0)])[s:s + chunk]
                    for k, v in flat.items()} for s in range(0, self.count + pad, chunk)]
    self.rgb, self.identity = flat["rgb"], flat["identity"]
    self.identities = sorted(set(self.identity.tolist()))

  def __call__(self, model, params) -> dict[int, float]:
    pred = np.concatenate([np.asarray(jax.device_get(model.predict(params, c)["rgb"]))
                           for c in self.chunks])[:self.count]
    err = (pred - self.rgb) ** 2
    return {i: float(metrics.mse_to_psnr(err[self.identity == i].mean()))
            for i in self.identities}


class FrameProbe:
  """``HeadProbe`` for models that render whole frames from per-frame conditions (audio-driven
  ones: ``model.render_frames``): the same head-pixel PSNR of ``frames_per_identity`` held-out
  frames per identity, each frame rendered whole and the head mask applied after."""

  def __init__(self, frames: pipeline.FrameSet, frames_per_identity: int):
    picks = []
    for identity in sorted(set(frames.identity.tolist())):
      idx = np.flatnonzero(frames.identity == identity)
      picks += list(idx[np.unique(np.linspace(0, len(idx) - 1, frames_per_identity).round()
                                  .astype(int))])
    self.frames = frames.take(np.asarray(picks))
    self.identities = sorted(set(self.frames.identity.tolist()))

  def __call__(self, model, params) -> dict[int, float]:
    err = (model.render_frames(params, self.frames)["rgb"] - self.frames.rgb) ** 2
    head = self.frames.mask > 0.5
    return {i: float(metrics.mse_to_psnr(err[head & (self.frames.identity == i)[:, None, None]]
                                         .mean())) for i in self.identities}


def make_probe(config: ml_collections.ConfigDict, frames: pipeline.FrameSet,
               frames_per_identity: int):
  """The held-out head-PSNR probe of ``config``'s model: per ray, or per frame for
  audio-driven models (``pipeline.audio_context`` >= 0)."""
  if pipeline.audio_context(config) >= 0:
    return FrameProbe(frames, frames_per_identity)
  return HeadProbe(frames, frames_per_identity, int(config.eval.chunk))


@dataclasses.dataclass
class Curve:
  """Evaluations of one run: ``steps`` [K], ``seconds`` [K], ``psnr[identity]`` [K]."""
  steps: list[int]
  seconds: list[float]
  psnr: dict[int, list[float]]
  compile_seconds: float = 0.0

  def converged(self, identity: int, last: int = 5) -> float:
    """Mean of the last ``last`` evaluations: the converged head PSNR at the horizon."""
    return float(np.mean(self.psnr[identity][-last:]))

  def time_to(self, targets: dict[int, float]) -> float:
    """Training seconds at which every identity has reached its target (linear interpolation
    between the evaluations around the crossing); inf if never within the horizon."""
    ok = np.all([np.asarray(self.psnr[i]) >= t for i, t in targets.items()], axis=0)
    if not ok.any():
      return float("inf")
    k = int(np.argmax(ok))
    if k == 0:
      return float(self.seconds[0])
    # Fraction of the last interval at which the slowest identity crossed its target.
    frac = 0.0
    for i, t in targets.items():
      lo, hi = self.psnr[i][k - 1], self.psnr[i][k]
      if lo < t:
        frac = max(frac, (t - lo) / max(hi - lo, 1e-9))
    return float(self.seconds[k - 1] + frac * (self.seconds[k] - self.seconds[k - 1]))

  def to_json(self) -> dict:
    return {"steps": self.steps, "seconds": [round(s, 3) for s in self.seconds],
            "psnr": {str(i): [round(p, 3) for p in v] for i, v in self.psnr.items()},
            "compile_seconds": round(self.compile_seconds, 2)}


def train_curve(config: ml_collections.ConfigDict, eval_every: int, probe_frames: int, *,
                pretrained=None, label: str = "") -> tuple[Trainer, Curve]:
  """Trains ``config`` for ``config.total_steps``, probing head PSNR every ``eval_every``."""
  trainer = Trainer(config, pretrained=pretrained)
  probe = make_probe(config, trainer.data.eval_data["heldout"], probe_frames)
  curve = Curve([], [], {i: [] for i in probe.identities})
  total = int(config.total_steps)
  t_start = time.perf_counter()
  while trainer.step < total:
    trainer.train(min(eval_every, total - trainer.step))
    for i, p in probe(trainer.model, trainer.params).items():
      curve.psnr[i].append(p)
    curve.steps.append(trainer.step)
    curve.seconds.append(trainer.train_seconds)
  curve.compile_seconds = trainer.compile_seconds
  mean_final = np.mean([curve.converged(i) for i in curve.psnr])
  print(f"  {label}: {total} steps, train {trainer.train_seconds:.1f}s (compile "
        f"{trainer.compile_seconds:.1f}s, wall {time.perf_counter() - t_start:.0f}s), "
        f"converged head PSNR {mean_final:.2f} dB", flush=True)
  return trainer, curve


def mean_std(values: Sequence[float]) -> tuple[float, float]:
  v = np.asarray(values, np.float64)
  return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def _fmt(values: Sequence[float], digits: int = 2) -> str:
  finite = [v for v in values if np.isfinite(v)]
  if len(finite) < len(values):
    return f"inf ({len(values) - len(finite)}/{len(values)} not reached)"
  m, s = mean_std(values)
  if len(values) == 1:
    return f"{m:.{digits}f} (1 seed)"
  return f"{m:.{digits}f} +- {s:.{digits}f}"


# ------------------------------------------------------------------------------ minerf_scaling


def suite_scaling(variant: str = "demo", num_identities: Sequence[int] = (1, 2, 4, 8),
                  seeds: int = 3, steps: int = 300, eval_every: int = 10,
                  targets: Sequence[float] = (0.90, 0.95, 0.98), wide_width: int = 96,
                  wide_seeds: int = 1, probe_frames: int = 3, overrides: dict | None = None,
                  plot: str | None = None) -> dict:
  """One MI-NeRF on N identities vs N single-identity MI-NeRFs, per N and target.

  For each seed: one single-identity model per identity 0..max(N)-1 (shared by every N), then
  for each N the multi-identity model on identities 0..N-1 (the same architecture; N = 1 is the
  single model of identity 0, a check that the ratio is 1) and, for N > 1, a wider one
  (``model.width=wide_width``, for the first ``wide_seeds`` seeds). Targets per identity:
  ``fraction`` x (in dB) that identity's single model's converged head PSNR.
  ``ratio = seconds(multi reaches every identity's target) / sum(seconds each single reaches
  its own)``.
  """
  overrides = dict(overrides or {})
  n_max = max(num_identities)
  runs: dict[str, list] = {"single": [], "multi": [], "wide": []}
  sizes = {"model": shared_parameter_count(minerf_config(variant, **overrides))}
  if wide_width:
    sizes["wide"] = shared_parameter_count(minerf_config(
        variant, **overrides, **{"model.width": wide_width}))
  print("shared parameters (identity, frame and background tables excluded): "
        + ", ".join(f"{k} {v}" for k, v in sizes.items()), flush=True)
  for seed in range(seeds):
    base = dict(overrides, **{"data.num_identities": n_max, "total_steps": steps,
                              "seed": seed})
    singles = {}
    for i in range(n_max):
      _, singles[i] = train_curve(minerf_config(variant, **base, **{"data.identities": (i,)}),
                                  eval_every, probe_frames, label=f"seed {seed} single id{i}")
    multis, wides = {}, {}
    for n in num_identities:
      ids = tuple(range(n))
      if n == 1:
        multis[n] = singles[0]
      else:
        _, multis[n] = train_curve(minerf_config(variant, **base, **{"data.identities": ids}),
                                   eval_every, probe_frames, label=f"seed {seed} multi N={n}")
        if wide_width and seed < wide_seeds:
          _, wides[n] = train_curve(
              minerf_config(variant, **base, **{"data.identities": ids,
                                                "model.width": wide_width}),
              eval_every, probe_frames, label=f"seed {seed} wide multi N={n}")
    runs["single"].append(singles)
    runs["multi"].append(multis)
    runs["wide"].append(wides)

  table = {}
  for n in num_identities:
    for frac in targets:
      ratios, wide_ratios, reached = [], [], []
      for seed in range(seeds):
        singles = runs["single"][seed]
        goal = {i: frac * singles[i].converged(i) for i in range(n)}
        single_s = sum(singles[i].time_to({i: goal[i]}) for i in range(n))
        multi_s = runs["multi"][seed][n].time_to(goal)
        ratios.append(multi_s / single_s)
        reached.append(bool(np.isfinite(multi_s)))
        if n in runs["wide"][seed]:
          wide_ratios.append(runs["wide"][seed][n].time_to(goal) / single_s)
      table[f"N={n} target={frac:.2f}"] = {
          "ratio": mean_std(ratios) if all(reached) else None, "ratios": ratios,
          "wide_ratios": wide_ratios, "multi_reached": reached}
      print(f"N={n} target={100 * frac:.0f}% of single converged: multi/sum(single) = "
            f"{_fmt(ratios, 3)}" + (f"; wide (width {wide_width}) = {_fmt(wide_ratios, 3)}"
                                    if wide_ratios else ""), flush=True)
  converged = {f"N={n}": {"multi": _fmt([np.mean([runs["multi"][s][n].converged(i)
                                                  for i in range(n)]) for s in range(seeds)]),
                          "single": _fmt([np.mean([runs["single"][s][i].converged(i)
                                                   for i in range(n)]) for s in range(seeds)])}
               for n in num_identities}
  for n, row in converged.items():
    print(f"{n}: converged head PSNR, multi {row['multi']} dB vs singles {row['single']} dB")
  if plot:
    plot_scaling(runs, num_identities, plot)
  return {"table": table, "converged_head_psnr": converged, "steps": steps,
          "shared_params": sizes,
          "eval_every": eval_every, "seeds": seeds, "wide_width": wide_width,
          "curves": {kind: [{str(k): c.to_json() for k, c in per_seed.items()}
                            for per_seed in runs[kind]] for kind in runs},
          "devices": [str(d) for d in jax.devices()]}


def plot_scaling(runs: dict, num_identities: Sequence[int], path: str) -> None:
  """Head PSNR vs training seconds of seed 0: each single model (thin) and, per N, the multi
  and the wide multi model (mean over their identities)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  shown = [n for n in num_identities if n > 1] or list(num_identities)
  fig, axes = plt.subplots(1, len(shown), figsize=(4.2 * len(shown), 3.4), squeeze=False)
  singles = runs["single"][0]
  for ax, n in zip(axes[0], shown):
    for i in range(n):
      c = singles[i]
      ax.plot(c.seconds, c.psnr[i], color="0.6", lw=0.8,
              label="single models" if i == 0 else None)
    for kind, style in (("multi", "-"), ("wide", "--")):
      c = runs[kind][0].get(n)
      if c is not None:
        ax.plot(c.seconds, np.mean([c.psnr[i] for i in range(n)], 0), style, lw=2,
                label=f"{kind} model, N={n}")
    ax.set_title(f"N = {n} identities")
    ax.set_xlabel("training seconds")
    ax.set_ylabel("held-out head PSNR (dB)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=110)
  plt.close(fig)
  print(f"wrote {path}")


# ------------------------------------------------------------------------------- minerf_fusion

FUSION_VARIANTS = minerf_config_lib.FUSION_VARIANTS


def shared_parameter_count(config: ml_collections.ConfigDict) -> int:
  """Parameters outside the per-identity / per-frame tables (traced, nothing allocated)."""
  from minerf_jax.models import minerf  # pylint: disable=g-import-not-at-top
  net = minerf.net_from_config(config)
  n = 2
  from minerf_jax.data import synthetic  # pylint: disable=g-import-not-at-top
  e = int(config.data.get("expression_dim", len(synthetic.EXPRESSION_NAMES)))
  batch = {"origins": np.zeros((n, 3), np.float32), "directions": np.ones((n, 3), np.float32),
           "rotation": np.tile(np.eye(3, dtype=np.float32), (n, 1, 1)),
           "translation": np.zeros((n, 3), np.float32), "identity": np.zeros(n, np.int32),
           "frame": np.zeros(n, np.int32), "expression": np.zeros((n, e), np.float32),
           "pixel": np.full((n, 2), 0.5, np.float32)}
  shapes = jax.eval_shape(lambda: net.init(jax.random.PRNGKey(0), batch, None, False))["params"]
  return int(sum(np.prod(x.shape) for k, v in shapes.items()
                 if k not in minerf.IDENTITY_SPECIFIC for x in jax.tree.leaves(v)))


def equal_budget_features(config: ml_collections.ConfigDict, overrides: dict,
                          reference: int) -> int:
  """``model.fusion_features`` whose shared parameter count is closest to ``reference`` (the
  count is affine in the features: fusion projections and the field's condition kernels)."""
  def count(features):
    c = config.copy_and_resolve_references()
    c.update_from_flattened_dict(dict(overrides, **{"model.fusion_features": features}))
    return shared_parameter_count(c)
  lo, hi = count(8), count(16)
  slope = (hi - lo) / 8
  guess = max(1, int(round(8 + (reference - lo) / slope)))
  return min((f for f in (guess - 1, guess, guess + 1) if f >= 1),
             key=lambda f: abs(count(f) - reference))


def suite_fusion(variant: str = "demo", variants: Sequence[str] = tuple(FUSION_VARIANTS),
                 seeds: int = 3, steps: int = 400, overrides: dict | None = None) -> dict:
  """Every fusion variant at equal steps and (by ``fusion_features``) equal shared-parameter
  budget: held-out, transfer and novel-view PSNR and head PSNR, and identity leakage in
  transfer, mean +- std over seeds."""
  overrides = dict(overrides or {}, total_steps=steps)
  reference_config = minerf_config(variant, **overrides, **FUSION_VARIANTS["hadamard"])
  reference = shared_parameter_count(reference_config)
  keys = ("heldout/psnr", "heldout/face_psnr", "transfer/psnr", "transfer/face_psnr",
          "novel_view/psnr", "novel_view/face_psnr", "transfer/leakage")
  rows = {}
  for name in variants:
    spec = FUSION_VARIANTS[name]
    features = equal_budget_features(reference_config, spec, reference)
    spec = dict(spec, **{"model.fusion_features": features})
    params = shared_parameter_count(minerf_config(variant, **overrides, **spec))
    results = []
    for seed in range(seeds):
      trainer = Trainer(minerf_config(variant, **overrides, **spec, seed=seed))
      trainer.train(steps)
      results.append(trainer.evaluate(("heldout", "transfer", "novel_view")))
    rows[name] = {"fusion_features": features, "shared_params": params,
                  **{k: mean_std([r[k] for r in results]) for k in keys if k in results[0]},
                  "per_seed": results}
    print(f"{name:21s} features={features:3d} params={params}  " + "  ".join(
        f"{k}={_fmt([r[k] for r in results], 3 if 'leakage' in k else 2)}"
        for k in keys if k in results[0]), flush=True)
  return {"variants": rows, "steps": steps, "seeds": seeds, "reference_params": reference}


# --------------------------------------------------------------------------- minerf_personalise


def suite_personalise(variant: str = "demo", base_steps: int = 600, steps: int = 200,
                      frame_counts: Sequence[int] = (1, 5, 20, 0),
                      modes: Sequence[str] = ("frozen", "finetune", "scratch"),
                      base_identities: int = 4, eval_every: int = 10, target: float = 0.95,
                      probe_frames: int = 3, overrides: dict | None = None) -> dict:
  """A new identity (index ``base_identities``) from 1, 5, 20 or all (0) of its frames:
  frozen base (identity tables only), full fine-tune, or a fresh model, all ``steps`` steps.

  The target is ``target`` x (in dB) the held-out head PSNR of the fresh model trained on all
  the new identity's frames; each run reports the steps and seconds to reach it and its final
  held-out head and full-frame PSNR.
  """
  # As ``--config.init_from`` does: the base knows identities 0..B-1; personalising adds row B
  # (started at the mean code) and the dataset grows to B+1 identities.
  overrides = dict(overrides or {}, **{"data.num_identities": base_identities})
  base_config = minerf_config(variant, **overrides, total_steps=base_steps)
  base_trainer, _ = train_curve(base_config, base_steps, probe_frames,
                                label=f"base model on identities 0..{base_identities - 1}")
  base_params = jax.device_get(base_trainer.params)
  new = {"personalise.identity": base_identities, "total_steps": steps}
  runs = {}
  for frames in frame_counts:
    for mode in modes:
      spec = dict(overrides, **new, **{"personalise.num_frames": frames,
                                       "personalise.freeze_shared": mode == "frozen"})
      label = f"{mode} {frames or 'all'} frames"
      trainer, curve = train_curve(minerf_config(variant, **spec), eval_every, probe_frames,
                                   pretrained=None if mode == "scratch" else base_params,
                                   label=label)
      final = trainer.evaluate(("heldout",))
      runs[(frames, mode)] = (curve, final)
  reference = runs.get((0, "scratch")) or runs[(frame_counts[-1], modes[-1])]
  goal = target * reference[0].converged(base_identities)
  table = {}
  print(f"target: {goal:.2f} dB head PSNR ({100 * target:.0f}% of the from-scratch, "
        f"all-frames model's {reference[0].converged(base_identities):.2f} dB)")
  for (frames, mode), (curve, final) in runs.items():
    seconds = curve.time_to({base_identities: goal})
    if np.isfinite(seconds):
      k = int(np.searchsorted(curve.seconds, seconds))
      steps_to = curve.steps[min(k, len(curve.steps) - 1)]
    else:
      steps_to = None
    row = {"steps_to_target": steps_to, "seconds_to_target": seconds,
           "final_head_psnr": final["heldout/face_psnr"], "final_psnr": final["heldout/psnr"],
           "curve": curve.to_json()}
    table[f"{frames or 'all'} frames / {mode}"] = row
    reached = (f"{steps_to} steps, {seconds:.1f}s" if steps_to is not None
               else "not reached")
    print(f"{str(frames or 'all'):>4s} frames  {mode:8s}  to target: {reached:22s}  "
          f"final head PSNR {row['final_head_psnr']:.2f} dB, PSNR {row['final_psnr']:.2f} dB",
          flush=True)
  return {"target_psnr": goal, "steps": steps, "base_steps": base_steps, "runs": table}

r"""Head3D beside TPSMM, MCNet and MRFA at one budget (``--suite=head3d_compare``).

  python -m launch.benchmark --suite=head3d_compare --variant=synthetic --horizon=250 \
      --out_dir=runs/bench/h3d --out=runs/bench/h3d.json
  python -m launch.benchmark --suite=head3d_compare --variant=cpu ...      # real clips

Every model trains ``configs/<model>.py:<variant>`` for the same ``--horizon`` steps at the same
batch size on the same frames (``--config_overrides`` applies to all; runs in
``--out_dir/<model>`` are resumed or reused), then ``model.evaluate`` on the held-out split gives
the protocols of ``animation.protocol_metrics``: on ``synthetic`` the exact-truth cross-identity
pairs per yaw-difference bucket and the novel views (``data/pairs.py``), on real clips the
reconstruction and the cross-identity AKD / ARD. Prints markdown tables; the figures per model
(and its training seconds) go to ``--out``.
"""
from __future__ import annotations

import importlib
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from launch import runs
from minerf_jax import camera
from minerf_jax.data import pairs
from minerf_jax.head3d import geometry as geometry_lib
from minerf_jax.models import head3d

MODELS = ("tpsmm", "mcnet", "mrfa", "head3d")
# Also accepted by --models: our MCNet and MRFA on TPSMM (configs/<m>.py:tpsmm_<variant>), the
# 'mcnet' / 'mrfa' rows of the README's tables made before the published models became the
# configs' defaults.
KNOWN = MODELS + ("mcnet_tpsmm", "mrfa_tpsmm")


def model_config(name: str, variant: str) -> ml_collections.ConfigDict:
  """``configs/<name>.py:<variant>``; ``<m>_tpsmm``: ``configs/<m>.py:tpsmm_<variant>``."""
  if name.endswith("_tpsmm"):
    return importlib.import_module(f"configs.{name[:-len('_tpsmm')]}").get_config(
        f"tpsmm_{variant}" if variant else "tpsmm")
  return importlib.import_module(f"configs.{name}").get_config(variant)
_IMAGE = ("psnr", "ssim", "lpips", "akd")


def _fmt(value) -> str:
  return "-" if value is None or value != value else f"{value:.3g}" if abs(value) < 1 else (
      f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}")


def _table(title: str, rows: dict[str, dict], columns: list[tuple[str, str]]) -> str:
  present = [(h, k) for h, k in columns if any(k in r for r in rows.values())]
  if not present:
    return ""
  lines = [f"**{title}**", "", "| model | " + " | ".join(h for h, _ in present) + " |",
           "|---|" + "---|" * len(present)]
  for name, r in rows.items():
    lines.append(f"| {name} | " + " | ".join(_fmt(r.get(k)) for _, k in present) + " |")
  return "\n".join(lines)


def tables(results: dict[str, dict]) -> str:
  """Markdown tables of ``{model: figures}`` (``suite``'s ``results``)."""
  groups = ("all",) + pairs.bucket_names()
  yaws = [f"yaw{y:+g}" for y in pairs.NOVEL_YAWS]
  out = [_table("reconstruction (held-out clips from their first frame / subject frames)",
                results, [(m, f"recon/{m}") for m in ("l1", "psnr", "ssim", "lpips", "akd",
                                                      "ard")] +
                [("no face", "recon/akd_missing"), ("cross AKD", "cross/akd"),
                 ("cross ARD", "cross/ard"), ("cross no face", "cross/akd_missing"),
                 ("cross rel AKD", "cross_relative/akd"), ("cross rel ARD", "cross_relative/ard"),
                 ("train s", "train_seconds")])]
  for metric in _IMAGE:
    out.append(_table(f"cross-identity against the generator's truth: {metric}", results,
                      [(g, f"cross_truth/{g}/{metric}") for g in groups]))
  rows = {**results, **{f"{n} (view input)": {k.replace("novel_view/", "novel/"): v
                                               for k, v in r.items()}
                        for n, r in results.items() if any("novel_view/" in k for k in r)}}
  for metric in ("psnr", "lpips"):
    out.append(_table(f"novel views against the generator's truth: {metric}", rows,
                      [(y, f"novel/{y}/{metric}") for y in yaws]))
  geo = {n: r for n, r in results.items() if any(k.startswith("geometry/") for k in r)}
  if geo:
    out.append(_table("geometry against the generator's truth", geo,
                      [("depth abs-rel", "geometry/depth_abs_rel"),
                       ("scaled abs-rel", "geometry/depth_abs_rel_scaled"),
                       ("pose error deg", "geometry/pose_error_deg")]))
  return "\n\n".join(t for t in out if t)


def suite(out_dir: str, variant: str = "synthetic", steps: int = 250,
          models_: tuple[str, ...] = MODELS, overrides: dict | None = None) -> dict:
  """Trains (or reuses) each model's run and evaluates it; prints the tables."""
  results = {}
  for name in models_:
    config = runs.with_overrides(model_config(name, variant),
                                 {"total_steps": steps, **(overrides or {})})
    workdir = os.path.join(out_dir, name)
    seconds = runs.train_timed(config, workdir)
    record = os.path.join(workdir, "bench_eval.json")
    if os.path.exists(record):
      with open(record) as f:
        figures = json.load(f)
    else:
      figures = runs.evaluate(workdir)
      with open(record, "w") as f:
        json.dump(figures, f, indent=2, sort_keys=True)
    results[name] = {**figures, "train_seconds": seconds, "steps": steps}
    print(f"{name}: trained {steps} steps in {seconds:.0f} s", flush=True)
  print(tables(results), flush=True)
  return results


def _pose_errors(rotations: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
  """(mean angle of rotations against truth, mean angle of the identity against truth), deg."""
  return (float(np.mean(camera.rotation_angle_degrees(rotations, truth))),
          float(np.mean(camera.rotation_angle_degrees(np.eye(3)[None], truth))))


def oracle_pose_fit(frames: pairs.Frames, gap: int, true_depth: bool, pairs_: int = 64,
                    steps: int = 300, lr: float = 3e-3) -> tuple[float, float]:
  """The photometric signal itself: each (frame t, frame t - gap) pair's rotation about the head
  centre (plus a free translation) fitted by Adam to the auto-masked reprojection loss, from the
  identity, with the generator's depth (or a constant one at its median). Returns (error,
  identity's error) in degrees against the generator's relative rotation."""
  ok = np.array([i for i in range(gap, len(frames)) if frames.clip[i - gap] == frames.clip[i]])
  t = ok[np.linspace(0, len(ok) - 1, min(pairs_, len(ok))).astype(int)]
  s = t - gap
  truth = camera.relative((frames.rotation[t], frames.translation[t]),
                          (frames.rotation[s], frames.translation[s]))[0]
  image = lambda i: jnp.asarray(frames.rgb[i], jnp.float32) / 255.0
  target, source = image(t), image(s)
  depth = jnp.asarray(frames.depth[t])
  if not true_depth:
    depth = jnp.full_like(depth, float(np.median(frames.depth[frames.face > 127])))
  centre = jnp.mean(jnp.asarray(frames.translation), 0)

  def objective(v):
    rot = camera.axis_angle_matrix(v[:, :3])
    trans = centre - jnp.einsum("bij,j->bi", rot, centre) + v[:, 3:]
    warped, valid = geometry_lib.inverse_warp(source, depth, frames.intrinsics[t], (rot, trans),
                                              frames.intrinsics[s])
    return geometry_lib.reprojection_loss(target, [source], [warped], [valid])[0]

  tx = optax.adam(lr)
  v = jnp.zeros((len(t), 6))
  opt = tx.init(v)
  grad = jax.jit(jax.grad(objective))
  for _ in range(steps):
    updates, opt = tx.update(grad(v), opt)
    v = optax.apply_updates(v, updates)
  return _pose_errors(np.asarray(camera.axis_angle_matrix(v[:, :3])), truth)


def fit_pose_net(config, data: pairs.SubjectData, steps: int, supervision: float,
                 lr: float = 1e-3):
  """The geometry module alone (``config.model.geometry`` with ``pose_supervision=supervision``)
  trained ``steps`` steps by ``geometry.loss`` on Head3D's training batches, the driving frame as
  target and the subject frames as sources. Returns (the module, its parameters)."""
  gc = ml_collections.ConfigDict(config.model.geometry.to_dict())
  gc.pose_supervision = supervision
  net = geometry_lib.Geometry(gc)
  batch = data.train_batch(0)
  k = batch["subject"].shape[1]
  params = net.init(jax.random.key(0), batch["driving"], batch["subject"][:, 0])
  tx = optax.adam(lr)
  opt = tx.init(params)

  def objective(p, b):
    return geometry_lib.loss(net, p, b["driving"], [b["subject"][:, i] for i in range(k)],
                             b["driving_intrinsics"],
                             [b["subject_intrinsics"][:, i] for i in range(k)],
                             teacher=head3d.data_relative_poses(b))[0]

  @jax.jit
  def step(p, o, b):
    updates, o = tx.update(jax.grad(objective)(p, b), o, p)
    return optax.apply_updates(p, updates), o

  fields = ("driving", "subject", "driving_intrinsics", "subject_intrinsics", "driving_rotation",
            "driving_translation", "subject_rotation", "subject_translation")
  for i in range(steps):
    b = data.train_batch(i)
    params, opt = step(params, opt, {f: jnp.asarray(b[f]) for f in fields})
  return net, params


def train_pose_net(config, data: pairs.SubjectData, steps: int, supervision: float,
                   probe_batches: int = 8) -> tuple[float, float]:
  """``fit_pose_net``, then (error, identity's error) in degrees of its relative rotation
  driving -> first subject frame against the data's, on ``probe_batches`` later batches."""
  net, params = fit_pose_net(config, data, steps, supervision)
  rel = jax.jit(lambda p, t, s: net.apply(p, t, s, method=geometry_lib.Geometry.relative_pose)[0])
  pred, truth = [], []
  for i in range(probe_batches):
    b = data.train_batch(steps + 1000 + i)
    pred.append(np.asarray(rel(params, b["driving"], b["subject"][:, 0])))
    truth.append(head3d.data_relative_poses(b)[0][0])
  return _pose_errors(np.concatenate(pred), np.concatenate(truth))


def pose_signal(variant: str = "synthetic", steps: int = 300) -> dict:
  """``--suite=head3d_pose_signal``: how much head rotation the photometric loss can tell, on the
  generator's heads (``configs/head3d.py:<variant>``): the per-pair oracle fit of
  ``oracle_pose_fit`` at frame gaps 2 and 8, with the true and a constant depth; and the pose net
  trained ``steps`` steps by the geometry loss alone, without and with ``pose_supervision`` (and
  with monodepth2's ``rotation_scale`` of 0.01)."""
  config = importlib.import_module("configs.head3d").get_config(variant)
  data = pairs.SubjectData(config)
  frames = data.train_frames
  results = {}
  print("| what | rotation error deg | identity's error deg |\n|---|---|---|")
  for gap in (2, 8):
    for true_depth in (True, False):
      name = f"oracle fit, gap {gap}, {'true' if true_depth else 'constant'} depth"
      results[name] = oracle_pose_fit(frames, gap, true_depth)
      print(f"| {name} | {results[name][0]:.2f} | {results[name][1]:.2f} |", flush=True)
  default = float(config.model.geometry.rotation_scale)
  for weight, scale in ((0.0, default), (1.0, default), (1.0, 0.01)):
    config.model.geometry.rotation_scale = scale
    name = f"pose net, {steps} steps, pose_supervision={weight:g}, rotation_scale={scale:g}"
    results[name] = train_pose_net(config, data, steps, weight)
    print(f"| {name} | {results[name][0]:.2f} | {results[name][1]:.2f} |", flush=True)
  return results

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

from launch import runs
from minerf_jax.data import pairs

MODELS = ("tpsmm", "mcnet", "mrfa", "head3d")
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
                [("cross AKD", "cross/akd"), ("cross ARD", "cross/ard"),
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
    config = importlib.import_module(f"configs.{name}").get_config(variant)
    config = runs.with_overrides(config, {"total_steps": steps, **(overrides or {})})
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

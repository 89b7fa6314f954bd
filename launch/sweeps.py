"""Sweeps run by ``python -m launch.sweep`` (see its docstring): the points of a config's
``get_sweep``, running them as ``launch.train`` runs, and collecting their final metrics.
Defines no flags (tests and notebooks import it).
"""
from __future__ import annotations

import csv
import importlib.util
import json
import math
import os
import signal
import subprocess
import sys
import time

from configs import hyper
from launch import cli
from minerf_jax.train import logging as train_logging

DEFINITION, POINT_STATUS, LOG = "sweep.json", "sweep_point.json", "train.log"


# ----------------------------------------------------------------------------------------------
# The definition.


def config_argument(argv: list[str]) -> str:
  """The ``--config=FILE[:variant]`` value as given on the command line."""
  for i, arg in enumerate(argv):
    if arg.startswith("--config="):
      return arg.split("=", 1)[1]
    if arg == "--config" and i + 1 < len(argv):
      return argv[i + 1]
  raise cli.UserError("--config=FILE[:variant] is required to run a sweep")


def override_arguments(argv: list[str]) -> list[str]:
  """The ``--config.<field>=<value>`` arguments of the command line (applied to every point)."""
  return [a for a in argv if a.startswith("--config.")]


def load_points(config_arg: str, name: str, config) -> list[dict]:
  """``get_sweep(name, config)`` of the config module named by ``config_arg``."""
  path = config_arg.split(":", 1)[0]
  spec = importlib.util.spec_from_file_location("_swept_config", path)
  if spec is None or not os.path.exists(path):
    raise cli.UserError(f"--config={config_arg}: no such file")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  get_sweep = getattr(module, "get_sweep", None)
  if get_sweep is None:
    raise cli.UserError(f"--config={config_arg}: {path} defines no get_sweep(name, config); "
                        "see configs/hyper.py")
  points = list(get_sweep(name, config))
  if not points:
    raise cli.UserError(f"--sweep={name}: {path}'s get_sweep returned no points")
  names = [p.get("_name") or f"point-{i}" for i, p in enumerate(points)]
  if len(set(names)) != len(names):
    raise cli.UserError(f"--sweep={name}: two points share a name; give them distinct values")
  return [dict(p, _name=n, _group=p.get("_group", n)) for p, n in zip(points, names)]


def format_value(value) -> str:
  """A config value as ``config_flags`` parses it on the command line."""
  if isinstance(value, (tuple, list)):
    return "(" + ",".join(format_value(v) for v in value) + ("," if len(value) == 1 else "") + ")"
  return str(value)


def command(config_arg: str, workdir: str, base: list[str], point: dict) -> list[str]:
  return ([sys.executable, "-m", "launch.train", f"--config={config_arg}",
           f"--workdir={workdir}"] + base
          + [f"--config.{k}={format_value(v)}" for k, v in hyper.overrides(point).items()])


def _write_json(path: str, value) -> None:
  with open(path + ".tmp", "w") as f:
    json.dump(value, f, indent=2, sort_keys=True, default=str)
  os.replace(path + ".tmp", path)


def _read_json(path: str):
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def write_definition(root: str, definition: dict) -> None:
  """Writes ``ROOT/sweep.json``; a root that holds another sweep is a one-line error."""
  path = os.path.join(root, DEFINITION)
  held = _read_json(path)
  if held is not None:
    for key in ("config", "sweep", "base_overrides"):
      if held.get(key) != definition[key]:
        raise cli.UserError(f"--root={root} holds the sweep {held.get('sweep')!r} of "
                            f"{held.get('config')} with overrides {held.get('base_overrides')}; "
                            "use another --root for another sweep")
  os.makedirs(root, exist_ok=True)
  _write_json(path, definition)


# ----------------------------------------------------------------------------------------------
# Running.


def finished(workdir: str) -> bool:
  """Whether the run in ``workdir`` has a checkpoint at its ``total_steps``."""
  config = _read_json(os.path.join(workdir, "config.json"))
  ckpts = os.path.join(workdir, "checkpoints")
  if config is None or not os.path.isdir(ckpts):
    return False
  steps = [int(d) for d in os.listdir(ckpts) if d.isdigit()]
  return bool(steps) and max(steps) >= int(config["total_steps"])


def _die_with_parent():  # runs in the child before exec
  try:
    import ctypes  # pylint: disable=g-import-not-at-top
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
  except (OSError, AttributeError):
    pass  # not Linux: a killed sweep leaves its points running to their end


def _last_line(path: str) -> str:
  try:
    with open(path, errors="replace") as f:
      lines = [line.strip() for line in f if line.strip()]
  except OSError:
    return ""
  errors = [line for line in lines if line.startswith("error:")]
  return (errors or lines or [""])[-1][:300]


class Sweep:
  """Runs the points not yet finished, ``parallel`` at a time (see module docstring)."""

  def __init__(self, root: str, config_arg: str, base: list[str], points: list[dict],
               parallel: int):
    self.root, self.config_arg, self.base = root, config_arg, base
    self.points, self.parallel = points, max(int(parallel), 1)
    self.running: dict[str, tuple[subprocess.Popen, float, dict]] = {}
    self.durations: list[float] = []
    self.counts = {"done": 0, "failed": 0, "skipped": 0}

  def workdir(self, point: dict) -> str:
    return os.path.join(self.root, point["_name"])

  def _start(self, point: dict, index: int) -> None:
    workdir = self.workdir(point)
    os.makedirs(workdir, exist_ok=True)
    status = _read_json(os.path.join(workdir, POINT_STATUS)) or {}
    again = {"failed": "retrying (it failed before)"}.get(status.get("status"), "")
    if os.path.isdir(os.path.join(workdir, "checkpoints")) and not again:
      again = "resuming"
    log = open(os.path.join(workdir, LOG), "a")  # pylint: disable=consider-using-with
    log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} sweep point {point['_name']}\n")
    log.flush()
    proc = subprocess.Popen(command(self.config_arg, workdir, self.base, point), stdout=log,
                            stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
    log.close()
    self.running[point["_name"]] = (proc, time.time(), point)
    print(f"[{index}/{len(self.points)}] {point['_name']}: started"
          + (f" ({again})" if again else ""), flush=True)

  def _finish(self, name: str) -> None:
    proc, start, point = self.running.pop(name)
    seconds = time.time() - start
    workdir = self.workdir(point)
    ok = proc.returncode == 0 and finished(workdir)
    status = {"status": "done" if ok else "failed", "returncode": proc.returncode,
              "seconds": round(seconds, 1), "overrides": hyper.overrides(point)}
    if not ok:
      status["error"] = _last_line(os.path.join(workdir, LOG))
    _write_json(os.path.join(workdir, POINT_STATUS), status)
    self.counts[status["status"]] += 1
    if ok:
      self.durations.append(seconds)
      print(f"  {name}: done in {seconds:.0f} s{self._eta()}", flush=True)
    else:
      print(f"  {name}: FAILED (exit {proc.returncode}): {status['error']} "
            f"(log: {os.path.join(workdir, LOG)})", flush=True)

  def _eta(self) -> str:
    left = len(self.points) - sum(self.counts.values())
    if not self.durations or left <= 0:
      return ""
    mean = sum(self.durations) / len(self.durations)
    return f"; {left} left, ETA {mean * math.ceil(left / self.parallel) / 60:.1f} min"

  def run(self) -> dict[str, int]:
    queue = []
    for i, point in enumerate(self.points, 1):
      if finished(self.workdir(point)):
        path = os.path.join(self.workdir(point), POINT_STATUS)
        if (_read_json(path) or {}).get("status") != "done":  # the sweep died as it finished
          _write_json(path, {"status": "done", "overrides": hyper.overrides(point)})
        self.counts["skipped"] += 1
        print(f"[{i}/{len(self.points)}] {point['_name']}: finished before, skipped", flush=True)
      else:
        queue.append((i, point))
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
      while queue or self.running:
        while queue and len(self.running) < self.parallel:
          self._start(queue[0][1], queue[0][0])
          queue.pop(0)
        for name, (proc, _, _) in list(self.running.items()):
          if proc.poll() is not None:
            self._finish(name)
        time.sleep(0.2)
    except KeyboardInterrupt:
      self.stop()
      raise cli.UserError("sweep interrupted: its running points saved checkpoints; re-run the "
                          "same command to finish it") from None
    finally:
      signal.signal(signal.SIGTERM, previous)
    return self.counts

  def stop(self) -> None:
    """SIGTERM to every running point (each saves a checkpoint), then wait for them."""
    for proc, _, _ in self.running.values():
      if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    for proc, _, _ in self.running.values():
      proc.wait()


def _raise_interrupt(signum, frame):
  del signum, frame
  raise KeyboardInterrupt


# ----------------------------------------------------------------------------------------------
# Collecting.


def final_metrics(workdir: str) -> tuple[dict[str, float], dict[str, list]]:
  """(the last evaluation's metrics, {metric: [(step, value), ...]} of every record) of a run."""
  records = train_logging.read_metrics(workdir)
  evals = [r for r in records if r.get("split") == "eval"]
  final = {}
  if evals:
    last = max(r["step"] for r in evals)
    for r in evals:
      if r["step"] == last:
        final.update({k: v for k, v in r.items() if k not in ("split", "step")
                      and isinstance(v, (int, float))})
  curves: dict[str, list] = {}
  for r in records:
    for k, v in r.items():
      if k not in ("split", "step") and isinstance(v, (int, float)):
        curves.setdefault(f"{r['split']}/{k}", []).append((int(r["step"]), float(v)))
  return final, curves


def _mean_std(values: list[float]) -> tuple[float, float]:
  n = len(values)
  mean = sum(values) / n
  std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
  return mean, std


def collect(root: str, metrics: list[str] | None = None) -> dict:
  """Summary of a sweep's final metrics (see module docstring); writes the JSON, CSV and PNG."""
  definition = _read_json(os.path.join(root, DEFINITION))
  if definition is None:
    raise cli.UserError(f"--root={root} holds no sweep ({DEFINITION} missing): run the sweep "
                        "first")
  groups: dict[str, dict] = {}
  rows = []
  for point in definition["points"]:
    workdir = os.path.join(root, point["_name"])
    status = (_read_json(os.path.join(workdir, POINT_STATUS)) or {}).get("status", "not run")
    final, curves = final_metrics(workdir) if status == "done" else ({}, {})
    rows.append({"point": point["_name"], "group": point["_group"], "status": status,
                 **hyper.overrides(point), **final})
    g = groups.setdefault(point["_group"], {"points": [], "finals": [], "curves": []})
    g["points"].append(point["_name"])
    if status == "done":
      g["finals"].append(final)
      g["curves"].append(curves)
  names = list(metrics or sorted({k for g in groups.values() for f in g["finals"] for k in f}))
  summary = {"root": root, "config": definition["config"], "sweep": definition["sweep"],
             "metrics": names, "groups": {}}
  for group, g in groups.items():
    entry = {"points": g["points"], "done": len(g["finals"]), "metrics": {}}
    for name in names:
      values = [f[name] for f in g["finals"] if name in f and math.isfinite(f[name])]
      if values:
        mean, std = _mean_std(values)
        entry["metrics"][name] = {"mean": mean, "std": std, "n": len(values), "values": values}
    summary["groups"][group] = entry
  _write_json(os.path.join(root, "collect.json"), summary)
  fields = list(dict.fromkeys(k for r in rows for k in r))
  with open(os.path.join(root, "collect.csv"), "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
  summary["png"] = plot_curves(os.path.join(root, "curves.png"), groups, names[:2])
  return summary


def markdown_table(summary: dict) -> str:
  """One row per metric, one column per group: ``mean +- std (n)``."""
  groups = list(summary["groups"])
  head = "| metric | " + " | ".join(groups) + " |"
  lines = [head, "|" + "---|" * (len(groups) + 1)]
  for name in summary["metrics"]:
    cells = []
    for group in groups:
      m = summary["groups"][group]["metrics"].get(name)
      cells.append("-" if m is None else f"{m['mean']:.4g} +- {m['std']:.2g} ({m['n']})")
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  done = " | ".join(f"{summary['groups'][g]['done']}/{len(summary['groups'][g]['points'])}"
                    for g in groups)
  lines.append(f"| points done | {done} |")
  return "\n".join(lines)


def plot_curves(path: str, groups: dict[str, dict], metrics: list[str]) -> str:
  """Train loss and ``metrics`` (eval) against the step, per group: mean over seeds +- std."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  panels = ["train/loss"] + [f"eval/{m}" for m in metrics]
  fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
  for ax, panel in zip(axes[0], panels):
    for group, g in groups.items():
      per_seed = [dict(c.get(panel, [])) for c in g["curves"]]
      steps = sorted(set.intersection(*(set(s) for s in per_seed))) if per_seed else []
      if not steps:
        continue
      values = np.array([[s[t] for t in steps] for s in per_seed])
      mean, std = values.mean(0), values.std(0)
      label = f"{group} ({len(per_seed)})"
      if len(steps) < 6:  # a few evaluations: points with +-std bars
        ax.errorbar(steps, mean, yerr=std, label=label, marker="o", capsize=4)
      else:
        ax.plot(steps, mean, label=label)
        ax.fill_between(steps, mean - std, mean + std, alpha=0.2)
    ax.set_title(panel)
    ax.set_xlabel("step")
    if panel == "train/loss":
      ax.set_yscale("log")
    ax.grid(alpha=0.3)
  axes[0][0].legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path

r"""Runs a sweep a config module defines (``get_sweep``), one training run per point.

  python -m launch.sweep --config=configs/minerf.py:demo --sweep=fusion --root=runs/fusion
  python -m launch.sweep --config=configs/minerf.py:demo --sweep=fusion --root=runs/fusion \
      --config.total_steps=200 --parallel=2           # overrides apply to every point
  python -m launch.sweep --config=configs/minerf.py:demo --sweep=fusion --root=runs/fusion \
      --dry_run                                       # print the points' commands
  python -m launch.sweep --root=runs/fusion --collect [--metrics=heldout/psnr,transfer/psnr]

Each point is ``python -m launch.train`` in ``ROOT/<point name>`` (``fusion-concat_seed-1``; see
``configs/hyper.py``) with the point's overrides after the command line's, its output in
``ROOT/<name>/train.log``. Re-running the same command skips finished points (a point is finished
when its run exited cleanly with a checkpoint at ``total_steps``), resumes interrupted ones from
their checkpoints (``launch.train`` does) and retries failed ones. A failed point is recorded
(``ROOT/<name>/sweep_point.json``: exit status and the last line of its log) and the sweep goes
on. If the sweep process dies, even by ``kill -9``, its running points receive SIGTERM (Linux:
``PR_SET_PDEATHSIG``) and save a checkpoint. ``ROOT/sweep.json`` holds the definition.

``--collect`` reads every point's final evaluation (``metrics.jsonl``), prints a markdown table
with one row per metric and one column per group of points that differ only in their seeds
(mean +- sample std over the seeds, ``n`` of them), and writes ``ROOT/collect.json`` (per group
and metric: mean, std, n, values), ``ROOT/collect.csv`` (one row per point) and
``ROOT/curves.png`` (train loss and the first ``--metrics`` against the step, mean over seeds with
a +-std band). The machinery is ``launch/sweeps.py`` (no flags).
"""
from __future__ import annotations

import os
import sys

from absl import flags
from ml_collections import config_flags

from launch import cli
from launch import sweeps

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file[:variant] to sweep.",
                                          lock_config=True)
_SWEEP = flags.DEFINE_string("sweep", None, "Name of a sweep of the config's get_sweep.")
_ROOT = flags.DEFINE_string("root", None, "Directory of the sweep's runs.", required=True)
_PARALLEL = flags.DEFINE_integer("parallel", 1, "Points trained at once.")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Print each point's command; run nothing.")
_COLLECT = flags.DEFINE_bool("collect", False, "Tabulate the points' final metrics.")
_METRICS = flags.DEFINE_list("metrics", [], "--collect: metrics of the table and the PNG "
                             "(default: every final evaluation metric; the PNG its first two).")


# ----------------------------------------------------------------------------------------------


def main(argv):
  if len(argv) > 1:
    raise cli.UserError(f"unexpected arguments: {' '.join(argv[1:])}")
  root = os.path.abspath(_ROOT.value)
  if _COLLECT.value:
    summary = sweeps.collect(root, _METRICS.value)
    print(sweeps.markdown_table(summary))
    print(f"wrote {os.path.join(root, 'collect.json')}, {os.path.join(root, 'collect.csv')}, "
          f"{summary['png']}")
    return
  if not _SWEEP.value:
    raise cli.UserError("--sweep=NAME is required (or --collect)")
  config = _CONFIG.value
  config_arg = sweeps.config_argument(sys.argv)
  cli.check_config(config)
  points = sweeps.load_points(config_arg, _SWEEP.value, config)
  base = sweeps.override_arguments(sys.argv)
  if _DRY_RUN.value:
    for point in points:
      print(" ".join(sweeps.command(config_arg, os.path.join(root, point["_name"]), base, point)))
    return
  sweeps.write_definition(root, {"config": config_arg, "sweep": _SWEEP.value,
                                 "base_overrides": base, "points": points})
  print(f"sweep {_SWEEP.value} of {config_arg}: {len(points)} points in {root}, "
        f"{_PARALLEL.value} at a time", flush=True)
  counts = sweeps.Sweep(root, config_arg, base, points, _PARALLEL.value).run()
  print(f"sweep {_SWEEP.value}: {counts['done']} trained, {counts['skipped']} finished before, "
        f"{counts['failed']} failed; python -m launch.sweep --root={_ROOT.value} --collect",
        flush=True)
  if counts["failed"]:
    raise cli.UserError(f"{counts['failed']} point(s) failed (see above); re-run to retry them")


if __name__ == "__main__":
  cli.run(main)

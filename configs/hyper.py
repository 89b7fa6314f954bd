"""Sweep helpers for ``get_sweep`` in config modules (run by ``python -m launch.sweep``).

A sweep is a list of points, each a dict of dotted config overrides::

  def get_sweep(name, config=None):
    sweeps = {"fusion": hyper.product(hyper.sweep("model.fusion", ("hadamard", "concat")),
                                      hyper.seeds(3))}
    return hyper.choose(sweeps, name, "configs/minerf.py")

``config`` is the config being swept (after its variant and command-line overrides), for sweeps
whose values depend on it. Seeds are an ordinary field (``seed``), made by ``seeds``.

Keys starting with ``_`` are the point's metadata, never overrides: ``_name`` (the run directory's
name: ``fusion-concat_seed-1``, built from the axes' names) and ``_group`` (the same without the
seed axes: the runs ``launch.sweep --collect`` averages over).
"""
from __future__ import annotations

import itertools
import re
from typing import Any, Iterable, Mapping, Sequence

Point = dict[str, Any]


def _slug(value: Any) -> str:
  text = ",".join(map(str, value)) if isinstance(value, (tuple, list)) else str(value)
  return re.sub(r"[^A-Za-z0-9.,+=-]+", "-", text).strip("-") or "x"


def _point(overrides: Mapping[str, Any], name: str, is_seed: bool = False) -> Point:
  return {**overrides, "_name": name, "_group": "" if is_seed else name}


def sweep(field: str, values: Iterable[Any]) -> list[Point]:
  """One axis: ``{field: v}`` for each value, named ``<last part of field>-<v>``."""
  leaf = field.split(".")[-1]
  return [_point({field: v}, f"{leaf}-{_slug(v)}") for v in values]


def seeds(n: int, field: str = "seed") -> list[Point]:
  """``n`` seeds 0..n-1 of ``field`` (averaged over by ``--collect``)."""
  leaf = field.split(".")[-1]
  return [_point({field: s}, f"{leaf}-{s}", is_seed=True) for s in range(int(n))]


def variants(named: Mapping[str, Mapping[str, Any]]) -> list[Point]:
  """One axis of named override sets: ``{'pure': {'model.a': 1, 'model.b': 2}, ...}``."""
  return [_point(dict(overrides), _slug(name)) for name, overrides in named.items()]


def _merge(points: Sequence[Point]) -> Point:
  out: Point = {}
  for point in points:
    clash = {k for k in point if not k.startswith("_")} & set(out)
    if clash:
      raise ValueError(f"sweep axes both set {sorted(clash)}")
    out.update({k: v for k, v in point.items() if not k.startswith("_")})
  out["_name"] = "_".join(p["_name"] for p in points if p.get("_name"))
  out["_group"] = "_".join(p["_group"] for p in points if p.get("_group"))
  return out


def product(*axes: Sequence[Point]) -> list[Point]:
  """Every combination of one point from each axis (the last axis varies fastest)."""
  return [_merge(combo) for combo in itertools.product(*axes)]


def zipped(*axes: Sequence[Point]) -> list[Point]:
  """The i-th points of all axes merged; the axes must be equally long."""
  lengths = {len(a) for a in axes}
  if len(lengths) > 1:
    raise ValueError(f"zipped axes have different lengths {sorted(lengths)}")
  return [_merge(combo) for combo in zip(*axes)]


def chain(*axes: Sequence[Point]) -> list[Point]:
  """The points of each axis one after another (e.g. a baseline, then variations)."""
  return [dict(p) for axis in axes for p in axis]


def overrides(point: Point) -> dict[str, Any]:
  """The config overrides of a point (its metadata removed)."""
  return {k: v for k, v in point.items() if not k.startswith("_")}


def choose(sweeps: Mapping[str, Sequence[Point]], name: str, module: str) -> list[Point]:
  """``sweeps[name]``, or a one-line error listing the sweeps ``module`` defines."""
  if name not in sweeps:
    raise ValueError(f"{module}: unknown sweep {name!r}; use one of {sorted(sweeps)}")
  return list(sweeps[name])

"""Golden fixtures of ``tools/make_goldens.py`` (``tests/data/golden_<model>.npz``): loading and
comparing with the reference's numbers."""
from __future__ import annotations

import json
import os

import numpy as np

DATA = os.path.join(os.path.dirname(__file__), "data")
TOL = 1e-4


def load_golden(name: str):
  with np.load(os.path.join(DATA, f"golden_{name}.npz")) as z:
    arrays = {k: z[k] for k in z.files}
  meta = json.loads(str(arrays.pop("meta")))
  state_dicts: dict[str, dict[str, np.ndarray]] = {}
  for k in [k for k in arrays if k.startswith("sd/")]:
    _, entry, tensor = k.split("/", 2)
    state_dicts.setdefault(entry, {})[tensor] = arrays.pop(k)
  return meta, state_dicts, arrays


def nhwc(x: np.ndarray) -> np.ndarray:
  return np.moveaxis(x, -3, -1)


def maps(arrays: dict, prefix: str) -> list[np.ndarray]:
  n = len([k for k in arrays if k.startswith(prefix + "/")])
  return [arrays[f"{prefix}/{i}"] for i in range(n)]


def close(ours, theirs, what: str):
  ours, theirs = np.asarray(ours), np.asarray(theirs)
  assert ours.shape == theirs.shape, f"{what}: shape {ours.shape} vs reference {theirs.shape}"
  err = float(np.max(np.abs(ours - theirs)))
  assert err <= TOL, f"{what}: max |ours - reference| = {err:.2e} > {TOL}"

"""Multi-host data parallelism, proven on one machine: two processes joined by ``jax.distributed``
on localhost (CPU, 4 devices each; ``tests/_multihost.py``) train the toy model as one 8-device
job, and this 1-process 8-device job checks the update, the batch shares and the checkpoint."""
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

import _multihost
import _toy
from minerf_jax.train import checkpoint
from minerf_jax.train import loop

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _flat(tree) -> dict[str, np.ndarray]:
  local = jax.tree.map(np.asarray, jax.device_get(tree))
  return {jax.tree_util.keystr(p, simple=True, separator="/"): v
          for p, v in jax.tree_util.tree_flatten_with_path(local)[0]}


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
  """(workdir, out_dir) of the finished 2-process job."""
  root = tmp_path_factory.mktemp("multihost")
  workdir, out = root / "run", root / "out"
  out.mkdir()
  port = _free_port()
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  procs = [subprocess.Popen([sys.executable, os.path.join(HERE, "_multihost.py"), str(i), "2",
                             str(port), str(workdir), str(out)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
           for i in range(2)]
  logs = []
  for proc in procs:
    try:
      logs.append(proc.communicate(timeout=420)[0])
    except subprocess.TimeoutExpired:
      for p in procs:
        p.kill()
      raise
  for proc, log in zip(procs, logs):
    assert proc.returncode == 0, log[-4000:]
  assert "process 0/2: 4 local of 8 devices, step 6" in logs[0], logs[0][-2000:]
  assert "process 1/2: 4 local of 8 devices, step 6" in logs[1], logs[1][-2000:]
  return workdir, out


@pytest.fixture(scope="module")
def one_process_params(tmp_path_factory):
  """The same training as one process over this process's 8 devices."""
  assert jax.device_count() == 8
  config = _multihost.config()
  state = loop.train_and_evaluate(config, str(tmp_path_factory.mktemp("single")),
                                  model=_toy.ToyModel(config), data=_toy.ToyData(config))
  return _flat(state.params)


def test_two_process_update_equals_one_process(two_process_run, one_process_params):
  _, out = two_process_run
  two = dict(np.load(out / "params.npz"))
  assert sorted(two) == sorted(one_process_params)
  for name, value in one_process_params.items():
    # Same program, same global batch; only the cross-process all-reduce's order may differ.
    np.testing.assert_allclose(two[name], value, rtol=1e-6, atol=1e-7, err_msg=name)
  assert any(np.abs(two[k] - v).max() > 1e-3 for k, v in _flat(
      _toy.ToyModel(_multihost.config()).init(jax.random.PRNGKey(0), _toy.ToyData(
          _multihost.config()).example_batch())).items())  # training moved the parameters


def test_processes_read_disjoint_shares_of_each_global_batch(two_process_run):
  _, out = two_process_run
  rows = [np.load(out / f"rows_{i}.npy") for i in range(2)]   # [steps, share, 3] each
  config = _multihost.config()
  data = _toy.ToyData(config)
  assert rows[0].shape == rows[1].shape == (6, 16, 3)
  for step in range(6):
    whole = data.train_batch(step)["x"]
    np.testing.assert_array_equal(np.concatenate([rows[0][step], rows[1][step]]), whole)
    shared = {tuple(r) for r in rows[0][step]} & {tuple(r) for r in rows[1][step]}
    assert not shared


def test_two_process_checkpoint_restores_in_one_process(two_process_run):
  workdir, out = two_process_run
  assert sorted(os.listdir(workdir / "checkpoints")) == ["3", "6"]
  restored = _flat(checkpoint.load_params(str(workdir), model_name=_toy.ToyModel.name))
  two = dict(np.load(out / "params.npz"))
  for name, value in restored.items():
    np.testing.assert_array_equal(value, two[name], err_msg=name)

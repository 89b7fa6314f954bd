"""One process of a 2-process ``jax.distributed`` job on localhost (CPU, 4 devices each).

  python tests/_multihost.py PROCESS_ID NUM_PROCESSES PORT WORKDIR OUT_DIR

Trains the toy model (tests/_toy.py) with ``loop.train_and_evaluate`` on the global mesh of
every process's devices, each process feeding its own share of the global batch, and writes
``OUT_DIR/rows_<id>.npy`` (the input rows this process read, per step) and, on process 0,
``OUT_DIR/params.npz`` (the final parameters). The checkpoint goes to ``WORKDIR``.
Used by tests/test_multihost.py.
"""
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def config():
  import _toy  # pylint: disable=g-import-not-at-top
  c = _toy.get_config()
  c.total_steps, c.model.input_noise = 6, 0.1
  return c


def main(process_id, num_processes, port, workdir, out_dir):
  os.environ["XLA_FLAGS"] = ("--xla_force_host_platform_device_count=4 "
                             "--xla_backend_optimization_level=1")   # as tests/conftest.py
  os.environ["JAX_PLATFORMS"] = "cpu"
  os.environ.pop("JAX_COMPILATION_CACHE_DIR", None)  # not the test session's cache
  # What a user sets on any cluster; loop.train_and_evaluate's initialize_distributed reads it.
  os.environ.update(JAX_COORDINATOR_ADDRESS=f"localhost:{port}",
                    JAX_NUM_PROCESSES=str(num_processes), JAX_PROCESS_ID=str(process_id))
  import jax  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, HERE)
  import _toy  # pylint: disable=g-import-not-at-top
  from minerf_jax.train import loop  # pylint: disable=g-import-not-at-top
  from minerf_jax.train import parallel  # pylint: disable=g-import-not-at-top

  class RecordingData(_toy.ToyData):
    def train_batch(self, step):
      batch = super().train_batch(step)
      rows.append(batch["x"])
      return batch

  rows = []
  c = config()
  parallel.initialize_distributed(c.parallel.distributed)   # before process_index() is asked
  data = RecordingData(c, process_index=jax.process_index(), process_count=jax.process_count())
  state = loop.train_and_evaluate(c, workdir, model=_toy.ToyModel(c), data=data)
  np.save(os.path.join(out_dir, f"rows_{process_id}.npy"), np.stack(rows))
  if jax.process_index() == 0:
    local = jax.tree.map(lambda a: np.asarray(a.addressable_data(0)), state.params)
    flat = {jax.tree_util.keystr(p, simple=True, separator="/"): v
            for p, v in jax.tree_util.tree_flatten_with_path(local)[0]}
    np.savez(os.path.join(out_dir, "params.npz"), **flat)
  print(f"process {jax.process_index()}/{jax.process_count()}: {jax.local_device_count()} local "
        f"of {jax.device_count()} devices, step {int(state.step.addressable_data(0))}", flush=True)


if __name__ == "__main__":
  main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5])

"""Test setup: 8 virtual CPU devices, set before JAX initialises its backends."""
import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")


import pytest  # noqa: E402  (after the XLA flags above)


@pytest.fixture(scope="session")
def tpsmm_test_run(tmp_path_factory):
  """(workdir, final TrainState) of configs/tpsmm.py:test trained on all 8 devices (once per
  session: the train step's compile is the expensive part)."""
  from configs import tpsmm  # pylint: disable=g-import-not-at-top
  from minerf_jax.train import loop  # pylint: disable=g-import-not-at-top
  root = tmp_path_factory.mktemp("tpsmm")
  config = tpsmm.get_config("test")
  config.data.data_dir = str(root / "tfds")
  state = loop.train_and_evaluate(config, str(root / "run"))
  return str(root / "run"), state

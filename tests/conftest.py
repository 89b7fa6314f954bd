"""Test setup: 8 virtual CPU devices and LLVM optimisation level 1 (below), set before JAX
initialises its backends; a persistent XLA
compilation cache shared by every test and launcher subprocess of the session (many tests
build the same tiny programs: with the cache each compiles once; the directory is new for every
session and removed at its end, so no result depends on an earlier run)."""
import os
import shutil
import subprocess
import sys
import tempfile

# The suite is dominated by XLA compiles of tiny programs. LLVM optimisation level 1 compiles
# faster at the same speed and numbers (idle 2-core CPU, MRFA ':test': init 20.8 s -> 9.0 s, the
# train step's compile 41.8 s -> 40.9 s, a step 32 ms -> 27 ms, the loss equal to 7 digits);
# level 0 compiles faster still (6.6 s, 30.2 s) but runs steps 2x slower and moves training
# trajectories (a head3d test's pose error 1.4 -> 2.2 deg).
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    + " --xla_backend_optimization_level=1").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
_CACHE = None
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _CACHE = tempfile.mkdtemp(prefix="minerf_jax_xla_cache_")
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _CACHE
  os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
  os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"


import pytest  # noqa: E402  (after the XLA flags above)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# Under pytest-xdist (``make test``: ``-n 2``) each test file runs whole on one worker (its
# module fixtures are built once), and the files that share a session fixture's trained run go
# to the same worker, so that the run is trained once.
_SHARED_RUNS = {"test_launchers.py": "demo_run", "test_lokitalk.py": "demo_run",
                "test_notebook.py": "demo_run", "test_animate.py": "tpsmm_run",
                "test_animation.py": "tpsmm_run",
                "test_notebook_animation.py": "tpsmm_run"}


def _scope(nodeid: str) -> str:
  name = os.path.basename(nodeid.split("::", 1)[0])
  return _SHARED_RUNS.get(name, name)


try:
  from xdist.scheduler import LoadScopeScheduling  # noqa: E402
except ImportError:  # without xdist, tests run in one process anyway
  LoadScopeScheduling = None

if LoadScopeScheduling is not None:

  class _SharedRunScheduling(LoadScopeScheduling):
    """xdist's loadscope with the scope of a test = its file, or its shared run's group."""

    def _split_scope(self, nodeid: str) -> str:
      return _scope(nodeid)

  def pytest_xdist_make_scheduler(config, log):
    return _SharedRunScheduling(config, log)


def pytest_sessionfinish(session, exitstatus):
  del session, exitstatus
  if _CACHE:
    shutil.rmtree(_CACHE, ignore_errors=True)


def run_module(module, *args, data_dir):
  """Runs ``python -m module args`` in the repository with MINERF_DATA_DIR; returns stdout."""
  proc = subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True,
                        text=True, timeout=900, env={**os.environ, "MINERF_DATA_DIR": data_dir})
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc.stdout


@pytest.fixture(scope="session")
def minerf_demo_run(tmp_path_factory):
  """(stdout, workdir, data_dir) of ``launch.demo`` on configs/minerf.py:test (train, evaluate,
  render): the trained tiny MI-NeRF that launcher, talk and notebook tests share."""
  root = tmp_path_factory.mktemp("demo")
  data_dir, workdir = str(root / "tfds"), str(root / "run")
  out = run_module("launch.demo", "--config=configs/minerf.py:test", f"--workdir={workdir}",
                   data_dir=data_dir)
  return out, workdir, data_dir


@pytest.fixture(scope="session")
def a2e_test_run(minerf_demo_run, tmp_path_factory):
  """Workdir of configs/audio2exp.py:test trained with ``launch.train`` (matches the demo run's
  identities)."""
  _, _, data_dir = minerf_demo_run
  workdir = str(tmp_path_factory.mktemp("a2e") / "run")
  run_module("launch.train", "--config=configs/audio2exp.py:test", f"--workdir={workdir}",
             data_dir=data_dir)
  return workdir


@pytest.fixture(scope="session")
def lokitalk_test_run(minerf_demo_run, tmp_path_factory):
  """Workdir of configs/lokitalk.py:test trained with ``launch.train`` (the demo run's dataset:
  the tiny configs share it)."""
  _, _, data_dir = minerf_demo_run
  workdir = str(tmp_path_factory.mktemp("lokitalk") / "run")
  run_module("launch.train", "--config=configs/lokitalk.py:test", f"--workdir={workdir}",
             data_dir=data_dir)
  return workdir


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


@pytest.fixture(scope="session")
def head3d_test_run(tmp_path_factory):
  """Workdir of configs/head3d.py:test trained for its few steps on all 8 devices."""
  from configs import head3d  # pylint: disable=g-import-not-at-top
  from minerf_jax.train import loop  # pylint: disable=g-import-not-at-top
  root = tmp_path_factory.mktemp("head3d")
  config = head3d.get_config("test")
  config.data.data_dir = str(root / "tfds")
  loop.train_and_evaluate(config, str(root / "run"))
  return str(root / "run")


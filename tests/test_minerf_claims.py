"""The MI-NeRF claim suites of launch.benchmark on ':test'-sized configs, the fusion variants'
identity-only path, the init calibration of the condition's share, and the leakage metric."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import minerf as minerf_config
from launch import minerf_claims
from minerf_jax import metrics
from minerf_jax import models
from minerf_jax.models import minerf
from minerf_jax.nerf import fusion


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("tfds"))
  os.environ["MINERF_DATA_DIR"] = path
  return path


def _overrides(data_dir, **kw):
  return dict({"data.data_dir": data_dir}, **kw)


# ------------------------------------------------------------------------- fusion and init


def test_default_fusion_separates_identities_at_neutral_expression():
  """The default module keeps an identity-only path: two identities give different conditions
  at e = 0 (the pure product gives 0 for everyone)."""
  mc = minerf_config.get_config().model
  m = fusion.Fusion(kind=mc.fusion, features=8, first_order=mc.first_order,
                    augment_expression=mc.augment_expression)
  w = jax.random.normal(jax.random.key(0), (2, 6))
  e = jnp.zeros((2, 5))
  p = m.init(jax.random.key(1), w, e)
  c = np.asarray(m.apply(p, w, e))
  assert np.abs(c[0] - c[1]).max() > 1e-3
  pure = fusion.Fusion(kind="hadamard", features=8)
  np.testing.assert_array_equal(pure.apply(pure.init(jax.random.key(1), w, e), w, e), 0.0)


def test_augmented_hadamard_is_the_product_with_a_constant_input():
  w = jax.random.normal(jax.random.key(0), (5, 8))
  e = jax.random.normal(jax.random.key(1), (5, 6))
  m = fusion.Fusion(kind="hadamard", features=4, augment_expression=True)
  p = m.init(jax.random.key(2), w, e)["params"]
  u_e = p["U_e"]["kernel"]
  assert u_e.shape == (7, 4) and set(p) == {"U_w", "U_e"}
  iw = w @ p["U_w"]["kernel"]
  np.testing.assert_allclose(m.apply({"params": p}, w, e), iw * (e @ u_e[:6] + u_e[6]),
                             rtol=1e-5, atol=1e-6)
  # At e = 0 what is left is the identity-only term (U_w w) * u_0.
  np.testing.assert_allclose(m.apply({"params": p}, w, jnp.zeros_like(e)), iw * u_e[6],
                             rtol=1e-5, atol=1e-6)
  # Other kinds ignore the flag (the default config sets it; --config.model.fusion=concat works).
  concat = fusion.Fusion(kind="concat", features=4, augment_expression=True)
  assert concat.init(jax.random.key(0), w, e)["params"]["W"]["kernel"].shape == (14, 4)


@pytest.mark.parametrize("share", [0.1, 0.5])
def test_condition_share_is_calibrated_at_init(data_dir, share):
  config = minerf_config.get_config("test")
  config.update_from_flattened_dict(_overrides(data_dir, **{"model.condition_share": share}))
  model, data = models.build(config), models.build_data(config)
  batch = data.example_batch()
  params = model.init(jax.random.PRNGKey(0), batch)
  np.testing.assert_allclose(minerf.condition_share(model.net, params, batch), share, rtol=1e-3)
  # The calibration scales only the field's condition kernels.
  config.model.condition_share = 0.0
  raw = models.build(config).init(jax.random.PRNGKey(0), batch)
  for name, value in raw["field"].items():
    if not name.startswith("cond_"):
      np.testing.assert_array_equal(value["kernel"], params["field"][name]["kernel"])
  factor = params["field"]["cond_0"]["kernel"] / raw["field"]["cond_0"]["kernel"]
  np.testing.assert_allclose(factor, factor.ravel()[0], rtol=1e-5)
  assert minerf.condition_share(model.net, raw, batch) != pytest.approx(share, rel=0.05)


# ----------------------------------------------------------------------------------- leakage


def test_colour_leakage_is_zero_for_a_and_one_for_b():
  rng = np.random.default_rng(0)
  mask = np.zeros((2, 8, 8), np.float32)
  mask[:, 2:6, 2:6] = 1
  a = np.where(mask[..., None] > 0, [0.8, 0.6, 0.5], rng.uniform(size=(2, 8, 8, 3)))
  b = np.where(mask[..., None] > 0, [0.3, 0.2, 0.1], a)
  leak = lambda pred: np.asarray(metrics.colour_leakage(pred, a, mask, b, mask))
  np.testing.assert_allclose(leak(a), 0.0, atol=1e-6)
  np.testing.assert_allclose(leak(b), 1.0, atol=1e-6)
  np.testing.assert_allclose(leak(0.75 * a + 0.25 * b), 0.25, atol=1e-6)
  # Only head pixels count: changing the background changes nothing.
  np.testing.assert_allclose(leak(np.where(mask[..., None] > 0, a, 0.0)), 0.0, atol=1e-6)


def test_transfer_set_carries_the_driver_truth_and_evaluate_reports_leakage(data_dir):
  config = minerf_config.get_config("test")
  config.update_from_flattened_dict(_overrides(data_dir))
  model, data = models.build(config), models.build_data(config)
  transfer = data.eval_data["transfer"]
  assert transfer.driver_rgb.shape == transfer.rgb.shape
  assert transfer.driver_mask.shape == transfer.mask.shape
  # The driver is another identity: its head colours differ clearly from A's.
  c = lambda images, masks: np.asarray(metrics.masked_mean_colour(images, masks))
  gap = np.linalg.norm(c(transfer.driver_rgb, transfer.driver_mask)
                       - c(transfer.rgb, transfer.mask), axis=-1)
  assert np.all(gap > 0.03), gap
  np.testing.assert_allclose(metrics.colour_leakage(
      transfer.rgb, transfer.rgb, transfer.mask, transfer.driver_rgb, transfer.driver_mask),
      0.0, atol=1e-6)
  params = model.init(jax.random.PRNGKey(0), data.example_batch())
  results = model.evaluate(params, {"transfer": transfer})
  assert np.isfinite(results["transfer/leakage"]) and results["transfer/leakage"] >= 0
  assert "heldout/leakage" not in model.evaluate(params, {"heldout": data.eval_data["heldout"]})


# ------------------------------------------------------------------------------------ suites


def test_curve_time_to_target_interpolates():
  curve = minerf_claims.Curve(steps=[10, 20, 30], seconds=[1.0, 2.0, 3.0],
                              psnr={0: [10.0, 20.0, 30.0], 1: [15.0, 16.0, 40.0]})
  assert curve.time_to({0: 15.0}) == pytest.approx(1.5)
  assert curve.time_to({0: 15.0, 1: 28.0}) == pytest.approx(2.5)  # the slower identity
  assert curve.time_to({0: 5.0}) == 1.0
  assert curve.time_to({0: 31.0}) == float("inf")
  assert curve.converged(1, last=2) == pytest.approx(28.0)


def test_scaling_suite_test_sized(data_dir, tmp_path):
  plot = str(tmp_path / "scaling.png")
  out = minerf_claims.suite_scaling(
      "test", num_identities=(1, 2), seeds=1, steps=4, eval_every=2, targets=(0.5, 0.9),
      wide_width=40, probe_frames=1, overrides=_overrides(data_dir), plot=plot)
  assert os.path.getsize(plot) > 0
  # N = 1 is identity 0's single model itself: the ratio is exactly 1.
  assert out["table"]["N=1 target=0.90"]["ratios"] == [1.0]
  row = out["table"]["N=2 target=0.50"]
  assert len(row["ratios"]) == 1 and row["ratios"][0] > 0 and len(row["wide_ratios"]) == 1
  curves = out["curves"]["multi"][0]["2"]
  assert curves["steps"] == [2, 4] and set(curves["psnr"]) == {"0", "1"}
  assert all(np.diff(curves["seconds"]) > 0)
  json.dumps(out)


def test_fusion_suite_test_sized(data_dir):
  out = minerf_claims.suite_fusion(
      "test", variants=("hadamard_augmented", "hadamard_first_order"), seeds=1, steps=2,
      overrides=_overrides(data_dir))
  rows = out["variants"]
  ref = out["reference_params"]
  for row in rows.values():  # equal shared-parameter budget (within one fusion channel)
    assert abs(row["shared_params"] - ref) / ref < 0.02
    assert np.isfinite(row["transfer/leakage"][0]) and np.isfinite(row["novel_view/psnr"][0])
  assert (rows["hadamard_first_order"]["fusion_features"]
          < rows["hadamard_augmented"]["fusion_features"])  # twice the projections


def test_personalise_suite_test_sized(data_dir):
  out = minerf_claims.suite_personalise("test", base_steps=2, steps=4, frame_counts=(1, 0),
                                        base_identities=1, eval_every=2, probe_frames=1,
                                        overrides=_overrides(data_dir))
  assert set(out["runs"]) == {f"{f} frames / {m}" for f in ("1", "all")
                              for m in ("frozen", "finetune", "scratch")}
  for row in out["runs"].values():
    assert np.isfinite(row["final_head_psnr"])
    assert row["curve"]["steps"] == [2, 4]

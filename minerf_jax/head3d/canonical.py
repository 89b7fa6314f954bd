"""Recurrent canonical head: subject frames folded, one after another, into a 3-D tri-plane.

What is the paper's (Ni et al., WACV 2024; no public code, the abstract only): a recurrent network
fuses the frames of the subject video into a visually interpretable 3-D canonical head, which is
transformed to each driving pose and rendered. Everything below is ours:

* **Lift.** A frame's features (a small stride-1 conv encoder, with the frame's colours appended)
  are lifted to 3-D at every pixel with the frame's z-depth (``camera.unproject``) and moved into
  head coordinates with the inverse of its head pose (``X_head = R^T (X_cam - t)``). Points
  outside the head box (the wall, the torso) drop out.
* **Splat.** The lifted points are splatted bilinearly onto three axis-aligned feature planes
  (xy, xz, yz) spanning the head box (EG3D's tri-plane layout), as feature sums and a count of
  what the frame saw; a plane cell's input is the mean feature and ``log(1 + count)``.
* **Fold** (``canonical.fold``): ``gru`` (the default): a ConvGRU, shared by the three planes (a
  one-hot plane index is part of its input), updates the tri-plane state with each frame's splat,
  so later frames fill in what earlier ones did not see; ``mean``: the running mean of the splats
  weighted by their counts, no learned recurrence (the ablation; it cannot resolve frames that
  disagree).
* **Read.** A small MLP maps the sum of the three planes' bilinear samples at a 3-D point to a
  density, a colour and ``feature_dim`` features; ``render`` volume-renders them with
  ``nerf/render.py`` at any head pose and intrinsics (features as the renderer's ``aux``), so the
  canonical head can be looked at from the front (``launch.render --mode=canonical``) or from the
  driving frame's pose.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from minerf_jax import camera
from minerf_jax.motion import warp
from minerf_jax.nerf import render as render_lib

FOLDS = ("gru", "mean")
PLANES = ((0, 1), (0, 2), (1, 2))   # xy, xz, yz


def default_config() -> ml_collections.ConfigDict:
  """``config.model.canonical``: the fields this module reads."""
  return ml_collections.ConfigDict(dict(
      fold="gru",                 # gru | mean (see the module docstring)
      plane_resolution=32, state_dim=32, encoder_features=(16, 32), feature_dim=16,
      mlp_width=64, mlp_depth=2, num_samples=24, density_bias=-1.0,
  ))


def normalise(points: jax.Array, box) -> jax.Array:
  """Head coordinates -> ``[-1, 1]`` over the box ``(lo, hi)`` per axis."""
  lo, hi = jnp.asarray(box[0], points.dtype), jnp.asarray(box[1], points.dtype)
  return 2.0 * (points - lo) / (hi - lo) - 1.0


def splat(uv: jax.Array, values: jax.Array, weights: jax.Array, resolution: int
          ) -> tuple[jax.Array, jax.Array]:
  """Bilinear splat of values [N, C] at ``uv`` [N, 2] (``[-1, 1]``, corners on the outer cells'
  centres, as ``warp.grid_sample``) with ``weights`` [N] onto a ``[R, R]`` grid: (sums [R, R, C],
  total weights [R, R]). Each point spreads its weight over its four neighbouring cells."""
  r = resolution
  x, y = (uv[:, 0] + 1.0) * 0.5 * (r - 1), (uv[:, 1] + 1.0) * 0.5 * (r - 1)
  x0, y0 = jnp.floor(x), jnp.floor(y)
  sums = jnp.zeros((r, r, values.shape[-1]), values.dtype)
  total = jnp.zeros((r, r), values.dtype)
  for dx in (0, 1):
    for dy in (0, 1):
      xi, yi = x0 + dx, y0 + dy
      w = (1.0 - jnp.abs(x - xi)) * (1.0 - jnp.abs(y - yi)) * weights
      inside = (xi >= 0) & (xi <= r - 1) & (yi >= 0) & (yi <= r - 1)
      w = jnp.where(inside, w, 0.0)
      xi, yi = jnp.clip(xi, 0, r - 1).astype(jnp.int32), jnp.clip(yi, 0, r - 1).astype(jnp.int32)
      sums = sums.at[yi, xi].add(values * w[:, None])
      total = total.at[yi, xi].add(w)
  return sums, total


def splat_triplane(points: jax.Array, values: jax.Array, box, resolution: int
                   ) -> tuple[jax.Array, jax.Array]:
  """Points [B, N, 3] (head coordinates) with values [B, N, C] -> (sums [B, 3, R, R, C],
  counts [B, 3, R, R]) on the box's xy, xz and yz planes; points outside the box weigh 0."""
  p = normalise(points, box)
  inside = jnp.all(jnp.abs(p) <= 1.0, -1).astype(values.dtype)

  def one(p_b, v_b, w_b):
    planes = [splat(p_b[:, list(axes)], v_b, w_b, resolution) for axes in PLANES]
    return jnp.stack([s for s, _ in planes]), jnp.stack([c for _, c in planes])

  return jax.vmap(one)(p, values, inside)


def sample_triplane(planes: jax.Array, points: jax.Array, box) -> jax.Array:
  """Planes [B, 3, R, R, C] at points [B, N, 3] (head coordinates): the sum of the three
  planes' bilinear samples [B, N, C] (zero outside the box)."""
  p = normalise(points, box)
  out = 0.0
  for i, axes in enumerate(PLANES):
    grid = p[..., list(axes)][:, :, None, :]
    out = out + warp.grid_sample(planes[:, i], grid)[:, :, 0]
  return out


class ConvGRU(nn.Module):
  """``h' = (1 - z) h + z tanh(conv([r h, x]))`` with ``z, r = sigmoid(conv([h, x]))``."""
  features: int
  kernel: int = 3

  @nn.compact
  def __call__(self, h: jax.Array, x: jax.Array) -> jax.Array:
    conv = lambda name: nn.Conv(self.features, (self.kernel, self.kernel), name=name)
    hx = jnp.concatenate([h, x], -1)
    z, r = jax.nn.sigmoid(conv("update")(hx)), jax.nn.sigmoid(conv("reset")(hx))
    q = jnp.tanh(conv("candidate")(jnp.concatenate([r * h, x], -1)))
    return (1.0 - z) * h + z * q


class CanonicalHead(nn.Module):
  """The tri-plane canonical head of ``config.model.canonical`` inside the head ``box``.

  ``init_state(batch)``; ``fold(state, frame, depth, k, pose)`` (one subject frame, absolute head
  pose ``X_cam = R X_head + t``); ``render(state, k, pose, height, width)``. The state is a
  dict: ``planes`` [B, 3, R, R, D] (and, for ``fold='mean'``, the running ``count``).
  """
  config: ml_collections.ConfigDict
  box: tuple

  def setup(self):
    c = self.config
    if c.fold not in FOLDS:
      raise ValueError(f"config.model.canonical.fold={c.fold!r}; choose one of {FOLDS}")
    self.encoder = [nn.Conv(f, (3, 3), name=f"encoder{i}")
                    for i, f in enumerate(c.encoder_features)]
    if c.fold == "gru":
      self.gru = ConvGRU(c.state_dim)
    self.mlp = [nn.Dense(c.mlp_width, name=f"mlp{i}") for i in range(c.mlp_depth)]
    self.head = nn.Dense(1 + 3 + c.feature_dim, name="out")

  def _input_dim(self) -> int:
    return self.config.encoder_features[-1] + 3

  def init_state(self, batch: int) -> dict:
    c = self.config
    r = c.plane_resolution
    if c.fold == "gru":
      return {"planes": jnp.zeros((batch, 3, r, r, c.state_dim))}
    return {"planes": jnp.zeros((batch, 3, r, r, self._input_dim())),
            "count": jnp.zeros((batch, 3, r, r, 1))}

  def lift(self, frame: jax.Array, depth: jax.Array, k: jax.Array, pose: camera.Pose
           ) -> tuple[jax.Array, jax.Array]:
    """Frame [B, H, W, 3], z-depth [B, H, W] -> (head points [B, HW, 3], values [B, HW, C])."""
    x = frame
    for conv in self.encoder:
      x = nn.relu(conv(x))
    values = jnp.concatenate([x, frame], -1)
    b, h, w, _ = frame.shape
    pixels = jnp.asarray(camera.pixel_grid(h, w))[None]
    points = camera.unproject(pixels, depth, k[:, None, None])
    r_inv, t_inv = camera.invert(*pose)
    points = camera.transform(points, r_inv[:, None, None], t_inv[:, None, None])
    return points.reshape(b, h * w, 3), values.reshape(b, h * w, -1)

  def fold(self, state: dict, frame: jax.Array, depth: jax.Array, k: jax.Array,
           pose: camera.Pose) -> dict:
    c = self.config
    points, values = self.lift(frame, depth, k, pose)
    sums, counts = splat_triplane(points, values, self.box, c.plane_resolution)
    counts = counts[..., None]
    if c.fold == "mean":
      total = state["count"] + counts
      planes = (state["planes"] * state["count"] + sums) / jnp.maximum(total, 1e-6)
      return {"planes": planes, "count": total}
    b, r = sums.shape[0], c.plane_resolution
    mean = sums / jnp.maximum(counts, 1e-6)
    plane_id = jnp.broadcast_to(jnp.eye(3)[None, :, None, None, :], (b, 3, r, r, 3))
    x = jnp.concatenate([mean, jnp.log1p(counts), plane_id], -1)
    h = state["planes"].reshape(b * 3, r, r, -1)
    h = self.gru(h, x.reshape(b * 3, r, r, -1))
    return {"planes": h.reshape(b, 3, r, r, -1)}

  def field(self, state: dict, points: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Points [B, N, 3] (head coordinates) -> density [B, N], colour [B, N, 3], features."""
    x = sample_triplane(state["planes"], points, self.box)
    for dense in self.mlp:
      x = nn.relu(dense(x))
    out = self.head(x)
    sigma = jax.nn.softplus(out[..., 0] + self.config.density_bias)
    return sigma, jax.nn.sigmoid(out[..., 1:4]), out[..., 4:]

  def render(self, state: dict, k: jax.Array, pose: camera.Pose, height: int, width: int,
             background: jax.Array | float = 0.0) -> dict:
    """Renders the canonical head at head pose ``pose`` through intrinsics ``k`` [B, 3, 3].

    Returns ``rgb`` [B, H, W, 3] (over ``background``), ``acc``, ``depth`` (distance along the
    ray) [B, H, W] and ``features`` [B, H, W, feature_dim].
    """
    b = k.shape[0]
    pixels = jnp.asarray(camera.pixel_grid(height, width))[None]
    dirs = camera.ray_directions(k[:, None, None], pixels)
    r, t = pose
    o, d = camera.to_canonical(jnp.zeros_like(dirs), dirs, r[:, None, None], t[:, None, None])
    near, far, hit = camera.ray_box_intersect(o, d, jnp.asarray(self.box[0]),
                                              jnp.asarray(self.box[1]))

    def field_fn(points, _):
      sigma, rgb, feats = self.field(state, points.reshape(b, -1, 3))
      shape = points.shape[:-1]
      return sigma.reshape(shape), rgb.reshape(shape + (3,)), feats.reshape(shape + (-1,))

    out = render_lib.render_rays(field_fn, None, o, d, near, far, hit,
                                 num_coarse=self.config.num_samples, num_fine=0,
                                 randomized=False,
                                 background_rgb=jnp.broadcast_to(background, (3,)))
    return {"rgb": out["rgb"], "acc": out["acc"], "depth": out["depth"],
            "features": out["aux"]}

  def fold_all(self, frames: jax.Array, depths: jax.Array, k: jax.Array, poses: camera.Pose
               ) -> dict:
    """The state after folding subject frames [B, K, H, W, 3] (depths [B, K, H, W], ``k``
    [B, K, 3, 3], poses [B, K, ...]) one after another into an empty state."""
    state = self.init_state(frames.shape[0])
    for i in range(frames.shape[1]):
      state = self.fold(state, frames[:, i], depths[:, i], k[:, i],
                        (poses[0][:, i], poses[1][:, i]))
    return state

  def __call__(self, frames: jax.Array, depths: jax.Array, k: jax.Array, poses: camera.Pose,
               k_render: jax.Array, pose_render: camera.Pose) -> dict:
    """Folds subject frames [B, K, H, W, 3] in order, then renders at ``pose_render``."""
    state = self.fold_all(frames, depths, k, poses)
    h, w = frames.shape[2:4]
    return self.render(state, k_render, pose_render, h, w)

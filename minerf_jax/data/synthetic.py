"""Procedural multi-identity talking heads with exact ground truth (numpy, no JAX).

A head is a small set of analytic primitives ray-cast per pixel (nearest hit wins):

* skull: an ellipsoid split at the mouth line; below it the jaw is the same ellipsoid stretched
  downwards by ``1 + JAW_STRETCH * jaw_open`` (a real geometric deformation: the chin drops);
* nose and ears: ellipsoids; hair: a slightly larger ellipsoid kept above a hairline;
* neck and torso: ellipsoids fixed in *world* space (people turn their head, not their torso);
* background: a wall at ``WALL_DEPTH`` with a per-identity gradient and pattern.

Eyes, eyelids, brows, lips and the mouth interior are decals evaluated in rest head coordinates,
so expressions move them exactly; skin and hair carry per-identity procedural textures. Light is
fixed in world space: ``albedo * (AMBIENT + DIFFUSE * max(0, n.l))``. Any identity can be
rendered with any expression and pose, which gives exact ground truth for held-out frames,
expression transfer and novel views.

Conventions: OpenCV camera at the world origin (x right, y down, z forward); head coordinates
share those axes at zero pose (the face looks towards -z); ``X_world = R X_head + t`` with
``R = Ry(yaw) Rx(pitch) Rz(roll)`` and ``t = (tx, HEAD_Y + ty, HEAD_DISTANCE + tz)``.

Segmentation labels: 0 background, 1 skin, 2 hair, 3 eyes, 4 lips/mouth, 5 neck, 6 torso.
Masks channels: (face = any head surface, lips, eyes, torso_neck).
"""
from __future__ import annotations

import dataclasses

import numpy as np

EXPRESSION_NAMES = ("jaw_open", "smile", "blink_left", "blink_right", "brow_raise")
# jaw_open, smile, blinks in [0, 1]; brow_raise in [-1, 1] (negative: brows lowered).

FOCAL_SCALE = 1.3          # fx = fy = FOCAL_SCALE * resolution
HEAD_DISTANCE = 4.6         # head centre depth at zero pose
HEAD_Y = -0.25              # head centre height (negative: up) so shoulders are in frame
WALL_DEPTH = 9.0
MOUTH_LINE = 0.42           # rest-pose y of the lips' meeting line (head coordinates)
JAW_STRETCH = 0.22
AMBIENT, DIFFUSE = 0.62, 0.38
LIGHT_DIR = np.array([-0.45, -0.55, -1.0]) / np.linalg.norm([-0.45, -0.55, -1.0])
# Every head primitive lies inside this box (head coordinates) for every identity/expression.
HEAD_BOX = ((-0.96, -1.15, -1.05), (0.96, 1.2, 1.02))

SEG_BACKGROUND, SEG_SKIN, SEG_HAIR, SEG_EYES, SEG_LIPS, SEG_NECK, SEG_TORSO = range(7)
LANDMARK_NAMES = (
    "eye_r_outer", "eye_r_inner", "eye_l_inner", "eye_l_outer",
    "lid_r_top", "lid_r_bottom", "lid_l_top", "lid_l_bottom",
    "brow_r_outer", "brow_r_mid", "brow_r_inner", "brow_l_inner", "brow_l_mid", "brow_l_outer",
    "nose_tip", "mouth_r", "mouth_l", "lip_upper", "lip_lower", "chin",
    "jaw_r_upper", "jaw_r_lower", "jaw_l_lower", "jaw_l_upper")


@dataclasses.dataclass(frozen=True)
class Identity:
  index: int
  radii: tuple[float, float, float]
  skin: tuple[float, float, float]
  hair: tuple[float, float, float]
  iris: tuple[float, float, float]
  lips: tuple[float, float, float]
  shirt: tuple[float, float, float]
  wall: tuple[tuple[float, float, float], tuple[float, float, float]]
  hairline: float                     # rest y of the front hairline
  eye_spacing: float
  texture_freqs: tuple                # (K,3) skin texture frequencies
  texture_phases: tuple               # (K,)
  freckles: float                     # 0..1 freckle density
  wall_freq: float


def _rng(seed: int, index: int, stream: int) -> np.random.Generator:
  return np.random.default_rng([seed, index, stream])


_SKINS = np.array([[0.93, 0.76, 0.64], [0.78, 0.57, 0.42], [0.55, 0.38, 0.27],
                   [0.96, 0.83, 0.74], [0.68, 0.48, 0.36], [0.86, 0.67, 0.52]])
_HAIRS = np.array([[0.12, 0.08, 0.06], [0.55, 0.35, 0.15], [0.85, 0.72, 0.40],
                   [0.45, 0.13, 0.07], [0.25, 0.25, 0.28], [0.80, 0.80, 0.82]])
_IRISES = np.array([[0.30, 0.18, 0.08], [0.20, 0.40, 0.70], [0.25, 0.50, 0.30],
                    [0.45, 0.35, 0.20]])


def make_identity(seed: int, index: int) -> Identity:
  """A distinct head: shape, colours and texture, deterministic in (seed, index)."""
  r = _rng(seed, index, 0)
  jitter = lambda c, s=0.04: tuple(np.clip(c + r.normal(0, s, 3), 0.02, 0.98).tolist())
  return Identity(
      index=index,
      radii=(float(r.uniform(0.70, 0.84)), float(r.uniform(0.94, 1.04)),
             float(r.uniform(0.80, 0.92))),
      skin=jitter(_SKINS[index % len(_SKINS)]),
      hair=jitter(_HAIRS[(index * 5 + 1) % len(_HAIRS)]),
      iris=jitter(_IRISES[(index * 3) % len(_IRISES)]),
      lips=jitter(np.array([0.72, 0.30, 0.32]) * r.uniform(0.8, 1.05)),
      shirt=tuple(r.uniform(0.1, 0.9, 3).tolist()),
      wall=(tuple(r.uniform(0.25, 0.85, 3).tolist()), tuple(r.uniform(0.25, 0.85, 3).tolist())),
      hairline=float(r.uniform(-0.62, -0.42)),
      eye_spacing=float(r.uniform(0.27, 0.33)),
      texture_freqs=tuple(map(tuple, r.normal(0, 1, (4, 3)) * r.uniform(3, 7, (4, 1)))),
      texture_phases=tuple(r.uniform(0, 2 * np.pi, 4).tolist()),
      freckles=float(r.uniform(0.0, 1.0)),
      wall_freq=float(r.uniform(2.0, 5.0)))


def camera_intrinsics(resolution: int) -> np.ndarray:
  f = FOCAL_SCALE * resolution
  c = resolution / 2.0
  return np.array([[f, 0, c], [0, f, c], [0, 0, 1]], np.float32)


def pose_matrix(yaw: float, pitch: float, roll: float, translation) -> tuple[np.ndarray,
                                                                            np.ndarray]:
  """Head-to-world rotation R = Ry(yaw) Rx(pitch) Rz(roll) and translation (radians)."""
  cy, sy = np.cos(yaw), np.sin(yaw)
  cp, sp = np.cos(pitch), np.sin(pitch)
  cr, sr = np.cos(roll), np.sin(roll)
  ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
  rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
  rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
  t = np.asarray(translation, np.float64) + np.array([0.0, HEAD_Y, HEAD_DISTANCE])
  return (ry @ rx @ rz).astype(np.float32), t.astype(np.float32)


# ----------------------------------------------------------------------------------------------
# Ray casting.


def _ellipsoid_hit(o, d, centre, radii):
  """Nearest positive t of rays (o,d) [N,3] with an axis-aligned ellipsoid; inf when missed."""
  oc = (o - centre) / radii
  dc = d / radii
  a = np.sum(dc * dc, -1)
  b = 2 * np.sum(oc * dc, -1)
  c = np.sum(oc * oc, -1) - 1
  disc = b * b - 4 * a * c
  sq = np.sqrt(np.maximum(disc, 0))
  t0 = (-b - sq) / (2 * a)
  t1 = (-b + sq) / (2 * a)
  t = np.where(t0 > 1e-6, t0, t1)
  return np.where((disc > 0) & (t > 1e-6), t, np.inf), (t0, t1, disc)


def _jaw_scale(expression) -> float:
  return 1.0 + JAW_STRETCH * float(expression[0])


def _to_rest(p, s):
  """Posed head point -> rest head coordinates (undo the jaw stretch below the mouth line)."""
  q = p.copy()
  below = q[..., 1] > MOUTH_LINE
  q[..., 1] = np.where(below, MOUTH_LINE + (q[..., 1] - MOUTH_LINE) / s, q[..., 1])
  return q


def _head_hits(o, d, ident: Identity, expression):
  """Nearest head-primitive hit per ray in head coordinates: (t, kind, normal)."""
  rx, ry, rz = ident.radii
  radii = np.array([rx, ry, rz])
  s = _jaw_scale(expression)
  n = o.shape[0]
  best = np.full(n, np.inf)
  kind = np.zeros(n, np.int8)
  normal = np.zeros((n, 3))

  def consider(t, k, nrm_fn):
    nonlocal best
    better = t < best
    if not better.any():
      return
    best = np.where(better, t, best)
    kind[better] = k
    p = o[better] + t[better, None] * d[better]
    normal[better] = nrm_fn(p)

  zero = np.zeros(3)
  # Upper skull (y <= mouth line).
  t, (t0, t1, disc) = _ellipsoid_hit(o, d, zero, radii)
  for tt in (t0, t1):
    p = o + tt[:, None] * d
    ok = (disc > 0) & (tt > 1e-6) & (p[:, 1] <= MOUTH_LINE)
    consider(np.where(ok, tt, np.inf), 1, lambda p: p / radii ** 2)
  # Jaw: the skull ellipsoid stretched by s below the mouth line (affine map keeps t).
  o2, d2 = o.copy(), d.copy()
  o2[:, 1] = MOUTH_LINE + (o[:, 1] - MOUTH_LINE) / s
  d2[:, 1] = d[:, 1] / s
  _, (t0, t1, disc) = _ellipsoid_hit(o2, d2, zero, radii)
  for tt in (t0, t1):
    p = o + tt[:, None] * d
    ok = (disc > 0) & (tt > 1e-6) & (p[:, 1] > MOUTH_LINE)
    jaw_normal = lambda p: _to_rest(p, s) / radii ** 2 * np.array([1, 1 / s, 1])
    consider(np.where(ok, tt, np.inf), 1, jaw_normal)
  # Nose.
  nose_c, nose_r = np.array([0.0, 0.12, -0.86 * rz]), np.array([0.11, 0.22, 0.2])
  t, _ = _ellipsoid_hit(o, d, nose_c, nose_r)
  consider(t, 1, lambda p: (p - nose_c) / nose_r ** 2)
  # Ears.
  for side in (-1, 1):
    ear_c, ear_r = np.array([side * rx * 0.97, 0.08, 0.08]), np.array([0.09, 0.2, 0.12])
    t, _ = _ellipsoid_hit(o, d, ear_c, ear_r)
    consider(t, 1, lambda p, c=ear_c, r=ear_r: (p - c) / r ** 2)
  # Hair: a shell above the hairline (lower at the back).
  hair_r = radii * np.array([1.07, 1.07, 1.07])
  _, (t0, t1, disc) = _ellipsoid_hit(o, d, zero, hair_r)
  for tt in (t0, t1):
    p = o + tt[:, None] * d
    line = ident.hairline + (0.35 - ident.hairline) * np.clip((p[:, 2] / hair_r[2] + 0.6) / 1.4,
                                                               0, 1)
    ok = (disc > 0) & (tt > 1e-6) & (p[:, 1] < line)
    consider(np.where(ok, tt, np.inf), 2, lambda p: p / hair_r ** 2)
  return best, kind, normal


_NECK_C, _NECK_R = np.array([0.0, HEAD_Y + 1.25, HEAD_DISTANCE + 0.15]), np.array([0.4, 0.75, 0.4])
_TORSO_C, _TORSO_R = np.array([0.0, HEAD_Y + 2.45, HEAD_DISTANCE + 0.35]), np.array([1.6, 0.95, 0.8])


def _smoothstep(e0, e1, x):
  u = np.clip((x - e0) / (e1 - e0), 0, 1)
  return u * u * (3 - 2 * u)


def _face_decals(q, ident: Identity, expression):
  """Colour + label overrides on the face at rest coordinates q [N,3] (front side only)."""
  jaw, smile, blink_l, blink_r, brow = [float(v) for v in expression]
  u, v = q[:, 0], q[:, 1]
  front = q[:, 2] < -0.2
  n = q.shape[0]
  colour = np.full((n, 3), np.nan)
  label = np.zeros(n, np.int8)
  # Eyes: sclera, iris, pupil; eyelids close from the top.
  ex, ey, ew, eh = ident.eye_spacing, -0.1, 0.13, 0.07
  for side, blink in ((-1, blink_r), (1, blink_l)):
    du, dv = (u - side * ex) / ew, (v - ey) / eh
    inside = front & (du ** 2 + dv ** 2 < 1)
    open_h = 1.0 - 2.0 * np.clip(blink, 0, 1)          # lid edge in [-1, 1]
    visible = inside & (dv > -open_h) if blink > 0 else inside
    lid = inside & ~visible
    r = np.sqrt((u - side * ex) ** 2 + (v - ey) ** 2)
    eye_col = np.where((r < 0.028)[:, None], np.array([0.03, 0.03, 0.04]),
                       np.where((r < 0.055)[:, None], np.array(ident.iris),
                                np.array([0.95, 0.94, 0.92])))
    colour[visible] = eye_col[visible]
    label[visible] = SEG_EYES
    colour[lid] = np.array(ident.skin) * 0.85
    # Brows.
    bu = (u - side * (ex + 0.01)) / 0.17
    bv = v - (ey - 0.17 - 0.07 * brow + 0.05 * bu ** 2)
    in_brow = front & (np.abs(bu) < 1) & (np.abs(bv) < 0.028)
    colour[in_brow] = np.array(ident.hair) * 0.8
    label[in_brow] = SEG_SKIN
  # Mouth: lips around a dark opening; smile widens it and lifts the corners.
  half_w = 0.2 + 0.06 * smile
  mu = u / half_w
  centre = MOUTH_LINE - 0.07 * smile * mu ** 2
  gap = 0.075 * jaw
  dv = v - centre
  shape = np.sqrt(np.clip(1 - mu ** 2, 0, 1))
  in_mouth = front & (np.abs(mu) < 1)
  opening = in_mouth & (np.abs(dv) < gap * shape)
  upper = in_mouth & (dv < 0) & (dv > -(gap + 0.05) * shape - 0.004) & ~opening
  lower = in_mouth & (dv > 0) & (dv < (gap + 0.06) * shape + 0.004) & ~opening
  colour[upper | lower] = np.array(ident.lips)
  teeth = opening & (dv < -gap * shape * 0.35)
  colour[opening] = np.array([0.22, 0.05, 0.06])
  colour[teeth] = np.array([0.92, 0.9, 0.86])
  label[upper | lower | opening] = SEG_LIPS
  return colour, label


def _skin_texture(q, ident: Identity):
  freqs = np.asarray(ident.texture_freqs)
  phases = np.asarray(ident.texture_phases)
  waves = np.sin(q @ freqs.T + phases)                     # [N,K]
  tone = 1.0 + 0.06 * waves.mean(-1)
  spots = np.sin(q @ (freqs.T * 3.1) + phases * 1.7).prod(-1)
  freckle = (spots > 0.35 - 0.25 * ident.freckles) * 0.12 * ident.freckles
  return np.array(ident.skin) * (tone - freckle)[:, None]


def _hair_texture(q, ident: Identity):
  strands = 1.0 + 0.12 * np.sin(40 * q[:, 0] + 6 * np.sin(5 * q[:, 1]))
  return np.clip(np.array(ident.hair) * strands[:, None], 0, 1)


def _shade(albedo, normal_world):
  nrm = normal_world / np.maximum(np.linalg.norm(normal_world, axis=-1, keepdims=True), 1e-9)
  lam = np.clip(nrm @ LIGHT_DIR, 0, 1)
  return albedo * (AMBIENT + DIFFUSE * lam)[:, None]


def _render_rays(dirs_world, ident: Identity, expression, rotation, translation):
  """Colour, depth, label per world ray from the origin (OpenCV camera)."""
  n = dirs_world.shape[0]
  rot = np.asarray(rotation, np.float64)
  trans = np.asarray(translation, np.float64)
  o_world = np.zeros((n, 3))
  o_head = (o_world - trans) @ rot
  d_head = dirs_world @ rot
  t_head, kind, n_head = _head_hits(o_head, d_head, ident, expression)
  t_neck, _ = _ellipsoid_hit(o_world, dirs_world, _NECK_C, _NECK_R)
  t_torso, _ = _ellipsoid_hit(o_world, dirs_world, _TORSO_C, _TORSO_R)
  t_wall = WALL_DEPTH / dirs_world[:, 2]
  ts = np.stack([t_head, t_neck, t_torso, t_wall], -1)
  which = np.argmin(ts, -1)
  t = ts[np.arange(n), which]
  p_world = dirs_world * t[:, None]
  colour = np.zeros((n, 3))
  label = np.zeros(n, np.int8)
  s = _jaw_scale(expression)
  # Head.
  head = which == 0
  if head.any():
    p_head = o_head[head] + t_head[head, None] * d_head[head]
    q = _to_rest(p_head, s)
    k = kind[head]
    albedo = np.where((k == 2)[:, None], _hair_texture(q, ident), _skin_texture(q, ident))
    lab = np.where(k == 2, SEG_HAIR, SEG_SKIN).astype(np.int8)
    decal, decal_lab = _face_decals(q, ident, expression)
    on_face = (k == 1) & ~np.isnan(decal[:, 0])
    albedo[on_face] = decal[on_face]
    lab = np.where(on_face & (decal_lab > 0), decal_lab, lab)
    colour[head] = _shade(albedo, n_head[head] @ rot.T)
    label[head] = lab
  for idx, (c, r, lab, alb) in ((1, (_NECK_C, _NECK_R, SEG_NECK, np.array(ident.skin) * 0.92)),
                                (2, (_TORSO_C, _TORSO_R, SEG_TORSO, np.array(ident.shirt)))):
    sel = which == idx
    if sel.any():
      nrm = (p_world[sel] - c) / r ** 2
      stripes = 1.0 + (0.1 * np.sign(np.sin(9 * p_world[sel, 0])) if idx == 2 else 0.0)
      albedo = np.broadcast_to(alb, (int(sel.sum()), 3)) * np.reshape(stripes, (-1, 1))
      colour[sel] = _shade(albedo, nrm)
      label[sel] = lab
  wall = which == 3
  if wall.any():
    x, y = p_world[wall, 0], p_world[wall, 1]
    g = np.clip((y + 4.0) / 8.0, 0, 1)[:, None]
    base = (1 - g) * np.array(ident.wall[0]) + g * np.array(ident.wall[1])
    pattern = 1.0 + 0.05 * np.sin(ident.wall_freq * x) * np.sin(ident.wall_freq * y)
    colour[wall] = base * pattern[:, None]
  depth = t * dirs_world[:, 2]
  return np.clip(colour, 0, 1), depth, label


def _pixel_dirs(resolution: int, offsets) -> np.ndarray:
  k = camera_intrinsics(resolution)
  y, x = np.meshgrid(np.arange(resolution), np.arange(resolution), indexing="ij")
  px = x.reshape(-1) + offsets[0]
  py = y.reshape(-1) + offsets[1]
  d = np.stack([(px - k[0, 2]) / k[0, 0], (py - k[1, 2]) / k[1, 1], np.ones_like(px, float)], -1)
  return d / np.linalg.norm(d, axis=-1, keepdims=True)


def landmarks_3d(ident: Identity, expression) -> np.ndarray:
  """[L,3] semantic surface points in (posed-expression) head coordinates, LANDMARK_NAMES order."""
  jaw, smile, blink_l, blink_r, brow = [float(v) for v in expression]
  rx, ry, rz = ident.radii
  s = _jaw_scale(expression)
  ex, ey, ew, eh = ident.eye_spacing, -0.1, 0.13, 0.07
  half_w = 0.2 + 0.06 * smile
  gap = 0.075 * jaw
  corner_v = MOUTH_LINE - 0.07 * smile
  uv = [
      (-(ex + ew), ey), (-(ex - ew), ey), (ex - ew, ey), (ex + ew, ey),
      (-ex, ey - eh * (1 - 2 * blink_r)), (-ex, ey + eh), (ex, ey - eh * (1 - 2 * blink_l)),
      (ex, ey + eh),
      (-(ex + 0.17), ey - 0.12 - 0.07 * brow), (-ex, ey - 0.17 - 0.07 * brow),
      (-(ex - 0.17), ey - 0.12 - 0.07 * brow), (ex - 0.17, ey - 0.12 - 0.07 * brow),
      (ex, ey - 0.17 - 0.07 * brow), (ex + 0.17, ey - 0.12 - 0.07 * brow),
      None,
      (-half_w, corner_v), (half_w, corner_v), (0.0, MOUTH_LINE - gap - 0.05),
      (0.0, MOUTH_LINE + gap + 0.06), (0.0, 0.9 * ry),
      (-0.9 * rx, 0.15), (-0.6 * rx, 0.7 * ry), (0.6 * rx, 0.7 * ry), (0.9 * rx, 0.15)]
  pts = []
  for entry in uv:
    if entry is None:  # nose tip
      pts.append([0.0, 0.12 + 0.1, -0.86 * rz - 0.19])
      continue
    u, v = entry
    z = -rz * np.sqrt(max(1 - (u / rx) ** 2 - (v / ry) ** 2, 0.0))
    y = v if v <= MOUTH_LINE else MOUTH_LINE + (v - MOUTH_LINE) * s
    pts.append([u, y, z])
  return np.asarray(pts, np.float32)


def project(points_world: np.ndarray, intrinsics: np.ndarray) -> np.ndarray:
  uvw = points_world @ np.asarray(intrinsics, np.float64).T
  return (uvw[:, :2] / uvw[:, 2:3]).astype(np.float32)


def render(ident: Identity, expression, rotation, translation, resolution: int,
           supersample: int = 2) -> dict:
  """Renders one frame: rgb, depth, masks, segmentation, landmarks (see module docstring)."""
  expression = np.asarray(expression, np.float64)
  centre = _render_rays(_pixel_dirs(resolution, (0.5, 0.5)), ident, expression, rotation,
                        translation)
  if supersample > 1:
    offs = (np.arange(supersample) + 0.5) / supersample
    rgb = np.mean([_render_rays(_pixel_dirs(resolution, (ox, oy)), ident, expression, rotation,
                                translation)[0] for oy in offs for ox in offs], 0)
  else:
    rgb = centre[0]
  seg = centre[2].reshape(resolution, resolution).astype(np.uint8)
  face = np.isin(seg, (SEG_SKIN, SEG_HAIR, SEG_EYES, SEG_LIPS))
  masks = np.stack([face, seg == SEG_LIPS, seg == SEG_EYES, np.isin(seg, (SEG_NECK, SEG_TORSO))],
                   -1)
  pts = landmarks_3d(ident, expression) @ np.asarray(rotation, np.float64).T + np.asarray(
      translation, np.float64)
  return {
      "rgb": rgb.reshape(resolution, resolution, 3).astype(np.float32),
      "depth": centre[1].reshape(resolution, resolution).astype(np.float32),
      "masks": masks,
      "segmentation": seg,
      "landmarks": project(pts, camera_intrinsics(resolution)),
  }


# ----------------------------------------------------------------------------------------------
# Sequences: speech-like audio driving the jaw, blinks, smiles, brows and head motion.


def speech_audio(rng: np.random.Generator, seconds: float, sample_rate: int) -> np.ndarray:
  """Syllables (3-6 Hz) with pauses: a harmonic voiced source with a drifting pitch, shaped by
  two formant resonances per syllable, plus short noise bursts (consonants)."""
  n = int(round(seconds * sample_rate))
  out = np.zeros(n)
  t = 0.05
  base_f0 = rng.uniform(100, 230)
  while t < seconds:
    if rng.random() < 0.18:
      t += rng.uniform(0.15, 0.4)                         # pause
      continue
    dur = rng.uniform(0.12, 0.3)
    i0, i1 = int(t * sample_rate), min(n, int((t + dur) * sample_rate))
    if i1 <= i0:
      break
    tt = np.arange(i1 - i0) / sample_rate
    f0 = base_f0 * (1 + 0.08 * np.sin(2 * np.pi * rng.uniform(2, 5) * tt + rng.uniform(0, 6)))
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    f1, f2 = rng.uniform(300, 800), rng.uniform(900, 2300)
    voiced = np.zeros_like(tt)
    for k in range(1, 20):
      fk = k * f0.mean()
      if fk > sample_rate / 2 - 200:
        break
      gain = (np.exp(-((fk - f1) / 150) ** 2) + 0.6 * np.exp(-((fk - f2) / 250) ** 2) + 0.05) / k
      voiced += gain * np.sin(k * phase)
    env = np.sin(np.pi * np.linspace(0, 1, len(tt))) ** 0.7 * rng.uniform(0.5, 1.0)
    seg = voiced * env
    burst = int(0.02 * sample_rate)
    if rng.random() < 0.5 and burst < len(seg):
      seg[:burst] += rng.normal(0, 0.15, burst) * np.linspace(1, 0, burst)
    out[i0:i1] += seg
    t += dur + rng.uniform(0.0, 0.06)
  peak = np.max(np.abs(out))
  return (0.6 * out / peak if peak > 0 else out).astype(np.float32)


def audio_envelope(audio: np.ndarray, sample_rate: int, fps: float, num_frames: int):
  """Per-frame RMS amplitude (40 ms windows centred on each frame), smoothed."""
  env = np.zeros(num_frames)
  half = int(0.02 * sample_rate)
  for i in range(num_frames):
    c = int(round((i + 0.5) / fps * sample_rate))
    w = audio[max(0, c - half):c + half]
    env[i] = np.sqrt(np.mean(w ** 2)) if w.size else 0.0
  kernel = np.array([0.25, 0.5, 0.25])
  return np.convolve(np.pad(env, 1, mode="edge"), kernel, mode="valid")


def _smooth_random(rng, t, freq_range, terms=2):
  out = np.zeros_like(t)
  weights = rng.dirichlet(np.ones(terms))
  for w in weights:
    out += w * np.sin(2 * np.pi * rng.uniform(*freq_range) * t + rng.uniform(0, 2 * np.pi))
  return out


def sample_sequence(seed: int, index: int, num_frames: int, fps: float = 25.0,
                    sample_rate: int = 16000) -> dict:
  """Expression [T,5], yaw_pitch_roll [T,3] (radians), translation [T,3], audio [T*sr/fps]."""
  r = _rng(seed, index, 1)
  t = np.arange(num_frames) / fps
  audio = speech_audio(r, num_frames / fps, sample_rate)
  env = audio_envelope(audio, sample_rate, fps, num_frames)
  jaw = np.clip(env / max(np.percentile(env, 95), 1e-6), 0, 1) ** 0.8
  smile = np.clip(0.5 + 0.6 * _smooth_random(r, t, (0.15, 0.5)), 0, 1)
  brow = np.clip(0.9 * _smooth_random(r, t, (0.3, 0.8)), -1, 1)
  blink = np.zeros(num_frames)
  k = int(r.uniform(0.3, 1.5) * fps)
  while k < num_frames:
    for j, v in enumerate((0.5, 1.0, 1.0, 0.5)):
      if k + j < num_frames:
        blink[k + j] = v
    k += int(r.uniform(2.0, 5.0) * fps)
  wink = r.random() < 0.25   # occasionally only one eye
  expression = np.stack([jaw, smile, blink, blink * (0.2 if wink else 1.0), brow], -1)
  yaw = np.deg2rad(30) * np.clip(_smooth_random(r, t, (0.25, 0.6)) * 1.15, -1, 1)
  pitch = np.deg2rad(15) * np.clip(_smooth_random(r, t, (0.2, 0.7)) * 1.1, -1, 1)
  roll = np.deg2rad(10) * np.clip(_smooth_random(r, t, (0.2, 0.6)), -1, 1)
  translation = 0.1 * np.stack([_smooth_random(r, t, (0.1, 0.4)) for _ in range(3)], -1)
  n_audio = int(round(num_frames * sample_rate / fps))
  return {"expression": expression.astype(np.float32),
          "yaw_pitch_roll": np.stack([yaw, pitch, roll], -1).astype(np.float32),
          "translation": translation.astype(np.float32),
          "audio": np.pad(audio, (0, max(0, n_audio - audio.size)))[:n_audio]}

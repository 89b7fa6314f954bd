"""Procedural multi-identity talking heads with exact ground truth (pure numpy, no JAX).

Why procedural: every quantity a talking-head model is judged on (the image of any identity with
any expression from any pose, depth, region masks, landmarks) can be recomputed exactly, so
held-out-frame, expression-transfer and novel-view metrics need no estimation, and the dataset
needs no download.

Camera and frames
  OpenCV pinhole camera at the world origin (x right, y down, z forward),
  ``fx = fy = FOCAL_SCALE * resolution``, principal point at the image centre, pixel centres at
  +0.5. Head coordinates share the camera axes at zero pose (the face looks towards -z); their
  origin is the neck pivot, with the skull centre at ``SKULL_CENTRE`` (above and in front of the
  pivot), so the head nods and tilts about the neck as real heads do and, with the pivot on the
  optical axis, the head fills the upper two thirds of the frame and neck and shoulders the rest.
  ``X_world = R X_head + t`` with ``R = Ry(yaw) Rx(pitch) Rz(roll)``,
  ``t = (tx, ty, HEAD_DISTANCE + tz)``. Positive yaw turns the face towards image left (the
  subject's right), positive pitch looks down, positive roll tilts the top of the head towards
  image right. "Left"/"right" in names are the subject's: the left eye is at +x.

Geometry (analytic ray casting, nearest hit wins; the union of solids is rendered exactly)
  * skull: an ellipsoid kept above the mouth line ``MOUTH_LINE``; below it the lower face is a
    second ellipsoid whose cross-section at the mouth line equals the skull's, so the surface is
    continuous; ``Identity.jaw_width`` sets where that section lies on the lower ellipsoid
    (square and wide to narrow and round). ``jaw_open`` stretches the lower ellipsoid in y about
    the mouth line by ``1 + JAW_STRETCH * jaw_open``: a real 3-D deformation, the chin drops.
  * nose and ears: ellipsoids; hair: a larger ellipsoid shell kept above a hairline that runs
    from the forehead to the nape.
  * neck and torso: ellipsoids fixed in world space (people turn the head, not the torso).
  * background: a wall at ``WALL_DEPTH`` with a per-identity colour gradient and mild pattern.
  All head primitives lie strictly inside ``HEAD_BOX`` (head coordinates) for every identity and
  expression; a radiance field needs to model only that box.

Appearance
  Eyes (sclera, iris, pupil, lids, lash line), brows, lips, the mouth interior and teeth are
  decals evaluated in *rest* coordinates (the jaw stretch undone), so expressions move them
  exactly with the geometry. Skin carries per-identity low/mid-frequency tone variation, freckles
  and blush, all functions of rest head coordinates, so texture sticks to the head. Lighting is a
  directional light fixed in world space: ``albedo * (AMBIENT + DIFFUSE * max(0, n.l))`` with a
  moderate diffuse share so albedo dominates. rgb is the mean of a 2x2 supersampling grid; depth,
  masks, segmentation come from the pixel-centre ray.

Expression ``EXPRESSION_NAMES``: jaw_open, smile, blink_left, blink_right in [0, 1]; brow_raise in
[-1, 1] (negative lowers the brows).

Outputs of ``render``: ``segmentation`` labels 0 background, 1 skin (incl. brows, lids, nose,
ears), 2 hair, 3 eyes (visible eyeball), 4 lips/mouth (lips, mouth interior, teeth), 5 neck,
6 torso; ``masks`` channels (face = any head surface, lips, eyes, torso_neck); ``depth`` is the
z-depth of the first hit (the wall included); ``landmarks`` are ``LANDMARK_NAMES`` semantic 3-D
points moved by expression and pose, projected to pixel (x, y) (visible or not).

Sequences (``sample_sequence``) are deterministic in (seed, index) and prefix-consistent: the
first T frames of a longer sequence equal a T-frame sequence. A speech-like signal (syllables at
~4-5 Hz with pauses, a harmonic voiced source at 100-250 Hz shaped by formant resonances, noise
bursts for consonants) drives jaw_open through its amplitude envelope; blinks are 3-5 frame
events every 2-5 s; smile and brows are slow random processes; the head moves smoothly over
yaw +-30, pitch +-15, roll +-10 degrees and +-0.1 translation. Video frame i covers the interval
[i/fps, (i+1)/fps) and owns those audio samples; its expression is taken at the interval centre.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np

from minerf_jax import camera

Array = np.ndarray
RGB = tuple[float, float, float]

GENERATOR_VERSION = "3"      # bump whenever render()/sample_sequence() output changes

EXPRESSION_NAMES = ("jaw_open", "smile", "blink_left", "blink_right", "brow_raise")
EXPRESSION_RANGES = ((0.0, 1.0), (0.0, 1.0), (0.0, 1.0), (0.0, 1.0), (-1.0, 1.0))
BLINK_COMPONENTS = (2, 3)   # blink_left, blink_right: the blink signal of the synthetic data

FOCAL_SCALE = 1.4           # fx = fy = FOCAL_SCALE * resolution
HEAD_DISTANCE = 5.0         # depth of the neck pivot (head origin) at zero translation
WALL_DEPTH = 9.0            # z of the background wall
SKULL_CENTRE = (0.0, -0.3, -0.1)   # skull ellipsoid centre in head coordinates
MOUTH_LINE = 0.42           # y of the lips' meeting line, relative to the skull centre
JAW_STRETCH = 0.25          # lower-face y stretch at jaw_open = 1
AMBIENT, DIFFUSE = 0.6, 0.4
LIGHT_DIR = tuple((np.array([-0.45, -0.6, -1.0]) / np.linalg.norm([-0.45, -0.6, -1.0])).tolist())
# Every head primitive (skull, jaw at maximum opening, nose, ears, hair) of every identity lies
# strictly inside this box of head coordinates (tests check it; see head_bounds()).
HEAD_BOX = ((-0.98, -1.56, -1.24), (0.98, 0.94, 1.0))

SEG_BACKGROUND, SEG_SKIN, SEG_HAIR, SEG_EYES, SEG_LIPS, SEG_NECK, SEG_TORSO = range(7)
SEGMENTATION_NAMES = ("background", "skin", "hair", "eyes", "lips_mouth", "neck", "torso")
MASK_NAMES = ("face", "lips", "eyes", "torso_neck")
LANDMARK_NAMES = (
    "eye_r_outer", "eye_r_inner", "eye_l_inner", "eye_l_outer",
    "lid_r_top", "lid_r_bottom", "lid_l_top", "lid_l_bottom",
    "brow_r_outer", "brow_r_mid", "brow_r_inner", "brow_l_inner", "brow_l_mid", "brow_l_outer",
    "nose_root", "nose_tip", "mouth_r", "mouth_l", "lip_upper", "lip_lower", "chin",
    "jaw_r_upper", "jaw_r_mid", "jaw_r_lower", "jaw_l_lower", "jaw_l_mid", "jaw_l_upper")

# Head parts (ids returned by intersect_head).
PART_SKULL, PART_JAW, PART_NOSE, PART_NOSE_TIP, PART_EAR_R, PART_EAR_L, PART_HAIR = range(7)
PART_NAMES = ("skull", "jaw", "nose", "nose_tip", "ear_r", "ear_l", "hair")

# Placement of the facial features relative to the skull centre (shared by decals and landmarks).
EYE_Y = -0.12
BROW_GAP = 0.15             # brow centre above the eye centre
NOSE_Y = 0.1
_HAIR_BACK = 0.38           # hairline height at the nape
_EPS = 1e-6
_CHUNK = 1 << 17            # rays per vectorised batch (bounds memory at 512x512)


@dataclasses.dataclass(frozen=True)
class Identity:
  """One person: shape, colours and texture. All lengths are head units (half-height ~1)."""
  seed: int
  index: int
  radii: RGB                  # skull ellipsoid radii (x, y, z)
  jaw_width: float            # 0 narrow round chin .. 1 wide square jaw
  nose: RGB                   # nose half-width, half-length, protrusion of the tip
  eye_spacing: float          # eye centre |x|
  eye_size: float             # eye half-width
  mouth_width: float          # mouth half-width at rest
  lip_thickness: tuple[float, float]   # upper, lower
  brow_thickness: float
  hairline: float             # y of the front hairline (relative to the skull centre)
  hair_volume: float          # hair shell = skull radii * (1 + hair_volume)
  skin: RGB
  hair: RGB
  brow: RGB
  iris: RGB
  lips: RGB
  shirt: RGB
  shirt_pattern: int          # 0 plain, 1 horizontal stripes, 2 vertical stripes
  wall: tuple[RGB, RGB]       # top and bottom colours of the backdrop gradient
  wall_pattern: int           # 0 diagonal waves, 1 soft dots, 2 checks
  wall_freq: float
  tone_freqs: tuple[RGB, ...]           # skin tone sinusoids (low/mid frequency)
  tone_phases: tuple[float, ...]
  freckles: tuple[RGB, ...]   # (u, v, radius) spots on the face (rest skull coordinates)
  blush: float                # 0..1 cheek redness
  hair_freq: float            # hair strand frequency

  @property
  def jaw_taper(self) -> float:
    """Position u of the mouth-line section on the lower ellipsoid (its centre is u radii up)."""
    return 0.4 - 0.5 * self.jaw_width


_SKINS = np.array([[0.95, 0.80, 0.69], [0.84, 0.64, 0.50], [0.66, 0.46, 0.33],
                   [0.45, 0.30, 0.21], [0.91, 0.72, 0.58], [0.75, 0.55, 0.40]])
_HAIRS = np.array([[0.09, 0.07, 0.06], [0.50, 0.31, 0.14], [0.88, 0.74, 0.42],
                   [0.55, 0.17, 0.07], [0.72, 0.72, 0.75], [0.27, 0.18, 0.12]])
_IRISES = np.array([[0.33, 0.19, 0.08], [0.22, 0.45, 0.75], [0.25, 0.52, 0.30],
                    [0.50, 0.38, 0.18]])


def _rng(seed: int, index: int, stream: int) -> np.random.Generator:
  return np.random.default_rng([stream, seed, index])


def _jitter(r: np.random.Generator, colour: Array) -> RGB:
  """Palette colour with a random brightness (+-5%) and a slight hue shift."""
  out = colour * r.normal(1.0, 0.05) + r.normal(0.0, 0.012, 3)
  return tuple(np.clip(out, 0.02, 0.98).tolist())


def _freckles(r: np.random.Generator) -> tuple[RGB, ...]:
  """0-45 small spots spread over the cheeks and nose (none for ~40% of identities)."""
  count = int(r.integers(15, 46)) if r.random() < 0.6 else 0
  u = r.normal(0.0, 0.22, count)
  v = r.uniform(-0.05, 0.3, count)
  return tuple(map(tuple, np.stack([u, v, r.uniform(0.008, 0.016, count)], -1).tolist()))


def _hsv(h: float, s: float, v: float) -> Array:
  k = (np.array([5.0, 3.0, 1.0]) + h * 6.0) % 6.0
  return v - v * s * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)


def make_identity(seed: int, index: int) -> Identity:
  """A distinct person, deterministic in (seed, index); index is any int >= 0.

  Skin, hair and iris colours come from palettes through a per-seed permutation, so the first six
  identities of any seed all differ in skin and hair; shapes and textures are drawn per identity.
  """
  if index < 0:
    raise ValueError(f"identity index must be >= 0, got {index}")
  skin_order = np.random.default_rng([11, seed]).permutation(len(_SKINS))
  hair_order = np.random.default_rng([12, seed]).permutation(len(_HAIRS))
  iris_order = np.random.default_rng([13, seed]).permutation(len(_IRISES))
  r = _rng(seed, index, 0)
  skin = np.array(_jitter(r, _SKINS[skin_order[index % len(_SKINS)]]))
  hair = np.array(_jitter(r, _HAIRS[hair_order[index % len(_HAIRS)]]))
  brow = np.clip(0.6 * hair + 0.4 * np.array([0.2, 0.13, 0.09]), 0, 1) * r.uniform(0.7, 0.9)
  lips = np.clip(skin * np.array([0.92, 0.55, 0.58]) * r.uniform(0.8, 1.0), 0.05, 0.95)
  wall_hue = r.uniform()
  k_tone = 4
  return Identity(
      seed=seed,
      index=index,
      radii=(float(r.uniform(0.70, 0.82)), float(r.uniform(0.95, 1.05)),
             float(r.uniform(0.82, 0.92))),
      jaw_width=float(r.uniform(0.0, 1.0)),
      nose=(float(r.uniform(0.085, 0.115)), float(r.uniform(0.17, 0.22)),
            float(r.uniform(0.15, 0.21))),
      eye_spacing=float(r.uniform(0.26, 0.32)),
      eye_size=float(r.uniform(0.11, 0.135)),
      mouth_width=float(r.uniform(0.16, 0.21)),
      lip_thickness=(float(r.uniform(0.03, 0.05)), float(r.uniform(0.04, 0.065))),
      brow_thickness=float(r.uniform(0.018, 0.034)),
      hairline=float(r.uniform(-0.62, -0.4)),
      hair_volume=float(r.uniform(0.05, 0.17)),
      skin=tuple(skin.tolist()),
      hair=tuple(hair.tolist()),
      brow=tuple(brow.tolist()),
      iris=_jitter(r, _IRISES[iris_order[index % len(_IRISES)]]),
      lips=tuple(lips.tolist()),
      shirt=tuple(_hsv(r.uniform(), r.uniform(0.3, 0.8), r.uniform(0.3, 0.85)).tolist()),
      shirt_pattern=int(r.integers(3)),
      wall=(tuple(_hsv(wall_hue, r.uniform(0.1, 0.4), r.uniform(0.55, 0.9)).tolist()),
            tuple(_hsv((wall_hue + r.uniform(0.05, 0.3)) % 1, r.uniform(0.1, 0.4),
                       r.uniform(0.3, 0.7)).tolist())),
      wall_pattern=int(r.integers(3)),
      wall_freq=float(r.uniform(1.5, 4.0)),
      tone_freqs=tuple(map(tuple, (r.normal(0, 1, (k_tone, 3)) *
                                   r.uniform(2.5, 6.0, (k_tone, 1))).tolist())),
      tone_phases=tuple(r.uniform(0, 2 * np.pi, k_tone).tolist()),
      freckles=_freckles(r),
      blush=float(r.uniform(0.0, 0.6)),
      hair_freq=float(r.uniform(30.0, 60.0)))


# ----------------------------------------------------------------------------------------------
# Camera and pose.


def camera_intrinsics(resolution: int) -> Array:
  """float32 [3,3] pinhole intrinsics: fx = fy = FOCAL_SCALE * res, principal point at centre."""
  return camera.intrinsics(FOCAL_SCALE * resolution, resolution / 2.0, resolution / 2.0)


def pose_matrix(yaw: float, pitch: float, roll: float, translation: Sequence[float]
                ) -> tuple[Array, Array]:
  """Head-to-camera (R float32 [3,3], t float32 [3]): X_cam = R X_head + t.

  R is ``camera.rotation_matrix(yaw, pitch, roll)``; t = (tx, ty, HEAD_DISTANCE + tz) for
  translation (tx, ty, tz).
  """
  t = np.asarray(translation, np.float64) + np.array([0.0, 0.0, HEAD_DISTANCE])
  return camera.rotation_matrix(yaw, pitch, roll).astype(np.float32), t.astype(np.float32)


def pixel_rays(resolution: int, offsets: tuple[float, float] = (0.5, 0.5)) -> Array:
  """float64 [H*W,3] camera-frame directions with unit z (a hit's ray parameter is its z-depth)."""
  pixels = camera.pixel_grid(resolution, resolution, offsets, np.float64).reshape(-1, 2)
  k = camera_intrinsics(resolution).astype(np.float64)
  return camera.unproject(pixels, np.ones(len(pixels)), k)


# ----------------------------------------------------------------------------------------------
# Geometry. Head primitives are built in skull coordinates (head coordinates - SKULL_CENTRE).


def _jaw_scale(jaw_open: float) -> float:
  return 1.0 + JAW_STRETCH * float(np.clip(jaw_open, 0.0, 1.0))


def _primitives(ident: Identity, jaw_open: float) -> tuple[Array, Array]:
  """(centres [P,3], radii [P,3]) of the PART_* ellipsoids in skull coordinates.

  The nose is a narrow bridge ellipsoid flush with the face between the eyes plus a rounder tip
  ellipsoid protruding ``nose[2]`` from the face surface.
  """
  rx, ry, rz = ident.radii
  u = ident.jaw_taper
  section = np.sqrt(1.0 - (MOUTH_LINE / ry) ** 2)   # skull half-width at the mouth line / rx
  ay = (ry - MOUTH_LINE) / (1.0 - u) * _jaw_scale(jaw_open)
  lateral = section / np.sqrt(1.0 - u * u)
  nx, ny, nz = ident.nose
  face_z = lambda y: -rz * np.sqrt(1.0 - (y / ry) ** 2)
  tip_y, tip_r = NOSE_Y + 0.55 * ny, (nx, 0.075, 0.09)
  ear = (0.07, 0.19, 0.11)
  hv = 1.0 + ident.hair_volume
  centres = np.array([
      [0.0, 0.0, 0.0],
      [0.0, MOUTH_LINE - u * ay, 0.0],
      [0.0, NOSE_Y, face_z(NOSE_Y) + 0.02],
      [0.0, tip_y, face_z(tip_y) - nz + tip_r[2]],
      [-0.95 * rx, 0.02, 0.1 * rz],
      [0.95 * rx, 0.02, 0.1 * rz],
      [0.0, 0.0, 0.0]])
  radii = np.array([
      [rx, ry, rz],
      [rx * lateral, ay, rz * lateral],
      [0.055, ny, 0.6 * nz],
      tip_r,
      ear,
      ear,
      [rx * hv, ry * hv, rz * hv]])
  return centres, radii


def head_bounds(ident: Identity, jaw_open: float = 1.0) -> tuple[Array, Array]:
  """Axis-aligned bounds (head coordinates) of the head: each primitive's box, truncated.

  Truncations: the skull ends at the mouth line (below), the lower face starts there (above;
  it is widest at its centre only when that lies below the mouth line), hair ends at the nape.
  """
  centres, radii = _primitives(ident, jaw_open)
  lo, hi = centres - radii, centres + radii
  hi[PART_SKULL, 1] = MOUTH_LINE
  lo[PART_JAW, 1] = MOUTH_LINE
  if centres[PART_JAW, 1] < MOUTH_LINE:
    section = np.sqrt(1.0 - ((MOUTH_LINE - centres[PART_JAW, 1]) / radii[PART_JAW, 1]) ** 2)
    lo[PART_JAW, [0, 2]] = centres[PART_JAW, [0, 2]] - section * radii[PART_JAW, [0, 2]]
    hi[PART_JAW, [0, 2]] = centres[PART_JAW, [0, 2]] + section * radii[PART_JAW, [0, 2]]
  hi[PART_HAIR, 1] = min(hi[PART_HAIR, 1], _HAIR_BACK)
  skull = np.asarray(SKULL_CENTRE)
  return lo.min(0) + skull, hi.max(0) + skull


def _ray_ellipsoid(o: Array, d: Array, centre: Array, radii: Array) -> tuple[Array, Array]:
  """Both ray parameters (t0 <= t1) where o + t d meets the ellipsoid; NaN where it misses."""
  oc = (o - centre) / radii
  dc = d / radii
  a = np.einsum("ij,ij->i", dc, dc)
  b = np.einsum("ij,ij->i", oc, dc)
  c = np.einsum("ij,ij->i", oc, oc) - 1.0
  disc = b * b - a * c
  with np.errstate(invalid="ignore"):
    sq = np.sqrt(disc)
  return (-b - sq) / a, (-b + sq) / a


def _first_valid(o: Array, d: Array, roots: tuple[Array, Array],
                 keep: Callable[[Array], Array] | None = None) -> Array:
  """Smallest positive root whose point satisfies ``keep`` (a truncated surface); inf if none."""
  out = np.full(o.shape[0], np.inf)
  for t in roots[::-1]:
    with np.errstate(invalid="ignore"):
      ok = t > _EPS
      if keep is not None:
        ok &= keep(o + np.where(ok, t, 0.0)[:, None] * d)
    out = np.where(ok, t, out)
  return out


def _hair_line(p: Array, ident: Identity) -> Array:
  """y of the hair's lower edge at point p: the front hairline rising to the nape at the back."""
  back = _smoothstep(-0.55, 0.75, p[:, 2] / (ident.radii[2] * (1.0 + ident.hair_volume)))
  return ident.hairline + (_HAIR_BACK - ident.hairline) * back


def _intersect_skull_coords(o: Array, d: Array, ident: Identity, jaw_open: float
                            ) -> tuple[Array, Array]:
  """(t, part) of the nearest hit of the union of head parts; rays in skull coordinates."""
  centres, radii = _primitives(ident, jaw_open)
  roots = [_ray_ellipsoid(o, d, c, r) for c, r in zip(centres, radii)]
  candidates = np.stack([
      _first_valid(o, d, roots[PART_SKULL], lambda p: p[:, 1] <= MOUTH_LINE),
      _first_valid(o, d, roots[PART_JAW], lambda p: p[:, 1] > MOUTH_LINE),
      _first_valid(o, d, roots[PART_NOSE]),
      _first_valid(o, d, roots[PART_NOSE_TIP]),
      _first_valid(o, d, roots[PART_EAR_R]),
      _first_valid(o, d, roots[PART_EAR_L]),
      _first_valid(o, d, roots[PART_HAIR], lambda p: p[:, 1] < _hair_line(p, ident)),
  ], -1)
  part = np.argmin(candidates, -1).astype(np.int8)
  return np.take_along_axis(candidates, part[:, None].astype(np.intp), -1)[:, 0], part


def intersect_head(ident: Identity, expression: Sequence[float], origins: Array,
                   directions: Array) -> tuple[Array, Array]:
  """Nearest head hit of rays given in head coordinates: (t [N] (inf: miss), part [N] int8).

  The hit point is origins + t * directions; part indexes PART_NAMES.
  """
  o = np.asarray(origins, np.float64) - np.asarray(SKULL_CENTRE)
  return _intersect_skull_coords(o, np.asarray(directions, np.float64), ident,
                                 float(expression[0]))


def _ray_box(o: Array, d: Array, lo: Array, hi: Array) -> Array:
  """Rays that meet the box [lo, hi] at positive t."""
  with np.errstate(divide="ignore", invalid="ignore"):
    inv = 1.0 / d
    t0, t1 = (lo - o) * inv, (hi - o) * inv
  near = np.nanmax(np.minimum(t0, t1), -1)
  far = np.nanmin(np.maximum(t0, t1), -1)
  return far >= np.maximum(near, 0.0)


_NECK = (np.array([0.0, 0.95, HEAD_DISTANCE + 0.12]), np.array([0.36, 0.85, 0.36]))
_TORSO = (np.array([0.0, 2.3, HEAD_DISTANCE + 0.3]), np.array([1.65, 1.05, 0.7]))


# ----------------------------------------------------------------------------------------------
# Appearance.


def _smoothstep(e0: float, e1: float, x: Array) -> Array:
  u = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
  return u * u * (3.0 - 2.0 * u)


def _eye_geometry(ident: Identity) -> tuple[float, float]:
  return ident.eye_size, 0.5 * ident.eye_size          # half-width, half-height


def _lid_edge(du: Array, eh: float, blink: float) -> Array:
  """v offset of the upper lid edge from the eye centre: the almond's top edge at blink 0, its
  bottom edge at blink 1 (the eye is covered above the lid edge)."""
  shape = eh * np.clip(1.0 - du * du, 0.0, 1.0)
  return -shape + 2.0 * shape * np.clip(blink, 0.0, 1.0)


def _brow_v(du: Array, brow_raise: float) -> Array:
  """Rest height of a brow at du (-1 inner end .. 1 outer end); raising lifts the inner end more."""
  return EYE_Y - BROW_GAP - 0.06 * brow_raise + 0.045 * du * du + 0.015 * du * brow_raise


def _mouth_shape(ident: Identity, jaw_open: float, smile: float
                 ) -> tuple[float, float, float, tuple[float, float]]:
  """(half-width, corner lift, opening half-height at the centre, lip thicknesses)."""
  half_w = ident.mouth_width + 0.06 * smile
  lift = 0.06 * smile
  gap = 0.075 * jaw_open + 0.008 * smile
  return half_w, lift, gap, ident.lip_thickness


def _face_decals(q: Array, ident: Identity, expression: Array) -> tuple[Array, Array]:
  """(albedo [N,3] with NaN where no decal, label [N]) at rest skull coordinates q."""
  jaw, smile, blink_l, blink_r, brow_raise = (float(v) for v in expression)
  u, v = q[:, 0], q[:, 1]
  n = q.shape[0]
  colour = np.full((n, 3), np.nan)
  label = np.zeros(n, np.int8)
  front = q[:, 2] < -0.25
  ew, eh = _eye_geometry(ident)
  for side, blink in ((-1.0, blink_r), (1.0, blink_l)):
    cx = side * ident.eye_spacing
    du, dv = (u - cx) / ew, v - EYE_Y
    almond = eh * np.clip(1.0 - du * du, 0.0, 1.0)
    inside = front & (np.abs(du) < 1.0) & (np.abs(dv) < almond)
    edge = _lid_edge(du, eh, blink)
    visible = inside & (dv >= edge)
    lid = inside & ~visible
    rr = np.hypot(u - cx, dv)
    eyeball = np.where((rr < 0.42 * eh)[:, None], np.array([0.03, 0.03, 0.04]),
                       np.where((rr < 0.85 * eh)[:, None], np.asarray(ident.iris),
                                np.array([0.95, 0.94, 0.91])))
    colour[visible] = eyeball[visible]
    label[visible] = SEG_EYES
    colour[lid] = np.asarray(ident.skin) * 0.88
    lash = front & (np.abs(du) < 1.05) & (dv < edge + 0.012) & (dv > edge - 0.006) & (
        np.abs(dv) < almond + 0.012)
    colour[lash] = np.array([0.08, 0.06, 0.05])
    label[lash] = 0
    bu = (u - side * (ident.eye_spacing + 0.015)) / (ew + 0.05)
    in_brow = front & (np.abs(bu) < 1.0) & (
        np.abs(v - _brow_v(side * bu, brow_raise)) < ident.brow_thickness * (1.2 - 0.4 * bu * bu))
    colour[in_brow] = np.asarray(ident.brow)
  half_w, lift, gap, (upper_t, lower_t) = _mouth_shape(ident, jaw, smile)
  mu = u / half_w
  shape = np.sqrt(np.clip(1.0 - mu * mu, 0.0, 1.0))
  dv = v - (MOUTH_LINE - lift * mu * mu)
  in_mouth = front & (np.abs(mu) < 1.0)
  opening = in_mouth & (np.abs(dv) < gap * shape)
  upper = in_mouth & ~opening & (dv < 0) & (dv > -(gap + upper_t) * shape - 0.004)
  lower = in_mouth & ~opening & (dv >= 0) & (dv < (gap + lower_t) * shape + 0.004)
  lips = upper | lower
  colour[lips] = np.asarray(ident.lips) * np.where(upper[lips], 0.9, 1.0)[:, None]
  colour[opening] = np.array([0.24, 0.05, 0.06])
  teeth = opening & (dv < -gap * shape + 0.035) & (np.abs(mu) < 0.75)
  colour[teeth] = np.array([0.93, 0.91, 0.86])
  label[lips | opening] = SEG_LIPS
  return colour, label


def _skin_albedo(q: Array, ident: Identity) -> Array:
  tone = np.sin(q @ np.asarray(ident.tone_freqs).T + np.asarray(ident.tone_phases)).mean(-1)
  freckle = np.zeros(q.shape[0])
  if ident.freckles:
    spots = np.asarray(ident.freckles)
    d2 = (q[:, :1] - spots[:, 0]) ** 2 + (q[:, 1:2] - spots[:, 1]) ** 2
    freckle = (d2 < spots[:, 2] ** 2).any(-1) & (q[:, 2] < -0.3)
  cheeks = np.exp(-((np.abs(q[:, 0]) - 0.38) ** 2 + (q[:, 1] - 0.15) ** 2) / 0.012) * (
      q[:, 2] < 0)
  albedo = np.asarray(ident.skin) * (1.0 + 0.07 * tone - 0.2 * freckle)[:, None]
  blush = ident.blush * cheeks
  return albedo * (1.0 - 0.35 * blush[:, None]) + 0.35 * blush[:, None] * np.array(
      [0.85, 0.35, 0.35])


def _hair_albedo(q: Array, ident: Identity) -> Array:
  strands = 1.0 + 0.14 * np.sin(ident.hair_freq * (q[:, 0] + 0.15 * np.sin(6.0 * q[:, 1])))
  sheen = 1.0 + 0.08 * np.sin(7.0 * q[:, 2] + 3.0 * q[:, 1])
  return np.clip(np.asarray(ident.hair) * (strands * sheen)[:, None], 0.0, 1.0)


def _unit(v: Array) -> Array:
  return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


def _lambert(albedo: Array, normal: Array, view: Array) -> Array:
  """albedo * (AMBIENT + DIFFUSE * max(0, n.l)); n is flipped to face the viewer."""
  n = _unit(normal)
  n = np.where(np.einsum("ij,ij->i", n, view)[:, None] > 0, -n, n)
  return albedo * (AMBIENT + DIFFUSE * np.clip(n @ np.asarray(LIGHT_DIR), 0.0, 1.0))[:, None]


def _head_appearance(p: Array, part: Array, d: Array, ident: Identity, expression: Array,
                     rotation: Array) -> tuple[Array, Array]:
  """(shaded rgb, label) at head hits p [N,3] (skull coordinates) of rays d (skull coords)."""
  centres, radii = _primitives(ident, float(expression[0]))
  normal = _unit((p - centres[part]) / radii[part] ** 2)
  jaw = part == PART_JAW
  face = (part == PART_SKULL) | jaw
  # Shading normal: blend skull and lower-face normals across the mouth line (the surfaces meet
  # with a crease; geometry is unchanged, only the shading is smoothed).
  w = _smoothstep(MOUTH_LINE - 0.15, MOUTH_LINE + 0.15, p[face, 1])[:, None]
  normal[face] = ((1.0 - w) * _unit(p[face] / radii[PART_SKULL] ** 2) +
                  w * _unit((p[face] - centres[PART_JAW]) / radii[PART_JAW] ** 2))
  q = p.copy()
  q[jaw, 1] = MOUTH_LINE + (p[jaw, 1] - MOUTH_LINE) / _jaw_scale(float(expression[0]))
  hair = part == PART_HAIR
  albedo = np.where(hair[:, None], _hair_albedo(q, ident), _skin_albedo(q, ident))
  label = np.where(hair, SEG_HAIR, SEG_SKIN).astype(np.int8)
  if face.any():
    decal, decal_label = _face_decals(q[face], ident, expression)
    has = ~np.isnan(decal[:, 0])
    idx = np.flatnonzero(face)
    albedo[idx[has]] = decal[has]
    label[idx] = np.where(decal_label > 0, decal_label, label[idx])
  return _lambert(albedo, normal @ rotation.T, d @ rotation.T), label


def _body_appearance(p: Array, which: int, ident: Identity) -> Array:
  centre, radii = _NECK if which == 0 else _TORSO
  normal = (p - centre) / radii ** 2
  if which == 0:
    albedo = np.broadcast_to(np.asarray(ident.skin) * 0.93, p.shape)
  else:
    coord = (p[:, 1], p[:, 0], p[:, 0])[ident.shirt_pattern]
    stripes = 1.0 + (ident.shirt_pattern > 0) * 0.12 * np.sign(np.sin(9.0 * coord))
    albedo = np.asarray(ident.shirt) * stripes[:, None]
  return _lambert(albedo, normal, p)


def _wall_appearance(p: Array, ident: Identity) -> Array:
  x, y = p[:, 0], p[:, 1]
  g = _smoothstep(-3.5, 3.5, y)[:, None]
  base = (1.0 - g) * np.asarray(ident.wall[0]) + g * np.asarray(ident.wall[1])
  f = ident.wall_freq
  pattern = (np.sin(f * (x + y)),
             np.tanh(3.0 * np.sin(f * x) * np.sin(f * y)),
             np.sign(np.sin(f * x) * np.sin(f * y)))[ident.wall_pattern]
  lit = AMBIENT + DIFFUSE * max(0.0, -LIGHT_DIR[2])
  return base * (1.0 + 0.05 * pattern)[:, None] * lit


def _shade_rays(dirs: Array, ident: Identity, expression: Array, rotation: Array,
                translation: Array) -> tuple[Array, Array, Array]:
  """(rgb [N,3], depth [N], label [N]) for camera rays o=0, d=dirs (unit z)."""
  n = dirs.shape[0]
  skull = np.asarray(SKULL_CENTRE)
  o_s = (-translation) @ rotation - skull          # camera centre in skull coordinates
  d_s = dirs @ rotation
  o_s = np.broadcast_to(o_s, d_s.shape)
  t_head = np.full(n, np.inf)
  part = np.zeros(n, np.int8)
  lo, hi = np.asarray(HEAD_BOX) - skull
  near_head = np.flatnonzero(_ray_box(o_s, d_s, lo, hi))
  if near_head.size:
    t_head[near_head], part[near_head] = _intersect_skull_coords(
        o_s[near_head], d_s[near_head], ident, float(expression[0]))
  zero = np.zeros_like(dirs)
  t_neck = _first_valid(zero, dirs, _ray_ellipsoid(zero, dirs, *_NECK))
  t_torso = _first_valid(zero, dirs, _ray_ellipsoid(zero, dirs, *_TORSO))
  t_wall = WALL_DEPTH / dirs[:, 2]
  ts = np.stack([t_head, t_neck, t_torso, t_wall], -1)
  which = np.argmin(ts, -1)
  t = ts[np.arange(n), which]
  rgb = np.zeros((n, 3))
  label = np.full(n, SEG_BACKGROUND, np.int8)
  sel = which == 0
  if sel.any():
    p = o_s[sel] + t[sel, None] * d_s[sel]
    rgb[sel], label[sel] = _head_appearance(p, part[sel], d_s[sel], ident, expression, rotation)
  for k, seg in ((1, SEG_NECK), (2, SEG_TORSO)):
    sel = which == k
    if sel.any():
      rgb[sel] = _body_appearance(dirs[sel] * t[sel, None], k - 1, ident)
      label[sel] = seg
  sel = which == 3
  rgb[sel] = _wall_appearance(dirs[sel] * t[sel, None], ident)
  return np.clip(rgb, 0.0, 1.0), t, label


def _shade_chunked(dirs: Array, *args) -> tuple[Array, Array, Array]:
  parts = [_shade_rays(dirs[i:i + _CHUNK], *args) for i in range(0, dirs.shape[0], _CHUNK)]
  return tuple(np.concatenate(x) for x in zip(*parts))


# ----------------------------------------------------------------------------------------------
# Landmarks and the renderer.


def _front_z(ident: Identity, u: Array, v: Array) -> Array:
  """z of the face surface at rest skull coordinates (u, v) (skull above, lower face below)."""
  centres, radii = _primitives(ident, 0.0)
  part = np.where(v <= MOUTH_LINE, PART_SKULL, PART_JAW)
  c, r = centres[part], radii[part]
  inside = 1.0 - ((u - c[:, 0]) / r[:, 0]) ** 2 - ((v - c[:, 1]) / r[:, 1]) ** 2
  return c[:, 2] - r[:, 2] * np.sqrt(np.clip(inside, 0.0, 1.0))


def _half_width(ident: Identity, v: Array) -> Array:
  """Half-width of the face's silhouette at rest height v."""
  centres, radii = _primitives(ident, 0.0)
  part = np.where(v <= MOUTH_LINE, PART_SKULL, PART_JAW)
  c, r = centres[part], radii[part]
  return r[:, 0] * np.sqrt(np.clip(1.0 - ((v - c[:, 1]) / r[:, 1]) ** 2, 0.0, 1.0))


def landmarks_3d(ident: Identity, expression: Sequence[float]) -> Array:
  """float64 [L,3] LANDMARK_NAMES points in head coordinates for this expression (zero pose)."""
  jaw, smile, blink_l, blink_r, brow_raise = (float(v) for v in expression)
  ew, eh = _eye_geometry(ident)
  ex = ident.eye_spacing
  half_w, lift, gap, (upper_t, lower_t) = _mouth_shape(ident, jaw, smile)
  chin_v = MOUTH_LINE + 0.9 * (ident.radii[1] - MOUTH_LINE)
  jaw_v = np.array([MOUTH_LINE - 0.1, MOUTH_LINE + 0.3 * (chin_v - MOUTH_LINE),
                    MOUTH_LINE + 0.65 * (chin_v - MOUTH_LINE)])
  jaw_u = 0.93 * _half_width(ident, jaw_v)
  brow = lambda du: float(_brow_v(np.asarray(du), brow_raise))
  uv = np.array([
      (-(ex + ew), EYE_Y), (-(ex - ew), EYE_Y), (ex - ew, EYE_Y), (ex + ew, EYE_Y),
      (-ex, EYE_Y + float(_lid_edge(np.zeros(()), eh, blink_r))), (-ex, EYE_Y + eh),
      (ex, EYE_Y + float(_lid_edge(np.zeros(()), eh, blink_l))), (ex, EYE_Y + eh),
      (-(ex + 0.015 + ew + 0.05), brow(1.0)), (-(ex + 0.015), brow(0.0)),
      (-(ex + 0.015 - ew - 0.05), brow(-1.0)), (ex + 0.015 - ew - 0.05, brow(-1.0)),
      (ex + 0.015, brow(0.0)), (ex + 0.015 + ew + 0.05, brow(1.0)),
      (0.0, EYE_Y), (0.0, NOSE_Y + 0.55 * ident.nose[1]),
      (-half_w, MOUTH_LINE - lift), (half_w, MOUTH_LINE - lift),
      (0.0, MOUTH_LINE - gap - upper_t), (0.0, MOUTH_LINE + gap + lower_t), (0.0, chin_v),
      (-jaw_u[0], jaw_v[0]), (-jaw_u[1], jaw_v[1]), (-jaw_u[2], jaw_v[2]),
      (jaw_u[2], jaw_v[2]), (jaw_u[1], jaw_v[1]), (jaw_u[0], jaw_v[0])])
  u, v = uv[:, 0], uv[:, 1]
  z = _front_z(ident, u, v)
  centres, radii = _primitives(ident, 0.0)
  z[LANDMARK_NAMES.index("nose_tip")] = centres[PART_NOSE_TIP, 2] - radii[PART_NOSE_TIP, 2]
  y = np.where(v > MOUTH_LINE, MOUTH_LINE + (v - MOUTH_LINE) * _jaw_scale(jaw), v)
  return np.stack([u, y, z], -1) + np.asarray(SKULL_CENTRE)


def render(ident: Identity, expression: Sequence[float], rotation: Array, translation: Array,
           resolution: int, supersample: int = 2) -> dict[str, Array]:
  """One frame of ``ident`` with ``expression`` at head pose (rotation, translation).

  Returns rgb float32 [H,W,3] in [0,1] (mean of supersample^2 sub-pixel rays), depth float32
  [H,W], masks bool [H,W,4] (MASK_NAMES), segmentation uint8 [H,W] (SEG_*), landmarks float32
  [L,2] (pixel x, y). depth/masks/segmentation come from the pixel-centre ray.
  """
  expression = np.asarray(expression, np.float64)
  rotation = np.asarray(rotation, np.float64)
  translation = np.asarray(translation, np.float64)
  args = (ident, expression, rotation, translation)
  centre = pixel_rays(resolution)
  offsets = (np.arange(supersample) + 0.5) / supersample
  subs = [pixel_rays(resolution, (ox, oy)) for oy in offsets for ox in offsets]
  rgb, depth, label = _shade_chunked(np.concatenate([centre] + subs), *args)
  hw = resolution * resolution
  rgb = rgb[hw:].reshape(len(subs), hw, 3).mean(0) if subs else rgb[:hw]
  seg = label[:hw].reshape(resolution, resolution).astype(np.uint8)
  masks = np.stack([np.isin(seg, (SEG_SKIN, SEG_HAIR, SEG_EYES, SEG_LIPS)), seg == SEG_LIPS,
                    seg == SEG_EYES, np.isin(seg, (SEG_NECK, SEG_TORSO))], -1)
  points = landmarks_3d(ident, expression) @ rotation.T + translation
  return {
      "rgb": rgb.reshape(resolution, resolution, 3).astype(np.float32),
      "depth": depth[:hw].reshape(resolution, resolution).astype(np.float32),
      "masks": masks,
      "segmentation": seg,
      "landmarks": camera.project(points, camera_intrinsics(resolution)).astype(np.float32),
  }


# ----------------------------------------------------------------------------------------------
# Sequences: speech-like audio driving the jaw, blinks, smiles, brows and head motion.

_AUDIO_GAIN = 0.35
_ENVELOPE_REF = 0.09        # frame RMS that maps to jaw_open = 1 (loud syllable peaks)
_LOOKAHEAD = 4              # extra frames synthesised so every frame's context is real audio


def _syllable(rng: np.random.Generator, n: int, sample_rate: int, f0: Array) -> Array:
  """One syllable: harmonics of f0 [n] shaped by three formants, a noise burst onset."""
  formants = np.array([rng.uniform(300, 850), rng.uniform(850, 2400), rng.uniform(2300, 3000)])
  bandwidth = np.array([90.0, 130.0, 180.0])
  amplitude = np.array([1.0, 0.6, 0.25])
  phase = 2.0 * np.pi * np.cumsum(f0) / sample_rate
  k = np.arange(1, int(4000 // f0.max()) + 1)
  fk = k * f0.mean()
  gains = (amplitude / (1.0 + ((fk[:, None] - formants) / bandwidth) ** 2)).sum(-1) / k ** 0.5
  voiced = (gains[:, None] * np.sin(k[:, None] * phase)).sum(0) / gains.sum()
  x = np.linspace(0.0, 1.0, n)
  env = np.sin(np.pi * x) ** 0.6 * rng.uniform(0.55, 1.0)
  burst_len = int(rng.uniform(0.015, 0.045) * sample_rate)
  noise = np.diff(rng.normal(0.0, 1.0, burst_len + 1)) * rng.uniform(0.1, 0.3)
  out = voiced * env
  if rng.random() < 0.5:
    m = min(burst_len, n)
    out[:m] += noise[:m] * np.linspace(1.0, 0.0, m)
  return out


def speech_audio(rng: np.random.Generator, num_samples: int, sample_rate: int) -> Array:
  """float32 [num_samples] speech-like signal; prefix-consistent in num_samples.

  Syllables of 0.12-0.26 s (~4-5 per second) separated by short gaps and, now and then, pauses
  of 0.2-0.6 s; pitch 100-250 Hz from a speaker base f0 with slow intonation.
  """
  base_f0 = rng.uniform(115.0, 205.0)
  intonation = (rng.uniform(0.2, 0.6), rng.uniform(0, 2 * np.pi))
  out = np.zeros(num_samples)
  t = rng.uniform(0.05, 0.2)
  while int(t * sample_rate) < num_samples:
    if rng.random() < 0.15:
      t += rng.uniform(0.2, 0.6)
    dur = rng.uniform(0.12, 0.26)
    i0 = int(t * sample_rate)
    if i0 >= num_samples:
      break
    n = int(dur * sample_rate)
    time = t + np.arange(n) / sample_rate
    f0 = base_f0 * (1.0 + 0.15 * np.sin(2 * np.pi * intonation[0] * time + intonation[1]))
    f0 = f0 * rng.uniform(0.95, 1.05)
    seg = _syllable(rng, n, sample_rate, f0)
    m = min(n, num_samples - i0)
    out[i0:i0 + m] += seg[:m]
    t += dur + rng.uniform(0.02, 0.08)
  return np.clip(_AUDIO_GAIN * out, -1.0, 1.0).astype(np.float32)


def audio_envelope(audio: Array, sample_rate: int, fps: float, num_frames: int) -> Array:
  """[num_frames] RMS of 40 ms windows centred on each frame's interval centre (i+0.5)/fps."""
  power = np.concatenate([[0.0], np.cumsum(np.asarray(audio, np.float64) ** 2)])
  half = int(0.02 * sample_rate)
  centre = np.round((np.arange(num_frames) + 0.5) / fps * sample_rate).astype(int)
  lo = np.clip(centre - half, 0, audio.size)
  hi = np.clip(centre + half, 0, audio.size)
  return np.sqrt((power[hi] - power[lo]) / np.maximum(hi - lo, 1))


def _slow_process(rng: np.random.Generator, t: Array, freqs: Sequence[tuple[float, float]],
                  sharpness: float = 1.5) -> Array:
  """Smooth random signal in (-1, 1): tanh-squashed sum of sinusoids with seeded phases."""
  weights = rng.uniform(0.5, 1.0, len(freqs))
  out = sum(w * np.sin(2 * np.pi * rng.uniform(*f) * t + rng.uniform(0, 2 * np.pi))
            for w, f in zip(weights, freqs)) / weights.sum()
  return np.tanh(sharpness * out) / np.tanh(sharpness)


def _blinks(rng: np.random.Generator, num_frames: int, fps: float) -> tuple[Array, Array]:
  """(left, right) blink tracks: 3-5 frame closures every 2-5 s, ~15% of them one-eyed."""
  left, right = np.zeros(num_frames), np.zeros(num_frames)
  k = int(rng.uniform(0.3, 2.0) * fps)
  while k < num_frames:
    length = int(rng.integers(3, 6))
    profile = np.minimum(1.0, 1.25 * np.sin(np.pi * (np.arange(length) + 0.5) / length))
    eyes = int(rng.choice(3, p=[0.85, 0.075, 0.075]))   # 0 both, 1 left only, 2 right only
    m = min(length, num_frames - k)
    if eyes in (0, 1):
      left[k:k + m] = profile[:m]
    if eyes in (0, 2):
      right[k:k + m] = profile[:m]
    k += int(rng.uniform(2.0, 5.0) * fps)
  return left, right


def sample_sequence(seed: int, index: int, num_frames: int, fps: float = 25.0,
                    sample_rate: int = 16000) -> dict[str, Array]:
  """A talking sequence of identity (seed, index).

  Returns expression float32 [T,5] (EXPRESSION_NAMES), yaw_pitch_roll float32 [T,3] (radians),
  translation float32 [T,3], audio float32 [round(T * sample_rate / fps)].
  """
  total = num_frames + _LOOKAHEAD
  n_audio = int(round(num_frames * sample_rate / fps))
  audio = speech_audio(_rng(seed, index, 1), int(round(total * sample_rate / fps)), sample_rate)
  env = audio_envelope(audio, sample_rate, fps, total)
  jaw = np.clip(env / _ENVELOPE_REF, 0.0, 1.0) ** 0.75
  jaw = np.convolve(np.pad(jaw, 1, mode="edge"), [0.25, 0.5, 0.25], mode="valid")[:num_frames]
  t = np.arange(num_frames) / fps
  r = _rng(seed, index, 2)
  smile = np.clip(0.35 + 0.75 * _slow_process(r, t, ((0.05, 0.15), (0.15, 0.4))), 0.0, 1.0)
  brow = 0.9 * _slow_process(r, t, ((0.1, 0.3), (0.3, 0.8)))
  blink_l, blink_r = _blinks(_rng(seed, index, 3), num_frames, fps)
  r = _rng(seed, index, 4)
  motion = ((0.06, 0.15), (0.15, 0.35), (0.35, 0.55))
  ypr = np.stack([np.deg2rad(limit) * _slow_process(r, t, motion) for limit in (30, 15, 10)], -1)
  translation = 0.1 * np.stack([_slow_process(r, t, motion[:2]) for _ in range(3)], -1)
  expression = np.stack([jaw, smile, blink_l, blink_r, brow], -1)
  return {"expression": expression.astype(np.float32),
          "yaw_pitch_roll": ypr.astype(np.float32),
          "translation": translation.astype(np.float32),
          "audio": audio[:n_audio]}

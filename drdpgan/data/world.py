"""The embedded synthetic face world: a parametric 3D morphable face model with ground truth.

Why this exists
---------------
DR-DPGAN (Lin, Wang, Zheng 2025) is trained on CelebA-HQ with three pretrained networks:
ArcFace (identity ``F_id``), StyleGAN2 (the generator) and a Deep3DFaceRecon-like 3D face
reconstruction net, whose 3DMM coefficients give the "3D prior" of Sec. 3.3: the morphological
(expression) parameters ``F_emo`` and the rigid placement (pose) parameters ``F_pos`` that are
concatenated with the (fake or real) identity, Eq. (1). None of these can be downloaded here,
so the package's default data comes from this world, which knows the truth about everything
the method touches:

* ``identity`` / ``albedo`` coefficients: who the person is (what ArcFace should encode and
  what anonymization must change); they depend only on ``(seed, identity index)``;
* ``expression`` (= the paper's ``F_emo``) and ``pose`` (= ``F_pos``): what the 3D prior
  extracts and what anonymization must keep;
* ``lighting``, ``translation`` (crop jitter) and ``background``: non-identity content that the
  image encoder should carry over unchanged.

All nuisance coefficients depend on ``(seed, identity index, sample index)``.

The model
---------
A Basel/FLAME-style 3DMM reduced to what a 64 px CPU pipeline needs:

* a mean head: a unit sphere mesh (denser in the face region; ~1k triangles for a 128 px
  raster, ~2.7k at 256 px and above) whose vertex with canonical direction ``d = (x, y, z)``
  (``+z`` = where the face looks, ``+y`` up, ``+x`` = image right for a frontal face) is moved
  radially by identity bumps (nose, chin, cheekbones, brow ridge, eye sockets, forehead, ears,
  hair volume), then scaled to an ellipsoid (head width / height / depth) with a jaw taper;
  the geometry is an analytic function of ``d``, so any tessellation samples the same surface;
* a neck and shoulders drawn as shaded analytic 2D shapes behind the head (they follow the
  crop jitter, not the head rotation);
* an albedo "texture" painted analytically in canonical-direction space and evaluated per pixel
  (so eyes, brows, lips stay sharp at any resolution): skin tone, cheek blush, iris colour, brow
  shape and colour, lip shape and colour, hairline/fringe/hair length and hair colour, beard,
  moles;
* expressions acting in the face interior only (mouth opening, smile / frown, brow raise, per
  eye closure), so the face outline does not change with expression at a frontal pose;
* a rigid head pose (yaw, pitch, roll about the head centre), a perspective camera at 8 head
  radii with crop jitter (shift, zoom);
* Lambertian + Blinn-Phong shading from one directional light plus ambient, with a colour tint;
* a per-image background (two-colour gradient, stripes, soft blobs) and clothing colour.

Deep3DFaceRecon's coefficient vector is ``(id 80, exp 64, tex 80, angles 3, gamma 27, trans 3)``;
here the same roles are ``identity (33), expression (5), albedo (26), pose (3), lighting (7),
translation (3)``, with an extra ``background (49)``. A 3D prior fitted to these images would
return (an estimate of) ``expression`` and ``pose``.

Coordinates and conventions
---------------------------
* images: float ``(B, 3, H, W)`` in ``[-1, 1]``, RGB;
* landmarks: ``(B, 5, 2)`` ``(x, y)`` in pixel-index coordinates of the output image (the centre
  of pixel column ``j``, row ``i`` is ``(j, i)``, as MTCNN and the ArcFace template use), order
  ``left eye, right eye, nose tip, mouth left, mouth right`` where "left" = smaller ``x`` in the
  image (for a frontal face this is the subject's right);
* pose: radians ``(yaw, pitch, roll)``; positive yaw turns the nose towards image right,
  positive pitch tilts the nose up, positive roll turns the head counter-clockwise in the image.

Randomness never touches the global RNG: every coefficient is a counter-based hash of
``(seed, identity, sample, stream, coefficient index)`` (lowbias32), so any item can be drawn
alone, in any batch, in any order, on any machine, with the same value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Mapping

import torch
import torch.nn.functional as F

from . import render as R

# --------------------------------------------------------------------------- coefficient layout

IDENTITY_NAMES = (
    "head_width", "head_height", "head_depth", "jaw_taper", "chin", "cheekbones", "forehead",
    "nose_length", "nose_width", "nose_protrusion", "brow_ridge", "eye_spacing", "eye_size",
    "eye_height", "eye_tilt", "eye_openness", "mouth_width", "mouth_height", "upper_lip",
    "lower_lip", "ear_size", "brow_height", "brow_arch", "brow_length", "brow_thickness",
    "brow_tilt", "hairline", "hair_length", "hair_volume", "bangs", "hair_part", "hair_wave",
    "face_fullness",
)  # each ~ N(0, identity_scale^2): identity shape / layout (3DMM "id" coefficients)

ALBEDO_NAMES = (
    "skin_tone", "skin_redness", "skin_yellowness", "hair_lightness", "hair_redness", "hair_gray",
    "eye_blue", "eye_green", "lip_redness", "lip_darkness", "brow_darkness", "blush", "beard",
    "eyeshadow", "mole1_on", "mole1_x", "mole1_y", "mole2_on", "mole2_x", "mole2_y", "mole3_on",
    "mole3_x", "mole3_y", "hair_texture_phase", "hair_texture_freq", "lash_darkness",
)  # each ~ N(0, identity_scale^2): identity colours / marks (3DMM "tex" coefficients)

EXPRESSION_NAMES = ("mouth_open", "smile", "brow_raise", "eye_close_left", "eye_close_right")
#: expression of the mirrored face: ``expression[:, EXPRESSION_FLIP]`` (the eye closures swap)
EXPRESSION_FLIP = (0, 1, 2, 4, 3)
# mouth_open in [0, 1]: lips part, mouth interior and upper teeth show;
# smile in [-0.5, 1]: >0 raises and widens the mouth corners and puffs the cheeks, <0 frowns;
# brow_raise in [-1, 1]: moves both brows up (+) or down (-);
# eye_close_left/right in [0, 1]: upper lid closes over the image-left / image-right eye.

POSE_NAMES = ("yaw", "pitch", "roll")  # radians
TRANSLATION_NAMES = ("shift_x", "shift_y", "log_zoom")  # crop jitter: fraction of image, log scale
LIGHTING_NAMES = ("azimuth", "elevation", "ambient", "diffuse", "tint_red", "tint_blue", "specular")
# azimuth/elevation (radians) of the light direction in camera space (0, 0 = from the camera),
# ambient / diffuse intensities, tint_red / tint_blue multiply R / B by (1 + tint), specular
# strength of a Blinn-Phong highlight.
N_BLOBS = 5
BACKGROUND_NAMES = (
    ("c1_r", "c1_g", "c1_b", "c2_r", "c2_g", "c2_b", "grad_angle", "stripe_amp", "stripe_freq",
     "stripe_angle", "stripe_phase")
    + tuple(f"blob{j}_{k}" for j in range(N_BLOBS) for k in ("x", "y", "r", "cr", "cg", "cb", "alpha"))
    + ("cloth_r", "cloth_g", "cloth_b")
)

COEFF_SIZES = {
    "identity": len(IDENTITY_NAMES),
    "albedo": len(ALBEDO_NAMES),
    "expression": len(EXPRESSION_NAMES),
    "pose": len(POSE_NAMES),
    "translation": len(TRANSLATION_NAMES),
    "lighting": len(LIGHTING_NAMES),
    "background": len(BACKGROUND_NAMES),
}
IDENTITY_KEYS = ("identity", "albedo")
NUISANCE_KEYS = ("expression", "pose", "translation", "lighting", "background")
LANDMARK_NAMES = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")

_STREAMS = {k: i + 1 for i, k in enumerate(COEFF_SIZES)}
_NO_SAMPLE = 0x5EED_0000

WORLD_VERSION = 1  # bump when rendering changes, so cached datasets are re-rendered
CAMERA_DISTANCE = 8.0  # head radii
HEAD_PX_PER_UNIT = 0.4  # fraction of the image width per head-radius unit at the head centre


@dataclass
class WorldConfig:
    """Everything that defines a synthetic face world (a frozen population + nuisance laws).

    seed:               master seed; identities and samples are hashed from it
    n_identities:       size of the population (valid identity indices are 0..n-1)
    image_size:         default render size (square, any size >= 8; tested 32..256)
    supersample:        anti-aliasing factor (render at ``ss * size`` and box-filter down)
    identity_scale:     spread of identity coefficients (1 = default population; smaller =
                        more similar people, harder recognition)
    max_yaw_deg / max_pitch_deg / max_roll_deg: uniform pose ranges (+-)
    max_shift:          crop jitter, fraction of the image (+-)
    max_zoom:           crop zoom jitter, log scale (+-)
    expression_strength: scales every expression coefficient (0 = neutral faces)
    light_azimuth_deg / light_elevation_deg: light direction ranges (+-az, [-el/3, el])
    lighting_range:     scales ambient/diffuse/tint/specular variation around their means
    background_clutter: 0 = plain two-colour gradient, 1 = default stripes + blobs, >1 more
    face_scale:         head size in the frame (1 = head radius 0.4 of the image width)
    render_batch:       max images per internal rasterization chunk (memory vs. speed)
    mesh_lat / mesh_az: head mesh rings / segments
    """

    seed: int = 0
    n_identities: int = 100_000
    image_size: int = 64
    supersample: int = 2
    identity_scale: float = 1.0
    max_yaw_deg: float = 35.0
    max_pitch_deg: float = 15.0
    max_roll_deg: float = 12.0
    max_shift: float = 0.05
    max_zoom: float = 0.08
    expression_strength: float = 1.0
    light_azimuth_deg: float = 70.0
    light_elevation_deg: float = 50.0
    lighting_range: float = 1.0
    background_clutter: float = 1.0
    face_scale: float = 1.0
    render_batch: int = 128
    mesh_lat: int = 28
    mesh_az: int = 48


# --------------------------------------------------------------------------- hashing RNG

_M32 = 0xFFFFFFFF


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """(x * c) mod 2^32 for int64 ``x`` in [0, 2^32) without int64 overflow."""
    lo = x & 0xFFFF
    hi = x >> 16
    return (lo * c + (((hi * c) & 0xFFFF) << 16)) & _M32


def hash32(x: torch.Tensor) -> torch.Tensor:
    """lowbias32 integer hash (Wellons), vectorised on int64 tensors holding 32-bit values."""
    x = x & _M32
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    x = x ^ (x >> 16)
    return x


def hash_uniform(seed: int, identity: torch.Tensor, sample: torch.Tensor, stream: int, n: int) -> torch.Tensor:
    """Uniforms in (0, 1), float64 ``(B, n)``, a pure function of (seed, identity, sample, stream, k)."""
    identity = torch.as_tensor(identity, dtype=torch.int64).reshape(-1)
    sample = torch.as_tensor(sample, dtype=torch.int64).reshape(-1).expand_as(identity)
    s = torch.tensor([int(seed) & _M32, (int(seed) >> 32) & _M32], dtype=torch.int64)
    h = hash32(s[0:1] ^ hash32(s[1:2] + 0x632BE5AB))
    h = hash32(h ^ (identity & _M32))
    h = hash32(h ^ ((identity >> 32) & _M32) ^ 0x1B873593)
    h = hash32(h ^ (sample & _M32))
    h = hash32(h ^ ((sample >> 32) & _M32) ^ 0x68E31DA4)
    h = hash32(h ^ (stream * 0x9E3779B9 & _M32))
    k = hash32(torch.arange(n, dtype=torch.int64) * 0x27D4EB2F + 0x165667B1)
    h = hash32(h.unsqueeze(1) ^ k.unsqueeze(0))
    return (h.double() + 0.5) / 4294967296.0


def hash_normal(seed, identity, sample, stream, n) -> torch.Tensor:
    """Standard normals ``(B, n)`` float64 via the inverse CDF of :func:`hash_uniform`."""
    return torch.special.ndtri(hash_uniform(seed, identity, sample, stream, n))


# --------------------------------------------------------------------------- small helpers


def _smoothstep(e0, e1, x):
    t = ((x - e0) / (e1 - e0)).clamp(0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _col(c: torch.Tensor, names, name):
    return c[:, names.index(name)]


def _mix(a, b, t):
    return a + (b - a) * t


def rotation_matrix(pose: torch.Tensor) -> torch.Tensor:
    """(B, 3) yaw/pitch/roll radians -> (B, 3, 3) ``R = Rz(roll) @ Rx(pitch) @ Ry(yaw)``.

    Head coordinates: ``+z`` towards the camera, ``+y`` up, ``+x`` image right.
    Ry(yaw) maps +z to (sin yaw, 0, cos yaw); Rx(pitch) maps +z to (0, sin, cos);
    Rz(roll) maps +y to (-sin roll, cos roll, 0) (counter-clockwise as seen in the image).
    """
    yaw, pitch, roll = pose.unbind(1)
    one, zero = torch.ones_like(yaw), torch.zeros_like(yaw)
    cy, sy = yaw.cos(), yaw.sin()
    cp, sp = pitch.cos(), pitch.sin()
    cr, sr = roll.cos(), roll.sin()
    Ry = torch.stack([cy, zero, sy, zero, one, zero, -sy, zero, cy], 1).view(-1, 3, 3)
    Rx = torch.stack([one, zero, zero, zero, cp, sp, zero, -sp, cp], 1).view(-1, 3, 3)
    Rz = torch.stack([cr, -sr, zero, sr, cr, zero, zero, zero, one], 1).view(-1, 3, 3)
    return Rz @ Rx @ Ry


def project(points: torch.Tensor, pose: torch.Tensor, translation: torch.Tensor, size: int, face_scale: float = 1.0,
            rotate: bool = True) -> torch.Tensor:
    """Head-space points -> continuous screen coordinates of a ``size`` px image (+ depth).

    points: (B, N, 3) head coordinates; pose: (B, 3); translation: (B, 3) (shift_x, shift_y, log_zoom)
    returns (B, N, 3): ``x, y`` with pixel centres at ``j + 0.5`` (subtract 0.5 for pixel-index
    coordinates) and ``depth`` = distance from the camera plane (smaller = nearer).
    The camera sits at ``z = CAMERA_DISTANCE`` looking down ``-z``; ``rotate=False`` skips the
    head rotation (used for the neck and shoulders).
    """
    p = points @ rotation_matrix(pose).transpose(1, 2) if rotate else points
    depth = CAMERA_DISTANCE - p[..., 2]
    f = face_scale * HEAD_PX_PER_UNIT * size * CAMERA_DISTANCE * translation[:, 2:3].exp()  # (B, 1)
    x = size / 2 + f * p[..., 0] / depth + translation[:, 0:1] * size
    y = size / 2 - f * p[..., 1] / depth + translation[:, 1:2] * size
    return torch.stack([x, y, depth], -1)


# --------------------------------------------------------------------------- the world


class FaceWorld:
    """A deterministic synthetic face population; see the module docstring for the model.

    Typical use::

        world = FaceWorld(WorldConfig(seed=0))
        out = world.render(torch.tensor([0, 0, 1]), torch.tensor([0, 1, 0]), size=64)
        out["image"]      # (3, 3, 64, 64) in [-1, 1]
        out["identity"]   # (3,) int64 world identity indices
        out["coeffs"]     # dict of (3, K) float tensors (see COEFF_SIZES)
        out["landmarks"]  # (3, 5, 2) pixel-index coordinates
        out["mask"]       # (3, 1, 64, 64) head (+ hair) coverage in [0, 1]
    """

    def __init__(self, config: WorldConfig | None = None):
        self.config = config or WorldConfig()
        # the config-density mesh; rendering picks a density per raster resolution (mesh_density)
        self.head_dirs, self.faces = self.mesh_for(self.config.mesh_lat, self.config.mesh_az)

    _MESHES: dict = {}

    @classmethod
    def mesh_for(cls, n_lat: int, n_az: int):
        """Cached ``(dirs (V, 3), faces (T, 3))`` warped-sphere head mesh."""
        key = (int(n_lat), int(n_az))
        if key not in cls._MESHES:
            cls._MESHES[key] = R.warped_sphere(*key)
        return cls._MESHES[key]

    def mesh_density(self, raster_size: int) -> tuple[int, int]:
        """Mesh rings/segments used at a raster resolution (px): triangles stay a few px wide.

        ``mesh_lat``/``mesh_az`` of the config are the density at a 256 px raster; smaller
        rasters use proportionally coarser tessellations of the same analytic surface (at
        least 14 x 24), larger ones keep the config density.
        """
        f = min(1.0, raster_size / 256.0)
        return max(14, round(self.config.mesh_lat * f)), max(24, round(self.config.mesh_az * f))

    # ------------------------------------------------------------------ coefficients

    def _check_ids(self, identity_idx: torch.Tensor) -> torch.Tensor:
        identity_idx = torch.as_tensor(identity_idx, dtype=torch.int64).reshape(-1)
        if identity_idx.numel() and (int(identity_idx.min()) < 0 or int(identity_idx.max()) >= self.config.n_identities):
            raise IndexError(f"identity indices must be in [0, {self.config.n_identities})")
        return identity_idx

    def identity_coeffs(self, identity_idx) -> dict[str, torch.Tensor]:
        """``{'identity': (B, 33), 'albedo': (B, 26)}``, functions of (seed, identity) only."""
        ids = self._check_ids(identity_idx)
        cfg = self.config
        s = float(cfg.identity_scale)
        return {
            k: (hash_normal(cfg.seed, ids, _NO_SAMPLE, _STREAMS[k], COEFF_SIZES[k]).clamp(-3, 3) * s).float()
            for k in IDENTITY_KEYS
        }

    def nuisance_coeffs(self, identity_idx, sample_idx) -> dict[str, torch.Tensor]:
        """Expression, pose, translation, lighting, background: functions of (seed, identity, sample)."""
        ids = self._check_ids(identity_idx)
        smp = torch.as_tensor(sample_idx, dtype=torch.int64).reshape(-1).expand_as(ids)
        cfg = self.config

        def U(key):
            return hash_uniform(cfg.seed, ids, smp, _STREAMS[key], COEFF_SIZES[key])

        es = cfg.expression_strength
        u = U("expression")
        blink = u[:, 3] ** 3
        wink = 0.6 * (2 * u[:, 4] - 1) ** 3
        expr = torch.stack(
            [
                es * u[:, 0] ** 2,  # mouth open: mostly closed or slightly open
                es * (1.5 * u[:, 1] - 0.5),  # smile / frown
                es * (2 * u[:, 2] - 1),  # brow raise
                es * (blink + wink).clamp(0, 1),
                es * (blink - wink).clamp(0, 1),
            ],
            1,
        )
        u = U("pose")
        deg = math.pi / 180
        pose = torch.stack(
            [cfg.max_yaw_deg * deg * (2 * u[:, 0] - 1), cfg.max_pitch_deg * deg * (2 * u[:, 1] - 1),
             cfg.max_roll_deg * deg * (2 * u[:, 2] - 1)], 1)
        u = U("translation")
        trans = torch.stack(
            [cfg.max_shift * (2 * u[:, 0] - 1), cfg.max_shift * (2 * u[:, 1] - 1), cfg.max_zoom * (2 * u[:, 2] - 1)], 1)
        u = U("lighting")
        lr = cfg.lighting_range
        light = torch.stack(
            [
                cfg.light_azimuth_deg * deg * (2 * u[:, 0] - 1),
                cfg.light_elevation_deg * deg * (4 * u[:, 1] - 1) / 3,
                0.45 + lr * 0.18 * (2 * u[:, 2] - 1),  # ambient
                0.80 + lr * 0.30 * (2 * u[:, 3] - 1),  # diffuse
                lr * 0.12 * (2 * u[:, 4] - 1),  # tint red
                lr * 0.12 * (2 * u[:, 5] - 1),  # tint blue
                (lr * 0.25 * u[:, 6]).clamp(0, 1),  # specular
            ],
            1,
        )
        u = U("background")
        bg = u.clone()  # all raw uniforms in (0, 1); meaning in _background
        return {
            "expression": expr.float(),
            "pose": pose.float(),
            "translation": trans.float(),
            "lighting": light.float(),
            "background": bg.float(),
        }

    def sample_coeffs(self, identity_idx, sample_idx) -> dict[str, torch.Tensor]:
        """All coefficients of items ``(identity_idx[b], sample_idx[b])``: dict of (B, K) floats."""
        out = self.identity_coeffs(identity_idx)
        out.update(self.nuisance_coeffs(identity_idx, sample_idx))
        return out

    # ------------------------------------------------------------------ decoding

    @staticmethod
    def _decode(coeffs: Mapping[str, torch.Tensor]) -> SimpleNamespace:
        """Coefficients -> named physical parameters, each (B, 1) (broadcastable)."""
        c = coeffs["identity"]
        a = coeffs["albedo"]
        e = coeffs["expression"]

        def I(n):
            return _col(c, IDENTITY_NAMES, n).unsqueeze(1)

        def A(n):
            return _col(a, ALBEDO_NAMES, n).unsqueeze(1)

        p = SimpleNamespace()
        p.W = 0.80 + 0.05 * I("head_width")
        p.H = 1.05 + 0.05 * I("head_height")
        p.D = 0.95 + 0.05 * I("head_depth")
        p.taper = (0.30 + 0.09 * I("jaw_taper")).clamp(0.05, 0.6)
        p.fullness = 0.03 * I("face_fullness")
        p.chin = 0.06 + 0.035 * I("chin")
        p.cheek = 0.035 + 0.02 * I("cheekbones")
        p.forehead = 0.0 + 0.03 * I("forehead")
        p.ey = 0.12 + 0.025 * I("eye_height")
        p.ex = 0.31 + 0.022 * I("eye_spacing")
        p.ew = (0.125 + 0.012 * I("eye_size")).clamp(0.085, 0.16)
        p.eh = p.ew * (0.45 + 0.06 * I("eye_openness")).clamp(0.28, 0.6)
        p.etilt = 0.10 * I("eye_tilt")
        p.nl = (0.27 + 0.03 * I("nose_length")).clamp(0.17, 0.37)
        p.nt = p.ey - p.nl  # nose tip height
        p.nw = (0.075 + 0.014 * I("nose_width")).clamp(0.045, 0.11)
        p.np = (0.20 + 0.04 * I("nose_protrusion")).clamp(0.08, 0.32)
        p.ridge = 0.03 + 0.015 * I("brow_ridge")
        p.mw = (0.21 + 0.024 * I("mouth_width")).clamp(0.14, 0.28)
        p.my = p.nt - (0.27 + 0.03 * I("mouth_height")).clamp(0.18, 0.36)
        p.tu = (0.04 + 0.01 * I("upper_lip")).clamp(0.015, 0.07)
        p.tl = (0.055 + 0.012 * I("lower_lip")).clamp(0.02, 0.085)
        p.ear = (0.17 + 0.045 * I("ear_size")).clamp(0.05, 0.3)
        p.by = p.ey + 0.14 + 0.018 * I("brow_height")
        p.barch = 0.03 + 0.014 * I("brow_arch")
        p.bl = (0.14 + 0.018 * I("brow_length")).clamp(0.09, 0.2)
        p.bt = (0.032 + 0.009 * I("brow_thickness")).clamp(0.012, 0.055)
        p.btilt = 0.10 * I("brow_tilt")
        p.hf = 0.50 + 0.07 * I("hairline")
        p.hb = -0.05 - 0.40 * (1 + torch.tanh(0.8 * I("hair_length")))
        p.hv = (0.07 + 0.045 * I("hair_volume")).clamp(0.0, 0.2)
        p.bangs = 0.16 * F.relu(I("bangs"))
        p.part = 0.3 * torch.tanh(I("hair_part"))
        p.wave = (0.025 + 0.02 * I("hair_wave")).clamp(0.0, 0.07)
        p.wave_phase = 2.0 * I("hair_wave") + I("hair_part")
        # colours (linear-ish RGB in [0, 1]) -> (B, 3, 1) after unsqueeze in users
        tone = torch.sigmoid(1.3 * A("skin_tone"))
        light_skin = torch.tensor([0.93, 0.76, 0.64])
        dark_skin = torch.tensor([0.38, 0.24, 0.16])
        skin = _mix(dark_skin, light_skin, tone)  # (B, 3)
        skin = skin + A("skin_redness") * torch.tensor([0.035, -0.01, -0.015]) + A("skin_yellowness") * torch.tensor(
            [0.015, 0.02, -0.03])
        p.skin = skin.clamp(0.05, 1.0)
        hl = torch.sigmoid(1.6 * A("hair_lightness") - 1.0)
        hair = _mix(torch.tensor([0.07, 0.055, 0.045]), torch.tensor([0.88, 0.72, 0.45]), hl)
        hair = hair + F.relu(A("hair_redness")) * torch.tensor([0.14, 0.02, -0.03]) * (0.3 + hl)
        gray = torch.sigmoid(2.0 * A("hair_gray") - 3.0)
        p.hair = _mix(hair, torch.tensor([0.72, 0.72, 0.74]), gray).clamp(0.02, 1.0)
        wts = torch.softmax(torch.cat([A("eye_blue"), A("eye_green"), torch.full_like(A("eye_blue"), 0.6)], 1) * 1.5, 1)
        iris = wts @ torch.tensor([[0.30, 0.48, 0.72], [0.30, 0.50, 0.28], [0.33, 0.19, 0.09]])
        p.iris = iris
        lip = p.skin * (0.78 - 0.08 * A("lip_darkness")).clamp(0.5, 1.0) + (0.15 + 0.05 * A("lip_redness")) * torch.tensor(
            [1.0, -0.35, -0.25])
        p.lip = lip.clamp(0.02, 1.0)
        p.brow = p.hair * (0.55 + 0.2 * torch.tanh(A("brow_darkness")))
        p.blush = 0.05 + 0.04 * torch.tanh(A("blush"))
        p.beard = 0.7 * torch.tanh(F.relu(A("beard") - 0.9) * 2.0)
        p.eyeshadow = 0.08 + 0.05 * torch.tanh(A("eyeshadow"))
        p.lash = 0.25 + 0.1 * torch.tanh(A("lash_darkness"))
        moles = []
        for j in (1, 2, 3):
            on = torch.sigmoid(4.0 * (A(f"mole{j}_on") - 1.0))
            moles.append((on, 0.5 * torch.tanh(A(f"mole{j}_x")), -0.15 + 0.35 * torch.tanh(A(f"mole{j}_y"))))
        p.moles = moles
        p.hair_phase = A("hair_texture_phase")
        p.hair_freq = 30.0 + 8.0 * torch.tanh(A("hair_texture_freq"))
        # expression
        p.mouth_open = e[:, 0:1]
        p.smile = e[:, 1:2]
        p.brow_raise = e[:, 2:3]
        p.close_l = e[:, 3:4]
        p.close_r = e[:, 4:5]
        p.mw_eff = p.mw * (1 + 0.18 * p.smile.clamp(min=0))
        p.corner_lift = 0.06 * p.smile
        return p

    # ------------------------------------------------------------------ geometry

    @staticmethod
    def _hair_amount(X, Y, Z, p, soft):
        """Soft hair coverage in [0, 1] at canonical directions (any broadcastable shape)."""
        az = torch.atan2(X, Z)
        side = _smoothstep(0.7, 1.5, az.abs())
        front = p.hf - p.bangs * torch.exp(-((X - p.part * 0.5) / 0.32) ** 2) + p.wave * torch.sin(9.0 * az + p.wave_phase)
        front = torch.maximum(front, p.by + 0.09)
        line = front * (1 - side) + p.hb * side
        return torch.sigmoid((Y - line) / soft)

    def _deform(self, X, Y, Z, p) -> torch.Tensor:
        """Canonical unit directions (X, Y, Z broadcastable against (B, 1)) -> (B, N, 3) positions."""
        front = torch.sigmoid((Z - 0.15) * 12.0)
        g = lambda cx, cy, sx, sy: torch.exp(-(((X - cx) / sx) ** 2) - ((Y - cy) / sy) ** 2)  # noqa: E731
        # nose: a ridge growing from between the eyes to the tip, falling off quickly below
        ramp = ((p.ey - Y) / p.nl).clamp(0, 1) ** 1.4
        prof = torch.where(Y > p.nt, ramp, torch.exp(-(((Y - p.nt) / 0.045) ** 2)))
        nose = p.np * prof * torch.exp(-((X / (p.nw * (0.55 + 0.6 * ramp))) ** 2))
        bump = (
            nose
            + p.ridge * torch.exp(-(((Y - (p.ey + 0.12)) / 0.06) ** 2)) * torch.exp(-((X / 0.45) ** 4))
            - 0.03 * (g(p.ex, p.ey, 0.11, 0.07) + g(-p.ex, p.ey, 0.11, 0.07))
            + p.cheek * (g(0.45, -0.08, 0.12, 0.12) + g(-0.45, -0.08, 0.12, 0.12))
            + p.chin * g(0.0, -0.80, 0.18, 0.12)
            + p.forehead * g(0.0, 0.45, 0.5, 0.2)
            + p.fullness * g(0.0, -0.25, 0.5, 0.3)
            + 0.022 * g(0.0, p.my, p.mw, 0.06)  # lips
            - 0.015 * p.mouth_open * g(0.0, p.my, p.mw * 0.7, 0.04)
            + 0.02 * p.smile * (g(p.mw + 0.08, p.my + 0.08, 0.08, 0.08) + g(-p.mw - 0.08, p.my + 0.08, 0.08, 0.08))
        ) * front
        az = torch.atan2(X, Z)
        ears = p.ear * torch.exp(-(((az.abs() - 1.62) / 0.10) ** 2) - ((Y - 0.0) / 0.17) ** 2)
        hair = p.hv * self._hair_amount(X, Y, Z, p, 0.05)
        r = 1.0 + bump + ears + hair  # (B, V)
        low = F.relu(-Y) ** 1.5
        x = X * r * p.W * (1 - p.taper * low)
        y = Y * r * p.H
        z = Z * r * p.D * (1 - 0.4 * p.taper * low)
        return torch.stack([x, y, z], -1)

    def landmark_directions(self, coeffs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """(B, 5, 3) canonical unit directions of the 5 landmarks (expression-dependent).

        Order: image-left eye centre, image-right eye centre, nose tip, image-left and
        image-right mouth corners of a frontal face.
        """
        p = self._decode(coeffs)
        X = torch.cat([-p.ex, p.ex, torch.zeros_like(p.ex), -p.mw_eff, p.mw_eff], 1)  # (B, 5)
        Y = torch.cat([p.ey, p.ey, p.nt, p.my + p.corner_lift, p.my + p.corner_lift], 1)
        Z = (1 - X**2 - Y**2).clamp(min=1e-4).sqrt()
        return torch.stack([X, Y, Z], -1)

    def landmarks_3d(self, coeffs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """(B, 5, 3) head-space landmark positions (before pose), on the deformed surface
        (same code path as the mesh vertices); order as :meth:`landmark_directions`."""
        d = self.landmark_directions(coeffs)
        return self._deform(d[..., 0], d[..., 1], d[..., 2], self._decode(coeffs))

    def landmarks(self, coeffs: Mapping[str, torch.Tensor], size: int | None = None) -> torch.Tensor:
        """(B, 5, 2) projected landmarks in pixel-index coordinates of a ``size`` px image."""
        size = int(size or self.config.image_size)
        scr = project(self.landmarks_3d(coeffs), coeffs["pose"], coeffs["translation"], size, self.config.face_scale)
        lm = scr[..., :2] - 0.5
        # "left" = smaller x in the image (MTCNN convention), per pair
        for i, j in ((0, 1), (3, 4)):
            swap = lm[:, i, 0] > lm[:, j, 0]
            if swap.any():
                li, lj = lm[:, i].clone(), lm[:, j].clone()
                lm[swap, i], lm[swap, j] = lj[swap], li[swap]
        return lm

    # ------------------------------------------------------------------ appearance

    @staticmethod
    def _flat_params(p) -> dict:
        """Decoded parameters as per-image (B,) scalars / (B, 3) colours, for cheap gathers."""
        out = {}
        for k, v in vars(p).items():
            if isinstance(v, torch.Tensor):
                out[k] = v[:, 0] if v.shape[1] == 1 else v
        for j, (on, mx, my) in enumerate(p.moles):
            out[f"mole{j}_on"], out[f"mole{j}_x"], out[f"mole{j}_y"] = on[:, 0], mx[:, 0], my[:, 0]
        return out

    def _albedo(self, X, Y, Z, bidx, p, soft):
        """Head albedo (N, 3) in [0, 1] at N head pixels with canonical directions X, Y, Z (N,).

        ``bidx`` (N,) is each pixel's image, ``p`` the decoded parameters. Each facial feature
        is evaluated only on the pixels inside a canonical-space window around it, and per-image
        parameters are gathered (one gather per window) only for those pixels, so the cost is a
        few passes over the head pixels plus small per-feature work.
        """
        fp = self._flat_params(p)
        cols, mats = {}, []
        for k, v in fp.items():  # one (B, n_params) table; colours take 3 columns
            cols[k] = slice(sum(m.shape[1] for m in mats), sum(m.shape[1] for m in mats) + (3 if v.dim() == 2 else 1))
            mats.append(v if v.dim() == 2 else v.unsqueeze(1))
        table = torch.cat(mats, 1)
        col = fp["skin"][bidx]  # (N, 3)

        def inside(sd):  # signed distance (negative inside) -> soft coverage in [0, 1]
            return (0.5 - sd / soft).clamp(0.0, 1.0)

        def win(cond):
            return cond.nonzero().squeeze(1)

        # ---- face region: everything but hair lives in the front window
        fi = win((Z > 0.1) & (X.abs() < 0.8) & (Y > -0.95) & (Y < 0.62))
        x, y, z, b = X[fi], Y[fi], Z[fi], bidx[fi]
        cf = col[fi]
        front = _smoothstep(0.1, 0.3, z)
        xyfb = torch.stack([x, y, front, b.to(x.dtype)], 1)  # one gather per window

        def sub(i, *names):
            """Window pixels ``i`` -> (x, y, front, params...) with two gathers in total."""
            s = xyfb[i]
            bi = s[:, 3].long()
            idx = [torch.arange(cols[n].start, cols[n].stop) for n in names]
            t = table[:, torch.cat(idx)][bi] if names else None
            out, c = [s[:, 0], s[:, 1], s[:, 2]], 0
            for n, ix in zip(names, idx):
                out.append(t[:, c] if len(ix) == 1 else t[:, c:c + 3])
                c += len(ix)
            return out

        def paint(i, mask, colour):  # i indexes the face subset
            c = cf[i]
            cf[i] = c + (colour - c) * mask.unsqueeze(1)

        ax = x.abs()
        # blush and eyeshadow (multiplicative tints)
        i = win((y > -0.45) & (y < 0.5) & (ax < 0.7))
        xi, yi, fr, blush_a, ex, ew, eh, ey, shadow_a = sub(i, "blush", "ex", "ew", "eh", "ey", "eyeshadow")
        blush = blush_a * torch.exp(-(((xi.abs() - 0.42) / 0.12) ** 2) - ((yi + 0.16) / 0.1) ** 2)
        shadow = shadow_a * torch.exp(-(((xi.abs() - ex) / (ew * 1.3)) ** 2) - ((yi - ey - eh * 1.6) / (eh * 1.4)) ** 2)
        cf[i] = (cf[i] + (blush * fr).unsqueeze(1) * torch.tensor([1.0, -0.35, -0.3])) * (1 - shadow * fr).unsqueeze(1)
        # moles (only in images that have them)
        for j in range(3):
            on_img = fp[f"mole{j}_on"] > 0.02
            if not bool(on_img.any()):
                continue
            i = win(on_img[b])
            xi, yi, fr, on, mx, my, skin = sub(i, f"mole{j}_on", f"mole{j}_x", f"mole{j}_y", "skin")
            d = ((xi - mx) ** 2 + (yi - my) ** 2).sqrt()
            paint(i, on * inside(d - 0.022) * fr, skin * 0.45)
        # beard / stubble (only in bearded images): lower face below the nose
        beard_img = fp["beard"] > 0.01
        if bool(beard_img.any()):
            i = win(beard_img[b] & (y < 0.1))
            xi, yi, fr, nt, beard, skin, hair = sub(i, "nt", "beard", "skin", "hair")
            top = nt - 0.02 - 0.35 * xi**2  # beard line drops towards the cheeks
            m = beard * _smoothstep(top, top - 0.2, yi) * _smoothstep(0.95, 0.75, xi.abs())
            paint(i, m, _mix(skin, hair, 0.8))
        # mouth: lips, interior, teeth
        i = win((ax < 0.34) & (y < 0.02) & (y > -0.88))
        xi, yi, fr, mw, my, lift, mopen, tu, tl, lip = sub(i, "mw_eff", "my", "corner_lift", "mouth_open", "tu", "tl", "lip")
        u = xi / mw
        w = (1 - u * u).clamp(min=0)
        lip_prof = w.sqrt()
        yc = my + lift * u * u
        gap = 0.09 * mopen * lip_prof
        dy = yi - yc
        upper = torch.minimum(dy - gap / 2, gap / 2 + tu * (0.35 + 0.65 * lip_prof) - dy)
        lower = torch.minimum(-gap / 2 - dy, dy + gap / 2 + tl * lip_prof)
        inner = gap / 2 - dy.abs()
        fr = fr * (w > 0).float()
        paint(i, inside(-upper) * fr, lip)
        paint(i, inside(-lower) * fr, lip * 1.05)
        paint(i, inside(-inner) * fr, lip * 0.25)
        teeth = torch.tensor([0.85, 0.83, 0.76]).expand_as(lip)
        paint(i, inside(-torch.minimum(inner, dy - (gap / 2 - 0.028))) * fr, teeth)
        # nostrils
        i = win((ax < 0.13) & (y < 0.05) & (y > -0.38))
        xi, yi, fr, nw, nt, skin = sub(i, "nw", "nt", "skin")
        for s in (-1.0, 1.0):
            d = ((((xi - s * nw * 0.6) / 0.028) ** 2 + ((yi - nt + 0.035) / 0.014) ** 2).sqrt() - 1) * 0.014
            paint(i, inside(d) * fr * 0.55, skin * 0.35)
        # eyes and brows
        for s, close_name in ((-1.0, "close_l"), (1.0, "close_r")):
            i = win((s * x > 0.07) & (s * x < 0.56) & (y > -0.08) & (y < 0.32))
            xi, yi, fr0, ew, eh, ey, ex, etilt, close, iris, hair, lashd = sub(
                i, "ew", "eh", "ey", "ex", "etilt", close_name, "iris", "hair", "lash")
            du = xi - s * ex
            dv = (yi - ey) - s * etilt * du
            prof = (1 - (du / ew) ** 2).clamp(min=0)
            top = eh * (1 - 1.7 * close) * prof
            bot = -0.75 * eh * prof
            opening = inside(-torch.minimum(top - dv, dv - bot))
            fr = fr0 * (prof > 0).float()
            paint(i, opening * fr, torch.tensor([0.93, 0.91, 0.88]).expand(i.numel(), 3))
            dist = (du**2 + (yi - ey) ** 2).sqrt()
            ir = 0.85 * eh
            paint(i, inside(dist - ir) * opening * fr, iris)
            paint(i, inside(dist - 0.4 * ir) * opening * fr, torch.full((i.numel(), 3), 0.03))
            lid = torch.maximum(top, bot)
            lash = inside((dv - lid).abs() - 0.016) * fr0 * (du.abs() < ew * 1.05).float()
            paint(i, lash, hair * lashd.unsqueeze(1))
            # brow
            i = win((s * x > 0.05) & (s * x < 0.6) & (y > 0.08) & (y < 0.6))
            xi, yi, fr, ex, bl, by, raise_, barch, btilt, bt0, brow = sub(
                i, "ex", "bl", "by", "brow_raise", "barch", "btilt", "bt", "brow")
            bx = s * ex * 1.02
            yb0 = by + 0.06 * raise_
            bu = (xi - bx) / bl
            bprof = (1 - bu * bu).clamp(min=0)
            yb = yb0 + barch * bprof - s * btilt * (xi - bx) * 0.5
            bt = bt0 * (0.35 + 0.65 * bprof.sqrt()) * (1 - 0.35 * (s * bu).clamp(min=0))
            paint(i, inside((yi - yb).abs() - bt) * fr * (bprof > 0).float(), brow)
        col[fi] = cf
        # ---- hair (with strand texture) over everything; never in the central face
        i = win(~((X.abs() < 0.8 * Z) & (Y < 0.2)))
        x, y, z, b = X[i], Y[i], Z[i], bidx[i]
        qi = SimpleNamespace(**{k: fp[k][b] for k in ("hf", "bangs", "part", "wave", "wave_phase", "by", "hb")})
        hair = self._hair_amount(x, y, z, qi, soft * 1.5)
        az = torch.atan2(x, z)
        strands = 1 + 0.10 * torch.sin(fp["hair_freq"][b] * az + 18.0 * y + fp["hair_phase"][b] * 3.0)
        c = col[i]
        col[i] = c + (fp["hair"][b] * strands.unsqueeze(1) - c) * hair.unsqueeze(1)
        return col.clamp(0.0, 1.0)

    def _background(self, bg: torch.Tensor, size: int) -> torch.Tensor:
        """(B, 3, size, size) background in [0, 1] from the raw uniforms ``bg`` (B, Kb):
        a two-colour gradient, stripes and up to ``N_BLOBS`` soft discs (clutter)."""
        cl = self.config.background_clutter
        B = bg.shape[0]
        t = (torch.arange(size, dtype=torch.float32) + 0.5) / size * 2 - 1
        gx, gy = t.view(1, 1, size), t.view(1, size, 1)  # broadcast to (B, H, W)
        V = lambda k: bg[:, BACKGROUND_NAMES.index(k)].view(B, 1, 1)  # noqa: E731
        c1 = (0.1 + 0.8 * bg[:, 0:3]).view(B, 3, 1, 1)
        c2 = (0.1 + 0.8 * bg[:, 3:6]).view(B, 3, 1, 1)
        ang = 2 * math.pi * V("grad_angle")
        tg = torch.sigmoid(2.5 * (gx * ang.cos() + gy * ang.sin()))
        if cl > 0:
            sa = 2 * math.pi * V("stripe_angle")
            fq = 3 + 12 * V("stripe_freq")
            stripes = cl * 0.12 * V("stripe_amp") * torch.sin(
                (gx * (fq * sa.cos()) + gy * (fq * sa.sin())) + 2 * math.pi * V("stripe_phase"))
        img = c1 + (c2 - c1) * tg.unsqueeze(1)
        if cl > 0:
            img = img + stripes.unsqueeze(1)
            for j in range(N_BLOBS):
                o = BACKGROUND_NAMES.index(f"blob{j}_x")
                alpha = (cl * 0.9 * (bg[:, o + 6] * 1.6 - 0.6).clamp(0, 1)).clamp(0, 1)
                if not bool((alpha > 0).any()):
                    continue
                r = (0.15 + 0.45 * bg[:, o + 2]).view(B, 1, 1)
                bx, by = (2 * bg[:, o] - 1).view(B, 1, 1), (2 * bg[:, o + 1] - 1).view(B, 1, 1)
                d2 = ((gx - bx) / r) ** 2 + ((gy - by) / r) ** 2  # (B, H, W)
                m = (alpha.view(B, 1, 1) * torch.sigmoid((1 - d2) * 8)).unsqueeze(1)
                colr = (0.05 + 0.9 * bg[:, o + 3:o + 6]).view(B, 3, 1, 1)
                img = torch.lerp(img, colr.expand_as(img), m)
        return img.clamp(0.0, 1.0)

    # ------------------------------------------------------------------ rendering

    def render(self, identity_idx, sample_idx, size: int | None = None, **kw) -> dict:
        """Render items ``(identity_idx[b], sample_idx[b])`` (1-D int tensors / sequences).

        Returns ``dict(image=(B,3,H,W) in [-1,1], identity=(B,) int64, coeffs={...},
        landmarks=(B,5,2), mask=(B,1,H,W) head coverage)``; see :meth:`render_coeffs`.
        """
        ids = self._check_ids(identity_idx)
        coeffs = self.sample_coeffs(ids, sample_idx)
        out = self.render_coeffs(coeffs, size, **kw)
        out["identity"] = ids
        return out

    @torch.no_grad()
    def render_coeffs(self, coeffs: Mapping[str, torch.Tensor], size: int | None = None, return_canon: bool = False) -> dict:
        """Render explicit coefficients (e.g. edited ones). ``coeffs``: dict of (B, K) tensors.

        Returns ``image`` (B, 3, H, W) in [-1, 1], ``coeffs`` (as given), ``landmarks`` (B, 5, 2),
        ``mask`` (B, 1, H, W) head (+hair) coverage in [0, 1], ``body_mask`` (B, 1, H, W) coverage
        of head, neck and shoulders, and with ``return_canon`` ``canon`` (B, 3, H, W): the
        canonical head direction seen at each pixel centre (0 off the head).
        """
        size = int(size or self.config.image_size)
        if size < 8:
            raise ValueError("size must be >= 8")
        B = coeffs["pose"].shape[0]
        ss = max(1, int(self.config.supersample))
        S = size * ss
        chunk = max(1, min(int(self.config.render_batch), (1 << 22) // (S * S)))
        parts = []
        for s0 in range(0, B, chunk):
            sub = {k: v[s0:s0 + chunk] for k, v in coeffs.items()}
            parts.append(self._render_chunk(sub, size, ss, return_canon))
        out = {k: torch.cat([p_[k] for p_ in parts], 0) for k in parts[0]}
        out["coeffs"] = dict(coeffs)
        out["landmarks"] = self.landmarks(coeffs, size)
        return out

    def _render_chunk(self, coeffs, size: int, ss: int, return_canon: bool) -> dict:
        """Render one chunk with multi-sample anti-aliasing (MSAA).

        The head is z-buffered at ``ss * size`` px; each output pixel gets its sub-sample
        coverage and the nearest covering triangle, whose canonical direction and normal are
        interpolated at the output pixel centre. Albedo (facial features with analytic soft
        edges one output pixel wide) and shading are evaluated once per output pixel, then
        composited over the body and background by coverage."""
        cfg = self.config
        S = size * ss
        p = self._decode(coeffs)
        B = p.W.shape[0]
        pose, trans = coeffs["pose"], coeffs["translation"]
        dirs, faces = self.mesh_for(*self.mesh_density(S))
        head = self._deform(dirs[:, 0], dirs[:, 1], dirs[:, 2], p)  # (B, V, 3)
        verts_w = head @ rotation_matrix(pose).transpose(1, 2)  # camera-aligned head space
        scr = project(verts_w, pose, trans, S, cfg.face_scale, rotate=False)
        ras = R.rasterize(scr, faces, S, depth_range=(CAMERA_DISTANCE - 4.0, CAMERA_DISTANCE + 4.0), samples=ss)
        normals = R.vertex_normals(verts_w, faces)  # (B, V, 3) camera-space normals
        vals = R.interpolate(ras, faces, torch.cat([dirs.expand(B, -1, -1), normals], 2))  # (n, 6)
        pix = ras.pix  # output pixels touched by the head
        bidx = torch.div(pix, size * size, rounding_mode="floor")
        cov_flat = torch.zeros(B * size * size)
        cov_flat[pix] = ras.coverage if ras.coverage is not None else 1.0
        cn = F.normalize(vals[:, 0:3], dim=1, eps=1e-6)
        nrm = F.normalize(vals[:, 3:6], dim=1, eps=1e-6)
        soft = 1.0 / (HEAD_PX_PER_UNIT * size * cfg.face_scale)
        alb = self._albedo(cn[:, 0], cn[:, 1], cn[:, 2], bidx, p, soft)  # (n, 3)
        L = coeffs["lighting"]
        ldir = self.light_direction(L)  # (B, 3)
        rgb = self._shade(alb, nrm, self._shading_table(L, ldir)[bidx])
        head_rgb = torch.zeros(B * size * size, 3)
        head_rgb[pix] = rgb * cov_flat[pix].unsqueeze(1)
        head_rgb = head_rgb.view(B, size, size, 3).permute(0, 3, 1, 2)  # premultiplied by coverage
        cov = cov_flat.view(B, 1, size, size)
        under, body_cov = self._body_and_background(coeffs, p, ldir, size)
        img = head_rgb + (1 - cov) * under
        out = {
            "image": img.clamp(0, 1) * 2 - 1,
            "mask": cov,
            "body_mask": cov + (1 - cov) * body_cov.unsqueeze(1),
        }
        if return_canon:
            cmap = torch.zeros(B * size * size, 3)
            cmap[pix] = cn
            out["canon"] = cmap.view(B, size, size, 3).permute(0, 3, 1, 2).contiguous()
        return out

    @staticmethod
    def light_direction(lighting: torch.Tensor) -> torch.Tensor:
        """(B, Kl) lighting coefficients -> (B, 3) unit vector towards the light (camera space)."""
        az, el = lighting[:, 0], lighting[:, 1]
        return torch.stack([az.sin() * el.cos(), el.sin(), az.cos() * el.cos()], 1)

    @staticmethod
    def _shading_table(L, ldir):
        """(B, 12) per-image shading constants: light dir, half vector, ambient, diffuse, specular, tint."""
        B = L.shape[0]
        hvec = F.normalize(ldir + torch.tensor([0.0, 0.0, 1.0]), dim=1)
        tint = torch.stack([1 + L[:, 4], torch.ones(B), 1 + L[:, 5]], 1)
        return torch.cat([ldir, hvec, L[:, 2:4], L[:, 6:7], tint], 1)

    @staticmethod
    def _shade(alb, nrm, tab, shininess: float = 24.0, spec_scale: float = 1.0):
        """Ambient + Lambert + Blinn-Phong, tinted. alb, nrm: (..., 3) channel-last; tab: (..., 12)."""
        ndl = (nrm * tab[..., 0:3]).sum(-1).clamp(min=0)
        ndh = (nrm * tab[..., 3:6]).sum(-1).clamp(min=0)
        shade = tab[..., 6] + tab[..., 7] * ndl
        spec = spec_scale * tab[..., 8] * ndh**shininess
        return alb * (shade.unsqueeze(-1) * tab[..., 9:12]) + spec.unsqueeze(-1)

    def _body_and_background(self, coeffs, p, ldir, size: int):
        """Neck + shoulders (analytic 2D shapes with pseudo-normals, drawn behind the head,
        following crop shift/zoom but not head rotation) over the background.
        Returns (rgb (B, 3, H, W) in [0, 1], body coverage (B, H, W))."""
        cfg = self.config
        bg = coeffs["background"]
        L = coeffs["lighting"]
        trans = coeffs["translation"]
        B = bg.shape[0]
        img = self._background(bg, size)  # (B, 3, H, W)
        tab = self._shading_table(L, ldir).view(B, 1, 1, 12)
        unit = (HEAD_PX_PER_UNIT * size * cfg.face_scale * trans[:, 2].exp()).view(B, 1, 1)  # px per head unit
        cx = (size / 2 + trans[:, 0] * size).view(B, 1, 1)
        cy = (size / 2 + trans[:, 1] * size).view(B, 1, 1)
        t = torch.arange(size, dtype=torch.float32) + 0.5
        gx = (t.view(1, 1, size) - cx) / unit  # head units, x right, (B, 1, W)
        px = 1.0 / unit  # one pixel in head units
        body_cov = torch.zeros(B, size, size)
        # neck: a vertical cylinder below the head; its normal depends on x only
        r0 = max(0, int(float((cy + 0.2 * unit).min())) - 1)
        gy = -(t[r0:].view(1, -1, 1) - cy) / unit  # (B, H', 1), y up
        neck_r = (0.36 * p.W / 0.8).view(B, 1, 1)
        nx = (gx / neck_r).clamp(-1, 1)
        m_neck = (0.5 - (gx.abs() - neck_r) / px).clamp(0, 1) * (gy < -0.2).float()  # (B, H', W)
        n_neck = torch.stack([nx, torch.zeros_like(nx), (1 - nx**2).clamp(min=0).sqrt()], -1)  # (B, 1, W, 3)
        rgb = self._shade((p.skin * 0.85).view(B, 1, 1, 3), n_neck, tab, 12.0, 0.6).permute(0, 3, 1, 2)  # (B, 3, 1, W)
        img[:, :, r0:] = torch.lerp(img[:, :, r0:], rgb.expand(-1, -1, size - r0, -1), m_neck.unsqueeze(1))
        body_cov[:, r0:] = m_neck
        # shoulders / torso: an ellipse centred below the frame
        r1 = max(0, int(float((cy + 1.05 * unit).min())) - 1)
        if r1 < size:
            gy = -(t[r1:].view(1, -1, 1) - cy) / unit
            ex, ey = gx / 2.1, (gy + 1.95) / 0.8
            r2 = ex**2 + ey**2  # (B, H'', W)
            m_torso = (0.5 - (r2.sqrt() - 1) * 0.8 / px).clamp(0, 1)
            n_t = F.normalize(torch.stack([ex.expand_as(r2), ey.expand_as(r2), (1 - r2).clamp(min=0.0).sqrt()], -1), dim=-1)
            o = BACKGROUND_NAMES.index("cloth_r")
            cloth = (0.08 + 0.8 * bg[:, o:o + 3]).view(B, 1, 1, 3)
            rgb = self._shade(cloth, n_t, tab, 12.0, 0.3).permute(0, 3, 1, 2)
            img[:, :, r1:] = torch.lerp(img[:, :, r1:], rgb, m_torso.unsqueeze(1))
            body_cov[:, r1:] = 1 - (1 - body_cov[:, r1:]) * (1 - m_torso)
        return img.clamp(0, 1), body_cov

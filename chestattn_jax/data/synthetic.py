"""Procedural PA chest radiographs with ground-truth lesion masks for the 14 NIH classes.

A phantom is built the way a radiograph forms: every structure adds (or, for air,
removes) attenuation ``A`` along the beam, and the film shows ``1 - exp(-A)``, so
air is black, soft tissue grey and bone white, and a finding over the dense
mediastinum shows less than the same finding over the lung.

Anatomy, in anatomical coordinates (the unit is the image side; the pose jitter
maps them onto the pixel grid): a soft-tissue body with neck and shoulders, two
lungs (lateral/apical margin, mediastinal margin with the aortic knob, diaphragm
domes with the right one higher) carrying a branching vessel tree that thins
toward the periphery, the heart over the patient's left (the image's right, as a
PA film is read), the trachea and main bronchi, the spine, posterior and anterior
ribs, clavicles, humeral heads and a gastric air bubble under the left dome.

One generator per NIH class draws its finding where that pathology lives and
returns the change in attenuation and the truth mask; see ``_GENERATORS``. By
default each class keeps to its typical place, so a fixed per-class map already
points well; ``PhantomConfig.location_variability`` moves findings anywhere their
pathology plausibly lies (``_WIDE_PLACEMENTS``), the masks following them.
Cardiomegaly and emphysema change anatomy (heart size; lung size and diaphragm),
so their change is the difference between the altered and the normal anatomy.

Every example is a pure function of ``(seed, index)``. Labels, anatomy, exposure
and noise, and each finding draw from their own child ``SeedSequence`` streams,
so adding a finding changes only that finding's pixels, and the labels of a whole
split cost no rendering.

Each example also has the patient attributes a prepared NIH or CheXpert record
carries (:func:`sample_attributes`): ``sex`` (``M`` / ``F``, half each, with no
effect: a subgroup whose AUC should match the rest's), ``age`` (whole years, 18 to
95) and ``view`` (``PA`` / ``AP``). They are drawn from a stream of their own *given*
the example's labels, so that no label (and, by default, no pixel) of earlier
releases changes, and the joint distribution carries these effects:

- age: each present finding of ``_AGE_RELATED`` (cardiomegaly, edema, effusion,
  emphysema, fibrosis, hernia, mass, nodule, pleural thickening) moves the patient's
  age up by ``_AGE_SHIFT`` years, so those findings grow more prevalent with age
  (about twice as prevalent among the over-60s as over the whole split);
- view: the old and the sick are filmed AP (portable): the odds of an AP film grow
  with age and are ``_AP_ODDS`` times higher with any finding of ``_AP_FINDINGS``
  (cardiomegaly, edema, effusion, consolidation, pneumonia, atelectasis,
  pneumothorax), so AP films carry those findings two to four times as often as PA
  films (about a third of the films are AP);
- with ``PhantomConfig.ap_heart_magnification`` > 0 (default 0), the heart of an AP
  film is projected that fraction wider (on an AP film the heart lies far from the
  detector), the enlarged heart of cardiomegaly too: a normal AP heart can pass a
  cardiothoracic ratio of 0.5, as on real AP films. Only AP images change.

Command line: ``python -m chestattn_jax.data.synthetic --gallery out.png`` writes
one example per class with its truth outline.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import json
import math
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageDraw

from chestattn_jax.config_fields import PREPARED_FIELDS
from chestattn_jax.data.classes import NIH_CLASSES
from chestattn_jax.data.source import DataSource

PHANTOM_CLASSES = NIH_CLASSES

# NIH ChestX-ray14 prevalences scaled up about twofold, so that every class has
# positives in a few thousand images; Hernia stays the rarest.
PREVALENCE: dict[str, float] = {
    "Atelectasis": 0.12,
    "Cardiomegaly": 0.05,
    "Consolidation": 0.05,
    "Edema": 0.04,
    "Effusion": 0.15,
    "Emphysema": 0.04,
    "Fibrosis": 0.03,
    "Hernia": 0.01,
    "Infiltration": 0.20,
    "Mass": 0.06,
    "Nodule": 0.08,
    "Pleural_Thickening": 0.05,
    "Pneumonia": 0.03,
    "Pneumothorax": 0.06,
}

SPLITS = ("train", "validation", "test")
# Split k's example i is ``render(seed, k * _SPLIT_STRIDE + i)``: splits never share an
# example, and the train split's examples are ``render(seed, i)`` themselves.
_SPLIT_STRIDE = 2**40


@dataclasses.dataclass(frozen=True)
class PhantomConfig:
    """Size and difficulty of the phantom.

    Attributes:
      image_size: side S of the square image in pixels.
      lesion_contrast: scales every finding's change in attenuation (0 hides them).
      lesion_size: scales every finding's size.
      noise: scales the quantum noise and the low-frequency exposure variation.
      prevalence_scale: multiplies every prevalence (each capped at 0.95).
      location_variability: in [0, 1], how far a finding's position strays from its
        class's typical place. Each present finding independently takes, with this
        probability, its *wide* placement (anywhere its pathology plausibly lies),
        otherwise its *typical* placement (the only one at 0.0, which renders exactly
        the images of earlier releases). The coin comes from a stream of its own, so
        the labels, the anatomy and every typical finding are unchanged by the knob,
        and the truth masks and boxes follow each finding. The wide placements:

        - Effusion: free fluid in either or both costophrenic angles as typically,
          or (a third of wide draws) a loculated lenticular collection against the
          lateral chest wall of either lung at any height.
        - Pneumonia and Atelectasis: any zone (upper, middle, lower) of either lung;
          an atelectatic plate lies in any zone, and a lobar collapse is a lower-lobe
          wedge (typical) or an upper-lobe collapse against the upper mediastinum.
        - Edema: bilateral perihilar (typical), unilateral perihilar (either side,
          higher or lower), or bibasal, a third each.
        - Emphysema: both whole lungs (typical), upper-zone predominant (centrilobular,
          no diaphragm change) or lower-zone predominant (panlobular), a third each.
        - Fibrosis: peripheral basal (typical), upper-zone or mid-zone predominant,
          in both lungs or one.
        - Hernia: hiatal (retrocardiac, typical, 40 %), Bochdalek (posterolateral
          over a dome, the left in three of four, 35 %) or Morgagni (right
          cardiophrenic angle, 25 %); always at the diaphragm.
        - Pleural_Thickening: a lateral band at any height instead of mid-chest (or
          an apical cap), and on both sides in a third of wide draws.
        - Unchanged (already as wide as the anatomy allows, or fixed by it):
          Consolidation and Infiltration (any zone of either lung), Nodule and Mass
          (anywhere in the visible lung fields), Pneumothorax (either apex, tracking
          down the lateral wall: upright air rises), Cardiomegaly (the heart).
      ap_heart_magnification: how much wider the heart (normal or enlarged) of an AP
        film is projected than on a PA film (0.1: 10 % wider); 0, the default, renders
        the images of earlier releases. PA images never change.
    """

    image_size: int = 224
    lesion_contrast: float = 1.0
    lesion_size: float = 1.0
    noise: float = 1.0
    prevalence_scale: float = 1.0
    location_variability: float = 0.0
    ap_heart_magnification: float = 0.0

    def __post_init__(self):
        if self.image_size < 16:
            raise ValueError(f"image_size must be at least 16, got {self.image_size}.")
        if self.lesion_size <= 0 or self.prevalence_scale <= 0:
            raise ValueError("lesion_size and prevalence_scale must be positive.")
        if self.noise < 0:
            raise ValueError(f"noise must be non-negative, got {self.noise}.")
        if not 0.0 <= self.location_variability <= 1.0:  # NaN fails too
            raise ValueError(
                f"location_variability must be between 0 and 1 inclusive, "
                f"got {self.location_variability}."
            )
        if not 0.0 <= self.ap_heart_magnification <= 0.5:  # NaN fails too
            raise ValueError(
                f"ap_heart_magnification must be between 0 and 0.5 inclusive, "
                f"got {self.ap_heart_magnification}."
            )


# ---------------------------------------------------------------------------- labels

# A share of patients is normal; the rest draw findings at prevalence / (1 - share),
# which brings "No Finding" to about half, as in NIH, instead of the third that
# independent draws at these prevalences would give.
_NORMAL_SHARE = 0.45
_MAX_PROBABILITY = 0.95
# Co-occurrence: child -> (parents, relative risk when any parent is present).
_PARENTS = {
    "Edema": (("Cardiomegaly",), 4.0),
    "Effusion": (("Cardiomegaly", "Edema"), 3.0),
    "Atelectasis": (("Effusion",), 2.5),
    "Consolidation": (("Infiltration",), 2.5),
    "Pneumonia": (("Infiltration", "Consolidation"), 3.0),
    "Mass": (("Nodule",), 2.0),
    "Pneumothorax": (("Emphysema",), 3.0),
    "Pleural_Thickening": (("Fibrosis",), 3.0),
}
# Parents before children.
_LABEL_ORDER = (
    "Cardiomegaly",
    "Edema",
    "Effusion",
    "Atelectasis",
    "Infiltration",
    "Consolidation",
    "Pneumonia",
    "Nodule",
    "Mass",
    "Emphysema",
    "Pneumothorax",
    "Fibrosis",
    "Pleural_Thickening",
    "Hernia",
)

# Child streams of an example's SeedSequence; findings use _STREAM_FINDING + class index.
_STREAM_LABELS, _STREAM_ANATOMY, _STREAM_EXPOSURE, _STREAM_FINDING = 0, 1, 2, 3
# Which findings take their wide placement (``location_variability``): after the findings'.
_STREAM_LOCATION = _STREAM_FINDING + len(PHANTOM_CLASSES)
# The patient's sex, age and view (``sample_attributes``).
_STREAM_ATTRIBUTES = _STREAM_LOCATION + 1


def _stream(seed: int, index: int, key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence((seed, index), spawn_key=(key,)))


@functools.lru_cache(maxsize=16)
def _label_model(prevalence_scale: float) -> tuple[float, dict, dict]:
    """P(abnormal) and, per class, P(present | abnormal) without and with a parent present.

    The base rates solve ``marginal = base * (1 + (rr - 1) * P(any parent))`` with
    the parents taken as independent, so the marginals come out close to the targets.
    """
    p_abnormal = min(1.0, (1.0 - _NORMAL_SHARE) * prevalence_scale)
    conditional = {
        c: min(min(p * prevalence_scale, _MAX_PROBABILITY) / p_abnormal, _MAX_PROBABILITY)
        for c, p in PREVALENCE.items()
    }
    base, boosted = {}, {}
    for c in _LABEL_ORDER:
        parents, risk = _PARENTS.get(c, ((), 1.0))
        p_parent = 1.0 - math.prod(1.0 - conditional[p] for p in parents)
        base[c] = conditional[c] / (1.0 + (risk - 1.0) * p_parent)
        boosted[c] = min(base[c] * risk, _MAX_PROBABILITY)
    return p_abnormal, base, boosted


def sample_labels(seed: int, index: int, config: PhantomConfig = PhantomConfig()) -> np.ndarray:
    """The ``(14,)`` int32 labels of example ``(seed, index)`` in NIH order, without rendering."""
    p_abnormal, base, boosted = _label_model(float(config.prevalence_scale))
    draws = _stream(seed, index, _STREAM_LABELS).random(len(_LABEL_ORDER) + 1)
    present = dict.fromkeys(PHANTOM_CLASSES, False)
    if draws[0] < p_abnormal:
        for c, u in zip(_LABEL_ORDER, draws[1:], strict=True):
            parents = _PARENTS.get(c, ((), 1.0))[0]
            present[c] = bool(u < (boosted if any(present[p] for p in parents) else base)[c])
    return np.asarray([present[c] for c in PHANTOM_CLASSES], np.int32)


# Attributes, drawn given the labels (see the module docstring).
_AGE_RELATED = (
    "Cardiomegaly",
    "Edema",
    "Effusion",
    "Emphysema",
    "Fibrosis",
    "Hernia",
    "Mass",
    "Nodule",
    "Pleural_Thickening",
)
# Age ~ Normal(_AGE_MEAN + _AGE_SHIFT * min(age-related findings, 3), _AGE_STD), in
# whole years clipped to _AGE_RANGE: equal spreads, so P(finding | age) rises with age.
_AGE_MEAN, _AGE_SHIFT, _AGE_STD, _AGE_RANGE = 45.0, 9.0, 15.0, (18, 95)
_AP_FINDINGS = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Effusion",
    "Pneumonia",
    "Pneumothorax",
)
# log-odds of an AP film: _AP_LOGIT + _AP_PER_YEAR * (age - 50) + log(_AP_ODDS) if sick.
_AP_LOGIT, _AP_PER_YEAR, _AP_ODDS = -1.3, 0.03, 4.0


def sample_attributes(seed: int, index: int, config: PhantomConfig = PhantomConfig()) -> dict:
    """``{"sex": "M" | "F", "age": int years, "view": "PA" | "AP"}`` of example
    ``(seed, index)``, without rendering: drawn from the attributes' own stream given the
    example's labels (:func:`sample_labels`), with the effects the module docstring lists."""
    present = dict(zip(PHANTOM_CLASSES, sample_labels(seed, index, config), strict=True))
    rng = _stream(seed, index, _STREAM_ATTRIBUTES)
    u_sex, u_view, z_age = rng.random(), rng.random(), rng.standard_normal()
    related = min(sum(int(present[c]) for c in _AGE_RELATED), 3)
    age = int(np.clip(round(_AGE_MEAN + _AGE_SHIFT * related + _AGE_STD * z_age), *_AGE_RANGE))
    sick = any(present[c] for c in _AP_FINDINGS)
    logit = _AP_LOGIT + _AP_PER_YEAR * (age - 50) + (math.log(_AP_ODDS) if sick else 0.0)
    view = "AP" if u_view < 1.0 / (1.0 + math.exp(-logit)) else "PA"
    return {"sex": "M" if u_sex < 0.5 else "F", "age": age, "view": view}


# ------------------------------------------------------------------ grids and fields


@functools.lru_cache(maxsize=8)
def _pixel_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """``(S, S)`` float32 pixel-centre coordinates ``(y, x)`` in [0, 1]."""
    c = (np.arange(size, dtype=np.float32) + 0.5) / size
    yy, xx = np.meshgrid(c, c, indexing="ij")
    yy.setflags(write=False)
    xx.setflags(write=False)
    return yy, xx


@functools.lru_cache(maxsize=8)
def _gaussian_bank(size: int) -> np.ndarray:
    # Drawing S*S normals would cost a tenth of a render, so each image takes a random
    # window of one fixed bank (a pure function of the size).
    bank = np.random.default_rng(0x5EED).standard_normal(4 * size * size, dtype=np.float32)
    bank.setflags(write=False)
    return bank


def _gaussian_field(rng: np.random.Generator, size: int) -> np.ndarray:
    """``(S, S)`` standard normal noise."""
    bank = _gaussian_bank(size)
    start = int(rng.integers(len(bank) - size * size))
    return bank[start : start + size * size].reshape(size, size)


@functools.lru_cache(maxsize=32)
def _smooth_bank(size: int, cells: int) -> np.ndarray:
    # A (2S, 2S) band-limited field with about `cells` blobs per image side, unit std.
    coarse = np.random.default_rng((0x5EED, cells)).standard_normal((2 * cells, 2 * cells))
    image = Image.fromarray(coarse.astype(np.float32), "F")
    field = np.asarray(image.resize((2 * size, 2 * size), Image.BICUBIC), np.float32)
    field = (field - field.mean()) / field.std()
    field.setflags(write=False)
    return field


def _smooth_field(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """``(S, S)`` smooth noise of unit std with about ``cells`` blobs per side (a view)."""
    oy, ox = rng.integers(size, size=2)
    return _smooth_bank(size, cells)[oy : oy + size, ox : ox + size]


def _clip01(x):
    return np.clip(x, 0.0, 1.0)


def _upsample(grid: np.ndarray, size: int) -> np.ndarray:
    """Bilinear, pixel-centre aligned resize of a square float32 grid to ``(size, size)``."""
    if 2 * len(grid) != size:
        return np.asarray(Image.fromarray(grid, "F").resize((size, size), Image.BILINEAR))
    # Doubling in numpy: each output pixel is 3/4 its parent plus 1/4 the nearer neighbour
    # (what Pillow computes, at half the cost).
    g = np.pad(grid, 1, mode="edge")
    rows = np.empty((size, len(grid) + 2), np.float32)
    rows[0::2] = 0.75 * g[1:-1] + 0.25 * g[:-2]
    rows[1::2] = 0.75 * g[1:-1] + 0.25 * g[2:]
    out = np.empty((size, size), np.float32)
    out[:, 0::2] = 0.75 * rows[:, 1:-1] + 0.25 * rows[:, :-2]
    out[:, 1::2] = 0.75 * rows[:, 1:-1] + 0.25 * rows[:, 2:]
    return out


def _rasterise(cells: int, segments: np.ndarray, peaks: np.ndarray, widths: np.ndarray):
    """Strokes binned on a ``(cells, cells)`` float32 grid spanning the image.

    Args:
      cells: grid side.
      segments: ``(n, 2, 2)`` start and end ``(x, y)`` in image units ([0, 1]).
      peaks: ``(n,)`` value in the middle of a stroke (e.g. a vessel's attenuation).
      widths: ``(n,)`` stroke widths in image units.

    Points on a lattice along and across each stroke (at most half a cell apart)
    each carry their share of the stroke's area; strokes thinner than a cell come
    out fainter in proportion. Bilinear upsampling of the grid then antialiases
    them, all without per-segment Python.
    """
    step = 0.5 / cells
    vec = segments[:, 1] - segments[:, 0]
    length = np.hypot(vec[:, 0], vec[:, 1]) + 1e-9
    along = np.ceil(length / step).astype(np.int64)
    across = np.ceil(widths / step).astype(np.int64)
    count = along * across
    owner = np.repeat(np.arange(len(segments)), count)
    local = np.arange(owner.size) - np.repeat(np.cumsum(count) - count, count)
    t = (local // across[owner] + 0.5) / along[owner]
    c = ((local % across[owner] + 0.5) / across[owner] - 0.5) * widths[owner]
    normal = np.stack([-vec[:, 1], vec[:, 0]], 1) / length[:, None]
    xy = segments[owner, 0] + t[:, None] * vec[owner] + c[:, None] * normal[owner]
    ij = np.floor(xy * cells).astype(np.int64)
    inside = np.all((ij >= 0) & (ij < cells), 1)
    # Each point carries its share of the stroke's area, in cells.
    area = (length / along) * (widths / across) * cells * cells
    flat = ij[inside, 1] * cells + ij[inside, 0]
    grid = np.bincount(flat, (peaks * area)[owner[inside]], cells * cells)
    return grid.astype(np.float32).reshape(cells, cells)


def _branching_tree(rng, roots, directions, length, generations, shrink=0.75, spread=(0.25, 0.5)):
    """Segments of binary trees grown from trunks (anatomical coordinates).

    Args:
      roots: ``(n, 2)`` ``(x, y)`` where each of the n trunks starts.
      directions: ``(n,)`` trunk angles (radians, image axes: x right, y down).
      length: trunk length; each generation's length is about ``shrink`` times its parent's.
      generations: ``(peak, width)`` of each generation; each branch splits in two.
      spread: range of the branching half-angle.

    Returns:
      ``(m, 2, 2)`` segments (start and end ``(x, y)``), ``(m,)`` peaks, ``(m,)`` widths.
    """
    angle = np.asarray(directions, np.float64)
    start = np.asarray(roots, np.float64)
    size = length * rng.uniform(0.8, 1.2, len(angle))
    segments, peaks, widths = [], [], []
    for peak, width in generations:
        end = start + size[:, None] * np.stack([np.cos(angle), np.sin(angle)], 1)
        segments.append(np.stack([start, end], 1))
        peaks.append(np.full(len(angle), peak))
        widths.append(np.full(len(angle), width))
        half_angle = rng.uniform(*spread, len(angle))
        angle = np.concatenate([angle - half_angle, angle + half_angle])
        angle += rng.normal(0.0, 0.08, len(angle))
        start = np.concatenate([end, end])
        size = np.tile(size, 2) * rng.uniform(shrink - 0.1, shrink + 0.1, len(angle))
    return np.concatenate(segments), np.concatenate(peaks), np.concatenate(widths)


# ------------------------------------------------------------------------ anatomy

MID = 0.5  # the anatomical midline
AIR_FRACTION = 0.82  # share of the chest's depth that is air in an inflated lung
EDGE = 0.035  # lung air thickness grows like sqrt(depth / EDGE) inside a margin


class _Frame(NamedTuple):
    """Anatomical coordinates of every pixel of an ``(n, n)`` grid (float32/bool)."""

    X: np.ndarray  # anatomical x (unit: image side; 0.5 is the midline)
    Y: np.ndarray  # anatomical y (down)
    d: np.ndarray  # lateral distance from the midline
    left: np.ndarray  # patient's left, the image's right


def _frame(size: int, pose: tuple[float, float, float, float]) -> _Frame:
    """Inverts the pose (shift, scale, rotation) on the ``(size, size)`` pixel grid."""
    tx, ty, scale, angle = pose
    py, px = _pixel_grid(size)
    c, s = math.cos(angle) / scale, math.sin(angle) / scale
    dx, dy = px - (0.5 + tx), py - (0.5 + ty)
    X = MID + c * dx + s * dy
    Y = 0.5 - s * dx + c * dy
    return _Frame(X, Y, np.abs(X - MID), X >= MID)


class _Anatomy:
    """The normal thorax of one example on the ``(S, S)`` pixel grid.

    ``(S, S)`` attributes are float32 fields or bool masks; ``X, Y, d, left`` are
    those of ``_Frame``. Sides: 0 is the patient's right (image left), 1 the left.
    Margins are approximate distances (image-side units) inside a boundary.
    ``magnification`` widens the heart (an AP film's); 1 draws the same anatomy.
    """

    def __init__(self, rng: np.random.Generator, size: int, magnification: float = 1.0):
        self.size = size
        self.magnification = magnification
        u = rng.uniform
        # Pose: shift, scale, rotation (the forward map from anatomy to the image).
        self.pose = (u(-0.03, 0.03), u(-0.03, 0.03), u(0.92, 1.06), u(-0.06, 0.06))
        self.X, self.Y, self.d, self.left = frame = _frame(size, self.pose)
        Y, d = self.Y, self.d

        # Body: neck widening into the shoulders, elliptical cross-section; the
        # shoulder girdle muscles make the apices denser than the bases.
        half_width = u(0.43, 0.5)
        self.body_depth = u(1.35, 1.7)
        neck = u(0.08, 0.1)
        # Sloping shoulders: the half-width eases out from the neck.
        body_half = neck + (half_width - neck) * (1.0 - (1.0 - _clip01((Y + 0.05) / 0.3)) ** 2)
        depth = _clip01(1.0 - (d / body_half) ** 2)
        self.body = depth > 0.0
        self.body_att = (self.body_depth * np.sqrt(depth)) * (
            1.0 + 0.25 * _clip01((0.32 - Y) / 0.25)
        )

        # Lungs: an ellipse for the apex and the lateral (rib) margin, a mediastinal
        # margin with the aortic knob on the left, and a diaphragm dome per side,
        # the right one higher.
        self.apex = u(0.1, 0.14)
        self.lung_dc = u(0.165, 0.185)  # lateral offset of the ellipse centre
        self.lung_a = u(0.215, 0.245)  # lateral radius
        self.lung_yc = u(0.66, 0.7)
        self.lung_b = self.lung_yc - self.apex
        right_dome = u(0.69, 0.75)
        self.dome_top = (right_dome, right_dome + u(0.01, 0.035))
        self.dome_peak = u(0.15, 0.19)
        self.dome_curve = u(1.6, 2.4)
        self.knob = (u(0.018, 0.035), u(0.27, 0.32))  # aortic knob bulge and level
        self.mediastinum = (u(0.06, 0.08), u(0.055, 0.07))
        self.lat_m = self._lateral_margin()
        self.top = self._dome_top(frame)
        self.dome = self._dome(frame)
        bulge, level = self.knob
        knob = bulge * _clip01(1.0 - ((Y - level) / 0.045) ** 2)
        medial = np.where(self.left, self.mediastinum[1] + knob, np.float32(self.mediastinum[0]))
        self.inner_m = np.minimum(self.lat_m, d - medial)
        self.margin = np.minimum(self.inner_m, self.dome - Y)
        self.air = np.sqrt(_clip01(self.margin / EDGE))
        self.v = (Y - self.apex) / (self.top - self.apex)  # 0 at the apex, 1 at the dome top
        self.air_att = (self.body_att * AIR_FRACTION) * self.air  # attenuation lung air removes

        # Heart: a tilted ellipse sized by the cardiothoracic ratio (CTR), sitting
        # on the diaphragm, about a third of its width right of the midline.
        # An AP film projects the same heart wider: no extra draw, the rest is unchanged.
        self.ctr = float(np.clip(rng.normal(0.445, 0.03), 0.37, 0.499)) * magnification
        self.heart_tilt = u(0.5, 0.8)
        self.heart_aspect = u(0.68, 0.78)
        self.heart_right = u(0.28, 0.36)
        self.heart_drop = u(0.05, 0.08)  # how far the ellipse dips below the domes
        heart_e = self.heart_ellipse(1.0)
        self.heart_mask = self.heart_region(heart_e)
        # 0 in the heart shadow, 1 a little outside it: opacities show only where lung does.
        self.visible = _clip01((heart_e - 1.0) * 8.0)
        self.lungs = (self.margin > 0.0) & (heart_e > 1.0) & self.body
        # Distance inside the visible lung (heart distance as a lower bound).
        b_h = self.heart_axes()[1]
        self.lung_margin = np.minimum(self.margin, (np.sqrt(heart_e) - 1.0) * b_h)
        self.lung_att = self.air_att * self.visible

        right_hilum = (u(0.1, 0.12), u(0.45, 0.49))  # (lateral distance, y); the left is higher
        self.hila = (right_hilum, (u(0.1, 0.12), right_hilum[1] - u(0.01, 0.035)))
        # Vessels, airways and bones touch no mask or finding geometry, so they are
        # drawn on a half-size grid (a quarter of the work) and upsampled together;
        # the slight blur is detector-like.
        self.half = size // 2
        self._air_half = self.air[::2, ::2][: self.half, : self.half]
        self._vessels_half = self._vessels(rng)
        texture = _smooth_field(rng, size, 30)  # parenchymal mottle
        self.attenuation = (
            self.body_att
            - self.air_att * (1.0 + 0.03 * texture)
            + self.heart_att(heart_e)
            + self._structures(rng)
        )

    # -- geometry ---------------------------------------------------------------

    def _lateral_margin(self):
        """Distance inside the apical/lateral (ellipse) lung margin: ``(1 - e) / |grad e|``."""
        ex = (self.d - self.lung_dc) / self.lung_a
        ey = (self.Y - self.lung_yc) / self.lung_b
        grad = 2.0 * np.sqrt((ex / self.lung_a) ** 2 + (ey / self.lung_b) ** 2) + 1e-3
        return (1.0 - ex * ex - ey * ey) / grad

    def _dome_top(self, frame: _Frame) -> np.ndarray:
        # float32 scalars keep the grid float32.
        return np.where(frame.left, *np.float32(self.dome_top[::-1]))

    def _dome(self, frame: _Frame) -> np.ndarray:
        """y of the diaphragm under each pixel: a parabola per side."""
        return self._dome_top(frame) + self.dome_curve * (frame.d - self.dome_peak) ** 2

    def side_mask(self, side: int) -> np.ndarray:
        return self.left if side else ~self.left

    def side_x(self, side: int, d: float) -> float:
        """Anatomical x at lateral distance ``d`` on ``side``."""
        return MID + d if side else MID - d

    def to_image(self, points: np.ndarray) -> np.ndarray:
        """Anatomical ``(..., 2)`` ``(x, y)`` points to image units ([0, 1] across the grid)."""
        tx, ty, scale, angle = self.pose
        c, s = math.cos(angle) * scale, math.sin(angle) * scale
        x, y = points[..., 0] - MID, points[..., 1] - 0.5
        return np.stack([0.5 + tx + c * x - s * y, 0.5 + ty + s * x + c * y], -1)

    def strokes(self, segments, peaks, widths) -> np.ndarray:
        """Anatomical strokes on the half-size grid (see ``_rasterise``)."""
        return _rasterise(self.half, self.to_image(segments), peaks, widths * self.pose[2])

    @functools.cached_property
    def vessels(self) -> np.ndarray:
        """``(S, S)`` vessel attenuation as it enters the image (upsampling is linear)."""
        return _upsample(self._vessels_half, self.size)

    def heart_axes(self) -> tuple[float, float]:
        """Semi-axes of the normal heart's ellipse, whose width is CTR x thoracic width."""
        thorax = 2.0 * (self.lung_dc + self.lung_a)
        half = self.ctr * thorax / 2.0
        ct, st = math.cos(self.heart_tilt), math.sin(self.heart_tilt)
        a = half / math.sqrt(ct * ct + (self.heart_aspect * st) ** 2)
        return a, self.heart_aspect * a

    def heart_ellipse(self, scale: float) -> np.ndarray:
        """Implicit ``(S, S)`` heart ellipse (< 1 inside), ``scale`` times the normal width.

        An enlarged heart is stretched about a point at the bottom of the normal one,
        slightly right of its centre: it widens by ``scale``, mostly to the patient's
        left (image right), and grows upward less. Its width, hence the CTR, scales
        by ``scale`` exactly.
        """
        a, b = self.heart_axes()
        ct, st = math.cos(self.heart_tilt), math.sin(self.heart_tilt)
        half_x, half_y = math.hypot(a * ct, b * st), math.hypot(a * st, b * ct)
        cx = MID + half_x * (1.0 - 2.0 * self.heart_right)
        cy = 0.5 * sum(self.dome_top) + self.heart_drop - half_y
        ax, ay = cx - 0.2 * half_x, cy + half_y
        du = (self.X - ax) / scale + (ax - cx)
        dv = (self.Y - ay) / (1.0 + 0.4 * (scale - 1.0)) + (ay - cy)
        return ((ct * du + st * dv) / a) ** 2 + ((ct * dv - st * du) / b) ** 2

    def heart_region(self, heart_e: np.ndarray) -> np.ndarray:
        """The cardiac silhouette: the heart ellipse above the diaphragm."""
        return (heart_e < 1.0) & (self.Y < self.dome) & self.body

    def heart_att(self, heart_e: np.ndarray) -> np.ndarray:
        """Attenuation the heart adds: it displaces most of the lung depth it overlaps."""
        return (0.8 * self.air_att) * np.sqrt(_clip01((1.0 - heart_e) * 4.0))

    def lung_point(self, rng, clearance, side=None, v_range=(0.0, 1.0)):
        """Anatomical ``(x, y)`` of a random point at least ``clearance`` inside the
        visible lungs (the deepest point of the zone when none is that deep)."""
        zone = (self.v >= v_range[0]) & (self.v <= v_range[1])
        if side is not None:
            zone &= self.side_mask(side)
        margin = np.where(zone, self.lung_margin, np.float32(-1.0))
        idx = np.flatnonzero(margin > clearance)
        i = idx[rng.integers(idx.size)] if idx.size else int(np.argmax(margin))
        return float(self.X.flat[i]), float(self.Y.flat[i])

    # -- structures -------------------------------------------------------------

    def _vessels(self, rng) -> np.ndarray:
        """Half-size vessel attenuation: a tree from each hilum, thinning outward."""
        roots, directions = [], []
        for side, (hd, hy) in enumerate(self.hila):
            # Trunks leave along the hilum, from up-and-out to down-and-out; the
            # lower lobe takes more.
            phi = np.linspace(-1.2, 1.3, 6) + rng.uniform(-0.12, 0.12, 6)
            directions.append(np.arctan2(np.sin(phi), (1.0 if side else -1.0) * np.cos(phi)))
            along = np.linspace(-0.035, 0.045, 6) + rng.uniform(-0.008, 0.008, 6)
            roots.append(np.stack([np.full(6, self.side_x(side, hd)), hy + along], 1))
        roots = np.concatenate(roots)
        generations = ((0.22, 0.018), (0.14, 0.011), (0.09, 0.007), (0.06, 0.0045))
        segments, peaks, widths = _branching_tree(
            rng, roots, np.concatenate(directions), 0.08, generations
        )
        # Markings fade toward the periphery: the outer third of the lung is nearly clear.
        hilum = np.tile(roots, (2 ** len(generations) - 1, 1))
        reach = np.hypot(*(segments[:, 1] - hilum).T)
        peaks = peaks * np.clip(1.25 - reach / 0.26, 0.1, 1.0)
        return self.strokes(segments, peaks, widths) * self._air_half

    def _structures(self, rng) -> np.ndarray:
        """``(S, S)`` attenuation of the vessels, airways and bones."""
        u = rng.uniform
        half = self.half
        frame = _frame(half, self.pose)
        X, Y, d = frame.X, frame.Y, frame.d
        depth = self.body_depth

        # Trachea down to the carina, nudged right by the aortic knob, then the main
        # bronchi to the hila, the right one steeper.
        carina = u(0.3, 0.35)
        width = u(0.017, 0.023)
        tx = X - (MID - 0.008 * _clip01(1.0 - ((Y - self.knob[1]) / 0.08) ** 2))
        air = np.sqrt(_clip01(1.0 - (tx / width) ** 2)) * _clip01((carina - Y) / 0.01)
        for side, (hd, hy) in enumerate(self.hila):
            ex, ey = self.side_x(side, hd - 0.02), hy - 0.05
            length = math.hypot(ex - MID, ey - carina)
            ux, uy = (ex - MID) / length, (ey - carina) / length
            t = _clip01(((X - MID) * ux + (Y - carina) * uy) / length)
            gap2 = (X - MID - t * length * ux) ** 2 + (Y - carina - t * length * uy) ** 2
            air = np.maximum(air, 0.8 * np.sqrt(_clip01(1.0 - gap2 / (0.75 * width) ** 2)))
        # Airway air inside the lung is already part of the lung's air.
        att = self._vessels_half - (0.55 * depth) * air * (1.0 - self._air_half)

        # Spine: vertebral bodies with darker disc spaces.
        spine_half = u(0.038, 0.046)
        spine = np.sqrt(_clip01(1.0 - (d / spine_half) ** 2))
        phase = (Y - u(0.0, 0.06)) / u(0.052, 0.06)
        disc = np.abs(phase - np.floor(phase) - 0.5)
        att += (0.28 * depth) * spine * (1.0 - 0.4 * _clip01((disc - 0.38) * 8.0))

        # Posterior ribs: level sets of a warped y. From the spine each rib rises
        # laterally (more steeply higher up), then hooks down at the chest wall; the
        # spacing grows downward. A rib is a tube: its cortex projects brighter.
        slope = u(0.3, 0.4) * (1.2 - Y)
        ry = Y + slope * (d - 0.03) - 6.0 * np.maximum(d - 0.24, 0.0) ** 2 - u(0.06, 0.085)
        h0 = u(0.056, 0.064)
        q = (np.sqrt(np.maximum(1.0 + 0.08 * ry / h0, 0.0)) - 1.0) * 25.0
        w = 4.0 * (q - np.floor(q)) - 1.0  # the rib is the first half of each period
        tube = np.sqrt(_clip01(1.0 - w * w)) - 0.6 * np.sqrt(_clip01(0.64 - w * w))
        lateral_end = self.lung_dc + self.lung_a + 0.03
        window = _clip01((d - 0.035) / 0.02) * _clip01((lateral_end - d) / 0.03)
        ribs = tube * ((q >= 0.0) & (q < 11.0)) * window

        # Anterior ribs: fainter bands running down and in from the wall, fading
        # where the costal cartilage (invisible) begins.
        qa = (Y + 0.4 * (d - 0.42) - 1.2 * (d - 0.42) ** 2 - u(0.14, 0.17)) / u(0.065, 0.072)
        wa = 5.0 * (qa - np.floor(qa)) - 1.0
        anterior = np.sqrt(_clip01(1.0 - wa * wa)) * ((qa >= 0.0) & (qa < 6.0))
        anterior *= _clip01((d - 0.15) / 0.08) * window
        att += depth * (0.13 * ribs + 0.05 * anterior)

        # Clavicles: struts from the manubrium up and out to the acromion.
        cy = u(0.2, 0.24) - 0.28 * (d - 0.02) + 0.2 * (d - 0.02) ** 2
        clavicle = np.sqrt(_clip01(1.0 - ((Y - cy) / u(0.014, 0.018)) ** 2))
        clavicle *= _clip01((d - 0.025) / 0.015) * _clip01((0.34 - d) / 0.03)
        att += (0.45 * depth) * clavicle

        # Humeral heads at the shoulders.
        head = _clip01(1.0 - ((d - u(0.43, 0.47)) ** 2 + (Y - u(0.1, 0.14)) ** 2) / 0.055**2)
        att += (0.4 * depth) * np.sqrt(head)

        # Gastric air under the left dome, above a fluid level.
        if rng.random() < 0.75:
            bx, by = self.side_x(1, u(0.12, 0.2)), self.dome_top[1] + u(0.03, 0.05)
            bubble = _clip01(1.0 - ((X - bx) / 0.045) ** 2 - ((Y - by) / 0.035) ** 2)
            bubble *= (Y < by + u(0.0, 0.015)) & (Y > self._dome(frame))
            att -= (0.35 * depth) * np.sqrt(bubble)
        return _upsample(att, self.size) * self.body


# ----------------------------------------------------------------------- findings
#
# Each generator takes the anatomy, its own random stream and the size scale and
# returns ``(delta, mask)``: the ``(S, S)`` change in attenuation (scaled by the
# lesion contrast later) and the ``(S, S)`` bool truth mask. Every delta vanishes
# a few pixels beyond its mask, so a finding changes only its own region.


def _ellipse(an, cx, cy, rx, ry, angle=0.0):
    ca, sa = math.cos(angle), math.sin(angle)
    du, dv = an.X - cx, an.Y - cy
    return ((ca * du + sa * dv) / rx) ** 2 + ((ca * dv - sa * du) / ry) ** 2


def _sphere(e):
    """Projected thickness of a ball with implicit function ``e`` (< 1 inside)."""
    return np.sqrt(_clip01(1.0 - e))


def _airspace(an, rng, side, v_range, size, irregular, cells):
    """A soft lobar/segmental airspace region: ``(S, S)`` field, > 0 inside.

    The noise roughens the margin but spares the centre, which stays inside.
    """
    rx, ry = rng.uniform(0.065, 0.11) * size, rng.uniform(0.055, 0.095) * size
    cx, cy = an.lung_point(rng, 0.03, side, v_range)
    e = _ellipse(an, cx, cy, rx, ry, rng.uniform(-0.5, 0.5))
    rough = irregular * np.minimum(e, 1.0) * _smooth_field(rng, an.size, cells)
    return 1.0 - e + rough, (cx, cy, rx, ry)


def _bronchogram(an, rng, cx, cy, rx, side):
    """Dark branching lines: bronchi kept open inside an airspace opacity, ``(S, S)``."""
    hd, hy = an.hila[side]
    root = np.array([an.side_x(side, hd) * 0.4 + cx * 0.6, hy * 0.4 + cy * 0.6])
    heading = math.atan2(cy - root[1], cx - root[0])
    tree = _branching_tree(
        rng,
        np.tile(root, (2, 1)),
        heading + rng.uniform(-0.3, 0.3, 2),
        0.6 * rx,
        ((1.0, 0.008), (1.0, 0.006), (1.0, 0.005)),
    )
    return _upsample(an.strokes(*tree), an.size)


def _atelectasis(an, rng, size, wide=False):
    """Collapse in the lower or middle zone of one lung: a plate-like band, or a basal
    wedge whose fissure bows inward and under which the hemidiaphragm rises (volume loss).

    Wide: the plate lies in any zone, and half the lobar collapses are of the upper lobe."""
    side = int(rng.integers(2))
    in_side = an.side_mask(side)
    if rng.random() < 0.55:
        cx, cy = an.lung_point(rng, 0.02, side, (0.12, 0.88) if wide else (0.5, 0.85))
        half_len = rng.uniform(0.04, 0.08) * size
        half_thick = rng.uniform(0.009, 0.016) * size
        tilt = rng.uniform(-0.3, 0.3)
        ct, st = math.cos(tilt), math.sin(tilt)
        along = ct * (an.X - cx) + st * (an.Y - cy)
        across = ct * (an.Y - cy) - st * (an.X - cx)
        profile = _clip01(1.0 - (across / half_thick) ** 2)
        profile *= _clip01((half_len - np.abs(along)) / 0.015) * in_side
        return rng.uniform(0.6, 0.9) * profile * an.lung_att, (profile > 0.0) & an.lungs
    if wide and rng.random() < 0.5:
        return _upper_lobe_collapse(an, rng, side)
    # The wedge: the paracardiac base below a fissure that runs from the heart border
    # (below the hilum) down and out to the dome, bowed inward.
    y1 = an.hila[side][1] + rng.uniform(0.05, 0.12)
    row = an.lungs & in_side & (np.abs(an.Y - y1) < 0.012)
    d1 = float(an.d[row].min()) if row.any() else an.hila[side][0]
    # Past the heart's widest point, so the wedge shows beside the heart, not behind it.
    heart = an.heart_mask & in_side
    d2 = max(d1, float(an.d[heart].max()) if heart.any() else 0.0) + rng.uniform(0.06, 0.14) * size
    y2 = an.dome_top[side] + an.dome_curve * (d2 - an.dome_peak) ** 2
    length = math.hypot(d2 - d1, y2 - y1)
    ux, uy = (d2 - d1) / length, (y2 - y1) / length
    rel_d, rel_y = an.d - d1, an.Y - y1
    t = _clip01((ux * rel_d + uy * rel_y) / length)
    s = ux * rel_y - uy * rel_d - rng.uniform(0.005, 0.02) * 4.0 * t * (1.0 - t)
    profile = _clip01(s / 0.012) * _clip01((an.Y - y1 + 0.02) / 0.02) * in_side
    # The dome rises under the wedge only, so the lost lung stays inside the mask.
    raised = np.minimum(an.inner_m, an.dome - rng.uniform(0.01, 0.025) * profile - an.Y)
    lost = an.air_att - an.body_att * AIR_FRACTION * np.sqrt(_clip01(raised / EDGE))
    delta = rng.uniform(0.45, 0.75) * profile * an.lung_att + lost * an.visible
    return delta, (profile > 0.0) & an.lungs


def _upper_lobe_collapse(an, rng, side):
    """An upper lobe collapsed up and in: a dense triangle against the upper mediastinum
    and apex, above a fissure that runs from the hilum up and out to the chest wall."""
    hd, hy = an.hila[side]
    d1, y1 = hd, hy - rng.uniform(0.0, 0.04)
    d2, y2 = an.lung_dc + an.lung_a + 0.02, an.apex + rng.uniform(0.08, 0.2)
    length = math.hypot(d2 - d1, y2 - y1)
    ux, uy = (d2 - d1) / length, (y2 - y1) / length
    rel_d, rel_y = an.d - d1, an.Y - y1
    t = _clip01((ux * rel_d + uy * rel_y) / length)
    # Positive above the fissure, which bows up (the lobe has lost volume).
    s = uy * rel_d - ux * rel_y - rng.uniform(0.005, 0.02) * 4.0 * t * (1.0 - t)
    profile = _clip01(s / 0.012) * _clip01((y1 + 0.02 - an.Y) / 0.02) * an.side_mask(side)
    return rng.uniform(0.5, 0.8) * profile * an.lung_att, (profile > 0.0) & an.lungs


def _cardiomegaly_ctr(rng) -> float:
    # Enlarged hearts cluster just above 0.5 (clear of it by more than a pixel's worth
    # of measurement error) with a tail to about 0.7.
    return 0.52 + min(rng.exponential(0.06), 0.18)


def _cardiomegaly(an, rng, size):
    """The heart enlarged to a cardiothoracic ratio above 0.5; the mask is the heart."""
    normal = an.heart_ellipse(1.0)
    # The union with the normal heart: the enlarged one need not contain it near the top.
    enlarged = _cardiomegaly_ctr(rng) * an.magnification  # magnified as the normal heart
    heart_e = np.minimum(an.heart_ellipse(enlarged / an.ctr), normal)
    return an.heart_att(heart_e) - an.heart_att(normal), an.heart_region(heart_e)


def _consolidation(an, rng, size):
    """Dense homogeneous lobar/segmental opacity in one zone, sometimes with a fissure
    edge and air bronchograms."""
    side = int(rng.integers(2))
    zone = [(0.1, 0.4), (0.35, 0.65), (0.6, 0.92)][int(rng.integers(3))]
    field, (cx, cy, rx, ry) = _airspace(an, rng, side, zone, size, 0.3, 10)
    if rng.random() < 0.4:  # a fissure gives a sharp straight border
        below = rng.random() < 0.5
        fissure = cy + (1.0 if below else -1.0) * rng.uniform(0.3, 0.7) * ry
        beyond = an.Y > fissure if below else an.Y < fissure
        field = np.where(beyond, np.float32(-1.0), field)
    profile = _clip01(field / 0.2) * an.side_mask(side)
    density = rng.uniform(0.6, 0.85) * profile
    if rng.random() < 0.6:
        density = density * (1.0 - 0.5 * _clip01(_bronchogram(an, rng, cx, cy, rx, side)))
    return density * an.lung_att, (profile > 0.25) & an.lungs


def _edema(an, rng, size, wide=False):
    """Bilateral perihilar ("bat-wing") haze, fading toward the periphery.

    Wide: a third each bilateral perihilar, unilateral perihilar (either side, the
    haze's centre up to 0.08 higher or lower) and bibasal (lower zones, both lungs)."""
    pattern = int(rng.integers(3)) if wide else 0
    sx, sy = rng.uniform(0.11, 0.15) * size, rng.uniform(0.13, 0.17) * size
    hd = 0.5 * (an.hila[0][0] + an.hila[1][0]) + rng.uniform(0.0, 0.03)
    hy = 0.5 * (an.hila[0][1] + an.hila[1][1]) + rng.uniform(0.0, 0.04)
    if pattern == 1:
        hy += rng.uniform(-0.08, 0.08)
    elif pattern == 2:
        hd = rng.uniform(0.14, 0.2)
        hy = 0.5 * sum(an.dome_top) - rng.uniform(0.06, 0.11)
        sy = rng.uniform(0.08, 0.11) * size
    spread = np.exp(-(((an.d - hd) / sx) ** 2 + ((an.Y - hy) / sy) ** 2))
    if pattern == 1:
        spread = spread * an.side_mask(int(rng.integers(2)))
    profile = _clip01((spread - 0.25) / 0.6)
    texture = 0.8 + 0.2 * np.clip(_smooth_field(rng, an.size, 12), -3.0, 3.0)
    delta = rng.uniform(0.15, 0.55) * profile * texture * an.lung_att  # early to florid
    return delta, (profile > 0.05) & an.lungs


def _effusion(an, rng, size, wide=False):
    """Fluid in one or both costophrenic angles up to a meniscus rising laterally.

    Wide: a third are loculated instead, a lens against either lateral chest wall."""
    if wide and rng.random() < 1.0 / 3.0:
        return _loculated_effusion(an, rng, size)
    sides = [(0,), (1,), (0, 1)][int(rng.choice(3, p=[0.35, 0.35, 0.3]))]
    delta = np.zeros_like(an.X)
    mask = np.zeros(an.X.shape, bool)
    lateral = an.lung_dc + an.lung_a
    for side in sides:
        in_side = an.side_mask(side)
        sulcus = float(an.Y[an.lungs & in_side].max())  # the costophrenic angle
        level = sulcus - rng.uniform(0.06, 0.15) * size
        rise = rng.uniform(0.03, 0.06) * size * _clip01((an.d - 0.1) / (lateral - 0.1)) ** 2
        fill = _clip01((an.Y - (level - rise)) / 0.02) * in_side
        delta += rng.uniform(0.75, 0.95) * fill * an.lung_att
        mask |= (fill > 0.0) & an.lungs
    return delta, mask


def _loculated_effusion(an, rng, size):
    """Fluid trapped against the lateral chest wall of one lung at any height: a lens
    (biconvex, thickest at its middle) with tapering ends."""
    side = int(rng.integers(2))
    yc = an.apex + rng.uniform(0.25, 0.75) * (an.dome_top[side] - an.apex)
    half_len = rng.uniform(0.06, 0.11) * size
    peak = max(rng.uniform(0.025, 0.05) * size, 1.5 / an.size)  # over a pixel on small images
    thick = peak * np.sqrt(_clip01(1.0 - ((an.Y - yc) / half_len) ** 2))
    fill = _clip01((thick - an.lat_m) / 0.008) * an.side_mask(side)
    delta = rng.uniform(0.75, 0.95) * fill * an.lung_att
    return delta, (fill > 0.0) & an.lungs


def _emphysema(an, rng, size, wide=False):
    """Larger, hyperlucent lungs with sparse markings over a low, flattened diaphragm;
    the mask is both (enlarged) lung fields.

    Wide: a third each diffuse, upper-zone (centrilobular; the diaphragm stays) and
    lower-zone predominant (panlobular); the mask is the lucent zone."""
    drop = rng.uniform(0.035, 0.06) * size
    top = an.top + drop
    dome = top + rng.uniform(0.35, 0.6) * an.dome_curve * (an.d - an.dome_peak) ** 2
    margin = np.minimum(an.inner_m, dome - an.Y)
    air = np.sqrt(_clip01(margin / EDGE))
    air_att = an.body_att * AIR_FRACTION * air
    lucency = rng.uniform(0.06, 0.12)
    sparse = rng.uniform(0.3, 0.6) * _clip01(1.0 - an.lat_m / 0.12)
    delta = (an.air_att - air_att * (1.0 + lucency) - sparse * an.vessels) * an.visible
    mask = (margin > 0.0) & (an.visible > 0.0) & an.body
    pattern = int(rng.integers(3)) if wide else 0
    if pattern:  # upper- (1) or lower-zone (2) predominant; only the lower lowers the dome
        cut = rng.uniform(0.45, 0.6) if pattern == 1 else rng.uniform(0.4, 0.55)
        zone = _clip01((cut - an.v if pattern == 1 else an.v - cut) / 0.12)
        delta, mask = delta * zone, mask & (zone > 0.2)
    return delta, mask


def _fibrosis(an, rng, size, wide=False):
    """Reticular (net-like) fine lines, peripheral and basal, both lungs.

    Wide: a third each basal, upper-zone (as in sarcoidosis, silicosis, old TB) and
    mid-zone predominant, less strictly peripheral; in both lungs (half) or one."""
    # Zero crossings of band-limited noise form a net of fine curved lines.
    net = _clip01(1.0 - np.abs(_smooth_field(rng, an.size, 36)) / 0.3)
    peripheral = _clip01(1.0 - an.lat_m / (rng.uniform(0.09, 0.13) * size))
    basal = _clip01((an.v - rng.uniform(0.25, 0.4)) / 0.3)
    if wide:
        zone = int(rng.integers(3))
        peripheral = _clip01(1.0 - an.lat_m / (rng.uniform(0.14, 0.2) * size))
        if zone == 1:
            basal = _clip01((rng.uniform(0.5, 0.65) - an.v) / 0.3)
        elif zone == 2:
            basal = _clip01(1.0 - np.abs(an.v - rng.uniform(0.4, 0.6)) / 0.35)
        if rng.random() < 0.5:
            peripheral = peripheral * an.side_mask(int(rng.integers(2)))
    extent = _clip01((peripheral * basal - 0.2) / 0.4)  # the mask is where this is > 0
    delta = rng.uniform(0.45, 0.7) * net * (0.4 + 0.6 * extent) * (extent > 0.0) * an.lung_att
    return delta, (extent > 0.0) & an.lungs


def _hernia(an, rng, size, wide=False):
    """Hiatal hernia: a rounded retrocardiac density at the diaphragm with an air-fluid level.

    Wide: 40 % hiatal, 35 % Bochdalek, 25 % Morgagni (see ``_lateral_hernia``)."""
    if wide:
        kind = int(rng.choice(3, p=[0.4, 0.35, 0.25]))
        if kind:
            return _lateral_hernia(an, rng, size, kind == 1)
    rx, ry = rng.uniform(0.055, 0.08) * size, rng.uniform(0.045, 0.065) * size
    cx = MID + rng.uniform(0.0, 0.05)
    cy = 0.5 * sum(an.dome_top) - rng.uniform(0.015, 0.04)
    e = _ellipse(an, cx, cy, rx, ry)
    inside = _sphere(e)
    # Gas rises: lucent above a sharp horizontal level, fluid below, a thin wall.
    above = an.Y < cy + rng.uniform(-0.3, 0.4) * ry
    wall = _clip01(1.0 - np.abs(e - 1.0) / 0.12)
    delta = an.body_depth * (rng.uniform(-0.8, -0.55) * inside * above + 0.08 * (inside + wall))
    return delta, (e < 1.0) & an.body


def _lateral_hernia(an, rng, size, bochdalek):
    """Abdominal contents through the diaphragm, a rounded opacity bulging up from a dome:
    Bochdalek (posterolateral, seen over the outer dome, usually the left; often bowel
    with gas) or Morgagni (anterior, in the right cardiophrenic angle; mostly fat)."""
    rx, ry = rng.uniform(0.045, 0.075) * size, rng.uniform(0.04, 0.06) * size
    if bochdalek:
        side = int(rng.random() < 0.75)
        dd = an.dome_peak + rng.uniform(0.03, 0.1)
    else:
        side = 0
        heart = an.heart_mask & an.side_mask(0)
        dd = (float(an.d[heart].max()) if heart.any() else 0.1) + rng.uniform(-0.01, 0.02)
    cx = an.side_x(side, dd)
    cy = an.dome_top[side] + an.dome_curve * (dd - an.dome_peak) ** 2 - rng.uniform(0.2, 0.6) * ry
    e = _ellipse(an, cx, cy, rx, ry)
    inside = _sphere(e)
    wall = _clip01(1.0 - np.abs(e - 1.0) / 0.12)
    # The contents displace the lung; bowel gas rises above a fluid level.
    gas = rng.random() < (0.7 if bochdalek else 0.3)
    above = (an.Y < cy + rng.uniform(-0.3, 0.4) * ry) & gas
    solid = _clip01((1.0 - e) / 0.15) * np.where(above, np.float32(rng.uniform(0.2, 0.5)), 1.0)
    delta = rng.uniform(0.6, 0.85) * solid * an.air_att + 0.08 * an.body_depth * (inside + wall)
    return delta, (e < 1.0) & an.body


def _infiltration(an, rng, size):
    """Patchy ill-defined opacities in one to three zones."""
    field = np.full(an.X.shape, -1.0, np.float32)
    for _ in range(int(rng.integers(1, 4))):
        side = int(rng.integers(2))
        v0 = rng.uniform(0.15, 0.75)
        patch, _ = _airspace(an, rng, side, (v0, v0 + 0.2), 0.9 * size, 0.55, 16)
        field = np.maximum(field, np.where(an.side_mask(side), patch, np.float32(-1.0)))
    profile = _clip01(field / 0.6)
    delta = rng.uniform(0.3, 0.5) * profile * an.lung_att
    return delta, (profile > 0.1) & an.lungs


def _round_lesion(an, rng, radius, density, lobulation):
    """A solid ball of ``radius`` with a lobulated outline, in the lung fields."""
    a2, a3 = (float(a) for a in rng.uniform(0.0, lobulation, 2))
    cx, cy = an.lung_point(rng, radius * (1.0 + a2 + a3) * 0.95)
    du, dv = an.X - cx, an.Y - cy
    r2 = du * du + dv * dv + 1e-12
    turn = rng.uniform(0.0, math.pi)
    cos2 = ((du * du - dv * dv) * math.cos(turn) + 2.0 * du * dv * math.sin(turn)) / r2
    cos1 = du / np.sqrt(r2)
    cos3 = (4.0 * cos1 * cos1 - 3.0) * cos1
    e = r2 / (radius * (1.0 + a2 * cos2 + a3 * cos3)) ** 2
    return density * an.body_depth * _sphere(e), (e < 1.0) & an.body


def _mass(an, rng, size):
    """A round, sometimes lobulated opacity 8-14 % of the image width across."""
    radius = rng.uniform(0.04, 0.07) * size
    return _round_lesion(an, rng, radius, rng.uniform(0.14, 0.26), 0.12)


def _nodule(an, rng, size):
    """A small round opacity 2-5 % of the image width across, often faint."""
    radius = rng.uniform(0.01, 0.025) * size
    return _round_lesion(an, rng, radius, rng.uniform(0.05, 0.14), 0.04)


def _pleural_thickening(an, rng, size, wide=False):
    """A thin smooth band along the lateral chest wall, or an apical pleural cap.

    Wide: fewer caps (30 %), the band at any height from the upper zone to the
    costophrenic angle, and a third on both sides."""
    side = int(rng.integers(2))
    thick = rng.uniform(0.01, 0.022) * size
    if rng.random() < (0.3 if wide else 0.4):
        window = _clip01((an.apex + rng.uniform(0.05, 0.09) - an.Y) / 0.02)
    else:
        y0 = rng.uniform(0.15, 0.65) if wide else rng.uniform(0.32, 0.55)
        y1 = y0 + rng.uniform(0.12, 0.25) * size
        window = _clip01((an.Y - y0) / 0.03) * _clip01((y1 - an.Y) / 0.03)
    in_side = True if wide and rng.random() < 1.0 / 3.0 else an.side_mask(side)
    if wide:  # at least a pixel thick, so that small images still show it
        thick = max(thick, 1.0 / an.size)
    band = _clip01(1.0 - an.lat_m / thick) * (an.margin > -0.004) * window * in_side
    delta = rng.uniform(0.1, 0.22) * an.body_depth * np.sqrt(band)
    if wide:  # the pleura, faint ends included: no pixel changes outside the mask
        return delta, band > 0.0
    return delta, (band > 0.05) & (window > 0.2) & an.lungs


def _pneumonia(an, rng, size, wide=False):
    """A patchy consolidation, usually in the lower zone of one lung.

    Wide: the upper, middle or lower zone alike."""
    side = int(rng.integers(2))
    if wide:
        zone = [(0.1, 0.4), (0.35, 0.65), (0.6, 0.92)][int(rng.integers(3))]
    else:
        zone = (0.55, 0.92) if rng.random() < 0.75 else (0.4, 0.7)
    field, (cx, cy, rx, _) = _airspace(an, rng, side, zone, size, 0.5, 14)
    profile = _clip01(field / 0.3) * an.side_mask(side)
    patchy = _clip01(0.65 + 0.35 * _smooth_field(rng, an.size, 20))  # spared islands
    density = rng.uniform(0.5, 0.75) * profile * patchy
    if rng.random() < 0.3:
        density = density * (1.0 - 0.5 * _clip01(_bronchogram(an, rng, cx, cy, rx, side)))
    return density * an.lung_att, (profile > 0.2) & an.lungs


def _pneumothorax(an, rng, size):
    """Apical/lateral pleural air: lung markings gone, darker, behind a thin pleural line."""
    side = int(rng.integers(2))
    depth = rng.uniform(0.025, 0.075) * size
    extent = rng.uniform(0.35, 0.85)
    gap = depth * np.sqrt(_clip01(1.0 - an.v / extent))
    in_side = an.side_mask(side) & (an.margin > -0.01)
    space = _clip01((gap - an.lat_m) / 0.004) * in_side
    line = _clip01(1.0 - np.abs(an.lat_m - gap) / 0.004) * (gap > 0.004) * in_side
    darker = rng.uniform(0.2, 0.35) * an.air_att
    delta = -space * (an.vessels + darker) + 0.15 * an.body_depth * line * an.air
    return delta, (space > 0.5) & an.lungs


_GENERATORS = {
    "Atelectasis": _atelectasis,
    "Cardiomegaly": _cardiomegaly,
    "Consolidation": _consolidation,
    "Edema": _edema,
    "Effusion": _effusion,
    "Emphysema": _emphysema,
    "Fibrosis": _fibrosis,
    "Hernia": _hernia,
    "Infiltration": _infiltration,
    "Mass": _mass,
    "Nodule": _nodule,
    "Pleural_Thickening": _pleural_thickening,
    "Pneumonia": _pneumonia,
    "Pneumothorax": _pneumothorax,
}

# The generators with a wide placement (``PhantomConfig.location_variability``); they
# take ``wide=True``. The others are already as spread as their anatomy allows.
_WIDE_PLACEMENTS = frozenset(
    (
        "Atelectasis",
        "Edema",
        "Effusion",
        "Emphysema",
        "Fibrosis",
        "Hernia",
        "Pleural_Thickening",
        "Pneumonia",
    )
)


# ------------------------------------------------------------------------ render


_MAX_ATTENUATION = 6.0  # the film is saturated well before this
_CURVE_LEVELS = 4096


def _expose(rng, attenuation, noise):
    """Film response, exposure jitter and noise: ``(S, S)`` attenuation to uint8."""
    u = rng.uniform
    size = attenuation.shape[0]
    # The film curve with gain, gamma and offset jitter, through a lookup table
    # (cheaper than exp and pow on every pixel; 4096 levels are far finer than uint8).
    levels = np.linspace(0.0, _MAX_ATTENUATION, _CURVE_LEVELS, dtype=np.float32)
    curve = (1.0 - np.exp(-u(0.9, 1.15) * levels)) ** u(0.85, 1.2) * u(0.9, 1.05) + u(-0.03, 0.04)
    scaled = np.clip(attenuation, 0.0, _MAX_ATTENUATION) * ((_CURVE_LEVELS - 1) / _MAX_ATTENUATION)
    image = curve[(scaled + 0.5).astype(np.intp)]
    # Uneven exposure (heel effect, scatter): a smooth multiplicative variation.
    py, _ = _pixel_grid(size)
    shade = 1.0 + noise * (0.03 * _smooth_field(rng, size, 3) + u(-0.04, 0.04) * (py - 0.5))
    image = image * shade
    # Quantum noise grows with the signal in this log-like display; plus a floor.
    sigma = noise * np.sqrt(0.00015 + 0.0012 * _clip01(image))
    image = image + sigma * _gaussian_field(rng, size)
    return (_clip01(image) * 255.0 + 0.5).astype(np.uint8)


def _boxes(masks: np.ndarray) -> np.ndarray:
    """``(k, 4)`` float32 ``[x, y, w, h]`` bounding boxes of ``(k, S, S)`` masks; NaN if empty."""
    boxes = np.full((len(masks), 4), np.nan, np.float32)
    for k in np.flatnonzero(masks.any((1, 2))):
        rows, cols = np.flatnonzero(masks[k].any(1)), np.flatnonzero(masks[k].any(0))
        boxes[k] = (cols[0], rows[0], cols[-1] - cols[0] + 1, rows[-1] - rows[0] + 1)
    return boxes


def _wide_placements(seed: int, index: int, variability: float) -> np.ndarray:
    """``(14,)`` bool: which classes' findings take their wide placement. One draw per
    class whether present or not, so a finding's coin does not depend on the others."""
    if variability <= 0.0:  # no draw at all: the images of earlier releases
        return np.zeros(len(PHANTOM_CLASSES), bool)
    return _stream(seed, index, _STREAM_LOCATION).random(len(PHANTOM_CLASSES)) < variability


def _render(seed: int, index: int, config: PhantomConfig, labels=None) -> dict:
    """``render`` with an optional ``(14,)`` labels override (anatomy and each finding
    keep their own streams, and the attributes are the example's own, drawn given its
    sampled labels, so the override changes only the findings' pixels)."""
    if labels is None:
        labels = sample_labels(seed, index, config)
    labels = np.asarray(labels, np.int32)
    size = config.image_size
    attributes = sample_attributes(seed, index, config)
    magnification = 1.0
    if attributes["view"] == "AP" and config.ap_heart_magnification > 0:
        magnification += config.ap_heart_magnification
    an = _Anatomy(_stream(seed, index, _STREAM_ANATOMY), size, magnification)
    attenuation = an.attenuation
    masks = np.zeros((len(PHANTOM_CLASSES), size, size), bool)
    heart = an.heart_mask
    wide = _wide_placements(seed, index, config.location_variability)
    for k, name in enumerate(PHANTOM_CLASSES):
        if labels[k]:
            rng = _stream(seed, index, _STREAM_FINDING + k)
            if wide[k] and name in _WIDE_PLACEMENTS:
                delta, mask = _GENERATORS[name](an, rng, config.lesion_size, wide=True)
            else:
                delta, mask = _GENERATORS[name](an, rng, config.lesion_size)
            attenuation = attenuation + config.lesion_contrast * delta
            masks[k] = mask & an.body
            if not masks[k].any():  # a sub-pixel finding on a tiny image: its strongest pixel
                masks[k].flat[np.argmax(np.abs(delta))] = True
            if name == "Cardiomegaly":
                heart = masks[k]
    image = _expose(_stream(seed, index, _STREAM_EXPOSURE), attenuation, config.noise)
    return {
        "image": image,
        "labels": labels,
        "masks": masks,
        "boxes": _boxes(masks),
        "body": an.body,
        "lungs": an.lungs,
        "heart": heart,
        "attributes": attributes,
    }


def render(seed: int, index: int, config: PhantomConfig = PhantomConfig()) -> dict:
    """Renders example ``(seed, index)``.

    Returns:
      ``{"image": (S, S) uint8, "labels": (14,) int32 (== sample_labels(...)),
      "masks": (14, S, S) bool truth masks (empty for absent classes),
      "boxes": (14, 4) float32 [x, y, w, h] mask bounding boxes in pixels (NaN rows
      for absent classes), "body": (S, S) bool, "lungs": (S, S) bool normal lung
      fields (outside the heart), "heart": (S, S) bool cardiac silhouette,
      "attributes": sample_attributes(...)}``. Classes are in ``PHANTOM_CLASSES`` (NIH)
      order.
    """
    return _render(seed, index, config)


# ------------------------------------------------------------------------ source


@dataclasses.dataclass(frozen=True)
class PhantomChestXray:
    """A grain-compatible random-access source of phantom radiographs.

    Attributes:
      size: number of examples.
      split: ``train``, ``validation`` or ``test``; splits never share an example.
      seed: data seed.
      config: image size and difficulty.
      classes: the classes (and their order) of ``labels`` and of the truth masks.

    ``source[i]`` is ``{"image": (S, S, 1) uint8, "labels": (k,) int32,
    "mask": (k,) int32, "index": int32}``; ``attributes()`` gives every example's sex,
    age and view.
    """

    size: int
    split: str = "train"
    seed: int = 0
    config: PhantomConfig = PhantomConfig()
    classes: tuple[str, ...] = PHANTOM_CLASSES

    def __post_init__(self):
        if self.split not in SPLITS:
            raise ValueError(f"Unknown split {self.split!r}; expected one of {', '.join(SPLITS)}.")
        unknown = [c for c in self.classes if c not in PHANTOM_CLASSES]
        if unknown:
            raise ValueError(
                f"The phantom source has no class {', '.join(map(repr, unknown))}; "
                f"it draws {', '.join(PHANTOM_CLASSES)}."
            )
        if not 0 < self.size <= _SPLIT_STRIDE:
            raise ValueError(f"Phantom split {self.split!r} has size {self.size}.")

    @functools.cached_property
    def _columns(self) -> np.ndarray:
        return np.asarray([PHANTOM_CLASSES.index(c) for c in self.classes])

    def __len__(self) -> int:
        return self.size

    def _example(self, index: int) -> int:
        index = int(index)
        if not 0 <= index < self.size:
            raise IndexError(f"index {index} out of range for a split of {self.size}")
        return SPLITS.index(self.split) * _SPLIT_STRIDE + index

    def labels(self, index: int) -> np.ndarray:
        """The ``(k,)`` labels of example ``index``, without rendering it."""
        return sample_labels(self.seed, self._example(index), self.config)[self._columns]

    def positive_counts(self) -> np.ndarray:
        """``(k,)`` positives per class over the whole split."""
        return np.sum([self.labels(i) for i in range(self.size)], axis=0)

    def labelled_counts(self) -> np.ndarray:
        """``(k,)`` examples whose label of each class is known: every one, for phantoms."""
        return np.full(len(self.classes), self.size, np.int64)

    def attributes(self) -> dict[str, np.ndarray]:
        """``{"sex": (N,) str, "age": (N,) int32, "view": (N,) str}`` of every example
        (:func:`sample_attributes`), without rendering."""
        rows = [
            sample_attributes(self.seed, self._example(i), self.config) for i in range(self.size)
        ]
        return {
            "sex": np.asarray([r["sex"] for r in rows], str),
            "age": np.asarray([r["age"] for r in rows], np.int32),
            "view": np.asarray([r["view"] for r in rows], str),
        }

    def truth_indices(self) -> np.ndarray:
        """The examples with at least one finding (the only ones localisation can score)."""
        return np.asarray([i for i in range(self.size) if self.labels(i).any()], np.int64)

    def truth(self, index: int) -> dict:
        """``render``'s dict for example ``index``, labels/masks/boxes in ``classes`` order."""
        out = render(self.seed, self._example(index), self.config)
        for key in ("labels", "masks", "boxes"):
            out[key] = out[key][self._columns]
        return out

    def __getitem__(self, index: int) -> dict:
        out = self.truth(index)
        return {
            "image": out["image"][..., None],
            "labels": out["labels"],
            "mask": np.ones_like(out["labels"]),
            "index": np.int32(index),
        }


# ----------------------------------------------------------------------- gallery


def _outline(mask: np.ndarray) -> np.ndarray:
    """The one-pixel inner boundary of an ``(S, S)`` bool mask."""
    padded = np.pad(mask, 1)
    interior = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:] & mask
    return mask & ~interior


def gallery(image_size: int = 224, seed: int = 0) -> Image.Image:
    """A 4 x 4 RGB grid: each class alone on its own phantom with its truth outline,
    then a normal example and a normal example with the lung (cyan) and heart
    (green) masks outlined."""
    config = PhantomConfig(image_size=image_size)
    title = 14
    tiles = []
    for k, name in enumerate(PHANTOM_CLASSES):
        labels = np.zeros(len(PHANTOM_CLASSES), np.int32)
        labels[k] = 1
        out = _render(seed, k, config, labels)
        tiles.append((name, out["image"], [(out["masks"][k], (255, 60, 60))]))
    normal = _render(seed, len(PHANTOM_CLASSES), config, np.zeros(len(PHANTOM_CLASSES)))
    tiles.append(("No Finding", normal["image"], []))
    tiles.append(
        (
            "lungs / heart",
            normal["image"],
            [(normal["lungs"], (0, 220, 255)), (normal["heart"], (60, 255, 60))],
        )
    )
    sheet = Image.new("RGB", (4 * image_size, 4 * (image_size + title)))
    draw = ImageDraw.Draw(sheet)
    for i, (name, image, outlines) in enumerate(tiles):
        rgb = np.repeat(image[..., None], 3, axis=-1)
        for mask, colour in outlines:
            rgb[_outline(mask)] = colour
        x, y = (i % 4) * image_size, (i // 4) * (image_size + title)
        sheet.paste(Image.fromarray(rgb), (x, y + title))
        draw.text((x + 3, y + 1), name, fill=(255, 255, 255))
    return sheet


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gallery", required=True, help="PNG path for the class gallery.")
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    gallery(args.image_size, args.seed).save(args.gallery)


def check_config(p, mode: str) -> None:
    """The rules of ``config.data.synthetic`` (the phantoms), added to ``p`` (a
    :class:`chestattn_jax.config_checks.Problems`)."""
    p.seed("data.synthetic.seed")
    for split_name in SPLITS:
        p.int(f"data.synthetic.{split_name}_size", 1, "at least 1")
    p.non_negative("data.synthetic.lesion_contrast", "at least 0 (0 hides the findings)")
    p.positive("data.synthetic.lesion_size")
    p.non_negative("data.synthetic.noise")
    p.positive("data.synthetic.prevalence_scale")
    v = p.real("data.synthetic.location_variability")
    if v is not None and not 0 <= v <= 1:
        p.add("data.synthetic.location_variability", "must be between 0 and 1 (inclusive).")
    if "ap_heart_magnification" in p.value("data.synthetic"):
        m = p.real("data.synthetic.ap_heart_magnification")
        if m is not None and not 0 <= m <= 0.5:
            p.add(
                "data.synthetic.ap_heart_magnification",
                "must be between 0 and 0.5 (inclusive): how much wider an AP film shows the "
                "heart (0: as a PA film)",
            )


def check_chosen(p, source, evaluated) -> None:
    """The settings that the phantoms ignore as ``config.data.name`` keep their defaults:
    every prepared data set's, but for a cross-dataset evaluation, which reads them for
    the evaluated data set (``evaluated``), all but the folder."""
    del source
    if evaluated is None:
        for name in PREPARED_FIELDS:
            p.ignored(
                f"data.{name}",
                "is ignored on synthetic data (config.data.name='synthetic'), whose splits "
                "are config.data.synthetic.*_size",
            )
    else:
        p.ignored("data.data_dir", "is not read: the evaluated data set is config.eval.data_dir")


def open_split(config, split: str) -> PhantomChestXray:
    """The phantoms of ``split`` (train / validation / test) for ``config.data``."""
    d = config.data
    syn = d.synthetic
    return PhantomChestXray(
        size=int(syn[f"{split}_size"]),
        split=split,
        seed=syn.seed,
        config=PhantomConfig(
            image_size=d.image_size,
            lesion_contrast=syn.lesion_contrast,
            lesion_size=syn.lesion_size,
            noise=syn.noise,
            prevalence_scale=syn.prevalence_scale,
            location_variability=syn.location_variability,
            # Until the config has the field: the images of earlier releases.
            ap_heart_magnification=float(syn.get("ap_heart_magnification", 0.0)),
        ),
        classes=tuple(d.classes),
    )


def fingerprint(config) -> dict:
    """What phantoms ``config.data`` asks for: a hash of ``config.data.synthetic`` (seed,
    split sizes, difficulty), ``image_size`` and ``classes``
    (:func:`chestattn_jax.data.input_pipeline.dataset_fingerprint`)."""
    d = config.data
    syn = d.synthetic
    settings = syn.to_dict() if hasattr(syn, "to_dict") else dict(syn)
    hashed = {
        "image_size": int(d.image_size),
        "classes": list(d.classes),
        "synthetic": settings,
    }
    digest = hashlib.sha256(json.dumps(hashed, sort_keys=True).encode()).hexdigest()
    return {
        "name": "synthetic",
        "image_size": int(d.image_size),
        "fingerprint": f"sha256:{digest}",
        "num_records": int(syn.train_size) + int(syn.validation_size) + int(syn.test_size),
        "raw_dir": None,
    }


def select_fold(data, fold: int, num_folds: int) -> None:
    """Fold ``fold`` of the phantoms: other phantoms, drawn with the seed plus ``fold``."""
    del num_folds
    data.synthetic.seed = int(data.synthetic.seed) + fold


SOURCE = DataSource(
    name="synthetic",
    classes=PHANTOM_CLASSES,
    open_split=open_split,
    fingerprint=fingerprint,
    select_fold=select_fold,
    settings="data.synthetic",
    check_config=check_config,
    check_chosen=check_chosen,
)


if __name__ == "__main__":
    main()

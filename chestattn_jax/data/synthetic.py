"""A small procedural chest radiograph source: the default data when no data set is on disk.

Each example is a frontal (PA) phantom: dark air around a soft-tissue body, two
lungs with vessel-like texture, a heart over the lower left lung (the image's
right, as a PA film is read), a spine. Five findings are drawn where they live:

- ``Cardiomegaly``: the heart enlarged 30-50 %.
- ``Effusion``: fluid filling one costophrenic angle up to a concave meniscus.
- ``Pneumothorax``: one apex cleared of lung texture and darkened behind a pleural line.
- ``Nodule``: a small round opacity (about 3 % of the width) in a lung field.
- ``Mass``: a larger round opacity (about 8 %) in a lung field.

Labels are drawn independently with fixed prevalences. Every example is a pure
function of ``(seed, split, index)``; labels come from their own random stream,
so that training-split label counts cost no rendering. Pose, size and exposure
are jittered and noise is added so that a small model learns it without reaching
AUC 1.0 at once. A fuller phantom (all 14 NIH classes, truth masks, export to the
raw layouts) is a separate piece of work; this one exists so the default run
needs nothing on disk.
"""

from __future__ import annotations

import dataclasses

import numpy as np

SYNTHETIC_CLASSES = ("Cardiomegaly", "Effusion", "Pneumothorax", "Nodule", "Mass")
PREVALENCE = (0.25, 0.25, 0.2, 0.25, 0.2)
SPLITS = ("train", "validation", "test")


@dataclasses.dataclass(frozen=True)
class SyntheticChestXray:
    """A grain-compatible random-access source of phantom radiographs.

    Attributes:
      size: number of examples.
      split: ``train``, ``validation`` or ``test``; splits never share an example.
      image_size: side of the square image in pixels.
      seed: data seed.
      lesion_contrast: scales every finding's intensity change (difficulty knob).
      noise: standard deviation of the additive noise on a [0, 1] intensity scale.

    ``source[i]`` is ``{"image": (S, S, 1) uint8, "labels": (k,) int32,
    "mask": (k,) int32, "index": int}``.
    """

    size: int
    split: str = "train"
    image_size: int = 64
    seed: int = 0
    lesion_contrast: float = 1.0
    noise: float = 0.05
    classes: tuple[str, ...] = SYNTHETIC_CLASSES

    def __post_init__(self):
        if self.split not in SPLITS:
            raise ValueError(f"Unknown split {self.split!r}; expected one of {', '.join(SPLITS)}.")
        unknown = [c for c in self.classes if c not in SYNTHETIC_CLASSES]
        if unknown:
            raise ValueError(
                f"The synthetic source has no class {', '.join(map(repr, unknown))}; "
                f"it draws {', '.join(SYNTHETIC_CLASSES)}."
            )
        if self.size <= 0:
            raise ValueError(f"Synthetic split {self.split!r} is empty (size={self.size}).")

    def __len__(self) -> int:
        return self.size

    def _rng(self, index: int, stream: int) -> np.random.Generator:
        return np.random.default_rng((self.seed, SPLITS.index(self.split), index, stream))

    def labels(self, index: int) -> np.ndarray:
        """The ``(k,)`` labels of example ``index``, without rendering it."""
        draws = self._rng(index, 0).random(len(SYNTHETIC_CLASSES))
        present = draws < np.asarray(PREVALENCE)
        return np.asarray([present[SYNTHETIC_CLASSES.index(c)] for c in self.classes], np.int32)

    def positive_counts(self) -> np.ndarray:
        """``(k,)`` positives per class over the whole split."""
        return np.sum([self.labels(i) for i in range(self.size)], axis=0)

    def __getitem__(self, index: int) -> dict:
        index = int(index)
        if not 0 <= index < self.size:
            raise IndexError(f"index {index} out of range for a split of {self.size}")
        draws = self._rng(index, 0).random(len(SYNTHETIC_CLASSES))
        present = dict(zip(SYNTHETIC_CLASSES, draws < np.asarray(PREVALENCE), strict=True))
        image = render(
            self._rng(index, 1), self.image_size, present, self.lesion_contrast, self.noise
        )
        labels = np.asarray([present[c] for c in self.classes], np.int32)
        return {
            "image": image,
            "labels": labels,
            "mask": np.ones_like(labels),
            "index": np.int32(index),
        }


def _ellipse(yy, xx, cy, cx, ry, rx):
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def _blob(yy, xx, cy, cx, sigma):
    return np.exp(-(((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2)))


def _texture(rng, yy, xx, waves: int = 6):
    t = np.zeros_like(yy)
    for _ in range(waves):
        freq = rng.uniform(6, 18)
        angle = rng.uniform(0, np.pi)
        phase = rng.uniform(0, 2 * np.pi)
        t += np.sin(2 * np.pi * freq * (np.cos(angle) * xx + np.sin(angle) * yy) + phase)
    return t / np.sqrt(waves)


def _point_in(rng, region):
    ys, xs = np.nonzero(region)
    if len(ys) == 0:
        return None
    i = rng.integers(len(ys))
    return ys[i], xs[i]


def render(rng, size: int, present: dict, contrast: float = 1.0, noise: float = 0.05):
    """Draws one ``(size, size, 1)`` uint8 phantom with the findings in ``present``.

    The anatomy, each finding and the exposure draw from their own child streams of
    ``rng``, so adding a finding changes only that finding's pixels.
    """
    streams = rng.spawn(len(SYNTHETIC_CLASSES) + 2)
    rng, exposure = streams[0], streams[1]
    finding_rng = dict(zip(SYNTHETIC_CLASSES, streams[2:], strict=True))
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    # Pose and size jitter: shift and scale the whole thorax.
    scale = rng.uniform(0.92, 1.08)
    yy = (yy - 0.5 - rng.uniform(-0.03, 0.03)) / scale + 0.5
    xx = (xx - 0.5 - rng.uniform(-0.03, 0.03)) / scale + 0.5

    body = _ellipse(yy, xx, 0.55, 0.5, 0.5, 0.44)
    img = np.where(body, 0.55, 0.05).astype(np.float32)
    lung_cx = (0.31, 0.69)
    lungs = [_ellipse(yy, xx, 0.47, cx, 0.3, 0.15) for cx in lung_cx]
    lung = lungs[0] | lungs[1]
    texture = 0.04 * _texture(rng, yy, xx)
    img = np.where(lung, 0.22 + texture, img)
    if present["Effusion"]:
        r = finding_rng["Effusion"]
        side = r.integers(2)
        cx = lung_cx[side]
        level = r.uniform(0.6, 0.7)
        meniscus = level - 0.08 * ((xx - cx) / 0.15) ** 2
        fluid = lungs[side] & (yy > meniscus)
        img = np.where(fluid, img + 0.3 * contrast, img)

    if present["Pneumothorax"]:
        r = finding_rng["Pneumothorax"]
        side = r.integers(2)
        cx = lung_cx[side]
        depth = r.uniform(0.14, 0.22)
        edge = 0.17 + depth - 0.5 * ((xx - cx) / 0.15) ** 2 * depth
        cleared = lungs[side] & (yy < edge)
        img = np.where(cleared, 0.22 - 0.1 * contrast, img)
        line = lungs[side] & (np.abs(yy - edge) < 0.012)
        img = np.where(line, img + 0.15 * contrast, img)

    spine = (np.abs(xx - 0.5) < 0.04) & body
    img = np.where(spine, 0.72, img)

    heart_r = np.array([0.11, 0.13]) * (
        finding_rng["Cardiomegaly"].uniform(1.3, 1.5) if present["Cardiomegaly"] else 1.0
    )
    heart = _ellipse(yy, xx, 0.66, 0.56, *heart_r)
    img = np.where(heart, 0.62, img)

    for name, sigma_range in (("Nodule", (0.022, 0.03)), ("Mass", (0.06, 0.08))):
        if present[name]:
            r = finding_rng[name]
            inner = [_ellipse(yy, xx, 0.45, cx, 0.2, 0.09) for cx in lung_cx]
            point = _point_in(r, inner[r.integers(2)])
            if point is not None:
                sigma = r.uniform(*sigma_range)
                img = img + 0.28 * contrast * _blob(yy, xx, yy[point], xx[point], sigma)

    # Exposure jitter and quantum-like noise.
    gain = exposure.uniform(0.85, 1.15)
    gamma = exposure.uniform(0.85, 1.15)
    img = np.clip(img * gain + exposure.uniform(-0.05, 0.05), 0.0, 1.0) ** gamma
    img = img + exposure.normal(0.0, noise, img.shape)
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)[..., None]

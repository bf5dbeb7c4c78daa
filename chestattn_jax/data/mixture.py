"""Training on several prepared data sets at once (``config.data.mixture``).

  --config.data.name=nih --config.data.mixture=nih:/prep/nih,mimic_cxr:/prep/mimic

trains one model on the NIH and MIMIC-CXR folders that ``python -m
chestattn_jax.data.prepare`` made. The fields:

- ``config.data.mixture``: ``NAME:DIR,NAME:DIR,...``, each prepared data set
  (``prepare --dataset=NAME``) and its folder (``config.data.data_dir`` of that set; a
  folder name is everything after the first ``:``, so ``gs://`` folders work, but it may
  not hold a comma). ``""``: one data set, ``config.data.name`` at ``config.data.data_dir``;
- ``config.data.name``: one of the mixture's sets, whose spellings ``config.data.classes``
  uses (its registry entry also answers for the run where one data set is asked for:
  experiment folds, a cross-dataset evaluation's class map);
- ``config.data.classes``: the model's classes, each a label of ``config.data.name`` or a
  canonical finding of the label space (:mod:`chestattn_jax.data.label_space`), resolved
  per set to that set's own spelling (NIH's ``Effusion`` is MIMIC-CXR's ``Pleural
  Effusion``). A class a set does not have is **masked** (mask 0) on that set's examples:
  no loss, no AUC; never a negative;
- ``config.data.mixture_weights``: the share of each set in the training batches, one
  positive number per set (normalised); ``()`` (the default, our choice): proportional to
  each set's training split, as if the sets were one. Each set is shuffled and repeated on
  its own and the sets are interleaved in these proportions (grain's
  ``MapDataset.mix``), so a batch holds them in about these shares;
- ``config.data.mixture_splits``: each set's split scheme (``random``, ``kfold``,
  ``official``), one per set; ``()``: ``config.data.split`` for every set. Each set is
  split by its own patients, with the other split fields (fractions, folds, seed) as
  given, so the splits are patient-disjoint within each set; not across sets that hold the
  same images (RSNA Pneumonia's are a subset of NIH ChestX-ray14's), which nothing here
  matches.

The splits of a mixture are the sets' splits one after the other; patient and example
ids are prefixed with the set's name (``nih:00000001_000.png``). Evaluation scores the
pooled split and each set's part of it (``metrics.json``'s ``per_dataset``).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math

import numpy as np

from chestattn_jax.data import label_space, sources, splits

# The fields of a mixture (under config.data).
FIELDS = ("mixture", "mixture_weights", "mixture_splits")


@dataclasses.dataclass(frozen=True)
class Member:
    """One data set of a mixture.

    Attributes:
      name: the data set (``prepare --dataset``).
      data_dir: its prepared folder.
      split: its split scheme.
      classes: its spelling of each of ``config.data.classes`` (None: it has no such
        label, which is masked on its examples).
    """

    name: str
    data_dir: str
    split: str
    classes: tuple[str | None, ...]


def is_mixture(config) -> bool:
    """Whether ``config.data`` names several data sets."""
    return bool(config.data.mixture)


def parse(text: str) -> list[tuple[str, str]]:
    """``"nih:/prep/nih,mimic_cxr:gs://b/m"`` -> ``[("nih", "/prep/nih"), ("mimic_cxr",
    "gs://b/m")]``; a ``ValueError`` naming the entry that is not ``NAME:DIR``, or a set
    named twice."""
    out = []
    for entry in text.split(","):
        name, colon, folder = entry.strip().partition(":")
        if not colon or not name.strip() or not folder.strip():
            raise ValueError(f"the entry {entry.strip()!r} is not NAME:DIR.")
        out.append((name.strip(), folder.strip()))
    names = [n for n, _ in out]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"names {', '.join(twice)} more than once.")
    return out


def finding(home: str, name: str) -> str | None:
    """The canonical finding of the model's class ``name``: ``home``'s label where it is one
    (``config.data.name``), else the canonical finding of that name; None for neither."""
    if home in label_space.DATASETS and name in label_space.labels(home):
        return label_space.canonical(home, name)
    return name if name in label_space.findings() else None


def spelled(dataset: str, classes) -> dict[str, str]:
    """``{finding: class}`` for the classes of ``dataset`` the label space knows: the data
    set's own spelling of each finding, or the first synonym it has."""
    known = set(label_space.labels(dataset))
    out: dict[str, str] = {}
    for c in classes:
        if c in known:
            f = label_space.canonical(dataset, c)
            if f not in out or label_space.spellings(f).get(dataset) == c:
                out[f] = c
    return out


def resolve(classes, home: str, dataset: str) -> tuple[str | None, ...]:
    """Each of the model's ``classes`` (labels of ``home`` or canonical findings) as
    ``dataset`` spells it among its classes, or None where it has none."""
    have = spelled(dataset, sources.get(dataset).classes)
    return tuple(have.get(finding(home, c)) for c in classes)


def members(config) -> list[Member]:
    """The data sets of ``config.data.mixture``, each with its folder, split scheme and
    spelling of the model's classes."""
    d = config.data
    entries = parse(d.mixture)
    schemes = tuple(d.mixture_splits) or (d.split,) * len(entries)
    return [
        Member(name, folder, scheme, resolve(d.classes, d.name, name))
        for (name, folder), scheme in zip(entries, schemes, strict=True)
    ]


def member_config(config, member: Member):
    """``config`` with ``config.data`` pointed at one data set of its mixture: its name,
    folder and split scheme, and as classes its spellings of those it has."""
    out = copy.deepcopy(config)
    classes = [c for c in member.classes if c is not None]
    names = dict(zip(config.data.classes, member.classes, strict=True))
    with out.unlocked():
        d = out.data
        d.name, d.data_dir, d.split = member.name, member.data_dir, member.split
        d.classes = tuple(classes)
        per_class = dict(config.data.uncertainty_per_class)
        d.uncertainty_per_class = {names[c]: v for c, v in per_class.items() if names.get(c)}
        d.mixture, d.mixture_weights, d.mixture_splits = "", (), ()
    return out


class MixtureSource:
    """One split of a mixture: the sets' splits one after the other, as one random-access
    source over the model's classes.

    ``source[i]`` is ``{"image", "labels": (k,), "mask": (k,)}``: the labels of a class its
    set lacks are 0 with mask 0 (``held``: ``(sets, k)``, whether each set has each
    class). ``dataset_index`` (``(N,)``) is the set of each example
    (``names[dataset_index[i]]``); ``weights`` the share of each set in training batches.
    Picklable (grain worker processes open each set's records themselves).
    """

    def __init__(self, parts, names, columns, num_classes: int, weights=None):
        self.parts = list(parts)
        self.names = tuple(names)
        self._columns = [np.asarray(c, np.int64) for c in columns]
        self._k = int(num_classes)
        sizes = np.array([len(p) for p in self.parts], np.int64)
        self._offsets = np.concatenate([[0], np.cumsum(sizes)])
        self.dataset_index = np.repeat(np.arange(len(self.parts)), sizes)
        self.weights = (
            sizes / sizes.sum() if weights is None else np.asarray(weights, float) / sum(weights)
        )
        # (sets, k): whether each set has each of the model's classes.
        self.held = np.zeros((len(self.parts), self._k), bool)
        for p, c in enumerate(self._columns):
            self.held[p, c] = True
        self.patient_ids = self._prefixed("patient_ids")
        self.example_ids = self._prefixed("example_ids")

    def _prefixed(self, name: str) -> np.ndarray:
        out = []
        for set_name, part in zip(self.names, self.parts, strict=True):
            ids = getattr(part, name, None)
            ids = np.arange(len(part)) if ids is None else np.asarray(ids)
            out.append(np.char.add(f"{set_name}:", ids.astype(str)))
        return np.concatenate(out) if out else np.zeros((0,), str)

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def _locate(self, i: int) -> tuple[int, int]:
        i = int(i)
        if not 0 <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} examples")
        p = int(np.searchsorted(self._offsets, i, side="right")) - 1
        return p, i - int(self._offsets[p])

    def _widen(self, p: int, values) -> np.ndarray:
        out = np.zeros((self._k, *np.shape(values)[1:]), np.asarray(values).dtype)
        out[self._columns[p]] = values
        return out

    def __getitem__(self, i: int) -> dict:
        p, j = self._locate(i)
        e = self.parts[p][j]
        return {
            "image": e["image"],
            "labels": self._widen(p, e["labels"]),
            "mask": self._widen(p, e["mask"]),
        }

    def positive_counts(self) -> np.ndarray:
        """``(k,)`` positives over every set (a set's masked classes count none)."""
        return sum(self._widen(p, part.positive_counts()) for p, part in enumerate(self.parts))

    def labelled_counts(self) -> np.ndarray:
        """``(k,)`` examples over every set whose label of each class is known: a set that
        lacks a class counts none for it."""
        return sum(self._widen(p, part.labelled_counts()) for p, part in enumerate(self.parts))

    def dataset_rows(self) -> dict[str, np.ndarray]:
        """``{set: the rows of its examples}``."""
        return {n: np.flatnonzero(self.dataset_index == p) for p, n in enumerate(self.names)}

    def part(self, p: int) -> _Part:
        """The examples of set ``p``, over the model's classes (random-access)."""
        return _Part(self, p)

    def attributes(self) -> dict[str, np.ndarray]:
        """The attributes every set has (``sex``, ``age``, ``view``), one after the other."""
        got = [getattr(p, "attributes", dict)() for p in self.parts]
        keys = [k for k in (got[0] if got else {}) if all(k in g for g in got)]
        return {k: np.concatenate([np.asarray(g[k]) for g in got]) for k in keys}

    def truth_indices(self) -> np.ndarray:
        """The examples with localisation truth (boxes or masks), over every set."""
        rows = [
            part.truth_indices() + self._offsets[p]
            for p, part in enumerate(self.parts)
            if hasattr(part, "truth_indices")
        ]
        return np.concatenate(rows).astype(np.int64) if rows else np.zeros((0,), np.int64)

    def truth(self, i: int) -> dict:
        """The set's truth of example ``i`` (:meth:`PreparedSource.truth`), its labels and
        masks over the model's classes (a class the set lacks: label 0, an empty mask)."""
        p, j = self._locate(i)
        t = dict(self.parts[p].truth(j))
        t["labels"], t["masks"] = self._widen(p, t["labels"]), self._widen(p, t["masks"])
        return t

    def __repr__(self):
        inner = ", ".join(f"{n}: {len(p)}" for n, p in zip(self.names, self.parts, strict=True))
        return f"MixtureSource({inner})"


class _Part:
    """The examples of one set of a :class:`MixtureSource`, over the model's classes."""

    def __init__(self, source: MixtureSource, p: int):
        self.source, self.p = source, p
        self._start = int(source._offsets[p])
        self._len = len(source.parts[p])

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, j: int) -> dict:
        if not 0 <= int(j) < self._len:
            raise IndexError(f"index {j} out of range for {self._len} examples")
        return self.source[self._start + int(j)]


def open_split(config, split: str) -> MixtureSource:
    """The ``split`` (train / validation / test) of every set of ``config.data.mixture``,
    pooled: each set's own split (:func:`chestattn_jax.data.record_reader.open_split` of
    :func:`member_config`), its labels widened to ``config.data.classes``."""
    from chestattn_jax.data import record_reader  # TFDS only for real data

    chosen = members(config)
    parts, columns = [], []
    for m in chosen:
        if all(c is None for c in m.classes):
            raise ValueError(
                f"config.data.mixture: {m.name} has none of config.data.classes "
                f"({', '.join(config.data.classes)})."
            )
        parts.append(record_reader.open_split(member_config(config, m), split))
        columns.append([j for j, c in enumerate(m.classes) if c is not None])
    weights = tuple(config.data.mixture_weights) or None
    names = [m.name for m in chosen]
    return MixtureSource(parts, names, columns, len(config.data.classes), weights)


def fingerprint(config) -> dict:
    """What the mixture is, cheaply (:func:`chestattn_jax.data.input_pipeline.
    dataset_fingerprint`): each set's fingerprint under ``datasets``, and a ``fingerprint``
    hashing the sets' names and fingerprints in order."""
    each = [sources.get(m.name).fingerprint(member_config(config, m)) for m in members(config)]
    text = json.dumps([[e["name"], e["fingerprint"]] for e in each])
    return {
        "name": "+".join(e["name"] for e in each),
        "image_size": int(config.data.image_size),
        "fingerprint": "sha256:" + hashlib.sha256(text.encode()).hexdigest(),
        "num_records": sum(int(e["num_records"]) for e in each),
        "raw_dir": None,
        "datasets": each,
    }


def check_config(p, mode: str) -> None:
    """The rules of ``config.data.mixture``, ``mixture_weights`` and ``mixture_splits``,
    added to ``p`` (a :class:`chestattn_jax.config_checks.Problems`): each set known and
    prepared, ``config.data.name`` among them, every class resolved and held by some set,
    every set holding some class, one positive weight and one split scheme per set; the
    single-set fields a mixture does not read keep their defaults."""
    del mode
    text = p.value("data.mixture")
    if not isinstance(text, str):
        p.add("data.mixture", 'must be "NAME:DIR,NAME:DIR,..." or "" for one data set.')
        return
    if not text:
        why = "is read for a mixture of data sets (config.data.mixture) only"
        p.ignored("data.mixture_weights", why)
        p.ignored("data.mixture_splits", why)
        return
    try:
        entries = parse(text)
    except ValueError as e:
        p.add("data.mixture", str(e))
        return
    names = [n for n, _ in entries]
    unknown = [n for n in names if n not in sources.prepared_names()]
    if unknown:
        p.add(
            "data.mixture",
            f"names no prepared data set {', '.join(map(repr, unknown))}; expected NAME:DIR "
            f"with NAME one of {', '.join(sources.prepared_names())}.",
        )
        return
    if len(names) < 2:
        p.add("data.mixture", "names one data set: use config.data.name and data_dir for one.")
    _check_weights(p, len(names))
    _check_splits(p, names)
    home = p.value("data.name")
    if home not in sources.names() or not sources.get(home).prepared:
        return  # named by config.data.name's own rules
    if home not in names:
        p.add(
            "data.name",
            f"must be one of the mixture's data sets ({', '.join(names)}): the one whose "
            "spellings config.data.classes uses.",
        )
        return
    p.ignored("data.data_dir", "is not read with a mixture, whose entries name each folder")
    p.ignored("data.views", "is not read with a mixture (each set has its own views)")
    p.ignored(
        "eval.nih_expert_labels",
        "is not read with a mixture (its example ids are prefixed with the set's name)",
    )
    evaluated = p.value("eval.dataset")
    if isinstance(evaluated, str) and evaluated in names:
        p.add(
            "eval.dataset",
            f"names {evaluated}, a data set the model was trained on in the mixture: its test "
            "split is scored alone in metrics.json's per_dataset (a cross-dataset evaluation "
            "scores a set outside the mixture).",
        )
    if not any(sources.get(n).uncertain_labels for n in names):
        for f in ("uncertainty", "uncertainty_per_class"):
            p.ignored(f"data.{f}", f"has no effect on {', '.join(names)}, never uncertain")
    _check_classes(p, home, names)


def _check_weights(p, count: int) -> None:
    weights = p.value("data.mixture_weights")
    if not isinstance(weights, list | tuple) or not all(p.is_real(w) for w in weights):
        p.add("data.mixture_weights", "must be a tuple of numbers, or () for sizes.")
    elif weights and len(weights) != count:
        p.add(
            "data.mixture_weights",
            f"has {len(weights)} weights for the {count} data sets of config.data.mixture; "
            "give one per set, in its order, or () for proportional to size.",
        )
    elif not all(w > 0 and math.isfinite(w) for w in weights):
        p.add("data.mixture_weights", "must all be greater than 0.")


def _check_splits(p, names) -> None:
    schemes = p.value("data.mixture_splits")
    if not isinstance(schemes, list | tuple) or not all(isinstance(s, str) for s in schemes):
        p.add("data.mixture_splits", "must be a tuple of split schemes, or () for data.split.")
    elif schemes and len(schemes) != len(names):
        p.add(
            "data.mixture_splits",
            f"has {len(schemes)} schemes for the {len(names)} data sets of "
            "config.data.mixture; give one per set, in its order, or () for data.split.",
        )
    elif any(s not in splits.SCHEMES for s in schemes):
        bad = [s for s in schemes if s not in splits.SCHEMES]
        p.add(
            "data.mixture_splits",
            f"has no scheme {', '.join(map(repr, bad))}; expected {', '.join(splits.SCHEMES)}.",
        )


def _check_classes(p, home: str, names) -> None:
    classes = p.value("data.classes")
    if not isinstance(classes, list | tuple) or not all(isinstance(c, str) for c in classes):
        return  # named by the classes' own rule
    unresolved = [c for c in classes if finding(home, c) is None]
    if unresolved:
        p.add(
            "data.classes",
            f"{', '.join(map(repr, unresolved))} is neither a label of {home} "
            "(config.data.name) nor a canonical finding of the label space (docs/labels.md).",
        )
        return
    found = [finding(home, c) for c in classes]
    twice = sorted({f for f in found if found.count(f) > 1})
    if twice:
        p.add(
            "data.classes",
            f"names the finding {', '.join(map(repr, twice))} more than once (spelled two ways).",
        )
        return
    held = {n: resolve(classes, home, n) for n in names}
    nowhere = [c for j, c in enumerate(classes) if all(h[j] is None for h in held.values())]
    if nowhere:
        p.add(
            "data.classes",
            f"no data set of the mixture ({', '.join(names)}) has {', '.join(map(repr, nowhere))}.",
        )
    empty = [n for n, h in held.items() if all(c is None for c in h)]
    if empty:
        p.add(
            "data.mixture",
            f"{', '.join(empty)} has none of config.data.classes: its examples would train "
            "nothing.",
        )

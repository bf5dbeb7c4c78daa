"""Cross-dataset evaluation: scoring a model on another data set's split, class by class.

  --config.eval.dataset=chexpert --config.eval.data_dir=/data/chexpert_prepared

scores a model trained on NIH ChestX-ray14 (or the phantoms) on CheXpert's
``config.eval.split``, and the other way round. Only classes that the class map pairs
are scored. ``config.eval.class_map``:

- ``exact`` (the default): the classes that mean the same finding in the label space
  (:mod:`chestattn_jax.data.label_space`: NIH's ``Effusion`` = CheXpert's ``Pleural
  Effusion`` = VinDr-CXR's ``Pleural effusion`` ...), for any pair of data sets it
  spells. Between NIH and CheXpert these are Atelectasis, Cardiomegaly, Consolidation,
  Edema, Effusion = Pleural Effusion, Pneumonia and Pneumothorax. A class of a data set
  the label space does not know (the phantoms) is resolved by its spelling where that
  names one finding in every set that uses it, and otherwise pairs only with the same
  name. One to one: a finding that falls within a broader one of the other set (NIH's
  Nodule within VinDr-CXR's Nodule/Mass) is paired only when named;
- ``MODEL=DATA,...``: these pairs only, e.g. ``Mass=Lung Lesion,Effusion=Pleural Effusion``;
- ``exact,MODEL=DATA,...``: the exact pairs and these (a pair given replaces the exact
  pair of its model class).

The evaluated data set is read with the other ``config.data`` settings as given (split
scheme, views, uncertainty policy); the model sees its images at its own image size and
normalisation, so the data set must be prepared at ``config.data.image_size``.
"""

from __future__ import annotations

import copy

from chestattn_jax.data import label_space, sources

EXACT = "exact"


def is_cross_dataset(config) -> bool:
    return bool(config.eval.dataset)


def is_training_dataset(config) -> bool:
    """A "cross-dataset" evaluation of the data set the model was trained on (perhaps
    prepared in another folder): its split can hold training patients, so the data
    settings and the data set itself must be training's, as in a normal evaluation."""
    return is_cross_dataset(config) and config.eval.dataset == config.data.name


def _findings(dataset: str, classes) -> list[str | None]:
    """Each class's canonical finding (None: matched by its name only). A data set the
    label space spells resolves through its table (a label it lacks: as a canonical
    finding, as a model trained on several sets may name its classes; else by name);
    another (the phantoms), by the spelling where every data set that uses it means one
    finding."""
    if dataset in label_space.DATASETS:
        known, findings = set(label_space.labels(dataset)), set(label_space.findings())
        return [
            label_space.canonical(dataset, c) if c in known else c if c in findings else None
            for c in classes
        ]
    found = [label_space.find(c) for c in classes]
    return [f[0] if len(f) == 1 else None for f in found]


def _representatives(dataset: str, classes) -> dict:
    """``{key: class}``: the class standing for each finding (``("finding", name)``; the
    data set's own spelling before a synonym) or unresolved name (``("name", class)``)."""
    chosen = {}
    for c, f in zip(classes, _findings(dataset, classes), strict=True):
        key = ("name", c) if f is None else ("finding", f)
        own = f is not None and label_space.spellings(f).get(dataset) == c
        if key not in chosen or own:
            chosen[key] = c
    return chosen


def exact_pairs(model_classes, data_classes, model_dataset: str = "", data_dataset: str = ""):
    """``{model class: data set class}``, one to one, for the classes of the same finding
    in the label space (or, unresolved, of the same name), in the model's order."""
    model = _representatives(model_dataset, list(model_classes))
    data = _representatives(data_dataset, list(data_classes))
    paired = {c: data[k] for k, c in model.items() if k in data}
    return {c: paired[c] for c in model_classes if c in paired}


def hints(model_classes, data_classes, model_dataset: str = "", data_dataset: str = ""):
    """Pairs the exact map leaves out that the label space relates, as ``MODEL=DATA``
    with why: a class of one side falls within the other's finding (NIH's Nodule within
    VinDr-CXR's Nodule/Mass)."""
    exact = exact_pairs(model_classes, data_classes, model_dataset, data_dataset)
    model = [
        (c, f)
        for c, f in zip(model_classes, _findings(model_dataset, model_classes), strict=True)
        if f and c not in exact
    ]
    data = [
        (c, f)
        for c, f in zip(data_classes, _findings(data_dataset, data_classes), strict=True)
        if f and c not in exact.values()
    ]
    out = []
    for m, f in model:
        for d, g in data:
            if g in label_space.within(f):
                out.append(f"{m}={d} ({f} falls within {g})")
            elif f in label_space.within(g):
                out.append(f"{m}={d} ({g} falls within {f})")
    return out


def parse(
    text: str, model_classes, data_classes, model_dataset: str = "", data_dataset: str = ""
) -> list[tuple[str, str]]:
    """The ``(model class, data set class)`` pairs of ``text`` (``config.eval.class_map``),
    in the model's class order; ``model_dataset`` / ``data_dataset`` name the data sets
    whose labels the two lists are (for the label space; "" where unknown). Raises a
    ``ValueError`` for a pair that is malformed or names a class one side does not have,
    for a data set class paired twice, or for an empty map (naming the pairs the label
    space relates, where there are any)."""
    model_classes, data_classes = list(model_classes), list(data_classes)
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    pairs = {}
    if EXACT in parts:
        pairs = exact_pairs(model_classes, data_classes, model_dataset, data_dataset)
    for part in parts:
        if part == EXACT:
            continue
        model, sep, data = (s.strip() for s in part.partition("="))
        if not sep or not model or not data:
            raise ValueError(
                f"{part!r} is not MODEL_CLASS=DATA_SET_CLASS (give "
                f"{EXACT!r}, pairs separated by commas, or both)."
            )
        if model not in model_classes:
            raise ValueError(
                f"{model!r} is not a class of the model; it has {', '.join(model_classes)}."
            )
        if data not in data_classes:
            raise ValueError(
                f"{data!r} is not a class of the evaluated data set; "
                f"it has {', '.join(data_classes)}."
            )
        pairs[model] = data
    targets = list(pairs.values())
    twice = sorted({t for t in targets if targets.count(t) > 1})
    if twice:
        raise ValueError(f"pairs {', '.join(twice)} with more than one model class.")
    if not pairs:
        related = hints(model_classes, data_classes, model_dataset, data_dataset)
        advice = f" Related in the label space: {'; '.join(related)}." if related else ""
        raise ValueError(
            f"pairs no class of the model "
            f"({', '.join(model_classes)}) with one of the evaluated data set "
            f"({', '.join(data_classes)}).{advice}"
        )
    return [(c, pairs[c]) for c in model_classes if c in pairs]


def pairs(config) -> list[tuple[str, str]]:
    """The class map of ``config`` (cross-dataset evaluation only)."""
    text = config.eval.class_map
    try:
        return parse(
            text,
            config.data.classes,
            sources.get(config.eval.dataset).classes,
            config.data.name,
            config.eval.dataset,
        )
    except ValueError as e:
        raise ValueError(f"config.eval.class_map={text!r}: {e}") from None


def data_config(config):
    """``config`` with ``config.data`` pointed at the evaluated data set: its name and
    folder, and as classes the mapped ones, in the model's order."""
    evaluated = copy.deepcopy(config)
    classes = tuple(b for _, b in pairs(config))
    with evaluated.unlocked():
        evaluated.data.name = config.eval.dataset
        evaluated.data.data_dir = config.eval.data_dir
        evaluated.data.classes = classes
        per_class = dict(config.data.uncertainty_per_class)
        evaluated.data.uncertainty_per_class = {c: v for c, v in per_class.items() if c in classes}
    return evaluated


def columns(config) -> list[int]:
    """The model output of each mapped class."""
    model = list(config.data.classes)
    return [model.index(a) for a, _ in pairs(config)]


def check_config(p, mode: str) -> None:
    """The rules of a cross-dataset evaluation (``config.eval.dataset``, ``data_dir`` and
    ``class_map``), added to ``p`` (a :class:`chestattn_jax.config_checks.Problems`)."""
    # A cross-dataset evaluation scores on a prepared data set.
    name = p.choice("eval.dataset", ("", *sources.prepared_names()))
    if name and mode != "evaluate":
        p.add(
            "eval.dataset",
            "is read by --mode=evaluate only: train on one data set, then evaluate the "
            "workdir on another.",
        )
    if not name:
        why = "is read only in a cross-dataset evaluation (config.eval.dataset)"
        p.ignored("eval.data_dir", why)
        p.ignored("eval.class_map", why)
        return
    data_dir = p.value("eval.data_dir")
    if not data_dir or not isinstance(data_dir, str):
        p.add(
            "eval.data_dir",
            f"must name the folder of the prepared {name} data set that "
            f"config.eval.dataset={name!r} evaluates on.",
        )
    text, classes = p.value("eval.class_map"), p.value("data.classes")
    if not isinstance(text, str):
        p.add("eval.class_map", 'must be a string: "exact", "MODEL=DATA,...", or both.')
    elif "data.classes" not in p.reported:
        try:
            parse(text, classes, sources.get(name).classes, p.value("data.name"), name)
        except ValueError as e:
            p.add("eval.class_map", str(e))

"""Cross-dataset evaluation: scoring a model on another data set's split, class by class.

  --config.eval.dataset=chexpert --config.eval.data_dir=/data/chexpert_prepared

scores a model trained on NIH ChestX-ray14 (or the phantoms) on CheXpert's
``config.eval.split``, and the other way round. Only classes that the class map pairs
are scored. ``config.eval.class_map``:

- ``exact`` (the default): classes with the same name, and the pairs of
  :data:`EQUIVALENTS`. Between NIH and CheXpert these are Atelectasis, Cardiomegaly,
  Consolidation, Edema, Effusion = Pleural Effusion, Pneumonia and Pneumothorax;
- ``MODEL=DATA,...``: these pairs only, e.g. ``Mass=Lung Lesion,Effusion=Pleural Effusion``;
- ``exact,MODEL=DATA,...``: the exact pairs and these (a pair given replaces the exact
  pair of its model class).

The evaluated data set is read with the other ``config.data`` settings as given (split
scheme, views, uncertainty policy); the model sees its images at its own image size and
normalisation, so the data set must be prepared at ``config.data.image_size``.
"""

from __future__ import annotations

import copy

from chestattn_jax.data import sources

# Different names for the same finding (model class, data set class), both directions.
EQUIVALENTS = (("Effusion", "Pleural Effusion"),)
EXACT = "exact"


def is_cross_dataset(config) -> bool:
    return bool(config.eval.dataset)


def is_training_dataset(config) -> bool:
    """A "cross-dataset" evaluation of the data set the model was trained on (perhaps
    prepared in another folder): its split can hold training patients, so the data
    settings and the data set itself must be training's, as in a normal evaluation."""
    return is_cross_dataset(config) and config.eval.dataset == config.data.name


def parse(text: str, model_classes, data_classes) -> list[tuple[str, str]]:
    """The ``(model class, data set class)`` pairs of ``text`` (``config.eval.class_map``),
    in the model's class order. Raises a ``ValueError`` for a pair that is malformed or
    names a class one side does not have, for a data set class paired twice, or for an
    empty map."""
    model_classes, data_classes = list(model_classes), list(data_classes)
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    pairs = {}
    if EXACT in parts:
        equivalent = {a: b for a, b in EQUIVALENTS} | {b: a for a, b in EQUIVALENTS}
        for c in model_classes:
            match = c if c in data_classes else equivalent.get(c)
            if match in data_classes:
                pairs[c] = match
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
        raise ValueError(
            f"pairs no class of the model "
            f"({', '.join(model_classes)}) with one of the evaluated data set "
            f"({', '.join(data_classes)})."
        )
    return [(c, pairs[c]) for c in model_classes if c in pairs]


def pairs(config) -> list[tuple[str, str]]:
    """The class map of ``config`` (cross-dataset evaluation only)."""
    text = config.eval.class_map
    try:
        return parse(text, config.data.classes, sources.get(config.eval.dataset).classes)
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
            parse(text, classes, sources.get(name).classes)
        except ValueError as e:
            p.add("eval.class_map", str(e))

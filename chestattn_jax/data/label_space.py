"""One label space across the chest X-ray data sets: each set's own spelling of a finding
mapped to one canonical finding.

Every data set names its labels its own way: NIH's ``Effusion`` is CheXpert's and
MIMIC-CXR's ``Pleural Effusion``, VinDr-CXR's ``Pleural effusion`` and PadChest's
``pleural effusion``. :data:`FINDINGS` is the table: per canonical finding, the spelling
each data set uses (keyed by the data set's name, :data:`DATASETS`; a set need not be in
the registry of :mod:`chestattn_jax.data.sources` to be here), the other spellings a set
uses for the same finding (PadChest's synonyms), and the broader findings it falls within.

- :func:`canonical` resolves a data set's label to its finding;
- :func:`spellings` gives a finding's spelling in each data set;
- :func:`mapping` pairs two data sets' class lists: the classes that mean the same finding
  (cross-dataset evaluation, :mod:`chestattn_jax.evaluation.class_map`), or, with
  ``within=True``, also a class onto a broader finding of the other set (NIH's ``Nodule``
  and ``Mass`` each onto VinDr-CXR's ``Nodule/Mass``);
- :func:`markdown_table` renders the table (the docs' labels page).

The ambiguous cases are choices, ours, stated in :data:`CHOICES`.
"""

from __future__ import annotations

import dataclasses

# The data sets the table spells findings for: name -> what it is. The names are those of
# ``config.data.name`` / ``prepare --dataset``; ``nih_expert`` is the expert relabelling of
# NIH images (google2019_nih-chest-xray-labels.csv), read by evaluation only.
DATASETS = {
    "nih": "NIH ChestX-ray14",
    "chexpert": "CheXpert",
    "mimic_cxr": "MIMIC-CXR-JPG",
    "rsna_pneumonia": "RSNA Pneumonia Detection",
    "siim_pneumothorax": "SIIM-ACR Pneumothorax",
    "vindr_cxr": "VinDr-CXR",
    "padchest": "PadChest",
    "nih_expert": "NIH expert labels",
}


@dataclasses.dataclass(frozen=True)
class Finding:
    """One canonical finding.

    ``names``: ``{data set: its spelling}``; ``synonyms``: ``{data set: (other spellings
    the set uses for the same finding, ...)}``; ``within``: canonical findings this one is
    part of (scored against them by ``mapping(..., within=True)``); ``note``: a choice made
    here, if any."""

    name: str
    names: dict[str, str]
    synonyms: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    within: tuple[str, ...] = ()
    note: str = ""


def _same(spelling: str, *datasets: str) -> dict[str, str]:
    return dict.fromkeys(datasets, spelling)


_CX = ("chexpert", "mimic_cxr")  # MIMIC-CXR is labelled by CheXpert's labeller

FINDINGS: tuple[Finding, ...] = (
    # NIH ChestX-ray14's 14.
    Finding(
        "Atelectasis",
        _same("Atelectasis", "nih", *_CX, "vindr_cxr") | {"padchest": "atelectasis"},
        synonyms={"padchest": ("laminar atelectasis", "lobar atelectasis")},
        within=("Lung Opacity",),
    ),
    Finding(
        "Cardiomegaly",
        _same("Cardiomegaly", "nih", *_CX, "vindr_cxr") | {"padchest": "cardiomegaly"},
        within=("Enlarged Cardiomediastinum",),
    ),
    Finding(
        "Consolidation",
        _same("Consolidation", "nih", *_CX, "vindr_cxr") | {"padchest": "consolidation"},
        within=("Airspace Opacity", "Lung Opacity"),
    ),
    Finding(
        "Edema",
        _same("Edema", "nih", *_CX, "vindr_cxr") | {"padchest": "pulmonary edema"},
        within=("Lung Opacity",),
    ),
    Finding(
        "Pleural Effusion",
        {
            "nih": "Effusion",
            **_same("Pleural Effusion", *_CX),
            "vindr_cxr": "Pleural effusion",
            "padchest": "pleural effusion",
        },
    ),
    Finding("Emphysema", _same("Emphysema", "nih", "vindr_cxr") | {"padchest": "emphysema"}),
    Finding(
        "Fibrosis",
        {"nih": "Fibrosis", "vindr_cxr": "Pulmonary fibrosis", "padchest": "pulmonary fibrosis"},
    ),
    Finding(
        "Hernia",
        {"nih": "Hernia", "padchest": "hiatal hernia"},
        note="PadChest's hiatal hernia is taken as NIH's Hernia (our choice: the hernia a "
        "chest radiograph shows is most often hiatal); PadChest's other hernias are not "
        "in the table.",
    ),
    Finding(
        "Infiltration",
        {"nih": "Infiltration", "vindr_cxr": "Infiltration", "padchest": "infiltrates"},
        within=("Lung Opacity",),
    ),
    Finding(
        "Mass",
        {"nih": "Mass", "padchest": "mass"},
        synonyms={"padchest": ("pulmonary mass",)},
        within=("Nodule/Mass", "Lung Lesion"),
    ),
    Finding(
        "Nodule",
        {"nih": "Nodule", "padchest": "nodule"},
        synonyms={"padchest": ("multiple nodules",)},
        within=("Nodule/Mass", "Lung Lesion"),
        note="PadChest's multiple nodules is a spelling of Nodule (the finding, more than "
        "once); where a class list has both, nodule is the one paired.",
    ),
    Finding(
        "Pleural Thickening",
        {
            "nih": "Pleural_Thickening",
            "vindr_cxr": "Pleural thickening",
            "padchest": "pleural thickening",
        },
        synonyms={"padchest": ("apical pleural thickening",)},
        within=("Pleural Other",),
    ),
    Finding(
        "Pneumonia",
        _same("Pneumonia", "nih", *_CX, "vindr_cxr")
        | {"rsna_pneumonia": "Lung Opacity", "padchest": "pneumonia"},
        within=("Lung Opacity",),
        note="RSNA's Lung Opacity (its Target 1) is Pneumonia here, not CheXpert's Lung "
        "Opacity: the challenge's Lung Opacity is an opacity suggestive of pneumonia, and "
        "abnormal images without one are its No Lung Opacity / Not Normal.",
    ),
    Finding(
        "Pneumothorax",
        _same("Pneumothorax", "nih", *_CX, "siim_pneumothorax", "vindr_cxr", "nih_expert")
        | {"padchest": "pneumothorax"},
    ),
    # CheXpert's (and MIMIC-CXR's) others.
    Finding(
        "No Finding",
        _same("No Finding", "nih", *_CX) | {"vindr_cxr": "No finding", "padchest": "normal"},
    ),
    Finding("Enlarged Cardiomediastinum", _same("Enlarged Cardiomediastinum", *_CX)),
    Finding(
        "Lung Opacity",
        _same("Lung Opacity", *_CX, "vindr_cxr"),
        note="CheXpert's Lung Opacity is any opacity of the lung; see Pneumonia for RSNA's.",
    ),
    Finding("Lung Lesion", _same("Lung Lesion", *_CX)),
    Finding(
        "Pleural Other",
        _same("Pleural Other", *_CX),
        note="CheXpert's pleural findings other than effusion (thickening among them).",
    ),
    Finding(
        "Fracture",
        _same("Fracture", *_CX, "nih_expert") | {"padchest": "fracture"},
    ),
    Finding("Support Devices", _same("Support Devices", *_CX)),
    # VinDr-CXR's others (local labels, then global ones).
    Finding("Aortic Enlargement", {"vindr_cxr": "Aortic enlargement"}),
    Finding("Calcification", {"vindr_cxr": "Calcification"}),
    Finding(
        "Clavicle Fracture",
        {"vindr_cxr": "Clavicle fracture", "padchest": "clavicle fracture"},
        within=("Fracture",),
    ),
    Finding(
        "Enlarged Pulmonary Artery",
        {"vindr_cxr": "Enlarged PA", "padchest": "pulmonary artery enlargement"},
    ),
    Finding("Interstitial Lung Disease", {"vindr_cxr": "ILD"}),
    Finding("Lung Cavity", {"vindr_cxr": "Lung cavity", "padchest": "cavitation"}),
    Finding("Lung Cyst", {"vindr_cxr": "Lung cyst"}),
    Finding(
        "Mediastinal Shift", {"vindr_cxr": "Mediastinal shift", "padchest": "mediastinal shift"}
    ),
    Finding(
        "Nodule/Mass",
        {"vindr_cxr": "Nodule/Mass", "nih_expert": "Nodule or mass"},
        within=("Lung Lesion",),
        note="VinDr-CXR's Nodule/Mass (and the NIH expert labels' Nodule or mass) is one "
        "finding of its own, not both Nodule and Mass: NIH's Nodule and Mass each fall "
        "within it. The one-to-one map pairs neither with it (they would claim it twice); "
        "name one (Nodule=Nodule/Mass), or score both with mapping(..., within=True).",
    ),
    Finding(
        "Rib Fracture",
        {"vindr_cxr": "Rib fracture", "padchest": "rib fracture"},
        within=("Fracture",),
    ),
    Finding("Other Lesion", {"vindr_cxr": "Other lesion"}),
    Finding(
        "COPD",
        {"vindr_cxr": "COPD", "padchest": "COPD signs"},
        synonyms={"padchest": ("copd signs",)},  # as readers that lowercase every label give it
    ),
    Finding("Lung Tumor", {"vindr_cxr": "Lung tumor"}),
    Finding("Tuberculosis", {"vindr_cxr": "Tuberculosis", "padchest": "tuberculosis"}),
    Finding("Other Diseases", {"vindr_cxr": "Other diseases"}),
    # PadChest's others.
    Finding(
        "Alveolar Pattern",
        {"padchest": "alveolar pattern"},
        within=("Airspace Opacity", "Lung Opacity"),
    ),
    Finding(
        "Interstitial Pattern",
        {"padchest": "interstitial pattern"},
        within=("Lung Opacity",),
        note="Not NIH's Infiltration (PadChest's infiltrates is): an interstitial pattern "
        "is also what ILD and fibrosis show. Pair it explicitly where wanted "
        "(Infiltration=interstitial pattern).",
    ),
    Finding(
        "Costophrenic Angle Blunting",
        {"padchest": "costophrenic angle blunting"},
        note="Not Pleural Effusion: a blunted angle is a sign that a small effusion and "
        "pleural thickening both give. Pair it explicitly where wanted.",
    ),
    # The NIH expert labels' own.
    Finding(
        "Airspace Opacity",
        {"nih_expert": "Airspace opacity"},
        within=("Lung Opacity",),
        note="No NIH class is the expert labels' Airspace opacity; NIH's Consolidation falls "
        "within it.",
    ),
)

# The ambiguous cases, each as decided here (rendered on the docs' labels page).
CHOICES = tuple((f.name, f.note) for f in FINDINGS if f.note)

_BY_NAME = {f.name: f for f in FINDINGS}


def _index() -> dict[str, dict[str, str]]:
    """``{data set: {spelling: canonical finding}}``; raises on a spelling given twice."""
    index: dict[str, dict[str, str]] = {d: {} for d in DATASETS}
    for f in FINDINGS:
        for dataset, names in [(d, (n,)) for d, n in f.names.items()] + list(f.synonyms.items()):
            for name in names:
                if name in index[dataset]:
                    raise ValueError(f"{dataset} spells {name!r} for two findings.")
                index[dataset][name] = f.name
    return index


_INDEX = _index()


def findings() -> tuple[str, ...]:
    """The canonical findings, in the table's order."""
    return tuple(_BY_NAME)


def _finding(name: str) -> Finding:
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ValueError(
            f"{name!r} is not a canonical finding; expected one of {', '.join(_BY_NAME)}."
        ) from None


def labels(dataset: str) -> tuple[str, ...]:
    """Every spelling the table knows for ``dataset`` (its own names, then synonyms)."""
    _check_dataset(dataset)
    return tuple(_INDEX[dataset])


def _check_dataset(dataset: str) -> None:
    if dataset not in DATASETS:
        raise ValueError(
            f"Unknown data set {dataset!r} for the label space; expected one of "
            f"{', '.join(DATASETS)}."
        )


def canonical(dataset: str, name: str) -> str:
    """The canonical finding that ``dataset`` spells ``name``; a ``ValueError`` naming the
    data set and the label where the table has neither."""
    _check_dataset(dataset)
    try:
        return _INDEX[dataset][name]
    except (KeyError, TypeError):
        raise ValueError(
            f"{dataset} has no label {name!r} in the label space "
            f"(chestattn_jax/data/label_space.py); it knows {', '.join(_INDEX[dataset])}."
        ) from None


def spellings(finding: str) -> dict[str, str]:
    """``{data set: its spelling}`` of the canonical ``finding`` (its synonyms aside)."""
    return dict(_finding(finding).names)


def within(finding: str) -> tuple[str, ...]:
    """The broader canonical findings ``finding`` falls within (may be empty)."""
    return _finding(finding).within


def find(name: str) -> tuple[str, ...]:
    """The canonical findings that some data set spells ``name``, in the table's order
    (for a class list of a data set the table does not know)."""
    return tuple(f for f in _BY_NAME if any(_INDEX[d].get(name) == f for d in DATASETS))


def _representatives(dataset: str, classes) -> dict[str, str]:
    """``{finding: the class of ``classes`` that stands for it}``: the data set's own
    spelling where the list has it, else the first synonym in the list."""
    chosen: dict[str, str] = {}
    for c in classes:
        f = canonical(dataset, c)
        if f not in chosen or c == _BY_NAME[f].names.get(dataset):
            chosen[f] = c
    return chosen


def mapping(
    source_dataset: str,
    source_classes,
    target_dataset: str,
    target_classes,
    *,
    within: bool = False,
) -> dict[str, str]:
    """``{source class: target class}`` for the classes of ``source_classes`` (labels of
    ``source_dataset``) that have a counterpart among ``target_classes``, in the source's
    order.

    By default one to one: the classes of the same finding (where a list spells a finding
    twice, by its own name and a synonym, its own name is paired). With ``within=True``,
    many to one: every source class onto the target class of its finding or, where the
    target has none, of the first broader finding it falls within that the target has
    (NIH's Nodule and Mass both onto VinDr-CXR's Nodule/Mass). Raises a ``ValueError``
    naming a data set or label the table does not know."""
    source_classes, target_classes = list(source_classes), list(target_classes)
    targets = _representatives(target_dataset, target_classes)
    if not within:
        sources = _representatives(source_dataset, source_classes)
        paired = {c: targets[f] for f, c in sources.items() if f in targets}
        return {c: paired[c] for c in source_classes if c in paired}
    out = {}
    for c in source_classes:
        f = canonical(source_dataset, c)
        for candidate in (f, *_BY_NAME[f].within):
            if candidate in targets:
                out[c] = targets[candidate]
                break
    return out


def markdown_table() -> str:
    """The table as Markdown: a row per canonical finding, a column per data set (its
    spelling; synonyms after "also"), and the broader findings it falls within."""
    columns = list(DATASETS)
    head = ["Finding", *(DATASETS[d] + f" (`{d}`)" for d in columns), "Within"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for f in FINDINGS:
        cells = [f"**{f.name}**"]
        for d in columns:
            names = [f.names[d]] if d in f.names else []
            text = ", ".join(f"`{n}`" for n in names)
            if f.synonyms.get(d):
                also = ", ".join(f"`{n}`" for n in f.synonyms[d])
                text = f"{text}; also {also}" if text else also
            cells.append(text)
        cells.append(", ".join(f.within))
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def markdown_choices() -> str:
    """The choices of :data:`CHOICES` as a Markdown list."""
    return "".join(f"- **{name}**: {note}\n" for name, note in CHOICES)

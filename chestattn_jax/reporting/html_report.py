"""An evaluation's ``report.html``: one page that opens from disk with no network.

:func:`render` turns an evaluation's ``metrics`` (what the evaluators added, as in
``metrics.json``) and its figures into the page's text; :func:`gallery_examples` draws
the gallery's layers from arrays. Both are pure: the ``report_html`` evaluator
(:mod:`chestattn_jax.evaluation.evaluators.report_html`) gathers and writes.

Every image is a ``data:`` URI, so the page is one file: it can be copied, mailed or
downloaded from a bucket alone and still shows everything, and a Content-Security-Policy
forbids it any request at all. The gallery stays small because each example's image is
embedded once (as a CSS background every map tile shares) and each map is a small
translucent layer over it. JavaScript only sorts tables and filters the gallery; without
it every table and every tile shows.

Sections other evaluators fill
------------------------------
``metrics["calibration"]``, ``metrics["operating_points"]``, ``metrics["subgroups"]`` and
``metrics["failures"]`` render generically, from a dict with any of these keys::

    {
      "summary": "One paragraph: what was computed and how.",
      "tables": [
        {"title": "Expected calibration error",        # optional
         "headers": ["class", "ECE [95% CI]", "n"],
         "rows": [["Effusion", {"value": 0.031, "ci": [0.02, 0.045]}, 812], ...],
         "note": "15 equal-count bins."},               # optional
      ],
      "figures": [{"file": "calibration.png", "caption": "Reliability diagrams."}],
      "checklist": {"12e-calibration": "ECE and reliability diagrams per class."},
      "unavailable": "why the evaluator ran but computed nothing",
      "thresholds": {"Effusion": 0.31, ...},            # operating_points only
      "threshold_rule": "Youden's J on the validation split",   # operating_points only
    }

A cell is a string, a number (an int as is, a float to three decimals), ``None``
(empty) or ``{"value": number, "ci": [low, high]}`` (a number with its interval).
``figures`` name files the evaluator wrote into the evaluation folder (the ``images``
of :func:`render` hold them). ``checklist`` says which reporting items the section
answers (keys of :data:`CHECKLIST`) and how; an item whose section is present answers
it unless the item is marked ``claim``, which a section must name. ``thresholds``
(probability per class) are the gallery's operating points; without them an outcome is
read at :data:`DEFAULT_THRESHOLD`. A section that is absent, or that has
``unavailable``, shows "Not available" and why.
"""

from __future__ import annotations

import base64
import io
import json
import re

import numpy as np

from chestattn_jax.localization_metrics import OVERLAP_THRESHOLDS, RATE_COLUMNS, upsample_map
from chestattn_jax.reporting.html_blocks import cell as _cell
from chestattn_jax.reporting.html_blocks import escape as _e
from chestattn_jax.reporting.html_blocks import facts as _facts
from chestattn_jax.reporting.html_blocks import figure as _figure
from chestattn_jax.reporting.html_blocks import not_available as _not_available
from chestattn_jax.reporting.html_blocks import num as _num
from chestattn_jax.reporting.html_blocks import page as _page
from chestattn_jax.reporting.html_blocks import signed as _signed
from chestattn_jax.reporting.html_blocks import table as _table
from chestattn_jax.reporting.html_blocks import text_cell as _text
from chestattn_jax.reporting.result_tables import PRIOR_ORIGIN, per_class_rows
from chestattn_jax.reporting.text_tables import number

# The sections that other evaluators add to metrics, with their headings, in page order.
SECTIONS = {
    "calibration": "Calibration",
    "operating_points": "Operating points",
    "subgroups": "Subgroups",
    "failures": "Failure review",
}
# The setting each section's evaluator (named as the section) added to an evaluation's
# recorded settings: an evaluation without it was made before the evaluator existed.
SECTION_SETTINGS = {
    "calibration": "eval.calibration_bins",
    "operating_points": "eval.operating_points",
    "subgroups": "eval.subgroup_age_bands",
    "failures": "eval.num_failure_images",
}
BEFORE_EVALUATORS = "evaluated before these evaluators existed; re-run --mode=evaluate"
# A gallery outcome's probability threshold where no operating points give one.
DEFAULT_THRESHOLD = 0.5
OUTCOMES = ("TP", "FP", "FN", "TN")
# The figures of the evaluation folder the page shows (evaluators' files).
FIGURES = ("roc_curves.png", "average_masks.png")
# Overlay layers are drawn at most this many pixels across (the browser scales them).
MAP_LAYER_SIZE = 64

# Reporting items: (key, guideline, item, what it asks, default section, claim). A
# "claim" item is answered only by a section that names it in its "checklist".
CHECKLIST = (
    ("12e-discrimination", "TRIPOD+AI", "12e", "Discrimination", "discrimination", False),
    ("12e-calibration", "TRIPOD+AI", "12e", "Calibration", "calibration", False),
    ("12e-utility", "TRIPOD+AI", "12e", "Clinical utility", "operating_points", True),
    ("12f", "TRIPOD+AI", "12f", "Model updating (recalibration)", "calibration", True),
    ("15", "TRIPOD+AI", "15", "How the thresholds were chosen", "operating_points", False),
    (
        "23a",
        "TRIPOD+AI",
        "23a",
        "Performance with intervals, in key subgroups",
        "subgroups",
        False,
    ),
    (
        "claim-failures",
        "CLAIM",
        "failure analysis",
        "Failure analysis of incorrectly classified cases",
        "failures",
        False,
    ),
)
_SOURCES = {"model": "model", "class_prior": "class prior", "uniform": "uniform"}
_COLUMN_NAMES = {"pixel_hit": "pixel hit rate", "cell_hit": "cell hit rate"}

# ---------------------------------------------------------------------------- the page


def render(metrics: dict, images: dict | None = None, gallery: dict | None = None) -> str:
    """The page's HTML text for an evaluation's ``metrics``.

    ``images`` maps a file name of the evaluation folder (:data:`FIGURES`, a section's
    ``figures``) to the ``src`` that shows it (a ``data:`` URI); a figure it lacks is
    "not available". ``gallery``: ``{"note": str, "examples": [...]}`` from
    :func:`gallery_examples`, or ``{"unavailable": why}``."""
    images = images or {}
    sections = [
        ("evaluated", "What was evaluated", _evaluated(metrics)),
        ("checklist", "Reporting checklist", _checklist(metrics)),
        ("discrimination", "Discrimination", _discrimination(metrics, images)),
        ("localization", "Localisation", _localization(metrics, images)),
        ("gallery", "Gallery", _gallery(gallery or {"unavailable": "no gallery was built."})),
        *((key, title, _generic(metrics, key, images)) for key, title in SECTIONS.items()),
    ]
    return _page(
        "Evaluation report",
        _describe(metrics),
        sections,
        key=_key_results(metrics),
        footer="Written by the report_html evaluator from this folder's metrics "
        f"(evaluation version {metrics.get('version', '')}).",
        extra_css=_backgrounds(gallery),
    )


def _key_results(metrics: dict) -> str:
    """The headline numbers: mean AUC, and the model's and baselines' mean pixel hit rate."""
    out = []
    if metrics.get("auc"):
        auc = _num(metrics.get("mean_auc"), 3, _mean_ci(metrics))[0]
        out.append(f"Mean AUC <strong>{auc}</strong>")
    loc = metrics.get("localization")
    if loc:
        rates = (loc.get("bootstrap") or {}).get("rates") or {}
        ci = ((rates.get("model") or {}).get("pixel_hit") or {}).get("mean_ci")
        model = _num(loc["pointing_game_pixel"]["mean_hit_rate"], 2, ci)[0]
        base = [
            f"{_SOURCES[b]} {number(s['pointing_game_pixel']['mean_hit_rate'], 2)}"
            for b, s in (loc.get("baselines") or {}).items()
            if b in _SOURCES and "pointing_game_pixel" in s
        ]
        out.append(
            f"Pixel hit rate <strong>{model}</strong>"
            + (f' <span class="muted">({_e(", ".join(base))})</span>' if base else "")
        )
    return f'<p class="key">{" <span class=sep>·</span> ".join(out)}</p>' if out else ""


def _describe(metrics: dict) -> str:
    """``class model, step 24, test split of synthetic (72 images)``."""
    dataset = (metrics.get("dataset") or {}).get("name", "")
    cross = metrics.get("cross_dataset")
    if cross:
        dataset = cross.get("dataset", dataset)
    variant = metrics.get("variant", "?")
    model = f"{variant}-based attention" if variant in ("class", "image") else variant
    return (
        f"{model} model, step {metrics.get('step', '?')}, "
        f"{metrics.get('split', '?')} split of {dataset or '?'} "
        f"({metrics.get('num_examples', '?')} images)"
    )


def _ran(metrics: dict) -> str:
    chosen = metrics.get("evaluators")
    return ", ".join(map(str, chosen)) if chosen else "unknown"


# ------------------------------------------------------------------- what was evaluated


def _evaluated(metrics: dict) -> str:
    dataset = metrics.get("dataset") or {}
    settings = metrics.get("settings") or {}
    facts = [
        ("Model variant", metrics.get("variant")),
        (
            "Checkpoint",
            f"step {metrics.get('step', '?')}"
            + (f" ({settings['eval.checkpoint']})" if "eval.checkpoint" in settings else ""),
        ),
        ("Data set", dataset.get("name")),
        ("Data set fingerprint", dataset.get("fingerprint")),
        ("Split", metrics.get("split")),
        ("Images evaluated", metrics.get("num_examples")),
        ("Image size", dataset.get("image_size") or settings.get("data.image_size")),
        ("Loss (BCE part)", _loss(metrics)),
        ("Evaluators", _ran(metrics)),
    ]
    cross = metrics.get("cross_dataset")
    if cross:
        pairs = ", ".join(a if a == b else f"{a} = {b}" for a, b in cross["class_map"].items())
        facts += [
            ("Evaluated data set", f"{cross.get('dataset')} ({cross.get('data_dir')})"),
            ("Its fingerprint", cross.get("fingerprint")),
            ("Class map", f"{cross.get('class_map_setting')!r}: {pairs}"),
        ]
    out = _facts(facts)
    changed = metrics.get("changed_from_training")
    if changed:
        rows = [
            [_text(k), _text(_json(v.get("trained"))), _text(_json(v.get("evaluated")))]
            for k, v in changed.items()
        ]
        out += "<h3>Changed from training</h3>" + _table(["setting", "trained", "evaluated"], rows)
    if settings:
        rows = [[_text(k), _text(_json(v))] for k, v in settings.items()]
        out += (
            f"<details><summary>All settings ({len(settings)})</summary>"
            f"{_table(['setting', 'value'], rows)}</details>"
        )
    return out


def _loss(metrics: dict) -> str | None:
    loss, bce = metrics.get("loss"), metrics.get("bce")
    if loss is None:
        return None
    return f"{number(loss, 4)}" + ("" if bce is None else f" ({number(bce, 4)})")


def _json(value) -> str:
    return value if isinstance(value, str) else json.dumps(value)


# --------------------------------------------------------------------------- checklist


def section(metrics: dict, key: str):
    """What ``metrics`` holds for section ``key`` in the contract above: an evaluator that
    keeps its own numbers under ``key`` puts its page's view of them under ``"page"``."""
    value = metrics.get(key)
    return value.get("page", value) if isinstance(value, dict) else value


def predates(metrics: dict, key: str) -> bool:
    """Whether an evaluation was made before section ``key``'s evaluator existed: that
    evaluator did not run and the evaluation's settings lack the setting it added
    (:data:`SECTION_SETTINGS`)."""
    ran = metrics.get("evaluators") or []
    return key not in ran and SECTION_SETTINGS[key] not in (metrics.get("settings") or {})


def section_absent(metrics: dict, key: str) -> str | None:
    """Why the page shows section ``key`` (``"discrimination"`` or one of
    :data:`SECTIONS`) as not available; ``None`` where it has content."""
    present, why = _section_state(metrics, key)
    return None if present else why


def _section_state(metrics: dict, key: str, brief: bool = False) -> tuple[bool, str]:
    """Whether section ``key`` has content, and why not."""
    ran = "" if brief else f" (evaluators: {_ran(metrics)})"
    if key == "discrimination":
        if metrics.get("auc"):
            return True, ""
        return False, f"no AUCs: the auc evaluator did not run{ran}."
    section_ = section(metrics, key)
    if not isinstance(section_, dict):
        if predates(metrics, key):
            return False, f"this evaluation's metrics hold no {key!r}: {BEFORE_EVALUATORS}."
        return False, f"this evaluation's metrics hold no {key!r}: no evaluator computed it{ran}."
    if section_.get("unavailable"):
        return False, str(section_["unavailable"])
    return True, ""


def _checklist(metrics: dict) -> str:
    rows = []
    for key, guideline, item, asks, default, claim in CHECKLIST:
        claims = [
            s
            for s in SECTIONS
            if isinstance(metrics.get(s), dict)
            and key in (section(metrics, s).get("checklist") or {})
            and _section_state(metrics, s)[0]
        ]
        present, why = _section_state(metrics, default, brief=True)
        answers = claims or ([default] if present and not claim else [])
        if answers:
            links = ", ".join(f'<a href="#{s}">{_e(_title(s))}</a>' for s in answers)
            notes = "; ".join(
                str(section(metrics, s)["checklist"][key])
                for s in answers
                if s in SECTIONS and key in (section(metrics, s).get("checklist") or {})
            ) or _default_note(metrics, key)
            status = f'<span class="ok">answered</span> in {links}: {_e(notes)}'
        else:
            if present and claim:
                why = (
                    f"the {_title(default).lower()} section does not report it (a section "
                    f"answers it by naming {key!r} in its checklist)."
                )
            status = (
                f'<span class="no">not available</span> <span class="muted">'
                f'(<a href="#{default}">{_e(_title(default))}</a>): {_e(why)}</span>'
            )
        rows.append([_text(f"{guideline} {item}"), _text(asks), (status, None)])
    return (
        "<p>Where this page answers the reporting items on performance of TRIPOD+AI "
        "(Collins et al., BMJ 2024) and CLAIM's failure analysis.</p>"
        + _table(["item", "asks for", "where"], rows, numeric=[False] * 3)
    )


def _title(key: str) -> str:
    return SECTIONS.get(key, key.capitalize())


def _default_note(metrics: dict, key: str) -> str:
    if key == "12e-discrimination":
        boot = metrics.get("bootstrap")
        how = (
            f"with 95 % intervals from {boot['num_draws']} patient-level bootstrap draws"
            if boot
            else "without intervals (eval.bootstrap_draws = 0)"
        )
        return f"ROC AUC per class {how}, and the ROC curves."
    if key == "23a":
        return "performance per subgroup."
    return "see the section."


# ---------------------------------------------------------------------- discrimination


def _classes(metrics: dict) -> tuple[list[str], list[str] | None]:
    classes = list(metrics.get("auc") or {})
    cross = metrics.get("cross_dataset") or {}
    mapped = cross.get("class_map")
    return classes, ([mapped[c] for c in classes] if mapped else None)


def _discrimination(metrics: dict, images: dict) -> str:
    present, why = _section_state(metrics, "discrimination")
    if not present:
        return _not_available(why)
    classes, evaluated_as = _classes(metrics)
    rows = per_class_rows(metrics, classes, evaluated_as)
    localised = "hit_rate" in rows[0]
    headers = ["class", "AUC [95% CI]", "positives", "negatives"]
    if localised:
        headers += ["hit rate [95% CI]", "prior hit rate [95% CI]", "uniform hit rate"]

    def cells(r):
        out = [
            _text(r["class"]),
            _num(r["auc"], 3, (r["auc_low"], r["auc_high"])),
            _num(r.get("positives")) if "positives" in r else ("", ""),
            _num(r.get("negatives")) if "negatives" in r else ("", ""),
        ]
        if localised:
            out += [
                _num(r["hit_rate"], 2, (r["hit_rate_low"], r["hit_rate_high"])),
                _num(r["prior_hit_rate"], 2, (r["prior_hit_rate_low"], r["prior_hit_rate_high"])),
                _num(r["uniform_hit_rate"], 2),
            ]
        return out

    numeric = [False] + [True] * (len(headers) - 1)
    boot = metrics.get("bootstrap")
    note = (
        f"Intervals: 95 %, from {boot['num_draws']} patient-level bootstrap draws."
        if boot
        else "No intervals (eval.bootstrap_draws = 0)."
    )
    if localised:
        note += (
            " Hit rate: the pixel pointing game on the images with localisation truth "
            "(details under Localisation)."
        )
    undefined = metrics.get("undefined_classes") or []
    if undefined:
        note += f" AUC undefined (one label value only): {', '.join(map(str, undefined))}."
    table = _table(
        headers,
        [cells(r) for r in rows[:-1]],
        foot=cells(rows[-1]),
        numeric=numeric,
        caption="Per class (click a heading to sort)",
    )
    roc = _figure(
        images,
        "roc_curves.png",
        "ROC curves of every class",
        f"roc_curves.png was not written: the figures evaluator did not run "
        f"(evaluators: {_ran(metrics)}).",
    )
    return f'{table}<p class="note">{_e(note)}</p>{roc}'


def _mean_ci(metrics: dict):
    return (metrics.get("bootstrap") or {}).get("mean_ci")


# ------------------------------------------------------------------------ localisation


def _localization(metrics: dict, images: dict) -> str:
    loc = metrics.get("localization")
    if not loc:
        ran = metrics.get("evaluators") or []
        if "localization" not in ran:
            why = f"the localization evaluator did not run (evaluators: {_ran(metrics)})."
        elif metrics.get("variant") == "resnet":
            why = "the resnet variant has no attention maps to score."
        else:
            why = f"the {metrics.get('split', 'evaluated')} split has no localisation truth."
        return _not_available(why)
    classes = list(loc["pointing_game_pixel"]["count"])
    boot = loc.get("bootstrap") or {}
    baselines = loc.get("baselines") or {}
    sources = {
        "model": loc,
        **{b: baselines[b] for b in ("class_prior", "uniform") if b in baselines},
    }
    diffs = [f"model - {b}" for b in sources if b != "model"]
    digits = 2

    def rate(source, column, c):
        scores, mean = sources[source], c is None
        value = _point_rate(scores, column, c)
        summary = ((boot.get("rates") or {}).get(source) or {}).get(column)
        ci = summary and (summary["mean_ci"] if mean else summary["classes"][c]["ci"])
        return _num(value, digits, ci)

    def difference(name, column, c):
        summary = ((boot.get("differences") or {}).get(name) or {}).get(column)
        if summary:
            d = summary["mean"] if c is None else summary["classes"][c]
            return _signed(d["difference"], digits, d["ci"])
        a, b = (_point_rate(sources[s], column, c) for s in name.split(" - "))
        return _signed(None if a is None or b is None else a - b, digits)

    short = {"class_prior": "prior", "uniform": "uniform"}
    names = [_SOURCES[s] for s in sources] + [f"model − {short[d[8:]]}" for d in diffs]
    ci = " [95% CI]" if boot else ""
    summary_rows = [
        [
            _text(_COLUMN_NAMES.get(col, col)),
            *[rate(s, col, None) for s in sources],
            *[difference(d, col, None) for d in diffs],
        ]
        for col in RATE_COLUMNS
    ]
    counts = loc["pointing_game_pixel"]["count"]
    built = (baselines.get("class_prior") or {}).get("built_from_class") or {}
    headline_rows = [
        [
            _text(c),
            _num(counts.get(c)),
            *[rate(s, "pixel_hit", c) for s in sources],
            *[difference(d, "pixel_hit", c) for d in diffs],
            _text(PRIOR_ORIGIN.get(built.get(c), built.get(c, ""))),
        ]
        for c in classes
    ]
    headline_foot = [
        _text("mean"),
        _num(sum(v for v in counts.values() if v)),
        *[rate(s, "pixel_hit", None) for s in sources],
        *[difference(d, "pixel_hit", None) for d in diffs],
        _text(""),
    ]
    other = [col for col in RATE_COLUMNS if col != "pixel_hit"]
    other_rows = [[_text(c), *[rate("model", col, c) for col in other]] for c in classes]
    other_foot = [_text("mean"), *[rate("model", col, None) for col in other]]
    intervals = (
        f"95 % intervals from {boot['num_draws']} patient-level bootstrap draws; "
        "differences are paired (the same draws)."
        if boot
        else "No intervals (eval.bootstrap_draws = 0)."
    )
    threshold = (loc.get("overlap") or {}).get("map_threshold")
    prior = baselines.get("class_prior") or {}
    origins = ", ".join(
        f"{n} images from the {o}" for o, n in (prior.get("images_from") or {}).items()
    )
    return "".join(
        [
            f"<p>Headline: the pixel pointing game (the map's maximum, resized bilinearly to the "
            f"image, inside the finding), over {sum(v for v in counts.values() if v)} findings. "
            f"Baselines: each class's average truth mask as a fixed map (class prior; "
            f"{_e(origins or 'no images')}) and a map that favours no pixel (uniform). "
            f"{_e(intervals)}</p>",
            _table(
                ["class", "findings", *names, "prior from"],
                headline_rows,
                foot=headline_foot,
                numeric=[False] + [True] * (len(names) + 1) + [False],
                caption=f"Pixel hit rate per class, the model beside its baselines{ci}",
            ),
            _table(
                ["score", *names],
                summary_rows,
                numeric=[False] + [True] * len(names),
                caption=f"Every score, mean over classes{ci}",
            ),
            _table(
                ["class", *[_COLUMN_NAMES.get(col, col) for col in other]],
                other_rows,
                foot=other_foot,
                numeric=[False] + [True] * len(other),
                caption=f"The model's other scores per class{ci}",
            ),
            '<p class="note">cell hit rate: a hit when the maximum cell of the coarse map holds '
            "any truth pixel. iou@t / iobb@t: the share of findings whose map, thresholded at "
            f"{_e(threshold)} of its maximum, has IoU / IoBB of at least t "
            f"(t = {', '.join(map(str, OVERLAP_THRESHOLDS))}).</p>",
            _figure(
                images,
                "average_masks.png",
                "Each class's map averaged over the images whose only finding is that class",
                "average_masks.png was not written (the figures evaluator did not run or had "
                "no example).",
            ),
        ]
    )


def _point_rate(scores: dict, column: str, c: str | None):
    """One source's rate ``column`` (:data:`RATE_COLUMNS`) for class ``c`` (``None``: the
    mean over classes), from its scores in ``metrics["localization"]``."""
    if column in ("pixel_hit", "cell_hit"):
        game = scores["pointing_game_pixel" if column == "pixel_hit" else "pointing_game"]
        return game["mean_hit_rate"] if c is None else game["hit_rate"].get(c)
    name, t = column.split("@")
    overlap = scores["overlap"]
    if c is None:
        return overlap[f"mean_{name}_accuracy"][t]
    return overlap[f"{name}_accuracy"][t].get(c)


# ----------------------------------------------------------------------------- gallery


def thresholds(metrics: dict, classes) -> tuple[dict, str]:
    """Each class's probability threshold for the gallery's outcomes, and how it was
    chosen: the operating points' ``thresholds`` where they give one (a number), else
    :data:`DEFAULT_THRESHOLD`."""
    ops = section(metrics, "operating_points")
    given = (ops.get("thresholds") or {}) if isinstance(ops, dict) else {}
    chosen = {c: float(given[c]) for c in classes if isinstance(given.get(c), int | float)}
    out = {c: chosen.get(c, DEFAULT_THRESHOLD) for c in classes}
    if not chosen:
        return out, f"at probability {DEFAULT_THRESHOLD} (no operating point was chosen)"
    rule = ops.get("threshold_rule") or "the operating points section's rule"
    rest = [c for c in classes if c not in chosen]
    also = f"; {DEFAULT_THRESHOLD} for {', '.join(rest)}, which have none" if rest else ""
    return out, f"at the operating points' thresholds ({rule}){also}"


def outcome(label, prob: float, threshold: float, scored: bool = True) -> str:
    """``TP``, ``FP``, ``FN`` or ``TN`` of one prediction; ``unscored`` where the label
    is unknown."""
    if not scored:
        return "unscored"
    return ("T" if bool(prob >= threshold) == bool(label) else "F") + (
        "P" if prob >= threshold else "N"
    )


def png_uri(pixels: np.ndarray) -> str:
    """A ``data:`` URI of ``pixels`` (``(H, W)`` gray or ``(H, W, 4)`` RGBA, uint8) as PNG."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _map_layer(m) -> np.ndarray:
    """An ``(h, w)`` map as ``(s, s, 4)`` RGBA: bilinear to ``s`` (at most
    :data:`MAP_LAYER_SIZE`, a multiple of the map's size), divided by its maximum, in
    the ``jet`` colour map at alpha 0.45, as the figures draw it."""
    from matplotlib import colormaps

    h = max(np.asarray(m).shape[-2:])
    size = h * max(1, MAP_LAYER_SIZE // h)
    rgba = colormaps["jet"](upsample_map(m, size), bytes=True)
    rgba[..., 3] = round(0.45 * 255)
    return rgba


def _outline_layer(mask) -> np.ndarray | None:
    """The inner boundary of an ``(S, S)`` bool mask as white on transparent RGBA,
    ``S // 112 + 1`` pixels wide (visible at a thumbnail's size); ``None`` if empty."""
    mask = np.asarray(mask, bool)
    if not mask.any():
        return None
    edge = np.zeros_like(mask)
    inside = mask.copy()
    for _ in range(mask.shape[0] // 112 + 1):
        padded = np.pad(inside, 1)
        interior = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
        edge |= inside & ~interior
        inside &= interior
    rgba = np.zeros((*mask.shape, 4), np.uint8)
    rgba[edge] = (255, 255, 255, 255)
    return rgba


def gallery_examples(
    classes,
    index,
    images,
    maps,
    labels,
    mask,
    probs,
    threshold: dict,
    truth_masks=None,
) -> list[dict]:
    """The gallery's examples: for each image (``images`` ``(n, S, S)`` uint8, source
    ``index`` ``(n,)``) its layers as ``data:`` URIs and one tile per class with its map
    (``maps``: ``(n, k, h, w)`` one per class, ``(n, h, w)`` one per image, or ``None``),
    probability, outcome at ``threshold[class]`` (:func:`outcome`; ``mask`` 0: unknown
    label) and truth outline (``truth_masks``: per image ``(k, S, S)`` bool or ``None``).

    Each: ``{"title", "findings": [class], "image": uri, "outline": uri | None, "tiles":
    [{"class", "prob", "outcome", "map": uri | None, "truth": uri | None}]}`` (``truth``:
    that class's outline; an image-based model's one map is every class's ``map``)."""
    maps = None if maps is None else np.asarray(maps)
    out = []
    for r, i in enumerate(np.asarray(index).tolist()):
        truth = None if truth_masks is None else truth_masks[r]
        shared = maps is not None and maps.ndim == 3
        shared_layer = png_uri(_map_layer(maps[r])) if shared else None
        tiles = []
        for j, c in enumerate(classes):
            layer = shared_layer if shared else None
            if maps is not None and not shared:
                layer = png_uri(_map_layer(maps[r, j]))
            line = None if truth is None else _outline_layer(truth[j])
            tiles.append(
                {
                    "class": c,
                    "prob": float(probs[r, j]),
                    "outcome": outcome(labels[r, j], probs[r, j], threshold[c], mask[r, j] > 0),
                    "map": layer,
                    "truth": None if line is None else png_uri(line),
                }
            )
        union = None if truth is None else _outline_layer(np.asarray(truth).any(0))
        out.append(
            {
                "title": f"test #{i}",
                "findings": [c for j, c in enumerate(classes) if labels[r, j] and mask[r, j]],
                "image": png_uri(np.asarray(images[r], np.uint8)),
                "outline": None if union is None else png_uri(union),
                "tiles": tiles,
            }
        )
    return out


def _backgrounds(gallery: dict | None) -> str:
    """Each example's image once, as the background its tiles share."""
    examples = (gallery or {}).get("examples") or []
    return "".join(
        f".ex{r}{{background-image:url({_css_url(ex['image'])})}}" for r, ex in enumerate(examples)
    )


def _css_url(src: str) -> str:
    """``src`` quoted for CSS; a ``ValueError`` unless a base64 ``data:`` image URI (the
    only kind the page embeds, and one that cannot end the style sheet)."""
    if not _DATA_URI.fullmatch(src):
        raise ValueError(f"a gallery image must be a base64 data:image URI, got {src[:40]!r}")
    return f'"{src}"'


_DATA_URI = re.compile(r"data:image/[a-z+.-]+;base64,[A-Za-z0-9+/=]*")


def _gallery(gallery: dict) -> str:
    if gallery.get("unavailable") or not gallery.get("examples"):
        return _not_available(gallery.get("unavailable") or "no example images.")
    examples = gallery["examples"]
    tiles = [t for ex in examples for t in ex["tiles"]]
    classes = list(dict.fromkeys(t["class"] for t in tiles))
    outcomes = [o for o in _OUTCOME_NAMES if any(t["outcome"] == o for t in tiles)]
    legend = " ".join(f"{_badge(o)} {_OUTCOME_NAMES[o]}" for o in outcomes)
    blocks = "".join(_example(r, ex) for r, ex in enumerate(examples))
    return (
        f"<p>{_e(gallery.get('note', ''))}</p>"
        f'<p class="legend">{legend}</p>{_filters(classes, outcomes)}'
        f'<div class="gallery">{blocks}</div>'
    )


def _filters(classes, outcomes) -> str:
    """The gallery's filters, hidden until the script shows them (they need it)."""

    def select(name, label, options):
        opts = "".join(f'<option value="{_e(v)}">{_e(text)}</option>' for v, text in options)
        return (
            f'<label>{label} <select id="filter-{name}"><option value="">all</option>'
            f"{opts}</select></label>"
        )

    return (
        '<div class="filters" hidden>'
        + select("class", "Class", [(c, c) for c in classes])
        + select("outcome", "Outcome", [(o, f"{_OUTCOME_NAMES[o]} ({o})") for o in outcomes])
        + '<span id="filter-count" aria-live="polite"></span></div>'
    )


def _badge(o: str) -> str:
    return f'<span class="badge {o.lower()}">{_e(o)}</span>'


def _example(r: int, ex: dict) -> str:
    """One example: the image (truth outlined), then one tile per class."""
    outline = ex.get("outline")
    layers = f'<img src="{_e(ex["image"])}" alt="{_e(ex["title"])}: the image">'
    if outline:
        layers += f'<img class="truth" src="{_e(outline)}" alt="">'
    caption = "image (truth outlined)" if outline else "image"
    tiles = [
        f'<figure class="tile input"><div class="stack ex{r}">{layers}</div>'
        f"<figcaption>{caption}</figcaption></figure>",
        *(_tile(r, t) for t in ex["tiles"]),
    ]
    findings = ", ".join(ex["findings"]) or "no finding"
    return (
        f'<div class="example"><h3>{_e(ex["title"])}: {_e(findings)}</h3>'
        f'<div class="tiles">{"".join(tiles)}</div></div>'
    )


def _tile(r: int, t: dict) -> str:
    """One class's tile of example ``r``: its map and truth outline over the image."""
    layers = "".join(
        f'<img class="{kind}" src="{_e(t[kind])}" alt="">'
        for kind in ("map", "truth")
        if t.get(kind)
    )
    c, o = _e(t["class"]), t["outcome"]
    return (
        f'<figure class="tile {o.lower()}" data-class="{c}" data-outcome="{_e(o)}">'
        f'<div class="stack ex{r}" role="img" aria-label="{c}: map">{layers}</div>'
        f'<figcaption><span class="cls" title="{c}">{c}</span> {_badge(o)} '
        f'<span class="p">p = {number(t["prob"], 2)}</span></figcaption></figure>'
    )


_OUTCOME_NAMES = {
    "TP": "true positive",
    "FP": "false positive",
    "FN": "false negative",
    "TN": "true negative",
    "unscored": "label unknown",
}

# ---------------------------------------------------------------- sections of others


def _generic(metrics: dict, key: str, images: dict) -> str:
    present, why = _section_state(metrics, key)
    if not present:
        return _not_available(why)
    section_ = section(metrics, key)
    out = []
    if section_.get("summary"):
        out.append(f"<p>{_e(section_['summary'])}</p>")
    for t in section_.get("tables") or []:
        headers = [str(h) for h in t.get("headers") or []]
        rows = [[_cell(v) for v in row] for row in t.get("rows") or []]
        width = max([len(headers), *map(len, rows)])
        headers += [""] * (width - len(headers))
        for row in rows:
            row.extend([("", "")] * (width - len(row)))
        out.append(_table(headers, rows, caption=t.get("title", "")))
        if t.get("note"):
            out.append(f'<p class="note">{_e(t["note"])}</p>')
    for f in section_.get("figures") or []:
        out.append(
            _figure(images, f.get("file", ""), f.get("caption", ""), f"{f.get('file')} is missing.")
        )
    if key == "operating_points" and section_.get("thresholds"):
        rule = section_.get("threshold_rule")
        out.append(
            f'<p class="note">The gallery reads its outcomes at the thresholds chosen here'
            f"{' (' + _e(rule) + ')' if rule else ''}.</p>"
        )
    return "".join(out) or _not_available(f"metrics[{key!r}] holds no summary, table or figure.")

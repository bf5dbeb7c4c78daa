"""report.html: the renderer on its own (escaping, sections that are not available, the
generic section contract), and the page of a real evaluation in headless Chromium."""

from __future__ import annotations

import json
import shutil
from html.parser import HTMLParser

import numpy as np
import pytest
from conftest import table_rows

from chestattn_jax.reporting import html_report


def _minimal_metrics(classes=("Effusion", "Mass")) -> dict:
    """What the auc evaluator alone adds, with made-up numbers."""
    classes = list(classes)
    return {
        "auc": {c: 0.5 + 0.1 * j for j, c in enumerate(classes)},
        "mean_auc": 0.55,
        "positives": {c: 3 + j for j, c in enumerate(classes)},
        "negatives": {c: 20 - j for j, c in enumerate(classes)},
        "undefined_classes": [],
        "variant": "class",
        "split": "test",
        "step": 7,
        "num_examples": 23,
        "evaluators": ["auc"],
        "settings": {
            "data.image_size": 32,
            "eval.checkpoint": "best",
            # Recorded by every evaluation since the sections' evaluators exist.
            "eval.calibration_bins": 15,
            "eval.operating_points": ["youden"],
            "eval.subgroup_age_bands": [40, 60, 80],
            "eval.num_failure_images": 4,
        },
        "dataset": {"name": "synthetic", "fingerprint": "sha256:abc", "image_size": 32},
    }


class _Page(HTMLParser):
    """Each section's text, and each table's cells (as text and ``data-sort``)."""

    def __init__(self, text: str):
        super().__init__()
        self.sections, self.tables, self.tags = {}, [], []
        self._section = self._cell = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if tag == "section":
            self._section = attrs["id"]
            self.sections[self._section] = ""
        elif tag == "table":
            self.tables.append({"section": self._section, "rows": []})
        elif tag == "tr":
            self.tables[-1]["rows"].append([])
        elif tag in ("td", "th"):
            self._cell = {"text": "", "sort": attrs.get("data-sort")}
            self.tables[-1]["rows"][-1].append(self._cell)

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self._cell = None

    def handle_data(self, data):
        if self._section:
            self.sections[self._section] += data
        if self._cell is not None:
            self._cell["text"] += data


def test_names_and_texts_are_escaped():
    bad = '<img src=x onerror="alert(1)">&'
    metrics = _minimal_metrics(("Effusion", bad))
    metrics["calibration"] = {
        "summary": "<script>alert(2)</script>",
        "tables": [{"title": bad, "headers": [bad, "n"], "rows": [[bad, 3]]}],
    }
    page = html_report.render(metrics)
    assert "<img src=x" not in page and "<script>alert" not in page
    parsed = _Page(page)
    # The name reads back as itself wherever it is shown.
    per_class = next(t for t in parsed.tables if t["section"] == "discrimination")
    assert [r[0]["text"] for r in per_class["rows"][1:3]] == ["Effusion", bad]
    calibration = next(t for t in parsed.tables if t["section"] == "calibration")
    assert calibration["rows"][0][0]["text"] == bad and calibration["rows"][1][0]["text"] == bad
    assert "<script>alert(2)</script>" in parsed.sections["calibration"]
    # No element but the page's own script; no image but data: URIs.
    assert [t for t, _ in parsed.tags].count("script") == 1
    with pytest.raises(ValueError, match="data:image URI"):
        html_report.render(
            metrics,
            gallery={
                "examples": [{"image": '");}</style><b>', "title": "", "findings": [], "tiles": []}]
            },
        )


def test_missing_sections_say_not_available_and_why():
    metrics = _minimal_metrics()
    sections = _Page(html_report.render(metrics)).sections
    for key in html_report.SECTIONS:
        assert "Not available:" in sections[key]
        assert f"no {key!r}" in sections[key] and "evaluators: auc" in sections[key]
    assert "the localization evaluator did not run" in sections["localization"]
    assert "Not available:" in sections["gallery"]
    # The ROC curves were not given; the table is there all the same.
    assert "roc_curves.png was not written" in sections["discrimination"]
    checklist = next(
        t for t in _Page(html_report.render(metrics)).tables if t["section"] == "checklist"
    )
    status = {r[1]["text"]: r[2]["text"] for r in checklist["rows"][1:]}
    assert status["Discrimination"].startswith("answered")
    assert all(s.startswith("not available") for k, s in status.items() if k != "Discrimination")
    # A section whose evaluator ran and could not compute says its own reason.
    metrics["subgroups"] = {"unavailable": "the split records no sex or age."}
    sections = _Page(html_report.render(metrics)).sections
    assert "Not available: the split records no sex or age." in sections["subgroups"]
    # An evaluation made before those evaluators existed (its settings lack theirs) says so.
    for key, setting in html_report.SECTION_SETTINGS.items():
        del metrics["settings"][setting]
        sections = _Page(html_report.render(metrics)).sections
        if key != "subgroups":
            assert html_report.BEFORE_EVALUATORS in sections[key]
    assert html_report.BEFORE_EVALUATORS not in sections["subgroups"]  # it says its own


def test_generic_sections_render_their_tables_and_answer_the_checklist():
    metrics = _minimal_metrics()
    rows = [
        ["Effusion", {"value": 0.0312, "ci": [0.0101, 0.0555]}, 12, None],
        ["Mass", "n/a", 7, 0.5],
    ]
    metrics["calibration"] = {
        "summary": "ECE.",
        "tables": [{"title": "ECE", "headers": ["class", "ECE", "n", "slope"], "rows": rows}],
        "checklist": {"12f": "recalibrated on the validation split"},
    }
    metrics["operating_points"] = {
        "tables": [],
        "summary": "Youden.",
        "thresholds": {"Effusion": 0.3},
        "threshold_rule": "Youden's J",
    }
    parsed = _Page(html_report.render(metrics))
    table = next(t for t in parsed.tables if t["section"] == "calibration")
    assert [c["text"] for c in table["rows"][0]] == ["class", "ECE", "n", "slope"]
    effusion, mass = table["rows"][1], table["rows"][2]
    assert effusion[1]["text"] == f"{0.0312:.3f} [{0.0101:.3f}, {0.0555:.3f}]"
    assert float(effusion[1]["sort"]) == 0.0312 and float(effusion[2]["sort"]) == 12
    assert mass[1]["sort"] == "" and mass[3]["text"] == f"{0.5:.3f}"
    checklist = next(t for t in parsed.tables if t["section"] == "checklist")
    status = {r[1]["text"]: r[2]["text"] for r in checklist["rows"][1:]}
    assert "recalibrated on the validation split" in status["Model updating (recalibration)"]
    assert status["Calibration"].startswith("answered in Calibration")
    assert status["How the thresholds were chosen"].startswith("answered in Operating points")
    # Clinical utility needs a section that names it: operating points alone do not.
    assert status["Clinical utility"].startswith("not available")
    got, how = html_report.thresholds(metrics, ["Effusion", "Mass"])
    assert got == {"Effusion": 0.3, "Mass": html_report.DEFAULT_THRESHOLD} and "Youden" in how
    assert "for Mass, which have none" in how
    # A class whose operating point could not be chosen (None) is read at the default.
    metrics["operating_points"]["thresholds"] = {"Effusion": None, "Mass": 0.7}
    got, _ = html_report.thresholds(metrics, ["Effusion", "Mass"])
    assert got == {"Effusion": html_report.DEFAULT_THRESHOLD, "Mass": 0.7}


def test_outcomes_match_a_brute_force_count():
    rng = np.random.default_rng(0)
    labels, probs = rng.integers(0, 2, 50), rng.random(50)
    got = [html_report.outcome(y, p, 0.4) for y, p in zip(labels, probs, strict=True)]
    expected = {
        "TP": sum(1 for y, p in zip(labels, probs, strict=True) if y == 1 and p >= 0.4),
        "FN": sum(1 for y, p in zip(labels, probs, strict=True) if y == 1 and p < 0.4),
        "FP": sum(1 for y, p in zip(labels, probs, strict=True) if y == 0 and p >= 0.4),
        "TN": sum(1 for y, p in zip(labels, probs, strict=True) if y == 0 and p < 0.4),
    }
    assert {o: got.count(o) for o in expected} == expected
    assert html_report.outcome(1, 0.9, 0.5, scored=False) == "unscored"


def _decode(uri: str) -> np.ndarray:
    import base64
    import io

    from PIL import Image

    assert uri.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))))


def test_gallery_layers_of_an_image_based_model():
    size, classes = 16, ["Effusion", "Mass"]
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (2, size, size)).astype(np.uint8)
    maps = rng.random((2, 4, 4)).astype(np.float32)  # one map per image
    labels = np.asarray([[1, 0], [0, 1]])
    mask = np.asarray([[1, 1], [1, 0]])
    probs = np.asarray([[0.7, 0.6], [0.2, 0.9]])
    truth = np.zeros((2, size, size), bool)
    truth[0, 3:9, 4:12] = True
    examples = html_report.gallery_examples(
        classes,
        [5, 9],
        images,
        maps,
        labels,
        mask,
        probs,
        {"Effusion": 0.5, "Mass": 0.65},
        [truth, None],
    )
    assert [ex["title"] for ex in examples] == ["test #5", "test #9"]
    assert [ex["findings"] for ex in examples] == [["Effusion"], []]  # Mass of #9 is unknown
    assert [[t["outcome"] for t in ex["tiles"]] for ex in examples] == [
        ["TP", "TN"],
        ["TN", "unscored"],
    ]
    assert np.array_equal(_decode(examples[0]["image"]), images[0])
    # The image's one map is every class's; drawn with the jet colours over 4 x 4 cells.
    first = examples[0]["tiles"]
    assert first[0]["map"] == first[1]["map"]
    layer = _decode(first[0]["map"])
    assert layer.shape[-1] == 4 and layer.shape[0] % 4 == 0 and (layer[..., 3] > 0).all()
    # The truth outline: the mask's pixels with a 4-neighbour outside it, and nothing else.
    edge = np.zeros((size, size), bool)
    for y in range(size):
        for x in range(size):
            if truth[0, y, x]:
                around = [(y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)]
                edge[y, x] = any(
                    not (0 <= a < size and 0 <= b < size and truth[0, a, b]) for a, b in around
                )
    assert np.array_equal(_decode(first[0]["truth"])[..., 3] > 0, edge)
    assert first[1]["truth"] is None and examples[1]["outline"] is None
    page = html_report.render(_minimal_metrics(classes), gallery={"note": "", "examples": examples})
    assert page.count('class="tile ') == 2 * 3  # the image and one tile per class, per example


def test_report_runs_after_every_other_evaluator_and_stands_alone():
    from conftest import tiny_config

    from chestattn_jax.evaluation import evaluators
    from chestattn_jax.validation import problems

    config = tiny_config()
    ctx = evaluators.Context(config, "", None, None, ("a",), ("a",))
    chosen = evaluators.create(["report_html", "tables", "figures", "auc"], ctx)
    assert [type(e).__module__.rsplit(".", 1)[1] for e in chosen][-1] == "report_html"
    config.eval.evaluators = ("report_html",)
    assert problems(config, "evaluate", num_devices=1) == []
    # Without the auc evaluator the page says so where the AUCs would be.
    metrics = {k: v for k, v in _minimal_metrics().items() if k not in ("auc", "mean_auc")}
    metrics["evaluators"] = ["report_html"]
    sections = _Page(html_report.render(metrics)).sections
    assert "Not available: no AUCs: the auc evaluator did not run" in sections["discrimination"]


# ------------------------------------------------------------------- in a real browser


@pytest.fixture(scope="module")
def report(tiny_run, tmp_path_factory):
    """The tiny run's evaluation folder (a copy) with its report.html, written by the
    report_html evaluator from the evaluation's record and metrics."""
    from chestattn_jax.data.input_pipeline import create_source
    from chestattn_jax.evaluation import evaluators
    from chestattn_jax.evaluation.inference_pass import Record

    config, workdir = tiny_run
    out = tmp_path_factory.mktemp("report") / "eval"
    shutil.copytree(workdir / "eval", out)
    metrics = json.loads((out / "metrics.json").read_text())
    record = Record.load(out / "predictions.npz")
    ctx = evaluators.Context(
        config=config,
        out_dir=str(out),
        source=create_source(config, config.eval.split),
        open_train_source=lambda: create_source(config, "train"),
        classes=record.classes,
        evaluated_as=record.evaluated_as,
    )
    [evaluator] = evaluators.create(["report_html"], ctx)
    evaluator.finish(record, metrics)
    return out, metrics, record


@pytest.fixture(scope="module")
def page(browser, report):
    """The browser on the report, its console messages of the load in ``page.log``."""
    out, _, _ = report
    browser.get((out / "report.html").as_uri())
    browser.load_log = browser.get_log("browser")
    return browser


def _interval_text(value, ci, digits):
    return f"{value:.{digits}f} [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


def test_page_loads_without_errors_and_every_image_decodes(page):
    assert [e for e in page.load_log if e["level"] == "SEVERE"] == []
    images = page.execute_script(
        "return Array.prototype.map.call(document.images, function (i) {"
        "  return [i.complete, i.naturalWidth, i.src.slice(0, 11)]; });"
    )
    assert images and all(done and width > 0 for done, width, _ in images)
    assert {src for *_, src in images} == {"data:image/"}  # nothing from the network
    # The gallery's images are CSS backgrounds too: each decodes.
    widths = page.execute_async_script(
        """
        var done = arguments[arguments.length - 1], urls = [];
        document.querySelectorAll('.example .stack').forEach(function (s) {
          var m = getComputedStyle(s).backgroundImage.match(/^url\\("(.*)"\\)$/);
          urls.push(m ? m[1] : '');
        });
        var widths = [], left = urls.length;
        urls.forEach(function (u, i) {
          var im = new Image();
          im.onload = im.onerror = function () {
            widths[i] = im.naturalWidth;
            if (!--left) done(widths);
          };
          im.src = u;
        });
        if (!urls.length) done([]);
        """
    )
    assert widths and all(w > 0 for w in widths)


def test_tables_show_the_numbers_of_metrics_json(page, report):
    _, metrics, _ = report
    rows = {r[0][0]: r for r in table_rows(page, "discrimination", "Per class")}
    loc, boot = metrics["localization"], metrics["bootstrap"]
    model_ci = loc["bootstrap"]["rates"]["model"]["pixel_hit"]["classes"]
    assert set(rows) == set(metrics["auc"])
    for c, auc in metrics["auc"].items():
        cells = rows[c]
        assert float(cells[1][1]) == auc
        assert cells[1][0] == _interval_text(auc, boot["classes"][c]["ci"], 3)
        assert cells[2][0] == str(metrics["positives"][c])
        assert cells[3][0] == str(metrics["negatives"][c])
        hit = loc["pointing_game_pixel"]["hit_rate"][c]
        assert float(cells[4][1]) == hit
        assert cells[4][0] == _interval_text(hit, model_ci[c]["ci"], 2)
    prior = loc["baselines"]["class_prior"]["pointing_game_pixel"]["hit_rate"]
    diff = loc["bootstrap"]["differences"]["model - class_prior"]["pixel_hit"]["classes"]
    for cells in table_rows(page, "localization", "Pixel hit rate per class"):
        c = cells[0][0]
        assert float(cells[1][1]) == loc["pointing_game_pixel"]["count"][c]
        assert float(cells[3][1]) == prior[c]
        assert float(cells[5][1]) == diff[c]["difference"]


def test_sorting_by_a_column(page, report):
    from selenium.webdriver.common.by import By

    _, metrics, _ = report
    header = page.find_element(
        By.XPATH, "//section[@id='discrimination']//table/thead//th[2]//button"
    )
    aucs = metrics["auc"]

    def shown():
        return [r[0][0] for r in table_rows(page, "discrimination", "Per class")]

    header.click()
    assert sorted(shown()) == sorted(aucs)
    assert [aucs[c] for c in shown()] == sorted(aucs.values())
    header.click()
    assert [aucs[c] for c in shown()] == sorted(aucs.values(), reverse=True)
    by_name = "//section[@id='discrimination']//table/thead//th[1]//button"
    page.find_element(By.XPATH, by_name).click()
    assert shown() == sorted(aucs, key=str.lower)
    # The mean row stays below the classes.
    assert page.find_element(By.CSS_SELECTOR, "#discrimination tfoot td").text == "mean"


def test_gallery_filter(page, report):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    out, _, record = report
    examples = np.load(out / "attention_examples.npz")
    index = examples["index"]
    classes = list(record.classes)
    labels, probs = record.labels[index], record.probs[index]
    # Each (image, class) outcome at the class's validation-chosen threshold
    # (thresholds.json), 0.5 where it has none, counted here from the record.
    chosen = json.loads((out / "thresholds.json").read_text())["thresholds"]
    expected = {}
    for r in range(len(index)):
        for j, c in enumerate(classes):
            t = 0.5 if chosen[c] is None else chosen[c]
            kind = ("T" if (probs[r, j] >= t) == bool(labels[r, j]) else "F") + (
                "P" if probs[r, j] >= t else "N"
            )
            expected.setdefault(kind, []).append((r, c))
    assert page.find_element(By.CSS_SELECTOR, ".filters").is_displayed()

    def shown():
        return page.execute_script(
            "return Array.prototype.filter.call(document.querySelectorAll('.tile[data-class]'),"
            " function (t) { return t.offsetParent !== null; }).map(function (t) {"
            "  return [t.getAttribute('data-class'), t.getAttribute('data-outcome')]; });"
        )

    by_class, by_outcome = (
        Select(page.find_element(By.ID, f"filter-{n}")) for n in ("class", "outcome")
    )
    by_class.select_by_value(classes[1])
    assert [c for c, _ in shown()] == [classes[1]] * len(index)
    by_class.select_by_value("")
    for kind, pairs in expected.items():
        by_outcome.select_by_value(kind)
        assert sorted(map(tuple, shown())) == sorted((c, kind) for _, c in pairs)
        examples_shown = page.execute_script(
            "return Array.prototype.filter.call(document.querySelectorAll('.example'),"
            " function (e) { return !e.hidden; }).length;"
        )
        assert examples_shown == len({r for r, _ in pairs})
    by_outcome.select_by_value("")
    assert len(shown()) == len(index) * len(classes)


def test_without_javascript_everything_but_sorting_and_filtering_shows(page, report):
    from selenium.webdriver.common.by import By

    out, metrics, _ = report
    page.execute_cdp_cmd("Emulation.setScriptExecutionDisabled", {"value": True})
    try:
        page.get((out / "report.html").as_uri())
        assert "js" not in (page.find_element(By.TAG_NAME, "html").get_attribute("class") or "")
        assert not page.find_element(By.CSS_SELECTOR, ".filters").is_displayed()
        tiles = page.find_elements(By.CSS_SELECTOR, ".tile[data-class]")
        assert tiles and all(t.is_displayed() for t in tiles)
        rows = table_rows(page, "discrimination", "Per class")
        assert [r[0][0] for r in rows] == list(metrics["auc"])
        sizes = [i.get_property("naturalWidth") for i in page.find_elements(By.TAG_NAME, "img")]
        assert sizes and all(s > 0 for s in sizes)
    finally:
        page.execute_cdp_cmd("Emulation.setScriptExecutionDisabled", {"value": False})

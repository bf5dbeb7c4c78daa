"""report.html of ``compare`` and of the experiment report, in headless Chromium: the
page loads with no console error, every image decodes, the tables show the numbers of
the JSON the command wrote (and compare's AUCs those of sklearn on the records), every
column sorts, and without JavaScript everything but sorting shows. Compare's page reads
an evaluation from before the calibration, operating-points, subgroups and failure
evaluators (made here by deleting what they wrote) and says so."""

from __future__ import annotations

import json
import shutil
from html.parser import HTMLParser

import numpy as np
import pytest
from conftest import hand_finished, hand_report_config, table_rows
from sklearn.metrics import roc_auc_score

from chestattn_jax.reporting import html_report

# What an evaluation from before the new evaluators lacks: its sections and their files.
NEW_SECTIONS = ("calibration", "operating_points", "subgroups", "failures")
NEW_FILES = ("thresholds.json", "reliability.png", "failures.png", "report.html")


def make_old(eval_dir):
    """``eval_dir`` as an evaluation from before the new evaluators left it: no sections,
    files, evaluator names or settings of theirs; returns its metrics."""
    path = eval_dir / "metrics.json"
    metrics = json.loads(path.read_text())
    for key in NEW_SECTIONS:
        del metrics[key]
    for name in NEW_FILES:
        (eval_dir / name).unlink(missing_ok=True)
    metrics["evaluators"] = [
        e for e in metrics["evaluators"] if e not in (*NEW_SECTIONS, "report_html")
    ]
    for setting in html_report.SECTION_SETTINGS.values():
        metrics["settings"].pop(setting)
    metrics["files"] = [f for f in metrics["files"] if f not in NEW_FILES]
    path.write_text(json.dumps(metrics))
    return metrics


@pytest.fixture(scope="module")
def compared(tiny_run, tmp_path_factory):
    """``compare`` of the tiny run against a copy evaluated "before the new evaluators"
    (:func:`make_old`) whose probabilities are perturbed (a second model, so that the
    differences are not all zero); returns the output folder, comparison.json, the two
    workdirs and the copy's metrics."""
    from chestattn_jax.compare import compare
    from chestattn_jax.evaluation.inference_pass import Record

    _, workdir = tiny_run
    root = tmp_path_factory.mktemp("compare")
    old = root / "old"
    shutil.copytree(workdir, old)
    old_metrics = make_old(old / "eval")
    record = Record.load(old / "eval" / "predictions.npz")
    rng = np.random.default_rng(0)
    record.probs = np.clip(record.probs + rng.normal(0, 0.15, record.probs.shape), 0, 1)
    record.save(old / "eval" / "predictions.npz")
    out = root / "out"
    compare([str(workdir), str(old)], str(out), num_draws=50, seed=3)
    comparison = json.loads((out / "comparison.json").read_text())
    return out, comparison, [workdir, old], old_metrics


def _load(browser, path):
    browser.get(path.as_uri())
    return browser.get_log("browser")


def _images_decode(browser) -> list:
    images = browser.execute_script(
        "return Array.prototype.map.call(document.images, function (i) {"
        "  return [i.complete, i.naturalWidth, i.src.slice(0, 11)]; });"
    )
    assert all(done and width > 0 for done, width, _ in images)
    assert {src for *_, src in images} <= {"data:image/"}  # nothing from the network
    return images


def _interval(value, ci, digits=3) -> str:
    return f"{value:.{digits}f} [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


def _signed(value, ci) -> str:
    def s(v):
        v = round(v, 3) + 0.0
        return f"{v:+.3f}" if v else "0.000"

    return f"{s(value)} [{s(ci[0])}, {s(ci[1])}]"


# ------------------------------------------------------------------------- compare's page


def test_compare_page_loads_and_every_image_decodes(browser, compared):
    out, comparison, _, _ = compared
    log = _load(browser, out / "report.html")
    assert [e for e in log if e["level"] == "SEVERE"] == []
    images = _images_decode(browser)
    assert comparison["figures"] == ["fig3_average_masks.png"]  # two class models: no Fig. 2
    assert len(images) == 1
    text = browser.find_element("id", "figures").text
    assert "needs one image-based and one class-based workdir" in text


def test_compare_tables_show_the_numbers_of_comparison_json(browser, compared):
    from chestattn_jax.evaluation.inference_pass import Record

    out, comparison, workdirs, _ = compared
    _load(browser, out / "report.html")
    names, classes = comparison["names"], comparison["classes"]
    assert names == ["w", "old"]
    records = [Record.load(w / "eval" / "predictions.npz") for w in workdirs]
    rows = {r[0][0]: r for r in table_rows(browser, "per_class", "AUC per class")}
    assert list(rows) == classes
    for j, c in enumerate(classes):
        cells = rows[c]
        keep = records[0].mask[:, j] > 0
        labels = records[0].labels[keep, j]
        assert int(cells[1][0]) == comparison["positives"][c] == int(labels.sum())
        assert int(cells[2][0]) == comparison["negatives"][c] == int((labels == 0).sum())
        for m, (name, record) in enumerate(zip(names, records, strict=True)):
            auc = comparison["auc"][name]["classes"][c]
            assert auc["auc"] == pytest.approx(roc_auc_score(labels, record.probs[keep, j]))
            assert float(cells[3 + m][1]) == auc["auc"]
            assert cells[3 + m][0] == _interval(auc["auc"], auc["ci"])
    differences = table_rows(browser, "per_class", "Paired differences of the AUC against w")
    for cells, c in zip(differences, classes, strict=True):
        d = comparison["difference"]["old"]["classes"][c]
        assert cells[0][0] == c and float(cells[1][1]) == d["difference"]
        assert cells[1][0] == _signed(d["difference"], d["ci"])
    means = browser.execute_script(
        "return Array.prototype.map.call(document.querySelectorAll('#per_class tfoot tr'),"
        " function (r) { return Array.prototype.map.call(r.cells, function (c) {"
        " return c.getAttribute('data-sort'); }); });"
    )
    assert float(means[0][3]) == comparison["auc"]["w"]["mean_auc"]
    assert float(means[1][1]) == comparison["difference"]["old"]["mean"]["difference"]
    models = {r[0][0]: r for r in table_rows(browser, "models", "Mean AUC")}
    diff = comparison["difference"]["old"]
    assert float(models["old"][3][1]) == diff["mean"]["difference"]
    assert float(models["old"][4][1]) == diff["mean"]["p_not_better"]
    better = sum(1 for c in classes if diff["classes"][c]["ci"][0] > 0)
    worse = sum(1 for c in classes if diff["classes"][c]["ci"][1] < 0)
    assert (models["old"][5][0], models["old"][6][0]) == (str(better), str(worse))
    assert models["w"][3][0] == "reference"
    # What was compared: the data set, its fingerprint, the workdirs.
    metrics = json.loads((workdirs[0] / "eval" / "metrics.json").read_text())
    text = browser.find_element("id", "compared").text
    assert metrics["dataset"]["fingerprint"] in text and "test" in text
    assert comparison["dataset"]["fingerprint"] == metrics["dataset"]["fingerprint"]
    assert all(str(w) in text for w in workdirs)


def test_every_column_of_the_per_class_table_sorts(browser, compared):
    from selenium.webdriver.common.by import By

    out, _, _, _ = compared
    _load(browser, out / "report.html")
    heads = browser.find_elements(
        By.XPATH, "//table[starts-with(caption, 'AUC per class')]/thead//th//button"
    )
    assert len(heads) == 5  # class, positives, negatives and the two models

    def column(j):
        return [r[j] for r in table_rows(browser, "per_class", "AUC per class")]

    for j, head in enumerate(heads):
        head.click()
        up = column(j)
        head.click()
        down = column(j)
        if j == 0:
            assert [t for t, _ in up] == sorted((t for t, _ in up), key=str.lower)
            assert [t for t, _ in down] == [t for t, _ in up][::-1]
            continue
        keys = [float(k) for _, k in up if k]
        assert keys == sorted(keys) and len(keys) == len(up)
        assert [float(k) for _, k in down] == sorted(keys, reverse=True)


def test_an_evaluation_from_before_the_new_evaluators_says_so(browser, compared):
    from selenium.webdriver.common.by import By

    out, comparison, workdirs, old_metrics = compared
    before = html_report.BEFORE_EVALUATORS
    absent = comparison["evaluations"]["old"]["absent"]
    assert set(absent) == {*NEW_SECTIONS, "thresholds.json", "report.html"}
    assert all(before in why for why in absent.values())
    assert comparison["evaluations"]["w"]["absent"] == {}
    _load(browser, out / "report.html")
    rows = {r[0][0]: r for r in table_rows(browser, "evaluations", "What each evaluation")}
    assert all(cell[0] == "not available [1]" for cell in rows["old"][1:])
    assert all(cell[0] == "present" for cell in rows["w"][1:])
    assert browser.find_element(By.ID, "why-1").text == f"{before}."
    # The new evaluation's page is linked, the old one's says why it has none.
    link = browser.find_element(By.CSS_SELECTOR, "#compared a[href$='report.html']")
    assert link.get_attribute("href") == (workdirs[0] / "eval" / "report.html").as_uri()
    assert before in browser.find_element(By.ID, "compared").text
    # Its own page, rendered from its metrics, says the same of each section.
    page = html_report.render(old_metrics)
    sections = _Sections(page).sections
    for key in NEW_SECTIONS:
        assert (
            f"Not available: this evaluation's metrics hold no {key!r}: {before}."
            in (sections[key])
        )


class _Sections(HTMLParser):
    """Each ``<section>``'s text."""

    def __init__(self, text: str):
        super().__init__()
        self.sections, self._id = {}, None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        if tag == "section":
            self._id = dict(attrs)["id"]
            self.sections[self._id] = ""

    def handle_data(self, data):
        if self._id:
            self.sections[self._id] += data


def _without_script(browser, path, check):
    from selenium.webdriver.common.by import By

    browser.execute_cdp_cmd("Emulation.setScriptExecutionDisabled", {"value": True})
    try:
        browser.get(path.as_uri())
        assert "js" not in (browser.find_element(By.TAG_NAME, "html").get_attribute("class") or "")
        assert browser.find_elements(By.CSS_SELECTOR, "th button") == []  # sorting needs it
        sizes = [i.get_property("naturalWidth") for i in browser.find_elements(By.TAG_NAME, "img")]
        assert sizes and all(s > 0 for s in sizes)
        check()
    finally:
        browser.execute_cdp_cmd("Emulation.setScriptExecutionDisabled", {"value": False})


def test_compare_page_without_javascript(browser, compared):
    out, comparison, _, _ = compared

    def check():
        rows = table_rows(browser, "per_class", "AUC per class")
        assert [r[0][0] for r in rows] == comparison["classes"]
        assert browser.find_element("id", "evaluations").is_displayed()

    _without_script(browser, out / "report.html", check)


# ---------------------------------------------------------------- the experiment report


@pytest.fixture(scope="module")
def experiment_report(tmp_path_factory):
    """The experiment report (two training seeds) over cells finished by hand."""
    from chestattn_jax import experiment

    root = tmp_path_factory.mktemp("experiment") / "root"
    config = hand_report_config()
    hand_finished(str(root), config)
    out = experiment.report(config, str(root), num_draws=20, seed=5)
    return root / "report", out


def test_experiment_page_loads_and_shows_the_numbers_of_report_json(browser, experiment_report):
    report_dir, out = experiment_report
    log = _load(browser, report_dir / "report.html")
    assert [e for e in log if e["level"] == "SEVERE"] == []
    assert len(_images_decode(browser)) == 1  # the forest plot
    assert json.loads((report_dir / "report.json").read_text())["classes"] == out["classes"]
    fm = out["combined"]["fold_mean"]
    variants, classes = out["variants"], out["classes"]
    rows = {r[0][0]: r for r in table_rows(browser, "headline", "Mean of the per-fold test AUCs [")}
    assert list(rows) == classes
    for c in classes:
        for j, v in enumerate(variants):
            auc = fm["aucs"][v]["classes"][c]
            assert float(rows[c][1 + j][1]) == auc["auc"]
            assert rows[c][1 + j][0] == _interval(auc["auc"], auc["ci"])
    pairs = list(fm["differences"])
    caption = "Mean of the per-fold test AUCs: paired differences"
    for row, c in zip(table_rows(browser, "headline", caption), classes, strict=True):
        for j, pair in enumerate(pairs):
            d = fm["differences"][pair]["classes"][c]
            assert float(row[1 + j][1]) == d["difference"]
            assert row[1 + len(pairs) + j][0] == f"{d['folds_positive']}/{d['folds_defined']}"
    # Each seed's tables, and the localisation with each source's hit rate.
    for s, r in out["seeds"].items():
        pooled = table_rows(browser, "seeds", f"Seed {s}: pooled out-of-fold test AUC [")
        got = [float(row[3][1]) for row in pooled]
        assert got == [r["pooled"]["aucs"]["class"]["classes"][c]["auc"] for c in classes]
    loc = out["combined"]["localization"]
    rates = table_rows(browser, "localization", "Pixel pointing game (the headline)")
    heads = browser.execute_script(
        "return Array.prototype.map.call("
        "document.querySelector('#localization thead tr').cells, function (c) {"
        " return c.textContent.trim(); });"
    )
    sources = [h.replace(" ", "_") for h in heads[2:-1]]
    assert sorted(sources) == sorted(loc["rates"])
    for row, c in zip(rates, classes, strict=True):
        assert int(row[1][0]) == loc["rates"]["class"]["pixel_hit"]["classes"][c]["count"]
        for j, source in enumerate(sources):
            assert float(row[2 + j][1]) == loc["rates"][source]["pixel_hit"]["classes"][c]["rate"]


def test_experiment_page_sorts_and_reads_without_javascript(browser, experiment_report):
    from selenium.webdriver.common.by import By

    report_dir, out = experiment_report
    _load(browser, report_dir / "report.html")
    aucs = out["combined"]["fold_mean"]["aucs"]["class"]["classes"]
    head = browser.find_element(By.XPATH, "//section[@id='headline']//table//th[4]//button")
    head.click()
    shown = [r[0][0] for r in table_rows(browser, "headline", "Mean of the per-fold test AUCs [")]
    assert [aucs[c]["auc"] for c in shown] == sorted(a["auc"] for a in aucs.values())

    def check():
        shown = table_rows(browser, "headline", "Mean of the per-fold test AUCs [")
        assert [r[0][0] for r in shown] == out["classes"]
        assert browser.find_elements(By.CSS_SELECTOR, "#mismatches") == []

    _without_script(browser, report_dir / "report.html", check)


def test_experiment_page_lists_the_cells_reported_with_allow_mismatch(browser, tmp_path):
    from chestattn_jax import experiment

    config = hand_report_config(seeds=(0,))
    root = tmp_path / "root"
    hand_finished(str(root), config)
    cell = experiment.cells(config)[6]
    other = json.dumps({"fingerprint": "sha256:" + "2" * 64})
    (experiment.cell_workdir(str(root), cell) / "dataset.json").write_text(other)
    out = experiment.report(config, str(root), num_draws=5, allow_mismatch=True)
    assert out["mismatches"] and cell.name in out["mismatches"][0]
    _load(browser, root / "report" / "report.html")
    items = browser.execute_script(
        "return Array.prototype.map.call(document.querySelectorAll('#mismatches li'),"
        " function (li) { return li.textContent; });"
    )
    assert items == out["mismatches"]
    header = browser.execute_script("return document.querySelector('header').textContent;")
    assert "Reported with --allow_mismatch" in header

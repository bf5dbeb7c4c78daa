"""The registry of data sets is the one place that knows them: a data set registered there
(here a fake fourth one) is validated with its classes and views, read and fingerprinted
through it, and nothing outside the data sets' own modules names a data set."""

import re
from pathlib import Path

import pytest

from chestattn_jax.config import get_base_config
from chestattn_jax.data import (
    chexpert,
    mimic_cxr,
    nih,
    padchest,
    records,
    siim_pneumothorax,
    sources,
    synthetic,
)
from chestattn_jax.data.input_pipeline import create_source, dataset_fingerprint
from chestattn_jax.data.source import DataSource, Prepared, PrepareOption, prepared_source
from chestattn_jax.validation import problems

# The data sets beyond the paper's, in the registry's order.
OTHER_DATA_SETS = (siim_pneumothorax, mimic_cxr, padchest)

PACKAGE = Path(__file__).resolve().parent.parent / "chestattn_jax"


def test_the_registry_holds_each_data_set_module_once():
    # Each module's SOURCE once, under its own name, the paper's data sets first.
    modules = (synthetic, nih, chexpert, *OTHER_DATA_SETS)
    assert sources.SOURCES == {m.SOURCE.name: m.SOURCE for m in modules}
    assert sources.prepared_names() == tuple(m.SOURCE.name for m in modules[1:])
    with pytest.raises(ValueError, match=r"Unknown dataset 'x' \(config.data.name\); expected "):
        sources.get("x", "config.data.name")
    with pytest.raises(ValueError, match="Unknown dataset 'synthetic'; expected one of nih, ch"):
        records.version_dir("synthetic", "/d", 32)
    # Each prepared data set's folder is its TFDS builder name, as it always was.
    assert records.version_dir("nih", "/d", 32) == f"/d/nih_chest_xray14/32px/{records.VERSION}"
    assert records.version_dir("chexpert", "/d", 32) == f"/d/chexpert/32px/{records.VERSION}"


def _config(name: str, **data):
    config = get_base_config()
    config.data.name = name
    for k, v in data.items():
        config.data[k] = v
    return config


@pytest.fixture
def toy(monkeypatch):
    """A fourth data set, registered as a new module would register it."""
    calls = []

    def open_split(config, split):
        calls.append(("open_split", config.data.name, split))
        return ["an example"]

    def fingerprint(config):
        calls.append(("fingerprint", config.data.name))
        return {"name": config.data.name, "fingerprint": "sha256:toy"}

    source = DataSource(
        name="toy",
        classes=("Aa", "Bb"),
        open_split=open_split,
        fingerprint=fingerprint,
        select_fold=lambda data, fold, num_folds: None,
        views=("PA",),
    )
    monkeypatch.setitem(sources.SOURCES, "toy", source)
    return calls


def test_a_registered_data_set_is_validated_read_and_fingerprinted_through_the_registry(toy):
    assert problems(_config("toy", classes=("Bb",)), "train", num_devices=1) == []
    assert problems(_config("toy", classes=("Bb", "Cc")), "train", num_devices=1) == [
        "config.data.classes=('Bb', 'Cc'): the toy data set has no class 'Cc'; its classes "
        "are Aa, Bb."
    ]
    assert problems(_config("toy", classes=("Aa",), views=("AP",)), "train", num_devices=1) == [
        "config.data.views=('AP',): toy has no view 'AP'; its views are PA (() keeps every view)."
    ]
    # The phantoms' own settings are another data set's: ignored on this one.
    config = _config("toy", classes=("Aa",))
    config.data.synthetic.seed = 3
    assert problems(config, "train", num_devices=1) == [
        "config.data.synthetic.seed=3: is read for config.data.name='synthetic' only, not "
        "'toy'; leave it at its default 0."
    ]
    assert create_source(_config("toy"), "test") == ["an example"]
    assert dataset_fingerprint(_config("toy"))["fingerprint"] == "sha256:toy"
    assert toy == [("open_split", "toy", "test"), ("fingerprint", "toy")]


def test_a_registered_prepared_data_set_gets_the_prepared_rules_folder_and_options(monkeypatch):
    source = prepared_source(
        "toy",
        ("Aa", "Bb"),
        Prepared(
            builder_name="toy_records",
            read_raw=lambda raw_dir, *, keep=("x",): [],
            options=(PrepareOption("keep", ("x",), "What to keep."),),
        ),
    )
    monkeypatch.setitem(sources.SOURCES, "toy", source)
    assert sources.prepared_names()[-1] == "toy"
    assert records.version_dir("toy", "/d", 32) == f"/d/toy_records/32px/{records.VERSION}"
    from chestattn_jax.data import prepare

    assert prepare.prepare_options("toy", {}) == {"keep": ("x",)}
    with pytest.raises(TypeError, match="--dataset=toy takes no option nih_views; its options"):
        prepare.prepare_options("toy", {"nih_views": ("PA",)})
    # A prepared data set needs its folder; without uncertain labels, their policy is ignored.
    found = problems(_config("toy", classes=("Aa",), uncertainty="ones"), "train", num_devices=1)
    assert found == [
        "config.data.data_dir=None: not set: config.data.name='toy' reads a prepared data set; "
        "give its folder with --config.data.data_dir=DIR (made by python -m "
        "chestattn_jax.data.prepare --dataset=toy ...).",
        "config.data.uncertainty='ones': has no effect on toy, whose labels are never "
        "uncertain; leave it at its default 'zeros'.",
    ]
    # A cross-dataset evaluation may score on it.
    config = _config("toy", classes=("Aa",), data_dir="/p")
    config.eval.dataset, config.eval.data_dir = "toy", "/q"
    assert problems(config, "evaluate", num_devices=1) == []


def test_select_fold_gives_the_phantoms_other_seeds_and_prepared_data_sets_kfold():
    """What an experiment cell's fold is on each data set."""
    config = get_base_config()
    config.data.synthetic.seed = 10
    synthetic.SOURCE.select_fold(config.data, 2, 5)
    assert config.data.synthetic.seed == 12
    base = get_base_config().data
    assert (config.data.split, config.data.fold) == (base.split, base.fold)
    for name in sources.prepared_names():
        config = get_base_config()
        sources.get(name).select_fold(config.data, 3, 4)
        assert (config.data.split, config.data.num_folds, config.data.fold) == ("kfold", 4, 3)
        assert config.data.synthetic.seed == get_base_config().data.synthetic.seed


def _defining_modules() -> set[str]:
    """The module that defines each registered data set: the only ones that may name one."""
    defined = {"data/synthetic.py"}
    for name in sources.prepared_names():
        module = sources.get(name).prepared.read_raw.__module__
        defined.add(module.removeprefix("chestattn_jax.").replace(".", "/") + ".py")
    return defined


def test_no_module_branches_on_a_data_set_name():
    names = "|".join(map(re.escape, sources.names()))
    name = re.compile(rf"""(==|!=|\bin)\s*\(?\s*["']({names})["']""")
    allowed = _defining_modules()
    assert {"data/nih.py", "data/chexpert.py", "data/padchest.py"} <= allowed
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative in allowed:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if name.search(line):
                found.append(f"{relative}:{number}: {line.strip()}")
    assert found == []

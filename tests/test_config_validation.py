"""validation.validate: every value a user can set is checked before a run starts, each
problem named by field, value and what is allowed, all of them at once."""

import ml_collections
import pytest
from conftest import REPO, load_config, set_fields, tiny_config

from chestattn_jax import config as config_lib
from chestattn_jax import validation
from chestattn_jax.validation import ConfigError, problems, validate


def configured(name="synthetic", arg=None, **changes):
    """A config file's config with dotted fields changed: ``**{"train.batch_size": 0}``."""
    config = load_config(name, arg)
    if name != "synthetic":
        config.data.data_dir = "/prepared"  # the prepared folder is not read by validate
    # Not type-safe, as a config file may build it: a field may change type here.
    config = ml_collections.ConfigDict(config.to_dict(), type_safe=False)
    return set_fields(config, changes)


# Every config file the repository ships (one per data set, and the smoke test's).
SHIPPED = sorted(p.stem for p in (REPO / "configs").glob("*.py"))


@pytest.mark.parametrize("name", SHIPPED)
@pytest.mark.parametrize("arg", ["resnet", "image", "class"])
@pytest.mark.parametrize("mode", validation.MODES)
def test_the_shipped_configs_are_valid(name, arg, mode):
    assert problems(configured(name, arg), mode, num_devices=1) == []


def test_the_test_config_is_valid():
    validate(tiny_config("class"), "train", num_devices=1)


# (changes, mode, the problem reported). Each problem names the field and its value.
BAD = [
    # Ranges.
    ({"train.batch_size": 0}, "train", "config.train.batch_size=0: must be at least 1"),
    ({"eval.batch_size": -8}, "evaluate", "config.eval.batch_size=-8: must be at least 1"),
    ({"train.log_every_steps": 0}, "train", "config.train.log_every_steps=0: must be at least 1"),
    ({"train.eval_every_steps": 0}, "train", "config.train.eval_every_steps=0: must be at least"),
    ({"train.num_steps": 0}, "train", "config.train.num_steps=0: must be at least 1 to train"),
    ({"train.learning_rate": 0.0}, "train", "config.train.learning_rate=0.0: must be greater"),
    ({"train.learning_rate": float("nan")}, "train", "learning_rate=nan: must be a finite"),
    ({"train.warmup_steps": 100, "train.num_steps": 100}, "train", "warmup_steps=100: must be"),
    ({"train.warmup_steps": -1}, "train", "config.train.warmup_steps=-1: must be at least 0"),
    ({"train.patience": -1}, "train", "config.train.patience=-1: must be at least 0"),
    ({"train.checkpoints_to_keep": 0}, "train", "checkpoints_to_keep=0: must be at least 1"),
    ({"train.weight_decay": -0.1, "train.optimizer": "adamw"}, "train", "weight_decay=-0.1"),
    ({"data.image_size": 16}, "train", "config.data.image_size=16: must be at least 32"),
    ({"data.channels": 3}, "train", "config.data.channels=3: must be 1"),
    ({"data.std": 0.0}, "train", "config.data.std=0.0: must be greater than 0"),
    ({"data.num_workers": -1}, "train", "config.data.num_workers=-1: must be at least 0"),
    ({"data.read_threads": -2}, "train", "config.data.read_threads=-2"),
    ({"data.augment.shift": 1.5, "data.augment.enabled": True}, "train", "shift=1.5"),
    ({"data.synthetic.train_size": 0}, "train", "config.data.synthetic.train_size=0"),
    ({"data.synthetic.prevalence_scale": 0.0}, "train", "prevalence_scale=0.0"),
    ({"data.synthetic.location_variability": 1.5}, "train", "variability=1.5: must be between"),
    ({"model.stage_sizes": (1, 1)}, "train", "config.model.stage_sizes=(1, 1): must be four"),
    ({"model.num_filters": 0}, "train", "config.model.num_filters=0: must be at least 1"),
    ({"loss.entropy_weight": -1.0}, "train", "config.loss.entropy_weight=-1.0"),
    ({"eval.bootstrap_draws": -1}, "evaluate", "config.eval.bootstrap_draws=-1"),
    ({"eval.map_threshold": 0.0}, "evaluate", "config.eval.map_threshold=0.0: must be between"),
    ({"eval.map_threshold": 1.0}, "evaluate", "config.eval.map_threshold=1.0: must be between"),
    ({"eval.num_figure_images": -1}, "evaluate", "config.eval.num_figure_images=-1"),
    ({"eval.output_name": "../elsewhere"}, "evaluate", "config.eval.output_name='../elsewhere'"),
    ({"eval.output_name": "checkpoints"}, "evaluate", "output_name='checkpoints': must be one"),
    ({"seed": -1}, "train", "config.seed=-1: must be an integer from 0"),
    ({"eval.bootstrap_seed": 2**40}, "evaluate", "config.eval.bootstrap_seed=1099511627776"),
    ({"train.batch_size": True}, "train", "config.train.batch_size=True: must be an integer"),
    ({"model.skip_unused_stage4": 1}, "train", "skip_unused_stage4=1: must be true or false"),
    ({"model.gate_stages": (3, 4)}, "train", "gate_stages=(3, 4): must be three increasing"),
    ({"model.gate_stages": (1, 1, 2)}, "train", "gate_stages=(1, 1, 2): must be three"),
    ({"model.gate_stages": "2,3,4"}, "train", "gate_stages='2,3,4': must be a tuple"),
    ({"model.pretrained": "/nonexistent/r50.safetensors"}, "train", "r50.safetensors': no such"),
    ({"model.pretrained": "weights.npz"}, "train", "must be a file ending in .safetensors"),
    # Choices.
    ({"model.variant": "klass"}, "train", "config.model.variant='klass': expected one of resnet"),
    ({"model.compatibility": "cosine"}, "train", "compatibility='cosine': expected one of pc"),
    ({"model.attention_norm": "tanh"}, "train", "attention_norm='tanh': expected one of softmax"),
    ({"model.dtype": "float64"}, "train", "config.model.dtype='float64': expected one of"),
    ({"loss.class_weights": "balanced"}, "train", "class_weights='balanced': expected one of"),
    ({"train.optimizer": "lamb"}, "train", "config.train.optimizer='lamb': expected one of adam"),
    ({"train.schedule": "linear"}, "train", "config.train.schedule='linear': expected one of"),
    ({"data.name": "mimic"}, "train", "config.data.name='mimic': expected one of synthetic"),
    ({"data.augment.interpolation": "cubic"}, "train", "interpolation='cubic': expected one"),
    ({"eval.checkpoint": "last"}, "evaluate", "eval.checkpoint='last': expected one of best"),
    ({"eval.split": "val"}, "evaluate", "eval.split='val': expected one of train, validation"),
    ({"eval.evaluators": ("auc", "roc")}, "evaluate", "no evaluator 'roc'; expected names from"),
    ({"eval.evaluators": "auc,tables"}, "evaluate", "must be a tuple of evaluator names"),
    ({"eval.evaluators": ("auc", "auc")}, "evaluate", "names an evaluator more than once"),
    ({"eval.evaluators": ("tables",)}, "evaluate", "tables tabulates the AUCs: add auc"),
    # Issue 21 case 7: an empty list wrote a metrics.json without an AUC and exited 0.
    ({"eval.evaluators": ()}, "evaluate", "config.eval.evaluators=(): is empty: an evaluation"),
    ({"eval.evaluators": ()}, "train", "config.eval.evaluators=(): is empty"),
    ({"eval.dataset": "mimic"}, "evaluate", "config.eval.dataset='mimic': expected one of , nih"),
    ({"eval.class_map": "Mass=Lung Lesion"}, "evaluate", "is read only in a cross-dataset"),
    # Classes.
    ({"data.classes": ()}, "train", "config.data.classes=(): must be a non-empty tuple"),
    ({"data.classes": ("Mass", "Mass")}, "train", "names 'Mass' more than once"),
    ({"data.classes": ("Mass", "Tumour")}, "train", "the synthetic data set has no class 'Tumour'"),
    ({"data.classes": ("Mass,Nodule",)}, "train", "not Mass,Nodule"),
    # What synthetic data would silently ignore.
    ({"data.split": "foo"}, "train", "config.data.split='foo': expected one of random, kfold"),
    ({"data.split": "kfold"}, "train", "config.data.split='kfold': is ignored on synthetic data"),
    ({"data.fold": 1}, "train", "config.data.fold=1: is ignored on synthetic data"),
    ({"data.views": ("PA",)}, "train", "config.data.views=('PA',): is ignored on synthetic"),
    ({"data.uncertainty": "ones"}, "train", "uncertainty='ones': is ignored on synthetic data"),
    ({"data.data_dir": "/data"}, "train", "config.data.data_dir='/data': is ignored on synth"),
    ({"data.split_fractions": (0.8, 0.1, 0.1)}, "train", "split_fractions=(0.8, 0.1, 0.1): is"),
    # ... and what other switches would.
    ({"data.augment.rotation_deg": 10.0}, "train", "no effect while config.data.augment.enab"),
    ({"train.weight_decay": 0.01}, "train", "weight_decay=0.01: is read by the adamw optimizer"),
    ({"train.momentum": 0.5}, "train", "config.train.momentum=0.5: is read by the sgd optimizer"),
    ({"train.momentum": 1.0, "train.optimizer": "sgd"}, "train", "momentum=1.0: must be at least"),
]


@pytest.mark.parametrize("changes, mode, message", BAD)
def test_a_bad_value_is_named(changes, mode, message):
    found = problems(configured(**changes), mode, num_devices=1)
    assert any(message in p for p in found), found
    with pytest.raises(ConfigError, match=r"config\."):
        validate(configured(**changes), mode, num_devices=1)


@pytest.mark.parametrize(
    "name, changes, message",
    [
        ("nih", {"data.data_dir": None}, "config.data.data_dir=None: not set: config.data.name="),
        ("nih", {"data.views": ("LL",)}, "views=('LL',): nih has no view 'LL'; its views are PA"),
        ("nih", {"data.views": ("PA", "PA")}, "names a view more than once"),
        ("nih", {"data.uncertainty": "ones"}, "no effect on nih, whose labels are never"),
        ("nih", {"data.synthetic.noise": 2.0}, "synthetic.noise=2.0: is read for config.data.na"),
        ("nih", {"data.classes": ("Lung Opacity",)}, "nih data set has no class 'Lung Opacity'"),
        ("nih", {"data.fold": 1}, "data.fold=1: is ignored by config.data.split='random'"),
        ("nih", {"data.val_fraction": 0.2}, "val_fraction=0.2: is ignored by config.data.split="),
        ("nih", {"data.split": "kfold", "data.fold": 3}, "data.fold=3: must be below config.data"),
        ("nih", {"data.split": "kfold", "data.num_folds": 1}, "data.num_folds=1: must be at le"),
        ("nih", {"data.split": "kfold", "data.val_fraction": 0.0}, "val_fraction=0.0: must be"),
        ("nih", {"data.split": "official", "data.split_fractions": (0.5, 0.2, 0.3)}, "is ignored"),
        ("nih", {"data.split_fractions": (0.7, 0.2, 0.2)}, "fractions=(0.7, 0.2, 0.2): must be"),
        ("nih", {"data.split_fractions": (0.9, 0.1, 0.0)}, "numbers greater than 0"),
        ("chexpert", {"data.uncertainty": "u-ones"}, "uncertainty='u-ones': expected one of ones"),
        (
            "chexpert",
            {"data.uncertainty_per_class": {"Fracture": "ones"}},
            "uncertainty_per_class={'Fracture': 'ones'}: names 'Fracture', which is not in",
        ),
        (
            "chexpert",
            {"data.uncertainty_per_class": {"Edema": "one"}},
            "gives 'Edema' the policy 'one'; expected one of ones, zeros, ignore",
        ),
    ],
)
def test_prepared_data_settings(name, changes, message):
    found = problems(configured(name, **changes), "train", num_devices=1)
    assert any(message in p for p in found), found


def test_valid_prepared_data_settings():
    kfold = {"data.split": "kfold", "data.num_folds": 5, "data.fold": 4}
    assert problems(configured("nih", **kfold), "train", num_devices=1) == []
    per_class = {"data.uncertainty": "ignore", "data.uncertainty_per_class": {"Edema": "ones"}}
    assert problems(configured("chexpert", **per_class), "train", num_devices=1) == []
    views = {"data.views": ("PA", "AP")}
    assert problems(configured("chexpert", **views), "train", num_devices=1) == []


def test_batch_sizes_are_multiples_of_the_devices_where_they_are_used():
    config = configured(**{"train.batch_size": 12, "eval.batch_size": 20})
    found = problems(config, "train", num_devices=8)
    assert found == [
        "config.train.batch_size=12: must be a multiple of the 8 devices in use, over which the "
        "global batch is split (e.g. 16).",
        "config.eval.batch_size=20: must be a multiple of the 8 devices in use, over which the "
        "global batch is split (e.g. 24).",
    ]
    # Evaluation does not read train.batch_size; predict pads its own batches.
    assert problems(config, "evaluate", num_devices=8) == found[1:]
    assert problems(config, "predict", num_devices=8) == []
    assert problems(config, "train", num_devices=4) == []


def test_training_settings_only_matter_for_training():
    config = configured(**{"train.num_steps": 0, "train.warmup_steps": 50})
    assert problems(config, "evaluate", num_devices=1) == []
    assert len(problems(config, "train", num_devices=1)) == 1  # num_steps; warm-up not compared


def test_every_problem_is_reported_at_once():
    config = configured(
        **{
            "train.batch_size": 0,
            "train.log_every_steps": 0,
            "data.split": "foo",
            "model.variant": "klass",
        }
    )
    with pytest.raises(ConfigError) as e:
        validate(config, "train", num_devices=1)
    assert len(e.value.problems) == 4
    text = str(e.value)
    assert text.startswith("4 problems:\n")
    for field in ("train.batch_size=0", "train.log_every_steps=0", "data.split='foo'"):
        assert f"  - config.{field}: " in text
    assert "  - config.model.variant='klass': expected one of resnet, image, class." in text
    # One problem is one line.
    with pytest.raises(ConfigError) as e:
        validate(configured(**{"train.batch_size": 0}), "train", num_devices=1)
    assert str(e.value) == "config.train.batch_size=0: must be at least 1."


def test_unknown_and_missing_fields():
    config = configured()
    config.train.batchsize = 8  # a field nothing reads
    found = problems(config, "train", num_devices=1)
    assert len(found) == 1 and found[0].startswith(
        "config.train.batchsize: no such setting (nothing reads it); the settings of "
        "config.train are batch_size, "
    )
    del config.train.batchsize
    del config.eval.split
    assert problems(config, "evaluate", num_devices=1) == [
        "config.eval.split is missing: a config file starts from "
        "chestattn_jax.config.get_base_config() and changes fields of it."
    ]


def test_validate_knows_every_choice_the_code_checks_where_it_is_used():
    """For each list of choices that a module checks at the point of use, validate accepts
    every value and refuses any other: the two cannot drift apart."""
    from chestattn_jax.data.augment import _RESAMPLE
    from chestattn_jax.data.chexpert import POLICIES
    from chestattn_jax.data.sources import names as dataset_names
    from chestattn_jax.data.splits import SCHEMES, SPLIT_NAMES
    from chestattn_jax.losses import CLASS_WEIGHT_SCHEMES
    from chestattn_jax.models.attention import COMPATIBILITIES, NORMALISATIONS
    from chestattn_jax.models.nets import VARIANTS
    from chestattn_jax.train_state import OPTIMIZERS, SCHEDULES

    choices = {
        "model.variant": VARIANTS,
        "model.compatibility": COMPATIBILITIES,
        "model.attention_norm": NORMALISATIONS,
        "loss.class_weights": CLASS_WEIGHT_SCHEMES,
        "train.optimizer": OPTIMIZERS,
        "train.schedule": SCHEDULES,
        "data.augment.interpolation": tuple(_RESAMPLE),
        "eval.checkpoint": ("best", "latest"),
        "eval.split": SPLIT_NAMES,
    }
    # Every evaluator module can be named, alone or all together.
    from chestattn_jax.evaluation.evaluators import available

    assert set(available()) == {
        "auc",
        "calibration",
        "operating_points",
        "subgroups",
        "localization",
        "figures",
        "failures",
        "tables",
        "report_html",
    }
    for names in [(n,) for n in available() if n != "tables"] + [available()]:
        names = tuple(sorted(names, key=lambda n: n == "tables"))
        config = configured(**{"eval.evaluators": names})
        assert problems(config, "evaluate", num_devices=1) == []
    for field, values in choices.items():
        for value in values:
            extra = {"data.augment.enabled": True} if field.startswith("data.augment") else {}
            assert problems(configured(**{field: value}, **extra), "train", num_devices=1) == []
        found = problems(configured(**{field: "nonsense"}), "train", num_devices=1)
        assert found == [f"config.{field}='nonsense': expected one of {', '.join(values)}."], found
    # Prepared data sets: the split scheme and the uncertainty policies.
    for field, values in (("data.split", SCHEMES), ("data.uncertainty", POLICIES)):
        for value in values:
            config = configured("chexpert", **{field: value})
            assert problems(config, "train", num_devices=1) == []
        config = configured("chexpert", **{field: "nonsense"})
        found = problems(config, "train", num_devices=1)
        assert found == [f"config.{field}='nonsense': expected one of {', '.join(values)}."]
    for name in dataset_names():
        assert problems(configured(name), "train", num_devices=1) == []


def test_the_base_config_has_what_the_code_reads_with_a_default():
    from chestattn_jax.train_state import create_optimizer

    config = config_lib.get_base_config()
    assert config.train.weight_decay == 1e-4 and config.train.momentum == 0.9
    # SGD reads train.momentum: Nesterov's first step is -lr * (1 + momentum) * gradient.
    import jax.numpy as jnp

    config.train.optimizer = "sgd"
    for momentum in (0.5, 0.9):
        config.train.momentum = momentum
        tx = create_optimizer(config.train)
        params = {"w": jnp.ones(2)}
        updates, _ = tx.update(params, tx.init(params), params)
        lr = config.train.learning_rate
        assert float(updates["w"][0]) == pytest.approx(-lr * (1 + momentum), rel=1e-5)
    config.train.momentum = 0.9
    assert config.allow_setting_changes is False
    assert config.eval.output_name == ""
    assert config.model.skip_unused_stage4 is True
    config.train.optimizer = "adamw"
    create_optimizer(config.train)


def test_evaluators_run_after_those_whose_metrics_they_read():
    import types

    from chestattn_jax.evaluation import evaluators

    ctx = types.SimpleNamespace(
        config=types.SimpleNamespace(model=types.SimpleNamespace(variant="class")),
        classes=("A", "B"),
    )
    made = evaluators.create(("tables", "figures", "auc"), ctx)
    order = [type(e).__module__.rsplit(".", 1)[1] for e in made]
    assert order == ["auc", "tables", "figures"]
    assert [type(e).__module__.rsplit(".", 1)[1] for e in evaluators.create(("tables",), ctx)] == [
        "tables"
    ]  # an evaluator it reads but that was not chosen is not added


def test_init_from_refuses_another_model_naming_the_field(tmp_path):
    """config.model.init_from: a workdir whose model differs in a field that shapes the
    parameters (or in the image size) is refused naming the field and both values, every
    problem at once; nothing but its config.json is read."""
    import json

    from chestattn_jax.config_fields import to_json

    source = tmp_path / "source"
    (source / "checkpoints" / "8").mkdir(parents=True)
    (source / "config.json").write_text(json.dumps(to_json(tiny_config("class"))))
    config = tiny_config("class")
    config.data.classes = ("Mass", "Pneumothorax", "Atelectasis")  # other classes: fine
    config.model.init_from = str(source)
    assert problems(config, "train", num_devices=1) == []
    config.model.init_from = f"{source}:8"
    assert problems(config, "train", num_devices=1) == []
    config.model.num_filters, config.data.image_size = 16, 64
    found = problems(config, "train", num_devices=1)
    assert len(found) == 2, found
    starts = f"the model config.model.init_from='{source}:8' starts from has"
    assert found[0] == (
        f"config.model.num_filters=16: {starts} 8; fine-tuning takes its parameters over, so "
        'this must be the same (or train from scratch: config.model.init_from="").'
    )
    assert found[1].startswith(f"config.data.image_size=64: {starts} 32;")
    config = tiny_config("image")
    config.model.init_from = str(source)
    assert problems(config, "train", num_devices=1) == [
        f"config.model.variant='image': {starts.replace(':8', '')} 'class'; fine-tuning takes "
        "its parameters over, so this must be the same (or train from scratch: "
        'config.model.init_from="").'
    ]
    # Only training reads it: an evaluation of the fine-tuned run (whose config.json
    # records it) does not need the source.
    config.model.init_from = str(tmp_path / "gone")
    assert problems(config, "evaluate", num_devices=1) == []


@pytest.mark.parametrize(
    "value, message",
    [
        (3, "init_from=3: must be a workdir (W, W:latest or W:STEP), a bundle file"),
        ("{tmp}/gone", "gone': no such workdir or bundle file (a run that resumes does not"),
        ("{tmp}/source:9", "source:9': {tmp}/source has no checkpoint of step 9; it has steps 8."),
        ("{tmp}", "has no config.json: not the workdir of a training run."),
        ("{tmp}/m.zip:latest", "m.zip is a bundle file, which holds one model: the checkpoint"),
        ("{tmp}/m.zip:5", "m.zip is a bundle file, which holds one model: the checkpoint suffix"),
    ],
)
def test_init_from_names_what_is_wrong(tmp_path, value, message):
    import json

    from chestattn_jax.config_fields import to_json

    source = tmp_path / "source"
    (source / "checkpoints" / "8").mkdir(parents=True)
    (source / "config.json").write_text(json.dumps(to_json(tiny_config("class"))))
    (tmp_path / "m.zip").write_bytes(b"")  # a file: read as a bundle, which takes no suffix
    value = value.format(tmp=tmp_path) if isinstance(value, str) else value
    config = ml_collections.ConfigDict(tiny_config("class").to_dict(), type_safe=False)
    config.model.init_from = value
    found = problems(config, "train", num_devices=1)
    assert len(found) == 1 and message.format(tmp=tmp_path) in found[0], found
    # With pretrained weights as well: those are not read.
    if value == str(source):
        return
    config.model.init_from = str(source)
    config.model.pretrained = "r50.safetensors"
    found = problems(config, "train", num_devices=1)
    assert any(
        "pretrained='r50.safetensors': is not read when config.model.init_from" in p for p in found
    ), found


def test_init_from_an_nih_model_on_chexpert_classes_is_valid(tmp_path):
    """The example of docs/embeddings.md: CheXpert's config starting from an NIH run."""
    import json

    from chestattn_jax.config_fields import to_json

    nih = tmp_path / "nih_class"
    (nih / "checkpoints" / "100").mkdir(parents=True)
    (nih / "config.json").write_text(json.dumps(to_json(configured("nih", "class"))))
    config = configured("chexpert", **{"model.init_from": str(nih)})
    assert problems(config, "train", num_devices=1) == []
    config = configured("chexpert", "image", **{"model.init_from": f"{nih}:latest"})
    (found,) = problems(config, "train", num_devices=1)
    assert found.startswith("config.model.variant='image': the model config.model.init_from=")

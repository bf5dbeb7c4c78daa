"""The base configuration every file under ``configs/`` starts from, and its checks.

Every hyperparameter lives here (and can be overridden on the command line as
``--config.train.batch_size=64``); none is hard-coded in the library.
:func:`validate` checks a whole config before a run writes or compiles anything.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence

import ml_collections

from chestattn_jax import workdir as workdir_lib
from chestattn_jax.data.classes import CHEXPERT_CLASSES, NIH_CLASSES
from chestattn_jax.models.nets import VARIANTS


def get_base_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0
    # Evaluate (or resume) under other data settings than the workdir was trained with.
    config.allow_setting_changes = False

    config.data = ml_collections.ConfigDict()
    config.data.name = "nih"  # synthetic | nih | chexpert
    config.data.classes = NIH_CLASSES
    config.data.data_dir = ml_collections.FieldReference(None, field_type=str)
    config.data.image_size = 224
    config.data.channels = 1
    # Images are scaled to [0, 1] and then normalised as (x - mean) / std.
    config.data.mean = 0.5
    config.data.std = 0.25
    config.data.num_workers = 0  # grain worker processes for training batches
    config.data.read_threads = 4  # threads per process reading and augmenting examples
    config.data.prefetch_batches = 8  # training batches prepared ahead
    # Prepared data sets (nih, chexpert): patient-disjoint splits, see data/splits.py.
    # random (70/10/20) | kfold (each fold the test set once: 58/8/33 % by patient with the
    # default val_fraction; our reading of the paper's "3-fold", see README) | official
    config.data.split = "random"
    config.data.split_fractions = (0.7, 0.1, 0.2)
    config.data.num_folds = 3
    config.data.fold = 0
    config.data.val_fraction = 0.125  # of the non-test patients, for kfold and official
    config.data.split_seed = 0
    config.data.views = ()  # keep only these view positions (e.g. ("PA",)); () keeps all
    # CheXpert's uncertain (-1) labels: ones | zeros | ignore (masked out of loss and AUC),
    # with per-class exceptions in uncertainty_per_class, e.g. {"Edema": "ones"}.
    config.data.uncertainty = "zeros"
    config.data.uncertainty_per_class = ml_collections.ConfigDict()
    config.data.augment = ml_collections.ConfigDict()
    config.data.augment.enabled = True
    config.data.augment.rotation_deg = 7.0
    config.data.augment.scale = 0.07  # log-scale range: exp(±0.07)
    config.data.augment.shift = 0.05  # fraction of the image side
    config.data.augment.contrast = 0.15
    config.data.augment.brightness = 0.08
    config.data.augment.gamma = 0.15
    config.data.augment.hflip = False  # a flip moves the heart to the other side
    config.data.augment.interpolation = "nearest"  # nearest (fast, torchvision's) | bilinear
    config.data.synthetic = ml_collections.ConfigDict()
    config.data.synthetic.seed = 0
    config.data.synthetic.train_size = 4096
    config.data.synthetic.validation_size = 512
    config.data.synthetic.test_size = 1024
    # Difficulty of the phantoms (chestattn_jax/data/synthetic.py: PhantomConfig).
    config.data.synthetic.lesion_contrast = 1.0
    config.data.synthetic.lesion_size = 1.0
    config.data.synthetic.noise = 1.0
    config.data.synthetic.prevalence_scale = 1.0
    # How far findings stray from their class's typical place (0: always there, as in
    # releases before it existed; see PhantomConfig). 0.75 (our choice) moves three in four
    # findings of the classes that can move anywhere their pathology plausibly lies, which
    # lowers a fixed per-class map's pointing-game hit rate from 0.61 to 0.48
    # (benchmarks/location_prior.py).
    config.data.synthetic.location_variability = 0.75

    config.model = ml_collections.ConfigDict()
    config.model.variant = "class"  # resnet | image | class
    config.model.stage_sizes = (3, 4, 6, 3)  # ResNet-50
    config.model.num_filters = 64
    config.model.attention_dim = 16
    config.model.compatibility = "pc"  # pc (paper) | additive | dp
    config.model.attention_norm = "softmax"  # softmax (paper) | sigmoid
    config.model.dtype = "float32"  # compute dtype: float32 | bfloat16 | float16
    # Under pc + softmax the attention variants' outputs cannot depend on stage 4 (softmax
    # cancels A . g'), so it is not computed: same logits, maps and parameters, a faster
    # step. Stage 4's BatchNorm statistics are then not updated and aux has no "global".
    config.model.skip_unused_stage4 = True
    # The backbone stage under each of the three gates: (1, 2, 3) as the paper's figure draws
    # them (the text does not force it); (2, 3, 4) for the ablation, gate 3 on stage 4.
    config.model.gate_stages = (1, 2, 3)
    # A torchvision ResNet state dict for the backbone (.safetensors, or .pth when torch is
    # installed; see chestattn_jax/models/convert.py); "" trains from scratch.
    config.model.pretrained = ""

    config.loss = ml_collections.ConfigDict()
    config.loss.class_weights = "paper"  # paper | inverse_frequency | none
    # λ of Eq. 5; used by the class-based model only.
    config.loss.entropy_weight = 0.1

    config.train = ml_collections.ConfigDict()
    config.train.batch_size = 16  # global, over all devices and processes
    config.train.num_steps = 100_000
    config.train.optimizer = "adam"  # adam | adamw | sgd
    config.train.learning_rate = 1e-4
    config.train.weight_decay = 1e-4  # adamw only
    config.train.momentum = 0.9  # sgd only (Nesterov); our choice, as is the optimiser
    config.train.schedule = "constant"  # constant | cosine
    config.train.warmup_steps = 0
    config.train.log_every_steps = 100
    config.train.eval_every_steps = 2000  # validation + checkpoint
    # What stops training and picks the best checkpoint, at every validation: loss (Eq. 5,
    # as the paper stops "when no decrease in the loss was evident in the validation set"),
    # bce (Eq. 5 without -λH: comparable across λ) or mean_auc (higher is better).
    config.train.early_stopping_metric = "loss"
    # Stop after this many validations without a better early_stopping_metric (0: never).
    config.train.patience = 5
    config.train.checkpoints_to_keep = 2  # most recent ones; the best is kept as well

    config.eval = ml_collections.ConfigDict()
    config.eval.batch_size = 64
    config.eval.checkpoint = "best"  # best (by train.early_stopping_metric) | latest
    config.eval.split = "test"  # train | validation | test
    # 95% intervals from patient-level bootstrap draws of the test split (0: none).
    config.eval.bootstrap_draws = 1000
    config.eval.bootstrap_seed = 0
    # Localisation: maps resized to the image, divided by their maximum, thresholded here.
    config.eval.map_threshold = 0.5
    # Test images (with a finding) drawn in eval/overlays.png and kept for compare's Fig. 2.
    config.eval.num_figure_images = 8
    # The evaluation folder in the workdir; "" names it after the split and checkpoint.
    config.eval.output_name = ""
    # What evaluation computes from its one pass over the split, as evaluator plug-ins
    # (chestattn_jax/evaluation/evaluators): auc (with bootstrap intervals), localization
    # (where the data has truth, beside a class-prior and a uniform baseline), figures
    # (ROC curves, Fig. 2, Fig. 3) and tables (per_class.csv / .md; needs auc).
    config.eval.evaluators = ("auc", "localization", "figures", "tables")
    # Cross-dataset evaluation (chestattn_jax/evaluation/class_map.py): score the model on
    # another prepared data set (nih | chexpert; "" the one it was trained on), found
    # under eval.data_dir, through eval.class_map: "exact" pairs the classes with the same
    # meaning (Effusion = Pleural Effusion); "MODEL=DATA,..." gives pairs.
    config.eval.dataset = ""
    config.eval.data_dir = ""
    config.eval.class_map = "exact"

    # The paper's experiment (python -m chestattn_jax.experiment): a grid of runs, folds x
    # variants x λ (class model only) x seeds, each in ROOT/<cell>; see experiment.py.
    config.experiment = ml_collections.ConfigDict()
    # Prepared data: data.split=kfold with data.num_folds=folds, fold f tested in cell f.
    # Phantoms: fold f draws its own phantoms (data.synthetic.seed + f).
    config.experiment.folds = 3
    config.experiment.variants = ("resnet", "image", "class")
    config.experiment.entropy_weights = (0.0, 0.1, 1.0)  # λ values of the class model
    config.experiment.seeds = (0,)  # training seeds (config.seed) of every cell
    # How λ is chosen per fold, on the validation split at each run's best checkpoint:
    # mean_auc (highest validation mean AUC; the paper's metric) | bce (lowest validation
    # classification loss). Our choice: the paper says only that λ was tuned on validation.
    config.experiment.lambda_criterion = "mean_auc"
    return config


def with_variant(config: ml_collections.ConfigDict, arg: str | None):
    """Applies a config-file argument (``configs/nih.py:image``) naming the variant."""
    if arg:
        if arg not in VARIANTS:
            raise ValueError(
                f"Unknown config argument {arg!r}: it names the model variant, one of "
                f"{', '.join(VARIANTS)}."
            )
        config.model.variant = arg
    return config


# --------------------------------------------------------------------------- validation

MODES = ("train", "evaluate", "predict")
DTYPES = ("float32", "bfloat16", "float16")
EVAL_CHECKPOINTS = ("best", "latest")
# The backbone's total stride. The model runs at any size (convolutions are zero-padded;
# the phantoms need 16 px), but below 32 px the one position of stage 4 is partly padding
# and gate 3's maps (stride 16) have a single position or two per side.
MIN_IMAGE_SIZE = 32
SEED_LIMIT = 2**32
# The View Position values each prepared data set holds (NIH: View Position; CheXpert:
# AP/PA, or Lateral for lateral films).
VIEWS = {"nih": ("PA", "AP"), "chexpert": ("AP", "PA", "LL", "RL", "Lateral")}
# What the workdir itself keeps: an evaluation folder (config.eval.output_name) must not
# take one of these names.
WORKDIR_NAMES = (
    workdir_lib.CHECKPOINT_DIR,
    workdir_lib.CONFIG_FILE,
    workdir_lib.DATASET_FILE,
    workdir_lib.LOCK_FILE,
    workdir_lib.METRICS_FILE,
    "tensorboard",
    workdir_lib.PREDICT_DIR,
)
# Fields of the prepared data sets' split schemes, and the schemes that read them.
_SPLIT_FIELDS = {
    "split_fractions": ("random",),
    "num_folds": ("kfold",),
    "fold": ("kfold",),
    "val_fraction": ("kfold", "official"),
}
# Fields only prepared data sets (nih, chexpert) read.
_PREPARED_FIELDS = (
    "data_dir",
    "split",
    "split_fractions",
    "num_folds",
    "fold",
    "val_fraction",
    "split_seed",
    "views",
    "uncertainty",
    "uncertainty_per_class",
)
_AUGMENT_RANGES = {  # field: (low, high, what is allowed)
    "rotation_deg": (0.0, 180.0, "degrees, between 0 and 180"),
    "scale": (0.0, math.inf, "a log-scale range, at least 0"),
    "shift": (0.0, 1.0, "a fraction of the image side, between 0 and 1"),
    "contrast": (0.0, math.inf, "a log-contrast range, at least 0"),
    "brightness": (0.0, 1.0, "between 0 and 1"),
    "gamma": (0.0, math.inf, "a log-gamma range, at least 0"),
}


class ConfigError(ValueError):
    """Config values (or flags) a run cannot use; ``problems`` names each."""

    def __init__(self, problems: Sequence[str]):
        self.problems = tuple(problems)
        if len(self.problems) == 1:
            text = self.problems[0]
        else:
            text = f"{len(self.problems)} problems:\n" + "\n".join(
                f"  - {p}" for p in self.problems
            )
        super().__init__(text)


def validate(config, mode: str = "train", *, num_devices: int | None = None) -> None:
    """Raises :class:`ConfigError` listing every problem :func:`problems` finds."""
    found = problems(config, mode, num_devices=num_devices)
    if found:
        raise ConfigError(found)


def problems(config, mode: str = "train", *, num_devices: int | None = None) -> list[str]:
    """Every value of ``config`` that a ``mode`` run (train | evaluate | predict) cannot use
    or would silently ignore, each as ``config.FIELD=VALUE: what is allowed``.

    Checks types, ranges and choices of every field of :func:`get_base_config`, that no
    field is missing or unknown, the classes against the data set's, and that settings the
    chosen data set, split scheme, optimizer or augmentation switch ignore keep their
    defaults. ``num_devices`` (default: ``jax.device_count()``, read only for train and
    evaluate) is what batch sizes must be multiples of. Reads no data and writes nothing.
    """
    if mode not in MODES:
        raise ValueError(f"Unknown mode {mode!r}; expected one of {', '.join(MODES)}.")
    base = get_base_config()
    p = _Problems(config, base)
    p.structure(config, base, "")
    if p.missing:
        return p.found  # the other checks would read the missing fields
    _check_general(p)
    _check_data(p)
    _check_model_and_loss(p)
    _check_train(p, mode)
    _check_eval(p, mode)
    if mode in ("train", "evaluate"):
        if num_devices is None:
            import jax

            num_devices = jax.device_count()
        batches = ("train.batch_size",) if mode == "train" else ()
        for path in (*batches, "eval.batch_size"):
            value = p.value(path)
            if _is_int(value) and value >= 1 and value % num_devices:
                p.add(
                    path,
                    f"must be a multiple of the {_devices(num_devices)} in use, over which the "
                    f"global batch is split (e.g. {-(-value // num_devices) * num_devices}).",
                )
    return p.found


def _devices(n: int) -> str:
    return f"{n} device" if n == 1 else f"{n} devices"


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_real(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _plain(v):
    """A config value as plain Python: ConfigDicts as dicts, lists as tuples."""
    if hasattr(v, "to_dict"):
        v = v.to_dict()
    if isinstance(v, Mapping):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return tuple(_plain(x) for x in v)
    return v


def _show(v) -> str:
    return repr(_plain(v))


class _Problems:
    """Collects problems, each naming a field, its value and what is allowed."""

    def __init__(self, config, base):
        self.config, self.base = config, base
        self.found: list[str] = []
        self.reported: set[str] = set()
        self.missing = False

    def value(self, path: str):
        node = self.config
        for part in path.split("."):
            node = node[part]
        return node

    def default(self, path: str):
        node = self.base
        for part in path.split("."):
            node = node[part]
        return node

    def add(self, path: str, why: str) -> None:
        self.reported.add(path)
        self.found.append(f"config.{path}={_show(self.value(path))}: {why}")

    def is_default(self, path: str) -> bool:
        value, default = _plain(self.value(path)), _plain(self.default(path))
        if path == "data.data_dir":  # None and "" both mean unset
            return not value and not default
        return value == default

    def ignored(self, path: str, why: str) -> None:
        """A problem if ``path`` is set to anything but its default, which ``why`` ignores
        (unless ``path`` has a problem already)."""
        if path not in self.reported and not self.is_default(path):
            self.add(path, f"{why}; leave it at its default {_show(self.default(path))}.")

    def structure(self, node, base, prefix: str) -> None:
        """Fields of ``node`` that ``base`` lacks (nothing reads them) and the reverse."""
        keys, base_keys = set(node.keys()), set(base.keys())
        for k in sorted(keys - base_keys):
            self.found.append(
                f"config.{prefix}{k}: no such setting (nothing reads it); the settings of "
                f"config{'.' + prefix[:-1] if prefix else ''} are {', '.join(sorted(base_keys))}."
            )
        for k in sorted(base_keys - keys):
            self.missing = True
            self.found.append(
                f"config.{prefix}{k} is missing: a config file starts from "
                "chestattn_jax.config.get_base_config() and changes fields of it."
            )
        for k in sorted(keys & base_keys):
            path = f"{prefix}{k}"
            if path == "data.uncertainty_per_class":
                continue  # its keys are class names
            if isinstance(base[k], ml_collections.ConfigDict):
                if isinstance(node[k], ml_collections.ConfigDict | Mapping):
                    self.structure(node[k], base[k], f"{path}.")
                else:
                    self.missing = True
                    self.found.append(
                        f"config.{path}={_show(node[k])}: must be a group of fields "
                        f"({', '.join(sorted(base[k].keys()))})."
                    )

    # Typed reads: the value if it has the right type, else None (and a problem).

    def int(self, path: str, low: int | None = None, allowed: str | None = None):
        v = self.value(path)
        if not _is_int(v):
            self.add(path, f"must be an integer{'; ' + allowed if allowed else ''}.")
            return None
        if low is not None and v < low:
            self.add(path, f"must be {allowed or f'at least {low}'}.")
            return None
        return v

    def real(self, path: str):
        v = self.value(path)
        if not _is_real(v):
            self.add(path, "must be a finite number.")
            return None
        return float(v)

    def bool(self, path: str) -> None:
        if not isinstance(self.value(path), bool):
            self.add(path, "must be true or false.")

    def choice(self, path: str, choices) -> str | None:
        v = self.value(path)
        if not isinstance(v, str) or v not in choices:
            self.add(path, f"expected one of {', '.join(choices)}.")
            return None
        return v

    def seed(self, path: str) -> None:
        v = self.value(path)
        if not _is_int(v) or not 0 <= v < SEED_LIMIT:
            self.add(path, "must be an integer from 0 to 2**32 - 1.")

    def positive(self, path: str, what: str = "greater than 0") -> None:
        v = self.real(path)
        if v is not None and v <= 0:
            self.add(path, f"must be {what}.")

    def non_negative(self, path: str, what: str = "at least 0") -> None:
        v = self.real(path)
        if v is not None and v < 0:
            self.add(path, f"must be {what}.")

    def fraction(self, path: str, what: str) -> float | None:
        """A number strictly between 0 and 1."""
        v = self.real(path)
        if v is not None and not 0 < v < 1:
            self.add(path, f"must be between 0 and 1 (exclusive): {what}.")
            return None
        return v


def _check_general(p: _Problems) -> None:
    p.seed("seed")
    p.bool("allow_setting_changes")


def known_classes(name: str):
    """The classes a data set (``config.data.name``) has."""
    from chestattn_jax.data.synthetic import PHANTOM_CLASSES

    return {"synthetic": PHANTOM_CLASSES, "nih": NIH_CLASSES, "chexpert": CHEXPERT_CLASSES}[name]


def _check_data(p: _Problems) -> None:
    from chestattn_jax.data.augment import _RESAMPLE
    from chestattn_jax.data.chexpert import POLICIES
    from chestattn_jax.data.input_pipeline import DATASETS
    from chestattn_jax.data.splits import SCHEMES

    name = p.choice("data.name", DATASETS)
    _check_classes(p, name)
    p.int(
        "data.image_size",
        MIN_IMAGE_SIZE,
        f"at least {MIN_IMAGE_SIZE} pixels, the ResNet backbone's total stride (gate 3's "
        "attention maps are 16 times smaller than the image)",
    )
    channels = p.value("data.channels")
    if channels != 1 or not _is_int(channels):
        p.add("data.channels", "must be 1: every data set and reader yields grayscale images.")
    p.real("data.mean")
    p.positive("data.std")
    p.int("data.num_workers", 0, "at least 0 (0: decode in the training process)")
    p.int("data.read_threads", 0, "at least 0")
    p.int("data.prefetch_batches", 0, "at least 0")

    # Prepared data sets: splits, views, uncertain labels.
    split = p.choice("data.split", SCHEMES)
    fractions = p.value("data.split_fractions")
    if (
        not isinstance(fractions, list | tuple)
        or len(fractions) != 3
        or not all(_is_real(f) and f > 0 for f in fractions)
        or not math.isclose(sum(fractions), 1.0, abs_tol=1e-6)
    ):
        p.add(
            "data.split_fractions",
            "must be three numbers greater than 0 (train, validation, test) summing to 1, "
            "e.g. (0.7, 0.1, 0.2).",
        )
    folds = p.int("data.num_folds", 2, "at least 2")
    fold = p.int("data.fold", 0, "at least 0")
    if folds is not None and fold is not None and fold >= folds:
        p.add("data.fold", f"must be below config.data.num_folds={folds} (0 .. {folds - 1}).")
    p.fraction("data.val_fraction", "the share of the non-test patients that validate")
    p.seed("data.split_seed")
    views = p.value("data.views")
    known_views = VIEWS.get(name, ())
    if not isinstance(views, list | tuple) or not all(isinstance(v, str) for v in views):
        p.add("data.views", "must be a tuple of view names, e.g. ('PA',); () keeps every view.")
    elif len(set(views)) != len(views):
        p.add("data.views", "names a view more than once.")
    elif name in VIEWS and not set(views) <= set(known_views):
        unknown = [v for v in views if v not in known_views]
        p.add(
            "data.views",
            f"{name} has no view {', '.join(map(repr, unknown))}; its views are "
            f"{', '.join(known_views)} (() keeps every view).",
        )
    p.choice("data.uncertainty", POLICIES)
    per_class = p.value("data.uncertainty_per_class")
    if not isinstance(per_class, Mapping | ml_collections.ConfigDict):
        p.add("data.uncertainty_per_class", "must be a dict {class: policy}.")
    else:
        classes = p.value("data.classes")
        classes = tuple(classes) if isinstance(classes, list | tuple) else ()
        for c, policy in _plain(per_class).items():
            if c not in classes:
                p.add(
                    "data.uncertainty_per_class",
                    f"names {c!r}, which is not in config.data.classes.",
                )
            if policy not in POLICIES:
                p.add(
                    "data.uncertainty_per_class",
                    f"gives {c!r} the policy {policy!r}; expected one of {', '.join(POLICIES)}.",
                )

    for field in ("enabled", "hflip"):
        p.bool(f"data.augment.{field}")
    for field, (low, high, allowed) in _AUGMENT_RANGES.items():
        v = p.real(f"data.augment.{field}")
        if v is not None and not low <= v <= high:
            p.add(f"data.augment.{field}", f"must be {allowed}.")
    p.choice("data.augment.interpolation", tuple(_RESAMPLE))
    if p.value("data.augment.enabled") is False:
        for field in (*_AUGMENT_RANGES, "hflip", "interpolation"):
            p.ignored(
                f"data.augment.{field}",
                "has no effect while config.data.augment.enabled is false "
                "(--config.data.augment.enabled=true turns augmentation on)",
            )

    p.seed("data.synthetic.seed")
    for split_name in ("train", "validation", "test"):
        p.int(f"data.synthetic.{split_name}_size", 1, "at least 1")
    p.non_negative("data.synthetic.lesion_contrast", "at least 0 (0 hides the findings)")
    p.positive("data.synthetic.lesion_size")
    p.non_negative("data.synthetic.noise")
    p.positive("data.synthetic.prevalence_scale")
    v = p.real("data.synthetic.location_variability")
    if v is not None and not 0 <= v <= 1:
        p.add("data.synthetic.location_variability", "must be between 0 and 1 (inclusive).")

    # Settings the chosen data set would silently ignore (unless a cross-dataset evaluation
    # reads them for the evaluated data set).
    cross = p.value("eval.dataset") in ("nih", "chexpert")
    if name == "synthetic" and not cross:
        for field in _PREPARED_FIELDS:
            p.ignored(
                f"data.{field}",
                "is ignored on synthetic data (config.data.name='synthetic'), whose splits "
                "are config.data.synthetic.*_size",
            )
    elif name == "synthetic":
        p.ignored("data.data_dir", "is not read: the evaluated data set is config.eval.data_dir")
    elif name is not None and name != "synthetic":
        for field in p.default("data.synthetic").keys():
            p.ignored(
                f"data.synthetic.{field}",
                f"is read for config.data.name='synthetic' only, not {name!r}",
            )
        if not p.value("data.data_dir"):
            p.add(
                "data.data_dir",
                f"not set: config.data.name={name!r} reads a prepared "
                f"data set; give its folder with --config.data.data_dir=DIR (made by python -m "
                f"chestattn_jax.data.prepare --dataset={name} ...).",
            )
        elif not isinstance(p.value("data.data_dir"), str):
            p.add("data.data_dir", "must be a folder name.")
        if name == "nih" and p.value("eval.dataset") != "chexpert":
            for field in ("uncertainty", "uncertainty_per_class"):
                p.ignored(f"data.{field}", "has no effect on nih, whose labels are never uncertain")
        if split is not None:
            for field, schemes in _SPLIT_FIELDS.items():
                if split not in schemes:
                    p.ignored(
                        f"data.{field}",
                        f"is ignored by config.data.split={split!r} (it is read by "
                        f"{' and '.join(repr(s) for s in schemes)})",
                    )


def _check_classes(p: _Problems, name: str | None) -> None:
    classes = p.value("data.classes")
    if (
        not isinstance(classes, list | tuple)
        or not classes
        or not all(isinstance(c, str) for c in classes)
    ):
        p.add("data.classes", "must be a non-empty tuple of class names.")
        return
    repeated = sorted({c for c in classes if classes.count(c) > 1})
    if repeated:
        p.add("data.classes", f"names {', '.join(map(repr, repeated))} more than once.")
    if name is None:
        return
    known = known_classes(name)
    unknown = [c for c in classes if c not in known]
    if unknown:
        hint = ""
        if any("," in c for c in unknown):
            hint = (
                " (a tuple on the command line is written "
                "--config.data.classes=\"('Mass','Nodule')\", not Mass,Nodule)"
            )
        p.add(
            "data.classes",
            f"the {name} data set has no class {', '.join(map(repr, unknown))}{hint}; its "
            f"classes are {', '.join(known)}.",
        )


def _check_model_and_loss(p: _Problems) -> None:
    from chestattn_jax.losses import CLASS_WEIGHT_SCHEMES
    from chestattn_jax.models.attention import COMPATIBILITIES, NORMALISATIONS
    from chestattn_jax.models.convert import TORCH_SUFFIXES

    p.choice("model.variant", VARIANTS)
    stages = p.value("model.stage_sizes")
    if (
        not isinstance(stages, list | tuple)
        or len(stages) != 4
        or not all(_is_int(s) and s >= 1 for s in stages)
    ):
        p.add(
            "model.stage_sizes",
            "must be four integers of at least 1, the bottleneck blocks of each ResNet stage "
            "(ResNet-50: (3, 4, 6, 3)).",
        )
    p.int("model.num_filters", 1, "at least 1")
    p.int("model.attention_dim", 1, "at least 1")
    p.choice("model.compatibility", COMPATIBILITIES)
    p.choice("model.attention_norm", NORMALISATIONS)
    p.choice("model.dtype", DTYPES)
    p.bool("model.skip_unused_stage4")
    stages = p.value("model.gate_stages")
    if not isinstance(stages, list | tuple) or not all(_is_int(s) for s in stages):
        p.add("model.gate_stages", "must be a tuple of three stages, e.g. (1, 2, 3) or (2, 3, 4).")
    else:
        from chestattn_jax.models.nets import check_gate_stages

        try:
            check_gate_stages(tuple(int(s) for s in stages))
        except ValueError:
            p.add(
                "model.gate_stages",
                "must be three increasing stages of the backbone, from 1 to 4, e.g. (1, 2, 3) "
                "or (2, 3, 4).",
            )
    pretrained = p.value("model.pretrained")
    suffixes = (".safetensors", *TORCH_SUFFIXES)
    if not isinstance(pretrained, str):
        p.add("model.pretrained", 'must be a file name, or "" to train from scratch.')
    elif pretrained and not pretrained.endswith(suffixes):
        p.add("model.pretrained", f"must be a file ending in {', '.join(suffixes)}.")
    elif pretrained and not os.path.isfile(pretrained):
        p.add("model.pretrained", "no such file.")

    p.choice("loss.class_weights", CLASS_WEIGHT_SCHEMES)
    p.non_negative("loss.entropy_weight")


def _check_train(p: _Problems, mode: str) -> None:
    from chestattn_jax.train_state import OPTIMIZERS, SCHEDULES

    p.int("train.batch_size", 1, "at least 1")
    steps = p.int("train.num_steps", 1 if mode == "train" else 0, "at least 1 to train")
    optimizer = p.choice("train.optimizer", OPTIMIZERS)
    p.positive("train.learning_rate")
    p.non_negative("train.weight_decay")
    if optimizer is not None and optimizer != "adamw":
        p.ignored("train.weight_decay", f"is read by the adamw optimizer only, not {optimizer!r}")
    momentum = p.real("train.momentum")
    if momentum is not None and not 0 <= momentum < 1:
        p.add("train.momentum", "must be at least 0 and below 1.")
    if optimizer is not None and optimizer != "sgd":
        p.ignored("train.momentum", f"is read by the sgd optimizer only, not {optimizer!r}")
    p.choice("train.schedule", SCHEDULES)
    warmup = p.int("train.warmup_steps", 0, "at least 0")
    if mode == "train" and steps is not None and warmup and warmup >= steps:
        p.add(
            "train.warmup_steps",
            f"must be below config.train.num_steps={steps}, or the learning rate never "
            "reaches config.train.learning_rate (0: no warm-up).",
        )
    p.int("train.log_every_steps", 1, "at least 1")
    p.int("train.eval_every_steps", 1, "at least 1")
    from chestattn_jax.train import EARLY_STOPPING_METRICS

    p.choice("train.early_stopping_metric", EARLY_STOPPING_METRICS)
    p.int("train.patience", 0, "at least 0 (0: never stop early)")
    p.int("train.checkpoints_to_keep", 1, "at least 1")


def _check_eval(p: _Problems, mode: str) -> None:
    from chestattn_jax.data.splits import SPLIT_NAMES

    p.int("eval.batch_size", 1, "at least 1")
    p.choice("eval.checkpoint", EVAL_CHECKPOINTS)
    p.choice("eval.split", SPLIT_NAMES)
    p.int("eval.bootstrap_draws", 0, "at least 0 (0: no confidence intervals)")
    p.seed("eval.bootstrap_seed")
    p.fraction("eval.map_threshold", "maps are divided by their maximum, then thresholded")
    p.int("eval.num_figure_images", 0, "at least 0")
    name = p.value("eval.output_name")
    if not isinstance(name, str):
        p.add("eval.output_name", 'must be a folder name, or "" for the default.')
    elif name and (
        name in (".", "..")
        or "/" in name
        or os.sep in name
        or (os.altsep and os.altsep in name)
        or name in WORKDIR_NAMES
    ):
        p.add(
            "eval.output_name",
            "must be one folder name inside the workdir (no '/'), other than "
            f"{', '.join(WORKDIR_NAMES)}.",
        )
    _check_evaluators(p)
    _check_cross_dataset(p, mode)
    _check_experiment(p)


def _check_evaluators(p: _Problems) -> None:
    from chestattn_jax.evaluation.evaluators import available

    known = available()
    names = p.value("eval.evaluators")
    if not isinstance(names, list | tuple) or not all(isinstance(n, str) for n in names):
        p.add(
            "eval.evaluators",
            f"must be a tuple of evaluator names from {', '.join(known)}, e.g. "
            "--config.eval.evaluators=\"('auc','tables')\".",
        )
        return
    unknown = [n for n in names if n not in known]
    if not names:
        p.add(
            "eval.evaluators",
            "is empty: an evaluation must compute something (its metrics.json would hold no "
            "AUC, and an experiment would count the cell as done). Name at least one, e.g. "
            "--config.eval.evaluators=\"('auc',)\".",
        )
    elif unknown:
        p.add(
            "eval.evaluators",
            f"no evaluator {', '.join(map(repr, unknown))}; expected names from "
            f"{', '.join(known)}.",
        )
    elif len(set(names)) < len(names):
        p.add("eval.evaluators", "names an evaluator more than once.")
    elif "tables" in names and "auc" not in names:
        p.add("eval.evaluators", "tables tabulates the AUCs: add auc, or leave tables out.")


def _check_cross_dataset(p: _Problems, mode: str) -> None:
    from chestattn_jax.evaluation import class_map

    name = p.choice("eval.dataset", ("", "nih", "chexpert"))
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
            class_map.parse(text, classes, known_classes(name))
        except ValueError as e:
            p.add("eval.class_map", str(e))


def _check_experiment(p: _Problems) -> None:
    from chestattn_jax.experiment import LAMBDA_CRITERIA

    p.int("experiment.folds", 1, "at least 1")
    variants = p.value("experiment.variants")
    if (
        not isinstance(variants, list | tuple)
        or not variants
        or any(v not in VARIANTS for v in variants)
        or len(set(variants)) < len(variants)
    ):
        p.add(
            "experiment.variants",
            f"must be a tuple of distinct variants from {', '.join(VARIANTS)}, "
            "e.g. \"('image','class')\".",
        )
    weights = p.value("experiment.entropy_weights")
    if (
        not isinstance(weights, list | tuple)
        or not weights
        or not all(_is_real(w) and w >= 0 for w in weights)
        or len(set(weights)) < len(weights)
    ):
        p.add("experiment.entropy_weights", "must be a tuple of distinct numbers, each at least 0.")
    seeds = p.value("experiment.seeds")
    if (
        not isinstance(seeds, list | tuple)
        or not seeds
        or not all(_is_int(s) and 0 <= s < SEED_LIMIT for s in seeds)
        or len(set(seeds)) < len(seeds)
    ):
        p.add("experiment.seeds", "must be a tuple of distinct integers from 0 to 2**32 - 1.")
    p.choice("experiment.lambda_criterion", LAMBDA_CRITERIA)

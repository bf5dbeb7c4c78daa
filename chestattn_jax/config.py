"""The base configuration every file under ``configs/`` starts from.

Every hyperparameter lives here (and can be overridden on the command line as
``--config.train.batch_size=64``); none is hard-coded in the library. The rules of each
field live with the module that reads it; :func:`chestattn_jax.validation.validate` checks
a whole config against all of them before a run writes or compiles anything.
"""

from __future__ import annotations

import ml_collections

from chestattn_jax.data.classes import NIH_CLASSES

# The model variants (config.model.variant), named by a config file's argument.
VARIANTS = ("resnet", "image", "class")


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
    # default val_fraction; our reading of the paper's "3-fold", see docs/data.md) | official
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
    # Fine-tuning: a new run starts from a trained model, W (a workdir: its best checkpoint;
    # W:latest or W:STEP for another) or a bundle FILE. Its backbone and gates are taken,
    # and the class heads of the classes both models have (paired as eval.class_map's
    # exact map pairs them: Effusion = Pleural Effusion); the other classes' heads start
    # fresh, as does the optimizer. The models must have the same variant, backbone, gates
    # and image size. A resumed run ignores it (its checkpoint wins). "" starts from
    # config.model.pretrained, or from scratch.
    config.model.init_from = ""

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
    # Failure review (evaluator failures): per class, this many most confident false
    # positives and false negatives at the first operating point (thresholds chosen on
    # validation), with their images, maps and probabilities, in failures.png and
    # metrics["failures"]; 0: off. Our choice.
    config.eval.num_failure_images = 4
    # The evaluation folder in the workdir; "" names it after the split and checkpoint.
    config.eval.output_name = ""
    # What evaluation computes from its one pass over the split, as evaluator plug-ins
    # (chestattn_jax/evaluation/evaluators): auc (with bootstrap intervals), localization
    # (where the data has truth, beside a class-prior and a uniform baseline), figures
    # (ROC curves, Fig. 2, Fig. 3) and tables (per_class.csv / .md; needs auc).
    # Operating points (evaluator operating_points): per class, a threshold chosen on the
    # validation split by each rule, youden | sensitivity>=S | specificity>=S, and the test
    # split's sensitivity, specificity, PPV, NPV and F1 there. The first rule's thresholds are
    # written to thresholds.json, where --mode=predict reads them. Our choice of defaults.
    config.eval.operating_points = ("youden", "sensitivity>=0.9", "specificity>=0.9")
    # Calibration (evaluator calibration): ECE over this many bins, equal_mass | equal_width,
    # and a recalibration fitted per class on the validation split: platt (a*logit + b; the
    # default, because the paper's class weights shift each class's logit by log c_i, an
    # offset that only Platt's b removes) | temperature (logit / T).
    config.eval.calibration_bins = 15
    config.eval.calibration_binning = "equal_mass"
    config.eval.recalibration = "platt"
    # Subgroups (evaluator subgroups): AUC within sex, age bands and view, beside the rest of
    # the split. Age band edges in years (<40, 40-59, 60-79, >=80; () for none), and the
    # fewest positives (and negatives) a class needs in a subgroup and in its rest to be
    # scored. Our choice of defaults.
    config.eval.subgroup_age_bands = (40, 60, 80)
    config.eval.subgroup_min_positives = 10
    config.eval.evaluators = (
        "auc",
        "calibration",
        "operating_points",
        "subgroups",
        "localization",
        "figures",
        "failures",
        "tables",
        "report_html",
    )
    # Cross-dataset evaluation (chestattn_jax/evaluation/class_map.py): score the model on
    # another prepared data set (nih | chexpert; "" the one it was trained on), found
    # under eval.data_dir, through eval.class_map: "exact" pairs the classes with the same
    # meaning (Effusion = Pleural Effusion); "MODEL=DATA,..." gives pairs.
    config.eval.dataset = ""
    config.eval.data_dir = ""
    config.eval.class_map = "exact"
    # NIH expert labels (evaluator expert_labels, chestattn_jax/evaluation/evaluators/
    # expert_labels.py): the path of google2019_nih-chest-xray-labels.csv; the model's classes
    # that the label space relates to its columns are also scored against it, on the images
    # of the evaluated NIH split that it lists. "": none.
    config.eval.nih_expert_labels = ""

    # The paper's experiment (python -m chestattn_jax.experiment): a grid of runs, folds x
    # variants x λ (class model only) x seeds, each in ROOT/<cell>; see chestattn_jax/experiment/.
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
    # What stops each cell and picks its best checkpoint (the cells'
    # train.early_stopping_metric, which an experiment leaves at its default): bce |
    # mean_auc | loss. Our choice: bce, Eq. 5 without -λH, so that the cells of different λ
    # stop on the same quantity; with several λ, 'loss' (whose -λH differs per λ) is refused
    # unless experiment.allow_loss_stopping.
    config.experiment.early_stopping_metric = "bce"
    config.experiment.allow_loss_stopping = False
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

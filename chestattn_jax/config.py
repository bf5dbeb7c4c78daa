"""The base configuration every file under ``configs/`` starts from.

Every hyperparameter lives here (and can be overridden on the command line as
``--config.train.batch_size=64``); none is hard-coded in the library.
"""

from __future__ import annotations

import ml_collections

from chestattn_jax.data.classes import NIH_CLASSES
from chestattn_jax.models.nets import VARIANTS


def get_base_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0

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
    config.data.split = "random"  # random (70/10/20) | kfold | official
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

    config.model = ml_collections.ConfigDict()
    config.model.variant = "class"  # resnet | image | class
    config.model.stage_sizes = (3, 4, 6, 3)  # ResNet-50
    config.model.num_filters = 64
    config.model.attention_dim = 16
    config.model.compatibility = "pc"  # pc (paper) | additive | dp
    config.model.attention_norm = "softmax"  # softmax (paper) | sigmoid
    config.model.dtype = "float32"  # compute dtype: float32 | bfloat16
    # Under pc + softmax the attention variants' outputs cannot depend on stage 4 (softmax
    # cancels A . g'), so it is not computed: same logits, maps and parameters, a faster
    # step. Stage 4's BatchNorm statistics are then not updated and aux has no "global".
    config.model.skip_unused_stage4 = True
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
    config.train.optimizer = "adam"
    config.train.learning_rate = 1e-4
    config.train.schedule = "constant"  # constant | cosine
    config.train.warmup_steps = 0
    config.train.log_every_steps = 100
    config.train.eval_every_steps = 2000  # validation + checkpoint
    # Stop after this many validations without a lower validation loss (0: never).
    config.train.patience = 5
    config.train.checkpoints_to_keep = 2  # most recent ones; the best is kept as well

    config.eval = ml_collections.ConfigDict()
    config.eval.batch_size = 64
    config.eval.checkpoint = "best"  # best (lowest validation loss) | latest
    config.eval.split = "test"
    # 95% intervals from patient-level bootstrap draws of the test split (0: none).
    config.eval.bootstrap_draws = 1000
    config.eval.bootstrap_seed = 0
    # Localisation: maps resized to the image, divided by their maximum, thresholded here.
    config.eval.map_threshold = 0.5
    # Test images (with a finding) drawn in eval/overlays.png and kept for compare's Fig. 2.
    config.eval.num_figure_images = 8
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

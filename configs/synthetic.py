"""The embedded default: procedural phantom radiographs, no data on disk.

Sized for a laptop CPU: a reduced backbone (one bottleneck block per stage,
16 base filters, about 0.6M parameters instead of ResNet-50's 23.5M) at 96 px,
because a full ResNet-50 at 224 px trains at well under one image per second on
a 2-core CPU. The attention gates, the loss and the training loop are the same
as for the paper's configs. The whole run takes about 7 minutes on 2 CPU cores.

  python -m chestattn_jax.main --config=configs/synthetic.py --workdir=/tmp/chestattn
  python -m chestattn_jax.main --config=configs/synthetic.py:image --workdir=/tmp/chestattn_image

For the paper's backbone on the phantoms: --config.model.stage_sizes='(3,4,6,3)'
--config.model.num_filters=64 --config.data.image_size=224.
"""

from chestattn_jax.config import get_base_config, with_variant
from chestattn_jax.data.synthetic import PHANTOM_CLASSES


def get_config(arg=None):
    config = get_base_config()
    config.data.name = "synthetic"
    config.data.classes = PHANTOM_CLASSES
    config.data.image_size = 96
    config.data.synthetic.train_size = 12000
    config.data.synthetic.validation_size = 1000
    config.data.synthetic.test_size = 2000  # ~20 positives of the rarest class (Hernia)
    # The phantoms carry their own pose and exposure jitter.
    config.data.augment.enabled = False

    config.model.stage_sizes = (1, 1, 1, 1)
    config.model.num_filters = 16

    config.train.batch_size = 32
    config.train.num_steps = 2000
    config.train.learning_rate = 1e-3
    config.train.schedule = "cosine"
    config.train.warmup_steps = 50
    config.train.log_every_steps = 50
    config.train.eval_every_steps = 250
    config.eval.batch_size = 128
    return with_variant(config, arg)

"""NIH ChestX-ray14, the paper's 14 classes, ResNet-50 at 224 px.

  python -m chestattn_jax.main --config=configs/nih.py:class --workdir=W \
      --config.data.data_dir=/path/to/prepared/nih

The argument after ``:`` picks the variant (resnet | image | class; default class).
"""

from chestattn_jax.config import get_base_config, with_variant
from chestattn_jax.data.classes import NIH_CLASSES


def get_config(arg=None):
    config = get_base_config()
    config.data.name = "nih"
    config.data.classes = NIH_CLASSES
    config.data.views = ("PA", "AP")
    return with_variant(config, arg)

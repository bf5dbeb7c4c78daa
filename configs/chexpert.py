"""CheXpert (the paper's 11 observations), ResNet-50 at 224 px.

  python -m chestattn_jax.main --config=configs/chexpert.py:class --workdir=W \
      --config.data.data_dir=/path/to/prepared/chexpert

The argument after ``:`` picks the variant (resnet | image | class; default class).
"""

from chestattn_jax.config import get_base_config, with_variant
from chestattn_jax.data.classes import CHEXPERT_CLASSES


def get_config(arg=None):
    config = get_base_config()
    config.data.name = "chexpert"
    config.data.classes = CHEXPERT_CLASSES
    return with_variant(config, arg)

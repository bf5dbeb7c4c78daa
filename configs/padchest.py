"""PadChest (its 19 common findings), ResNet-50 at 224 px.

  python -m chestattn_jax.main --config=configs/padchest.py:class --workdir=W \
      --config.data.data_dir=/path/to/prepared/padchest

The argument after ``:`` picks the variant (resnet | image | class; default class).
"""

from chestattn_jax.config import get_base_config, with_variant
from chestattn_jax.data.padchest import CLASSES


def get_config(arg=None):
    config = get_base_config()
    config.data.name = "padchest"
    config.data.classes = CLASSES
    return with_variant(config, arg)
